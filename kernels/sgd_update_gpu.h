// The CUDA twin of SgdUpdateCpu (sgd_update.h). Only built with
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

}  // namespace kernels
}  // namespace pstrain

#endif  // PSTRAIN_KERNELS_SGD_UPDATE_GPU_H_
