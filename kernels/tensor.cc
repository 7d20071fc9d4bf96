#include "kernels/tensor.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "glog/logging.h"

namespace pstrain {
namespace kernels {

std::string ShapeToString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

TensorShape::TensorShape(std::vector<int64_t> shape)
    : shape_(std::move(shape)) {
  size_ = 1;
  for (int64_t d : shape_) {
    CHECK_GE(d, 0) << ShapeToString(shape_);
    size_ *= d;
  }
}

void TensorShape::Reshape(std::vector<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  CHECK_EQ(n, size_) << ShapeToString(shape_) << " -> " << ShapeToString(shape);
  shape_ = std::move(shape);
}

Tensor::Tensor(std::vector<int64_t> shape) : TensorShape(std::move(shape)) {
  const size_t bytes =
      std::max<size_t>(64, (size() * sizeof(float) + 63) / 64 * 64);
  void* p = std::aligned_alloc(64, bytes);
  CHECK(p != nullptr) << "out of memory for " << ShapeString();
  std::memset(p, 0, bytes);
  storage_ = std::shared_ptr<float>(static_cast<float*>(p),
                                    [](float* q) { std::free(q); });
  data_ = storage_.get();
}

Tensor Tensor::Reshaped(std::vector<int64_t> shape) const {
  Tensor t = *this;
  t.Reshape(std::move(shape));
  return t;
}

Tensor Tensor::Clone() const {
  Tensor t(shape());
  if (size() > 0) std::memcpy(t.data_, data_, size() * sizeof(float));
  return t;
}

void Tensor::Fill(float v) { std::fill(data_, data_ + size(), v); }

}  // namespace kernels
}  // namespace pstrain
