#include "launcher/launcher.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/socket.h>
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
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "glog/logging.h"
#include "launcher/subprocess.h"
#include "util/flags.h"
#include "util/status.h"

namespace pstrain {
namespace launcher {

const char* const kEnvWhitelist[] = {
    "PATH",          "LD_LIBRARY_PATH",    "LANG",
    "LC_ALL",        "TZ",                 "TMPDIR",
    "OMP_NUM_THREADS", "KMP_AFFINITY",     "CUDA_VISIBLE_DEVICES",
    "NCCL_DEBUG",    "NCCL_SOCKET_IFNAME", "GLOG_v",
    "GLOG_vmodule",  "GLOG_logtostderr",   "GLOG_minloglevel",
    nullptr};

namespace {

std::atomic<int> g_stop_signal{0};

void OnStopSignal(int sig) { g_stop_signal.store(sig); }

// Shell functions for killing by PID safely. `started PID` prints the
// start time of process PID (field 22 of /proc/PID/stat, after the command
// name, which may hold spaces and parentheses): with the PID it names one
// process, never a later one that reuses the number. `same PID START` is
// true while PID is still the process that started at START; every kill of
// a node checks it first.
constexpr char kSameProcess[] = R"sh(started() {
  v=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  v=${v##*) }
  set -- $v
  shift 19
  echo "$1"
}
same() { [ -n "$2" ] && [ "$(started "$1")" = "$2" ]; }
)sh";

// The wrapper every node runs under (see launcher.h), after kSameProcess.
// Arguments: the node's argv. It prints one line "pstrain-node-pid PID START
// TOKEN_FILE" so the launcher can check that the node is gone at the end,
// and remove the token file when the wrapper could not (killed with
// SIGKILL). The token file goes on every other way out (the EXIT trap;
// HUP, INT and TERM are passed on to the node, whose end ends the
// wrapper). Once the node runs, the wrapper's own stderr is /dev/null and
// SIGPIPE is caught: when the launcher is gone, dash's "Terminated" notice
// would otherwise end the wrapper by SIGPIPE before it removed the file.
constexpr char kWrapper[] = R"sh(t= p= s= w= ws=
stop() { [ -n "$p" ] || exit "$1"; if same "$p" "$s"; then kill -TERM "$p"; fi; }
trap '[ -z "$t" ] || rm -f "$t"' EXIT
trap 'stop 129' HUP
trap 'stop 130' INT
trap 'stop 143' TERM
trap : PIPE
t=$(mktemp "${TMPDIR:-/tmp}/pstrain-token.XXXXXX") || exit 97
if ! IFS= read -r tok; then echo "launch wrapper: no job token on stdin" >&2; exit 98; fi
printf '%s\n' "$tok" > "$t"
unset tok
exec 3<&0
"$@" --token_file="$t" </dev/null &
p=$!
s=$(started "$p")
echo "pstrain-node-pid $p $s $t"
exec 2>/dev/null
(while IFS= read -r _ <&3; do :; done; if same "$p" "$s"; then kill -TERM "$p"; fi; sleep 5; if same "$p" "$s"; then kill -KILL "$p"; fi) >/dev/null 2>&1 &
w=$!
ws=$(started "$w")
exec 3<&-
rc=0
wait "$p" || rc=$?
while same "$p" "$s"; do wait "$p"; rc=$?; done
if same "$w" "$ws"; then kill "$w"; fi
exit "$rc")sh";

std::string WrapperScript() { return absl::StrCat(kSameProcess, kWrapper); }

constexpr char kPidMarker[] = "pstrain-node-pid ";
// The wrapper's token files: FOLDER/pstrain-token.XXXXXX (mktemp).
constexpr char kTokenFilePrefix[] = "pstrain-token.";

// Whether `path` has the form of a wrapper's token file, so that no other
// file is ever removed on the word of a line of output.
bool IsTokenFile(absl::string_view path) {
  const size_t slash = path.rfind('/');
  const absl::string_view base =
      slash == absl::string_view::npos ? path : path.substr(slash + 1);
  return absl::StartsWith(base, kTokenFilePrefix) &&
         base.size() == sizeof(kTokenFilePrefix) - 1 + 6 &&
         base.find_first_not_of(
             "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
             sizeof(kTokenFilePrefix) - 1) == absl::string_view::npos;
}

// What the scheduler logs when it aborts the job (scheduler/scheduler.cc).
constexpr char kAbortMarker[] = "scheduler: aborting the job: ";

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

std::vector<std::string> SshBase(const LaunchOptions& o, const Host& host) {
  std::vector<std::string> argv = {"ssh"};
  if (!o.ssh_config.empty()) {
    argv.push_back("-F");
    argv.push_back(o.ssh_config);
  }
  const int64_t connect_s =
      std::max<int64_t>(1, absl::ToInt64Seconds(o.ssh_connect_timeout));
  for (std::string opt :
       {std::string("BatchMode=yes"), absl::StrCat("ConnectTimeout=", connect_s),
        std::string("ServerAliveInterval=5"),
        std::string("ServerAliveCountMax=3")}) {
    argv.push_back("-o");
    argv.push_back(opt);
  }
  argv.push_back("-p");
  argv.push_back(absl::StrCat(host.ssh_port));
  argv.push_back(host.name);
  return argv;
}

// The environment the launcher itself uses to run ssh/rsync/sh.
std::vector<std::string> OwnEnvironment() {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) env.push_back(*e);
  return env;
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

// The local address this host sends from to reach `host` (a connected UDP
// socket sends nothing: the kernel only picks the route and source).
absl::StatusOr<std::string> RouteSourceAddress(const Host& host) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  const int rc = getaddrinfo(host.name.c_str(), absl::StrCat(host.ssh_port).c_str(), &hints, &res);
  if (rc != 0) {
    return absl::NotFoundError(absl::StrCat("cannot resolve host '", host.name, "': ", gai_strerror(rc)));
  }
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(res);
    return ErrnoToStatus(errno, "socket");
  }
  const int c = connect(fd, res->ai_addr, res->ai_addrlen);
  const int e = errno;
  freeaddrinfo(res);
  sockaddr_in local{};
  socklen_t len = sizeof(local);
  if (c != 0 || getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) {
    close(fd);
    return ErrnoToStatus(c != 0 ? e : errno, absl::StrCat("no route to ", host.name));
  }
  close(fd);
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &local.sin_addr, buf, sizeof(buf));
  return std::string(buf);
}

