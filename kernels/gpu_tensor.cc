#include "kernels/gpu_tensor.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "util/status.h"

namespace pstrain {
namespace kernels {
namespace {

absl::Status CheckDevice(const GpuContext& ctx, const GpuTensor& t,
                         absl::string_view what) {
  if (t.size() > 0 && t.device() != ctx.device()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": tensor ", t.ShapeString(), " is on GPU ",
                     t.device(), ", the context on GPU ", ctx.device()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<GpuTensor> GpuTensor::Create(GpuContext* ctx,
                                            std::vector<int64_t> shape) {
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "GpuTensor: negative dimension in ", ShapeToString(shape)));
    }
  }
  GpuTensor t(std::move(shape), ctx->device());
  if (t.empty()) return t;
  CudaDeviceGuard guard(t.device_);
  void* p = nullptr;
  const size_t bytes = static_cast<size_t>(t.size()) * sizeof(float);
  absl::Status s = CudaStatus(cudaMalloc(&p, bytes), "cudaMalloc");
  if (!s.ok()) {
    return Annotate(s, absl::StrCat("GPU ", t.device_, ": tensor ",
                                    t.ShapeString(), " (", bytes, " bytes)"));
  }
  const int device = t.device_;
  t.storage_ =
      std::shared_ptr<float>(static_cast<float*>(p), [device](float* q) {
        CudaDeviceGuard g(device);
        const cudaError_t err = cudaFree(q);
        LOG_IF(ERROR, err != cudaSuccess)
            << "GPU " << device << ": cudaFree: " << cudaGetErrorString(err);
      });
  t.data_ = t.storage_.get();
  PSTRAIN_CUDA_RETURN_IF_ERROR(
      cudaMemsetAsync(t.data_, 0, bytes, ctx->stream()));
  return t;
}

absl::StatusOr<GpuTensor> GpuTensor::FromHost(GpuContext* ctx,
                                              const Tensor& host) {
  GpuTensor t;
  PSTRAIN_RETURN_IF_ERROR(t.Upload(ctx, host));
  return t;
}

GpuTensor GpuTensor::Reshaped(std::vector<int64_t> shape) const {
  GpuTensor t = *this;
  t.Reshape(std::move(shape));
  return t;
}

absl::Status GpuTensor::Upload(GpuContext* ctx, const Tensor& src) {
  PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, src.shape(), this));
  if (empty()) return absl::OkStatus();
  CudaDeviceGuard guard(device_);
  PSTRAIN_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(data_, src.data(), size() * sizeof(float),
                      cudaMemcpyHostToDevice, ctx->stream()));
  return absl::OkStatus();
}

absl::Status GpuTensor::Download(GpuContext* ctx, Tensor* dst) const {
  PSTRAIN_RETURN_IF_ERROR(CheckDevice(*ctx, *this, "Download"));
  if (dst->shape() != shape()) *dst = Tensor(shape());
  if (empty()) return absl::OkStatus();
  CudaDeviceGuard guard(device_);
  PSTRAIN_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(dst->data(), data_, size() * sizeof(float),
                      cudaMemcpyDeviceToHost, ctx->stream()));
  return ctx->Synchronize();
}

absl::StatusOr<GpuTensor> GpuTensor::Clone(GpuContext* ctx) const {
  PSTRAIN_RETURN_IF_ERROR(CheckDevice(*ctx, *this, "Clone"));
  PSTRAIN_ASSIGN_OR_RETURN(GpuTensor t, Create(ctx, shape()));
  if (empty()) return t;
  CudaDeviceGuard guard(device_);
  PSTRAIN_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(t.data_, data_, size() * sizeof(float),
                      cudaMemcpyDeviceToDevice, ctx->stream()));
  return t;
}

absl::Status GpuTensor::SetZero(GpuContext* ctx) {
  PSTRAIN_RETURN_IF_ERROR(CheckDevice(*ctx, *this, "SetZero"));
  if (empty()) return absl::OkStatus();
  CudaDeviceGuard guard(device_);
  return CudaStatus(
      cudaMemsetAsync(data_, 0, size() * sizeof(float), ctx->stream()),
      "cudaMemsetAsync");
}

absl::Status ResizeGpuTensor(GpuContext* ctx, const std::vector<int64_t>& shape,
                             GpuTensor* t) {
  if (t->shape() == shape && t->device() == ctx->device()) {
    return absl::OkStatus();
  }
  PSTRAIN_ASSIGN_OR_RETURN(*t, GpuTensor::Create(ctx, shape));
  return absl::OkStatus();
}

}  // namespace kernels
}  // namespace pstrain
