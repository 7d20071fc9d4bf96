// The training-data pipeline of a worker: reads its part of a dataset,
// decodes and augments images on several threads, and hands out NCHW
// float32 batches in a fixed order, prefetching ahead.
//
// Every epoch has exactly `batches_per_epoch` batches whatever the size of
// the part (MXNet's ResizeIter): the sample order wraps around, so workers
// with uneven shards run the same number of batches and never stall a
// barrier. With `shuffle`, each epoch visits the part in a new permutation
// drawn from (seed, epoch), so runs are reproducible.
//
// A record that cannot be read or decoded is reported (where, why), counted
// and replaced by the next sample of the order; the batch stays full. Past
// the corruption limits (PipelineOptions) the pipeline stops with an error
// instead.
#ifndef PSTRAIN_DATA_PIPELINE_H_
#define PSTRAIN_DATA_PIPELINE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "data/augment.h"
#include "recordio/recordio.h"
#include "util/mutex.h"

namespace pstrain {
namespace data {

// One training example as stored: its labels and its encoded image.
struct Sample {
  std::vector<float> labels;
  std::string image;
  uint64_t id = 0;  // The record header's id (im2rec: the .lst index).
};

// A worker's part of a dataset, with random access. Implementations must
// make Read() thread-safe.
class SampleSource {
 public:
  virtual ~SampleSource() = default;
  // Number of records in the part.
  virtual int64_t size() const = 0;
  // Reads record `index` (0 <= index < size()). Returns an error naming
  // the file and byte offset when the record is corrupt.
  virtual absl::Status Read(int64_t index, Sample* out) = 0;
  // "file@offset" (or similar) for messages about record `index`.
  virtual std::string Describe(int64_t index) const = 0;
  // Corrupt records the source passed over when it was opened (not among
  // size()), e.g. found by a scan of its files.
  virtual recordio::SkipStats loss() const { return {}; }
};

struct PipelineOptions {
  int batch_size = 32;
  // Labels per sample in the batch (extra labels are dropped, missing ones
  // are an error for that record).
  int label_width = 1;
  int64_t batches_per_epoch = 1;
  int num_threads = 4;
  // Batches decoded ahead of the consumer.
  int prefetch = 4;
  bool shuffle = false;
  uint64_t seed = 0;
  AugmentOptions augment;
  // Corruption limits over the part: the records its source lost when
  // opened (SampleSource::loss()) plus the distinct records found corrupt
  // (unreadable or undecodable) so far, against all of the part's records,
  // lost ones included. Once more than `max_corrupt_fraction` of them, or
  // more than `max_corrupt_records` (< 0: no cap), are corrupt, the
  // pipeline stops. The fraction is of the whole part, so it is checked
  // after every batch with no false alarm early in an epoch. A source with
  // a file that ends inside a record (SkipStats::truncated) lost an unknown
  // number of records: only a fraction of 1 with no cap accepts that.
  double max_corrupt_fraction = 0.001;
  int64_t max_corrupt_records = -1;
};

struct Batch {
  int64_t index = 0;          // Within the epoch.
  std::vector<float> data;    // batch_size x C x H x W.
  std::vector<float> labels;  // batch_size x label_width.
  // Per sample: the record's index in the part (SampleSource::Read's
  // `index`) and its Sample::id; with skipped corrupt records and the
  // wrap-around, a record may appear in two batches.
  std::vector<int64_t> records;
  std::vector<uint64_t> ids;
};

struct PipelineStats {
  int64_t batches = 0;
  int64_t samples = 0;
  int64_t skipped = 0;        // Corrupt or undecodable records met, all epochs.
  int64_t epoch_skipped = 0;  // The same, in the current epoch.
  // Distinct corrupt records of the part: lost by the source when it was
  // opened plus found by reading.
  int64_t corrupt_records = 0;
};

// Thread-safe: Next() from one consumer thread; stats() from any thread.
class Pipeline {
 public:
  // `source` must outlive the pipeline. InvalidArgument for options that
  // do not validate, DataLoss when what the source lost is already past the
  // corruption limits (naming the first corrupt record).
  static absl::StatusOr<std::unique_ptr<Pipeline>> Create(
      SampleSource* source, const PipelineOptions& options);
  ~Pipeline();  // Stops and joins the threads.
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // Starts epoch `epoch` (any earlier epoch is abandoned). Batches then come
  // from Next(), from batch `first_batch` on (a resumed job: the batches
  // are exactly those an epoch started at 0 delivers from that index).
  // REQUIRES: 0 <= first_batch <= batches_per_epoch.
  void StartEpoch(int epoch, int64_t first_batch = 0);

  // The next batch of the epoch, waiting until `deadline`. Returns
  // OutOfRange after the last batch of the epoch, DeadlineExceeded when the
  // deadline passes, DataLoss when no record of the part can be decoded or
  // once the corruption limits are passed (one line: how many records of
  // the part are corrupt, the limit, and the first corrupt record's file,
  // index and byte offset; from then on, every call returns it).
  absl::StatusOr<Batch> Next(absl::Time deadline);

  PipelineStats stats() const;

 private:
  // A record that could not be read or decoded.
  struct Failure {
    int64_t record;
    std::string what;  // Names the file and byte offset.
  };

  Pipeline(SampleSource* source, const PipelineOptions& options);
  void StopThreads();
  void WorkerLoop();
  // Fills batch `index` of the current epoch; positions come from `order`.
  // The records it skipped go to `*failures`.
  absl::Status Fill(int64_t index, const std::vector<int64_t>& order,
                    uint64_t epoch_seed, Batch* batch,
                    std::vector<Failure>* failures);
  // Counts `failures` and checks the corruption limits.
  void AddFailures(const std::vector<Failure>& failures)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  SampleSource* const source_;
  const PipelineOptions options_;
  const recordio::SkipStats loss_;  // source_->loss(), taken at Create.

  // pstrain::Mutex (std::mutex underneath, so that --config=tsan sees the
  // waits; annotated, so that --config=tsa checks the members below).
  mutable Mutex mu_;
  CondVar cv_;
  int epoch_ ABSL_GUARDED_BY(mu_) = -1;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;  // Bumped per StartEpoch.
  std::shared_ptr<const std::vector<int64_t>> order_ ABSL_GUARDED_BY(mu_);
  int64_t next_to_claim_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t next_to_deliver_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<int64_t, absl::StatusOr<Batch>> ready_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  PipelineStats stats_ ABSL_GUARDED_BY(mu_);
  // Records of the part found corrupt, and the first of them (the lowest).
  std::vector<bool> corrupt_ ABSL_GUARDED_BY(mu_);
  int64_t first_bad_ ABSL_GUARDED_BY(mu_) = -1;
  std::string first_bad_what_ ABSL_GUARDED_BY(mu_);
  absl::Status limit_ ABSL_GUARDED_BY(mu_);  // Past the limits: sticky.
  std::vector<std::thread> threads_;
};

}  // namespace data
}  // namespace pstrain

#endif  // PSTRAIN_DATA_PIPELINE_H_
