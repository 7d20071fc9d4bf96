// The CUDA twins of the SGD updates: SgdUpdateCpu (sgd_update.h) and SGD
// with momentum with MXNet's rule (nn/optimizer.h). Only built with
// --config=cuda.
#ifndef PSTRAIN_KERNELS_SGD_UPDATE_GPU_H_
#define PSTRAIN_KERNELS_SGD_UPDATE_GPU_H_

#include <cuda_runtime.h>

#include <cstdint>

namespace pstrain {
namespace kernels {

// Enqueues `weights[i] -= lr * grads[i]` for i < n on `stream`. Both
// pointers are device memory of the current device. Returns the launch
// error (cudaSuccess when enqueued); the update completes asynchronously.
cudaError_t SgdUpdateGpu(float* weights, const float* grads, float lr,
                         int64_t n, cudaStream_t stream);

// MXNet's sgd_mom_update (and sgd_update when momentum == 0).
struct SgdMomentumParams {
  float lr = 0.01f;
  float momentum = 0.9f;
  float weight_decay = 0.0f;
  float rescale_grad = 1.0f;
  // Gradients are clipped to [-clip_gradient, clip_gradient] after
  // rescaling when clip_gradient > 0.
  float clip_gradient = 0.0f;
};

// With g = clip(rescale_grad * grads[i]) + weight_decay * weights[i]:
//   momentum != 0: mom[i] = momentum * mom[i] - lr * g; weights[i] += mom[i]
//   momentum == 0: weights[i] -= lr * g (mom is not touched and may be null)
// for i < n, enqueued on `stream`; device memory of the current device.
// Returns the launch error.
cudaError_t SgdMomentumUpdateGpu(float* weights, const float* grads, float* mom,
                                 const SgdMomentumParams& p, int64_t n,
                                 cudaStream_t stream);

}  // namespace kernels
}  // namespace pstrain

#endif  // PSTRAIN_KERNELS_SGD_UPDATE_GPU_H_
