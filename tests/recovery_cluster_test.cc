// Issue #15 end to end: real launch, scheduler, server and worker
// processes on 127.0.0.1 and real checkpoint files. A dist_sync job (2
// workers x 2 servers, fixed seed, shuffled data, random mirroring) that
// loses a worker process mid-run (SIGKILL, --test_die_at_step) under
// `launch --max_restarts 1` restarts from its newest complete checkpoint
// and ends with a final .params file bit for bit equal to an uninterrupted
// run's: LeNet with SGD+momentum, and a batch-norm ResNet with NAG whose
// rank 0 dies. With --checkpoint_period_s every worker checkpoints at the
// steps worker 0's clock picks, and each of those checkpoints verifies.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "checkpoint/manifest.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "launcher/subprocess.h"
#include "tests/worker_util.h"
#include "util/file.h"

namespace pstrain {
namespace {

using ::testing::HasSubstr;
using testing_util::LinesWith;

class RecoveryClusterTest : public testing_util::FashionMnistJobTest {
 protected:
  // Runs a 2 x 2 job of `flags` with checkpoints under tmp_/NAME/ck and
  // the model under tmp_/NAME/m; returns its output, *ok as launch's exit
  // 0.
  std::string Run(const std::string& name, std::vector<std::string> flags,
                  std::vector<std::string> launch_flags, bool* ok) {
    const std::string dir = absl::StrCat(tmp_, "/", name);
    EXPECT_TRUE(checkpoint::MakeDirs(dir + "/m").ok());
    flags.push_back(absl::StrCat("--model_prefix=", dir, "/m/model"));
    launch_flags.push_back(absl::StrCat("--checkpoint_dir=", dir, "/ck"));
    auto p = launcher::Subprocess::Start(
        testing_util::LaunchArgv(2, 2, flags, launch_flags),
        testing_util::Env());
    EXPECT_TRUE(p.ok()) << p.status();
    *ok = false;
    if (!p.ok()) return "";
    p->CloseStdin();
    bool exited = false;
    std::string out = testing_util::RunToEnd(&*p, absl::Seconds(90), &exited);
    EXPECT_TRUE(exited) << out;
    *ok = exited && p->succeeded();
    return out;
  }

  // The final model file's bytes.
  std::string Final(const std::string& name, int epochs) {
    return testing_util::ReadFileOrEmpty(
        absl::StrFormat("%s/%s/m/model-%04d.params", tmp_, name, epochs));
  }

