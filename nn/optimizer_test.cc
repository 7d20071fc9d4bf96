// Optimizer math against straightforward double-precision reference
// formulas (MXNet's update rules), and the schedules' update-count rules.
#include "nn/optimizer.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace pstrain {
namespace nn {
namespace {

proto::OptimizerConfig Base(proto::OptimizerConfig::Kind kind) {
  proto::OptimizerConfig c;
  c.set_kind(kind);
  c.set_learning_rate(0.1);
  c.set_weight_decay(0.01);
  c.set_rescale_grad(0.5);
  return c;
}

const std::vector<std::vector<float>> kGrads = {
    {1.0f, -2.0f, 0.5f}, {0.3f, 4.0f, -1.0f}, {-0.7f, 0.1f, 2.0f}};

std::vector<float> RunSteps(const proto::OptimizerConfig& c) {
  auto opt = Optimizer::Create(c);
  EXPECT_TRUE(opt.ok()) << opt.status();
  std::vector<float> w = {1.0f, 2.0f, -3.0f};
  for (const auto& g : kGrads) (*opt)->Update(5, 0, absl::MakeSpan(w), g);
  return w;
}

void ExpectNear(const std::vector<float>& got,
                const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], 1e-5 * (1 + std::fabs(want[i]))) << i;
}

TEST(OptimizerTest, SgdWithMomentumClipAndMultipliers) {
  proto::OptimizerConfig c = Base(proto::OptimizerConfig::SGD);
  c.set_momentum(0.9);
  c.set_clip_gradient(0.8);
  (*c.mutable_lr_mult())[5] = 2.0;
  (*c.mutable_wd_mult())[5] = 0.5;
  std::vector<double> w = {1, 2, -3}, m(3, 0);
  const double lr = 0.2, wd = 0.005;
  for (const auto& g : kGrads) {
    for (int i = 0; i < 3; ++i) {
      double gi = std::max(-0.8, std::min(0.8, 0.5 * g[i]));
      m[i] = 0.9 * m[i] - lr * (gi + wd * w[i]);
      w[i] += m[i];
    }
  }
  ExpectNear(RunSteps(c), w);
}

TEST(OptimizerTest, PlainSgd) {
  std::vector<double> w = {1, 2, -3};
  for (const auto& g : kGrads) {
    for (int i = 0; i < 3; ++i) w[i] -= 0.1 * (0.5 * g[i] + 0.01 * w[i]);
  }
  ExpectNear(RunSteps(Base(proto::OptimizerConfig::SGD)), w);
}

TEST(OptimizerTest, Nag) {
  proto::OptimizerConfig c = Base(proto::OptimizerConfig::NAG);
  c.set_momentum(0.9);
  std::vector<double> w = {1, 2, -3}, m(3, 0);
  for (const auto& g : kGrads) {
    for (int i = 0; i < 3; ++i) {
      const double gi = 0.5 * g[i] + 0.01 * w[i];
      m[i] = 0.9 * m[i] + gi;
      w[i] -= 0.1 * (gi + 0.9 * m[i]);
    }
  }
  ExpectNear(RunSteps(c), w);
}

TEST(OptimizerTest, Adam) {
  proto::OptimizerConfig c = Base(proto::OptimizerConfig::ADAM);
  c.set_beta1(0.9);
  c.set_beta2(0.999);
  c.set_epsilon(1e-8);
  std::vector<double> w = {1, 2, -3}, m(3, 0), v(3, 0);
  int t = 0;
  for (const auto& g : kGrads) {
    ++t;
    const double lr =
        0.1 * std::sqrt(1 - std::pow(0.999, t)) / (1 - std::pow(0.9, t));
    for (int i = 0; i < 3; ++i) {
      const double gi = 0.5 * g[i] + 0.01 * w[i];
      m[i] = 0.9 * m[i] + 0.1 * gi;
      v[i] = 0.999 * v[i] + 0.001 * gi * gi;
      w[i] -= lr * m[i] / (std::sqrt(v[i]) + 1e-8);
    }
  }
  ExpectNear(RunSteps(c), w);
}

// Arrays longer than the 16-element blocks the update loops are vectorised
// in, with a remainder: every element follows the formula.
TEST(OptimizerTest, LongArraysFollowTheFormulaInEveryElement) {
  const int n = 16 * 3 + 5;
  std::vector<std::vector<float>> grads(3, std::vector<float>(n));
  std::vector<float> w0(n);
  for (int i = 0; i < n; ++i) {
    w0[i] = 0.1f * static_cast<float>((i * 7) % 11) - 0.5f;
    for (int s = 0; s < 3; ++s)
      grads[s][i] = 0.3f * static_cast<float>((i * 5 + s * 3) % 13) - 1.8f;
  }
  for (int variant = 0; variant < 3; ++variant) {
    SCOPED_TRACE(variant == 0   ? "sgd"
                 : variant == 1 ? "momentum and clip"
                                : "nag");
    proto::OptimizerConfig c = Base(variant == 2 ? proto::OptimizerConfig::NAG
                                                 : proto::OptimizerConfig::SGD);
    if (variant > 0) c.set_momentum(0.9);
    if (variant == 1) c.set_clip_gradient(0.6);
    auto opt = Optimizer::Create(c);
    ASSERT_TRUE(opt.ok());
    std::vector<float> w = w0;
    std::vector<double> want(w0.begin(), w0.end()), m(n, 0);
    for (const auto& g : grads) {
      (*opt)->Update(3, 0, absl::MakeSpan(w), g);
      for (int i = 0; i < n; ++i) {
        double gi = 0.5 * g[i];
        if (variant == 1) gi = std::max(-0.6, std::min(0.6, gi));
        gi += 0.01 * want[i];
        if (variant == 0) {
          want[i] -= 0.1 * gi;
        } else if (variant == 1) {
          m[i] = 0.9 * m[i] - 0.1 * gi;
          want[i] += m[i];
        } else {
          m[i] = 0.9 * m[i] + gi;
          want[i] -= 0.1 * (gi + 0.9 * m[i]);
        }
      }
    }
    ExpectNear(w, want);
  }
}

