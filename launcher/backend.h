// How `launch` starts the processes of a job: one Backend per way of
// starting a process (here, locally or over ssh). The Launcher (launcher.h)
// decides what runs where and watches the job; a backend only checks its
// hosts, starts a ProcessSpec through the node wrapper (wrapper.h), asks it to
// stop, and cleans up after it. A new way of starting nodes (Slurm's `srun`,
// `mpirun`) is a new Backend and a case in MakeNodeBackend(), not a change to
// Launcher::Run().
//
// Every process a backend starts is a local child (a Subprocess: the node's
// wrapper itself, or a client such as ssh that carries the wrapper's stdin
// and output), so the launcher can watch them all the same way: the wrapper
// kills its node when that stdin reaches EOF.
#ifndef PSTRAIN_LAUNCHER_BACKEND_H_
#define PSTRAIN_LAUNCHER_BACKEND_H_

#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "launcher/launcher.h"
#include "launcher/subprocess.h"
#include "launcher/wrapper.h"

namespace pstrain {
namespace launcher {

// What every backend of one job shares. The pointers must outlive the
// backends.
struct JobContext {
  const LaunchOptions* options = nullptr;
  // The launcher's messages ("launch: ..." lines, the host table).
  std::ostream* out = nullptr;
  // The launcher's current directory, and the directory the nodes run in
  // (--sync_dst_dir, else the current directory).
  std::string cwd;
  std::string workdir;
  // The nodes' environment ("K=V"): the whitelist plus --env. Backends add
  // HOME and USER from wherever the node runs.
  std::vector<std::string> node_env;
};

// The command line and environment that start one node through its wrapper.
struct NodeCommand {
  std::vector<std::string> argv;
  std::vector<std::string> env;
};

// A node a backend started, with what its wrapper reported.
struct StartedNode {
  ProcessSpec spec;
  NodeReport report;
};

// Starts and cleans up after the processes of a job on one kind of host.
// Thread-compatible: the launcher's one thread calls every method.
class Backend {
 public:
  explicit Backend(const JobContext& context) : context_(context) {}
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;
  virtual ~Backend() = default;

  // The launcher's name, for the job line: "local", "ssh".
  virtual std::string name() const = 0;

  // The address the nodes this backend starts use to reach the scheduler,
  // when --scheduler_host is not given. Returns an error (the launcher's
  // last line) when there is none.
  virtual absl::StatusOr<std::string> DefaultSchedulerHost() const = 0;

  // Checks, before anything of the job starts, that every process in
  // `specs` (those this backend will start) can start: its binary is there,
  // its host answers. May prepare the hosts (rsync) and write progress to
  // the context's `out`. Returns an error whose message is the launcher's
  // last line; then nothing must be started.
  virtual absl::Status Preflight(const std::vector<ProcessSpec>& specs) = 0;

  // The command that runs `spec` under the wrapper. Pure: starts nothing.
  virtual NodeCommand Command(const ProcessSpec& spec) const = 0;

  // Starts Command(spec) and hands the wrapper the job `token` on its stdin
  // (never on a command line). The caller owns the process. Returns an
  // error when it cannot be started; a token that cannot be delivered is
  // logged (the wrapper then ends the node with status 98).
  absl::StatusOr<Subprocess> Start(const ProcessSpec& spec,
                                   const std::string& token) const;

  // Asks a process Start() returned to stop; it must end within the
  // launcher's --stop_grace_s, after which its group gets SIGKILL. `exited`:
  // the local process has already been reaped. The default closes its stdin
  // (the wrapper then stops the node) and sends SIGTERM to its group.
  virtual void Stop(Subprocess* process, bool exited) const;

  // After every process Start() returned has ended and been reaped: makes
  // sure none of `nodes` outlives the job where it ran, and removes the
  // token files their wrappers left (a wrapper killed with SIGKILL). `failed`:
  // the job failed or was stopped, so nodes may be left. Reports what it did
  // on the context's `out`; bounded in time.
  virtual void CleanUp(const std::vector<StartedNode>& nodes, bool failed) = 0;

  // After Preflight(): the hosts it could not reach (ssh failed or timed
  // out), each with what the check said. Empty for backends without hosts.
  const std::vector<std::pair<Host, std::string>>& unreachable() const {
    return unreachable_;
  }

 protected:
  const LaunchOptions& options() const { return *context_.options; }
  const JobContext& context() const { return context_; }
  // Writes "launch: LINE" to the context's `out`.
  void Say(const std::string& line) const;

  // Filled by Preflight() (see unreachable()).
  std::vector<std::pair<Host, std::string>> unreachable_;

 private:
  const JobContext context_;
};

// The backend that starts the servers and workers for `context.options`'s
// mode (the scheduler is always started by a LocalBackend).
std::unique_ptr<Backend> MakeNodeBackend(const JobContext& context);

// Helpers shared by backends.

// The launcher's own environment, for the commands it runs (ssh, rsync, sh).
std::vector<std::string> OwnEnvironment();

// The result of RunCommand().
struct CommandResult {
  bool ok = false;          // Exited 0.
  std::string description;  // How it ended ("exit status 1", "timed out
                            // after 10s", or why it could not start).
  std::string output;       // Its stdout and stderr.
};

// Runs `argv` (with OwnEnvironment()) to completion, killing it at
// `timeout`.
CommandResult RunCommand(const std::vector<std::string>& argv,
                         absl::Duration timeout);

// The address this host sends from on its route to `host` (on a machine
// with several networks, the one `host` can reach); when that is loopback,
// the first non-loopback address of this host's name.
absl::StatusOr<std::string> AddressTowards(const Host& host);

// The last non-blank line of `text`, stripped; "" when none.
std::string LastLine(const std::string& text);

}  // namespace launcher
}  // namespace pstrain

#endif  // PSTRAIN_LAUNCHER_BACKEND_H_
