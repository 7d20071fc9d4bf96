// `launch --max_restarts R` (issue #15): runs a job and, when a process of
// it fails (a process died or exited non-zero, a host was lost), restarts
// the whole job from the newest complete checkpoint under
// --checkpoint_dir, up to R times.
//
// - `checkpoint_dir` is passed to every server and worker as
//   --checkpoint_dir=DIR; a restarted job's servers and workers also get
//   --resume_from=DIR/step-N, the newest folder whose MANIFEST and parts
//   verify (checkpoint::FindLatestCheckpoint; a corrupt or partial one is
//   skipped with a message naming the file). Without a complete checkpoint
//   the job restarts from the beginning.
// - Each restart is logged: what failed, the checkpoint and its step, how
//   long before the failure that checkpoint was written (the work lost, at
//   most), and how long the failed run lasted.
// - A job that finished, was stopped (SIGINT/SIGTERM/SIGHUP) or whose
//   first run failed before it started (a preflight check) is not
//   restarted. A restart whose host check cannot reach a host counts as a
//   failure of that host and costs a restart (after check_retry_pause).
// - ssh: failures are counted per host across runs (host_health.h); on a
//   restart a host that failed twice is left out when the job's servers
//   and workers fit on the other hosts by their slots, with a line naming
//   the host and its failures; when it cannot be, a line says why and the
//   host is kept.
#ifndef PSTRAIN_LAUNCHER_RECOVERY_H_
#define PSTRAIN_LAUNCHER_RECOVERY_H_

#include <ostream>
#include <string>

#include "absl/time/time.h"
#include "launcher/launcher.h"

namespace pstrain {
namespace launcher {

struct RestartOptions {
  int max_restarts = 0;
  // Empty: no --checkpoint_dir is passed; restarts start from scratch.
  std::string checkpoint_dir;
  // After a restart's host check failed: the wait before the next try.
  absl::Duration check_retry_pause = absl::Seconds(3);
};

// `options` with --checkpoint_dir and (non-empty `resume_from`)
// --resume_from appended to the server flags and the worker command.
LaunchOptions WithCheckpointFlags(LaunchOptions options,
                                  const std::string& checkpoint_dir,
                                  const std::string& resume_from);

// Runs the job (Launcher::Run) and restarts it as above. Returns the last
// run's exit code. Output as Launcher's, plus "launch: restart ..." lines.
int RunWithRestarts(const LaunchOptions& options, const RestartOptions& restart,
                    std::ostream* out);

}  // namespace launcher
}  // namespace pstrain

#endif  // PSTRAIN_LAUNCHER_RECOVERY_H_