// Whether a TCP connection to host:ssh_port opens within `timeout`: a cut
// link or a powered-off host answers nothing, and ssh would wait its whole
// ConnectTimeout.
bool TcpReachable(const Host& host, absl::Duration timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.name.c_str(), absl::StrCat(host.ssh_port).c_str(), &hints, &res) != 0) {
    return false;
  }
  bool ok = false;
  for (addrinfo* a = res; a != nullptr && !ok; a = a->ai_next) {
    int fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) continue;
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      ok = true;
    } else if (errno == EINPROGRESS) {
      pollfd pfd{fd, POLLOUT, 0};
      if (poll(&pfd, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout))) == 1) {
        int err = 0;
        socklen_t l = sizeof(err);
        ok = getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) == 0 && err == 0;
      }
    }
    close(fd);
  }
  freeaddrinfo(res);
  return ok;
}

// This host's address as other hosts see it: the first non-loopback IPv4
// address of its name.
absl::StatusOr<std::string> OwnAddress() {
  char name[256] = {0};
  if (gethostname(name, sizeof(name) - 1) != 0) {
    return ErrnoToStatus(errno, "gethostname");
  }
  addrinfo hints{};
  hints.ai_family = AF_INET;
  addrinfo* res = nullptr;
  if (getaddrinfo(name, nullptr, &hints, &res) == 0) {
    for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
      char buf[INET_ADDRSTRLEN];
      auto* in = reinterpret_cast<sockaddr_in*>(a->ai_addr);
      inet_ntop(AF_INET, &in->sin_addr, buf, sizeof(buf));
      if (!absl::StartsWith(buf, "127.")) {
        freeaddrinfo(res);
        return std::string(buf);
      }
    }
    freeaddrinfo(res);
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "cannot tell this host's address (", name,
      " resolves only to loopback); set --scheduler_host"));
}

