// The state of the key slices one server owns and the rules that change it
// (DESIGN.md, KVStore semantics), without sockets: the server's message loop
// (server.cc) hands each request here and sends the replies it gets back.
//
// - Init stores worker rank 0's values (and the job's sync mode); a slice
//   initialised again starts over (a round in progress is forgotten).
// - dist_sync: a slice holds each worker's push until every worker has
//   pushed it once, sums them in worker-rank order (bitwise reproducible),
//   applies the optimizer once (or, without one, stores the sum), and only
//   then acknowledges the pushes whose every slice is now applied.
// - dist_async: each push is applied on arrival and acknowledged at once.
// - Negative keys are never optimized: they store the sum of the round's
//   pushes (dist_sync) or add each push (dist_async); used to combine
//   metrics across workers.
// - Pull returns the current weights: a pull during a dist_sync round sees
//   the previous round's weights, never a partial sum. Replies carry the
//   weights zero-copy; an update while a reply still reads them moves to a
//   spare buffer, so no reply ever sees a half-applied update.
//
// Gradient compression (compression/compression.h): INIT carries the
// job's; pushes may carry frames in that encoding (dequantised on arrival,
// then summed and applied as float32), and pulls may ask for fp16 weights
// when it is fp16. Another encoding, or a frame whose size does not match
// its encoding, is refused naming the key and the sizes.
//
// Push identity (issue #15, --recovery=replace): a dist_sync push with
// Header.push_round = r > 0 is worker rank R's push of round r of each
// slice it names (the slice's r-th round since INIT). A slice whose round r
// was already applied, or whose open round r already holds R's push, takes
// the push as a repeat: acknowledged (with the round's completion, or at
// once for an applied round) and never summed again. A round beyond the
// open one is refused. A PULL's reply carries in push_round the fewest
// rounds its slices have completed. Pushes without an identity (0) are
// refused as before when R already pushed the open round.
//
// Bad input (an unknown slice, a wrong length, a missing frame, a push
// listed twice in a round) is refused with InvalidArgument naming it; the
// state is unchanged then. Nothing a request carries can crash the shard.
//
// Thread-compatible: one thread (the transport's I/O thread) calls every
// method. Replies may outlive the shard and be released on any thread.
#ifndef PSTRAIN_SERVER_SHARD_H_
#define PSTRAIN_SERVER_SHARD_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "compression/compression.h"
#include "nn/optimizer.h"
#include "proto/messages.pb.h"
#include "timeline/timeline.h"
#include "transport/message.h"
#include "transport/transport.h"

namespace pstrain {
namespace server {

struct ShardOptions {
  // Pushes per dist_sync round (the job's workers). REQUIRES: >= 1.
  int num_workers = 1;
  // The transport whose shared-memory arena holds the weights (replies to
  // workers on this host then pass them by reference) and that tells when
  // a reply sent by reference still reads them. nullptr: the weights live
  // in ordinary memory (tests). Not owned; must outlive the shard and
  // every reply it made.
  const transport::Transport* shared = nullptr;
  // The server's timeline (timeline/timeline.h), or nullptr: the sum and
  // update of each slice's dist_sync round n are recorded when step n is in
  // its window (dist_async: a slice's pushes divided by the workers, plus
  // 1, stand for the step). Negative keys are never recorded. Not owned;
  // must outlive the shard.
  timeline::Recorder* timeline = nullptr;
  // --recovery=replace: every learned slice also keeps its weights of the
  // round before the last (a copy per round), so a replacement whose
  // predecessor's push reached this server and not others can compute
  // that step from the weights it was computed from (Pull, below).
  bool keep_previous = false;
};

// A message to send to node `to`.
struct Reply {
  int to = -1;
  transport::Message msg;
  // The step (timeline/timeline.h) whose round this acknowledges, when it
  // is in the timeline's window (the server records its sending); else 0.
  int64_t step = 0;
};

// The RESPONSE to the request `req`: its request id and priority, `error`
// (empty: success), `frames`, and, with `with_slices`, the keys, offsets
// and lengths of `req` (the slices `frames` hold).
transport::Message MakeReply(const proto::Header& req, const std::string& error,
                             std::vector<transport::Frame> frames = {},
                             bool with_slices = false);

// What a checkpoint keeps of a shard (server/checkpoint.h): the weights of
// every slice of a learned key (keys >= 0; the negative metric keys are
// started afresh) and the optimizer's state. A value type.
struct ShardSnapshot {
  struct SliceWeights {
    int64_t key = 0;
    int64_t offset = 0;
    std::vector<float> values;
  };
  std::vector<SliceWeights> slices;
  bool has_optimizer = false;
  nn::OptimizerState optimizer;
};

class Shard {
 public:
  explicit Shard(const ShardOptions& options);
  ~Shard();
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  // INIT: stores msg's values as the weights of the slices its header
  // names (keys, offsets; one frame each) and takes its sync_mode for the
  // job. The values are copied. The caller checks the sender is worker
  // rank 0. InvalidArgument when frames and header disagree.
  absl::Status Init(const transport::Message& msg);

