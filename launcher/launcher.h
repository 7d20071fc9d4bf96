// `launch`: starts a pstrain job (one scheduler, servers, workers) locally or
// over ssh from a hosts file, streams every process's output with a
// `[role index host]` prefix, and makes sure no process outlives the job.
//
// Placement follows MXNet's launcher: the scheduler runs on the launching
// host; process i of servers-then-workers runs on hosts[i % hosts.size()],
// skipping hosts whose hosts-file `slots=` are taken (host_health.h).
//
// Every process is started through a small POSIX-sh wrapper that
//   - reads the job token from the first line of its stdin into a file only
//     the user can read ($TMPDIR/pstrain-token.XXXXXX, mode 600), and passes
//     `--token_file=FILE` (the token is never on a command line),
//   - runs the node with exactly the environment the launcher gives it
//     (`env -i`: a documented whitelist plus --env, which overrides the
//     whitelist; remote shell startup files cannot change it),
//   - kills the node (SIGTERM, then SIGKILL after 5 s) as soon as its stdin
//     reaches EOF, i.e. when the launcher or its ssh connection goes away
//     (also when the launcher was killed with SIGKILL); passes SIGHUP,
//     SIGINT and SIGTERM on to the node as SIGTERM,
//   - kills by PID only while the PID still names the node (same start time
//     in /proc), never a later process that reuses the number,
//   - removes the token file however it ends; when it was killed with
//     SIGKILL itself (a node that outlived --stop_grace_s), the launcher
//     removes the file: locally at the end of the job, on remote hosts with
//     its check for leftover processes after a failure or a stop.
//
// A job runs in four phases (launcher.cc): preflight (options, the
// scheduler's address, the plan, every host checked; nothing starts unless
// all pass), start, watch (output, failures, stop signals) and stop (nothing
// left, the final line). How a process starts on its host is a Backend
// (backend.h: local_backend.h, ssh_backend.h); the wrapper is in wrapper.h.
#ifndef PSTRAIN_LAUNCHER_LAUNCHER_H_
#define PSTRAIN_LAUNCHER_LAUNCHER_H_

#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "launcher/hostfile.h"

namespace pstrain {
namespace launcher {

enum class Mode { kLocal, kSsh, kSlurm, kMpi };

struct LaunchOptions {
  int num_workers = 0;
  int num_servers = 0;
  Mode mode = Mode::kLocal;
  // ssh and slurm modes: where servers and workers go (slurm: the
  // allocation's nodes, ReadSlurmAllocation()).
  std::vector<Host> hosts;
  // slurm mode: the allocation (SLURM_JOB_ID) whose steps run the nodes.
  std::string slurm_job_id;
  // mpi mode (launcher/mpi.h): Open MPI's mpirun and extra arguments for it
  // (e.g. --mca btl_tcp_if_include NET). `hosts` may be empty: all here.
  std::string mpirun = "mpirun";
  std::vector<std::string> mpi_args;
  // ssh mode: rsync the current directory there first and run the job there.
  // Empty: run in the launcher's current directory on every host.
  std::string sync_dst_dir;
  // Extra environment, "K=V", on top of the whitelist (kEnvWhitelist).
  std::vector<std::string> env;
  // The worker command (binary and its job flags).
  std::vector<std::string> command;
  // The scheduler and server binaries and their extra flags.
  std::string scheduler_binary;
  std::vector<std::string> scheduler_args;
  std::string server_binary;
  std::vector<std::string> server_args;
  // Address servers and workers use to reach the scheduler. Empty: 127.0.0.1
  // in local mode; in ssh mode the address this host sends from on its route
  // to the first host (else the address its host name resolves to).
  std::string scheduler_host;
  // 0: a free port is picked.
  int scheduler_port = 0;
  // The scheduler's live status server (its --status_port): -1 off, 0 a
  // free port. Once it serves, launch prints "launch: status page: URL".
  int status_port = -1;
  // The scheduler's --straggler_ratio (scheduler/straggler.h; > 1), passed
  // on when it differs from the scheduler's default, 1.2.
  double straggler_ratio = 1.2;
  // The timeline (launch --timeline FILE, README.md, Timeline): when not
  // empty, every server and worker gets --timeline=<its part path>
  // (timeline::PartPath(timeline, role, index)) and --timeline_steps.
  std::string timeline;
  std::string timeline_steps = "10:20";
  // ssh mode: passed to ssh as `-F FILE` (keys, known hosts, user).
  std::string ssh_config;
  absl::Duration ssh_connect_timeout = absl::Seconds(10);
  // After a failure or a stop request, how long processes get to exit after
  // SIGTERM before SIGKILL.
  absl::Duration stop_grace = absl::Seconds(10);
  // --recovery=replace (issue #15): a worker that dies (exits non-zero or
  // is killed; or the scheduler declares it dead by heartbeat, when launch
  // kills it) does not stop the job. Workers run with --rank_hint=INDEX
  // (so launch index = rank), the scheduler with --recovery=replace and
  // --replace_timeout_s; launch starts a replacement process for that rank
  // with the dead one's flags plus --replace_rank=RANK and
  // --replace_since_us (on its host; ssh: the next host of the hosts file
  // when that one cannot start it), after a back-off of 0, 1, 2, 4, 8 s
  // for a rank's replacements in a row that died again, at most
  // kMaxReplacementsPerRank per rank. A dead server or scheduler stops
  // the job as before (then --max_restarts applies). local and ssh only.
  bool replace_workers = false;
  absl::Duration replace_timeout = absl::Seconds(60);
};

// The most replacements launch starts for one worker rank.
inline constexpr int kMaxReplacementsPerRank = 5;

// Environment variables passed from the launcher's environment to every
// process when set (besides HOME and USER, which come from the remote
// host).
extern const char* const kEnvWhitelist[];

// Checks `options` before anything starts. InvalidArgument names the flag,
// its value and what is allowed ("--num_workers 0: must be >= 1 (-n)"), or
// says what is missing (no worker command; ssh without hosts).
absl::Status ValidateLaunchOptions(const LaunchOptions& options);

// One process of the job.
struct ProcessSpec {
  std::string role;  // "scheduler", "server" or "worker".
  int index = 0;     // Launch order within the role (not the rank, which the
                     // scheduler assigns).
  Host host;
  bool remote = false;
  // Without --token_file, which the wrapper adds.
  std::vector<std::string> argv;