// How a node ended, seen through its wrapper shell: the shell exits with
// 128+N when the node was killed by signal N.
std::string DescribeNodeExit(const Subprocess& p) {
  const int st = p.wait_status();
  if (WIFEXITED(st) && WEXITSTATUS(st) > 128 && WEXITSTATUS(st) < 128 + NSIG) {
    const int sig = WEXITSTATUS(st) - 128;
    const char* name = sigabbrev_np(sig);
    return absl::StrCat("was killed by signal ", sig, " (SIG", name ? name : "?", ")");
  }
  if (WIFEXITED(st)) return absl::StrCat("exited with status ", WEXITSTATUS(st));
  return absl::StrCat("ended: ", p.DescribeExit());
}

// A process of the job while it runs.
struct Running {
  ProcessSpec spec;
  Subprocess proc;
  std::string partial;  // Output not yet ended by a newline.
  int remote_pid = -1;  // The node's pid on its host (from the wrapper),
  std::string started;  // its start time there,
  std::string token_file;  // and the wrapper's token file there.
  bool done = false;
};

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

std::string ProcessSpec::Prefix() const {
  return absl::StrCat("[", role, " ", index, " ", host.name, "]");
}

std::vector<ProcessSpec> PlanProcesses(const LaunchOptions& o,
                                       const std::string& scheduler_address) {
  const std::vector<std::string> common = {
      absl::StrCat("--scheduler_address=", scheduler_address),
      absl::StrCat("--num_workers=", o.num_workers),
      absl::StrCat("--num_servers=", o.num_servers)};
  std::vector<ProcessSpec> specs;
  ProcessSpec sched;
  sched.role = "scheduler";
  sched.host.name = o.mode == Mode::kLocal ? "127.0.0.1" : "localhost";
  sched.argv.push_back(o.scheduler_binary);
  sched.argv.insert(sched.argv.end(), common.begin(), common.end());
  sched.argv.insert(sched.argv.end(), o.scheduler_args.begin(),
                    o.scheduler_args.end());
  specs.push_back(sched);

  for (int i = 0; i < o.num_servers + o.num_workers; ++i) {
    ProcessSpec p;
    const bool server = i < o.num_servers;
    p.role = server ? "server" : "worker";
    p.index = server ? i : i - o.num_servers;
    if (o.mode == Mode::kSsh) {
      p.host = o.hosts[i % o.hosts.size()];
      p.remote = true;
    } else {
      p.host.name = "127.0.0.1";
    }
    if (server) {
      p.argv.push_back(o.server_binary);
      p.argv.insert(p.argv.end(), common.begin(), common.end());
      p.argv.push_back(absl::StrCat("--host=", p.host.name));
      p.argv.insert(p.argv.end(), o.server_args.begin(), o.server_args.end());
    } else {
      p.argv = o.command;
      p.argv.insert(p.argv.end(), common.begin(), common.end());
      p.argv.push_back(absl::StrCat("--host=", p.host.name));
    }
    specs.push_back(std::move(p));
  }
  return specs;
}

std::vector<std::string> WrapperCommand(const LaunchOptions& o,
                                        const ProcessSpec& spec,
                                        const std::vector<std::string>& env,
                                        const std::string& workdir) {
  if (!spec.remote) {
    std::vector<std::string> argv = {"/bin/sh", "-c", WrapperScript(),
                                     "pstrain-node"};
    argv.insert(argv.end(), spec.argv.begin(), spec.argv.end());
    return argv;
  }
  // One string for the remote shell: every word quoted, HOME and USER
  // expanded there.
  std::vector<std::string> words = {"cd", ShellQuote(workdir), "&&", "exec",
                                    "env", "-i", "HOME=\"$HOME\"",
                                    "USER=\"$USER\""};
  for (const auto& e : env) words.push_back(ShellQuote(e));
  words.push_back("/bin/sh");
  words.push_back("-c");
  words.push_back(ShellQuote(WrapperScript()));
  words.push_back("pstrain-node");
  for (const auto& a : spec.argv) words.push_back(ShellQuote(a));
  std::vector<std::string> argv = SshBase(o, spec.host);
  argv.push_back(absl::StrJoin(words, " "));
  return argv;
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
  return absl::OkStatus();
}

