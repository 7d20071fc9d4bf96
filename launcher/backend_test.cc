// Tests of the backends that need no cluster: the commands they build for a
// plan, their checks before a job starts, and the local backend starting,
// stopping and cleaning up after a trivial node.
#include "launcher/backend.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "launcher/local_backend.h"
#include "launcher/mpi.h"
#include "launcher/slurm_backend.h"
#include "launcher/ssh_backend.h"

namespace pstrain {
namespace launcher {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string TmpDir() {
  const char* t = std::getenv("TEST_TMPDIR");
  return t ? t : "/tmp";
}

JobContext Context(const LaunchOptions* o, std::ostream* out) {
  JobContext c;
  c.options = o;
  c.out = out;
  c.cwd = "/here";
  c.workdir = "/work dir";
  c.node_env = {"A=1", "B=x y"};
  return c;
}

// An ssh job of `servers` + `workers` on `hosts`.
LaunchOptions SshOptions(int servers, int workers, std::vector<Host> hosts) {
  LaunchOptions o;
  o.mode = Mode::kSsh;
  o.num_servers = servers;
  o.num_workers = workers;
  o.hosts = std::move(hosts);
  o.scheduler_binary = "sched";
  o.server_binary = "srv";
  o.command = {"wrk"};
  return o;
}

// A context whose nodes find the usual programs and put their token files
// in the test's directory.
JobContext LocalContext(const LaunchOptions* o, std::ostream* out) {
  JobContext c = Context(o, out);
  c.node_env = {absl::StrCat("TMPDIR=", TmpDir()),
                absl::StrCat("PATH=", std::getenv("PATH"))};
  return c;
}

ProcessSpec Spec(std::vector<std::string> argv) {
  ProcessSpec spec;
  spec.role = "worker";
  spec.host.name = "127.0.0.1";
  spec.argv = std::move(argv);
  return spec;
}

TEST(MakeNodeBackendTest, OneBackendPerMode) {
  LaunchOptions o;
  std::ostringstream out;
  JobContext c = Context(&o, &out);
  o.mode = Mode::kLocal;
  EXPECT_EQ(MakeNodeBackend(c)->name(), "local");
  o.mode = Mode::kSsh;
  EXPECT_EQ(MakeNodeBackend(c)->name(), "ssh");
}

TEST(LocalBackendTest, CommandRunsTheWrapperHere) {
  LaunchOptions o;
  std::ostringstream out;
  LocalBackend local(Context(&o, &out));
  NodeCommand c = local.Command(Spec({"wrk", "--flag=1"}));
  EXPECT_THAT(c.argv, ElementsAre("/bin/sh", "-c", WrapperScript(),
                                  "pstrain-node", "wrk", "--flag=1"));
  ASSERT_GE(c.env.size(), 2u);
  EXPECT_EQ(c.env[0], "A=1");
  EXPECT_EQ(c.env[1], "B=x y");
  for (size_t i = 2; i < c.env.size(); ++i) {
    EXPECT_TRUE(absl::StartsWith(c.env[i], "HOME=") ||
                absl::StartsWith(c.env[i], "USER="))
        << c.env[i];
  }
  EXPECT_EQ(local.DefaultSchedulerHost().value(), "127.0.0.1");
}

// scontrol's one-line node records give each node's address; a record
// without one is refused, quoted.
TEST(SlurmBackendTest, ScontrolNodeLinesGiveAddresses) {
  auto nodes = ParseScontrolNodes(
      "NodeName=n1 Arch=x86_64 CoresPerSocket=1 NodeAddr=10.0.0.1 "
      "NodeHostName=a Port=1\nNodeName=gpu-07 NodeAddr=gpu-07.ib "
      "NodeHostName=gpu-07\n\n");
  ASSERT_TRUE(nodes.ok()) << nodes.status();
  EXPECT_EQ(nodes->size(), 2u);
  EXPECT_EQ(nodes->at("n1"), "10.0.0.1");
  EXPECT_EQ(nodes->at("gpu-07"), "gpu-07.ib");
  auto bad = ParseScontrolNodes("NodeName=n1 State=IDLE\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("without NodeName and NodeAddr: 'NodeName=n1 "
                        "State=IDLE'"));
}

// The plan of a Slurm job becomes one srun step per server and worker on
// its node of the allocation, named after its role, with exactly the node
// environment and the wrapper; nodes bind their node's address.
TEST(SlurmBackendTest, PlanBecomesSrunSteps) {
  LaunchOptions o = SshOptions(
      1, 2, {Host("10.0.0.1", 22, "n1"), Host("10.0.0.2", 22, "n2")});
  o.mode = Mode::kSlurm;
  o.slurm_job_id = "77";
  std::ostringstream out;
  JobContext context = Context(&o, &out);
  context.workdir = "/work dir";
  context.node_env = {"A=1"};
  SlurmBackend slurm(context);
  std::vector<ProcessSpec> plan = PlanProcesses(o, "10.0.0.9:5");
  ASSERT_EQ(plan.size(), 4u);
  EXPECT_EQ(plan[1].Prefix(), "[server 0 n1]");
  EXPECT_EQ(plan[3].Prefix(), "[worker 1 n1]");
  EXPECT_THAT(plan[2].argv, ::testing::Contains("--host=10.0.0.2"));
  const std::vector<std::string> argv = slurm.Command(plan[2]).argv;
  const std::vector<std::string> head = {"srun",
                                         "--jobid=77",
                                         "--nodes=1",
                                         "--ntasks=1",
                                         "--ntasks-per-node=1",
                                         "--nodelist=n2",
                                         "--overlap",
                                         "--quiet",
                                         "--job-name=pstrain-worker-0",
                                         "--chdir=/work dir",
                                         "env",
                                         "-i"};
  ASSERT_GT(argv.size(), head.size());
  EXPECT_TRUE(std::equal(head.begin(), head.end(), argv.begin()));
  EXPECT_THAT(argv, ::testing::Contains("A=1"));
  const auto sh = std::find(argv.begin(), argv.end(), "/bin/sh");
  ASSERT_NE(sh, argv.end());
  EXPECT_EQ(*(sh + 3), "pstrain-node");
  EXPECT_EQ(*(sh + 4), "wrk");
}

// mpirun's tagged output lines go to their rank; its report of the rank
// that ended the job is read from the lines Open MPI 4.1 prints.
TEST(MpiTest, TaggedLinesAndFailureReports) {
  auto t = ParseTaggedLine("[1,3]<stderr>:W1205 x.cc:1] hi [2,3]");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->rank, 3);
  EXPECT_EQ(t->text, "W1205 x.cc:1] hi [2,3]");
  EXPECT_FALSE(ParseTaggedLine("[1,x]<stdout>:a").has_value());
  auto hydra = ParseTaggedLine("[12] I1205 server.cc:40] up");
  ASSERT_TRUE(hydra.has_value());
  EXPECT_EQ(hydra->rank, 12);
  EXPECT_EQ(hydra->text, "I1205 server.cc:40] up");
  EXPECT_FALSE(ParseTaggedLine("[x] a").has_value());
  EXPECT_FALSE(ParseTaggedLine("[-1] a").has_value());
  auto killed = ParseRankExit("pstrain-mpi-exit 3 137");
  ASSERT_TRUE(killed.has_value());
  EXPECT_EQ(killed->rank, 3);
  EXPECT_TRUE(killed->failed);
  EXPECT_EQ(killed->how, "was killed by signal 9 (SIGKILL)");
  auto ok = ParseRankExit("pstrain-mpi-exit 0 0");
  ASSERT_TRUE(ok.has_value());
  EXPECT_FALSE(ok->failed);
  EXPECT_EQ(ParseRankExit("pstrain-mpi-exit 2 1")->how, "exited with status 1");
  EXPECT_FALSE(ParseRankExit("pstrain-mpi-exit x 1").has_value());
  EXPECT_FALSE(
      ParseTaggedLine("mpirun noticed that process rank 1").has_value());
  MpiFailure exit_code;
  for (const char* line :
       {"mpirun detected that one or more processes exited with non-zero "
        "status, thus causing",
        "the job to be terminated. The first process "
        "to do so was:",
        "", "  Process name: [[50183,1],2]", "  Exit code:    3"}) {
    exit_code.Scan(line);
  }
  EXPECT_EQ(exit_code.rank, 2);
  EXPECT_EQ(exit_code.how, "exited with status 3");
  MpiFailure signal;
  signal.Scan(
      "mpirun noticed that process rank 1 with PID 0 on node vm exited on "
      "signal 9 (Killed).");
  EXPECT_EQ(signal.rank, 1);
  EXPECT_EQ(signal.how, "was killed by signal 9 (Killed)");
}

