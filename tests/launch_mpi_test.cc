// `launch --launcher mpi` with Open MPI's real mpirun on this host: the
// whole job (real scheduler, server and workers) is one mpirun, rank 0 the
// scheduler, then the server, then the workers. Checks that every rank
// plays its role under its own prefix, that a dead rank ends the job naming
// it, that SIGTERM stops it, and that nothing is left either way. Skips,
// saying why, where mpirun is missing.
#include <signal.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testbed_util.h"
#include "tests/worker_util.h"

namespace pstrain {
namespace {

using ::testing::HasSubstr;
using testing_util::Runfile;
using testing_util::Shell;

class LaunchMpiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string out;
    if (Shell("mpirun --version", &out) != 0) {
      GTEST_SKIP() << "Open MPI's mpirun is not installed (openmpi-bin); "
                      "skipped: "
                   << out;
    }
  }
  // A 1-server, 2-worker job; `launch_flags` (e.g. "--mpirun X", "-H F")
  // go to launch.
  static std::string Job(const std::string& worker_flags,
                         const std::string& launch_flags = "") {
    return absl::StrCat(
        "cd ", testing_util::TestTmp(), " && timeout 120 ",
        Runfile("tools/launch"), " ", launch_flags,
        " -n 2 -s 1 --launcher mpi --stop_grace_s 3 --scheduler_binary ",
        Runfile("scheduler/scheduler"), " --server_binary ",
        Runfile("server/server"), " --env OMP_NUM_THREADS=1 -- ",
        Runfile("worker/worker"),
        " --network=mlp --benchmark --batch_size=64 --kv_store=dist_sync "
        "--num_epochs=1 ",
        worker_flags);
  }
  // Processes of the job (or of mpirun) still there 5 s after launch
  // ended ("" none): ranks get SIGTERM when mpirun goes, and take a moment.
  static std::string Leftovers() {
    std::string procs;
    for (int i = 0; i < 25; ++i) {
      Shell(
          absl::StrCat(
              "pgrep -af '", Runfile(""),
              "(worker|server|scheduler)/|[o]rted|[m]pirun|[h]ydra_pmi_proxy'"),
          &procs);
      procs = std::string(absl::StripAsciiWhitespace(procs));
      if (procs.empty()) break;
      absl::SleepFor(absl::Milliseconds(200));
    }
    return procs;
  }
  // A shell loop that waits for `binary` to run, then (after 2 s) runs
  // `action` with $p its pid, in the background.
  static std::string WhenRunning(const std::string& binary,
                                 const std::string& action) {
    return absl::StrCat("true; ( for i in $(seq 100); do p=$(pgrep -f '^",
                        Runfile(binary), "'); [ -n \"$p\" ] && sleep 2 && ",
                        action, " && exit; sleep 0.2; done ) & ");
  }
};

