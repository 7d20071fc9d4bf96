#include "worker/metrics.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pstrain {
namespace worker {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Three samples, four classes.
const std::vector<float> kProbs = {
    0.1f,  0.6f, 0.2f, 0.1f,  // argmax 1
    0.4f,  0.3f, 0.2f, 0.1f,  // argmax 0
    0.25f, 0.2f, 0.3f, 0.25f  // argmax 2
};

TEST(MetricsTest, AccuracyTopKAndCrossEntropy) {
  Metrics m(/*top_k=*/2, /*cross_entropy=*/true);
  ASSERT_TRUE(m.Update(kProbs, {1, 1, 3}, 4).ok());
  auto nv = m.NameValues();
  ASSERT_EQ(nv.size(), 3u);
  EXPECT_EQ(nv[0].first, "accuracy");
  EXPECT_DOUBLE_EQ(nv[0].second, 1.0 / 3);
  EXPECT_EQ(nv[1].first, "top_k_accuracy_2");
  // Sample 2: label 1 is second best -> hit; sample 3: label 3 ties with
  // class 0 behind class 2 -> one higher -> hit.
  EXPECT_DOUBLE_EQ(nv[1].second, 1.0);
  EXPECT_EQ(nv[2].first, "cross-entropy");
  EXPECT_NEAR(nv[2].second,
              -(std::log(0.6) + std::log(0.3) + std::log(0.25)) / 3, 1e-6);
}

TEST(MetricsTest, MergingWorkersEqualsOneAccumulator) {
  Metrics all(0, false), a(0, false), b(0, false);
  ASSERT_TRUE(all.Update(kProbs, {1, 0, 0}, 4).ok());
  ASSERT_TRUE(
      a.Update(absl::MakeConstSpan(kProbs).subspan(0, 8), {1, 0}, 4).ok());
  ASSERT_TRUE(b.Update(absl::MakeConstSpan(kProbs).subspan(8), {0}, 4).ok());
  a.Merge(b);
  EXPECT_EQ(a.count(), 3);
  EXPECT_DOUBLE_EQ(a.NameValues()[0].second, all.NameValues()[0].second);
  Metrics c(0, false);
  c.AddSums(all.Sums());
  EXPECT_DOUBLE_EQ(c.NameValues()[0].second, 2.0 / 3);
}

TEST(MetricsTest, BadInputIsAnError) {
  Metrics m(0, false);
  EXPECT_THAT(std::string(m.Update(kProbs, {1, 1}, 4).message()),
              HasSubstr("12 outputs for 2 labels"));
  EXPECT_THAT(std::string(m.Update(kProbs, {1, 4, 0}, 4).message()),
              HasSubstr("label 4 of sample 1"));
  EXPECT_FALSE(m.Update(kProbs, {1, 0.5f, 0}, 4).ok());
  EXPECT_EQ(m.count(), 0);
}

TEST(MetricsTest, LogLinesMatchMxnet) {
  Metrics m(0, false);
  ASSERT_TRUE(m.Update(kProbs, {1, 1, 3}, 4).ok());
  EXPECT_EQ(
      BatchLine(0, 0, 20, 1234.5612, m),
      "Epoch[0] Batch [0-20]\tSpeed: 1234.56 samples/sec\taccuracy=0.333333");
  EXPECT_THAT(EpochMetricLines(3, "Validation", m),
              ElementsAre("Epoch[3] Validation-accuracy=0.333333"));
  EXPECT_EQ(TimeCostLine(3, 12.3456), "Epoch[3] Time cost=12.346");
}

}  // namespace
}  // namespace worker
}  // namespace pstrain
