// The "local" and "device" KVStores: one process, no servers. Push stores
// the sum of the devices' values for a key, or, once SetOptimizer() has
// installed an optimizer, applies that sum to the stored weights as a
// gradient; Pull copies the stored values out. Every operation completes
// before Push/Pull/PushPull/PushPullGroup return (its Status is kept for
// Wait()); Barrier() and Finish() do nothing, AllReduceSum() copies.
// Thread-safe.
#ifndef PSTRAIN_KVSTORE_LOCAL_KVSTORE_H_
#define PSTRAIN_KVSTORE_LOCAL_KVSTORE_H_

#include <memory>
#include <string>

#include "kvstore/kvstore.h"

namespace pstrain {
namespace kvstore {

// Returns a local store named `type` (what type() reports). Use
// KVStore::Create(), which checks the type.
// REQUIRES: type is "local" or "device".
std::unique_ptr<KVStore> NewLocalKVStore(std::string type);

}  // namespace kvstore
}  // namespace pstrain

#endif  // PSTRAIN_KVSTORE_LOCAL_KVSTORE_H_
