// Issue #15, `launch --recovery=replace` end to end: real launch,
// scheduler, server and worker processes on 127.0.0.1. A dist_sync LeNet
// job (2 servers x 3 workers, Fashion-MNIST) whose worker rank 1 SIGKILLs
// itself mid-run goes on: launch starts a replacement for rank 1, which
// pulls the current weights and continues at the current step, while
// workers 0 and 2 keep running in the same processes. The job ends with
// exit 0, every server applied exactly one round per step (no push lost
// or counted twice) and the final weights equal an undisturbed run's. A
// replacement that cannot come ends the job with the scheduler's verdict
// and a non-zero exit, in bounded time.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "checkpoint/manifest.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker_util.h"

namespace pstrain {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testing_util::LinesWith;

class ReplaceClusterTest : public testing_util::FashionMnistJobTest {
 protected:
  // LeNet, dist_sync, 1920 images / (3 x 32) = 20 steps an epoch.
  std::vector<std::string> Flags(int epochs) const {
    return {"--kv_store=dist_sync",
            "--network=lenet",
            absl::StrCat("--data_train=", tmp_, "/train.rec"),
            absl::StrCat("--data_val=", tmp_, "/val.rec"),
            "--batch_size=32",
            absl::StrCat("--num_epochs=", epochs),
            "--lr=0.05",
            "--mom=0.9",
            "--data_nthreads=1",
            "--seed=7"};
  }
};

// The last "Validation-accuracy=" value of worker 0 in `out`, or -1.
double FinalAccuracy(const std::string& out) {
  double acc = -1;
  for (const std::string& line : LinesWith(out, "Validation-accuracy=")) {
    if (line.find("[worker 0 ") != 0) continue;
    acc = std::stod(line.substr(line.find('=') + 1));
  }
  return acc;
}

// How many processes joined as worker `rank` (ClusterNode's line).
size_t Joins(const std::string& out, int rank) {
  return LinesWith(out, absl::StrCat("WORKER rank ", rank, " (node ", 3 + rank,
                                     ") of 2 server(s)"))
      .size();
}

TEST_F(ReplaceClusterTest, DeadWorkerIsReplacedAndTheJobGoesOn) {
  ASSERT_EQ(testing_util::PackFashion("train", 1920, tmp_ + "/train"), "");
  ASSERT_EQ(testing_util::PackFashion("t10k", 500, tmp_ + "/val"), "");
  constexpr int kEpochs = 2, kSteps = 2 * 20;
  // Undisturbed.
  std::vector<std::string> flags = Flags(kEpochs);
  ASSERT_TRUE(checkpoint::MakeDirs(tmp_ + "/plain").ok());
  flags.push_back(absl::StrCat("--model_prefix=", tmp_, "/plain/model"));
  bool ok = false;
  const std::string plain = testing_util::LaunchWorkers(
      3, 2, flags, absl::Seconds(240), &ok, {"--recovery=replace"});
  ASSERT_TRUE(ok) << plain;
  EXPECT_THAT(LinesWith(plain, "replacement"), IsEmpty()) << plain;

  // Worker rank 1 SIGKILLs itself after step 13 (epoch 0).
  flags = Flags(kEpochs);
  ASSERT_TRUE(checkpoint::MakeDirs(tmp_ + "/replaced").ok());
  flags.push_back(absl::StrCat("--model_prefix=", tmp_, "/replaced/model"));
  flags.push_back("--test_die_at_step=13");
  flags.push_back("--test_die_rank=1");
  const std::string out = testing_util::LaunchWorkers(
      3, 2, flags, absl::Seconds(240), &ok, {"--recovery=replace"});
  ASSERT_TRUE(ok) << out;
  EXPECT_THAT(
      LinesWith(out, "launch: job finished"),
      ::testing::ElementsAre(HasSubstr("1 worker process(es) replaced")));
  // launch saw the death and replaced rank 1, once; nothing restarted.
  const auto died = LinesWith(out, "(worker rank 1) was killed by signal 9");
  ASSERT_EQ(died.size(), 1u) << out;
  EXPECT_THAT(died[0], HasSubstr("--recovery=replace: the job goes on"));
  EXPECT_EQ(LinesWith(out, "replacement for worker rank 1 started").size(), 1u);
  EXPECT_THAT(LinesWith(out, "launch: restart"), IsEmpty());
  // Workers 0 and 2 ran in one process each, from start to end; rank 1 in
  // two (the original and its replacement).
  EXPECT_EQ(Joins(out, 0), 1u) << out;
  EXPECT_EQ(Joins(out, 2), 1u) << out;
  EXPECT_EQ(Joins(out, 1), 2u) << out;
  // Everyone moved rank 1's connection: 2 servers and 2 workers.
  EXPECT_EQ(LinesWith(out, "WORKER rank 1 (node 4) replaced: now at").size(),
            4u)
      << out;
  // The scheduler took the replacement. It joined at the servers' round:
  // 13, or 12 when rank 1 died before its pushes of step 13 left (they are
  // sent as the step's backward pass goes); then it trained the next step.
  EXPECT_EQ(LinesWith(out, "scheduler: worker rank 1 replaced").size(), 1u);
  const auto joins = LinesWith(out, "(--replace_rank 1) joins at step ");
  ASSERT_EQ(joins.size(), 1u) << out;
  const int joined =
      std::stoi(joins[0].substr(joins[0].find("joins at step ") + 14));
  EXPECT_TRUE(joined == 12 || joined == 13) << joins[0];
  EXPECT_THAT(joins[0], HasSubstr(absl::StrCat("epoch 0, batch ", joined)));
  const auto again = LinesWith(
      out,
      absl::StrCat("replacement training again: step ", joined + 1, " done"));
  ASSERT_EQ(again.size(), 1u) << out;
  EXPECT_THAT(again[0], HasSubstr("after launch saw worker rank 1 die"));
  // Every server applied each step's round once: 40 rounds, not 39 or 41.
  const auto rounds = LinesWith(
      out,
      absl::StrCat(": ", kSteps, " rounds applied to every learned slice"));
  EXPECT_EQ(rounds.size(), 2u) << out;
  // The final weights equal the undisturbed run's: the replacement read
  // exactly the batches its predecessor would have (the data order is a
  // function of seed and epoch; LeNet has no random state).
  const std::string a = testing_util::ReadFileOrEmpty(
      absl::StrFormat("%s/plain/model-%04d.params", tmp_, kEpochs));
  const std::string b = testing_util::ReadFileOrEmpty(
      absl::StrFormat("%s/replaced/model-%04d.params", tmp_, kEpochs));
  ASSERT_FALSE(a.empty());
  EXPECT_TRUE(a == b) << "the replaced job's final weights differ";
  const double acc_plain = FinalAccuracy(plain), acc = FinalAccuracy(out);
  ASSERT_GT(acc_plain, 0.2) << plain;
  EXPECT_NEAR(acc, acc_plain, 0.02) << out;

  // Rank 1's push of step 13 reaches server rank 0 only, then it dies:
  // server 0 completes round 13 with it, server 1 waits. The replacement
  // joins at step 12, computes step 13 from the weights after step 12 (the
  // previous ones on server 0, --recovery=replace keeps them) and pushes
  // it: a repeat on server 0 (acknowledged, not summed), new on server 1.
  flags = Flags(kEpochs);
  ASSERT_TRUE(checkpoint::MakeDirs(tmp_ + "/midpush").ok());
  flags.push_back(absl::StrCat("--model_prefix=", tmp_, "/midpush/model"));
  flags.push_back("--test_die_mid_push_step=13");
  flags.push_back("--test_die_rank=1");
  const std::string mid = testing_util::LaunchWorkers(
      3, 2, flags, absl::Seconds(240), &ok, {"--recovery=replace"});
  ASSERT_TRUE(ok) << mid;
  EXPECT_EQ(LinesWith(mid, "(--replace_rank 1) joins at step 12").size(), 1u)
      << mid;
  EXPECT_EQ(LinesWith(mid,
                      "server rank 0: 40 rounds applied to every learned "
                      "slice; 0 repeated")
                .size(),
            0u)
      << mid;
  EXPECT_EQ(LinesWith(mid,
                      "server rank 1: 40 rounds applied to every learned "
                      "slice; 0 repeated")
                .size(),
            1u)
      << mid;
  EXPECT_TRUE(testing_util::ReadFileOrEmpty(absl::StrFormat(
                  "%s/midpush/model-%04d.params", tmp_, kEpochs)) == a)
      << "a push that reached one server of two changed the result";

  // Rank 0 (which initialises metric slots and writes checkpoints) dies in
  // epoch 1, after the validation slot and 2 checkpoints exist: its
  // replacement passes 3 barriers at once, joins at step 25 (or 24) and
  // writes the checkpoints of steps 30 and 40; the weights are still the
  // undisturbed run's.
  flags = Flags(kEpochs);
  ASSERT_TRUE(checkpoint::MakeDirs(tmp_ + "/rank0").ok());
  flags.push_back(absl::StrCat("--model_prefix=", tmp_, "/rank0/model"));
  flags.push_back("--test_die_at_step=25");
  flags.push_back("--test_die_rank=0");
  flags.push_back("--checkpoint_period_batches=10");
  const std::string out0 = testing_util::LaunchWorkers(
      3, 2, flags, absl::Seconds(240), &ok,
      {"--recovery=replace",
       absl::StrCat("--checkpoint_dir=", tmp_, "/rank0/ck")});
  ASSERT_TRUE(ok) << out0;
  EXPECT_EQ(Joins(out0, 0), 2u) << out0;
  EXPECT_EQ(LinesWith(out0, "3 worker barriers released so far").size(), 1u)
      << out0;
  EXPECT_EQ(LinesWith(out0, "(--replace_rank 0) joins at step 2").size(), 1u)
      << out0;
  EXPECT_EQ(LinesWith(out0, absl::StrCat(": ", kSteps,
                                         " rounds applied to every learned "
                                         "slice"))
                .size(),
            2u)
      << out0;
  EXPECT_TRUE(
      checkpoint::VerifyCheckpoint(checkpoint::StepDir(tmp_ + "/rank0/ck", 40))
          .ok());
  EXPECT_TRUE(testing_util::ReadFileOrEmpty(absl::StrFormat(
                  "%s/rank0/model-%04d.params", tmp_, kEpochs)) == a)
      << "the job whose rank 0 was replaced ends with other weights";
}

TEST_F(ReplaceClusterTest, NoReplacementEndsTheJobWithTheSchedulersVerdict) {
  ASSERT_EQ(testing_util::PackFashion("train", 1920, tmp_ + "/train"), "");
  ASSERT_EQ(testing_util::PackFashion("t10k", 100, tmp_ + "/val"), "");
  std::vector<std::string> flags = Flags(1);
  flags.push_back("--test_die_at_step=3");
  flags.push_back("--test_die_rank=1");
  flags.push_back("--test_replacement_fails");  // Every replacement exits 1.
  bool ok = true;
  const absl::Time t0 = absl::Now();
  const std::string out = testing_util::LaunchWorkers(
      3, 2, flags, absl::Seconds(120), &ok,
      {"--recovery=replace", "--replace_timeout_s=2",
       "--scheduler_args=--heartbeat_timeout_s=3"});
  EXPECT_FALSE(ok) << out;
  // Detected by heartbeat (3 s) plus the 2 s wait, far below any limit.
  EXPECT_LT(absl::Now() - t0, absl::Seconds(90)) << out;
  EXPECT_GE(LinesWith(out, "--test_replacement_fails: replacement").size(), 1u);
  const auto failed = LinesWith(out, "launch: job failed");
  ASSERT_EQ(failed.size(), 1u) << out;
  EXPECT_THAT(failed[0], HasSubstr("worker rank 1 at 127.0.0.1:"));
  EXPECT_THAT(failed[0], HasSubstr("no replacement registered within 2s "
                                   "(--replace_timeout_s"));
  EXPECT_THAT(LinesWith(out, "scheduler: worker rank 1 declared dead"),
              ::testing::SizeIs(1));
}

}  // namespace
}  // namespace pstrain