// The job's processes become the ranks of one mpirun, round-robin over the
// hosts (the scheduler, rank 0, on the first), each rank's argv in the
// dispatch script.
TEST(MpiTest, PlanBecomesOneMpirun) {
  LaunchOptions o = SshOptions(1, 2, {Host("10.0.0.1"), Host("10.0.0.2")});
  o.mode = Mode::kMpi;
  o.mpi_args = {"--mca", "btl_tcp_if_include", "10.0.0.0/24"};
  o.ssh_config = "/etc/cfg";
  std::vector<ProcessSpec> ranks = PlanProcesses(o, "10.0.0.1:7");
  ASSERT_EQ(ranks.size(), 4u);
  EXPECT_EQ(ranks[0].host.name, "10.0.0.1");  // Scheduler.
  EXPECT_EQ(ranks[1].host.name, "10.0.0.2");  // Server 0.
  EXPECT_EQ(ranks[2].host.name, "10.0.0.1");  // Worker 0.
  EXPECT_THAT(ranks[2].argv, ::testing::Contains("--host=10.0.0.1"));
  std::vector<std::string> argv =
      MpirunCommand(o, MpiFlavor::kOpenMpi, ranks, {"A=1"}, "/w");
  EXPECT_EQ(argv[0], "mpirun");
  EXPECT_THAT(argv, ::testing::Contains("10.0.0.1:2,10.0.0.2:2"));
  EXPECT_THAT(argv, ::testing::Contains("ssh -F /etc/cfg"));
  EXPECT_THAT(argv, ::testing::Contains("btl_tcp_if_include"));
  const std::string& script = argv[argv.size() - 2];
  EXPECT_EQ(argv.back(), "pstrain-mpi");
  EXPECT_THAT(script, HasSubstr("OMPI_COMM_WORLD_RANK"));
  EXPECT_THAT(script, HasSubstr(" 0) set -- sched "));
  EXPECT_THAT(script, HasSubstr(" 1) set -- srv "));
  EXPECT_THAT(script, HasSubstr(" 3) set -- wrk "));
  EXPECT_THAT(script, HasSubstr("PMI_RANK"));
  EXPECT_THAT(script, HasSubstr("setpriv --pdeathsig TERM env -i"));
  EXPECT_THAT(script, HasSubstr(" A=1 "));
  EXPECT_THAT(script, HasSubstr("echo \"pstrain-mpi-exit $r $rc\""));
  // MPICH's Hydra: its own options, the same script.
  std::vector<std::string> hydra =
      MpirunCommand(o, MpiFlavor::kHydra, ranks, {"A=1"}, "/w");
  EXPECT_THAT(hydra, ::testing::Contains("-prepend-rank"));
  EXPECT_THAT(hydra, ::testing::Contains("10.0.0.1,10.0.0.2"));
  EXPECT_THAT(hydra, ::testing::Contains("-launcher-exec"));
  EXPECT_EQ(hydra[hydra.size() - 2], script);
}