TEST_F(LaunchMpiTest, EveryRankPlaysItsRoleUnderItsPrefix) {
  std::string out;
  ASSERT_EQ(Shell(Job("--num_examples=512"), &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("launch: MPI rank 0: [scheduler 0 127.0.0.1]"));
  EXPECT_THAT(out, HasSubstr("launch: MPI rank 1: [server 0 127.0.0.1]"));
  EXPECT_THAT(out, HasSubstr("launch: MPI rank 3: [worker 1 127.0.0.1]"));
  EXPECT_THAT(out, HasSubstr("launcher mpi"));
  EXPECT_THAT(out, HasSubstr("[scheduler 0 127.0.0.1] scheduler address: "));
  EXPECT_THAT(out, HasSubstr("[server 0 127.0.0.1] "));
  EXPECT_EQ(testing_util::LinesWith(out, "127.0.0.1] benchmark: {").size(), 2u)
      << out;
  EXPECT_THAT(out, HasSubstr("launch: job finished: every process exited 0"));
  EXPECT_EQ(Leftovers(), "");
}

TEST_F(LaunchMpiTest, ADeadRankEndsTheJobNamingIt) {
  std::string out;
  EXPECT_EQ(Shell(WhenRunning("server/server", "kill -9 $p") +
                      Job("--num_examples=51200000"),
                  &out),
            1)
      << out;
  EXPECT_THAT(out, HasSubstr("launch: job failed: [server 0 127.0.0.1] was "
                             "killed by signal 9"))
      << out;
  EXPECT_THAT(out, HasSubstr("(MPI rank 1)")) << out;
  EXPECT_EQ(Leftovers(), "");
}

TEST_F(LaunchMpiTest, SigtermStopsEveryRank) {
  std::string out;
  EXPECT_EQ(Shell(WhenRunning("worker/worker",
                              absl::StrCat("pkill -TERM -f '^",
                                           Runfile("tools/launch"), "'")) +
                      Job("--num_examples=51200000"),
                  &out),
            128 + SIGTERM)
      << out;
  EXPECT_THAT(out, HasSubstr("launch: received SIGTERM")) << out;
  EXPECT_THAT(out, HasSubstr("launch: job stopped")) << out;
  EXPECT_EQ(Leftovers(), "");
}

// MPICH's Hydra mpiexec, which does not end the other ranks when one fails:
// launch does, naming the rank from the dispatch script's report.
TEST_F(LaunchMpiTest, MpichRunsTheJobAndADeadRankEndsIt) {
  std::string out;
  if (Shell("mpiexec.mpich --version", &out) != 0) {
    GTEST_SKIP() << "MPICH's mpiexec.mpich is not installed (mpich); skipped";
  }
  ASSERT_EQ(Shell(Job("--num_examples=512", "--mpirun mpiexec.mpich"), &out), 0)
      << out;
  EXPECT_THAT(out, HasSubstr("launch: [worker 1 127.0.0.1] finished"));
  EXPECT_EQ(testing_util::LinesWith(out, "127.0.0.1] benchmark: {").size(), 2u)
      << out;
  EXPECT_THAT(out, HasSubstr("launch: job finished: every process exited 0"));
  EXPECT_EQ(Leftovers(), "");
  EXPECT_EQ(Shell(WhenRunning("server/server", "kill -9 $p") +
                      Job("--num_examples=51200000", "--mpirun mpiexec.mpich"),
                  &out),
            1)
      << out;
  EXPECT_THAT(out, HasSubstr("launch: job failed: [server 0 127.0.0.1] was "
                             "killed by signal 9 (SIGKILL) (MPI rank 1)"))
      << out;
  EXPECT_EQ(Leftovers(), "");
}

// Across three test-bed hosts (network namespaces with their own sshd; root
// only): mpirun here starts Open MPI's orted on each over the test bed's
// ssh config, rank r runs on host r mod 3 and binds its address, and a rank
// killed on another host ends the job naming it, with nothing left.
TEST_F(LaunchMpiTest, AcrossThreeTestBedHosts) {
  std::string skip, error;
  auto bed = testing_util::TestBed::Up(3, {}, &skip, &error);
  if (bed == nullptr && !skip.empty()) GTEST_SKIP() << skip;
  ASSERT_NE(bed, nullptr) << error;
  const std::string subnet = absl::StrCat(
      bed->launcher_address().substr(0, bed->launcher_address().rfind('.')),
      ".0/24");
  auto job = [&](const std::string& worker_flags) {
    return Job(worker_flags,
               absl::StrCat("-H ", bed->hostfile(), " --ssh_config ",
                            bed->ssh_config(),
                            " '--mpi_args=--mca oob_tcp_if_include ", subnet,
                            " --mca btl_tcp_if_include ", subnet, "'"));
  };
  const std::vector<std::string>& h = bed->hosts();
  std::string out;
  ASSERT_EQ(Shell(job("--num_examples=512"), &out), 0) << out;
  EXPECT_THAT(out,
              HasSubstr(absl::StrCat("MPI rank 0: [scheduler 0 ", h[0], "]")));
  EXPECT_THAT(out,
              HasSubstr(absl::StrCat("MPI rank 1: [server 0 ", h[1], "]")));
  EXPECT_THAT(out,
              HasSubstr(absl::StrCat("MPI rank 2: [worker 0 ", h[2], "]")));
  EXPECT_THAT(out, HasSubstr("picked at random"));
  EXPECT_THAT(out, HasSubstr(absl::StrCat("[scheduler 0 ", h[0],
                                          "] scheduler address: ", h[0])));
  EXPECT_EQ(testing_util::LinesWith(out, "] benchmark: {").size(), 2u) << out;
  EXPECT_THAT(out, HasSubstr("launch: job finished: every process exited 0"));
  EXPECT_EQ(Leftovers(), "");

  // The server on host 1 dies mid-job.
  out.clear();
  const int rc = Shell(WhenRunning("server/server", "kill -9 $p") +
                           job("--num_examples=51200000"),
                       &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_THAT(out, HasSubstr(absl::StrCat("launch: job failed: [server 0 ",
                                          h[1], "] was killed by signal 9")))
      << out;
  EXPECT_EQ(Leftovers(), "");
}

}  // namespace
}  // namespace pstrain
