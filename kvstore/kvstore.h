// The worker-side KVStore (DESIGN.md, KVStore semantics), with MXNet's
// types: "local" and "device" aggregate several local devices' values in one
// process and apply the optimizer locally; "dist_sync", "dist_async" and
// "dist_device_sync" talk to the servers of a job.
//
// Keys are int64 ids of float32 arrays; negative keys are reserved for
// plain sums (AllReduceSum) and never go through the optimizer.
// Push/Pull/PushPull are asynchronous: they return a handle once the
// request is queued (dist_*: after waiting for room under the
// outstanding-request bounds, at most KVStoreOptions::send_timeout), and
// the caller's buffers must stay valid (and, for outputs, untouched) until
// Wait() on it returns. Every blocking call has a deadline and fails with a
// Status when it passes or when the job aborts. After a Wait() that ends in
// DeadlineExceeded the operation may still be in flight: keep its buffers
// until the KVStore is destroyed (destruction stops all traffic).
//
// Push identity (dist_sync; --recovery=replace): every PUSH/PUSH_PULL
// carries the round it belongs to, the n-th push of its key by this
// worker (Header.push_round), so a server sums a repeated push once
// (server/shard.h). A replacement worker does not initialise the servers
// or set their optimizer: Init() plans the keys, pulls the current weights
// (retrying while the servers have not yet moved the rank to its address)
// and takes the servers' round as its own; barriers its predecessor
// already passed (the scheduler says how many) return at once.
// Thread-safe.
#ifndef PSTRAIN_KVSTORE_KVSTORE_H_
#define PSTRAIN_KVSTORE_KVSTORE_H_

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "cluster/cluster.h"
#include "kvstore/partition.h"
#include "proto/messages.pb.h"
#include "timeline/timeline.h"

namespace pstrain {
namespace kvstore {

using Handle = int64_t;

// One key of a PushPullGroup(): the sum of `device_values` is pushed and
// the updated weights land in `out`.
struct KeyPushPull {
  int64_t key = 0;
  std::vector<absl::Span<const float>> device_values;
  absl::Span<float> out;
};

// The largest frame a node must accept for data messages of up to
// `max_message_bytes` (their header included): at least
// cluster::kDefaultMaxFrameBytes.
inline int64_t MaxFrameBytesFor(int64_t max_message_bytes) {
  return std::max(cluster::kDefaultMaxFrameBytes,
                  max_message_bytes + (int64_t{1} << 20));
}

struct KVStoreOptions {
  // dist_*: how to join the job (role is set to WORKER).
  cluster::ClusterOptions cluster;
  // Arrays with more elements than this are split across all servers.
  int64_t bigarray_bound = 1000000;
  // Where the smaller arrays go (partition.h): balanced by elements, or
  // MXNet's hash of the key (worker --kvstore_mode=mxnet).
  Placement placement = Placement::kBalanced;
  // dist_*: a server's slice of a key travels in messages of at most this
  // many bytes (SplitIntoChunks, partition.h), so the server sums one chunk
  // while the next is on the wire and receive buffers stay small enough to be
  // reused. Every worker of a job must use the same value, in [4096, 1 GiB]
  // (Create() refuses others), and every node must accept frames this large
  // (ClusterOptions::max_frame_bytes, at least MaxFrameBytesFor(this); the
  // default does up to 63 MiB).
  int64_t max_message_bytes = int64_t{4} << 20;
  // dist_*: priority and slicing (issue #16). A server's slice of a key
  // travels in parts of at most min(slice_bytes, max_message_bytes) (0:
  // max_message_bytes), each its own request, so a small high-priority
  // request can go between the parts of a big array, and so can its reply.
  // The parts are registered by INIT like any chunk: every worker of a job
  // must use the same value, 0 or in [4096, 1 GiB].
  int64_t slice_bytes = int64_t{4} << 20;
  // dist_*: requests wait in a queue per server, higher priority first
  // (FIFO within a priority; send_queue.h), and leave while at most this
  // many bytes of request payload to that server have not been received
  // there (the server sends a receipt as soon as it has read a push; the
  // credit comes back with it or with the answer). A request queued later
  // with a higher priority overtakes the parts of a big array that have not
  // left. 0: every request goes to the transport at once (its own queue
  // orders by priority too, beyond a 16 MiB window).
  int64_t send_credit_bytes = 0;
  // dist_*: requests sent to one server and not yet answered, and their
  // data bytes (request plus expected reply). Push/Pull/PushPull wait for
  // room until send_timeout (DeadlineExceeded) or the job's end; one
  // operation always fits when nothing is outstanding. This bounds what
  // the servers buffer for this worker.
  int max_outstanding_requests_per_server = 1024;
  int64_t max_outstanding_bytes_per_server = int64_t{1} << 30;
  absl::Duration send_timeout = absl::Seconds(60);
  // dist_*: gradient compression (compression/compression.h; worker
  // --gradient_compression): pushes of arrays of at least min_bytes go
  // in this encoding (and with fp16 their pull replies too); worker rank 0
  // tells the servers with INIT. Every worker of a job must use the same.
  // Local types ignore it.
  proto::GradientCompression compression;
  // Tests only (worker --test_die_mid_push_step, --test_die_rank): the
  // dist_sync worker of rank test_die_rank, unless it is a replacement,
  // sends its pushes of round test_die_mid_push_round to server rank 0
  // only, then SIGKILLs itself (a push that reached some servers and not
  // others). 0: never.
  int64_t test_die_mid_push_round = 0;
  int test_die_rank = -1;
};

class KVStore {
 public:
  // `type`: local, device, dist_sync, dist_async, dist_device_sync.
  // InvalidArgument for another type; dist types join the job (errors name
  // the scheduler address).
  static absl::StatusOr<std::unique_ptr<KVStore>> Create(
      const std::string& type, const KVStoreOptions& options);
  virtual ~KVStore() = default;