  // An uninterrupted run and one whose worker `die_rank` dies after
  // `die_step`; checks the restart and the bit-for-bit equality, and that
  // the restart resumed from `resume_step` (not from the beginning, which
  // would be equal too).
  void ExpectRestartIsInvisible(const std::vector<std::string>& flags,
                                int epochs, int steps_per_epoch, int die_rank,
                                int die_step, int resume_step) {
    bool ok = false;
    std::string out = Run("plain", flags, {"--max_restarts=1"}, &ok);
    ASSERT_TRUE(ok) << out;
    EXPECT_THAT(LinesWith(out, "launch: restart"), ::testing::IsEmpty());
    std::vector<std::string> die = flags;
    die.push_back(absl::StrCat("--test_die_at_step=", die_step));
    die.push_back(absl::StrCat("--test_die_rank=", die_rank));
    out = Run("killed", die, {"--max_restarts=1"}, &ok);
    ASSERT_TRUE(ok) << out;
    const auto restarts = LinesWith(out, "launch: restart 1 of 1 after");
    ASSERT_EQ(restarts.size(), 1u) << out;
    EXPECT_THAT(restarts[0], HasSubstr("killed by signal 9"));
    EXPECT_THAT(restarts[0],
                HasSubstr(absl::StrFormat("step-%010d (step %d", resume_step,
                                          resume_step)));
    EXPECT_EQ(LinesWith(out, absl::StrCat("Resumed from")).size(), 2u) << out;
    EXPECT_EQ(LinesWith(out, "restored").size(), 2u) << out;  // Servers.
    const std::string a = Final("plain", epochs);
    const std::string b = Final("killed", epochs);
    ASSERT_FALSE(a.empty());
    EXPECT_TRUE(a == b) << "the restarted job's final weights differ";
    // The last checkpoint's MXNet file (its weights assembled from the
    // servers' parts) is the epoch-end --model_prefix file, byte for byte.
    const int64_t last = steps_per_epoch * epochs;
    EXPECT_TRUE(testing_util::ReadFileOrEmpty(
                    absl::StrFormat("%s/killed/ck/step-%010d/model-%04d.params",
                                    tmp_, last, last)) == b);
    // And the newest checkpoints verify.
    auto latest = checkpoint::FindLatestCheckpoint(tmp_ + "/killed/ck");
    EXPECT_TRUE(latest.ok()) << latest.status();
  }
};

TEST_F(RecoveryClusterTest, LeNetWorkerKilledRestartsBitForBit) {
  ASSERT_EQ(testing_util::PackFashion("train", 1280, tmp_ + "/train"), "");
  // 1280 / (2 x 32) = 20 steps an epoch; checkpoints every 4 steps and at
  // epoch ends, the newest 2 kept; rank 1 dies after step 26.
  ExpectRestartIsInvisible(
      {"--kv_store=dist_sync", "--network=lenet",
       absl::StrCat("--data_train=", tmp_, "/train.rec"), "--batch_size=32",
       "--num_epochs=2", "--lr=0.05", "--mom=0.9", "--rand_mirror=1",
       "--data_nthreads=1", "--checkpoint_period_batches=4",
       "--checkpoint_keep=2", "--seed=7"},
      2, /*steps_per_epoch=*/20, /*die_rank=*/1, /*die_step=*/26,
      /*resume_step=*/24);
}

TEST_F(RecoveryClusterTest, BatchNormResNetRankZeroKilledRestartsBitForBit) {
  ASSERT_EQ(testing_util::PackFashion("train", 640, tmp_ + "/train"), "");
  // ResNet-8 (batch norm) with NAG: 640 / (2 x 16) = 20 steps an epoch;
  // rank 0 (which writes the manifest) dies after step 13, after the
  // checkpoint of step 10.
  ExpectRestartIsInvisible(
      {"--kv_store=dist_sync", "--network=resnet", "--num_layers=8",
       absl::StrCat("--data_train=", tmp_, "/train.rec"), "--batch_size=16",
       "--num_epochs=2", "--optimizer=nag", "--rand_mirror=1",
       "--data_nthreads=1", "--checkpoint_period_batches=5", "--seed=3"},
      2, /*steps_per_epoch=*/20, /*die_rank=*/0, /*die_step=*/13,
      /*resume_step=*/10);
}

TEST_F(RecoveryClusterTest,
       ACheckpointWithoutAPartitionResumesWithTheEvenSplit) {
  ASSERT_EQ(testing_util::PackFashion("train", 640, tmp_ + "/train"), "");
  // 640 / (2 x 32) = 10 steps an epoch. --bigarray_bound=1000 splits
  // conv1's, fc0's and fc1's weights over both servers, where the levelled
  // split and the even one (pstrain's before 2026-12-07) differ.
  const std::vector<std::string> flags = {
      "--kv_store=dist_sync",
      "--network=lenet",
      absl::StrCat("--data_train=", tmp_, "/train.rec"),
      "--batch_size=32",
      "--lr=0.05",
      "--mom=0.9",
      "--data_nthreads=1",
      "--bigarray_bound=1000",
      "--seed=7"};
  // Runs a 1-epoch job of `flags` + `extra` checkpointing at step 5, and
  // rewrites that checkpoint's manifest as pstrain wrote it before the
  // record (no partition line), after checking that the record says
  // `partition`; returns the checkpoint and the manifest's text with the
  // record.
  auto checkpoint_without_record = [&](const std::string& name,
                                       std::vector<std::string> extra,
                                       const std::string& partition,
                                       std::string* text) {
    std::vector<std::string> f = flags;
    f.insert(f.end(), extra.begin(), extra.end());
    f.insert(f.end(), {"--num_epochs=1", "--checkpoint_period_batches=5"});
    bool ok = false;
    const std::string out = Run(name, f, {}, &ok);
    EXPECT_TRUE(ok) << out;
    const std::string ck = checkpoint::StepDir(tmp_ + "/" + name + "/ck", 5);
    const std::string manifest =
        absl::StrCat(ck, "/", checkpoint::kManifestName);
    *text = testing_util::ReadFileOrEmpty(manifest);
    std::string before = *text;
    const std::string line = absl::StrCat("partition ", partition, "\n");
    const size_t at = before.find(line);
    EXPECT_NE(at, std::string::npos) << *text;
    if (at != std::string::npos) before.erase(at, line.size());
    EXPECT_TRUE(WriteFileAtomically(manifest, before).ok());
    return ck;
  };
  // Resumes from `ck` for a second epoch, both the workers and the servers.
  auto resume = [&](const std::string& name, const std::string& ck,
                    std::vector<std::string> extra, bool* ok) {
    std::vector<std::string> f = flags;
    f.insert(f.end(), extra.begin(), extra.end());
    f.insert(f.end(), {"--num_epochs=2", absl::StrCat("--resume_from=", ck)});
    return Run(name, f, {absl::StrCat("--server_args=--resume_from=", ck)}, ok);
  };
  std::string text;
  const std::string ck =
      checkpoint_without_record("even", {"--partition=even"}, "even", &text);
  // Resumed by a job with the default --partition (levelled): it plans the
  // keys as the checkpoint's job did, and the servers restore their parts.
  bool ok = false;
  std::string out = resume("resumed", ck, {}, &ok);
  ASSERT_TRUE(ok) << out;
  EXPECT_EQ(LinesWith(out, "Resumed from").size(), 2u) << out;
  EXPECT_EQ(LinesWith(out, "restored").size(), 2u) << out;  // Servers.
  EXPECT_EQ(LinesWith(out, "records no partition").size(), 2u) << out;
  EXPECT_FALSE(Final("resumed", 2).empty());
  // Had it planned the levelled split, the servers would have refused the
  // checkpoint, naming a slice: what a manifest that says so gets.
  std::string levelled = text;
  const std::string even_line = "partition even\n";
  const size_t at = levelled.find(even_line);
  ASSERT_NE(at, std::string::npos) << text;
  levelled.replace(at, even_line.size(), "partition levelled\n");
  ASSERT_TRUE(WriteFileAtomically(
                  absl::StrCat(ck, "/", checkpoint::kManifestName), levelled)
                  .ok());
  out = resume("levelled", ck, {}, &ok);
  EXPECT_FALSE(ok) << out;
  EXPECT_THAT(out, HasSubstr("is not one this server holds"));
  // MXNet mode's placement did not change: an old MXNet-mode checkpoint
  // resumes in MXNet mode as it is.
  const std::string mx = checkpoint_without_record(
      "mxnet", {"--kvstore_mode=mxnet"}, "mxnet", &text);
  out = resume("mxnet_resumed", mx, {"--kvstore_mode=mxnet"}, &ok);
  ASSERT_TRUE(ok) << out;
  EXPECT_EQ(LinesWith(out, "restored").size(), 2u) << out;
  EXPECT_THAT(LinesWith(out, "records no partition"), ::testing::IsEmpty());
}

TEST_F(RecoveryClusterTest, TimePeriodCheckpointsAtTheSameStepOnEveryWorker) {
  ASSERT_EQ(testing_util::PackFashion("train", 1280, tmp_ + "/train"), "");
  bool ok = false;
  const std::string out =
      Run("timed",
          {"--kv_store=dist_sync", "--network=lenet",
           absl::StrCat("--data_train=", tmp_, "/train.rec"), "--batch_size=32",
           "--num_epochs=1", "--data_nthreads=1", "--checkpoint_period_s=0.2"},
          {}, &ok);
  ASSERT_TRUE(ok) << out;
  // Worker 0's clock picks the steps; worker 1 checkpoints at each too.
  std::vector<std::string> steps[2];
  for (int r = 0; r < 2; ++r) {
    for (const std::string& line :
         LinesWith(out, absl::StrCat("worker ", r, ": checkpoint of step "))) {
      if (line.find("paused") == std::string::npos) continue;
      const size_t at = line.find("step ");
      steps[r].push_back(line.substr(at, line.find(':', at) - at));
    }
  }
  EXPECT_GE(steps[0].size(), 2u) << out;  // One at least by time.
  EXPECT_EQ(steps[0], steps[1]) << out;
  for (const std::string& step : steps[0]) {
    const int64_t n = std::stoll(step.substr(5));
    auto m = checkpoint::VerifyCheckpoint(
        checkpoint::StepDir(tmp_ + "/timed/ck", n));
    EXPECT_TRUE(m.ok()) << step << ": " << m.status();
  }
}

}  // namespace
}  // namespace pstrain
