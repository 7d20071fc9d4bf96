#include "launcher/launcher.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "glog/logging.h"
#include "launcher/backend.h"
#include "launcher/host_health.h"
#include "launcher/local_backend.h"
#include "launcher/mpi.h"
#include "launcher/slurm_backend.h"
#include "launcher/ssh_backend.h"
#include "launcher/subprocess.h"
#include "launcher/wrapper.h"
#include "timeline/merge.h"
#include "timeline/timeline.h"
#include "util/flags.h"
#include "util/status.h"

namespace pstrain {
namespace launcher {

const char* const kEnvWhitelist[] = {"PATH",
                                     "LD_LIBRARY_PATH",
                                     "LANG",
                                     "LC_ALL",
                                     "TZ",
                                     "TMPDIR",
                                     "OMP_NUM_THREADS",
                                     "KMP_AFFINITY",
                                     "CUDA_VISIBLE_DEVICES",
                                     "NCCL_DEBUG",
                                     "NCCL_SOCKET_IFNAME",
                                     "GLOG_v",
                                     "GLOG_vmodule",
                                     "GLOG_logtostderr",
                                     "GLOG_minloglevel",
                                     nullptr};

namespace {

std::atomic<int> g_stop_signal{0};

void OnStopSignal(int sig) { g_stop_signal.store(sig); }

// What the scheduler logs when it aborts the job (scheduler/scheduler.cc).
constexpr char kAbortMarker[] = "scheduler: aborting the job: ";
// What the scheduler logs when it declares a worker dead in replace mode
// (scheduler/scheduler.cc), followed by the rank.
constexpr char kDeadWorkerMarker[] = "scheduler: worker rank ";
constexpr char kDeadWorkerVerdict[] = " declared dead: ";
// What the scheduler prints once its status server serves (scheduler/main.cc).
constexpr char kStatusMarker[] = "status page: ";

std::string JobToken() {
  unsigned char bytes[24];
  size_t got = 0;
  while (got < sizeof(bytes)) {
    ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);
    if (n < 0 && errno == EINTR) continue;
    CHECK_GT(n, 0) << "getrandom failed";
    got += static_cast<size_t>(n);
  }
  std::string hex;
  for (unsigned char b : bytes) absl::StrAppendFormat(&hex, "%02x", b);
  return hex;
}

// Picks a free TCP port on `host` by binding port 0.
absl::StatusOr<int> PickFreePort(const std::string& host) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoToStatus(errno, "socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int e = errno;
    close(fd);
    return ErrnoToStatus(e, absl::StrCat("bind ", host, ":0"));
  }
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// How a node ended, seen through its wrapper shell: the shell exits with
// 128+N when the node was killed by signal N.
std::string DescribeNodeExit(const Subprocess& p) {
  const int st = p.wait_status();
  if (WIFEXITED(st) && WEXITSTATUS(st) > 128 && WEXITSTATUS(st) < 128 + NSIG) {
    const int sig = WEXITSTATUS(st) - 128;
    const char* name = sigabbrev_np(sig);
    return absl::StrCat("was killed by signal ", sig, " (SIG",
                        name ? name : "?", ")");
  }
  if (WIFEXITED(st))
    return absl::StrCat("exited with status ", WEXITSTATUS(st));
  return absl::StrCat("ended: ", p.DescribeExit());
}

}  // namespace

std::string ShellQuote(const std::string& s) {
  if (!s.empty() &&
      s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                          "0123456789_-./=:,+@%") == std::string::npos) {
    return s;
  }
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  out += "'";
  return out;
}

