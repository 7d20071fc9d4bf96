// Custom CUDA kernels for gpu_ops.cc (declared in gpu_kernels.h): the
// operations cuDNN and cuBLAS do not provide with MXNet's semantics.
#include <cfloat>
#include <cstdint>

#include "kernels/cuda_grid.h"
#include "kernels/gpu_kernels.h"

namespace pstrain {
namespace kernels {
namespace {

// Threads of the per-row and per-channel reduction kernels. A multiple of
// 32, at most 1024 (BlockSum's 32 partials).
constexpr int kReduceThreads = 256;

__device__ __forceinline__ float WarpSum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    v += __shfl_down_sync(0xffffffffu, v, offset);
  }
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, offset));
  }
  return v;
}

// The sum (kMax: the maximum) of `v` over the block, returned to every
// thread. Every thread of the block must call it (the same number of
// times); blockDim.x must be a multiple of 32.
template <bool kMax>
__device__ float BlockReduce(float v) {
  __shared__ float partial[32];
  __shared__ float result;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  v = kMax ? WarpMax(v) : WarpSum(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const float identity = kMax ? -FLT_MAX : 0.0f;
    float w =
        lane < static_cast<int>(blockDim.x / 32) ? partial[lane] : identity;
    w = kMax ? WarpMax(w) : WarpSum(w);
    if (lane == 0) result = w;
  }
  __syncthreads();
  const float r = result;
  // The shared slots are reused by the next call.
  __syncthreads();
  return r;
}

__device__ __forceinline__ float BlockSum(float v) {
  return BlockReduce<false>(v);
}
__device__ __forceinline__ float BlockMax(float v) {
  return BlockReduce<true>(v);
}

__global__ void AddKernel(const float* a, const float* b, float* y, int64_t n) {
  PSTRAIN_CUDA_KERNEL_LOOP(i, n) { y[i] = a[i] + b[i]; }
}

__global__ void MulKernel(const float* a, const float* b, float* y, int64_t n) {
  PSTRAIN_CUDA_KERNEL_LOOP(i, n) { y[i] = a[i] * b[i]; }
}

constexpr int kSumFanIn = 8;
struct SumSources {
  const float* p[kSumFanIn];
};

// dst = (accumulate ? dst : 0) + src.p[0] + ... + src.p[count - 1]. Every
// thread reads all its inputs before writing, so dst may be a source.
__global__ void SumKernel(SumSources src, int count, bool accumulate,
                          float* dst, int64_t n) {
  PSTRAIN_CUDA_KERNEL_LOOP(i, n) {
    float v = accumulate ? dst[i] : src.p[0][i];
    for (int k = accumulate ? 0 : 1; k < count; ++k) v += src.p[k][i];
    dst[i] = v;
  }
}

__global__ void AddRowBiasKernel(float* y, const float* bias, int64_t rows,
                                 int64_t cols) {
  PSTRAIN_CUDA_KERNEL_LOOP(i, rows * cols) { y[i] += bias[i % cols]; }
}

__global__ void SumColumnsKernel(const float* x, int64_t rows, int64_t cols,
                                 float* out) {
  PSTRAIN_CUDA_KERNEL_LOOP(j, cols) {
    float s = 0.0f;
    for (int64_t r = 0; r < rows; ++r) s += x[r * cols + j];
    out[j] = s;
  }
}

// One block per row (grid-stride over rows).
__global__ void SoftmaxCrossEntropyKernel(const float* logits,
                                          const float* labels, int64_t n,
                                          int64_t c, float* probs,
                                          float* losses) {
  for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
    const float* z = logits + row * c;
    float* p = probs + row * c;
    float m = -FLT_MAX;
    for (int64_t j = threadIdx.x; j < c; j += blockDim.x) m = fmaxf(m, z[j]);
    m = BlockMax(m);
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
      const float e = expf(z[j] - m);
      p[j] = e;
      s += e;
    }
    const float inv = 1.0f / BlockSum(s);
    // Each thread rescales the entries it wrote itself.
    for (int64_t j = threadIdx.x; j < c; j += blockDim.x) p[j] *= inv;
    if (losses != nullptr && threadIdx.x == 0) {
      const int64_t label = static_cast<int64_t>(labels[row]);
      const float pl = expf(z[label] - m) * inv;
      losses[row] = -logf(fmaxf(1e-30f, pl));
    }
  }
}

