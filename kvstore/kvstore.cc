#include "kvstore/kvstore.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kvstore/dist_kvstore.h"
#include "kvstore/local_kvstore.h"
#include "util/status.h"

namespace pstrain {
namespace kvstore {

absl::StatusOr<std::unique_ptr<KVStore>> KVStore::Create(
    const std::string& type, const KVStoreOptions& options) {
  if (type == "local" || type == "device") return NewLocalKVStore(type);
  if (type == "dist_sync" || type == "dist_async" ||
      type == "dist_device_sync") {
    // Frames above 1 GiB would pass what the servers accept.
    if (options.max_message_bytes < 4096 ||
        options.max_message_bytes > (int64_t{1} << 30)) {
      return absl::InvalidArgumentError(
          absl::StrCat("max_message_bytes ", options.max_message_bytes,
                       ": must be in [4096, 1073741824]"));
    }
    if (options.slice_bytes != 0 &&
        (options.slice_bytes < 4096 ||
         options.slice_bytes > (int64_t{1} << 30))) {
      return absl::InvalidArgumentError(
          absl::StrCat("slice_bytes ", options.slice_bytes,
                       ": must be 0 (off) or in [4096, 1073741824]"));
    }
    if (options.send_credit_bytes < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("send_credit_bytes ", options.send_credit_bytes,
                       ": must be >= 0 (0: off)"));
    }
    cluster::ClusterOptions c = options.cluster;
    c.role = proto::WORKER;
    // Replies carry up to max_message_bytes of values (servers must accept
    // as much: server --max_frame_bytes).
    c.max_frame_bytes = std::max(c.max_frame_bytes,
                                 MaxFrameBytesFor(options.max_message_bytes));
    PSTRAIN_ASSIGN_OR_RETURN(auto node, cluster::ClusterNode::Start(c));
    return NewDistKVStore(type, options, std::move(node));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--kv_store '", type,
      "': use local, device, dist_sync, dist_async or dist_device_sync"));
}

}  // namespace kvstore
}  // namespace pstrain
