// Complete, consistent checkpoints of a whole job (issue #15): one folder
// per checkpoint, ROOT/step-NNNNNNNNNN/, holding the parts every node wrote
// and a MANIFEST naming the step, the data position and every part with
// its size and zlib CRC-32. The manifest is written last and atomically
// (temporary file, fsync, rename, fsync of the folder): a folder without a
// manifest, or whose parts do not match it, is not a checkpoint.
//
// MANIFEST is text, one item a line:
//   pstrain-checkpoint 1
//   step STEP            (training steps done)
//   epoch EPOCH          (the epoch of the next batch)
//   batch BATCH          (its index in the epoch)
//   part NAME SIZE CRC32 (one per part; NAME a plain file name, CRC32 hex)
//
// Thread-compatible free functions; BackgroundWriter is thread-safe.
#ifndef PSTRAIN_CHECKPOINT_MANIFEST_H_
#define PSTRAIN_CHECKPOINT_MANIFEST_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "util/mutex.h"

namespace pstrain {
namespace checkpoint {

inline constexpr char kManifestName[] = "MANIFEST";

// The parts' file names: "server-3.params" (server/checkpoint.h),
// "worker-2.params" (worker/recovery.h).
std::string ServerPartName(int rank);
std::string WorkerPartName(int rank);

// "ROOT/step-0000000012" for step 12.
std::string StepDir(const std::string& root, int64_t step);

// Creates `dir` and its missing parents (mkdir -p). Errors name it.
absl::Status MakeDirs(const std::string& dir);

// Files are written with WriteFileAtomically (util/file.h): a temporary
// file beside it, fsync, rename, fsync of the folder.

// zlib's CRC-32 of `bytes`.
uint32_t Crc32(absl::string_view bytes);

struct ManifestPart {
  std::string name;  // File name inside the checkpoint's folder.
  int64_t size = 0;
  uint32_t crc32 = 0;
};

struct Manifest {
  int64_t step = 0;
  int epoch = 0;
  int64_t batch = 0;
  // How the job's keys were split over its servers (kvstore::PlacementName;
  // a line "partition NAME"); empty: not recorded (checkpoints written
  // before 2026-12-07).
  std::string partition;
  std::vector<ManifestPart> parts;
};

std::string SerializeManifest(const Manifest& m);
// DataLoss naming `source` and the line for anything malformed.
absl::StatusOr<Manifest> ParseManifest(absl::string_view text,
                                       absl::string_view source);

// Reads `dir`/MANIFEST alone (no part is read or checked). Errors name the
// file.
absl::StatusOr<Manifest> ReadManifest(const std::string& dir);

// Reads every part `parts` names in `dir` (which must all exist), computes
// their sizes and CRCs and writes `dir`/MANIFEST atomically. Errors name
// the file.
absl::Status WriteManifest(const std::string& dir, Manifest m,
                           const std::vector<std::string>& parts);

// Waits until every file of `parts` exists in `dir` (parts are written
// atomically, so one that exists is complete), polling the filesystem
// (the parts come from other hosts over a shared filesystem). Returns
// DeadlineExceeded naming the first missing part at `deadline`, Cancelled
// once `*cancel` is true.
absl::Status WaitForParts(const std::string& dir,
                          const std::vector<std::string>& parts,
                          absl::Time deadline, const std::atomic<bool>* cancel);

// Reads `dir`'s manifest and checks every part against it. DataLoss
// naming the file that is missing, of the wrong size or whose CRC differs;
// NotFound without a manifest.
absl::StatusOr<Manifest> VerifyCheckpoint(const std::string& dir);

// The bytes of part `name` of the checkpoint in `dir`, checked against its
// manifest: NotFound without a manifest, DataLoss naming the file when the
// manifest does not list it, or its size or CRC differs.
absl::StatusOr<std::string> ReadVerifiedPart(const std::string& dir,
                                             const std::string& name);

// The newest checkpoint folder under `root` that verifies; each newer one
// that does not is skipped with a WARNING naming why (its file). NotFound
// when none verifies.
absl::StatusOr<std::string> FindLatestCheckpoint(const std::string& root);

// Deletes the step folders under `root` older than the `keep` newest ones
// that have a manifest (a folder without one older than those too).
// REQUIRES: keep >= 1. Errors name the folder that could not be removed.
absl::Status PruneCheckpoints(const std::string& root, int keep);

// One thread that runs tasks (checkpoint writes) in order, so that the
// training thread only waits for the copy of its state. The thread starts
// in the constructor; the destructor sets cancelled(), drops the tasks not
// begun and joins it. Thread-safe.
class BackgroundWriter {
 public:
  using Task = std::function<absl::Status()>;
  BackgroundWriter();
  ~BackgroundWriter();
  BackgroundWriter(const BackgroundWriter&) = delete;
  BackgroundWriter& operator=(const BackgroundWriter&) = delete;

  // Queues `task`. Its error is logged (ERROR) and kept for Flush().
  void Submit(Task task);
  // Waits until every task submitted so far has ended; returns the first
  // error of any task since the last Flush, or DeadlineExceeded.
  absl::Status Flush(absl::Time deadline);
  // True once the destructor runs: long tasks (WaitForParts) stop.
  const std::atomic<bool>* cancelled() const { return &cancel_; }

 private:
  void Loop();
  Mutex mu_;
  CondVar cv_;
  std::deque<Task> tasks_ ABSL_GUARDED_BY(mu_);
  bool busy_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status first_error_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> cancel_{false};
  std::thread thread_;
};

}  // namespace checkpoint
}  // namespace pstrain

#endif  // PSTRAIN_CHECKPOINT_MANIFEST_H_