TEST(OptimizerTest, NoOptimizerStoresTheGradient) {
  proto::OptimizerConfig c;
  auto opt = Optimizer::Create(c);
  std::vector<float> w = {1, 2};
  (*opt)->Update(0, 0, absl::MakeSpan(w), std::vector<float>{7, 8});
  EXPECT_EQ(w, (std::vector<float>{7, 8}));
}

TEST(ScheduleTest, FactorAndMultiFactorFollowMxnetCounts) {
  proto::OptimizerConfig c;
  c.set_learning_rate(1.0);
  auto* s = c.mutable_schedule();
  s->set_kind(proto::LearningRateSchedule::FACTOR);
  s->set_factor(0.5);
  s->set_step(10);
  // MXNet: lr changes once num_update > count + step.
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(c, 0), 1.0);
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(c, 10), 1.0);
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(c, 11), 0.5);
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(c, 21), 0.25);
  s->set_stop_factor_lr(0.3);
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(c, 21), 0.3);
  s->set_kind(proto::LearningRateSchedule::MULTI_FACTOR);
  s->add_steps(30);
  s->add_steps(60);
  s->set_factor(0.1);
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(c, 30), 1.0);
  EXPECT_NEAR(ScheduledLearningRate(c, 31), 0.1, 1e-12);
  EXPECT_NEAR(ScheduledLearningRate(c, 61), 0.01, 1e-12);
}

TEST(ScheduleTest, UpdateCountIsTheLargestPerKeyCount) {
  proto::OptimizerConfig c;
  c.set_kind(proto::OptimizerConfig::SGD);
  c.set_learning_rate(1.0);
  auto* s = c.mutable_schedule();
  s->set_kind(proto::LearningRateSchedule::MULTI_FACTOR);
  s->add_steps(2);
  s->set_factor(0.5);
  auto opt = Optimizer::Create(c);
  std::vector<float> w = {0}, g = {1};
  // Two slices of key 1 updated together count once per round.
  for (int round = 1; round <= 3; ++round) {
    (*opt)->Update(1, 0, absl::MakeSpan(w), g);
    std::vector<float> w2 = {0};
    (*opt)->Update(1, 100, absl::MakeSpan(w2), g);
    EXPECT_EQ((*opt)->num_update(), round);
  }
  // Rounds 1, 2 at lr 1, round 3 at lr 0.5 (num_update 3 > 2).
  EXPECT_FLOAT_EQ(w[0], -2.5f);
}

TEST(OptimizerTest, ImportedStateContinuesExactlyWithTheSchedule) {
  // Checkpoints (server/checkpoint.h): an optimizer given another's state
  // makes the same next updates, including where the schedule is.
  for (auto kind : {proto::OptimizerConfig::SGD, proto::OptimizerConfig::NAG,
                    proto::OptimizerConfig::ADAM}) {
    proto::OptimizerConfig c;
    c.set_kind(kind);
    c.set_learning_rate(0.1);
    c.set_momentum(0.9);
    c.set_beta1(0.9);
    c.set_beta2(0.999);
    c.set_epsilon(1e-8);
    c.mutable_schedule()->set_kind(proto::LearningRateSchedule::MULTI_FACTOR);
    c.mutable_schedule()->set_factor(0.1);
    c.mutable_schedule()->add_steps(3);
    auto a = Optimizer::Create(c);
    auto b = Optimizer::Create(c);
    ASSERT_TRUE(a.ok() && b.ok());
    std::vector<float> wa = {1, -2, 3}, g = {0.5f, 0.25f, -1};
    for (int i = 0; i < 3; ++i) (*a)->Update(7, 0, absl::MakeSpan(wa), g);
    ASSERT_TRUE((*b)->ImportState((*a)->ExportState()).ok());
    EXPECT_EQ((*b)->num_update(), 3);
    std::vector<float> wb = wa;
    // Update 4 is past the schedule's step: lr 0.01 for both.
    for (int i = 0; i < 2; ++i) {
      (*a)->Update(7, 0, absl::MakeSpan(wa), g);
      (*b)->Update(7, 0, absl::MakeSpan(wb), g);
    }
    EXPECT_EQ(wa, wb) << kind;
    EXPECT_EQ((*b)->num_update(), 5);
  }
  auto o = Optimizer::Create([] {
    proto::OptimizerConfig c;
    c.set_kind(proto::OptimizerConfig::SGD);
    return c;
  }());
  ASSERT_TRUE(o.ok());
  OptimizerState bad;
  bad.slots.push_back({1, 0, 2, {1, 2}, {1}});
  EXPECT_FALSE((*o)->ImportState(bad).ok());
}

TEST(OptimizerTest, BadConfigsAreRefused) {
  proto::OptimizerConfig c = Base(proto::OptimizerConfig::SGD);
  c.set_momentum(1.5);
  EXPECT_FALSE(Optimizer::Create(c).ok());
  c = Base(proto::OptimizerConfig::SGD);
  c.mutable_schedule()->set_kind(proto::LearningRateSchedule::MULTI_FACTOR);
  EXPECT_FALSE(Optimizer::Create(c).ok());
  c = Base(proto::OptimizerConfig::ADAM);
  EXPECT_FALSE(Optimizer::Create(c).ok());  // beta/epsilon unset: epsilon 0.
}

}  // namespace
}  // namespace nn
}  // namespace pstrain
