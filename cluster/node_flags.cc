#include "cluster/node_flags.h"

#include "cluster/cluster_flags.h"
#include "gflags/gflags.h"
#include "util/status.h"

DEFINE_string(host, "127.0.0.1",
              "Address this node binds and advertises to the other nodes "
              "(launch passes the host of the hosts file).");
DEFINE_int32(port, 0, "Port this node binds (0: any free port).");
DEFINE_int32(rank_hint, -1,
             "The rank this node would like (BytePS's DMLC_WORKER_ID); the "
             "scheduler still assigns ranks, hinted nodes first in hint "
             "order. -1: none.");
DEFINE_int64(shm_bytes, pstrain::cluster::kDefaultShmBytes,
             "Shared-memory arena for tensors to and from nodes on the same "
             "host (one copy instead of two kernel copies); 0: everything "
             "over TCP. Either side's 0 turns it off for the pair.");

namespace pstrain {
namespace cluster {

FlagGroup NodeFlagGroup() {
  return {__FILE__, "Flags common to servers and workers"};
}

absl::StatusOr<ClusterOptions> NodeOptionsFromFlags(
    proto::Role role, bool require_scheduler_address) {
  PSTRAIN_ASSIGN_OR_RETURN(ClusterOptions o,
                           ClusterOptionsFromFlags(require_scheduler_address));
  if (FLAGS_host.empty()) {
    return BadFlag("host", FLAGS_host, "must name this host's address");
  }
  if (FLAGS_port < 0 || FLAGS_port > 65535) {
    return BadFlag("port", FLAGS_port, "must be in [0, 65535] (0: any)");
  }
  if (FLAGS_shm_bytes < 0) {
    return BadFlag("shm_bytes", FLAGS_shm_bytes, "must be >= 0 (0: off)");
  }
  std::string host;
  int port = 0;
  if (ParseHostPort(o.scheduler_address, &host, &port).ok() && port == 0) {
    return BadFlag("scheduler_address", o.scheduler_address,
                   "port 0 is for the scheduler to pick one; give its real "
                   "port");
  }
  if (FLAGS_rank_hint < -1) {
    return BadFlag("rank_hint", FLAGS_rank_hint, "must be >= 0 (-1: none)");
  }
  o.rank_hint = FLAGS_rank_hint;
  o.role = role;
  o.host = FLAGS_host;
  o.port = FLAGS_port;
  o.shm_bytes = FLAGS_shm_bytes;
  return o;
}

}  // namespace cluster
}  // namespace pstrain
