// Runs `launch` for real over ssh: a private sshd on 127.0.0.1 and 127.0.0.2
// (an ephemeral port, keys generated for the test in its temp directory).
// Small shell programs stand in for the scheduler, server and worker so that
// the launcher itself is what is tested: host checks, placement, environment
// and token hand-over, output prefixes, failure and signal handling, and
// that no process of the job outlives it.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "launcher/launcher.h"
#include "launcher/subprocess.h"

namespace pstrain {
namespace {

using launcher::Launcher;
using launcher::LaunchOptions;
using launcher::Mode;
using launcher::Subprocess;
using ::testing::HasSubstr;
using ::testing::Not;

std::string TmpDir() {
  const char* t = std::getenv("TEST_TMPDIR");
  return t ? t : "/tmp";
}

std::vector<std::string> OwnEnv() {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) env.push_back(*e);
  return env;
}

// Runs a command to completion (bounded) and returns its output.
std::string RunCommand(const std::vector<std::string>& argv,
                       int* status = nullptr) {
  auto p = Subprocess::Start(argv, OwnEnv());
  if (!p.ok()) return std::string(p.status().message());
  p->CloseStdin();
  std::string out;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while ((p->ReadOutput(&out) || !p->Poll()) && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  if (!p->exited()) p->SignalGroup(SIGKILL);
  while (!p->Poll()) absl::SleepFor(absl::Milliseconds(5));
  if (status) *status = p->succeeded() ? 0 : 1;
  return out;
}

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

bool PortOpen(const char* ip, int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, ip, &a.sin_addr);
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  close(fd);
  return ok;
}

std::string Script(const std::string& name, const std::string& body) {
  std::string path = absl::StrCat(TmpDir(), "/", name);
  std::ofstream(path) << "#!/bin/sh\n" << body;
  chmod(path.c_str(), 0755);
  return path;
}

// Each node records its pid and prints what it got.
constexpr char kRecord[] =
    "echo $$ > \"$PIDDIR/$$\"\n"
    "for a; do case $a in --token_file=*) tf=${a#--token_file=};; esac; done\n"
    "echo \"token=$(cat \"$tf\") secret=${PSTRAIN_TEST_SECRET:-unset} "
    "piddir=${PIDDIR:+set} args=$*\"\n";

std::vector<int> Pids(const std::string& dir) {
  std::vector<int> pids;
  for (absl::string_view w :
       absl::StrSplit(RunCommand({"/bin/ls", dir}), '\n', absl::SkipEmpty())) {
    int pid;
    if (absl::SimpleAtoi(w, &pid)) pids.push_back(pid);
  }
  return pids;
}

bool Alive(int pid) { return kill(pid, 0) == 0 || errno != ESRCH; }

std::string NewDir(const std::string& name) {
  const std::string d = absl::StrCat(TmpDir(), "/", name);
  mkdir(d.c_str(), 0700);
  return d;
}

// The launch wrappers' token files in `dir`.
std::vector<std::string> TokenFiles(const std::string& dir) {
  std::vector<std::string> names;
  for (absl::string_view w :
       absl::StrSplit(RunCommand({"/bin/ls", dir}), '\n', absl::SkipEmpty())) {
    if (absl::StartsWith(w, "pstrain-token.")) names.emplace_back(w);
  }
  return names;
}

// Runs the launch binary for a job of 2 servers and 2 workers (`mode`: the
// flags that choose local or ssh) whose nodes would run for two minutes, a
// server even ignoring SIGTERM, each with PIDDIR=`piddir` and its own
// TMPDIR=`tmpdir`. Once all five nodes run, sends `sig` to launch, then
// checks that within 20 s every node is gone and no token file of the job
// is left. Returns launch's output.
std::string KillLaunchMidJob(int sig, const std::vector<std::string>& mode,
                             const std::string& piddir,
                             const std::string& tmpdir) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  EXPECT_NE(srcdir, nullptr);
  if (srcdir == nullptr) return "";
  const std::string name = absl::StrCat("kill", sig, mode.back());
  std::vector<std::string> argv = {
      absl::StrCat(srcdir, "/pstrain/tools/launch"), "-n", "2", "-s", "2"};
  argv.insert(argv.end(), {"--stop_grace_s", "3", "--env", "PIDDIR=" + piddir,
                           "--env", "TMPDIR=" + tmpdir});
  argv.insert(
      argv.end(),
      {"--scheduler_binary",
       Script(name + "_s.sh", std::string(kRecord) + "exec sleep 120\n"),
       "--server_binary",
       Script(name + "_v.sh",
              std::string(kRecord) +
                  "trap '' TERM\nwhile :; do sleep 1; done\n")});
  argv.insert(argv.end(), mode.begin(), mode.end());
  argv.insert(argv.end(),
              {"--", Script(name + "_w.sh",
                            std::string(kRecord) + "exec sleep 120\n")});
  auto p = Subprocess::Start(argv, OwnEnv());
  EXPECT_TRUE(p.ok()) << p.status();
  if (!p.ok()) return "";
  p->CloseStdin();
  std::string out;
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (Pids(piddir).size() < 5 && absl::Now() < deadline) {
    p->ReadOutput(&out);
    EXPECT_FALSE(p->Poll()) << out;
    if (p->exited()) return out;
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(Pids(piddir).size(), 5u) << out;
  EXPECT_EQ(TokenFiles(tmpdir).size(), 5u) << out;
  kill(p->pid(), sig);
  deadline = absl::Now() + absl::Seconds(30);
  while ((p->ReadOutput(&out) || !p->Poll()) && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_TRUE(p->exited()) << "launch did not exit:\n" << out;
  EXPECT_FALSE(p->succeeded());
  // Without launch (SIGKILL), the wrappers stop the nodes and clean up.
  deadline = absl::Now() + absl::Seconds(20);
  auto anything_left = [&] {
    for (int pid : Pids(piddir)) {
      if (Alive(pid)) return true;
    }
    return !TokenFiles(tmpdir).empty();
  };
  while (anything_left() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  for (int pid : Pids(piddir)) EXPECT_FALSE(Alive(pid)) << pid << "\n" << out;
  EXPECT_THAT(TokenFiles(tmpdir), ::testing::IsEmpty()) << out;
  return out;
}

TEST(LaunchLocalKillTest, SigtermLeavesNoNodeAndNoTokenFile) {
  const std::string out =
      KillLaunchMidJob(SIGTERM, {"--launcher", "local"},
                       NewDir("local_term_pids"), NewDir("local_term_tmp"));
  EXPECT_THAT(out, HasSubstr("received SIGTERM"));
}

TEST(LaunchLocalKillTest, SigkillLeavesNoNodeAndNoTokenFile) {
  KillLaunchMidJob(SIGKILL, {"--launcher", "local"}, NewDir("local_kill_pids"),
                   NewDir("local_kill_tmp"));
}

class LaunchSshTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access("/usr/sbin/sshd", X_OK) != 0) {
      GTEST_SKIP() << "sshd is not installed (scripts/setup installs "
                      "openssh-server); ssh launch test skipped";
    }
    if (access("/run/sshd", F_OK) != 0) {
      GTEST_SKIP() << "/run/sshd is missing (scripts/setup creates it); ssh "
                      "launch test skipped";
    }
    dir_ = absl::StrCat(TmpDir(), "/ssh");
    mkdir(dir_.c_str(), 0700);
    for (const char* k : {"host_key", "user_key"}) {
      RunCommand({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                  absl::StrCat(dir_, "/", k)});
    }
    RunCommand({"cp", dir_ + "/user_key.pub", dir_ + "/authorized_keys"});
    port_ = FreePort();
    std::ofstream(dir_ + "/sshd_config")
        << "Port " << port_ << "\nListenAddress 127.0.0.1\nListenAddress "
        << "127.0.0.2\nHostKey " << dir_ << "/host_key\nAuthorizedKeysFile "
        << dir_ << "/authorized_keys\nPidFile " << dir_
        << "/sshd.pid\nStrictModes no\nUsePAM no\nPermitRootLogin "
        << "prohibit-password\nPasswordAuthentication no\n"
        << "KbdInteractiveAuthentication no\nMaxStartups 100\n";
    std::ofstream(dir_ + "/ssh_config")
        << "Host *\n  IdentityFile " << dir_ << "/user_key\n"
        << "  IdentitiesOnly yes\n  UserKnownHostsFile /dev/null\n"
        << "  StrictHostKeyChecking no\n  LogLevel ERROR\n";
    auto sshd = Subprocess::Start(
        {"/usr/sbin/sshd", "-D", "-e", "-f", dir_ + "/sshd_config"}, OwnEnv());
    ASSERT_TRUE(sshd.ok()) << sshd.status();
    sshd_ = std::make_unique<Subprocess>(std::move(*sshd));
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (!(PortOpen("127.0.0.1", port_) && PortOpen("127.0.0.2", port_))) {
      std::string log;
      sshd_->ReadOutput(&log);
      ASSERT_FALSE(sshd_->Poll()) << "sshd exited: " << log;
      ASSERT_LT(absl::Now(), deadline) << "sshd did not listen on " << port_;
      absl::SleepFor(absl::Milliseconds(20));
    }
    piddir_ = absl::StrCat(
        TmpDir(), "/pids_",
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    mkdir(piddir_.c_str(), 0700);
    setenv("PSTRAIN_TEST_SECRET", "must-not-leak", 1);
  }

  void TearDown() override {
    if (sshd_) sshd_->SignalGroup(SIGTERM);
  }

  LaunchOptions Options() {
    LaunchOptions o;
    o.mode = Mode::kSsh;
    o.hosts = {{"127.0.0.1", port_}, {"127.0.0.2", port_}};
    o.ssh_config = dir_ + "/ssh_config";
    o.scheduler_host = "127.0.0.1";
    o.env = {absl::StrCat("PIDDIR=", piddir_)};
    o.ssh_connect_timeout = absl::Seconds(5);
    o.stop_grace = absl::Seconds(3);
    o.num_servers = 1;
    o.num_workers = 2;
    return o;
  }

  std::string dir_, piddir_;
  int port_ = 0;
  std::unique_ptr<Subprocess> sshd_;
};

TEST_F(LaunchSshTest, JobRunsAcrossTwoHostsWithExplicitEnvironment) {
  LaunchOptions o = Options();
  o.scheduler_binary = Script("s_ok.sh", std::string(kRecord) + "exit 0\n");
  o.server_binary = Script("v_ok.sh", std::string(kRecord) + "exit 0\n");
  o.command = {Script("w_ok.sh", std::string(kRecord) + "exit 0\n"),
               "--lr=0.1"};
  std::ostringstream out;
  ASSERT_EQ(Launcher(o, &out).Run(), 0) << out.str();
  const std::string text = out.str();
  // The host table, then every process with its host.
  EXPECT_THAT(text, HasSubstr("127.0.0.2"));
  EXPECT_THAT(text, HasSubstr("1s+1w    ok"));
  EXPECT_THAT(text, HasSubstr("[server 0 127.0.0.1] token="));
  EXPECT_THAT(text, HasSubstr("[worker 0 127.0.0.2] token="));
  EXPECT_THAT(text, HasSubstr("[worker 1 127.0.0.1] token="));
  EXPECT_THAT(text, HasSubstr("--lr=0.1 --scheduler_address=127.0.0.1:"));
  EXPECT_THAT(text, HasSubstr("--host=127.0.0.2"));
  // --env reaches the nodes; the launcher's other variables do not.
  EXPECT_THAT(text, HasSubstr("piddir=set"));
  EXPECT_THAT(text, HasSubstr("secret=unset"));
  EXPECT_THAT(text, Not(HasSubstr("must-not-leak")));
  EXPECT_EQ(Pids(piddir_).size(), 4u);
}

TEST_F(LaunchSshTest, RemoteFailureStopsEveryProcessOnEveryHost) {
  LaunchOptions o = Options();
  o.scheduler_binary =
      Script("s_long.sh", std::string(kRecord) + "sleep 120\n");
  o.server_binary = Script("v_long.sh", std::string(kRecord) + "sleep 120\n");
  o.command = {Script(
      "w_fail.sh", std::string(kRecord) + "sleep 1\necho dying >&2\nexit 7\n")};
  std::ostringstream out;
  const absl::Time start = absl::Now();
  EXPECT_EQ(Launcher(o, &out).Run(), 1);
  EXPECT_LT(absl::Now() - start, absl::Seconds(30)) << out.str();
  EXPECT_THAT(out.str(), HasSubstr("job failed: [worker "));
  EXPECT_THAT(out.str(), HasSubstr("exited with status 7"));
  std::vector<int> pids = Pids(piddir_);
  EXPECT_EQ(pids.size(), 4u) << out.str();
  for (int pid : pids) EXPECT_FALSE(Alive(pid)) << pid << "\n" << out.str();
}

TEST_F(LaunchSshTest, UnreachableHostStopsTheLaunchWithATable) {
  LaunchOptions o = Options();
  o.hosts = {{"127.0.0.1", port_},
             {"127.0.0.2", FreePort()}};  // Nothing there.
  o.scheduler_binary = Script("s_x.sh", std::string(kRecord));
  o.server_binary = Script("v_x.sh", std::string(kRecord));
  o.command = {Script("w_x.sh", std::string(kRecord))};
  std::ostringstream out;
  EXPECT_EQ(Launcher(o, &out).Run(), 1);
  EXPECT_THAT(out.str(), HasSubstr("unreachable"));
  EXPECT_THAT(out.str(), HasSubstr("nothing was started"));
  EXPECT_TRUE(Pids(piddir_).empty());
}

TEST_F(LaunchSshTest, MissingBinaryOnAHostStopsTheLaunch) {
  LaunchOptions o = Options();
  o.scheduler_binary = Script("s_y.sh", std::string(kRecord));
  o.server_binary = "/no/such/server";
  o.command = {Script("w_y.sh", std::string(kRecord))};
  std::ostringstream out;
  EXPECT_EQ(Launcher(o, &out).Run(), 1);
  EXPECT_THAT(out.str(), HasSubstr("missing /no/such/server"));
  EXPECT_TRUE(Pids(piddir_).empty());
}

TEST_F(LaunchSshTest, SigtermToLaunchStopsTheJob) {
  std::ofstream(dir_ + "/hosts")
      << "127.0.0.1:" << port_ << "\n127.0.0.2:" << port_ << "\n";
  const std::string out = KillLaunchMidJob(
      SIGTERM,
      {"-H", dir_ + "/hosts", "--ssh-config", dir_ + "/ssh_config",
       "--scheduler_host", "127.0.0.1", "--launcher", "ssh"},
      piddir_, NewDir("ssh_term_tmp"));
  EXPECT_THAT(out, HasSubstr("received SIGTERM"));
}

// launch killed with SIGKILL: every ssh session ends, and each remote
// wrapper stops its node and removes its token file by itself.
TEST_F(LaunchSshTest, SigkillToLaunchLeavesNoNodeAndNoTokenFile) {
  std::ofstream(dir_ + "/hosts")
      << "127.0.0.1:" << port_ << "\n127.0.0.2:" << port_ << "\n";
  KillLaunchMidJob(SIGKILL,
                   {"-H", dir_ + "/hosts", "--ssh-config", dir_ + "/ssh_config",
                    "--scheduler_host", "127.0.0.1", "--launcher", "ssh"},
                   piddir_, NewDir("ssh_kill_tmp"));
}

}  // namespace
}  // namespace pstrain
