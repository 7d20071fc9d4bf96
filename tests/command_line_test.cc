// The command lines of the binaries (worker, scheduler, server, launch,
// kv_bench, mnist2rec): bad values and unknown flags, on the command line
// and in flag files, end the program with one line naming the flag, its
// value and what is allowed, and exit code 2 (not a glog FATAL's 134 and
// stack trace); failures at run time exit 1; --help lists the program's own
// flags, not glog's; and a worker that waits in vain for its job says who
// is missing.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker_util.h"

namespace pstrain {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;
using testing_util::Runfile;
using testing_util::Shell;

std::string Write(const std::string& name, const std::string& text) {
  const std::string path = testing_util::TestTmp() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

// Expects `command` to exit 2 with exactly one line of output that starts
// with `line`.
void ExpectUsageError(const std::string& command, const std::string& line) {
  std::string out;
  EXPECT_EQ(Shell(command, &out), 2) << command << "\n" << out;
  EXPECT_THAT(out, StartsWith(line)) << command;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << command << "\n"
                                                         << out;
  EXPECT_THAT(out, Not(HasSubstr("stack trace"))) << command;
}

TEST(CommandLineTest, BadValuesEndWithOneLineAndExitCode2) {
  const std::string worker =
      Runfile("worker/worker") + " --benchmark --network=mlp ";
  const std::string scheduler =
      Runfile("scheduler/scheduler") + " --scheduler_address=127.0.0.1:0 ";
  const std::string server =
      Runfile("server/server") + " --scheduler_address=127.0.0.1:9 ";
  const std::string launch = Runfile("tools/launch");
  const std::string hosts = Write("bad_hosts", "# hosts\nhost1:99999\n");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {worker + "--top_k=1",
       "worker: --top_k 1: must be 0 (off) or in [2, --num_classes 10]"},
      {worker + "--batch_size=abc",
       "worker: --batch_size abc: must be an integer in [-2147483648, "
       "2147483647]"},
      {worker + "--batch_size=2000000000",
       "worker: --batch_size 2000000000: must be in [1, 1048576]"},
      // Refused before anything of that size is allocated.
      {worker + "--network=resnet --num_layers=50 --image_shape=3,224,224 "
                "--batch_size=100000",
       "worker: --batch_size 100000: a training step needs at least "},
      {worker + "--kv_store=dist_sync --scheduler_address=127.0.0.1:9 "
                "--heartbeat_timeout_s=-1",
       "worker: --heartbeat_timeout_s -1: must be in (0, 86400]"},
      {worker + "--kv_store=dist_sync",
       "worker: --scheduler_address '': must be host:port"},
      {worker + "stray", "worker: unexpected argument 'stray'"},
      {Runfile("worker/worker") + " --network=mlp",
       "worker: --data_train '': required (or --benchmark)"},
      {scheduler + "--num_workers=0",
       "scheduler: --num_workers 0: must be >= 1"},
      {scheduler + "--heartbeat_timeout_s=-1",
       "scheduler: --heartbeat_timeout_s -1: must be in (0, 86400]"},
      {scheduler + "--heartbeat_interval_s=10",
       "scheduler: --heartbeat_timeout_s 10: must be greater than "
       "--heartbeat_interval_s 10"},
      {Runfile("scheduler/scheduler"),
       "scheduler: --scheduler_address '': must be host:port"},
      {scheduler + "--status_port=70000",
       "scheduler: --status_port 70000: must be in [-1, 65535]"},
      {server + "--token_file=/no/such/token",
       "server: --token_file /no/such/token: No such file"},
      {server + "--port=70000", "server: --port 70000: must be in [0, 65535]"},
      {Runfile("server/server"),
       "server: --scheduler_address '': must be host:port"},
      {launch + " -n 1 --launcher foo -- /bin/true",
       "launch: --launcher foo: must be ssh, slurm, mpi or local"},
      {"env -u SLURM_JOB_ID " + launch + " -n 1 --launcher slurm -- /bin/true",
       "launch: --launcher slurm runs inside a Slurm allocation, and "
       "SLURM_JOB_ID / SLURM_JOB_NODELIST are not set: run it inside salloc "
       "or an sbatch script"},
      {launch + " -n 1 --launcher slurm -H " + hosts + " -- /bin/true",
       "launch: --hostfile " + hosts +
           ": is for --launcher ssh; slurm runs "
           "on the allocation's nodes"},
      {launch + " -n 0 -- /bin/true",
       "launch: --num_workers 0: must be >= 1 (-n)"},
      {launch + " -n 1 --stop_grace_s=-1 -- /bin/true",
       "launch: --stop_grace_s -1: must be in [0, 3600]"},
      {launch + " -n 1 -H " + hosts + " -- /bin/true",
       "launch: " + hosts +
           ":2: bad port '99999' in hosts file line 'host1:99999'"},
      {launch + " -n 1 -H /no/such/hosts -- /bin/true",
       "launch: open hosts file /no/such/hosts: "},
      {Runfile("tools/kv_bench") + " --heartbeat_timeout_s=-1",
       "kv_bench: --heartbeat_timeout_s -1: must be in (0, 86400]"},
  };
  for (const auto& [command, line] : cases) ExpectUsageError(command, line);
}

// gflags alone skips an unknown flag in a flag file without a word.
// MXNet's variables are checked like flags: a binary started for another
// role, or a variable that makes no sense, ends it with one line naming
// the variable.
TEST(CommandLineTest, BadDmlcVariablesEndWithOneLineAndExitCode2) {
  const std::string worker = Runfile("worker/worker") +
                             " --benchmark --network=mlp --kv_store=dist_sync";
  ExpectUsageError("DMLC_ROLE=server " + worker,
                   "worker: environment variable DMLC_ROLE='server', but this "
                   "is the worker binary: start `server` for that role");
  ExpectUsageError(
      "DMLC_ROLE=scheduler DMLC_PS_ROOT_URI=127.0.0.1 DMLC_PS_ROOT_PORT=x " +
          Runfile("scheduler/scheduler"),
      "scheduler: environment variable DMLC_PS_ROOT_PORT='x': must be in "
      "[1, 65535]");
  ExpectUsageError("DMLC_INTERFACE=no-such-if0 " + Runfile("server/server"),
                   "server: environment variable DMLC_INTERFACE='no-such-if0'"
                   ": no such interface");
  // A flag wins over its variable, said so (here the flag's value is
  // refused; the variable's would have been taken).
  std::string out;
  EXPECT_EQ(Shell("DMLC_NUM_WORKER=2 DMLC_PS_ROOT_URI=127.0.0.1 "
                  "DMLC_PS_ROOT_PORT=9 " +
                      Runfile("server/server") + " --num_workers=0",
                  &out),
            2)
      << out;
  EXPECT_THAT(out, HasSubstr("--num_workers=0 (given) wins over "
                             "DMLC_NUM_WORKER=2\nserver: --num_workers 0: "
                             "must be >= 1\n"));
}

TEST(CommandLineTest, UnknownFlagsAreRefusedInFlagFilesAndOnTheCommandLine) {
  const std::string job =
      Write("typo.flags",
            "# a job\n--network=mlp\n--batch_sise=32\n--num_epochs=1\n");
  ExpectUsageError(
      absl::StrCat(Runfile("worker/worker"), " --flagfile=", job, " --dry_run"),
      absl::StrCat(
          "worker: ", job,
          ":3: unknown flag --batch_sise (did you mean --batch_size?)"));
  const std::string spaced = Write("spaced.flags", "--network mlp\n");
  ExpectUsageError(
      absl::StrCat(Runfile("worker/worker"), " --flagfile=", spaced,
                   " --dry_run"),
      absl::StrCat("worker: ", spaced, ":1: '--network mlp' is not a flag"));
  const std::string cluster = Write("cluster.flags", "--num_wrokers=2\n");
  ExpectUsageError(
      absl::StrCat(Runfile("scheduler/scheduler"), " --flagfile=", cluster),
      absl::StrCat("scheduler: ", cluster, ":1: unknown flag --num_wrokers"));
  ExpectUsageError(Runfile("worker/worker") + " --benchmark --lr-stepz=3",
                   "worker: unknown flag --lr_stepz");
  ExpectUsageError(Runfile("tools/kv_bench") + " --itters=3",
                   "kv_bench: unknown flag --itters (did you mean --iters?)");
  ExpectUsageError(
      Runfile("tools/launch") + " -n 1 --stop-grace=3 -- /bin/true",
      "launch: unknown flag --stop_grace");
  ExpectUsageError(Runfile("tools/mnist2rec") + " --imgaes=x",
                   "mnist2rec: unknown flag --imgaes");
  // MXNet's dashed names, --no-bool and `--bool 1` work, in files and on
  // the command line.
  const std::string dashed =
      Write("dashed.flags",
            "--network=mlp\n--batch-size=32\n--no-shuffle\n--cpu-devices=2\n");
  std::string out;
  EXPECT_EQ(Shell(absl::StrCat(Runfile("worker/worker"), " --flagfile=", dashed,
                               " --dry-run 1 --num-epochs 2"),
                  &out),
            0)
      << out;
  EXPECT_THAT(out, HasSubstr("batch_size 32 on 2 device(s)"));
}

TEST(CommandLineTest, HelpListsTheToolsOwnFlagsOnly) {
  struct Case {
    std::string binary;
    std::vector<std::string> listed, not_listed;
  };
  const std::vector<Case> cases = {
      {"worker/worker",
       {"--batch_size (int32, default 64)",
        "--start_timeout_s (double, default 120)",
        "--host (string, default 127.0.0.1)"},
       {}},
      {"scheduler/scheduler",
       {"--scheduler_address (string",
        "--heartbeat_timeout_s (double, default 10)"},
       {"--host (", "--batch_size"}},
      {"server/server",
       {"--shm_bytes (int64", "--start_timeout_s (double, default 120)"},
       {}},
      {"tools/launch",
       {"--num_workers (int32, default 0)", "--stop_grace_s"},
       {"--start_timeout_s"}},
      {"tools/kv_bench",
       {"--value_bytes (string", "--scheduler_address (string"},
       {}},
      {"tools/mnist2rec", {"--images (string"}, {}},
  };
  for (const Case& c : cases) {
    std::string out;
    EXPECT_EQ(Shell(Runfile(c.binary) + " --help", &out), 0) << c.binary << "\n"
                                                             << out;
    for (const std::string& s : c.listed)
      EXPECT_THAT(out, HasSubstr(s)) << c.binary;
    for (const std::string& s : c.not_listed)
      EXPECT_THAT(out, Not(HasSubstr(s))) << c.binary;
    // glog's and gflags' own flags are not the tool's.
    for (const char* s : {"--logtostderr (", "--vmodule (", "--v (",
                          "--flagfile (", "--helpxml"}) {
      EXPECT_THAT(out, Not(HasSubstr(s))) << c.binary;
    }
  }
}

// The worker binary as one of two workers of a job whose second worker
// never comes: the scheduler gives up after its --start_timeout_s, and the
// worker, which waits longer, reports the scheduler's verdict naming who is
// missing, and exits 1.
TEST(CommandLineTest, WorkerReportsWhoIsMissingAtTheStartTimeout) {
  testing_util::ClusterSpec spec;
  spec.workers = 2;
  spec.servers = 1;
  spec.start_timeout_s = 3;
  testing_util::Cluster c(spec);
  ASSERT_TRUE(c.Start());
  std::string command =
      Runfile("worker/worker") +
      " --benchmark --network=mlp --kv_store=dist_sync --scheduler_address=" +
      c.address;
  for (const std::string& f : c.CommonFlags()) command += " " + f;
  std::string out;
  EXPECT_EQ(Shell(command, &out), 1) << out;
  EXPECT_THAT(out, HasSubstr("missing 0 of 1 server(s) and 1 of 2 worker(s)"))
      << out;
}

// No scheduler at all: the worker names the address it waited for and what
// it expected, and exits 1 (a failure at run time, not a usage error).
TEST(CommandLineTest, WorkerWithoutSchedulerExits1NamingIt) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);  // A port nobody listens on.
  const std::string address = absl::StrCat("127.0.0.1:", ntohs(a.sin_port));
  std::string out;
  EXPECT_EQ(Shell(Runfile("worker/worker") +
                      " --benchmark --network=mlp --kv_store=dist_sync "
                      "--scheduler_address=" +
                      address +
                      " --start_timeout_s=1 --heartbeat_interval_s=0.2 "
                      "--heartbeat_timeout_s=1",
                  &out),
            1)
      << out;
  EXPECT_THAT(out, HasSubstr("no answer from the scheduler at " + address +
                             " within 2s"));
  EXPECT_THAT(out, HasSubstr("which expects 1 server(s) and 1 worker(s)"));
}

}  // namespace
}  // namespace pstrain
