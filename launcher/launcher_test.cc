// Tests of the launcher's local mode with small shell programs standing in
// for the scheduler, server and worker binaries (the real binaries are
// exercised in tests/). Checks placement, the token hand-over, output
// prefixes, failure propagation and that no process outlives the job.
#include "launcher/launcher.h"

#include <signal.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "launcher/subprocess.h"
#include "util/test_util.h"

namespace pstrain {
namespace launcher {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string TmpDir() {
  const char* t = std::getenv("TEST_TMPDIR");
  return t ? t : "/tmp";
}

// Writes an executable shell script and returns its path.
std::string Script(const std::string& name, const std::string& body) {
  std::string path = absl::StrCat(TmpDir(), "/", name);
  std::ofstream(path) << "#!/bin/sh\n" << body;
  chmod(path.c_str(), 0755);
  return path;
}

// Every node records its pid in $PIDDIR and prints its token and args.
constexpr char kRecord[] =
    "echo $$ > \"$PIDDIR/$$\"\n"
    "for a; do case $a in --token_file=*) tf=${a#--token_file=};; esac; done\n"
    "echo \"token=$(cat \"$tf\") mode=$(stat -c %a \"$tf\") "
    "tmpdir=${TMPDIR:-unset} args=$*\"\n";

// The names of the files in `dir`.
std::vector<std::string> Files(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    names.push_back(e.path().filename().string());
  }
  return names;
}

std::vector<int> RecordedPids(const std::string& dir) {
  std::vector<int> pids;
  for (const std::string& name : Files(dir)) {
    int pid;
    if (absl::SimpleAtoi(name, &pid)) pids.push_back(pid);
  }
  return pids;
}

LaunchOptions LocalOptions(const std::string& piddir) {
  LaunchOptions o;
  o.mode = Mode::kLocal;
  o.num_workers = 2;
  o.num_servers = 1;
  o.env = {absl::StrCat("PIDDIR=", piddir)};
  o.stop_grace = absl::Seconds(2);
  return o;
}

std::string NewDir(const std::string& name) {
  std::string d = absl::StrCat(TmpDir(), "/", name);
  mkdir(d.c_str(), 0700);
  return d;
}

TEST(PlanTest, ServersThenWorkersRoundRobinOverHosts) {
  LaunchOptions o;
  o.mode = Mode::kSsh;
  o.num_servers = 2;
  o.num_workers = 3;
  o.hosts = {{"a", 22}, {"b", 2200}};
  o.scheduler_binary = "sched";
  o.server_binary = "srv";
  o.command = {"wrk", "--flagfile=x"};
  auto plan = PlanProcesses(o, "h:1");
  ASSERT_EQ(plan.size(), 6u);
  EXPECT_EQ(plan[0].role, "scheduler");
  EXPECT_FALSE(plan[0].remote);
  EXPECT_EQ(plan[1].Prefix(), "[server 0 a]");
  EXPECT_EQ(plan[2].Prefix(), "[server 1 b]");
  EXPECT_EQ(plan[3].Prefix(), "[worker 0 a]");
  EXPECT_EQ(plan[4].Prefix(), "[worker 1 b]");
  EXPECT_EQ(plan[5].Prefix(), "[worker 2 a]");
  EXPECT_EQ(plan[4].host.ssh_port, 2200);
  EXPECT_THAT(
      plan[4].argv,
      ::testing::ElementsAre("wrk", "--flagfile=x", "--scheduler_address=h:1",
                             "--num_workers=3", "--num_servers=2", "--host=b"));
}

// A local job of `servers` servers and `workers` workers whose binaries are
// "sched", "srv" and "wrk".
LaunchOptions SmallJob(int servers, int workers) {
  LaunchOptions o;
  o.num_servers = servers;
  o.num_workers = workers;
  o.scheduler_binary = "sched";
  o.server_binary = "srv";
  o.command = {"wrk"};
  return o;
}

TEST(PlanTest, StatusPortGoesToTheSchedulerBeforeItsArgs) {
  LaunchOptions o = SmallJob(1, 1);
  o.scheduler_args = {"--status_bind=0.0.0.0"};
  EXPECT_THAT(PlanProcesses(o, "h:1")[0].argv,
              ::testing::Not(
                  ::testing::Contains(::testing::HasSubstr("--status_port"))));
  o.status_port = 0;
  EXPECT_THAT(
      PlanProcesses(o, "h:1")[0].argv,
      ::testing::ElementsAre("sched", "--scheduler_address=h:1",
                             "--num_workers=1", "--num_servers=1",
                             "--status_port=0", "--status_bind=0.0.0.0"));
  o.status_port = -2;
  EXPECT_THAT(std::string(ValidateLaunchOptions(o).message()),
              HasSubstr("--status_port -2: must be in [-1, 65535]"));
}

TEST(PlanTest, TimelineGivesEveryNodeItsPart) {
  LaunchOptions o = SmallJob(1, 2);
  o.timeline = "/t/trace.json";
  o.timeline_steps = "3:5";
  const auto plan = PlanProcesses(o, "h:1");
  ASSERT_EQ(plan.size(), 4u);
  EXPECT_THAT(
      plan[0].argv,
      ::testing::Not(::testing::Contains(::testing::HasSubstr("--timeline"))));
  EXPECT_THAT(
      plan[1].argv,
      ::testing::Contains("--timeline=/t/trace.json.parts/server-0.json"));
  EXPECT_THAT(
      plan[3].argv,
      ::testing::Contains("--timeline=/t/trace.json.parts/worker-1.json"));
  EXPECT_THAT(plan[3].argv, ::testing::Contains("--timeline_steps=3:5"));
  o.timeline_steps = "5:2";
  EXPECT_THAT(std::string(ValidateLaunchOptions(o).message()),
              HasSubstr("--timeline_steps 5:2: must be A:B"));
}

TEST(PlanTest, ReplaceModeTellsTheSchedulerAndHintsTheWorkersRanks) {
  LaunchOptions o = SmallJob(1, 2);
  EXPECT_THAT(
      PlanProcesses(o, "h:1")[2].argv,
      ::testing::Not(::testing::Contains(::testing::HasSubstr("--rank_hint"))));
  o.replace_workers = true;
  o.replace_timeout = absl::Seconds(7);
  const auto plan = PlanProcesses(o, "h:1");
  ASSERT_EQ(plan.size(), 4u);
  EXPECT_THAT(plan[0].argv, ::testing::Contains("--recovery=replace"));
  EXPECT_THAT(plan[0].argv, ::testing::Contains("--replace_timeout_s=7"));
  EXPECT_THAT(
      plan[1].argv,
      ::testing::Not(::testing::Contains(::testing::HasSubstr("--rank_hint"))));
  EXPECT_THAT(plan[2].argv, ::testing::Contains("--rank_hint=0"));
  EXPECT_THAT(plan[3].argv, ::testing::Contains("--rank_hint=1"));
  EXPECT_TRUE(ValidateLaunchOptions(o).ok());
  o.replace_timeout = absl::Seconds(541);
  EXPECT_THAT(std::string(ValidateLaunchOptions(o).message()),
              HasSubstr("--replace_timeout_s 541: must be in (0, 540]"));
  o.replace_timeout = absl::Seconds(60);
  o.mode = Mode::kMpi;
  EXPECT_THAT(std::string(ValidateLaunchOptions(o).message()),
              HasSubstr("--recovery replace: works with --launcher local and "
                        "ssh only"));
}

TEST(ShellQuoteTest, SurvivesTheShell) {
  for (std::string s :
       {std::string("plain"), std::string("a b"), std::string("it's"),
        std::string("$HOME `x` \"q\""), std::string("")}) {
    auto p =
        Subprocess::Start({"/bin/sh", "-c", "printf %s " + ShellQuote(s)}, {});
    ASSERT_TRUE(p.ok());
    p->CloseStdin();
    std::string out;
    while (p->ReadOutput(&out) || !p->Poll()) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    EXPECT_EQ(out, s);
  }
}

TEST(LauncherLocalTest, SuccessfulJobStreamsPrefixedOutputAndHidesToken) {
  const std::string piddir = NewDir("ok_pids");
  const std::string tmpdir = NewDir("ok_tmp");
  setenv("TMPDIR", TmpDir().c_str(), 1);  // The launcher's own.
  LaunchOptions o = LocalOptions(piddir);
  o.env.push_back("TMPDIR=" + tmpdir);
  o.scheduler_binary = Script("sched_ok.sh", std::string(kRecord) + "exit 0\n");
  o.server_binary = Script("server_ok.sh", std::string(kRecord) + "exit 0\n");
  o.command = {Script("worker_ok.sh", std::string(kRecord) + "exit 0\n"),
               "--flagfile=job.flags"};
  std::ostringstream out;
  Launcher launcher(o, &out);
  EXPECT_EQ(launcher.Run(), 0) << out.str();
  const std::string text = out.str();
  EXPECT_THAT(text, HasSubstr("[scheduler 0 127.0.0.1] token="));
  EXPECT_THAT(text, HasSubstr("[server 0 127.0.0.1] token="));
  EXPECT_THAT(text, HasSubstr("[worker 1 127.0.0.1] token="));
  EXPECT_THAT(text,
              HasSubstr("--flagfile=job.flags --scheduler_address=127.0.0.1:"));
  EXPECT_THAT(text, HasSubstr("mode=600"));  // Token file readable by us only.
  // --env TMPDIR replaces the launcher's TMPDIR, and the token files went
  // there (and are gone).
  EXPECT_THAT(text, HasSubstr("tmpdir=" + tmpdir + " args="));
  EXPECT_THAT(text, HasSubstr("--token_file=" + tmpdir + "/pstrain-token."));
  EXPECT_THAT(Files(tmpdir), ::testing::IsEmpty());
  EXPECT_THAT(text, HasSubstr("every process exited 0"));
  // Every node saw the same 48-hex-digit token, and no command line held it.
  std::vector<std::string> tokens;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    size_t at = line.find("token=");
    if (at == absl::string_view::npos) continue;
    std::string tok(line.substr(at + 6, 48));
    tokens.push_back(tok);
    EXPECT_THAT(std::string(line.substr(line.find("args="))),
                Not(HasSubstr(tok)));
  }
  ASSERT_EQ(tokens.size(), 4u);
  for (const auto& t : tokens) EXPECT_EQ(t, tokens[0]);
  EXPECT_THAT(text, Not(HasSubstr("pstrain-node-pid")));
}

