// libFuzzer target: any bytes parse into arrays or a Status, never a crash,
// an out-of-bounds read or an outsized allocation. Build with scripts/fuzz.
#include <cstddef>
#include <cstdint>

#include "checkpoint/ndarray_list.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto arrays = pstrain::checkpoint::ParseNDArrayList(
      absl::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
  if (arrays.ok()) {
    // What parses must serialize (names all-or-none aside) without trouble.
    bool named = false, unnamed = false;
    for (const auto& a : *arrays) (a.name.empty() ? unnamed : named) = true;
    bool zero_dim = false;
    for (const auto& a : *arrays) zero_dim |= !a.none && a.shape.empty();
    if (!(named && unnamed) && !zero_dim) {
      (void)pstrain::checkpoint::SerializeNDArrayList(*arrays);
    }
  }
  return 0;
}
