// Gradient synchronisation of a worker's replicas through a KVStore: key k
// is the k-th learned (non-auxiliary) parameter of replica 0, pushed as the
// sum of every replica's gradient and pulled back into replica 0's weights.
//
// Overlap (one device only): each layer's gradients are pushed as soon as
// backward produces them, first layers at the highest priority, and the
// next forward waits for a layer's new weights only when it reaches that
// layer. Without overlap every gradient is pushed after backward (last
// layers first), and the step ends by waiting for every key and copying
// replica 0's weights to the other replicas.
//
// Tensor fusion: gradients ready and not yet pushed are pushed together as
// one KVStore::PushPullGroup once they add up to `fusion_bytes` (0: one
// group per key), and the rest when backward ends; each key's pending
// operation is shared by the keys of its group and waited for once. With
// `fusion_max_array_bytes` an array above it is never fused: it is pushed
// alone as soon as it is ready (the KVStore slices it), right after the
// small ones queued before it (as one group).
//
// Thread-compatible: one thread (the trainer's) calls every method; the
// callbacks passed to Replicas::Step run on that thread (one device runs
// inline).
#ifndef PSTRAIN_WORKER_GRADIENT_SYNC_H_
#define PSTRAIN_WORKER_GRADIENT_SYNC_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "kvstore/kvstore.h"
#include "nn/network.h"
#include "proto/messages.pb.h"
#include "timeline/timeline.h"
#include "worker/emulation.h"
#include "worker/replicas.h"

namespace pstrain {
namespace worker {

class GradientSync {
 public:
  struct Options {
    // Overlap communication with backward and the next forward; used only
    // when the replicas have one device.
    bool overlap = true;
    // Tensor fusion threshold in bytes (TrainerOptions::fusion_bytes).
    int64_t fusion_bytes = int64_t{4} << 20;
    // The largest gradient fused (TrainerOptions::fusion_max_array_bytes):
    // bigger ones are pushed alone. 0: no limit.
    int64_t fusion_max_array_bytes = 0;
    // Every blocking wait (a key's push and pull, the replicas' copies)
    // fails with DeadlineExceeded after this long.
    absl::Duration wait_timeout = absl::Minutes(10);
    // Send the first layers' gradients first (KVStore priorities); false:
    // every push at priority 0 (MXNet's ZeroMQ van ignores priorities).
    bool priorities = true;
    // Emulated devices (worker --emulate_device) instead of the replicas'
    // forward and backward; the replicas then hold one replica, whose
    // buffers stand for the reduced gradient. Not owned.
    EmulatedDevices* emulated = nullptr;
    // The worker's timeline (timeline/timeline.h), or nullptr: while it is
    // active, a wait for a key's new weights that blocks the step is a
    // "wait for weights" event on its "compute" track. Not owned.
    timeline::Recorder* timeline = nullptr;
  };

  // Where the time of the steps so far went on this thread, seconds.
  struct Times {
    double push_s = 0;  // In KVStore pushes (gradients leaving).
    double pull_s = 0;  // Waiting for pushed keys' new weights.
  };

  // `kv` and `replicas` must outlive this object. Builds no KVStore state:
  // call Init() first.
  GradientSync(kvstore::KVStore* kv, Replicas* replicas,
               const Options& options);
  GradientSync(const GradientSync&) = delete;
  GradientSync& operator=(const GradientSync&) = delete;

  // The learned parameters of replica 0 in key order: key k is learned()[k]
  // (neither auxiliary states nor fixed parameters).
  const std::vector<nn::Param*>& learned() const { return learned_; }
  // Whether Step() overlaps (options.overlap and one device).
  bool overlap() const { return overlap_; }

  // Registers every key with replica 0's values (the KVStore keeps rank
  // 0's), installs `optimizer`, and pulls the stored weights into replica 0
  // and copies them to the other replicas, so every worker and device
  // starts from rank 0's weights. Returns the first KVStore or Replicas
  // error.
  absl::Status Init(const proto::OptimizerConfig& optimizer);

  // One training step's computation and pushes: Replicas::Step (forward and
  // backward) of `data` and `labels`, with the pushes described above, then
  // pushes whatever backward left unsent. Returns Replicas::Step's error or
  // the first push error (after which every later call returns it too).
  // REQUIRES: Init() succeeded.
  absl::Status Step(std::vector<float> data, std::vector<float> labels);

  // Ends Step()'s weight update: without overlap, waits for every key and
  // copies replica 0's new weights to the other replicas; with overlap,
  // nothing (the next Step() waits layer by layer). Returns the first push
  // or wait error.
  absl::Status FinishStep();

  // Waits for every pending push, e.g. before an epoch's metrics,
  // checkpoint and validation. Returns the first push or wait error.
  absl::Status WaitAll();

  const Times& times() const { return times_; }
  void ResetTimes() { times_ = Times(); }

 private:
  // One PushPullGroup and whether (and how) it ended.
  struct Pushed {
    kvstore::Handle handle = 0;
    bool waited = false;
    absl::Status status;
  };

  absl::Time Deadline() const { return absl::Now() + options_.wait_timeout; }
  // Queues key k's gradient; pushes the queue once it reaches fusion_bytes.
  // A gradient above fusion_max_array_bytes is pushed alone at once, after
  // the queue.
  void Push(size_t k);
  // Pushes the queued keys as one group.
  void Flush();
  // Pushes `keys` as one group (unless a push already failed).
  void PushGroup(const std::vector<size_t>& keys);
  // Waits for key k's pending push, if any.
  absl::Status WaitKey(size_t k);

  kvstore::KVStore* const kv_;
  Replicas* const replicas_;
  const Options options_;
  const bool overlap_;
  // learned_[k] is key k's parameter, at index param_index_[k] of
  // Replicas::params().
  std::vector<nn::Param*> learned_;
  std::vector<size_t> param_index_;
  std::unordered_map<const nn::Param*, size_t> key_of_;
  // Key k's push in flight, shared by the keys of its group.
  std::vector<std::shared_ptr<Pushed>> pending_;
  // Keys ready and not yet pushed, and their gradients' bytes.
  std::vector<size_t> unsent_;
  int64_t unsent_bytes_ = 0;
  absl::Status comm_;  // The first push error.
  Times times_;
  // Replicas::Step's callbacks (overlap): built once, not per step.
  nn::Network::ParamsNeeded needed_;
  nn::Network::GradsReady ready_;
  // Whether a layer's pushed keys have their weights back (emulated
  // devices start their broadcast then).
  EmulatedDevices::ParamsArrived arrived_;
  int compute_track_ = 0;  // On options_.timeline.
};

}  // namespace worker
}  // namespace pstrain

#endif  // PSTRAIN_WORKER_GRADIENT_SYNC_H_
