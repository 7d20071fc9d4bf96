#include "kvstore/partition.h"

#include <algorithm>

#include "glog/logging.h"

namespace pstrain {
namespace kvstore {

std::vector<SliceSpec> PlanKey(int64_t key, int64_t length, int num_servers,
                               int64_t bigarray_bound,
                               std::vector<int64_t>* load,
                               Placement placement) {
  CHECK_GE(num_servers, 1);
  CHECK(load != nullptr);
  CHECK_EQ(load->size(), static_cast<size_t>(num_servers));
  CHECK_GE(length, 0);
  std::vector<SliceSpec> out;
  if (length > bigarray_bound && num_servers > 1) {
    int64_t offset = 0;
    for (int s = 0; s < num_servers; ++s) {
      const int64_t len =
          length / num_servers + (s < length % num_servers ? 1 : 0);
      out.push_back({key, s, offset, len});
      (*load)[s] += len;
      offset += len;
    }
    return out;
  }
  const int s =
      placement == Placement::kMxnetHash
          ? static_cast<int>(((key * 9973) % num_servers + num_servers) %
                             num_servers)
          : static_cast<int>(std::min_element(load->begin(), load->end()) -
                             load->begin());
  (*load)[s] += length;
  out.push_back({key, s, 0, length});
  return out;
}

std::vector<SliceSpec> SplitIntoChunks(const std::vector<SliceSpec>& slices,
                                       int64_t max_elements) {
  CHECK_GT(max_elements, 0);
  std::vector<SliceSpec> out;
  for (const SliceSpec& s : slices) {
    const int64_t n =
        std::max<int64_t>(1, (s.length + max_elements - 1) / max_elements);
    int64_t offset = s.offset;
    for (int64_t c = 0; c < n; ++c) {
      const int64_t len = s.length / n + (c < s.length % n ? 1 : 0);
      out.push_back({s.key, s.server, offset, len});
      offset += len;
    }
  }
  return out;
}

}  // namespace kvstore
}  // namespace pstrain
