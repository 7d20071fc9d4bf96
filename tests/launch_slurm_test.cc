// `launch --launcher slurm` under a real Slurm: a private cluster on this
// machine (scripts/slurm_local: munged, slurmctld and three slurmd
// daemons, nodes n1-n3 at 127.0.0.1), and real jobs of the real scheduler,
// servers and workers. A 2-server, 2-worker dist_sync LeNet job on
// Fashion-MNIST, through `salloc` + launch and through `sbatch`, ends with
// the same weights, bit for bit, as the same job under `launch --launcher
// local`; a worker killed mid-job ends the job naming it; SIGTERM stops it;
// and no step and no process is left either way. Needs root and Debian's
// slurm-wlm; skips, saying why, without.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
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
    const int rc = Shell(absl::StrCat(Runfile("scripts/slurm_local"),
                                      " up --nodes 3 --state_dir ", *state_),
                         &out);
    status_ =
        new std::string(rc == 0    ? ""
                        : rc == 77 ? "skip: " + out
                                   : absl::StrCat("exit ", rc, ": ", out));
  }
  static void TearDownTestSuite() {
    std::string out;
    Shell(absl::StrCat(Runfile("scripts/slurm_local"), " down --state_dir ",
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
        " -n 2 -s 2 --launcher slurm --stop_grace_s 3 --scheduler_binary ",
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

// LeNet on 256 Fashion-MNIST records, dist_sync, deterministic data.
std::string LenetFlags(const std::string& prefix) {
  const std::string tmp = testing_util::TestTmp();
  return absl::StrCat(
      "--network=lenet --rgb-mean=72.94 --rgb-std=90.02 --data_nthreads=1 "
      "--lr=0.05 --wd=0.0001 --mom=0.9 --shuffle=false --batch_size=16 "
      "--kv_store=dist_sync --num_epochs=1 --data_train=",
      tmp, "/train.rec --model_prefix=", tmp, "/", prefix);
}

TEST_F(LaunchSlurmTest, LenetThroughSallocAndSbatchEqualsTheLocalJob) {
  if (!testing_util::HaveFashionMnist()) {
    GTEST_SKIP() << "Debian's dataset-fashion-mnist is not installed";
  }
  const std::string tmp = testing_util::TestTmp();
  ASSERT_EQ(testing_util::PackFashion("train", 256, tmp + "/train"), "");
  std::string out;
  ASSERT_EQ(Shell(Job(LenetFlags("salloc")), &out), 0) << out;
  // The node table, then each process under its node's name.
  EXPECT_THAT(out, HasSubstr("launch: n1               127.0.0.1        "
                             "1s+1w    ok"));
  EXPECT_THAT(out, HasSubstr("launch: n2               127.0.0.1        "
                             "1s+0w    ok"));
  EXPECT_THAT(out, HasSubstr("launcher slurm"));
  EXPECT_THAT(out, HasSubstr("[server 0 n1] "));
  EXPECT_THAT(out, HasSubstr("[server 1 n2] "));
  EXPECT_THAT(out, HasSubstr("[worker 0 n3] "));
  EXPECT_THAT(out, HasSubstr("[worker 1 n1] "));
  EXPECT_THAT(out, HasSubstr("launch: job finished: every process exited 0"));
  EXPECT_EQ(Leftovers(), "");

  // The same job as an sbatch script.
  const std::string script = tmp + "/job.sbatch";
  const std::string job = Job(LenetFlags("sbatch"));
  // From launch on: sbatch runs it on the allocation's first node.
  std::ofstream(script) << "#!/bin/sh\n#SBATCH --nodes=3\nexec "
                        << job.substr(job.find(Runfile("tools/launch")))
                        << "\n";
  ASSERT_EQ(Shell(absl::StrCat("cd ", tmp, " && SLURM_CONF=", *state_,
                               "/slurm.conf timeout 120 sbatch --wait --quiet "
                               "--output=",
                               tmp, "/sbatch.out ", script),
                  &out),
            0)
      << out << testing_util::ReadFileOrEmpty(tmp + "/sbatch.out");
  EXPECT_THAT(testing_util::ReadFileOrEmpty(tmp + "/sbatch.out"),
              HasSubstr("launch: job finished: every process exited 0"));
  EXPECT_EQ(Leftovers(), "");

  bool ok = false;
  out = testing_util::LaunchWorkers(
      2, 2, absl::StrSplit(LenetFlags("local"), ' ', absl::SkipEmpty()),
      absl::Seconds(90), &ok);
  ASSERT_TRUE(ok) << out;
  const auto local = testing_util::ReadParams(tmp + "/local-0001.params");
  ASSERT_FALSE(local.empty());
  EXPECT_EQ(testing_util::MaxRelativeDiff(
                local, testing_util::ReadParams(tmp + "/salloc-0001.params")),
            0.0);
  EXPECT_EQ(testing_util::MaxRelativeDiff(
                local, testing_util::ReadParams(tmp + "/sbatch-0001.params")),
            0.0);
}

TEST_F(LaunchSlurmTest, AKilledWorkerStepEndsTheJobNamingItAndNothingIsLeft) {
  std::string out;
  // A worker (the one on n3, the only process there) is killed once the
  // job runs; the job would take minutes.
  const std::string kill_worker = absl::StrCat(
      "true; ( for i in $(seq 100); do p=$(pgrep -f '^",
      Runfile("worker/worker"),
      "' | head -1); [ -n \"$p\" ] && sleep 2 && kill -9 $p && exit; "
      "sleep 0.2; done ) & ");
  const int rc = Shell(
      kill_worker + Job(absl::StrCat(kBenchmark, "--num_examples=51200000")),
      &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_THAT(out, HasSubstr("launch: job failed: [worker ")) << out;
  EXPECT_THAT(out, HasSubstr("was killed by signal 9")) << out;
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
