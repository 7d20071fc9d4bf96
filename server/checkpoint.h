// A server's part of a job checkpoint (checkpoint/manifest.h): its shard's
// learned slices and optimizer state (ShardSnapshot) as an NDArray-list
// file `server-RANK.params` in the checkpoint's folder, with arrays
//   weight:KEY:OFFSET    float32, the slice's weights
//   mom:KEY:SLOT         float32, momentum / Adam's first moment
//   var:KEY:SLOT         float32, Adam's second moment
//   count:KEY:SLOT       int64[1], the slot's update count
//   key_count:KEY        int64[1], the key's update count
//   num_update           int64[1], the count the lr schedule sees
//   has_optimizer        int64[1], 1 when the shard had an optimizer
// (SLOT is the slice's offset).
//
// Saving copies the shard (the only pause of the I/O thread) and writes the
// file on a background thread. Thread-compatible: one thread (the server's
// I/O thread) calls every method.
#ifndef PSTRAIN_SERVER_CHECKPOINT_H_
#define PSTRAIN_SERVER_CHECKPOINT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "checkpoint/manifest.h"
#include "checkpoint/ndarray_list.h"
#include "server/shard.h"
#include "util/mutex.h"

namespace pstrain {
namespace server {

std::vector<checkpoint::NDArray> SnapshotToArrays(const ShardSnapshot& s);
// DataLoss naming `source` and the array for a name or shape it does not
// expect.
absl::StatusOr<ShardSnapshot> SnapshotFromArrays(
    const std::vector<checkpoint::NDArray>& arrays, const std::string& source);

struct ServerCheckpointOptions {
  int rank = 0;
  // Where checkpoints go (ROOT of checkpoint::StepDir); empty: CHECKPOINT
  // requests are refused.
  std::string checkpoint_dir;
  // A checkpoint folder to restore from when the optimizer is set; empty:
  // none.
  std::string resume_from;
};

class ServerCheckpointer {
 public:
  explicit ServerCheckpointer(const ServerCheckpointOptions& options)
      : options_(options) {}
  // Joins the writer after the writes already queued (bounded by
  // kFlushTimeout; a write still running then is abandoned, logged).
  ~ServerCheckpointer();
  ServerCheckpointer(const ServerCheckpointer&) = delete;
  ServerCheckpointer& operator=(const ServerCheckpointer&) = delete;

  // Copies `shard` and queues the write of its part of checkpoint `step`.
  // FailedPrecondition without a checkpoint_dir. Logs the pause.
  absl::Status Save(int64_t step, const Shard& shard);

  // When resume_from is set and nothing was restored yet: reads this
  // server's part (checked against the manifest) into `shard`. Errors name
  // the file. REQUIRES: after the shard's Init and SetOptimizer.
  absl::Status MaybeRestore(Shard* shard);

 private:
  const ServerCheckpointOptions options_;
  bool restored_ = false;
  // The last snapshot once written, reused by the next Save (its memory
  // is already mapped); taken by Save, given back by the writer.
  Mutex mu_;
  std::shared_ptr<ShardSnapshot> spare_ ABSL_GUARDED_BY(mu_);
  // Declared last: joined first.
  checkpoint::BackgroundWriter writer_;
};

}  // namespace server
}  // namespace pstrain

#endif  // PSTRAIN_SERVER_CHECKPOINT_H_
