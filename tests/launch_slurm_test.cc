// `launch --launcher slurm` under a real Slurm: a private cluster on this
// machine (scripts/slurm_cluster: munged, slurmctld and three slurmd
// daemons, nodes n1-n3 at 127.0.0.1), and real jobs of the real scheduler,
// server and worker inside `salloc`. Checks that every role starts as a job
// step on the allocation's nodes, that a dead process ends the job naming
// it, that a stop signal stops it, and that no step and no process is left
// either way. Needs root and Debian's slurm-wlm; skips, saying why, without.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker_util.h"

namespace pstrain {
namespace {

using ::testing::HasSubstr;
using testing_util::Runfile;
using testing_util::Shell;

class LaunchSlurmTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // Short: munged's socket path must fit in 108 bytes.
    char dir[] = "/tmp/pstrain-slurm.XXXXXX";
    state_ = new std::string(mkdtemp(dir) != nullptr ? dir : "/tmp");
    std::string out;
    const int rc = Shell(absl::StrCat(Runfile("scripts/slurm_cluster"),
                                      " up --nodes 3 --state_dir ", *state_),
                         &out);
    status_ =
        new std::string(rc == 0    ? ""
                        : rc == 77 ? "skip: " + out
                                   : absl::StrCat("exit ", rc, ": ", out));
  }
  static void TearDownTestSuite() {
    std::string out;
    Shell(absl::StrCat(Runfile("scripts/slurm_cluster"), " down --state_dir ",
                       *state_),
          &out);
    delete state_;
    delete status_;
  }
  void SetUp() override {
    if (absl::StartsWith(*status_, "skip: ")) GTEST_SKIP() << *status_;
    ASSERT_EQ(*status_, "") << "the Slurm cluster did not come up";
  }

  // `salloc -N 3 launch --launcher slurm ...` for a job of the real
  // binaries, as a shell command (SLURM_CONF set).
  std::string Job(const std::string& worker_flags) const {
    return absl::StrCat(
        "cd ", testing_util::TestTmp(), " && SLURM_CONF=", *state_,
        "/slurm.conf timeout 120 salloc --quiet -N 3 ", Runfile("tools/launch"),
        " -n 2 -s 1 --launcher slurm --stop_grace_s 3 --scheduler_binary ",
        Runfile("scheduler/scheduler"), " --server_binary ",
        Runfile("server/server"), " --env OMP_NUM_THREADS=1 -- ",
        Runfile("worker/worker"), " ", worker_flags);
  }
  // The allocation's steps and the job's processes still there ("" none).
  std::string Leftovers() const {
    std::string out, procs;
    Shell(absl::StrCat("SLURM_CONF=", *state_,
                       "/slurm.conf squeue --steps --noheader"),
          &out);
    Shell(
        absl::StrCat("pgrep -af '", Runfile(""), "(worker|server|scheduler)/'"),
        &procs);
    return std::string(absl::StripAsciiWhitespace(out + procs));
  }

  static std::string* state_;
  static std::string* status_;
};

std::string* LaunchSlurmTest::state_ = nullptr;
std::string* LaunchSlurmTest::status_ = nullptr;

constexpr char kBenchmark[] =
    "--network=mlp --benchmark --batch_size=64 --kv_store=dist_sync "
    "--num_epochs=1 ";

TEST_F(LaunchSlurmTest, EveryRoleRunsAsAStepOnTheAllocationsNodes) {
  std::string out;
  ASSERT_EQ(Shell(Job(absl::StrCat(kBenchmark, "--num_examples=512")), &out), 0)
      << out;
  // The node table, then each process under its node's name.
  EXPECT_THAT(out, HasSubstr("launch: n1               127.0.0.1        "
                             "1s+0w    ok"));
  EXPECT_THAT(out, HasSubstr("launch: n2               127.0.0.1        "
                             "0s+1w    ok"));
  EXPECT_THAT(out, HasSubstr("launcher slurm"));
  EXPECT_THAT(out, HasSubstr("[server 0 n1] "));
  EXPECT_THAT(out, HasSubstr("[worker 0 n2] "));
  EXPECT_THAT(out, HasSubstr("[worker 1 n3] "));
  EXPECT_EQ(testing_util::LinesWith(out, "] benchmark: {").size(), 2u) << out;
  EXPECT_THAT(out, HasSubstr("launch: job finished: every process exited 0"));
  EXPECT_EQ(Leftovers(), "");
}

TEST_F(LaunchSlurmTest, ADeadServerEndsTheJobNamingItAndNothingIsLeft) {
  std::string out;
  // The server is killed once the job runs; the job would take minutes.
  const std::string kill_server = absl::StrCat(
      "true; ( for i in $(seq 100); do p=$(pgrep -f '^",
      Runfile("server/server"),
      "'); [ -n \"$p\" ] && sleep 2 && kill -9 $p && exit; sleep 0.2; done ) "
      "& ");
  const int rc = Shell(
      kill_server + Job(absl::StrCat(kBenchmark, "--num_examples=51200000")),
      &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_THAT(out, HasSubstr("launch: job failed: [server 0 n1]")) << out;
  EXPECT_EQ(Leftovers(), "");
}

TEST_F(LaunchSlurmTest, SigtermStopsEveryStep) {
  std::string out;
  const std::string stop_launch =
      absl::StrCat("true; ( for i in $(seq 100); do p=$(pgrep -f '^",
                   Runfile("worker/worker"),
                   "'); [ -n \"$p\" ] && sleep 2 && pkill -TERM -f '^",
                   Runfile("tools/launch"), "' && exit; sleep 0.2; done ) & ");
  const int rc = Shell(
      stop_launch + Job(absl::StrCat(kBenchmark, "--num_examples=51200000")),
      &out);
  EXPECT_EQ(rc, 128 + SIGTERM) << out;
  EXPECT_THAT(out, HasSubstr("launch: received SIGTERM")) << out;
  EXPECT_THAT(out, HasSubstr("launch: job stopped")) << out;
  EXPECT_EQ(Leftovers(), "");
}

}  // namespace
}  // namespace pstrain
