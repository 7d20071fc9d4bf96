// The GPU device for pstrain's CUDA kernels: one CUDA device, one stream,
// a cuDNN and a cuBLAS handle bound to that stream, a growable device
// workspace and a cache of per-shape plans (descriptors and the
// convolution algorithms chosen for them). Only built with --config=cuda.
//
// A GpuContext is created explicitly and passed explicitly to every GPU
// kernel (gpu_ops.h); there is no global device state. Work enqueued
// through one context runs in order on its stream.
//
// Thread-compatible: one thread uses a context at a time (one context per
// device replica, each driven by its own thread).
#ifndef PSTRAIN_KERNELS_GPU_CONTEXT_H_
#define PSTRAIN_KERNELS_GPU_CONTEXT_H_

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstddef>
#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "util/status.h"

namespace pstrain {
namespace kernels {

// How the convolution algorithm is chosen the first time a shape is seen.
enum class ConvAlgoSearch {
  // cuDNN's heuristics (cudnnGetConvolution*Algorithm_v7): no trial runs.
  kHeuristic,
  // Time every algorithm once (cudnnFindConvolution*AlgorithmEx, as MXNet's
  // cudnn_tune=limited_workspace): slower first step, faster afterwards.
  kBenchmark,
};

struct GpuContextOptions {
  // CUDA device ordinal.
  int device = 0;
  // When false (the default) convolutions use CUDNN_FMA_MATH and cuBLAS
  // CUBLAS_DEFAULT_MATH, so no TF32 tensor-core rounding happens and results
  // match the CPU kernels to float precision. When true, TF32 is permitted
  // on GPUs that have it (faster, ~1e-3 relative error).
  bool allow_tf32 = false;
  // When true only deterministic convolution algorithms are chosen
  // (bitwise reproducible backward passes).
  bool deterministic = false;
  ConvAlgoSearch conv_algo_search = ConvAlgoSearch::kHeuristic;
  // The most workspace one convolution algorithm may use.
  size_t conv_workspace_limit_bytes = size_t{512} << 20;
};

class GpuContext {
 public:
  // Creates the stream and handles on `options.device`. Returns
  // InvalidArgument for a negative device, NotFound when no such device
  // exists (also when no CUDA driver or GPU is usable at all), and the
  // CUDA/cuDNN/cuBLAS error otherwise; every message names the device.
  static absl::StatusOr<std::unique_ptr<GpuContext>> Create(
      const GpuContextOptions& options);

  // Waits for the stream, then releases the cache, workspace, handles and
  // stream.
  ~GpuContext();
  GpuContext(const GpuContext&) = delete;
  GpuContext& operator=(const GpuContext&) = delete;

  int device() const { return options_.device; }
  const GpuContextOptions& options() const { return options_; }
  cudaStream_t stream() const { return stream_; }
  cudnnHandle_t cudnn() const { return cudnn_; }
  cublasHandle_t cublas() const { return cublas_; }

  // Device memory of at least `bytes`, valid until the next Workspace()
  // call. Because all work of this context is ordered on its stream, a
  // kernel may use it for scratch without further synchronization. Growing
  // waits for the stream before freeing the old buffer. Returns
  // ResourceExhausted when the device is out of memory. `bytes` == 0 may
  // return nullptr.
  absl::StatusOr<void*> Workspace(size_t bytes);
  size_t workspace_bytes() const { return workspace_bytes_; }

  // Cached per-shape objects by key (see gpu_ops.cc); they live as long as
  // the context.
  std::map<std::string, std::shared_ptr<void>>& cache() { return cache_; }

  // Blocks until all work enqueued on the stream has finished; returns the
  // first asynchronous error of that work.
  absl::Status Synchronize();

 private:
  explicit GpuContext(const GpuContextOptions& options) : options_(options) {}

  GpuContextOptions options_;
  cudaStream_t stream_ = nullptr;
  cudnnHandle_t cudnn_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<std::string, std::shared_ptr<void>> cache_;
};

// Makes `device` current for the lifetime of the guard and restores the
// previous device afterwards (gloo's CudaDeviceGuard).
class CudaDeviceGuard {
 public:
  explicit CudaDeviceGuard(int device);
  ~CudaDeviceGuard();
  CudaDeviceGuard(const CudaDeviceGuard&) = delete;
  CudaDeviceGuard& operator=(const CudaDeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

// Converts library results to absl::Status: OK on success, otherwise
// ResourceExhausted for allocation failures and Internal for the rest, with
// `what` (the call, as in "cudnnConvolutionForward") and the library's error
// text in the message.
absl::Status CudaStatus(cudaError_t err, absl::string_view what);
absl::Status CudnnStatus(cudnnStatus_t st, absl::string_view what);
absl::Status CublasStatus(cublasStatus_t st, absl::string_view what);

}  // namespace kernels
}  // namespace pstrain

// Return-if-error wrappers for CUDA runtime, cuDNN and cuBLAS calls inside
// functions returning absl::Status. The message names the called function.
#define PSTRAIN_CUDA_RETURN_IF_ERROR(expr) \
  PSTRAIN_RETURN_IF_ERROR(::pstrain::kernels::CudaStatus((expr), #expr))
#define PSTRAIN_CUDNN_RETURN_IF_ERROR(expr) \
  PSTRAIN_RETURN_IF_ERROR(::pstrain::kernels::CudnnStatus((expr), #expr))
#define PSTRAIN_CUBLAS_RETURN_IF_ERROR(expr) \
  PSTRAIN_RETURN_IF_ERROR(::pstrain::kernels::CublasStatus((expr), #expr))

#endif  // PSTRAIN_KERNELS_GPU_CONTEXT_H_
