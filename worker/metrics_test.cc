#include "worker/metrics.h"

#include <cmath>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

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

// The JSON of a "benchmark: {...}" line (fails the test for another line).
nlohmann::json BenchmarkJson(const BenchmarkSummary& s) {
  const std::string line = BenchmarkLine(s);
  const std::string prefix = "benchmark: ";
  EXPECT_EQ(line.substr(0, prefix.size()), prefix) << line;
  EXPECT_EQ(line.find('\n'), std::string::npos) << line;
  const nlohmann::json j =
      nlohmann::json::parse(line.substr(prefix.size()), nullptr, false);
  EXPECT_TRUE(j.is_object()) << line;
  return j;
}

BenchmarkSummary Summary() {
  BenchmarkSummary s;
  s.rank = 3;
  s.devices = 4;
  s.batch_size = 64;
  s.batches = 10;
  s.warmup_batches = 2;
  s.time_dilation = 2;
  s.wall_seconds = 4;
  // 2 s of emulated time: 1.5 + 0.2 + 0.1 + 0.2 other.
  s.compute_s = 1.5;
  s.push_wait_s = 0.2;
  s.pull_wait_s = 0.1;
  return s;
}

TEST(BenchmarkLineTest, IsOneLineOfJsonWithTheRate) {
  const nlohmann::json j = BenchmarkJson(Summary());
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["rank"], 3);
  EXPECT_EQ(j["devices"], 4);
  EXPECT_EQ(j["batch_size"], 64);
  EXPECT_EQ(j["batches"], 10);
  EXPECT_EQ(j["warmup_batches"], 2);
  EXPECT_DOUBLE_EQ(j["time_dilation"].get<double>(), 2);
  EXPECT_DOUBLE_EQ(j["wall_seconds"].get<double>(), 4);
  // 10 batches of 64 in 4 s, dilated 2x: 320 images/s on the emulated
  // machine.
  EXPECT_DOUBLE_EQ(j["images_per_sec"].get<double>(), 10.0 * 64 / 4 * 2);
  EXPECT_DOUBLE_EQ(j["compute_s"].get<double>(), 1.5);
  EXPECT_DOUBLE_EQ(j["push_wait_s"].get<double>(), 0.2);
  EXPECT_DOUBLE_EQ(j["pull_wait_s"].get<double>(), 0.1);
  EXPECT_NEAR(j["other_s"].get<double>(), 0.2, 1e-12);
}

TEST(BenchmarkLineTest, WithoutDilationTheRateIsTheWallRate) {
  BenchmarkSummary s = Summary();
  s.time_dilation = 1;
  s.compute_s = 3;
  const nlohmann::json j = BenchmarkJson(s);
  EXPECT_DOUBLE_EQ(j["images_per_sec"].get<double>(), 10.0 * 64 / 4);
  EXPECT_NEAR(j["other_s"].get<double>(), 4 - 3 - 0.2 - 0.1, 1e-12);
}

TEST(BenchmarkLineTest, DataAndOptimizerArePartsOfTheSplit) {
  BenchmarkSummary s = Summary();
  s.data_s = 0.05;
  s.optimizer_s = 0.1;
  const nlohmann::json j = BenchmarkJson(s);
  EXPECT_DOUBLE_EQ(j["data_s"].get<double>(), 0.05);
  EXPECT_DOUBLE_EQ(j["optimizer_s"].get<double>(), 0.1);
  EXPECT_NEAR(j["other_s"].get<double>(), 0.2 - 0.05 - 0.1, 1e-12);
}

TEST(BenchmarkLineTest, OtherIsNeverNegative) {
  BenchmarkSummary s = Summary();
  s.compute_s = 5;  // More than the 2 s of emulated wall time.
  nlohmann::json j = BenchmarkJson(s);
  EXPECT_EQ(j["other_s"].get<double>(), 0);
  s = Summary();
  s.pull_wait_s = 1;  // 1.5 + 0.2 + 1 > 2.
  j = BenchmarkJson(s);
  EXPECT_EQ(j["other_s"].get<double>(), 0);
}

TEST(BenchmarkLineTest, NoTimeGivesNoRate) {
  BenchmarkSummary s = Summary();
  s.wall_seconds = 0;
  const nlohmann::json j = BenchmarkJson(s);
  // 0, not inf (which would not even be JSON).
  EXPECT_EQ(j["images_per_sec"].get<double>(), 0);
  EXPECT_EQ(j["other_s"].get<double>(), 0);
}

}  // namespace
}  // namespace worker
}  // namespace pstrain