Launcher::Launcher(LaunchOptions options, std::ostream* out)
    : options_(std::move(options)), out_(out) {}

namespace {

// Runs `argv` to completion with a deadline, returning its exit status and
// output. Kills it at the deadline.
struct CommandResult {
  bool timed_out = false;
  bool ok = false;
  std::string description;
  std::string output;
};

CommandResult RunCommand(const std::vector<std::string>& argv,
                         absl::Duration timeout) {
  CommandResult r;
  auto proc = Subprocess::Start(argv, OwnEnvironment());
  if (!proc.ok()) {
    r.description = std::string(proc.status().message());
    return r;
  }
  proc->CloseStdin();
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    bool open = proc->ReadOutput(&r.output);
    if (proc->Poll() && !open) break;
    if (absl::Now() > deadline) {
      proc->SignalGroup(SIGKILL);
      r.timed_out = true;
      while (!proc->Poll()) absl::SleepFor(absl::Milliseconds(10));
      r.description = absl::StrCat("timed out after ", absl::FormatDuration(timeout));
      return r;
    }
    pollfd pfd{proc->output_fd(), POLLIN, 0};
    if (pfd.fd >= 0) {
      poll(&pfd, 1, 50);
    } else {
      absl::SleepFor(absl::Milliseconds(10));
    }
  }
  r.ok = proc->succeeded();
  r.description = proc->DescribeExit();
  return r;
}

std::string LastLine(const std::string& text) {
  std::vector<absl::string_view> lines =
      absl::StrSplit(text, '\n', absl::SkipWhitespace());
  return lines.empty() ? std::string()
                       : std::string(absl::StripAsciiWhitespace(lines.back()));
}

}  // namespace

