// CUDA error handling for pstrain's GPU code (only built with --config=cuda).
#ifndef PSTRAIN_KERNELS_CUDA_CHECK_H_
#define PSTRAIN_KERNELS_CUDA_CHECK_H_

#include <cuda_runtime.h>

#include "glog/logging.h"

// CHECKs that a CUDA runtime call succeeded; a failure is a bug or a broken
// device, so it aborts with the error text.
#define PSTRAIN_CUDA_CHECK(expr)                                   \
  do {                                                             \
    cudaError_t pstrain_cuda_err_ = (expr);                        \
    CHECK_EQ(pstrain_cuda_err_, cudaSuccess)                       \
        << #expr << ": " << cudaGetErrorString(pstrain_cuda_err_); \
  } while (0)

#endif  // PSTRAIN_KERNELS_CUDA_CHECK_H_
