#include "worker/metrics.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "glog/logging.h"
#include "nlohmann/json.hpp"

namespace pstrain {
namespace worker {

Metrics::Metrics(int top_k, bool cross_entropy)
    : top_k_(top_k), cross_entropy_(cross_entropy) {}

absl::Status Metrics::Update(absl::Span<const float> probs,
                             absl::Span<const float> labels, int classes) {
  if (classes <= 0 || probs.size() != labels.size() * classes) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics: ", probs.size(), " outputs for ", labels.size(),
                     " labels of ", classes, " classes"));
  }
  for (size_t i = 0; i < labels.size(); ++i) {
    const float l = labels[i];
    if (!(l >= 0 && l < classes) || l != std::floor(l)) {
      return absl::InvalidArgumentError(
          absl::StrCat("metrics: label ", l, " of sample ", i,
                       " is not a class in [0, ", classes, ")"));
    }
  }
  for (size_t i = 0; i < labels.size(); ++i) {
    const float* p = probs.data() + i * classes;
    const int label = static_cast<int>(labels[i]);
    const int argmax = static_cast<int>(std::max_element(p, p + classes) - p);
    correct_ += argmax == label;
    if (top_k_ > 1) {
      // Rank of the label: how many classes score strictly higher.
      int higher = 0;
      for (int c = 0; c < classes; ++c) higher += p[c] > p[label];
      top_k_correct_ += higher < top_k_;
    }
    if (cross_entropy_) {
      ce_sum_ += -std::log(std::max(p[label], 1e-12f));
    }
  }
  count_ += static_cast<int64_t>(labels.size());
  return absl::OkStatus();
}

void Metrics::Merge(const Metrics& other) { AddSums(other.Sums()); }

std::vector<double> Metrics::Sums() const {
  return {static_cast<double>(count_), correct_, top_k_correct_, ce_sum_};
}

void Metrics::AddSums(const std::vector<double>& sums) {
  CHECK_EQ(sums.size(), 4u);
  count_ += static_cast<int64_t>(sums[0]);
  correct_ += sums[1];
  top_k_correct_ += sums[2];
  ce_sum_ += sums[3];
}

void Metrics::Reset() {
  count_ = 0;
  correct_ = top_k_correct_ = ce_sum_ = 0;
}

std::vector<std::pair<std::string, double>> Metrics::NameValues() const {
  const double n = count_ > 0 ? static_cast<double>(count_) : NAN;
  std::vector<std::pair<std::string, double>> out = {
      {"accuracy", correct_ / n}};
  if (top_k_ > 1) {
    out.emplace_back(absl::StrCat("top_k_accuracy_", top_k_),
                     top_k_correct_ / n);
  }
  if (cross_entropy_) out.emplace_back("cross-entropy", ce_sum_ / n);
  return out;
}

std::string BenchmarkLine(const BenchmarkSummary& s) {
  const double k = s.time_dilation;
  const double emulated = s.wall_seconds / k;
  const double images = static_cast<double>(s.batches) * s.batch_size;
  nlohmann::ordered_json j = {
      {"rank", s.rank},
      {"devices", s.devices},
      {"batch_size", s.batch_size},
      {"batches", s.batches},
      {"warmup_batches", s.warmup_batches},
      {"time_dilation", k},
      {"wall_seconds", s.wall_seconds},
      {"images_per_sec", emulated > 0 ? images / emulated : 0.0},
      {"compute_s", s.compute_s},
      {"push_wait_s", s.push_wait_s},
      {"pull_wait_s", s.pull_wait_s},
      {"data_s", s.data_s},
      {"optimizer_s", s.optimizer_s},
      {"other_s", std::max(0.0, emulated - s.compute_s - s.push_wait_s -
                                    s.pull_wait_s - s.data_s - s.optimizer_s)}};
  return "benchmark: " + j.dump();
}

std::string BatchLine(int epoch, int64_t from_batch, int64_t to_batch,
                      double samples_per_sec, const Metrics& metrics) {
  std::string line =
      absl::StrFormat("Epoch[%d] Batch [%d-%d]\tSpeed: %.2f samples/sec", epoch,
                      from_batch, to_batch, samples_per_sec);
  for (const auto& [name, value] : metrics.NameValues()) {
    absl::StrAppendFormat(&line, "\t%s=%f", name, value);
  }
  return line;
}

std::vector<std::string> EpochMetricLines(int epoch, const std::string& phase,
                                          const Metrics& metrics) {
  std::vector<std::string> lines;
  for (const auto& [name, value] : metrics.NameValues()) {
    lines.push_back(
        absl::StrFormat("Epoch[%d] %s-%s=%f", epoch, phase, name, value));
  }
  return lines;
}

std::string TimeCostLine(int epoch, double seconds) {
  return absl::StrFormat("Epoch[%d] Time cost=%.3f", epoch, seconds);
}

}  // namespace worker
}  // namespace pstrain