namespace {

// After a failed or stopped ssh job: checks every remote host, in parallel,
// for nodes of the job still alive, kills them, and removes token files
// their wrappers left (see kWrapper). A host that does not
// answer on its ssh port within a few seconds (a cut link, a dead host) is
// not waited for: its nodes stop by themselves once the scheduler has been
// silent for their heartbeat timeout.
template <typename Say>
void CheckRemoteLeftovers(const LaunchOptions& o, const std::vector<Running>& running,
                          const std::map<std::string, Host>& hosts_by_name, Say say) {
  // Per host: "PID:START" of every node, and the token files.
  std::map<std::string, std::vector<std::string>> pids, tokens;
  for (const auto& r : running) {
    if (!r.spec.remote || r.remote_pid <= 0) continue;
    pids[r.spec.host.ToString()].push_back(
        absl::StrCat(r.remote_pid, ":", r.started));
    if (!r.token_file.empty()) {
      tokens[r.spec.host.ToString()].push_back(ShellQuote(r.token_file));
    }
  }
  const absl::Duration probe_timeout = std::min(o.ssh_connect_timeout, absl::Seconds(2));
  struct Check {
    std::string name;
    std::unique_ptr<Subprocess> proc;
    std::string output;
    bool timed_out = false;
  };
  std::vector<Check> checks;
  for (const auto& [name, list] : pids) {
    const Host& host = hosts_by_name.at(name);
    if (!TcpReachable(host, probe_timeout)) {
      say(absl::StrCat("host ", name, " is unreachable (no answer on ssh port ", host.ssh_port,
                       " within ", absl::FormatDuration(probe_timeout),
                       "): not checked for leftover processes; its nodes stop by themselves "
                       "when they have not heard from the scheduler for their heartbeat "
                       "timeout (watchdog)"));
      continue;
    }
    // The wrapper's watchdog sends SIGKILL 5 s after SIGTERM. Wait up to
    // 8 s for the nodes to go, then kill and report whatever is left (still
    // the same processes: see kSameProcess), and remove the token files.
    std::string script = absl::StrCat(
        kSameProcess, "i=0; while [ $i -lt 40 ]; do left=''; for ps in ",
        absl::StrJoin(list, " "),
        "; do same \"${ps%:*}\" \"${ps#*:}\" && left=\"$left ${ps%:*}\"; done; "
        "[ -z \"$left\" ] && break; i=$((i+1)); sleep 0.2; done; "
        "[ -z \"$left\" ] || { kill -9 $left 2>/dev/null; echo "
        "\"pstrain-left$left\"; }; "
        "rm -f ",
        absl::StrJoin(tokens[name], " "));
    std::vector<std::string> argv = SshBase(o, host);
    argv.push_back(script);
    Check c;
    c.name = name;
    auto p = Subprocess::Start(argv, OwnEnvironment());
    if (!p.ok()) {
      say(absl::StrCat("could not check ", name, " for leftover processes: ", p.status().message()));
      continue;
    }
    p->CloseStdin();
    c.proc = std::make_unique<Subprocess>(std::move(*p));
    checks.push_back(std::move(c));
  }
  const absl::Time deadline = absl::Now() + o.ssh_connect_timeout + absl::Seconds(15);
  for (auto& c : checks) {
    while (true) {
      const bool open = c.proc->ReadOutput(&c.output);
      if (c.proc->Poll() && !open) break;
      if (absl::Now() > deadline) {
        c.proc->SignalGroup(SIGKILL);
        while (!c.proc->Poll()) absl::SleepFor(absl::Milliseconds(10));
        c.timed_out = true;
        break;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    if (c.timed_out || !c.proc->succeeded()) {
      say(absl::StrCat("could not check ", c.name, " for leftover processes: ",
                       c.timed_out ? "timed out" : c.proc->DescribeExit()));
    } else if (absl::StrContains(c.output, "pstrain-left")) {
      say(absl::StrCat("killed leftover processes on ", c.name, ": ", LastLine(c.output)));
    }
  }
}

}  // namespace

int Launcher::Run() {
  const LaunchOptions& o = options_;
  auto say = [this](const std::string& line) {
    *out_ << "launch: " << line << "\n" << std::flush;
  };
  absl::Status valid = ValidateLaunchOptions(o);
  if (!valid.ok()) {
    say(std::string(valid.message()));
    return 1;
  }

  char cwd_buf[4096];
  if (getcwd(cwd_buf, sizeof(cwd_buf)) == nullptr) {
    say("cannot read the current directory");
    return 1;
  }
  const std::string workdir =
      o.sync_dst_dir.empty() ? std::string(cwd_buf) : o.sync_dst_dir;

  // Which binary each host must have.
  std::map<std::string, Host> hosts_by_name;
  std::map<std::string, std::set<std::string>> needs;
  std::string sched_host = o.scheduler_host;
  if (sched_host.empty()) {
    if (o.mode == Mode::kLocal) {
      sched_host = "127.0.0.1";
    } else {
      // The address this host uses on the route to the first host: on a
      // machine with several networks (a cluster fabric, a test bed's
      // bridge) that is the one the hosts can reach, not whatever the
      // host name resolves to.
      auto addr = RouteSourceAddress(o.hosts.front());
      if (!addr.ok() || absl::StartsWith(*addr, "127.")) addr = OwnAddress();
      if (!addr.ok()) {
        say(std::string(addr.status().message()));
        return 1;
      }
      sched_host = *addr;
    }
  }
  int port = o.scheduler_port;
  if (port == 0) {
    auto p = PickFreePort(sched_host);
    if (!p.ok()) {
      say(absl::StrCat("cannot pick a scheduler port: ", p.status().message()));
      return 1;
    }
    port = *p;
  }
  const std::string sched_addr = absl::StrCat(sched_host, ":", port);
  std::vector<ProcessSpec> plan = PlanProcesses(o, sched_addr);

  // Local binaries (the scheduler always runs here).
  {
    std::vector<std::string> local_bins = {o.scheduler_binary};
    if (o.mode == Mode::kLocal) {
      local_bins.push_back(o.server_binary);
      local_bins.push_back(o.command[0]);
    }
    for (const auto& bin : local_bins) {
      CommandResult r = RunCommand(
          {"/bin/sh", "-c", "command -v \"$1\" >/dev/null", "check", bin},
          absl::Seconds(10));
      if (!r.ok) {
        say(absl::StrCat("binary '", bin,
                         "' is not an executable here (build it first: bazel "
                         "build //scheduler //server //worker)"));
        return 1;
      }
    }
  }

  if (o.mode == Mode::kSsh) {
    for (const auto& spec : plan) {
      if (!spec.remote) continue;
      hosts_by_name[spec.host.ToString()] = spec.host;
      needs[spec.host.ToString()].insert(spec.argv[0]);
    }
    // Optional rsync of the current directory.
    if (!o.sync_dst_dir.empty()) {
      for (const auto& [name, host] : hosts_by_name) {
        std::vector<std::string> ssh = SshBase(o, host);
        ssh.pop_back();  // Host name: rsync adds it.
        std::vector<std::string> rsync = {
            "rsync", "-az", "-e", absl::StrJoin(ssh, " "),
            std::string(cwd_buf) + "/",
            absl::StrCat(host.name, ":", o.sync_dst_dir, "/")};
        say(absl::StrCat("syncing ", cwd_buf, " to ", name, ":",
                         o.sync_dst_dir));
        CommandResult r = RunCommand(rsync, absl::Minutes(30));
        if (!r.ok) {
          say(absl::StrCat("rsync to ", name, " failed (", r.description,
                           "): ", LastLine(r.output)));
          return 1;
        }
      }
    }
    // Check every host before starting anything, in parallel.
    struct Check {
      Host host;
      std::unique_ptr<Subprocess> proc;
      std::string output;
      std::string status;
    };
    std::vector<Check> checks;
    for (const auto& [name, host] : hosts_by_name) {
      std::string script = absl::StrCat(
          "cd ", ShellQuote(workdir),
          " 2>/dev/null || { echo 'pstrain-check: no directory ", workdir,
          "'; exit 0; }; for b in");
      for (const auto& bin : needs[name]) absl::StrAppend(&script, " ", ShellQuote(bin));
      absl::StrAppend(&script,
                      "; do command -v \"$b\" >/dev/null 2>&1 || echo "
                      "\"pstrain-check: missing $b\"; done; echo "
                      "pstrain-check: ok");
      std::vector<std::string> argv = SshBase(o, host);
      argv.push_back(script);
      Check c;
      c.host = host;
      auto p = Subprocess::Start(argv, OwnEnvironment());
      if (!p.ok()) {
        c.status = absl::StrCat("cannot run ssh: ", p.status().message());
      } else {
        p->CloseStdin();
        c.proc = std::make_unique<Subprocess>(std::move(*p));
      }
      checks.push_back(std::move(c));
    }
    const absl::Time deadline =
        absl::Now() + o.ssh_connect_timeout + absl::Seconds(10);
    bool all_ok = true;
    for (auto& c : checks) {
      if (!c.proc) {
        all_ok = false;
        continue;
      }
      while (true) {
        bool open = c.proc->ReadOutput(&c.output);
        if (c.proc->Poll() && !open) break;
        if (absl::Now() > deadline) {
          c.proc->SignalGroup(SIGKILL);
          while (!c.proc->Poll()) absl::SleepFor(absl::Milliseconds(10));
          c.status = "unreachable: ssh timed out";
          break;
        }
        absl::SleepFor(absl::Milliseconds(20));
      }
      if (!c.status.empty()) {
        all_ok = false;
        continue;
      }
      std::vector<std::string> problems;
      bool reached = false;
      for (absl::string_view line : absl::StrSplit(c.output, '\n')) {
        if (absl::ConsumePrefix(&line, "pstrain-check: ")) {
          if (line == "ok") {
            reached = true;
          } else {
            problems.push_back(std::string(line));
          }
        }
      }
      if (!reached) {
        c.status = absl::StrCat("unreachable: ssh ", c.proc->DescribeExit(),
                                ": ", LastLine(c.output));
      } else if (!problems.empty()) {
        c.status = absl::StrJoin(problems, "; ");
      } else {
        c.status = "ok";
      }
      if (c.status != "ok") all_ok = false;
    }
    *out_ << absl::StrFormat("launch: %-24s %-6s %-8s %s\n", "HOST", "PORT",
                             "ROLES", "CHECK");
    for (const auto& c : checks) {
      int servers = 0, workers = 0;
      for (const auto& s : plan) {
        if (s.remote && s.host == c.host) ++(s.role == "server" ? servers : workers);
      }
      *out_ << absl::StrFormat("launch: %-24s %-6d %-8s %s\n", c.host.name,
                               c.host.ssh_port,
                               absl::StrCat(servers, "s+", workers, "w"),
                               c.status);
    }
    out_->flush();
    if (!all_ok) {
      say("host check failed; nothing was started");
      return 1;
    }
  }

  // The node environment: whitelist + --env.
  // An --env K=V replaces the launcher's own K: a variable given twice
  // would mean different values to different readers.
  std::set<std::string> given;
  for (const std::string& e : o.env) given.insert(e.substr(0, e.find('=')));
  std::vector<std::string> node_env;
  for (int i = 0; kEnvWhitelist[i] != nullptr; ++i) {
    const char* v = getenv(kEnvWhitelist[i]);
    if (v != nullptr && !given.count(kEnvWhitelist[i])) {
      node_env.push_back(absl::StrCat(kEnvWhitelist[i], "=", v));
    }
  }
  node_env.insert(node_env.end(), o.env.begin(), o.env.end());
  std::vector<std::string> local_env = node_env;
  if (const char* home = getenv("HOME")) local_env.push_back(absl::StrCat("HOME=", home));
  if (const char* user = getenv("USER")) local_env.push_back(absl::StrCat("USER=", user));

  const std::string token = JobToken();
  say(absl::StrCat("job: 1 scheduler at ", sched_addr, ", ", o.num_servers,
                   " server(s), ", o.num_workers, " worker(s), launcher ",
                   o.mode == Mode::kSsh ? "ssh" : "local"));

  std::vector<Running> running;
  running.reserve(plan.size());
  int exit_code = 0;
  std::string first_failure;
  bool stopping = false;
  auto begin_stop = [&]() {
    if (stopping) return;
    stopping = true;
    for (auto& r : running) {
      r.proc.CloseStdin();
      if (!r.done) r.proc.SignalGroup(SIGTERM);
    }
  };

  for (const auto& spec : plan) {
    std::vector<std::string> argv = WrapperCommand(o, spec, node_env, workdir);
    auto proc = Subprocess::Start(argv, spec.remote ? OwnEnvironment() : local_env);
    if (!proc.ok()) {
      first_failure = absl::StrCat(spec.Prefix(), " could not start: ",
                                   proc.status().message());
      exit_code = 1;
      begin_stop();
      break;
    }
    absl::Status w = proc->WriteStdin(token + "\n");
    if (!w.ok()) LOG(WARNING) << spec.Prefix() << " token not delivered: " << w;
    running.push_back(Running{spec, std::move(*proc), "", -1, "", "", false});
  }

  std::string abort_reason;
  auto flush_lines = [&](Running& r, bool final) {
    size_t start = 0;
    while (true) {
      size_t nl = r.partial.find('\n', start);
      if (nl == std::string::npos) break;
      absl::string_view line(r.partial.data() + start, nl - start);
      start = nl + 1;
      // The wrapper's line, written as soon as the node starts: only the
      // first one counts, so that a node's own output cannot name the
      // processes to kill or the files to remove afterwards.
      if (r.remote_pid < 0 && absl::StartsWith(line, kPidMarker)) {
        std::vector<absl::string_view> words =
            absl::StrSplit(line.substr(sizeof(kPidMarker) - 1), ' ');
        int pid = -1;
        uint64_t started = 0;
        if (absl::SimpleAtoi(words[0], &pid) && pid > 0) r.remote_pid = pid;
        if (words.size() == 3 && absl::SimpleAtoi(words[1], &started)) {
          r.started = std::string(words[1]);
        }
        if (words.size() == 3 && IsTokenFile(words[2])) {
          r.token_file = std::string(words[2]);
        }
        continue;
      }
      if (r.spec.role == "scheduler" && abort_reason.empty()) {
        // The scheduler's own account of a failure (e.g. which node went
        // silent, on which host) goes into launch's final line.
        const size_t at = line.find(kAbortMarker);
        if (at != absl::string_view::npos) {
          abort_reason = std::string(line.substr(at + sizeof(kAbortMarker) - 1));
        }
      }
      *out_ << r.spec.Prefix() << " " << line << "\n";
    }
    r.partial.erase(0, start);
    if (final && !r.partial.empty()) {
      *out_ << r.spec.Prefix() << " " << r.partial << "\n";
      r.partial.clear();
    }
    out_->flush();
  };

  absl::Time kill_at = absl::InfiniteFuture();
  int stop_signal = 0;
  while (true) {
    int sig = g_stop_signal.exchange(0);
    if (sig != 0 && stop_signal == 0) {
      stop_signal = sig;
      const char* name = sigabbrev_np(sig);
      say(absl::StrCat("received SIG", name ? name : "?",
                       "; stopping every process"));
      if (exit_code == 0) exit_code = 128 + sig;
      begin_stop();
    }
    std::vector<pollfd> fds;
    for (auto& r : running) {
      if (r.proc.output_fd() >= 0) fds.push_back({r.proc.output_fd(), POLLIN, 0});
    }
    if (!fds.empty()) {
      poll(fds.data(), fds.size(), 100);
    } else {
      absl::SleepFor(absl::Milliseconds(50));
    }
    bool all_done = true;
    for (auto& r : running) {
      bool open = r.proc.ReadOutput(&r.partial);
      flush_lines(r, !open);
      if (!r.done && r.proc.Poll()) {
        r.done = true;
        if (!r.proc.succeeded()) {
          if (first_failure.empty() && !stopping) {
            first_failure = absl::StrCat(r.spec.Prefix(), " ", DescribeNodeExit(r.proc));
            say(first_failure + "; stopping every process");
            exit_code = 1;
            begin_stop();
          }
        } else if (!stopping) {
          say(absl::StrCat(r.spec.Prefix(), " finished"));
        }
      }
      if (!r.done || r.proc.output_fd() >= 0) all_done = false;
    }
    if (stopping && kill_at == absl::InfiniteFuture()) {
      kill_at = absl::Now() + o.stop_grace;
    }
    if (all_done) break;
    if (absl::Now() > kill_at) {
      for (auto& r : running) {
        if (!r.done || r.proc.GroupAlive()) r.proc.SignalGroup(SIGKILL);
      }
      kill_at = absl::Now() + absl::Seconds(5);
      // Processes killed with SIGKILL close their pipes; the loop ends.
    }
  }

  // Nothing may outlive the job: local groups, and the nodes on remote hosts.
  int left = 0;
  for (auto& r : running) {
    if (r.proc.GroupAlive()) {
      r.proc.SignalGroup(SIGKILL);
      ++left;
    }
  }
  if (o.mode == Mode::kSsh && (stopping || exit_code != 0)) {
    CheckRemoteLeftovers(o, running, hosts_by_name, say);
  }
  if (left > 0) say(absl::StrCat("killed ", left, " leftover local process group(s)"));
  // A wrapper removes its token file however it ends, except when it is
  // killed with SIGKILL (a node that outlived --stop_grace_s): then here.
  for (const auto& r : running) {
    if (!r.spec.remote && !r.token_file.empty() &&
        unlink(r.token_file.c_str()) == 0) {
      LOG(INFO) << r.spec.Prefix()
                << " removed the token file its wrapper left";
    }
  }

  if (!first_failure.empty()) {
    say(absl::StrCat("job failed: ", first_failure,
                     abort_reason.empty() ? "" : absl::StrCat("; the scheduler aborted the job: ",
                                                              abort_reason)));
  } else if (stop_signal != 0) {
    say("job stopped");
  } else {
    say("job finished: every process exited 0");
  }
  return exit_code;
}

}  // namespace launcher
}  // namespace pstrain
