#include "launcher/ssh_backend.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <memory>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "util/status.h"

namespace pstrain {
namespace launcher {
namespace {

// The local address this host sends from to reach `host` (a connected UDP
// socket sends nothing: the kernel only picks the route and source).
absl::StatusOr<std::string> RouteSourceAddress(const Host& host) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  const int rc = getaddrinfo(host.name.c_str(),
                             absl::StrCat(host.ssh_port).c_str(), &hints, &res);
  if (rc != 0) {
    return absl::NotFoundError(absl::StrCat("cannot resolve host '", host.name,
                                            "': ", gai_strerror(rc)));
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
  if (c != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) {
    close(fd);
    return ErrnoToStatus(c != 0 ? e : errno,
                         absl::StrCat("no route to ", host.name));
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
  if (getaddrinfo(host.name.c_str(), absl::StrCat(host.ssh_port).c_str(),
                  &hints, &res) != 0) {
    return false;
  }
  bool ok = false;
  for (addrinfo* a = res; a != nullptr && !ok; a = a->ai_next) {
    int fd =
        socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) continue;
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      ok = true;
    } else if (errno == EINPROGRESS) {
      pollfd pfd{fd, POLLOUT, 0};
      if (poll(&pfd, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout))) ==
          1) {
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
  return absl::FailedPreconditionError(
      absl::StrCat("cannot tell this host's address (", name,
                   " resolves only to loopback); set --scheduler_host"));
}

// A command run on one host, in parallel with the others.
struct HostCommand {
  Host host;
  std::unique_ptr<Subprocess> proc;
  std::string output;
  bool timed_out = false;
};

// Reads the output of every command until each has ended, killing those
// still running at `deadline`.
void WaitForAll(std::vector<HostCommand>* commands, absl::Time deadline) {
  for (auto& c : *commands) {
    if (!c.proc) continue;
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
  }
}

}  // namespace

std::vector<std::string> SshBackend::SshArgv(const Host& host) const {
  const LaunchOptions& o = options();
  std::vector<std::string> argv = {"ssh"};
  if (!o.ssh_config.empty()) {
    argv.push_back("-F");
    argv.push_back(o.ssh_config);
  }
  const int64_t connect_s =
      std::max<int64_t>(1, absl::ToInt64Seconds(o.ssh_connect_timeout));
  for (std::string opt : {std::string("BatchMode=yes"),
                          absl::StrCat("ConnectTimeout=", connect_s),
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

absl::StatusOr<std::string> AddressTowards(const Host& host) {
  // On a machine with several networks (a cluster fabric, a test bed's
  // bridge) the route's source is the one the hosts can reach, not
  // whatever the host name resolves to.
  auto addr = RouteSourceAddress(host);
  if (!addr.ok() || absl::StartsWith(*addr, "127.")) addr = OwnAddress();
  return addr;
}

absl::StatusOr<std::string> SshBackend::DefaultSchedulerHost() const {
  return AddressTowards(options().hosts.front());
}

absl::Status SshBackend::Preflight(const std::vector<ProcessSpec>& specs) {
  const LaunchOptions& o = options();
  const std::string& workdir = context().workdir;
  // Which binary each host must have.
  std::map<std::string, Host> hosts_by_name;
  std::map<std::string, std::set<std::string>> needs;
  for (const auto& spec : specs) {
    hosts_by_name[spec.host.ToString()] = spec.host;
    needs[spec.host.ToString()].insert(spec.argv[0]);
  }
  // Optional rsync of the current directory.
  if (!o.sync_dst_dir.empty()) {
    for (const auto& [name, host] : hosts_by_name) {
      std::vector<std::string> ssh = SshArgv(host);
      ssh.pop_back();  // Host name: rsync adds it.
      std::vector<std::string> rsync = {
          "rsync",
          "-az",
          "-e",
          absl::StrJoin(ssh, " "),
          context().cwd + "/",
          absl::StrCat(host.name, ":", o.sync_dst_dir, "/")};
      Say(absl::StrCat("syncing ", context().cwd, " to ", name, ":",
                       o.sync_dst_dir));
      CommandResult r = RunCommand(rsync, absl::Minutes(30));
      if (!r.ok) {
        return absl::UnavailableError(absl::StrCat("rsync to ", name,
                                                   " failed (", r.description,
                                                   "): ", LastLine(r.output)));
      }
    }
  }
  unreachable_.clear();
  // Check every host before starting anything, in parallel.
  std::vector<HostCommand> checks;
  std::vector<std::string> status;  // Per check.
  for (const auto& [name, host] : hosts_by_name) {
    std::string script =
        absl::StrCat("cd ", ShellQuote(workdir),
                     " 2>/dev/null || { echo 'pstrain-check: no directory ",
                     workdir, "'; exit 0; }; for b in");
    for (const auto& bin : needs[name]) {
      absl::StrAppend(&script, " ", ShellQuote(bin));
    }
    absl::StrAppend(&script,
                    "; do command -v \"$b\" >/dev/null 2>&1 || echo "
                    "\"pstrain-check: missing $b\"; done; echo "
                    "pstrain-check: ok");
    std::vector<std::string> argv = SshArgv(host);
    argv.push_back(script);
    HostCommand c;
    c.host = host;
    auto p = Subprocess::Start(argv, OwnEnvironment());
    if (!p.ok()) {
      status.push_back(absl::StrCat("cannot run ssh: ", p.status().message()));
    } else {
      status.emplace_back();
      p->CloseStdin();
      c.proc = std::make_unique<Subprocess>(std::move(*p));
    }
    checks.push_back(std::move(c));
  }
  WaitForAll(&checks, absl::Now() + o.ssh_connect_timeout + absl::Seconds(10));
  bool all_ok = true;
  for (size_t i = 0; i < checks.size(); ++i) {
    const HostCommand& c = checks[i];
    if (!c.proc) {
      all_ok = false;
      continue;
    }
    if (c.timed_out) {
      status[i] = "unreachable: ssh timed out";
      unreachable_.push_back({c.host, status[i]});
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
      status[i] = absl::StrCat("unreachable: ssh ", c.proc->DescribeExit(),
                               ": ", LastLine(c.output));
      unreachable_.push_back({c.host, status[i]});
    } else if (!problems.empty()) {
      status[i] = absl::StrJoin(problems, "; ");
    } else {
      status[i] = "ok";
    }
    if (status[i] != "ok") all_ok = false;
  }
  std::ostream& out = *context().out;
  out << absl::StrFormat("launch: %-24s %-6s %-8s %s\n", "HOST", "PORT",
                         "ROLES", "CHECK");
  for (size_t i = 0; i < checks.size(); ++i) {
    const Host& host = checks[i].host;
    int servers = 0, workers = 0;
    for (const auto& s : specs) {
      if (s.host == host) ++(s.role == "server" ? servers : workers);
    }
    out << absl::StrFormat(
        "launch: %-24s %-6d %-8s %s\n", host.name, host.ssh_port,
        absl::StrCat(servers, "s+", workers, "w"), status[i]);
  }
  out.flush();
  if (!all_ok) {
    return absl::UnavailableError("host check failed; nothing was started");
  }
  return absl::OkStatus();
}

NodeCommand SshBackend::Command(const ProcessSpec& spec) const {
  // One string for the remote shell: every word quoted, HOME and USER
  // expanded there.
  std::vector<std::string> words = {"cd",
                                    ShellQuote(context().workdir),
                                    "&&",
                                    "exec",
                                    "env",
                                    "-i",
                                    "HOME=\"$HOME\"",
                                    "USER=\"$USER\""};
  for (const auto& e : context().node_env) words.push_back(ShellQuote(e));
  words.push_back("/bin/sh");
  words.push_back("-c");
  words.push_back(ShellQuote(WrapperScript()));
  words.push_back("pstrain-node");
  for (const auto& a : spec.argv) words.push_back(ShellQuote(a));
  NodeCommand c;
  c.argv = SshArgv(spec.host);
  c.argv.push_back(absl::StrJoin(words, " "));
  c.env = OwnEnvironment();
  return c;
}

void SshBackend::CleanUp(const std::vector<StartedNode>& nodes, bool failed) {
  if (!failed) return;
  const LaunchOptions& o = options();
  // Per host: "PID:START" of every node, and the token files.
  std::map<std::string, Host> hosts_by_name;
  std::map<std::string, std::vector<std::string>> pids, tokens;
  for (const StartedNode& n : nodes) {
    if (n.report.pid <= 0) continue;
    const std::string name = n.spec.host.ToString();
    hosts_by_name[name] = n.spec.host;
    pids[name].push_back(absl::StrCat(n.report.pid, ":", n.report.started));
    if (!n.report.token_file.empty()) {
      tokens[name].push_back(ShellQuote(n.report.token_file));
    }
  }
  const absl::Duration probe_timeout =
      std::min(o.ssh_connect_timeout, absl::Seconds(2));
  std::vector<HostCommand> checks;
  for (const auto& [name, list] : pids) {
    const Host& host = hosts_by_name.at(name);
    if (!TcpReachable(host, probe_timeout)) {
      Say(absl::StrCat(
          "host ", name, " is unreachable (no answer on ssh port ",
          host.ssh_port, " within ", absl::FormatDuration(probe_timeout),
          "): not checked for leftover processes; its nodes stop by themselves "
          "when they have not heard from the scheduler for their heartbeat "
          "timeout (watchdog)"));
      continue;
    }
    // The wrapper's watchdog sends SIGKILL 5 s after SIGTERM. Wait up to
    // 8 s for the nodes to go, then kill and report whatever is left (still
    // the same processes: see kSameProcessFunctions), and remove the token
    // files.
    std::string script = absl::StrCat(
        kSameProcessFunctions,
        "i=0; while [ $i -lt 40 ]; do left=''; for ps in ",
        absl::StrJoin(list, " "),
        "; do same \"${ps%:*}\" \"${ps#*:}\" && left=\"$left ${ps%:*}\"; done; "
        "[ -z \"$left\" ] && break; i=$((i+1)); sleep 0.2; done; "
        "[ -z \"$left\" ] || { kill -9 $left 2>/dev/null; echo "
        "\"pstrain-left$left\"; }; "
        "rm -f ",
        absl::StrJoin(tokens[name], " "));
    std::vector<std::string> argv = SshArgv(host);
    argv.push_back(script);
    auto p = Subprocess::Start(argv, OwnEnvironment());
    if (!p.ok()) {
      Say(absl::StrCat("could not check ", name,
                       " for leftover processes: ", p.status().message()));
      continue;
    }
    p->CloseStdin();
    HostCommand c;
    c.host = host;
    c.proc = std::make_unique<Subprocess>(std::move(*p));
    checks.push_back(std::move(c));
  }
  WaitForAll(&checks, absl::Now() + o.ssh_connect_timeout + absl::Seconds(15));
  for (const auto& c : checks) {
    if (c.timed_out || !c.proc->succeeded()) {
      Say(absl::StrCat("could not check ", c.host.ToString(),
                       " for leftover processes: ",
                       c.timed_out ? "timed out" : c.proc->DescribeExit()));
    } else if (absl::StrContains(c.output, "pstrain-left")) {
      Say(absl::StrCat("killed leftover processes on ", c.host.ToString(), ": ",
                       LastLine(c.output)));
    }
  }
}

}  // namespace launcher
}  // namespace pstrain
