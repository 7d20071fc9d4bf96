// Compares the CUDA SGD update with the CPU reference. Built only with
// --config=cuda and tagged "gpu"; where no GPU is usable it skips and says so.
#include "kernels/sgd_update_gpu.h"

#include <cuda_runtime.h>

#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda_check.h"
#include "kernels/sgd_update.h"

namespace pstrain {
namespace kernels {
namespace {

bool HaveGpu(std::string* why) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    *why = std::string("cudaGetDeviceCount failed: ") + cudaGetErrorString(err);
    return false;
  }
  if (count == 0) {
    *why = "no CUDA device present";
    return false;
  }
  return true;
}

TEST(SgdUpdateGpuTest, MatchesCpuReference) {
  std::string why;
  if (!HaveGpu(&why)) GTEST_SKIP() << "No GPU, GPU test skipped: " << why;

  for (int64_t n : {1, 255, 256, 257, 1 << 20, (1 << 22) + 3}) {
    std::mt19937 rng(42);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    std::vector<float> w(n), g(n);
    for (auto& x : w) x = dist(rng);
    for (auto& x : g) x = dist(rng);
    std::vector<float> want = w;
    ASSERT_TRUE(SgdUpdateCpu(absl::MakeSpan(want), g, 0.01f).ok());

    float *dw = nullptr, *dg = nullptr;
    PSTRAIN_CUDA_CHECK(cudaMalloc(&dw, n * sizeof(float)));
    PSTRAIN_CUDA_CHECK(cudaMalloc(&dg, n * sizeof(float)));
    PSTRAIN_CUDA_CHECK(
        cudaMemcpy(dw, w.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    PSTRAIN_CUDA_CHECK(
        cudaMemcpy(dg, g.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    PSTRAIN_CUDA_CHECK(SgdUpdateGpu(dw, dg, 0.01f, n, nullptr));
    std::vector<float> got(n);
    PSTRAIN_CUDA_CHECK(
        cudaMemcpy(got.data(), dw, n * sizeof(float), cudaMemcpyDeviceToHost));
    PSTRAIN_CUDA_CHECK(cudaFree(dw));
    PSTRAIN_CUDA_CHECK(cudaFree(dg));
    for (int64_t i = 0; i < n; ++i) {
      // The same single multiply-subtract; allow for FMA contraction.
      ASSERT_NEAR(got[i], want[i], 1e-6f) << "n=" << n << " i=" << i;
    }
  }
}

}  // namespace
}  // namespace kernels
}  // namespace pstrain