void InstallStopSignalHandlers() {
  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

int PendingStopSignal() { return g_stop_signal.load(); }

std::string ProcessSpec::Prefix() const {
  return absl::StrCat("[", role, " ", index, " ",
                      host.node.empty() ? host.name : host.node, "]");
}

std::vector<ProcessSpec> PlanProcesses(const LaunchOptions& o,
                                       const std::string& scheduler_address) {
  const std::vector<std::string> common = {
      absl::StrCat("--scheduler_address=", scheduler_address),
      absl::StrCat("--num_workers=", o.num_workers),
      absl::StrCat("--num_servers=", o.num_servers)};
  std::vector<ProcessSpec> specs;
  // ssh and slurm: round-robin over the hosts, by their slots.
  std::vector<int> where;
  if (o.mode == Mode::kSsh || o.mode == Mode::kSlurm) {
    auto placed = PlaceProcesses(o.hosts, o.num_servers + o.num_workers);
    CHECK(placed.ok()) << "options not validated: " << placed.status();
    where = *std::move(placed);
  }
  ProcessSpec sched;
  sched.role = "scheduler";
  sched.host.name = o.mode == Mode::kLocal ? "127.0.0.1" : "localhost";
  // mpi: rank r on hosts[r % N] (mpirun --map-by node), the scheduler too.
  const bool mpi_hosts = o.mode == Mode::kMpi && !o.hosts.empty();
  if (mpi_hosts) sched.host = o.hosts[0];
  if (o.mode == Mode::kMpi && o.hosts.empty()) sched.host.name = "127.0.0.1";
  sched.argv.push_back(o.scheduler_binary);
  sched.argv.insert(sched.argv.end(), common.begin(), common.end());
  if (o.status_port >= 0) {
    sched.argv.push_back(absl::StrCat("--status_port=", o.status_port));
  }
  if (o.straggler_ratio != 1.2) {
    sched.argv.push_back(absl::StrCat("--straggler_ratio=", o.straggler_ratio));
  }
  if (o.replace_workers) {
    sched.argv.push_back("--recovery=replace");
    sched.argv.push_back(absl::StrCat(
        "--replace_timeout_s=", absl::ToDoubleSeconds(o.replace_timeout)));
  }
  sched.argv.insert(sched.argv.end(), o.scheduler_args.begin(),
                    o.scheduler_args.end());
  specs.push_back(sched);

  for (int i = 0; i < o.num_servers + o.num_workers; ++i) {
    ProcessSpec p;
    const bool server = i < o.num_servers;
    p.role = server ? "server" : "worker";
    p.index = server ? i : i - o.num_servers;
    if (o.mode == Mode::kSsh || o.mode == Mode::kSlurm) {
      p.host = o.hosts[where[i]];
      p.remote = true;
    } else if (mpi_hosts) {
      p.host = o.hosts[(i + 1) % o.hosts.size()];
    } else {
      p.host.name = "127.0.0.1";
    }
    if (server) {
      p.argv.push_back(o.server_binary);
      p.argv.insert(p.argv.end(), common.begin(), common.end());
      p.argv.push_back(absl::StrCat("--host=", p.host.name));
      if (o.replace_workers) p.argv.push_back("--recovery=replace");
      p.argv.insert(p.argv.end(), o.server_args.begin(), o.server_args.end());
    } else {
      p.argv = o.command;
      p.argv.insert(p.argv.end(), common.begin(), common.end());
      p.argv.push_back(absl::StrCat("--host=", p.host.name));
      // Replace mode: rank = launch index, so launch knows which rank a
      // dead process had.
      if (o.replace_workers) {
        p.argv.push_back(absl::StrCat("--rank_hint=", p.index));
      }
    }
    if (!o.timeline.empty()) {
      p.argv.push_back(absl::StrCat(
          "--timeline=", timeline::PartPath(o.timeline, p.role, p.index)));
      p.argv.push_back(absl::StrCat("--timeline_steps=", o.timeline_steps));
    }
    specs.push_back(std::move(p));
  }
  return specs;
}

std::vector<std::string> WrapperCommand(const LaunchOptions& o,
                                        const ProcessSpec& spec,
                                        const std::vector<std::string>& env,
                                        const std::string& workdir) {
  JobContext context;
  context.options = &o;
  context.workdir = workdir;
  context.node_env = env;
  if (!spec.remote) return LocalBackend(context).Command(spec).argv;
  if (o.mode == Mode::kSlurm) return SlurmBackend(context).Command(spec).argv;
  return SshBackend(context).Command(spec).argv;
}

absl::Status ValidateLaunchOptions(const LaunchOptions& o) {
  if (o.num_workers < 1) {
    return BadFlag("num_workers", o.num_workers, "must be >= 1 (-n)");
  }
  if (o.num_servers < 1) {
    return BadFlag("num_servers", o.num_servers, "must be >= 1 (-s)");
  }
  if (o.command.empty()) {
    return absl::InvalidArgumentError(
        "no worker command given (launch ... -- WORKER-BINARY FLAGS...)");
  }
  if (o.mode == Mode::kSsh && o.hosts.empty()) {
    return absl::InvalidArgumentError(
        "--launcher ssh needs a hosts file (-H/--hostfile)");
  }
  if (o.mode == Mode::kSlurm && (o.hosts.empty() || o.slurm_job_id.empty())) {
    return absl::InvalidArgumentError(
        "--launcher slurm needs the allocation's job id and nodes "
        "(ReadSlurmAllocation)");
  }
  if (o.mode == Mode::kSsh || o.mode == Mode::kSlurm) {
    absl::Status placed =
        PlaceProcesses(o.hosts, o.num_servers + o.num_workers).status();
    if (!placed.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--hostfile: ", placed.message(), " (slots=)"));
    }
  }
  if (!o.timeline.empty()) {
    int64_t first = 0, last = 0;
    absl::Status steps =
        timeline::ParseStepWindow(o.timeline_steps, &first, &last);
    if (!steps.ok()) {
      return BadFlag("timeline_steps", o.timeline_steps, steps.message());
    }
  }
  if (o.status_port < -1 || o.status_port > 65535) {
    return BadFlag("status_port", o.status_port,
                   "must be in [-1, 65535] (-1: off, 0: a free port)");
  }
  if (!(o.straggler_ratio > 1)) {
    return BadFlag("straggler_ratio", o.straggler_ratio, "must be > 1");
  }
  if (o.scheduler_port < 0 || o.scheduler_port > 65535) {
    return BadFlag("scheduler_port", o.scheduler_port,
                   "must be in [0, 65535] (0: a free port)");
  }
  const double connect_s = absl::ToDoubleSeconds(o.ssh_connect_timeout);
  if (!(connect_s >= 1 && connect_s <= 3600)) {
    return BadFlag("ssh_connect_timeout_s", connect_s, "must be in [1, 3600]");
  }
  const double grace_s = absl::ToDoubleSeconds(o.stop_grace);
  if (!(grace_s >= 0 && grace_s <= 3600)) {
    return BadFlag("stop_grace_s", grace_s, "must be in [0, 3600]");
  }
  for (const std::string& e : o.env) {
    if (e.find('=') == std::string::npos || e[0] == '=') {
      return BadFlag("env", e, "must be K=V");
    }
  }
  if (o.replace_workers && (o.mode == Mode::kMpi || o.mode == Mode::kSlurm)) {
    return BadFlag("recovery", "replace",
                   "works with --launcher local and ssh only (mpirun and "
                   "srun end every rank with the first)");
  }
  const double replace_s = absl::ToDoubleSeconds(o.replace_timeout);
  if (!(replace_s > 0 && replace_s <= 540)) {
    return BadFlag("replace_timeout_s", replace_s,
                   "must be in (0, 540] (below the workers' 10-minute wait "
                   "for a round)");
  }
  return absl::OkStatus();
}

Launcher::Launcher(LaunchOptions options, std::ostream* out)
    : options_(std::move(options)), out_(out) {}

namespace {

// A process of the job while it runs.
struct Running {
  ProcessSpec spec;
  Backend* backend;  // The backend that started it.
  Subprocess proc;
  std::string partial;  // Output not yet ended by a newline.
  NodeReport report;    // What its wrapper reported about the node.
  bool done = false;
  // --recovery=replace: a replacement process, and whether it has joined
  // the job (its "WORKER rank R (node N)" line).
  bool replacement = false;
  bool joined = false;
};

// One run of a job, in four phases that Launcher::Run() calls in order:
// Preflight(), Start(), Watch(), Stop(). Thread-compatible; owns every
// process of the job (the Subprocess destructors kill what is left).
class Job {
 public:
  Job(const LaunchOptions& options, std::ostream* out)
      : options_(options), out_(out) {}

  // Writes "launch: LINE".
  void Say(const std::string& line) {
    *out_ << "launch: " << line << "\n" << std::flush;
  }

  // Decides everything before a process starts: checks the options, picks
  // the scheduler's address, plans the processes and has each backend check
  // the processes it will start (binaries, hosts; with --sync_dst_dir it
  // rsyncs first). Returns an error whose message is the launcher's last
  // line (exit code 1); then nothing has been started.
  absl::Status Preflight();

  // Starts the planned processes in order (scheduler, servers, workers) and
  // hands each the job token. When one cannot start, records the failure,
  // stops the processes already started and starts no more.
  // REQUIRES: Preflight() succeeded.
  void Start();

  // Streams every process's output with its prefix until all have ended
  // and closed their output. The first process to fail, or a stop signal
  // (InstallStopSignalHandlers), stops every process: SIGTERM, then SIGKILL
  // after --stop_grace_s (and every 5 s after that).
  void Watch();

  // After Watch(): kills what is left of the local process groups, has each
  // backend check for nodes left on their hosts and remove token files,
  // says how the job ended and returns the exit code (see Launcher::Run()).
  int Stop();

  // The first failure Watch() reported; empty when none.
  const std::string& first_failure() const { return first_failure_; }
  // The scheduler's reason when it aborted the job; empty when none.
  const std::string& abort_reason() const { return abort_reason_; }
  // The hosts this run blames (Launcher::host_failures()).
  std::vector<std::pair<std::string, std::string>> HostFailures(
      bool check_failed) const;
  // Worker processes replaced (--recovery=replace).
  int replaced() const { return replaced_; }

 private:
  // Which backend starts `spec`: the scheduler (and mpirun) always run
  // here.
  Backend* BackendFor(const ProcessSpec& spec) const {
    if (spec.role == "mpirun") return mpirun_.get();
    return spec.role == "scheduler" ? local_.get() : nodes_.get();
  }
  // mpi mode: plans the one mpirun that runs `ranks_`.
  absl::Status PlanMpirun();
  // The line's prefix and text: an mpirun rank's tagged line goes under
  // that rank's prefix.
  void PrintLine(Running* r, absl::string_view line);
  // The specs of `plan_` that `backend` starts.
  std::vector<ProcessSpec> SpecsFor(const Backend* backend) const;
  // Asks every process to stop (once).
  void BeginStop();
  // --recovery=replace: worker `dead` ended with `how`: queues its
  // replacement (false: none left for its rank; the caller fails the job).
  bool QueueReplacement(const Running& dead, const std::string& how);
  // Starts the queued replacements whose back-off has passed.
  void StartDueReplacements();
  // The scheduler declared worker `rank` dead by heartbeat: kill it (its
  // exit then queues the replacement).
  void KillDeclaredDead(int rank, const std::string& why);
  // Consumes the wrapper's report and writes the complete lines of
  // `r->partial` with the process's prefix; with `final`, the rest too.
  void FlushLines(Running* r, bool final);

  const LaunchOptions& options_;
  std::ostream* out_;

  // Set by Preflight().
  JobContext context_;
  std::unique_ptr<Backend> local_;  // The scheduler's.
  std::unique_ptr<Backend> nodes_;  // The servers' and workers'.
  std::string scheduler_address_;
  std::vector<ProcessSpec> plan_;
  // mpi mode: the job's processes as MPI ranks, the backend that runs
  // mpirun here (TMPDIR: the job directory) and what mpirun said failed.
  std::vector<ProcessSpec> ranks_;
  JobContext mpirun_context_;
  std::unique_ptr<Backend> mpirun_;
  MpiFailure mpi_failure_;
  MpiFlavor mpi_flavor_ = MpiFlavor::kOpenMpi;

  std::vector<Running> running_;
  int exit_code_ = 0;
  std::string first_failure_;
  // The host of the remote process that failed first; empty when none.
  std::string first_failure_host_;
  std::string abort_reason_;  // From the scheduler's output.
  bool stopping_ = false;
  bool status_page_said_ = false;  // "launch: status page: URL" printed.
  int stop_signal_ = 0;
  std::string token_;  // The job token (Start()).
  // --recovery=replace.
  struct PendingReplacement {
    ProcessSpec spec;  // The dead process's.
    absl::Time not_before;
    absl::Time died;  // When launch saw it.
  };
  std::vector<PendingReplacement> pending_replacements_;
  std::map<int, int> replacements_of_rank_;   // Started so far.
  std::map<int, std::string> declared_dead_;  // By rank: the scheduler's why.
  int replaced_ = 0;
};

absl::Status Job::Preflight() {
  const LaunchOptions& o = options_;
  PSTRAIN_RETURN_IF_ERROR(ValidateLaunchOptions(o));

  char cwd_buf[4096];
  if (getcwd(cwd_buf, sizeof(cwd_buf)) == nullptr) {
    return absl::InternalError("cannot read the current directory");
  }
  context_.options = &o;
  context_.out = out_;
  context_.cwd = cwd_buf;
  context_.workdir = o.sync_dst_dir.empty() ? context_.cwd : o.sync_dst_dir;
  // The node environment: whitelist + --env.
  // An --env K=V replaces the launcher's own K: a variable given twice
  // would mean different values to different readers.
  std::set<std::string> given;
  for (const std::string& e : o.env) given.insert(e.substr(0, e.find('=')));
  for (int i = 0; kEnvWhitelist[i] != nullptr; ++i) {
    const char* v = getenv(kEnvWhitelist[i]);
    if (v != nullptr && !given.count(kEnvWhitelist[i])) {
      context_.node_env.push_back(absl::StrCat(kEnvWhitelist[i], "=", v));
    }
  }
  context_.node_env.insert(context_.node_env.end(), o.env.begin(), o.env.end());
  local_ = std::make_unique<LocalBackend>(context_);
  nodes_ = MakeNodeBackend(context_);

  std::string sched_host = o.scheduler_host;
  if (sched_host.empty() && o.mode == Mode::kMpi && !o.hosts.empty()) {
    sched_host = o.hosts[0].name;  // Rank 0's host.
  }
  if (sched_host.empty()) {
    PSTRAIN_ASSIGN_OR_RETURN(sched_host, nodes_->DefaultSchedulerHost());
  }
  int port = o.scheduler_port;
  if (port == 0 && o.mode == Mode::kMpi && !PickFreePort(sched_host).ok()) {
    // mpi: rank 0 runs on the first host, whose address is not this host's.
    uint16_t r = 0;
    if (getrandom(&r, sizeof(r), 0) != sizeof(r)) r = getpid();
    port = 20000 + r % 10000;
    Say(absl::StrCat("scheduler port ", port, " picked at random: ", sched_host,
                     " is not an address of this host "
                     "(--scheduler_port sets one)"));
  }
  if (port == 0) {
    auto p = PickFreePort(sched_host);
    if (!p.ok()) {
      return absl::UnavailableError(
          absl::StrCat("cannot pick a scheduler port: ", p.status().message()));
    }
    port = *p;
  }
  scheduler_address_ = absl::StrCat(sched_host, ":", port);
  plan_ = PlanProcesses(o, scheduler_address_);
  if (o.mode == Mode::kMpi) PSTRAIN_RETURN_IF_ERROR(PlanMpirun());

  for (Backend* backend : {local_.get(), nodes_.get(), mpirun_.get()}) {
    if (backend == nullptr) continue;
    std::vector<ProcessSpec> specs = SpecsFor(backend);
    if (!specs.empty()) PSTRAIN_RETURN_IF_ERROR(backend->Preflight(specs));
  }
  return absl::OkStatus();
}

absl::Status Job::PlanMpirun() {
  const LaunchOptions& o = options_;
  PSTRAIN_ASSIGN_OR_RETURN(mpi_flavor_, DetectMpi(o.mpirun));
  ranks_ = plan_;
  // The wrapper's token file goes where every host can read it: a job
  // directory under the work directory (only the user can enter it).
  mpirun_context_ = context_;
  if (!o.hosts.empty()) {
    const std::string dir = absl::StrCat(context_.workdir, "/.pstrain-jobs");
    if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return ErrnoToStatus(errno, absl::StrCat("cannot make ", dir));
    }
    chmod(dir.c_str(), 0700);
    std::vector<std::string> env;
    for (const std::string& e : mpirun_context_.node_env) {
      if (!absl::StartsWith(e, "TMPDIR=")) env.push_back(e);
    }
    env.push_back("TMPDIR=" + dir);
    mpirun_context_.node_env = env;
  }
  mpirun_ = std::make_unique<LocalBackend>(mpirun_context_);
  ProcessSpec run;
  run.role = "mpirun";
  run.host.name = "127.0.0.1";
  run.argv = MpirunCommand(o, mpi_flavor_, ranks_, context_.node_env,
                           context_.workdir);
  plan_ = {run};
  std::ostream& out = *out_;
  for (size_t r = 0; r < ranks_.size(); ++r) {
    out << "launch: MPI rank " << r << ": " << ranks_[r].Prefix() << "\n";
  }
  out.flush();
  return absl::OkStatus();
}

std::vector<ProcessSpec> Job::SpecsFor(const Backend* backend) const {
  std::vector<ProcessSpec> specs;
  for (const ProcessSpec& spec : plan_) {
    if (BackendFor(spec) == backend) specs.push_back(spec);
  }
  return specs;
}

void Job::Start() {
  CHECK(nodes_ != nullptr) << "Start() before a successful Preflight()";
  token_ = JobToken();
  const std::string& token = token_;
  Say(absl::StrCat("job: 1 scheduler at ", scheduler_address_, ", ",
                   options_.num_servers, " server(s), ", options_.num_workers,
                   " worker(s), launcher ",
                   options_.mode == Mode::kMpi ? "mpi" : nodes_->name()));
  running_.reserve(plan_.size());
  for (const auto& spec : plan_) {
    Backend* backend = BackendFor(spec);
    auto proc = backend->Start(spec, token);
    if (!proc.ok()) {
      first_failure_ = absl::StrCat(
          spec.Prefix(), " could not start: ", proc.status().message());
      exit_code_ = 1;
      BeginStop();
      break;
    }
    running_.push_back(Running{spec, backend, std::move(*proc), "", {}, false});
  }
}

void Job::BeginStop() {
  if (stopping_) return;
  stopping_ = true;
  for (auto& r : running_) r.backend->Stop(&r.proc, r.done);
}

void Job::FlushLines(Running* r, bool final) {
  size_t start = 0;
  while (true) {
    size_t nl = r->partial.find('\n', start);
    if (nl == std::string::npos) break;
    absl::string_view line(r->partial.data() + start, nl - start);
    start = nl + 1;
    // The wrapper's line, written as soon as the node starts: only the
    // first one counts, so that a node's own output cannot name the
    // processes to kill or the files to remove afterwards.
    if (r->report.pid < 0) {
      if (std::optional<NodeReport> report = ParseWrapperReport(line)) {
        if (report->pid > 0) r->report.pid = report->pid;
        if (!report->started.empty()) r->report.started = report->started;
        if (!report->token_file.empty()) {
          r->report.token_file = report->token_file;
        }
        continue;
      }
    }
    PrintLine(r, line);
  }
  r->partial.erase(0, start);
  if (final && !r->partial.empty()) {
    PrintLine(r, r->partial);
    r->partial.clear();
  }
  out_->flush();
}

void Job::PrintLine(Running* r, absl::string_view line) {
  const ProcessSpec* spec = &r->spec;
  std::string text(line);
  if (spec->role == "mpirun") {
    std::optional<TaggedLine> tagged = ParseTaggedLine(line);
    if (tagged && tagged->rank >= 0 &&
        tagged->rank < static_cast<int>(ranks_.size())) {
      spec = &ranks_[tagged->rank];
      text = tagged->text;
      // The dispatch script's report of how the rank's node ended: the
      // first failure stops the job (MPICH would let the others run on).
      std::optional<RankExit> exit = ParseRankExit(text);
      if (exit && exit->rank == tagged->rank) {
        if (!exit->failed) {
          if (!stopping_) Say(absl::StrCat(spec->Prefix(), " finished"));
        } else if (first_failure_.empty() && !stopping_) {
          first_failure_ = absl::StrCat(spec->Prefix(), " ", exit->how,
                                        " (MPI rank ", exit->rank, ")");
          exit_code_ = 1;
          Say(first_failure_ + "; stopping every process");
          BeginStop();
        }
        return;
      }
    } else {
      mpi_failure_.Scan(line);
    }
  }
  if (r->replacement && !r->joined &&
      text.find("WORKER rank ") != std::string::npos &&
      text.find(" (node ") != std::string::npos) {
    r->joined = true;
  }
  if (spec->role == "scheduler" && options_.replace_workers) {
    const size_t at = text.find(kDeadWorkerMarker);
    const size_t verdict = text.find(kDeadWorkerVerdict);
    int rank = -1;
    if (at != std::string::npos && verdict != std::string::npos &&
        absl::SimpleAtoi(
            text.substr(at + sizeof(kDeadWorkerMarker) - 1,
                        verdict - at - sizeof(kDeadWorkerMarker) + 1),
            &rank)) {
      KillDeclaredDead(rank,
                       text.substr(verdict + sizeof(kDeadWorkerVerdict) - 1));
    }
  }
  if (spec->role == "scheduler" && abort_reason_.empty()) {
    // The scheduler's own account of a failure (e.g. which node went
    // silent, on which host) goes into launch's final line.
    const size_t at = text.find(kAbortMarker);
    if (at != std::string::npos) {
      abort_reason_ = text.substr(at + sizeof(kAbortMarker) - 1);
    }
  }
  *out_ << spec->Prefix() << " " << text << "\n";
  if (spec->role == "scheduler" && !status_page_said_ &&
      absl::StartsWith(text, kStatusMarker)) {
    // The page's address, in launch's own words (the URL names the
    // scheduler's bind address, on the scheduler's host).
    status_page_said_ = true;
    Say(absl::StrCat(
        text, spec->host.name == "127.0.0.1" || spec->host.name == "localhost"
                  ? ""
                  : absl::StrCat(" (on ", spec->host.name, ")")));
  }
}

void Job::Watch() {
  absl::Time kill_at = absl::InfiniteFuture();
  while (true) {
    int sig = g_stop_signal.exchange(0);
    if (sig != 0 && stop_signal_ == 0) {
      stop_signal_ = sig;
      const char* name = sigabbrev_np(sig);
      Say(absl::StrCat("received SIG", name ? name : "?",
                       "; stopping every process"));
      if (exit_code_ == 0) exit_code_ = 128 + sig;
      BeginStop();
    }
    std::vector<pollfd> fds;
    for (auto& r : running_) {
      if (r.proc.output_fd() >= 0) {
        fds.push_back({r.proc.output_fd(), POLLIN, 0});
      }
    }
    if (!fds.empty()) {
      poll(fds.data(), fds.size(), 100);
    } else {
      absl::SleepFor(absl::Milliseconds(50));
    }
    bool all_done = true;
    for (auto& r : running_) {
      bool open = r.proc.ReadOutput(&r.partial);
      FlushLines(&r, !open);
      if (!r.done && r.proc.Poll()) {
        r.done = true;
        if (!r.proc.succeeded() && options_.replace_workers &&
            r.spec.role == "worker" && !stopping_ && abort_reason_.empty()) {
          auto dd = declared_dead_.find(r.spec.index);
          const std::string how =
              dd != declared_dead_.end()
                  ? absl::StrCat("declared dead by the scheduler (", dd->second,
                                 "), then killed by launch")
                  : DescribeNodeExit(r.proc);
          if (dd != declared_dead_.end()) declared_dead_.erase(dd);
          if (!QueueReplacement(r, how) && first_failure_.empty()) {
            first_failure_ = absl::StrCat(
                r.spec.Prefix(), " ", how, "; no replacement left (",
                kMaxReplacementsPerRank, " for rank ", r.spec.index, ")");
            Say(first_failure_ + "; stopping every process");
            exit_code_ = 1;
            BeginStop();
          }
        } else if (!r.proc.succeeded()) {
          if (options_.replace_workers && r.spec.role != "worker" &&
              first_failure_.empty() && !stopping_ && abort_reason_.empty()) {
            Say(absl::StrCat(r.spec.Prefix(),
                             ": --recovery=replace replaces workers only; a "
                             "dead ",
                             r.spec.role,
                             " stops the job (--max_restarts restarts it "
                             "from the newest checkpoint)"));
          }
          if (first_failure_.empty() && !stopping_) {
            first_failure_ =
                absl::StrCat(r.spec.Prefix(), " ", DescribeNodeExit(r.proc));
            if (r.spec.remote) first_failure_host_ = r.spec.host.ToString();
            const int rank = mpi_failure_.rank;
            if (r.spec.role == "mpirun" && rank >= 0 &&
                rank < static_cast<int>(ranks_.size())) {
              first_failure_ = absl::StrCat(
                  ranks_[rank].Prefix(), " ",
                  mpi_failure_.how.empty() ? "failed" : mpi_failure_.how,
                  " (MPI rank ", rank, "; mpirun then ended every rank)");
            }
            Say(first_failure_ + "; stopping every process");
            exit_code_ = 1;
            BeginStop();
          }
        } else if (!stopping_) {
          Say(absl::StrCat(r.spec.Prefix(), " finished"));
        }
      }
      if (!r.done || r.proc.output_fd() >= 0) all_done = false;
    }
    if (!stopping_) {
      StartDueReplacements();
      if (!pending_replacements_.empty()) all_done = false;
    }
    if (stopping_ && kill_at == absl::InfiniteFuture()) {
      kill_at = absl::Now() + options_.stop_grace;
    }
    if (all_done) break;
    if (absl::Now() > kill_at) {
      for (auto& r : running_) {
        if (!r.done || r.proc.GroupAlive()) r.proc.SignalGroup(SIGKILL);
      }
      kill_at = absl::Now() + absl::Seconds(5);
      // Processes killed with SIGKILL close their pipes; the loop ends.
    }
  }
}

bool Job::QueueReplacement(const Running& dead, const std::string& how) {
  const int rank = dead.spec.index;
  int& count = replacements_of_rank_[rank];
  if (count >= kMaxReplacementsPerRank) return false;
  // Back-off for a rank whose replacements die again: 0, 1, 2, 4, 8 s.
  const absl::Duration wait =
      count == 0 ? absl::ZeroDuration() : absl::Seconds(1 << (count - 1));
  ++count;
  ++replaced_;
  const absl::Time now = absl::Now();
  Say(absl::StrCat(dead.spec.Prefix(), " (worker rank ", rank, ") ", how,
                   "; --recovery=replace: the job goes on; replacement ", count,
                   " of ", kMaxReplacementsPerRank, " for rank ", rank,
                   wait > absl::ZeroDuration()
                       ? absl::StrCat(" starts in ", absl::FormatDuration(wait))
                       : " starts now"));
  pending_replacements_.push_back({dead.spec, now + wait, now});
  return true;
}

void Job::StartDueReplacements() {
  const absl::Time now = absl::Now();
  std::vector<PendingReplacement> later;
  std::vector<PendingReplacement> due;
  for (auto& p : pending_replacements_) {
    (p.not_before <= now ? due : later).push_back(std::move(p));
  }
  pending_replacements_ = std::move(later);
  for (PendingReplacement& p : due) {
    // Its flags without an earlier replacement's, plus this one's.
    ProcessSpec spec = p.spec;
    std::vector<std::string> argv;
    for (const std::string& a : spec.argv) {
      if (absl::StartsWith(a, "--replace_rank=") ||
          absl::StartsWith(a, "--replace_since_us=")) {
        continue;
      }
      argv.push_back(a);
    }
    argv.push_back(absl::StrCat("--replace_rank=", spec.index));
    argv.push_back(
        absl::StrCat("--replace_since_us=", absl::ToUnixMicros(p.died)));
    spec.argv = argv;
    // Same host first; ssh: then the other hosts of the hosts file.
    std::vector<Host> hosts = {spec.host};
    if (options_.mode == Mode::kSsh) {
      size_t at = 0;
      for (size_t i = 0; i < options_.hosts.size(); ++i) {
        if (options_.hosts[i].name == spec.host.name) at = i;
      }
      for (size_t j = 1; j < options_.hosts.size(); ++j) {
        hosts.push_back(options_.hosts[(at + j) % options_.hosts.size()]);
      }
    }
    std::string why;
    bool started = false;
    for (const Host& host : hosts) {
      ProcessSpec on = spec;
      on.host = host;
      for (std::string& a : on.argv) {
        if (absl::StartsWith(a, "--host="))
          a = absl::StrCat("--host=", host.name);
      }
      auto proc = nodes_->Start(on, token_);
      if (!proc.ok()) {
        why = absl::StrCat(why, why.empty() ? "" : "; ", host.name, ": ",
                           proc.status().message());
        Say(absl::StrCat("replacement for worker rank ", spec.index,
                         " could not start on ", host.name, ": ",
                         proc.status().message()));
        continue;
      }
      Say(absl::StrCat("replacement for worker rank ", spec.index,
                       " started on ", host.name, " ",
                       absl::StrFormat("%.2f s", absl::ToDoubleSeconds(
                                                     absl::Now() - p.died)),
                       " after the death"));
      running_.push_back(
          Running{on, nodes_.get(), std::move(*proc), "", {}, false, true});
      started = true;
      break;
    }
    if (!started && first_failure_.empty()) {
      first_failure_ = absl::StrCat("no replacement for worker rank ",
                                    spec.index, " could start: ", why);
      Say(first_failure_ + "; stopping every process");
      exit_code_ = 1;
      BeginStop();
      return;
    }
  }
}

void Job::KillDeclaredDead(int rank, const std::string& why) {
  for (auto& r : running_) {
    if (r.spec.role != "worker" || r.spec.index != rank || r.done) continue;
    // A replacement that has not joined yet: the verdict is about the
    // process it replaces.
    if (r.replacement && !r.joined) continue;
    declared_dead_[rank] = why;
    Say(absl::StrCat(r.spec.Prefix(), " (worker rank ", rank,
                     ") declared dead by the scheduler: ", why,
                     "; killing it for its replacement"));
    r.proc.SignalGroup(SIGKILL);
  }
}

int Job::Stop() {
  // Nothing may outlive the job: local groups, and the nodes on remote hosts.
  int left = 0;
  for (auto& r : running_) {
    if (r.proc.GroupAlive()) {
      r.proc.SignalGroup(SIGKILL);
      ++left;
    }
  }
  const bool failed = stopping_ || exit_code_ != 0;
  for (Backend* backend : {local_.get(), nodes_.get(), mpirun_.get()}) {
    if (backend == nullptr) continue;
    std::vector<StartedNode> nodes;
    for (const auto& r : running_) {
      if (r.backend == backend) nodes.push_back(StartedNode{r.spec, r.report});
    }
    backend->CleanUp(nodes, failed);
  }
  if (left > 0) {
    Say(absl::StrCat("killed ", left, " leftover local process group(s)"));
  }

  if (!first_failure_.empty()) {
    Say(absl::StrCat("job failed: ", first_failure_,
                     abort_reason_.empty()
                         ? ""
                         : absl::StrCat("; the scheduler aborted the job: ",
                                        abort_reason_)));
  } else if (stop_signal_ != 0) {
    Say("job stopped");
  } else if (replaced_ > 0) {
    Say(absl::StrCat("job finished: every process exited 0 but the ", replaced_,
                     " worker process(es) replaced (--recovery=replace)"));
  } else {
    Say("job finished: every process exited 0");
  }
  return exit_code_;
}

std::vector<std::pair<std::string, std::string>> Job::HostFailures(
    bool check_failed) const {
  std::vector<std::pair<std::string, std::string>> blamed;
  if (check_failed) {
    if (nodes_ == nullptr) return blamed;
    for (const auto& [host, why] : nodes_->unreachable()) {
      blamed.push_back({host.ToString(), absl::StrCat("check: ", why)});
    }
    return blamed;
  }
  // The scheduler names the node it found silent ("... at HOST:PORT
  // ..."): the cause, also when another node's exit reached launch first.
  for (const Host& host : options_.hosts) {
    if (abort_reason_.empty()) break;
    if (absl::StrContains(abort_reason_,
                          absl::StrCat(" at ", host.name, ":"))) {
      blamed.push_back({host.ToString(), abort_reason_});
      return blamed;
    }
  }
  if (!first_failure_host_.empty()) {
    blamed.push_back({first_failure_host_, first_failure_});
  }
  return blamed;
}

// Makes --timeline's parts folder, without the parts of an earlier job.
absl::Status PrepareTimeline(const std::string& path) {
  const std::string dir = timeline::PartsDir(path);
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return ErrnoToStatus(errno, absl::StrCat("--timeline: cannot make ", dir));
  }
  PSTRAIN_ASSIGN_OR_RETURN(std::vector<std::string> old,
                           timeline::ListPartFiles(dir));
  for (const std::string& f : old) {
    if (unlink(f.c_str()) != 0) {
      return ErrnoToStatus(errno,
                           absl::StrCat("--timeline: cannot remove ", f));
    }
  }
  return absl::OkStatus();
}

