// Replicas on GPUs (--gpus) against replicas on the CPU: the same gradients
// on the host mirrors (what the KVStore pushes), probabilities, moving
// statistics and per-layer callbacks; two GPUs sum to one; a missing GPU is
// NotFound naming it.
//
// Built only with --config=cuda and tagged "gpu"; tests that need a GPU
// skip and say why where none is usable.
#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "worker/replicas.h"

namespace pstrain {
namespace worker {
namespace {

absl::Time Soon() { return absl::Now() + absl::Seconds(60); }

constexpr int kBatch = 8;

// `network` ("resnet" is CIFAR ResNet-20) for 3x32x32 images, replica 0
// initialized and copied to the others.
absl::StatusOr<std::unique_ptr<Replicas>> Make(const std::string& network,
                                               int devices,
                                               const std::vector<int>& gpus) {
  auto r = Replicas::Create(network, network == "resnet" ? 20 : 0, 10,
                            {3, 32, 32}, kBatch, devices, gpus);
  if (!r.ok()) return r.status();
  absl::Status s = nn::Initialize((*r)->net(0), "xavier", 7);
  if (s.ok()) s = (*r)->CopyWeightsFromFirst(Soon());
  if (!s.ok()) return s;
  return r;
}

// Largest |a - b| relative to the largest |b| of the array; infinite when
// the sizes differ or b is empty (so that reading an empty or wrong buffer,
// e.g. a GPU replica's host Network::probabilities(), fails).
double RelativeDiff(absl::Span<const float> a, absl::Span<const float> b) {
  if (b.empty() || a.size() != b.size()) return INFINITY;
  double diff = 0, scale = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, static_cast<double>(std::fabs(a[i] - b[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(b[i])));
  }
  return diff / scale;
}

struct Batch {
  std::vector<float> x, labels;
};

Batch RandomBatch(uint32_t seed) {
  Batch b;
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  b.x.resize(kBatch * 3 * 32 * 32);
  for (float& v : b.x) v = nd(rng);
  for (int i = 0; i < kBatch; ++i)
    b.labels.push_back(static_cast<float>(i % 10));
  return b;
}

// Replicas on `gpus`, or a skip when they do not exist.
#define MAKE_OR_SKIP(var, network, devices, gpus)                \
  auto var##_or = Make(network, devices, gpus);                  \
  if (!var##_or.ok() &&                                          \
      var##_or.status().code() == absl::StatusCode::kNotFound) { \
    GTEST_SKIP() << "GPU test skipped: " << var##_or.status();   \
  }                                                              \
  ASSERT_TRUE(var##_or.ok()) << var##_or.status();               \
  std::unique_ptr<Replicas> var = std::move(*var##_or)

// ResNet-20: batch norm's moving statistics come back to the host mirrors.
TEST(ReplicasGpuTest, OneGpuMatchesTheCpu) {
  MAKE_OR_SKIP(gpu, "resnet", 1, std::vector<int>{0});
  auto cpu = Make("resnet", 1, {});
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  std::vector<std::string> cpu_calls, gpu_calls;
  auto callbacks = [](std::vector<std::string>* calls) {
    nn::Network::ParamsNeeded needed =
        [calls](const std::vector<nn::Param*>& ps) {
          calls->push_back("needed " + ps.front()->name);
          return absl::OkStatus();
        };
    nn::Network::GradsReady ready = [calls](const std::vector<nn::Param*>& ps) {
      calls->push_back("ready " + ps.front()->name);
    };
    return std::make_pair(needed, ready);
  };
  const Batch b = RandomBatch(3);
  auto [cn, cr] = callbacks(&cpu_calls);
  auto [gn, gr] = callbacks(&gpu_calls);
  ASSERT_TRUE((*cpu)->Step(b.x, b.labels, true, Soon(), cn, cr).ok());
  ASSERT_TRUE(gpu->Step(b.x, b.labels, true, Soon(), gn, gr).ok());
  EXPECT_EQ(gpu_calls, cpu_calls);
  const auto& params = (*cpu)->params(0);
  for (size_t i = 0; i < params.size(); ++i) {
    if (params[i]->aux) {
      EXPECT_LT(RelativeDiff(gpu->params(0)[i]->value.span(),
                             params[i]->value.span()),
                1e-4)
          << params[i]->name;
    } else {
      EXPECT_LT(RelativeDiff(gpu->Grads(i)[0], (*cpu)->Grads(i)[0]), 1e-4)
          << params[i]->name;
    }
  }
  EXPECT_LT(RelativeDiff(gpu->probabilities(0).span(),
                         (*cpu)->probabilities(0).span()),
            1e-4);
  // Evaluation (moving statistics) after the host weights changed: the GPU
  // replica uploads them.
  for (size_t i = 0; i < params.size(); ++i) {
    if (params[i]->aux) continue;
    for (float& v : params[i]->value.span()) v *= 0.9f;
    std::copy(params[i]->value.span().begin(), params[i]->value.span().end(),
              gpu->params(0)[i]->value.data());
  }
  ASSERT_TRUE((*cpu)->Step(b.x, b.labels, false, Soon()).ok());
  ASSERT_TRUE(gpu->Step(b.x, b.labels, false, Soon()).ok());
  EXPECT_LT(RelativeDiff(gpu->probabilities(0).span(),
                         (*cpu)->probabilities(0).span()),
            1e-4);
}

// An MLP: no batch statistics, so half batches sum exactly to the whole.
TEST(ReplicasGpuTest, TwoGpusSumToTheGradientOfOne) {
  MAKE_OR_SKIP(two, "mlp", 2, (std::vector<int>{0, 1}));
  auto one = Make("mlp", 1, {});
  ASSERT_TRUE(one.ok()) << one.status();
  const Batch b = RandomBatch(5);
  ASSERT_TRUE((*one)->Step(b.x, b.labels, true, Soon()).ok());
  ASSERT_TRUE(two->Step(b.x, b.labels, true, Soon()).ok());
  for (size_t i = 0; i < two->params(0).size(); ++i) {
    if (two->params(0)[i]->aux) continue;
    auto grads = two->Grads(i);
    ASSERT_EQ(grads.size(), 2u);
    std::vector<float> sum(grads[0].begin(), grads[0].end());
    for (size_t j = 0; j < sum.size(); ++j) sum[j] += grads[1][j];
    EXPECT_LT(RelativeDiff(sum, (*one)->Grads(i)[0]), 1e-4)
        << two->params(0)[i]->name;
  }
}

TEST(ReplicasGpuTest, MissingGpuIsNotFoundAndNamed) {
  auto r = Replicas::Create("lenet", 0, 10, {1, 28, 28}, 4, 1, {977});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound) << r.status();
  EXPECT_NE(r.status().message().find("GPU 977"), absl::string_view::npos)
      << r.status();
}

}  // namespace
}  // namespace worker
}  // namespace pstrain
