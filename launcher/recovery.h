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
// - A job that finished, was stopped (SIGINT/SIGTERM/SIGHUP) or failed
//   before it started (a preflight check) is not restarted.
#ifndef PSTRAIN_LAUNCHER_RECOVERY_H_
#define PSTRAIN_LAUNCHER_RECOVERY_H_

#include <ostream>
#include <string>

#include "launcher/launcher.h"

namespace pstrain {
namespace launcher {

struct RestartOptions {
  int max_restarts = 0;
  // Empty: no --checkpoint_dir is passed; restarts start from scratch.
  std::string checkpoint_dir;
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