// Merges --timeline's parts into it and says where it is.
void MergeTimeline(const LaunchOptions& o, Job& job) {
  const std::string& path = o.timeline;
  auto parts = timeline::ListPartFiles(timeline::PartsDir(path));
  if (!parts.ok()) {
    job.Say(absl::StrCat("timeline: ", parts.status().message()));
    return;
  }
  auto merged = timeline::MergePartFiles(*parts, path);
  if (!merged.ok()) {
    job.Say(absl::StrCat("timeline: ", merged.status().message()));
    return;
  }
  for (const std::string& w : merged->warnings) {
    job.Say(absl::StrCat("timeline: warning: ", w));
  }
  const int nodes = o.num_servers + o.num_workers;
  if (merged->parts < nodes) {
    job.Say(absl::StrCat("timeline: warning: parts of ", merged->parts, " of ",
                         nodes, " nodes in ", timeline::PartsDir(path)));
  }
  job.Say(absl::StrCat(
      "timeline: ", path, " (", merged->events, " events of steps ",
      o.timeline_steps, " from ", merged->parts, " nodes",
      merged->dropped > 0
          ? absl::StrCat(", ", merged->dropped, " dropped over the cap")
          : "",
      "); open it in https://ui.perfetto.dev or chrome://tracing"));
}

}  // namespace

int Launcher::Run() {
  failure_.clear();
  host_failures_.clear();
  check_failed_ = false;
  Job job(options_, out_);
  absl::Status ready = job.Preflight();
  if (ready.ok() && !options_.timeline.empty()) {
    ready = PrepareTimeline(options_.timeline);
  }
  if (!ready.ok()) {
    job.Say(std::string(ready.message()));
    check_failed_ = true;
    host_failures_ = job.HostFailures(true);
    return 1;
  }
  job.Start();
  job.Watch();
  const int rc = job.Stop();
  failure_ = job.first_failure();
  if (!failure_.empty() && !job.abort_reason().empty()) {
    absl::StrAppend(&failure_,
                    " (the scheduler aborted the job: ", job.abort_reason(),
                    ")");
  }
  host_failures_ = job.HostFailures(false);
  if (!options_.timeline.empty()) MergeTimeline(options_, job);
  return rc;
}

}  // namespace launcher
}  // namespace pstrain
