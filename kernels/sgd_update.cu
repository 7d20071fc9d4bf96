#include "kernels/sgd_update_gpu.h"

namespace pstrain {
namespace kernels {
namespace {

__global__ void SgdUpdateKernel(float* __restrict__ w,
                                const float* __restrict__ g, float lr,
                                int64_t n) {
  // Grid-stride loop: any grid size covers any n.
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       i < n; i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    w[i] -= lr * g[i];
  }
}

}  // namespace

cudaError_t SgdUpdateGpu(float* weights, const float* grads, float lr,
                         int64_t n, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  constexpr int kThreads = 256;
  const int64_t wanted = (n + kThreads - 1) / kThreads;
  const int blocks = static_cast<int>(wanted < 4096 ? wanted : 4096);
  SgdUpdateKernel<<<blocks, kThreads, 0, stream>>>(weights, grads, lr, n);
  return cudaPeekAtLastError();
}

}  // namespace kernels
}  // namespace pstrain
