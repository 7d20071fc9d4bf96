// Starts servers and workers on the hosts of a hosts file over ssh
// (`--launcher ssh`).
#ifndef PSTRAIN_LAUNCHER_SSH_BACKEND_H_
#define PSTRAIN_LAUNCHER_SSH_BACKEND_H_

#include <string>
#include <vector>

#include "launcher/backend.h"

namespace pstrain {
namespace launcher {

// Runs `ssh [-F CONFIG] -o BatchMode=yes ... -p PORT HOST 'cd WORKDIR && exec
// env -i HOME="$HOME" USER="$USER" NODE-ENV... /bin/sh -c WRAPPER
// pstrain-node NODE-ARGV...'`: the remote shell's startup files cannot change
// the node's environment, and the wrapper's stdin is ssh's, so the node stops
// when the launcher or the connection goes away. Thread-compatible.
class SshBackend : public Backend {
 public:
  explicit SshBackend(const JobContext& context) : Backend(context) {}

  std::string name() const override { return "ssh"; }
  // The address this host sends from on its route to the first host (on a
  // machine with several networks, the one the hosts can reach), else the
  // first non-loopback address of this host's name.
  absl::StatusOr<std::string> DefaultSchedulerHost() const override;
  // With --sync_dst_dir, first rsyncs the current directory to every host
  // (one at a time, saying so). Then checks every host in parallel, within
  // --ssh_connect_timeout_s + 10 s: reachable, the work directory exists,
  // every binary there. Writes a table of the hosts, their roles and the
  // result.
  absl::Status Preflight(const std::vector<ProcessSpec>& specs) override;
  NodeCommand Command(const ProcessSpec& spec) const override;
  // When `failed`: checks every host that ran a node, in parallel, for nodes
  // of the job still alive, kills them, and removes the token files their
  // wrappers left. A host that does not answer on its ssh port within 2 s (a
  // cut link, a dead host) is not waited for: its nodes stop by themselves
  // once the scheduler has been silent for their heartbeat timeout.
  void CleanUp(const std::vector<StartedNode>& nodes, bool failed) override;

 private:
  // `ssh [-F CONFIG] -o ... -p PORT HOST`, for a command to be appended.
  std::vector<std::string> SshArgv(const Host& host) const;
};

}  // namespace launcher
}  // namespace pstrain

#endif  // PSTRAIN_LAUNCHER_SSH_BACKEND_H_