// The plan of an ssh job becomes one ssh command per server and worker,
// each to its host, with the node environment, the work directory and the
// wrapper in one quoted remote command.
TEST(SshBackendTest, PlanBecomesSshCommands) {
  LaunchOptions o = SshOptions(1, 2, {{"a", 22}, {"b", 2200}});
  o.command = {"wrk", "it's"};
  o.ssh_config = "/etc/cfg";
  o.ssh_connect_timeout = absl::Seconds(7);
  std::ostringstream out;
  SshBackend ssh(Context(&o, &out));
  std::vector<ProcessSpec> plan = PlanProcesses(o, "h:1");
  ASSERT_EQ(plan.size(), 4u);
  std::vector<std::vector<std::string>> commands;
  for (size_t i = 1; i < plan.size(); ++i) {
    commands.push_back(ssh.Command(plan[i]).argv);
  }
  const std::vector<std::string> base = {"ssh",
                                         "-F",
                                         "/etc/cfg",
                                         "-o",
                                         "BatchMode=yes",
                                         "-o",
                                         "ConnectTimeout=7",
                                         "-o",
                                         "ServerAliveInterval=5",
                                         "-o",
                                         "ServerAliveCountMax=3",
                                         "-p"};
  for (const auto& argv : commands) {
    ASSERT_EQ(argv.size(), base.size() + 3);
    EXPECT_TRUE(std::equal(base.begin(), base.end(), argv.begin()));
  }
  EXPECT_EQ(commands[0][12], "22");  // server 0 on a.
  EXPECT_EQ(commands[0][13], "a");
  EXPECT_EQ(commands[1][12], "2200");  // worker 0 on b.
  EXPECT_EQ(commands[1][13], "b");
  EXPECT_EQ(commands[2][13], "a");  // worker 1 on a.
  const std::string& remote = commands[1][14];
  EXPECT_THAT(remote, StartsWith("cd '/work dir' && exec env -i HOME=\"$HOME\" "
                                 "USER=\"$USER\" A=1 'B=x y' /bin/sh -c '"));
  EXPECT_THAT(remote,
              HasSubstr(absl::StrCat("' pstrain-node wrk 'it'\\''s' ",
                                     "--scheduler_address=h:1 --num_workers=2 "
                                     "--num_servers=1 --host=b")));
  EXPECT_THAT(commands[0][14], HasSubstr("pstrain-node srv "));
}

TEST(LocalBackendTest, PreflightNamesAMissingBinary) {
  LaunchOptions o;
  std::ostringstream out;
  LocalBackend local(Context(&o, &out));
  EXPECT_TRUE(local.Preflight({Spec({"sh"}), Spec({"/bin/true", "x"})}).ok());
  absl::Status s =
      local.Preflight({Spec({"/bin/true"}), Spec({"/no/such/binary"})});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("binary '/no/such/binary' is not an executable here"));
}

