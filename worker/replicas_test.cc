#include "worker/replicas.h"

#include <cmath>
#include <random>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace pstrain {
namespace worker {
namespace {

absl::Time Soon() { return absl::Now() + absl::Seconds(60); }

std::unique_ptr<Replicas> Make(int devices, int batch) {
  auto r = Replicas::Create("lenet", 0, 10, {1, 28, 28}, batch, devices);
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return nullptr;
  EXPECT_TRUE(nn::Initialize((*r)->net(0), "xavier", 7).ok());
  EXPECT_TRUE((*r)->CopyWeightsFromFirst(Soon()).ok());
  return std::move(*r);
}

// Largest |a - b| relative to the largest |a| of the array.
double RelativeDiff(absl::Span<const float> a, absl::Span<const float> b) {
  double diff = 0, scale = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, static_cast<double>(std::fabs(a[i] - b[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(a[i])));
  }
  return diff / scale;
}

TEST(ReplicasTest, TwoDevicesSumToTheGradientOfOne) {
  constexpr int kBatch = 8;
  auto one = Make(1, kBatch), two = Make(2, kBatch);
  ASSERT_TRUE(one && two);
  ASSERT_EQ(two->size(), 2);
  ASSERT_EQ(two->per_device_batch(), kBatch / 2);
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  std::vector<float> x(kBatch * 28 * 28), labels(kBatch);
  for (auto& v : x) v = nd(rng);
  for (int i = 0; i < kBatch; ++i) labels[i] = static_cast<float>(i % 10);
  ASSERT_TRUE(one->Step(x, labels, true, Soon()).ok());
  ASSERT_TRUE(two->Step(x, labels, true, Soon()).ok());
  // Each replica saw its half of the batch.
  EXPECT_EQ(std::vector<float>(two->labels(1).begin(), two->labels(1).end()),
            std::vector<float>(labels.begin() + kBatch / 2, labels.end()));
  const auto& params = one->params(0);
  ASSERT_EQ(params.size(), two->params(0).size());
  for (size_t i = 0; i < params.size(); ++i) {
    auto grads = two->Grads(i);
    ASSERT_EQ(grads.size(), 2u);
    std::vector<float> sum(grads[0].begin(), grads[0].end());
    for (size_t j = 0; j < sum.size(); ++j) sum[j] += grads[1][j];
    EXPECT_LT(RelativeDiff(params[i]->grad.span(), sum), 1e-5)
        << params[i]->name;
    // Both replicas really computed something different.
    EXPECT_GT(RelativeDiff(grads[0], grads[1]), 1e-3) << params[i]->name;
  }
  // The probabilities of each half match the single device's rows.
  auto p1 = one->probabilities(0).span();
  for (int d = 0; d < 2; ++d) {
    auto pd = two->probabilities(d).span();
    EXPECT_LT(
        RelativeDiff(p1.subspan(d * (kBatch / 2) * 10, (kBatch / 2) * 10), pd),
        1e-5);
  }
}

TEST(ReplicasTest, CopyWeightsFromFirstMakesReplicasEqual) {
  auto two = Make(2, 4);
  ASSERT_TRUE(two);
  for (float& v : two->params(0)[0]->value.span()) v += 0.5f;
  ASSERT_TRUE(two->CopyWeightsFromFirst(Soon()).ok());
  for (size_t i = 0; i < two->params(0).size(); ++i) {
    auto a = two->params(0)[i]->value.span(),
         b = two->params(1)[i]->value.span();
    EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin())) << i;
  }
}

TEST(ReplicasTest, RejectsUnevenSplitAndWrongSizes) {
  auto bad = Replicas::Create("lenet", 0, 10, {1, 28, 28}, 9, 2);
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--batch_size 9"), std::string::npos);
  bad = Replicas::Create("lenet", 0, 10, {1, 28, 28}, 4, 2, {0});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("--gpus 0 for 2 devices"),
            std::string::npos)
      << bad.status();
  auto two = Make(2, 4);
  ASSERT_TRUE(two);
  EXPECT_EQ(
      two->Step(std::vector<float>(3), std::vector<float>(4), true, Soon())
          .code(),
      absl::StatusCode::kInvalidArgument);
  // Still usable after a refused step.
  std::vector<float> x(4 * 28 * 28, 0.1f);
  EXPECT_TRUE(two->Step(x, {0, 1, 2, 3}, false, Soon()).ok());
}

}  // namespace
}  // namespace worker
}  // namespace pstrain
