// A float32 tensor in the memory of one CUDA device: a shape and device
// storage shared by views (Reshaped), like Tensor (tensor.h) on the CPU.
// Copying a GpuTensor shares its storage; Clone() copies the data. Only
// built with --config=cuda.
//
// Copies between host and device, zeroing and cloning are enqueued on a
// GpuContext's stream (the context must be on the tensor's device).
// Download() waits for the stream so the host data is ready on return;
// everything else is asynchronous. The storage is freed (cudaFree, which
// waits for the device) when the last GpuTensor sharing it goes away.
//
// Thread-compatible.
#ifndef PSTRAIN_KERNELS_GPU_TENSOR_H_
#define PSTRAIN_KERNELS_GPU_TENSOR_H_

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/gpu_context.h"
#include "kernels/tensor.h"

namespace pstrain {
namespace kernels {

class GpuTensor : public TensorShape {
 public:
  // An empty tensor (no shape, no storage, device -1).
  GpuTensor() = default;

  // Zero-filled device memory of `shape` on ctx->device(). Returns
  // InvalidArgument for a negative dimension and ResourceExhausted when the
  // device is out of memory.
  static absl::StatusOr<GpuTensor> Create(GpuContext* ctx,
                                          std::vector<int64_t> shape);
  // A device copy of `host`.
  static absl::StatusOr<GpuTensor> FromHost(GpuContext* ctx,
                                            const Tensor& host);

  // The CUDA device of the storage (-1 for a default-constructed tensor).
  int device() const { return device_; }
  // Device pointers (nullptr when empty).
  float* data() { return data_; }
  const float* data() const { return data_; }

  // A view with another shape of the same element count, sharing storage.
  // REQUIRES: the element counts agree.
  GpuTensor Reshaped(std::vector<int64_t> shape) const;

  // Copies `src` into this tensor, first reallocating it (on ctx->device())
  // when its shape or device differs. The host memory may be reused as soon
  // as this returns.
  absl::Status Upload(GpuContext* ctx, const Tensor& src);
  // Copies this tensor into *dst (resized to this shape when it differs)
  // and waits for the copy. REQUIRES: ctx->device() == device().
  absl::Status Download(GpuContext* ctx, Tensor* dst) const;
  // A deep copy on the same device.
  absl::StatusOr<GpuTensor> Clone(GpuContext* ctx) const;
  // Sets every element to 0.
  absl::Status SetZero(GpuContext* ctx);

 private:
  GpuTensor(std::vector<int64_t> shape, int device)
      : TensorShape(std::move(shape)), device_(device) {}

  std::shared_ptr<float> storage_;
  float* data_ = nullptr;
  int device_ = -1;
};

// Makes *t a zero-filled tensor of `shape` on ctx->device() unless it
// already has that shape there (then it is left as it is, contents
// included). The GPU counterpart of the CPU kernels' output resizing.
absl::Status ResizeGpuTensor(GpuContext* ctx, const std::vector<int64_t>& shape,
                             GpuTensor* t);

}  // namespace kernels
}  // namespace pstrain

#endif  // PSTRAIN_KERNELS_GPU_TENSOR_H_
