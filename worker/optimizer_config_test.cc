#include "worker/optimizer_config.h"

#include <memory>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "kvstore/kvstore.h"

namespace pstrain {
namespace worker {
namespace {

absl::Time Soon() { return absl::Now() + absl::Seconds(60); }

TEST(OptimizerConfigTest, PassedStepsShrinkTheRateLaterOnesAreScheduled) {
  TrainerOptions o;
  o.lr = 0.1;
  o.lr_factor = 0.5;
  o.lr_step_epochs = {1, 2, 4, 7};
  const proto::OptimizerConfig c =
      MakeOptimizerConfig(o, 1, /*begin_epoch=*/2, /*epoch_size=*/10, {});
  EXPECT_DOUBLE_EQ(c.learning_rate(), 0.1 * 0.5 * 0.5);
  EXPECT_EQ(c.schedule().kind(), proto::LearningRateSchedule::MULTI_FACTOR);
  ASSERT_EQ(c.schedule().steps_size(), 2);
  EXPECT_EQ(c.schedule().steps(0), 20);  // Updates after begin_epoch.
  EXPECT_EQ(c.schedule().steps(1), 50);
  EXPECT_DOUBLE_EQ(c.schedule().factor(), 0.5);

  o.lr_step_epochs = {1, 2};
  const proto::OptimizerConfig passed = MakeOptimizerConfig(o, 1, 2, 10, {});
  EXPECT_DOUBLE_EQ(passed.learning_rate(), 0.025);
  EXPECT_EQ(passed.schedule().kind(), proto::LearningRateSchedule::NONE);
  EXPECT_EQ(passed.schedule().steps_size(), 0);
}

TEST(OptimizerConfigTest, KindsAndMomentum) {
  TrainerOptions o;
  o.mom = 0.8;
  o.wd = 0.001;
  o.optimizer = "sgd";
  proto::OptimizerConfig c = MakeOptimizerConfig(o, 1, 0, 1, {});
  EXPECT_EQ(c.kind(), proto::OptimizerConfig::SGD);
  EXPECT_DOUBLE_EQ(c.momentum(), 0.8);
  EXPECT_DOUBLE_EQ(c.weight_decay(), 0.001);
  o.optimizer = "nag";
  c = MakeOptimizerConfig(o, 1, 0, 1, {});
  EXPECT_EQ(c.kind(), proto::OptimizerConfig::NAG);
  EXPECT_DOUBLE_EQ(c.momentum(), 0.8);
  o.optimizer = "adam";
  c = MakeOptimizerConfig(o, 1, 0, 1, {});
  EXPECT_EQ(c.kind(), proto::OptimizerConfig::ADAM);
  EXPECT_DOUBLE_EQ(c.momentum(), 0);
  EXPECT_DOUBLE_EQ(c.beta1(), 0.9);
  EXPECT_DOUBLE_EQ(c.beta2(), 0.999);
  EXPECT_DOUBLE_EQ(c.epsilon(), 1e-8);
}

TEST(OptimizerConfigTest, SynchronousStoresRescaleByTheWorkers) {
  TrainerOptions o;
  o.batch_size = 32;
  for (const char* type : {"local", "dist_async"}) {
    o.kv_store = type;
    EXPECT_DOUBLE_EQ(MakeOptimizerConfig(o, 4, 0, 1, {}).rescale_grad(),
                     1.0 / 32)
        << type;
  }
  for (const char* type : {"dist_sync", "dist_device_sync"}) {
    o.kv_store = type;
    EXPECT_DOUBLE_EQ(MakeOptimizerConfig(o, 4, 0, 1, {}).rescale_grad(),
                     1.0 / 128)
        << type;
  }
}

TEST(OptimizerConfigTest, KeyKHasTheMultipliersOfTheKthParameter) {
  nn::Param w, b;
  w.lr_mult = 2;
  b.wd_mult = 0;
  const proto::OptimizerConfig c =
      MakeOptimizerConfig(TrainerOptions(), 1, 0, 1, {&w, &b});
  ASSERT_EQ(c.lr_mult().size(), 2u);
  ASSERT_EQ(c.wd_mult().size(), 2u);
  EXPECT_DOUBLE_EQ(c.lr_mult().at(0), 2);
  EXPECT_DOUBLE_EQ(c.wd_mult().at(0), 1);
  EXPECT_DOUBLE_EQ(c.lr_mult().at(1), 1);
  EXPECT_DOUBLE_EQ(c.wd_mult().at(1), 0);
}

// The local KVStore accepts the config and applies it: plain SGD,
// w -= lr * lr_mult * rescale * g (no weight decay on key 1).
TEST(OptimizerConfigTest, TheLocalKVStoreRunsIt) {
  TrainerOptions o;
  o.lr = 0.5;
  o.mom = 0;
  o.wd = 0.1;
  o.batch_size = 4;
  nn::Param w, b;
  w.lr_mult = 2;
  w.wd_mult = 0;
  b.wd_mult = 0;
  auto kv = kvstore::KVStore::Create("local", {});
  ASSERT_TRUE(kv.ok()) << kv.status();
  std::vector<float> w0 = {1, 1}, b0 = {3};
  ASSERT_TRUE((*kv)->Init({0, 1}, {w0, b0}, Soon()).ok());
  ASSERT_TRUE(
      (*kv)
          ->SetOptimizer(MakeOptimizerConfig(o, 1, 0, 1, {&w, &b}), Soon())
          .ok());
  std::vector<float> gw = {4, 8}, gb = {4}, w1(2), b1(1);
  auto h = (*kv)->PushPull(0, {gw}, absl::MakeSpan(w1), 0);
  ASSERT_TRUE(h.ok() && (*kv)->Wait(*h, Soon()).ok());
  h = (*kv)->PushPull(1, {gb}, absl::MakeSpan(b1), 0);
  ASSERT_TRUE(h.ok() && (*kv)->Wait(*h, Soon()).ok());
  EXPECT_FLOAT_EQ(w1[0], 1 - 0.5 * 2 * 4 / 4);
  EXPECT_FLOAT_EQ(w1[1], 1 - 0.5 * 2 * 8 / 4);
  EXPECT_FLOAT_EQ(b1[0], 3 - 0.5 * 4 / 4);
}

}  // namespace
}  // namespace worker
}  // namespace pstrain