  // "[worker 1 host]".
  std::string Prefix() const;
};

// The processes of the job in start order: scheduler, servers, workers.
std::vector<ProcessSpec> PlanProcesses(const LaunchOptions& options,
                                       const std::string& scheduler_address);

// The full command line (argv) that starts `spec` through the wrapper:
// `/bin/sh -c WRAPPER ...` locally, or `ssh ... HOST 'cd DIR && exec env -i
// ... /bin/sh -c WRAPPER ...'`. `env` is the node environment ("K=V").
std::vector<std::string> WrapperCommand(const LaunchOptions& options,
                                        const ProcessSpec& spec,
                                        const std::vector<std::string>& env,
                                        const std::string& workdir);

// Quotes `s` for a POSIX shell.
std::string ShellQuote(const std::string& s);

// Installs SIGINT/SIGTERM/SIGHUP handlers that ask a running Launcher to
// stop the job; SIGPIPE is ignored. Call once from main().
void InstallStopSignalHandlers();

// The stop signal received and not yet acted on by a Launcher (0: none).
// Does not consume it.
int PendingStopSignal();

// Runs a job. Thread-compatible; owns every child process.
class Launcher {
 public:
  // Output (the prefixed lines and the launcher's own messages) goes to
  // `out`, which must outlive the Launcher.
  Launcher(LaunchOptions options, std::ostream* out);
  Launcher(const Launcher&) = delete;
  Launcher& operator=(const Launcher&) = delete;

  // Checks the options (ValidateLaunchOptions) and every host, starts the
  // job and waits for it. Returns the process exit code: 0 when every
  // process exited 0; 1 when a check failed or a process failed (naming the
  // first one); 128+signal when stopped by SIGINT/SIGTERM/SIGHUP. Every process
  // of the job is gone when it returns, and so are the token files of the
  // reachable hosts.
  // With options.timeline, the nodes' parts are merged into it afterwards
  // (timeline/merge.h), however the job ended, and the launcher prints
  // "launch: timeline: FILE (...)" (and a warning per part missing or
  // skipped).
  int Run();

  // After Run(): the first process failure it reported ("[worker 1 host]
  // killed by signal 9"), followed by " (the scheduler aborted the job:
  // REASON)" when the scheduler said why; empty when none failed (the job
  // finished, was stopped, or never started).
  const std::string& failure() const { return failure_; }

  // After Run(): the hosts of options.hosts this run blames, each with why
  // (host_health.h): the host the scheduler named when it aborted the job
  // (a silent node: lost or frozen), else the host of the process that
  // failed first; with check_failed(), every host the check could not
  // reach.
  // The scheduler's own host (the launching one) is never blamed.
  const std::vector<std::pair<std::string, std::string>>& host_failures()
      const {
    return host_failures_;
  }
  // After Run(): the host check failed (nothing was started).
  bool check_failed() const { return check_failed_; }

 private:
  LaunchOptions options_;
  std::ostream* out_;
  std::string failure_;
  std::vector<std::pair<std::string, std::string>> host_failures_;
  bool check_failed_ = false;
};

}  // namespace launcher
}  // namespace pstrain

#endif  // PSTRAIN_LAUNCHER_LAUNCHER_H_
