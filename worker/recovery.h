// The worker's side of job checkpoints and restarts (issue #15; the layout
// and the manifest: checkpoint/manifest.h).
//
// When: after every checkpoint_period_batches steps, at every epoch end,
// and, with checkpoint_period_s, at the first step at which worker 0 finds
// that much time passed since the last one. The step is the same on every
// worker: steps are counted alike everywhere (dist_sync), and the time
// condition is agreed on with one KVStore::AllReduceSum of worker 0's
// verdict per step (dist_sync; other kv types decide alone).
//
// What: every worker writes `worker-RANK.params` (an NDArray list: the
// position "position" = int64 {step, epoch, batch} of the next batch, the
// random-number state "rng" (uint8, std::mt19937's text form), and each
// local replica's auxiliary states, "dev:D:aux:NAME"). Rank 0 asks every
// server to write its part (KVStore::Checkpoint), writes PREFIX-symbol.json,
// and, once every other part exists, PREFIX-%04d.params (step) as MXNet's
// do_checkpoint does (the learned weights taken from the servers' parts,
// the auxiliary and fixed ones copied by the worker), PREFIX-%04d.states
// (the servers' optimizer arrays merged, server/checkpoint.h's names) and
// last the MANIFEST; then it deletes the checkpoints beyond
// checkpoint_keep.
//
// The training thread pauses only to copy its state (and, rank 0, for the
// servers to copy theirs); files are written by a BackgroundWriter.
// Thread-compatible: the training thread calls every method.
#ifndef PSTRAIN_WORKER_RECOVERY_H_
#define PSTRAIN_WORKER_RECOVERY_H_

#include <cstdint>
#include <memory>
#include <random>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "checkpoint/manifest.h"
#include "kvstore/kvstore.h"
#include "worker/gradient_sync.h"
#include "worker/replicas.h"

namespace pstrain {
namespace worker {

struct RecoveryOptions {
  // Empty: no checkpoints.
  std::string checkpoint_dir;
  int64_t period_batches = 0;  // 0: none by batch count.
  double period_s = 0;         // 0: none by time.
  int keep = 0;                // 0: keep all.
  // File name prefix of the MXNet-format files (PREFIX-symbol.json...).
  std::string prefix = "model";
  // A checkpoint folder to resume from; empty: start afresh.
  std::string resume_from;
  // How the job's keys are split over its servers: what the checkpoints'
  // manifests record (kvstore::PlacementName), so that a job resumed from
  // one plans its keys as it did.
  kvstore::Placement placement = kvstore::Placement::kBalanced;
  // Tests: the worker of rank test_die_rank kills itself (SIGKILL) right
  // after step test_die_at_step (>= 1; 0: never) unless it resumed.
  int64_t test_die_at_step = 0;
  int test_die_rank = 1;
  // --recovery=replace: the rank this worker replaces (-1: none; it never
  // dies for the test) and when launch saw its predecessor die (Unix
  // microseconds; 0: unknown).
  int replace_rank = -1;
  int64_t replace_since_us = 0;
};

// Where a resumed worker continues.
struct ResumePoint {
  int64_t step = 0;   // Steps done.
  int epoch = 0;      // Epoch of the next batch.
  int64_t batch = 0;  // Its index in the epoch.
};

// Reads this worker's part of checkpoint `dir` (checked against the
// manifest) into every replica's auxiliary states and `rng`. Errors name
// the file and what does not fit.
absl::StatusOr<ResumePoint> ResumeWorker(const std::string& dir, int rank,
                                         Replicas* reps, std::mt19937* rng);

class Checkpointer {
 public:
  Checkpointer(const RecoveryOptions& options, kvstore::KVStore* kv);
  ~Checkpointer();  // Cancels writes not finished; call Finish() first.
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  bool enabled() const { return !options_.checkpoint_dir.empty(); }

  // Whether to checkpoint after `step` (steps done) by batch count or
  // time (epoch ends are the caller's). Blocking for dist_sync with a time
  // period (the agreement). AllReduceSum's errors.
  absl::StatusOr<bool> Due(int64_t step);

  // Checkpoint of `step` with `next` the position of the next batch.
  // REQUIRES: every push of this worker completed (GradientSync::WaitAll).
  // Errors of copying and of KVStore::Checkpoint; the writes' errors are
  // logged and returned by Finish().
  // `learned`: GradientSync::learned(), key k's parameter at index k.
  absl::Status Save(const ResumePoint& next, const std::mt19937& rng,
                    Replicas* reps, const std::vector<nn::Param*>& learned);

  // The training loop's hooks: after a step that is not an epoch's last
  // (a checkpoint when Due), and at an epoch's end after its validation
  // (always, when enabled). Both wait for `sync`'s pushes first.
  absl::Status AfterStep(const ResumePoint& next, const std::mt19937& rng,
                         GradientSync* sync, Replicas* reps);
  absl::Status AtEpochEnd(const ResumePoint& next, const std::mt19937& rng,
                          GradientSync* sync, Replicas* reps);

  // Waits for every write (rank 0: the last manifest) until `deadline`.
  absl::Status Finish(absl::Time deadline);

  // SIGKILLs this process after `step` when RecoveryOptions says so (never
  // a resumed worker or a replacement).
  void MaybeDieForTest(int64_t step) const;

 private:
  const RecoveryOptions options_;
  kvstore::KVStore* const kv_;
  const int rank_;
  absl::Time last_ = absl::Now();
  std::unique_ptr<checkpoint::BackgroundWriter> writer_;
};

}  // namespace worker
}  // namespace pstrain

#endif  // PSTRAIN_WORKER_RECOVERY_H_
