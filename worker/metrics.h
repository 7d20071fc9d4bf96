// Training and validation metrics with MXNet's names and log lines.
//
// Metrics accumulate sums (not averages) so that the partial results of
// several workers combine exactly: every worker reports the metric over the
// whole validation set after Merge().
#ifndef PSTRAIN_WORKER_METRICS_H_
#define PSTRAIN_WORKER_METRICS_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace pstrain {
namespace worker {

// Accuracy, top-k accuracy (k > 1) and cross-entropy over a stream of
// batches. Thread-compatible.
class Metrics {
 public:
  // `top_k` <= 1 disables top-k; `cross_entropy` adds MXNet's
  // "cross-entropy" metric.
  Metrics(int top_k, bool cross_entropy);

  // Adds a batch: `probs` is [batch x classes] softmax output (row-major),
  // `labels` the class of each row (as floats, as MXNet stores them).
  // Returns InvalidArgument for a size mismatch or a label outside
  // [0, classes).
  absl::Status Update(absl::Span<const float> probs,
                      absl::Span<const float> labels, int classes);

  // Adds another accumulator's counts (e.g. another worker's).
  void Merge(const Metrics& other);

  // Plain sums for shipping to other workers, and back.
  std::vector<double> Sums() const;
  // REQUIRES: sums.size() == Sums().size().
  void AddSums(const std::vector<double>& sums);

  void Reset();
  int64_t count() const { return count_; }

  // MXNet's (name, value) pairs: "accuracy", "top_k_accuracy_K",
  // "cross-entropy".
  std::vector<std::pair<std::string, double>> NameValues() const;

 private:
  int top_k_;
  bool cross_entropy_;
  int64_t count_ = 0;
  double correct_ = 0;
  double top_k_correct_ = 0;
  double ce_sum_ = 0;
};

// "Epoch[0] Batch [0-20]\tSpeed: 1234.56 samples/sec\taccuracy=0.510000".
// What a --benchmark run measured after its warm-up batches, for the
// line the scaling driver reads (tools/scaling.h).
struct BenchmarkSummary {
  int rank = 0;
  int devices = 1;
  int batch_size = 0;  // Per worker.
  int64_t batches = 0;
  int warmup_batches = 0;
  double time_dilation = 1;
  double wall_seconds = 0;  // Of the timed batches, real time.
  // Undilated totals over the timed batches, the parts of the epochs' time
  // split (worker/time_split.h): device compute, waiting for gradients to
  // leave (pushes, local reduces), waiting for weights (pulls,
  // broadcasts), waiting for batches, the optimizer run in this process.
  double compute_s = 0, push_wait_s = 0, pull_wait_s = 0;
  double data_s = 0, optimizer_s = 0;
};

// "benchmark: {...}": one line of JSON with the fields above,
// images_per_sec (batches * batch_size / wall_seconds * time_dilation) and
// other_s (undilated wall time less the five parts, at least 0: the time
// split's "other").
std::string BenchmarkLine(const BenchmarkSummary& s);

std::string BatchLine(int epoch, int64_t from_batch, int64_t to_batch,
                      double samples_per_sec, const Metrics& metrics);

// "Epoch[3] Train-accuracy=0.912345", one line per metric, and likewise for
// "Validation".
std::vector<std::string> EpochMetricLines(int epoch, const std::string& phase,
                                          const Metrics& metrics);

// "Epoch[3] Time cost=12.345".
std::string TimeCostLine(int epoch, double seconds);

}  // namespace worker
}  // namespace pstrain

#endif  // PSTRAIN_WORKER_METRICS_H_