// A host whose ssh port refuses connections fails the check, and the table
// says which host and why.
TEST(SshBackendTest, PreflightReportsAnUnreachableHost) {
  // Nothing listens on port 1 (tcpmux) here.
  LaunchOptions o = SshOptions(1, 1, {{"127.0.0.1", 1}});
  o.ssh_config = "/dev/null";
  o.ssh_connect_timeout = absl::Seconds(2);
  std::ostringstream out;
  SshBackend ssh(Context(&o, &out));
  std::vector<ProcessSpec> plan = PlanProcesses(o, "h:1");
  plan.erase(plan.begin());  // The scheduler is the local backend's.
  absl::Status s = ssh.Preflight(plan);
  EXPECT_EQ(s.message(), "host check failed; nothing was started");
  EXPECT_THAT(out.str(), HasSubstr("HOST"));
  EXPECT_THAT(out.str(), HasSubstr("1s+1w"));
  EXPECT_THAT(out.str(), HasSubstr("unreachable: ssh"));
}

// Reads `p`'s output until `want` and the wrapper's report (which may come
// after the node's first line) appear, or 10 s pass.
std::string ReadUntil(Subprocess* p, const std::string& want) {
  std::string out;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while ((out.find(want) == std::string::npos ||
          out.find("pstrain-node-pid ") == std::string::npos) &&
         absl::Now() < deadline) {
    if (!p->ReadOutput(&out)) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return out;
}

// Waits up to 10 s for `p` to exit; returns whether it did.
bool WaitExit(Subprocess* p) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  std::string ignored;
  while (!p->Poll() && absl::Now() < deadline) {
    p->ReadOutput(&ignored);
    absl::SleepFor(absl::Milliseconds(10));
  }
  return p->exited();
}

std::optional<NodeReport> FindReport(const std::string& output) {
  for (absl::string_view line : absl::StrSplit(output, '\n')) {
    if (auto r = ParseWrapperReport(line)) return r;
  }
  return std::nullopt;
}

bool Exists(const std::string& path) { return access(path.c_str(), F_OK) == 0; }

// The node reads the token from the file its wrapper made; the wrapper
// reports the node; Stop() ends node and wrapper, and the file is gone.
TEST(LocalBackendTest, StartsAndStopsATrivialNode) {
  LaunchOptions o;
  std::ostringstream out;
  LocalBackend local(LocalContext(&o, &out));
  const ProcessSpec spec =
      Spec({"/bin/sh", "-c",
            "echo \"token=$(cat \"${0#--token_file=}\")\"; exec sleep 60"});
  auto p = local.Start(spec, "s3cret");
  ASSERT_TRUE(p.ok()) << p.status();
  const std::string output = ReadUntil(&*p, "token=s3cret");
  EXPECT_THAT(output, HasSubstr("token=s3cret"));
  std::optional<NodeReport> report = FindReport(output);
  ASSERT_TRUE(report.has_value()) << output;
  ASSERT_GT(report->pid, 0);
  EXPECT_THAT(report->token_file, StartsWith(TmpDir() + "/pstrain-token."));
  EXPECT_TRUE(Exists(report->token_file));

  local.Stop(&*p, /*exited=*/false);
  ASSERT_TRUE(WaitExit(&*p));
  EXPECT_FALSE(p->succeeded());  // The node was stopped.
  EXPECT_TRUE(kill(report->pid, 0) != 0 && errno == ESRCH);
  EXPECT_FALSE(Exists(report->token_file));
  local.CleanUp({StartedNode{spec, *report}}, /*failed=*/true);
}

// A wrapper killed with SIGKILL cannot remove its token file: CleanUp()
// does.
TEST(LocalBackendTest, CleanUpRemovesTheTokenFileOfAKilledWrapper) {
  LaunchOptions o;
  std::ostringstream out;
  LocalBackend local(LocalContext(&o, &out));
  const ProcessSpec spec = Spec({"/bin/sh", "-c", "echo up; exec sleep 60"});
  auto p = local.Start(spec, "t");
  ASSERT_TRUE(p.ok()) << p.status();
  const std::string output = ReadUntil(&*p, "up\n");
  std::optional<NodeReport> report = FindReport(output);
  ASSERT_TRUE(report.has_value()) << output;
  p->SignalGroup(SIGKILL);
  ASSERT_TRUE(WaitExit(&*p));
  ASSERT_TRUE(Exists(report->token_file));
  local.CleanUp({StartedNode{spec, *report}}, /*failed=*/true);
  EXPECT_FALSE(Exists(report->token_file));
}

}  // namespace
}  // namespace launcher
}  // namespace pstrain
