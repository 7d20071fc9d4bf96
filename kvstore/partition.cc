#include "kvstore/partition.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace pstrain {
namespace kvstore {

namespace {

// Water-filling: `length` elements over the servers so that the least
// loaded ones rise to a common level. (*lens)[s] gets server s's share;
// the remainder below one element per server goes to the lowest ranks
// among those at the level.
void FillToLevel(const std::vector<int64_t>& load, int64_t length,
                 std::vector<int64_t>* lens) {
  const int n = static_cast<int>(load.size());
  std::vector<int> order(n);
  for (int s = 0; s < n; ++s) order[s] = s;
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return load[a] < load[b]; });
  // The k least loaded take it all: their level is (length + their load)
  // / k, as long as it does not reach the next server's load.
  int k = 1;
  int64_t below = load[order[0]];
  int64_t level = length + below;
  while (k < n && level > load[order[k]]) {
    below += load[order[k]];
    ++k;
    level = (length + below) / k;
  }
  std::vector<int> at_level(order.begin(), order.begin() + k);
  std::sort(at_level.begin(), at_level.end());
  int64_t left = length;
  for (int s : at_level) {
    (*lens)[s] = level - load[s];
    left -= (*lens)[s];
  }
  CHECK_GE(left, 0);
  CHECK_LT(left, k);
  for (int i = 0; i < left; ++i) ++(*lens)[at_level[i]];
}

}  // namespace

const char* PlacementName(Placement p) {
  switch (p) {
    case Placement::kBalanced:
      return "levelled";
    case Placement::kMxnetHash:
      return "mxnet";
    case Placement::kBalancedEvenSplit:
      return "even";
  }
  return "?";
}

absl::StatusOr<Placement> PlacementFromName(absl::string_view name) {
  if (name == "levelled") return Placement::kBalanced;
  if (name == "mxnet") return Placement::kMxnetHash;
  if (name == "even" || name.empty()) return Placement::kBalancedEvenSplit;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown partition \"", name,
                   "\" (this pstrain knows levelled, even and mxnet)"));
}

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
    std::vector<int64_t> lens(num_servers, 0);
    if (placement != Placement::kBalanced) {
      for (int s = 0; s < num_servers; ++s) {
        lens[s] = length / num_servers + (s < length % num_servers ? 1 : 0);
      }
    } else {
      FillToLevel(*load, length, &lens);
    }
    int64_t offset = 0;
    for (int s = 0; s < num_servers; ++s) {
      if (lens[s] == 0 && placement == Placement::kBalanced) continue;
      out.push_back({key, s, offset, lens[s]});
      (*load)[s] += lens[s];
      offset += lens[s];
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

std::vector<std::vector<SliceSpec>> PlanKeys(
    const std::vector<int64_t>& keys, const std::vector<int64_t>& lengths,
    int num_servers, int64_t bigarray_bound, std::vector<int64_t>* load,
    Placement placement) {
  CHECK_EQ(keys.size(), lengths.size());
  std::vector<size_t> order(keys.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  if (placement == Placement::kBalanced) {
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      const bool big_a = lengths[a] > bigarray_bound;
      const bool big_b = lengths[b] > bigarray_bound;
      if (big_a != big_b) return big_b;
      return lengths[a] > lengths[b];
    });
  }
  std::vector<std::vector<SliceSpec>> out(keys.size());
  for (size_t i : order) {
    out[i] = PlanKey(keys[i], lengths[i], num_servers, bigarray_bound, load,
                     placement);
  }
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