TEST(LauncherLocalTest, FailingWorkerStopsEveryProcessAndIsNamed) {
  const std::string piddir = NewDir("fail_pids");
  const std::string tmpdir = NewDir("fail_tmp");
  LaunchOptions o = LocalOptions(piddir);
  // The job's own TMPDIR (overriding the launcher's), where the wrappers
  // write the token files.
  o.env.push_back("TMPDIR=" + tmpdir);
  // Scheduler and server would run for a minute; a stubborn server even
  // ignores SIGTERM, so it takes SIGKILL after stop_grace.
  o.scheduler_binary =
      Script("sched_long.sh", std::string(kRecord) + "sleep 60\n");
  o.server_binary = Script(
      "server_stubborn.sh",
      std::string(kRecord) + "trap '' TERM\nwhile :; do sleep 1; done\n");
  o.command = {Script(
      "worker_fail.sh",
      std::string(kRecord) + "sleep 0.3\necho 'bad thing' >&2\nexit 3\n")};
  std::ostringstream out;
  Launcher launcher(o, &out);
  const absl::Time start = absl::Now();
  EXPECT_EQ(launcher.Run(), 1);
  const absl::Duration took = absl::Now() - start;
  const std::string text = out.str();
  EXPECT_THAT(text, HasSubstr("bad thing"));
  EXPECT_THAT(text, HasSubstr("job failed: [worker "));
  EXPECT_THAT(text, HasSubstr("] exited with status 3"));
  EXPECT_LT(took, absl::Seconds(20)) << text;
  // Nothing outlives the job: every recorded node pid is gone.
  std::vector<int> pids = RecordedPids(piddir);
  EXPECT_EQ(pids.size(), 4u) << text;
  for (int pid : pids) {
    // A killed process may stay a zombie for a moment until whoever
    // inherited it reaps it: that is gone too.
    auto gone = [pid] {
      if (kill(pid, 0) != 0 && errno == ESRCH) return true;
      std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
      std::string text((std::istreambuf_iterator<char>(stat)), {});
      const size_t paren = text.rfind(')');
      return paren != std::string::npos && paren + 2 < text.size() &&
             text[paren + 2] == 'Z';
    };
    EXPECT_TRUE(WaitFor(gone, absl::Seconds(5))) << "pid " << pid << " alive";
  }
  // No token file is left, not even the stubborn server's, whose wrapper
  // took SIGKILL after the grace.
  EXPECT_THAT(Files(tmpdir), ::testing::IsEmpty()) << text;
}

