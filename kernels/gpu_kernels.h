// The custom CUDA kernels behind gpu_ops.h, compiled by nvcc from
// gpu_ops.cu: a plain pointer-and-size interface with no shape checking
// (gpu_ops.cc checks shapes and calls these). Only built with --config=cuda.
//
// Every pointer is device memory of the current device; every function
// enqueues its work on `stream` and returns the launch error (cudaSuccess
// when enqueued). Layouts are NCHW; for per-channel kernels `hw` is the
// product of the dimensions after the channel axis (1 for [N, C]).
#ifndef PSTRAIN_KERNELS_GPU_KERNELS_H_
#define PSTRAIN_KERNELS_GPU_KERNELS_H_

#include <cuda_runtime.h>

#include <cstdint>

namespace pstrain {
namespace kernels {

// y[i] = a[i] + b[i]; y may alias a or b.
cudaError_t AddGpu(const float* a, const float* b, float* y, int64_t n,
                   cudaStream_t stream);
// y[i] = a[i] * b[i]; y may alias a or b.
cudaError_t MulGpu(const float* a, const float* b, float* y, int64_t n,
                   cudaStream_t stream);
// dst[i] = srcs[0][i] + ... + srcs[count - 1][i]. `srcs` is a host array of
// `count` >= 1 device pointers; dst may be one of them.
cudaError_t SumGpu(const float* const* srcs, int count, float* dst, int64_t n,
                   cudaStream_t stream);

// y[r * cols + j] += bias[j] for r < rows, j < cols.
cudaError_t AddRowBiasGpu(float* y, const float* bias, int64_t rows,
                          int64_t cols, cudaStream_t stream);
// out[j] = sum over r < rows of x[r * cols + j].
cudaError_t SumColumnsGpu(const float* x, int64_t rows, int64_t cols,
                          float* out, cudaStream_t stream);

// Row-wise softmax of logits [n, c] into probs; when `losses` is not null
// also losses[r] = -log(max(1e-30, probs[r, labels[r]])). REQUIRES: every
// label is an integer in [0, c) (stored as float).
cudaError_t SoftmaxCrossEntropyGpu(const float* logits, const float* labels,
                                   int64_t n, int64_t c, float* probs,
                                   float* losses, cudaStream_t stream);
// dlogits[r, j] = scale * (probs[r, j] - (j == labels[r])).
cudaError_t SoftmaxCrossEntropyBackwardGpu(const float* probs,
                                           const float* labels, int64_t n,
                                           int64_t c, float scale,
                                           float* dlogits, cudaStream_t stream);

struct BatchNormShape {
  int64_t n = 0;   // Batch.
  int64_t c = 0;   // Channels.
  int64_t hw = 1;  // Elements per (sample, channel).
};

// Batch statistics per channel (biased variance), y = g * (x - mean) *
// inv_std + beta with g = fix_gamma ? 1 : gamma; writes mean and inv_std
// = 1 / sqrt(var + eps) and updates moving = moving * momentum + batch *
// (1 - momentum) for mean and variance.
cudaError_t BatchNormForwardTrainingGpu(const float* x, const float* gamma,
                                        const float* beta, BatchNormShape s,
                                        float eps, float momentum,
                                        bool fix_gamma, float* y, float* mean,
                                        float* inv_std, float* moving_mean,
                                        float* moving_var, cudaStream_t stream);
// y = g * (x - moving_mean) / sqrt(moving_var + eps) + beta.
cudaError_t BatchNormForwardInferenceGpu(
    const float* x, const float* gamma, const float* beta,
    const float* moving_mean, const float* moving_var, BatchNormShape s,
    float eps, bool fix_gamma, float* y, cudaStream_t stream);
// Gradients of the training forward: dbeta = sum dy, dgamma = sum dy * xhat
// (0 with fix_gamma), dx = g * inv_std / M * (M * dy - dbeta - xhat * sum dy
// * xhat) with M = n * hw. dx may be null.
cudaError_t BatchNormBackwardGpu(const float* x, const float* gamma,
                                 const float* dy, const float* mean,
                                 const float* inv_std, BatchNormShape s,
                                 bool fix_gamma, float* dx, float* dgamma,
                                 float* dbeta, cudaStream_t stream);

// Inverted dropout with a counter-based generator: element i is kept when
// a uniform number hashed from (seed, i) is >= p; mask[i] = kept ? 1 / (1 -
// p) : 0 and y[i] = x[i] * mask[i]. The same seed gives the same mask.
// REQUIRES: 0 <= p < 1.
cudaError_t DropoutForwardGpu(const float* x, int64_t n, float p, uint64_t seed,
                              float* y, float* mask, cudaStream_t stream);

}  // namespace kernels
}  // namespace pstrain

#endif  // PSTRAIN_KERNELS_GPU_KERNELS_H_
