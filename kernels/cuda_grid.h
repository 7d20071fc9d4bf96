// Launch geometry shared by pstrain's elementwise CUDA kernels (included
// only by .cu files; only built with --config=cuda).
#ifndef PSTRAIN_KERNELS_CUDA_GRID_H_
#define PSTRAIN_KERNELS_CUDA_GRID_H_

#include <cstdint>

namespace pstrain {
namespace kernels {

constexpr int kCudaThreads = 256;

// Blocks for a grid-stride loop over n elements: enough to fill any GPU,
// never more than needed.
inline int CudaBlocks(int64_t n) {
  const int64_t wanted = (n + kCudaThreads - 1) / kCudaThreads;
  return static_cast<int>(wanted < 4096 ? (wanted > 0 ? wanted : 1) : 4096);
}

}  // namespace kernels
}  // namespace pstrain

// Grid-stride loop (Caffe's CUDA_KERNEL_LOOP): any grid covers any n.
#define PSTRAIN_CUDA_KERNEL_LOOP(i, n)                                  \
  for (int64_t i =                                                      \
           blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; \
       i < (n); i += static_cast<int64_t>(blockDim.x) * gridDim.x)

#endif  // PSTRAIN_KERNELS_CUDA_GRID_H_
