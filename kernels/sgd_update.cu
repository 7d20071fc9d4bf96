#include "kernels/cuda_grid.h"
#include "kernels/sgd_update_gpu.h"

namespace pstrain {
namespace kernels {
namespace {

__global__ void SgdUpdateKernel(float* __restrict__ w,
                                const float* __restrict__ g, float lr,
                                int64_t n) {
  PSTRAIN_CUDA_KERNEL_LOOP(i, n) { w[i] -= lr * g[i]; }
}

__global__ void SgdMomentumUpdateKernel(float* __restrict__ w,
                                        const float* __restrict__ g,
                                        float* __restrict__ mom,
                                        SgdMomentumParams p, int64_t n) {
  PSTRAIN_CUDA_KERNEL_LOOP(i, n) {
    float grad = p.rescale_grad * g[i];
    if (p.clip_gradient > 0) {
      grad = fminf(p.clip_gradient, fmaxf(-p.clip_gradient, grad));
    }
    grad += p.weight_decay * w[i];
    if (mom == nullptr) {
      w[i] -= p.lr * grad;
    } else {
      const float m = p.momentum * mom[i] - p.lr * grad;
      mom[i] = m;
      w[i] += m;
    }
  }
}

}  // namespace

cudaError_t SgdUpdateGpu(float* weights, const float* grads, float lr,
                         int64_t n, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  SgdUpdateKernel<<<CudaBlocks(n), kCudaThreads, 0, stream>>>(weights, grads,
                                                              lr, n);
  return cudaPeekAtLastError();
}

cudaError_t SgdMomentumUpdateGpu(float* weights, const float* grads, float* mom,
                                 const SgdMomentumParams& p, int64_t n,
                                 cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  SgdMomentumUpdateKernel<<<CudaBlocks(n), kCudaThreads, 0, stream>>>(
      weights, grads, p.momentum != 0 ? mom : nullptr, p, n);
  return cudaPeekAtLastError();
}

}  // namespace kernels
}  // namespace pstrain
