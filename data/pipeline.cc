#include "data/pipeline.h"

#include <algorithm>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "util/status.h"

namespace pstrain {
namespace data {
namespace {

// OK while `corrupt` of the part's `total` records are within the limits of
// `o`; else DataLoss ending with `first`, the first corrupt record.
// `truncated` (when not empty): a file ends inside a record.
absl::Status CheckCorruption(const PipelineOptions& o, int64_t corrupt,
                             int64_t total, const std::string& truncated,
                             const std::string& first) {
  if (!truncated.empty() &&
      (o.max_corrupt_fraction < 1 || o.max_corrupt_records >= 0)) {
    return absl::DataLossError(absl::StrCat(
        "a file ends inside a record, so an unknown number of its records "
        "are lost (only max_corrupt_fraction 1 without max_corrupt_records "
        "reads on): ",
        truncated));
  }
  if (o.max_corrupt_records >= 0 && corrupt > o.max_corrupt_records) {
    return absl::DataLossError(
        absl::StrCat(corrupt, " of the part's ", total,
                     " records are corrupt, more than max_corrupt_records ",
                     o.max_corrupt_records, "; the first: ", first));
  }
  if (corrupt > o.max_corrupt_fraction * static_cast<double>(total)) {
    return absl::DataLossError(
        absl::StrCat(corrupt, " of the part's ", total,
                     " records are corrupt, more than max_corrupt_fraction ",
                     o.max_corrupt_fraction, " allows (",
                     static_cast<int64_t>(o.max_corrupt_fraction * total),
                     "); the first: ", first));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Pipeline>> Pipeline::Create(
    SampleSource* source, const PipelineOptions& o) {
  if (source->size() <= 0) {
    return absl::InvalidArgumentError("the data part holds no record");
  }
  if (o.batch_size <= 0)
    return absl::InvalidArgumentError("batch_size must be > 0");
  if (o.label_width <= 0)
    return absl::InvalidArgumentError("label_width must be > 0");
  if (o.batches_per_epoch <= 0) {
    return absl::InvalidArgumentError("batches_per_epoch must be > 0");
  }
  if (o.num_threads <= 0)
    return absl::InvalidArgumentError("data_nthreads must be > 0");
  if (o.prefetch <= 0)
    return absl::InvalidArgumentError("prefetch must be > 0");
  if (!(o.max_corrupt_fraction >= 0 && o.max_corrupt_fraction <= 1)) {
    return absl::InvalidArgumentError("max_corrupt_fraction must be in [0, 1]");
  }
  if (o.max_corrupt_records < -1) {
    return absl::InvalidArgumentError(
        "max_corrupt_records must be >= -1 (-1: no cap)");
  }
  absl::Status s = ValidateAugmentOptions(o.augment);
  if (!s.ok()) return s;
  const recordio::SkipStats loss = source->loss();
  s = CheckCorruption(o, loss.corrupt_records,
                      source->size() + loss.corrupt_records, loss.truncated,
                      loss.first);
  if (!s.ok()) return s;
  return std::unique_ptr<Pipeline>(new Pipeline(source, o));
}

Pipeline::Pipeline(SampleSource* source, const PipelineOptions& options)
    : source_(source),
      options_(options),
      loss_(source->loss()),
      corrupt_(static_cast<size_t>(source->size()), false) {
  stats_.corrupt_records = loss_.corrupt_records;
  for (int i = 0; i < options_.num_threads; ++i) {
    threads_.emplace_back([this] { WorkerLoop(); });
  }
}

Pipeline::~Pipeline() { StopThreads(); }

void Pipeline::StopThreads() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  cv_.SignalAll();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

void Pipeline::StartEpoch(int epoch, int64_t first_batch) {
  CHECK_GE(first_batch, 0);
  CHECK_LE(first_batch, options_.batches_per_epoch);
  auto order = std::make_shared<std::vector<int64_t>>(source_->size());
  std::iota(order->begin(), order->end(), 0);
  if (options_.shuffle) {
    std::mt19937_64 rng(options_.seed * 1000003u +
                        static_cast<uint64_t>(epoch));
    std::shuffle(order->begin(), order->end(), rng);
  }
  MutexLock lock(&mu_);
  epoch_ = epoch;
  ++generation_;
  order_ = std::move(order);
  next_to_claim_ = first_batch;
  next_to_deliver_ = first_batch;
  ready_.clear();
  stats_.epoch_skipped = 0;
  cv_.SignalAll();
}

absl::Status Pipeline::Fill(int64_t index, const std::vector<int64_t>& order,
                            uint64_t epoch_seed, Batch* batch,
                            std::vector<Failure>* failures) {
  const AugmentOptions& a = options_.augment;
  const size_t image_floats =
      static_cast<size_t>(a.channels) * a.height * a.width;
  batch->index = index;
  batch->data.assign(image_floats * options_.batch_size, 0.0f);
  batch->labels.assign(
      static_cast<size_t>(options_.batch_size) * options_.label_width, 0.0f);
  batch->records.assign(options_.batch_size, -1);
  batch->ids.assign(options_.batch_size, 0);
  // Each batch has its own generator, so results do not depend on which
  // thread fills it.
  std::mt19937 rng(
      static_cast<uint32_t>(epoch_seed ^ (index * 0x9E3779B97F4A7C15ull)));
  const int64_t n = static_cast<int64_t>(order.size());
  int64_t pos = index * options_.batch_size;  // Position in the wrapped order.
  int64_t skipped = 0;
  Sample sample;
  for (int i = 0; i < options_.batch_size; ++pos) {
    if (skipped > n) {
      return absl::DataLossError(absl::StrCat("no record of the data part (", n,
                                              " records) can be decoded"));
    }
    const int64_t rec = order[pos % n];
    absl::Status s = source_->Read(rec, &sample);
    absl::StatusOr<cv::Mat> img =
        s.ok() ? DecodeImage(sample.image, a.channels, source_->Describe(rec))
               : absl::StatusOr<cv::Mat>(s);
    if (img.ok() &&
        static_cast<int>(sample.labels.size()) < options_.label_width) {
      img = absl::InvalidArgumentError(absl::StrCat(
          source_->Describe(rec), ": record has ", sample.labels.size(),
          " labels, label_width is ", options_.label_width));
    }
    if (img.ok()) {
      s = Augment(
          *img, a, &rng,
          absl::MakeSpan(batch->data.data() + i * image_floats, image_floats));
      if (!s.ok()) img = Annotate(s, source_->Describe(rec));
    }
    if (!img.ok()) {
      LOG_EVERY_N(WARNING, 100)
          << "skipping corrupt record: " << img.status().message() << " ("
          << google::COUNTER << " so far)";
      failures->push_back({rec, std::string(img.status().message())});
      ++skipped;
      continue;
    }
    std::copy(
        sample.labels.begin(), sample.labels.begin() + options_.label_width,
        batch->labels.begin() + static_cast<size_t>(i) * options_.label_width);
    batch->records[i] = rec;
    batch->ids[i] = sample.id;
    ++i;
  }
  return absl::OkStatus();
}

void Pipeline::AddFailures(const std::vector<Failure>& failures) {
  for (const Failure& f : failures) {
    ++stats_.skipped;
    ++stats_.epoch_skipped;
    if (corrupt_[f.record]) continue;
    corrupt_[f.record] = true;
    ++stats_.corrupt_records;
    if (first_bad_ < 0 || f.record < first_bad_) {
      first_bad_ = f.record;
      first_bad_what_ = f.what;
    }
  }
  if (failures.empty() || !limit_.ok()) return;
  limit_ = CheckCorruption(
      options_, stats_.corrupt_records, source_->size() + loss_.corrupt_records,
      loss_.truncated, loss_.first.empty() ? first_bad_what_ : loss_.first);
}

void Pipeline::WorkerLoop() {
  while (true) {
    int64_t index;
    uint64_t generation;
    int epoch;
    std::shared_ptr<const std::vector<int64_t>> order;
    {
      MutexLock lock(&mu_);
      // Woken by StartEpoch, Next and Stop; the threads exit at Stop.
      cv_.WaitUntil(
          &mu_, absl::InfiniteFuture(),
          [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
            return stop_ ||
                   (order_ != nullptr &&
                    next_to_claim_ < options_.batches_per_epoch &&
                    next_to_claim_ < next_to_deliver_ + options_.prefetch);
          });
      if (stop_) return;
      index = next_to_claim_++;
      generation = generation_;
      epoch = epoch_;
      order = order_;
    }
    Batch batch;
    std::vector<Failure> failures;
    absl::Status s =
        Fill(index, *order, options_.seed * 7919u + epoch, &batch, &failures);
    MutexLock lock(&mu_);
    if (generation != generation_) continue;  // The epoch was restarted.
    AddFailures(failures);
    if (s.ok()) {
      ready_.emplace(index, std::move(batch));
    } else {
      ready_.emplace(index, s);
    }
    cv_.SignalAll();
  }
}

absl::StatusOr<Batch> Pipeline::Next(absl::Time deadline) {
  MutexLock lock(&mu_);
  if (order_ == nullptr) {
    return absl::FailedPreconditionError("StartEpoch() was not called");
  }
  if (!limit_.ok()) return limit_;
  if (next_to_deliver_ >= options_.batches_per_epoch) {
    return absl::OutOfRangeError(absl::StrCat("epoch ", epoch_, " is over"));
  }
  if (!cv_.WaitUntil(
          &mu_, deadline, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
            return !limit_.ok() || ready_.count(next_to_deliver_) > 0;
          })) {
    return absl::DeadlineExceededError(absl::StrCat("batch ", next_to_deliver_,
                                                    " of epoch ", epoch_,
                                                    " not ready in time"));
  }
  if (!limit_.ok()) return limit_;
  auto it = ready_.find(next_to_deliver_);
  absl::StatusOr<Batch> out = std::move(it->second);
  ready_.erase(it);
  ++next_to_deliver_;
  cv_.SignalAll();  // A prefetch slot is free.
  if (out.ok()) {
    ++stats_.batches;
    stats_.samples += options_.batch_size;
  }
  return out;
}

PipelineStats Pipeline::stats() const {
  MutexLock lock(&mu_);
  return stats_;
}

}  // namespace data
}  // namespace pstrain