__global__ void SoftmaxCrossEntropyBackwardKernel(const float* probs,
                                                  const float* labels,
                                                  int64_t n, int64_t c,
                                                  float scale, float* dlogits) {
  PSTRAIN_CUDA_KERNEL_LOOP(i, n * c) {
    const int64_t row = i / c;
    const int64_t j = i - row * c;
    const float onehot = j == static_cast<int64_t>(labels[row]) ? 1.0f : 0.0f;
    dlogits[i] = scale * (probs[i] - onehot);
  }
}

// Offset of the i-th element (i < n * hw) of channel `ch`.
__device__ __forceinline__ int64_t ChannelOffset(int64_t i, int64_t ch,
                                                 const BatchNormShape& s) {
  const int64_t sample = i / s.hw;
  return (sample * s.c + ch) * s.hw + (i - sample * s.hw);
}

// One block per channel: biased batch statistics and the moving averages.
__global__ void BatchNormStatsKernel(const float* x, BatchNormShape s,
                                     float eps, float momentum, float* mean,
                                     float* inv_std, float* moving_mean,
                                     float* moving_var) {
  const int64_t ch = blockIdx.x;
  const int64_t m = s.n * s.hw;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < m; i += blockDim.x) {
    sum += x[ChannelOffset(i, ch, s)];
  }
  const float mu = BlockSum(sum) / static_cast<float>(m);
  // Two passes: the variance of x - mu, which does not cancel.
  float sq = 0.0f;
  for (int64_t i = threadIdx.x; i < m; i += blockDim.x) {
    const float d = x[ChannelOffset(i, ch, s)] - mu;
    sq += d * d;
  }
  const float var = BlockSum(sq) / static_cast<float>(m);
  if (threadIdx.x == 0) {
    mean[ch] = mu;
    inv_std[ch] = 1.0f / sqrtf(var + eps);
    moving_mean[ch] = moving_mean[ch] * momentum + mu * (1.0f - momentum);
    moving_var[ch] = moving_var[ch] * momentum + var * (1.0f - momentum);
  }
}

// y = g * (x - mean) * inv_std + beta, elementwise.
__global__ void BatchNormApplyKernel(const float* x, const float* gamma,
                                     const float* beta, const float* mean,
                                     const float* inv_std, BatchNormShape s,
                                     bool fix_gamma, float* y) {
  PSTRAIN_CUDA_KERNEL_LOOP(i, s.n * s.c * s.hw) {
    const int64_t ch = (i / s.hw) % s.c;
    const float g = fix_gamma ? 1.0f : gamma[ch];
    y[i] = g * (x[i] - mean[ch]) * inv_std[ch] + beta[ch];
  }
}

__global__ void BatchNormInferenceKernel(const float* x, const float* gamma,
                                         const float* beta,
                                         const float* moving_mean,
                                         const float* moving_var,
                                         BatchNormShape s, float eps,
                                         bool fix_gamma, float* y) {
  PSTRAIN_CUDA_KERNEL_LOOP(i, s.n * s.c * s.hw) {
    const int64_t ch = (i / s.hw) % s.c;
    const float g = fix_gamma ? 1.0f : gamma[ch];
    y[i] =
        g * (x[i] - moving_mean[ch]) / sqrtf(moving_var[ch] + eps) + beta[ch];
  }
}

