// The "dist_sync", "dist_async" and "dist_device_sync" KVStores: a client
// of the job's servers. Keys are placed and chunked by the partition plan
// (partition.h); Push/Pull/PushPull/PushPullGroup send one message per
// chunk or per packed group and return once the requests are queued; the
// replies are handled on the transport's I/O thread. A watcher thread
// fails every pending operation when the job aborts or shuts down.
// Thread-safe. The store owns `node` and its threads; destruction stops
// all traffic.
#ifndef PSTRAIN_KVSTORE_DIST_KVSTORE_H_
#define PSTRAIN_KVSTORE_DIST_KVSTORE_H_

#include <memory>
#include <string>

#include "cluster/cluster.h"
#include "kvstore/kvstore.h"

namespace pstrain {
namespace kvstore {

// Returns a dist store named `type` over `node`, which takes over the
// node's data handler. Use KVStore::Create(), which checks the options and
// joins the job.
// REQUIRES: type is "dist_sync", "dist_async" or "dist_device_sync";
// options.max_message_bytes is in [4096, 1 GiB]; `node` joined the job as a
// worker and accepts frames of MaxFrameBytesFor(options.max_message_bytes).
std::unique_ptr<KVStore> NewDistKVStore(
    std::string type, const KVStoreOptions& options,
    std::unique_ptr<cluster::ClusterNode> node);

}  // namespace kvstore
}  // namespace pstrain

#endif  // PSTRAIN_KVSTORE_DIST_KVSTORE_H_
