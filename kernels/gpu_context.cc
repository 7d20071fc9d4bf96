#include "kernels/gpu_context.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace pstrain {
namespace kernels {
namespace {

// "cudnnConvolutionForward(handle, ...)" -> "cudnnConvolutionForward".
absl::string_view CallName(absl::string_view what) {
  return what.substr(0, what.find('('));
}

constexpr size_t kWorkspaceGranularity = size_t{1} << 20;

}  // namespace

absl::Status CudaStatus(cudaError_t err, absl::string_view what) {
  if (err == cudaSuccess) return absl::OkStatus();
  std::string msg = absl::StrCat(CallName(what), ": ", cudaGetErrorName(err),
                                 " (", cudaGetErrorString(err), ")");
  if (err == cudaErrorMemoryAllocation) {
    return absl::ResourceExhaustedError(msg);
  }
  return absl::InternalError(msg);
}

absl::Status CudnnStatus(cudnnStatus_t st, absl::string_view what) {
  if (st == CUDNN_STATUS_SUCCESS) return absl::OkStatus();
  char detail[512] = {0};
  cudnnGetLastErrorString(detail, sizeof(detail));
  std::string msg =
      absl::StrCat(CallName(what), ": ", cudnnGetErrorString(st),
                   detail[0] != '\0' ? absl::StrCat(" (", detail, ")") : "");
  if (st == CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED ||
      st == CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED) {
    return absl::ResourceExhaustedError(msg);
  }
  return absl::InternalError(msg);
}

absl::Status CublasStatus(cublasStatus_t st, absl::string_view what) {
  if (st == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  std::string msg = absl::StrCat(CallName(what), ": ", cublasGetStatusName(st),
                                 " (", cublasGetStatusString(st), ")");
  if (st == CUBLAS_STATUS_ALLOC_FAILED)
    return absl::ResourceExhaustedError(msg);
  return absl::InternalError(msg);
}

CudaDeviceGuard::CudaDeviceGuard(int device) {
  if (cudaGetDevice(&previous_) != cudaSuccess) {
    cudaGetLastError();  // Clear it; the next call reports any real problem.
    previous_ = -1;
  }
  if (previous_ == device) return;
  const cudaError_t err = cudaSetDevice(device);
  if (err != cudaSuccess) {
    LOG(ERROR) << "cudaSetDevice(" << device
               << "): " << cudaGetErrorString(err);
  }
}

CudaDeviceGuard::~CudaDeviceGuard() {
  if (previous_ < 0) return;
  int now = -1;
  if (cudaGetDevice(&now) == cudaSuccess && now == previous_) return;
  const cudaError_t err = cudaSetDevice(previous_);
  if (err != cudaSuccess) {
    LOG(ERROR) << "cudaSetDevice(" << previous_
               << "): " << cudaGetErrorString(err);
  }
}

absl::StatusOr<std::unique_ptr<GpuContext>> GpuContext::Create(
    const GpuContextOptions& options) {
  const std::string name = absl::StrCat("GPU ", options.device);
  if (options.device < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": device ordinals are >= 0"));
  }
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return absl::NotFoundError(
        absl::StrCat(name, ": no usable CUDA device (cudaGetDeviceCount: ",
                     cudaGetErrorString(err), ")"));
  }
  if (options.device >= count) {
    return absl::NotFoundError(
        absl::StrCat(name, ": this machine has ", count, " CUDA device(s)"));
  }
  std::unique_ptr<GpuContext> ctx(new GpuContext(options));
  CudaDeviceGuard guard(options.device);
  // On any failure below, ~GpuContext releases what was created so far.
  absl::Status s = CudaStatus(
      cudaStreamCreateWithFlags(&ctx->stream_, cudaStreamNonBlocking),
      "cudaStreamCreateWithFlags");
  if (s.ok()) s = CudnnStatus(cudnnCreate(&ctx->cudnn_), "cudnnCreate");
  if (s.ok()) {
    s = CudnnStatus(cudnnSetStream(ctx->cudnn_, ctx->stream_),
                    "cudnnSetStream");
  }
  if (s.ok()) s = CublasStatus(cublasCreate(&ctx->cublas_), "cublasCreate");
  if (s.ok()) {
    s = CublasStatus(cublasSetStream(ctx->cublas_, ctx->stream_),
                     "cublasSetStream");
  }
  if (s.ok()) {
    s = CublasStatus(
        cublasSetMathMode(ctx->cublas_, options.allow_tf32
                                            ? CUBLAS_TF32_TENSOR_OP_MATH
                                            : CUBLAS_DEFAULT_MATH),
        "cublasSetMathMode");
  }
  if (!s.ok()) return Annotate(s, name);
  return ctx;
}

GpuContext::~GpuContext() {
  CudaDeviceGuard guard(options_.device);
  if (stream_ != nullptr) {
    const absl::Status s = Synchronize();
    LOG_IF(ERROR, !s.ok()) << "GPU " << options_.device
                           << ": pending work failed: " << s;
  }
  cache_.clear();
  if (workspace_ != nullptr) cudaFree(workspace_);
  if (cublas_ != nullptr) cublasDestroy(cublas_);
  if (cudnn_ != nullptr) cudnnDestroy(cudnn_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

absl::StatusOr<void*> GpuContext::Workspace(size_t bytes) {
  if (bytes <= workspace_bytes_) return workspace_;
  CudaDeviceGuard guard(options_.device);
  if (workspace_ != nullptr) {
    // Work still queued may be using the old buffer.
    PSTRAIN_RETURN_IF_ERROR(Synchronize());
    PSTRAIN_CUDA_RETURN_IF_ERROR(cudaFree(workspace_));
    workspace_ = nullptr;
    workspace_bytes_ = 0;
  }
  const size_t rounded = (bytes + kWorkspaceGranularity - 1) /
                         kWorkspaceGranularity * kWorkspaceGranularity;
  absl::Status s = CudaStatus(cudaMalloc(&workspace_, rounded), "cudaMalloc");
  if (!s.ok()) {
    workspace_ = nullptr;
    return Annotate(s, absl::StrCat("GPU ", options_.device, ": workspace of ",
                                    rounded, " bytes"));
  }
  workspace_bytes_ = rounded;
  return workspace_;
}

absl::Status GpuContext::Synchronize() {
  CudaDeviceGuard guard(options_.device);
  return CudaStatus(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
}

}  // namespace kernels
}  // namespace pstrain