// One block per channel: the parameter gradients, then dx of the channel.
__global__ void BatchNormBackwardKernel(const float* x, const float* gamma,
                                        const float* dy, const float* mean,
                                        const float* inv_std, BatchNormShape s,
                                        bool fix_gamma, float* dx,
                                        float* dgamma, float* dbeta) {
  const int64_t ch = blockIdx.x;
  const int64_t m = s.n * s.hw;
  const float mu = mean[ch];
  const float istd = inv_std[ch];
  float sum_dy = 0.0f;
  float sum_dy_xhat = 0.0f;
  for (int64_t i = threadIdx.x; i < m; i += blockDim.x) {
    const int64_t k = ChannelOffset(i, ch, s);
    sum_dy += dy[k];
    sum_dy_xhat += dy[k] * (x[k] - mu) * istd;
  }
  sum_dy = BlockSum(sum_dy);
  sum_dy_xhat = BlockSum(sum_dy_xhat);
  if (threadIdx.x == 0) {
    dbeta[ch] = sum_dy;
    dgamma[ch] = fix_gamma ? 0.0f : sum_dy_xhat;
  }
  if (dx == nullptr) return;
  // dx = g * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat)): the means
  // keep the terms of dy's magnitude, so nothing large cancels.
  const float scale = (fix_gamma ? 1.0f : gamma[ch]) * istd;
  const float mean_dy = sum_dy / static_cast<float>(m);
  const float mean_dy_xhat = sum_dy_xhat / static_cast<float>(m);
  for (int64_t i = threadIdx.x; i < m; i += blockDim.x) {
    const int64_t k = ChannelOffset(i, ch, s);
    const float xhat = (x[k] - mu) * istd;
    dx[k] = scale * (dy[k] - mean_dy - xhat * mean_dy_xhat);
  }
}

// SplitMix64's output function: a counter-based generator whose i-th
// number depends only on (seed, i).
__device__ __forceinline__ uint64_t SplitMix64(uint64_t seed, uint64_t i) {
  uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

__global__ void DropoutForwardKernel(const float* x, int64_t n, float p,
                                     float scale, uint64_t seed, float* y,
                                     float* mask) {
  PSTRAIN_CUDA_KERNEL_LOOP(i, n) {
    // 24 random bits: a uniform float in [0, 1) on a 2^-24 grid.
    const float u =
        static_cast<float>(SplitMix64(seed, i) >> 40) * (1.0f / 16777216.0f);
    const float k = u >= p ? scale : 0.0f;
    mask[i] = k;
    y[i] = x[i] * k;
  }
}

// Blocks for the one-block-per-row/channel kernels.
unsigned int RowBlocks(int64_t rows) {
  constexpr int64_t kMaxBlocks = 65535;
  return static_cast<unsigned int>(rows < kMaxBlocks ? rows : kMaxBlocks);
}

}  // namespace

cudaError_t AddGpu(const float* a, const float* b, float* y, int64_t n,
                   cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  AddKernel<<<CudaBlocks(n), kCudaThreads, 0, stream>>>(a, b, y, n);
  return cudaPeekAtLastError();
}

cudaError_t MulGpu(const float* a, const float* b, float* y, int64_t n,
                   cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  MulKernel<<<CudaBlocks(n), kCudaThreads, 0, stream>>>(a, b, y, n);
  return cudaPeekAtLastError();
}

cudaError_t SumGpu(const float* const* srcs, int count, float* dst, int64_t n,
                   cudaStream_t stream) {
  if (n <= 0 || count <= 0) return cudaSuccess;
  // A source that is also the destination must be read in the first
  // launch, before later launches overwrite dst.
  int first = 0;
  for (int k = 0; k < count; ++k) {
    if (srcs[k] == dst) first = k;
  }
  bool accumulate = false;
  for (int begin = 0; begin < count; begin += kSumFanIn) {
    SumSources src;
    int m = 0;
    // Sources in order, except that `first` is moved to the front.
    for (int k = begin; k < count && m < kSumFanIn; ++k, ++m) {
      const int idx = k == 0 ? first : (k == first ? 0 : k);
      src.p[m] = srcs[idx];
    }
    SumKernel<<<CudaBlocks(n), kCudaThreads, 0, stream>>>(src, m, accumulate,
                                                          dst, n);
    const cudaError_t err = cudaPeekAtLastError();
    if (err != cudaSuccess) return err;
    accumulate = true;
  }
  return cudaSuccess;
}

cudaError_t AddRowBiasGpu(float* y, const float* bias, int64_t rows,
                          int64_t cols, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  AddRowBiasKernel<<<CudaBlocks(rows * cols), kCudaThreads, 0, stream>>>(
      y, bias, rows, cols);
  return cudaPeekAtLastError();
}