  virtual const std::string& type() const = 0;
  virtual int rank() const = 0;
  virtual int num_workers() const = 0;
  // Servers of the job (dist_*); 0 for local types.
  virtual int num_servers() const { return 0; }

  // Initializes keys (only rank 0's values are stored), then all workers
  // pass a barrier: every worker's first Pull sees the same values.
  virtual absl::Status Init(const std::vector<int64_t>& keys,
                            const std::vector<absl::Span<const float>>& values,
                            absl::Time deadline) = 0;
  // Rank 0 installs the optimizer on every server (others only wait at the
  // barrier). Without it, dist_sync stores the sum of the pushes,
  // dist_async adds each push.
  virtual absl::Status SetOptimizer(const proto::OptimizerConfig& config,
                                    absl::Time deadline) = 0;
  // Pushes the sum of `device_values` (one span per local device, equal
  // sizes) for `key`. Higher priority is sent and served first.
  virtual absl::StatusOr<Handle> Push(
      int64_t key, const std::vector<absl::Span<const float>>& device_values,
      int priority) = 0;
  virtual absl::StatusOr<Handle> Pull(int64_t key, absl::Span<float> out,
                                      int priority) = 0;
  // Push then pull in one round trip: `out` receives the updated weights.
  virtual absl::StatusOr<Handle> PushPull(
      int64_t key, const std::vector<absl::Span<const float>>& device_values,
      absl::Span<float> out, int priority) = 0;
  // PushPull of several keys as one operation (tensor fusion): dist_* send
  // one message per server for the whole group (a new message whenever one
  // would pass max_message_bytes) instead of one per key, which saves the
  // per-message costs (wake-ups, syscalls, headers) of networks made of many
  // small arrays. Each key gets PushPull's semantics; the operation fails
  // with the first error of any key. Keys must be distinct.
  virtual absl::StatusOr<Handle> PushPullGroup(
      const std::vector<KeyPushPull>& group, int priority) = 0;
  // Waits for one operation. Its error (a server refusal, the job's abort)
  // or DeadlineExceeded. A handle is consumed by the Wait that returns its
  // result: a later Wait of it, or one that raced it on another thread,
  // gets NotFound.
  virtual absl::Status Wait(Handle handle, absl::Time deadline) = 0;
  // Whether a Wait of `handle` would return at once (its operation ended,
  // or the handle is unknown); consumes nothing, never blocks.
  virtual bool Done(Handle handle) const = 0;
  virtual absl::Status WaitAll(absl::Time deadline) = 0;
  virtual absl::Status Barrier(absl::Time deadline) = 0;
  // Sums `values` over all workers (dist_sync, dist_device_sync; other
  // types return their own values) into `out`, through the reserved
  // negative key `slot` (< 0), initialized on first use. Every worker must
  // call it with the same slot and size. Blocking.
  virtual absl::Status AllReduceSum(int64_t slot,
                                    absl::Span<const float> values,
                                    absl::Span<float> out,
                                    absl::Time deadline) = 0;
  // Rank 0 (dist_*): asks every server to write its part of the job
  // checkpoint of `step` (server/checkpoint.h) and waits until each has
  // copied its state (the writes go on in the background). Other ranks and
  // local types: nothing. dist_sync: call when this worker's pushes have
  // all completed (WaitAll) and before it pushes again, so the servers'
  // state is exactly that after step `step`.
  virtual absl::Status Checkpoint(int64_t step, absl::Time deadline) {
    (void)step;
    (void)deadline;
    return absl::OkStatus();
  }
  // Worker done: tells the scheduler (dist) so the job can shut down.
  virtual absl::Status Finish() = 0;
  // Counters of the worker's transport (dist; zeros for local types):
  // messages, drops, frames through shared memory.
  virtual transport::TransportStats transport_stats() const { return {}; }
  // dist_*: this worker's next heartbeats carry `stats` to the scheduler
  // (cluster::ClusterNode::SetHeartbeatStats); local types ignore it.
  // Thread-safe.
  virtual void SetNodeStats(const proto::NodeStats& stats) { (void)stats; }
  // dist_*: the node's timeline recorder (cluster::ClusterNode::timeline();
  // PushPullGroup and friends record "push" and "pull" events while it is
  // active); nullptr for local types. Thread-safe; lives as long as the
  // KVStore.
  virtual timeline::Recorder* timeline() const { return nullptr; }
  // Seconds spent so far in the optimizer's update rule in this process
  // (local, device: it runs inside Push/PushPull on the caller's thread);
  // 0 for dist_* (the servers run it). Thread-safe.
  virtual double optimizer_seconds() const { return 0; }
  // dist_*: a worker that replaced a dead one (--recovery=replace,
  // KVStoreOptions::cluster.replace_rank >= 0): after Init(), the dist_sync
  // rounds the servers had completed when it joined (the step of this run
  // it continues after); -1 for any other worker and before Init().
  virtual int64_t replacement_round() const { return -1; }
};

}  // namespace kvstore
}  // namespace pstrain

#endif  // PSTRAIN_KVSTORE_KVSTORE_H_
