// A float32 tensor on the CPU: a shape and 64-byte aligned storage shared
// by views (Reshaped). Copying a Tensor shares its storage; use Clone() for
// a deep copy. Thread-compatible.
#ifndef PSTRAIN_KERNELS_TENSOR_H_
#define PSTRAIN_KERNELS_TENSOR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/types/span.h"

namespace pstrain {
namespace kernels {

std::string ShapeToString(const std::vector<int64_t>& shape);

// The shape of a tensor and its element count: what Tensor and GpuTensor
// (gpu_tensor.h, device memory) have in common.
class TensorShape {
 public:
  const std::vector<int64_t>& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[i]; }
  int64_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // "[2, 3, 28, 28]".
  std::string ShapeString() const { return ShapeToString(shape_); }

 protected:
  // No shape, no elements.
  TensorShape() = default;
  // REQUIRES: every dim >= 0.
  explicit TensorShape(std::vector<int64_t> shape);
  // Changes the shape to one of the same element count.
  // REQUIRES: the element counts agree.
  void Reshape(std::vector<int64_t> shape);

 private:
  std::vector<int64_t> shape_;
  int64_t size_ = 0;
};

class Tensor : public TensorShape {
 public:
  Tensor() = default;
  // Zero-filled. REQUIRES: every dim >= 0.
  explicit Tensor(std::vector<int64_t> shape);

  float* data() { return data_; }
  const float* data() const { return data_; }
  absl::Span<float> span() { return absl::Span<float>(data_, size()); }
  absl::Span<const float> span() const {
    return absl::Span<const float>(data_, size());
  }

  // A view with another shape of the same element count.
  Tensor Reshaped(std::vector<int64_t> shape) const;
  Tensor Clone() const;
  void Fill(float v);

 private:
  std::shared_ptr<float> storage_;
  float* data_ = nullptr;
};

}  // namespace kernels
}  // namespace pstrain

#endif  // PSTRAIN_KERNELS_TENSOR_H_