  // SET_OPTIMIZER: the update rule from now on. InvalidArgument for an
  // impossible configuration (the previous rule stays).
  absl::Status SetOptimizer(const proto::OptimizerConfig& config);

  // PULL: the reply carrying the current weights of the slices `req`
  // names. InvalidArgument for an unknown slice or a wrong length. A PULL
  // with push_round N > 0 asks for the weights a push of round N is
  // computed from, those after round N - 1: the current ones, or with
  // keep_previous the previous ones of a slice one round ahead;
  // FailedPrecondition when a slice holds neither.
  absl::StatusOr<transport::Message> Pull(const proto::Header& req);

  // PUSH or PUSH_PULL from `worker_rank` (-1: the sender is not a worker)
  // carrying one gradient frame per slice its header names. Appends to
  // `replies` the acknowledgements now due (a PUSH_PULL's carries the
  // slices' new weights): dist_async, this push's; dist_sync, none until
  // the push completes a round, then those of every push the round
  // completed. InvalidArgument, with nothing applied or held, for an
  // unknown slice, a wrong length, missing frames, a sender that is not a
  // worker, a slice listed twice, (dist_sync) a slice this worker already
  // pushed this round without an identity, or a push_round beyond the
  // slice's open round. Repeats (above) are acknowledged, not summed.
  // Takes `msg` only when it returns OK (dist_sync holds its gradient
  // frames until their rounds complete; nothing is copied); after an error
  // `msg` is untouched, so the caller can still answer it.
  absl::Status Push(int worker_rank, transport::Message&& msg,
                    std::vector<Reply>* replies);

  // A copy of the weights of the learned slices and of the optimizer's
  // state (dist_sync: the state after the last completed round; pushes of
  // a round in progress are not part of it).
  ShardSnapshot Snapshot() const;
  // The same into `out`, reusing the memory it holds (a previous
  // snapshot's): then the copy is all the pause costs, no fresh pages.
  void Snapshot(ShardSnapshot* out) const;

  // Replaces the weights and the optimizer state with `snapshot`'s, after
  // Init and SetOptimizer: the next round continues exactly where the
  // snapshot's shard stopped. InvalidArgument (naming the slice) when the
  // learned slices held and the snapshot's differ, a length or a moment's
  // size differs, or the snapshot has optimizer state and the shard no
  // optimizer; the state may then be partly replaced.
  absl::Status Restore(const ShardSnapshot& snapshot);

  // Number of slices held.
  size_t num_slices() const { return slices_.size(); }

  // Seconds spent so far summing pushes (dist_sync rounds, and dist_async
  // or optimizer-less adds) and in the optimizer's update rule.
  struct Times {
    double sum_s = 0;
    double update_s = 0;
  };
  const Times& times() const { return times_; }
  // dist_sync slices with a round in progress: some worker has pushed
  // them, not every worker yet (the server waits for the slowest).
  int64_t open_rounds() const { return open_rounds_; }
  // The fewest rounds (dist_sync) or pushes (dist_async) applied over the
  // learned slices (keys >= 0); 0 with none.
  int64_t min_learned_rounds() const;
  // Slices of pushes taken as repeats (acknowledged, not summed) so far.
  int64_t repeated_pushes() const { return repeated_pushes_; }

 private:
  using SliceId = std::pair<int64_t, int64_t>;  // Key, offset.

