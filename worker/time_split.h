// Where a worker's training time goes (issue #17): seconds per activity,
// summed over the steps of a period (an epoch's batch loop, or a
// --benchmark run's timed batches), and the end-of-epoch line
//
//   Epoch[3] Time split: data 2% compute 81% wait-pull 12% wait-push 5% other
//   0%
//
// with " optimizer V%" before " other" only when the optimizer ran on this
// worker (a local KVStore) for a non-zero time.
//
// The activities are measured one after the other on the trainer's thread,
// so they do not overlap:
// - data: waiting for the next batch (the data pipeline, or making a
//   --benchmark batch);
// - compute: forward and backward on every local device, less the waits
//   below that happen inside them (with emulated devices, the devices'
//   own compute clock);
// - wait-pull: blocked on weights not yet back (KVStore waits, and copying
//   the new weights to the other local devices at the end of a step);
// - wait-push: blocked handing gradients to the KVStore (and, with emulated
//   devices, on local reduces);
// - optimizer: the update rule, where it runs in this process (local
//   KVStores; 0 with dist_*: the servers run it);
// - other: the rest of the period's wall time: the metrics, the progress
//   lines, the bookkeeping between the parts. It is never negative: the
//   percentages are of max(wall time, sum of the parts).
//
// Value type; thread-compatible.
#ifndef PSTRAIN_WORKER_TIME_SPLIT_H_
#define PSTRAIN_WORKER_TIME_SPLIT_H_

#include <string>

#include "absl/time/time.h"
#include "proto/messages.pb.h"

namespace pstrain {
namespace worker {

// Seconds per activity (see above).
struct TimeParts {
  double data_s = 0;
  double compute_s = 0;
  double wait_pull_s = 0;
  double wait_push_s = 0;
  double optimizer_s = 0;

  double sum() const {
    return data_s + compute_s + wait_pull_s + wait_push_s + optimizer_s;
  }
  TimeParts& operator+=(const TimeParts& o);
  // Part by part; for the difference of two running totals.
  TimeParts operator-(const TimeParts& o) const;
  // Every part times `k` (e.g. 1 / time dilation).
  TimeParts operator*(double k) const;
};

// A period's parts and wall time.
class TimeSplit {
 public:
  // Starts a period at `now`, with every part 0.
  void Start(absl::Time now);
  // Adds to the period's parts.
  void Add(const TimeParts& parts) { parts_ += parts; }

  const TimeParts& parts() const { return parts_; }
  // Wall seconds from Start() to `now`.
  double WallSeconds(absl::Time now) const;
  // What the percentages are of: max(WallSeconds(now), parts().sum()).
  double Denominator(absl::Time now) const;
  // Denominator(now) less the parts: at least 0.
  double OtherSeconds(absl::Time now) const;

  // "Epoch[E] Time split: data X% ..." (see above) of the period up to
  // `now`.
  std::string Line(int epoch, absl::Time now) const;
  // The fractions of the period up to `now` into `stats` (data, compute,
  // wait_pull, wait_push, optimizer, period_s), for the heartbeats.
  void FillStats(absl::Time now, proto::NodeStats* stats) const;

 private:
  absl::Time start_ = absl::InfinitePast();
  TimeParts parts_;
};

// The line of `parts` over `wall_s` seconds: percentages of
// max(wall_s, parts.sum()), rounded to whole numbers, "other" the rest.
std::string TimeSplitLine(int epoch, const TimeParts& parts, double wall_s);

}  // namespace worker
}  // namespace pstrain

#endif  // PSTRAIN_WORKER_TIME_SPLIT_H_
