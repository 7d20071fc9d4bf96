// Checks and sums of per-device values, shared by the local and the dist
// stores. Internal to //kvstore: not part of its interface.
#ifndef PSTRAIN_KVSTORE_KVSTORE_INTERNAL_H_
#define PSTRAIN_KVSTORE_KVSTORE_INTERNAL_H_

#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"

namespace pstrain {
namespace kvstore {
namespace internal {

// OK if `values` holds at least one device value and each has `want`
// floats; InvalidArgument otherwise.
inline absl::Status CheckDevices(
    const std::vector<absl::Span<const float>>& values, size_t want) {
  if (values.empty())
    return absl::InvalidArgumentError("push needs at least one device value");
  for (const auto& v : values) {
    if (v.size() != want) {
      return absl::InvalidArgumentError(absl::StrCat(
          "device value of ", v.size(), " floats for a key of ", want));
    }
  }
  return absl::OkStatus();
}

// Sums the devices' values (in device order) into a new buffer, or shares
// the single device's memory. Returns the sum and what keeps it alive
// (nullptr when it is the caller's single device buffer).
// REQUIRES: CheckDevices(values, ...) is OK.
inline std::pair<const float*, std::shared_ptr<const void>> Sum(
    const std::vector<absl::Span<const float>>& values) {
  if (values.size() == 1) return {values[0].data(), nullptr};
  auto buf =
      std::make_shared<std::vector<float>>(values[0].begin(), values[0].end());
  for (size_t d = 1; d < values.size(); ++d) {
    for (size_t i = 0; i < buf->size(); ++i) (*buf)[i] += values[d][i];
  }
  return {buf->data(), buf};
}

}  // namespace internal
}  // namespace kvstore
}  // namespace pstrain

#endif  // PSTRAIN_KVSTORE_KVSTORE_INTERNAL_H_
