// Starts processes on the launching host: the scheduler always, and every
// process of a `--launcher local` job.
#ifndef PSTRAIN_LAUNCHER_LOCAL_BACKEND_H_
#define PSTRAIN_LAUNCHER_LOCAL_BACKEND_H_

#include <string>
#include <vector>

#include "launcher/backend.h"

namespace pstrain {
namespace launcher {

// Runs `/bin/sh -c WRAPPER pstrain-node NODE-ARGV...` here, in the
// launcher's current directory, with the node environment plus the
// launcher's HOME and USER. Thread-compatible.
class LocalBackend : public Backend {
 public:
  explicit LocalBackend(const JobContext& context) : Backend(context) {}

  std::string name() const override { return "local"; }
  // "127.0.0.1".
  absl::StatusOr<std::string> DefaultSchedulerHost() const override;
  // Checks that each binary of `specs` is an executable here (`command -v`).
  absl::Status Preflight(const std::vector<ProcessSpec>& specs) override;
  NodeCommand Command(const ProcessSpec& spec) const override;
  // Removes the token files wrappers killed with SIGKILL left. The nodes
  // themselves were in the processes' groups, which the launcher killed.
  void CleanUp(const std::vector<StartedNode>& nodes, bool failed) override;
};

}  // namespace launcher
}  // namespace pstrain

#endif  // PSTRAIN_LAUNCHER_LOCAL_BACKEND_H_