TEST(LauncherLocalTest, MissingBinaryStopsBeforeStarting) {
  LaunchOptions o = LocalOptions(NewDir("missing_pids"));
  o.scheduler_binary = "/no/such/scheduler";
  o.server_binary = "/bin/true";
  o.command = {"/bin/true"};
  std::ostringstream out;
  Launcher launcher(o, &out);
  EXPECT_EQ(launcher.Run(), 1);
  EXPECT_THAT(out.str(),
              HasSubstr("'/no/such/scheduler' is not an executable"));
}

TEST(LauncherLocalTest, BadCountsAreRefused) {
  LaunchOptions o;
  o.num_workers = 0;
  o.num_servers = 1;
  o.command = {"/bin/true"};
  std::ostringstream out;
  EXPECT_EQ(Launcher(o, &out).Run(), 1);
  EXPECT_THAT(out.str(), HasSubstr("--num_workers 0: must be >= 1 (-n)"));
}

// The wrapper's delayed SIGKILL (5 s after the SIGTERM it sends when its
// stdin closes) goes to the node only, never to a process that took the
// node's PID meanwhile. Here the wrapper itself is gone (SIGKILL), the node
// exits at the SIGTERM, and its PID goes to an unrelated process before the
// 5 s are over: that process must live. Runs in a PID namespace of its own
// (unshare, as root), where the next PID can be chosen
// (/proc/sys/kernel/ns_last_pid), with tini as its init to reap orphans;
// skips, saying why, where that cannot be had.
TEST(WrapperTest, DelayedKillSparesAProcessThatReusesTheNodesPid) {
  const std::string dir = NewDir("pid_reuse");
  const std::string node =
      Script("pid_reuse_node.sh",
             "trap 'exit 0' TERM\nwhile :; do sleep 0.05; done\n");
  LaunchOptions o;
  ProcessSpec spec;
  const std::string wrapper = WrapperCommand(o, spec, {}, dir)[2];
  const std::string driver = R"sh(W=$1; d=$2; node=$3
mkfifo "$d/in" || exit 77
sh -c "$W" pstrain-node "$node" < "$d/in" > "$d/out" 2>&1 &
wrapper=$!
exec 8> "$d/in"
echo token >&8
i=0
while ! grep -q pstrain-node-pid "$d/out"; do
  i=$((i+1)); [ $i -lt 200 ] || { echo "the node did not start"; exit 1; }; sleep 0.05
done
np=$(sed -n 's/^pstrain-node-pid \([0-9]*\).*/\1/p' "$d/out")
kill -KILL $wrapper
sleep 0.2
exec 8>&-
i=0
while kill -0 $np 2>/dev/null; do
  i=$((i+1)); [ $i -lt 200 ] || { echo "the node did not exit"; exit 1; }; sleep 0.05
done
echo $((np - 1)) > /proc/sys/kernel/ns_last_pid || exit 77
sleep 30 &
v=$!
[ "$v" = "$np" ] || { echo "PID $np was not reused (got $v)"; exit 77; }
sleep 7
if kill -0 $v 2>/dev/null; then echo "reuser alive"; kill $v; else echo "reuser killed"; fi
)sh";
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) env.push_back(*e);
  auto p = Subprocess::Start(
      {"unshare", "--pid", "--fork", "--mount-proc", "tini", "--", "/bin/sh",
       "-c", driver, "driver", wrapper, dir, node},
      env);
  if (!p.ok()) GTEST_SKIP() << "cannot run unshare: " << p.status();
  p->CloseStdin();
  std::string out;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while ((p->ReadOutput(&out) || !p->Poll()) && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_TRUE(p->exited()) << out;
  if (out.find("reuser") == std::string::npos) {
    GTEST_SKIP() << "no PID namespace with a chosen next PID here ("
                 << p->DescribeExit() << "): " << out;
  }
  EXPECT_THAT(out, HasSubstr("reuser alive"));
}

}  // namespace
}  // namespace launcher
}  // namespace pstrain
