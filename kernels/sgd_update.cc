#include "kernels/sgd_update.h"

#include "absl/strings/str_cat.h"

namespace pstrain {
namespace kernels {

absl::Status SgdUpdateCpu(absl::Span<float> weights,
                          absl::Span<const float> grads, float lr) {
  if (weights.size() != grads.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("SgdUpdateCpu: ", weights.size(), " weights but ",
                     grads.size(), " gradients"));
  }
  float* __restrict w = weights.data();
  const float* __restrict g = grads.data();
  const size_t n = weights.size();
  for (size_t i = 0; i < n; ++i) w[i] -= lr * g[i];
  return absl::OkStatus();
}

}  // namespace kernels
}  // namespace pstrain
