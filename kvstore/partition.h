// The key partition plan of the dist_* KVStores: which server holds which
// slice of each key, and the chunks a slice travels in. Pure functions of
// their arguments, no cluster needed, so every worker (and anyone else, such
// as a test) computes the same plan from the same calls in the same order.
// Thread-compatible: the functions keep no state; `load` belongs to the
// caller.
#ifndef PSTRAIN_KVSTORE_PARTITION_H_
#define PSTRAIN_KVSTORE_PARTITION_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pstrain {
namespace kvstore {

// One slice of a key on one server: elements [offset, offset + length) of
// the key's array.
struct SliceSpec {
  int64_t key = 0;
  int server = 0;  // Server rank.
  int64_t offset = 0;
  int64_t length = 0;
};

// Where arrays of at most bigarray_bound elements go.
enum class Placement {
  // To the server with the fewest elements so far (ties: lowest rank);
  // big arrays level the servers (PlanKey), one Init's keys small ones
  // first, largest first (PlanKeys). Checkpoints name it "levelled".
  kBalanced,
  // To server (key * 9973) % num_servers, as MXNet 1.x's KVStoreDist
  // (EncodeKey in src/kvstore/kvstore_dist.h), whatever their sizes; big
  // arrays split evenly. "mxnet".
  kMxnetHash,
  // pstrain's plan before 2026-12-07, which checkpoints without a
  // partition record used: small arrays as kBalanced but in Init order,
  // big arrays split evenly over all servers. "even".
  kBalancedEvenSplit,
};

// "levelled", "mxnet" or "even": the name checkpoints record.
const char* PlacementName(Placement p);
// The placement a name records; "" (a checkpoint from before the record)
// is kBalancedEvenSplit. InvalidArgument for any other name.
absl::StatusOr<Placement> PlacementFromName(absl::string_view name);

// The deterministic partition plan every worker computes from the same
// Init() calls. Arrays above `bigarray_bound` elements are split over the
// servers: with kBalanced, so that the least loaded servers rise to a
// common level (water-filling: a server already above it gets no slice,
// the few elements left over go to the lowest ranks at the level), since
// each server's bytes cross its host's link every step and the busiest
// host sets a dist_sync step's pace; otherwise evenly over all servers, as
// MXNet (the first length % num_servers servers get one element more,
// empty slices included). Smaller arrays, and every array when there
// is one server, go whole to the server `placement` picks. `load` carries
// the per-server element counts between calls and is updated with this
// key's slices. Returns the slices in offset order, which is server order.
// REQUIRES: num_servers >= 1, load->size() == num_servers, length >= 0.
std::vector<SliceSpec> PlanKey(int64_t key, int64_t length, int num_servers,
                               int64_t bigarray_bound,
                               std::vector<int64_t>* load,
                               Placement placement = Placement::kBalanced);

// The plans of keys initialized together (one Init() call), returned in
// the order of `keys`. With kBalanced, PlanKey runs on the arrays of at
// most `bigarray_bound` elements first, largest first (ties: in order),
// then on the big ones, largest first: each small array goes to the least
// loaded server, and the big ones level what the small ones left uneven,
// so that the servers end as even as the arrays allow. Otherwise in
// order.
// REQUIRES: keys.size() == lengths.size(), and PlanKey's.
std::vector<std::vector<SliceSpec>> PlanKeys(
    const std::vector<int64_t>& keys, const std::vector<int64_t>& lengths,
    int num_servers, int64_t bigarray_bound, std::vector<int64_t>* load,
    Placement placement = Placement::kBalanced);

// Splits each slice of `slices` into consecutive chunks of at most
// `max_elements` elements (near-equal sizes, the first ones one element
// longer), in order; an empty slice stays one empty chunk. Deterministic:
// the workers and the servers see the same chunks.
// REQUIRES: max_elements > 0.
std::vector<SliceSpec> SplitIntoChunks(const std::vector<SliceSpec>& slices,
                                       int64_t max_elements);

}  // namespace kvstore
}  // namespace pstrain

#endif  // PSTRAIN_KVSTORE_PARTITION_H_