cudaError_t SumColumnsGpu(const float* x, int64_t rows, int64_t cols,
                          float* out, cudaStream_t stream) {
  if (cols <= 0) return cudaSuccess;
  SumColumnsKernel<<<CudaBlocks(cols), kCudaThreads, 0, stream>>>(x, rows, cols,
                                                                  out);
  return cudaPeekAtLastError();
}

cudaError_t SoftmaxCrossEntropyGpu(const float* logits, const float* labels,
                                   int64_t n, int64_t c, float* probs,
                                   float* losses, cudaStream_t stream) {
  if (n <= 0 || c <= 0) return cudaSuccess;
  SoftmaxCrossEntropyKernel<<<RowBlocks(n), kReduceThreads, 0, stream>>>(
      logits, labels, n, c, probs, losses);
  return cudaPeekAtLastError();
}

cudaError_t SoftmaxCrossEntropyBackwardGpu(const float* probs,
                                           const float* labels, int64_t n,
                                           int64_t c, float scale,
                                           float* dlogits,
                                           cudaStream_t stream) {
  if (n <= 0 || c <= 0) return cudaSuccess;
  SoftmaxCrossEntropyBackwardKernel<<<CudaBlocks(n * c), kCudaThreads, 0,
                                      stream>>>(probs, labels, n, c, scale,
                                                dlogits);
  return cudaPeekAtLastError();
}

cudaError_t BatchNormForwardTrainingGpu(const float* x, const float* gamma,
                                        const float* beta, BatchNormShape s,
                                        float eps, float momentum,
                                        bool fix_gamma, float* y, float* mean,
                                        float* inv_std, float* moving_mean,
                                        float* moving_var,
                                        cudaStream_t stream) {
  if (s.c <= 0) return cudaSuccess;
  BatchNormStatsKernel<<<static_cast<unsigned int>(s.c), kReduceThreads, 0,
                         stream>>>(x, s, eps, momentum, mean, inv_std,
                                   moving_mean, moving_var);
  cudaError_t err = cudaPeekAtLastError();
  if (err != cudaSuccess) return err;
  const int64_t total = s.n * s.c * s.hw;
  if (total <= 0) return cudaSuccess;
  BatchNormApplyKernel<<<CudaBlocks(total), kCudaThreads, 0, stream>>>(
      x, gamma, beta, mean, inv_std, s, fix_gamma, y);
  return cudaPeekAtLastError();
}

cudaError_t BatchNormForwardInferenceGpu(
    const float* x, const float* gamma, const float* beta,
    const float* moving_mean, const float* moving_var, BatchNormShape s,
    float eps, bool fix_gamma, float* y, cudaStream_t stream) {
  const int64_t total = s.n * s.c * s.hw;
  if (total <= 0) return cudaSuccess;
  BatchNormInferenceKernel<<<CudaBlocks(total), kCudaThreads, 0, stream>>>(
      x, gamma, beta, moving_mean, moving_var, s, eps, fix_gamma, y);
  return cudaPeekAtLastError();
}

cudaError_t BatchNormBackwardGpu(const float* x, const float* gamma,
                                 const float* dy, const float* mean,
                                 const float* inv_std, BatchNormShape s,
                                 bool fix_gamma, float* dx, float* dgamma,
                                 float* dbeta, cudaStream_t stream) {
  if (s.c <= 0) return cudaSuccess;
  BatchNormBackwardKernel<<<static_cast<unsigned int>(s.c), kReduceThreads, 0,
                            stream>>>(x, gamma, dy, mean, inv_std, s, fix_gamma,
                                      dx, dgamma, dbeta);
  return cudaPeekAtLastError();
}

cudaError_t DropoutForwardGpu(const float* x, int64_t n, float p, uint64_t seed,
                              float* y, float* mask, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  DropoutForwardKernel<<<CudaBlocks(n), kCudaThreads, 0, stream>>>(
      x, n, p, 1.0f / (1.0f - p), seed, y, mask);
  return cudaPeekAtLastError();
}

}  // namespace kernels
}  // namespace pstrain