  // A dist_sync push held until every slice it names is applied.
  struct Request {
    transport::Message msg;
    int outstanding = 0;  // Slices not yet applied.
    // The largest timeline step (TracedStep) of its slices' rounds so far.
    int64_t step = 0;
  };

  // One version of a slice's weights: in memory of its own, in the
  // transport's shared-memory arena (replies to workers on this host then
  // pass it by reference), or in a received push adopted as the weights;
  // and how many replies being sent still read it (they release it on
  // ZeroMQ's thread, or, when passed by reference, in the arena).
  struct Version {
    explicit Version(std::vector<float> v);
    // REQUIRES: `f` owns its bytes (a received frame, or a
    // Transport::NewSharedFrame of `shared`). `shared`: the transport that
    // knows whether replies sent by reference still read it.
    explicit Version(transport::Frame f,
                     const transport::Transport* shared = nullptr);
    bool free() const;

    std::vector<float> owned;
    transport::Frame frame;
    absl::Span<float> values;
    const transport::Transport* shared = nullptr;
    std::atomic<int> readers{0};
  };
  using Buffer = std::shared_ptr<Version>;

  struct Slice {
    // The current weights, sent zero-copy by pull replies. An update while
    // a reply still reads the current version moves to a spare version no
    // reply reads any more (allocating one only when every spare is still
    // read), so the steady state allocates nothing.
    Buffer weights_ptr;
    std::vector<Buffer> spares;
    absl::Span<const float> weights() const { return weights_ptr->values; }
    // dist_sync: this round's push of each worker rank (request + frame
    // index), and how many have arrived.
    std::vector<std::shared_ptr<Request>> pending;
    std::vector<int> frame_of;
    int received = 0;
    // keep_previous: the weights after round previous_round (-1: none).
    std::vector<float> previous;
    int64_t previous_round = -1;
    // Repeats of pushes held in the open round: acknowledged with it.
    std::vector<std::shared_ptr<Request>> repeats;
    // dist_sync with an optimizer and several workers: the round's sum.
    // Allocated on first use, then reused.
    std::vector<float> merged;
    // Rounds completed (dist_sync) or pushes applied (dist_async) since
    // the slice was initialized: the timeline's step.
    int64_t rounds = 0;
  };

  // A version of `n` floats (unset), in the shared-memory arena when it
  // has room.
  Buffer NewVersion(size_t n) const;
  // The weights of `s` to modify in place; `keep`: with their current
  // values (false when the caller overwrites every value).
  absl::Span<float> Writable(Slice& s, bool keep = true);
  // A frame over the current weights of `s` for a reply (zero-copy).
  static transport::Frame Share(const Slice& s);

  // OK when every slice `h` names exists and `h` states its length.
  absl::Status CheckSlices(const proto::Header& h) const;
  // Weights of the slices `h` names, as frames. REQUIRES: CheckSlices(h).
  std::vector<transport::Frame> WeightsOf(const proto::Header& h);
  // The acknowledgement of push `h` (with the weights for a PUSH_PULL).
  Reply Ack(const proto::Header& h);
  void ApplyAsync(const SliceId& id, Slice& s, absl::Span<const float> grad);
  // dist_sync: every worker has pushed slice `id`: sum, apply, ack.
  void Complete(const SliceId& id, Slice& s, std::vector<Reply>* replies);
  // The step of slice `id`'s round `s.rounds` when the timeline records it
  // (in its window, a key >= 0), else 0.
  int64_t TracedStep(const SliceId& id, const Slice& s) const;
  // Records `name` on `track` for slice `id` from `begin` to `end`.
  void Trace(int track, const char* name, const SliceId& id, const Slice& s,
             int64_t step, absl::Time begin, absl::Time end);

  const ShardOptions options_;
  std::map<SliceId, Slice> slices_;
  std::unique_ptr<nn::Optimizer> optimizer_;
  bool sync_ = true;
  proto::GradientCompression compression_;  // From INIT.
  Times times_;
  int64_t open_rounds_ = 0;
  int64_t repeated_pushes_ = 0;
  // The timeline's tracks (0 without one).
  int sum_track_ = 0, update_track_ = 0;
};

}  // namespace server
}  // namespace pstrain

#endif  // PSTRAIN_SERVER_SHARD_H_
