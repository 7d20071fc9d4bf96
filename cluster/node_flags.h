// The flags of the nodes of a job, servers and workers, defined once (see
// cluster_flags.h): --host, --port, --shm_bytes, --rank_hint, --timeline
// and --timeline_steps, on top of the cluster flags. Only binaries link this
// target.
#ifndef PSTRAIN_CLUSTER_NODE_FLAGS_H_
#define PSTRAIN_CLUSTER_NODE_FLAGS_H_

#include "absl/status/statusor.h"
#include "cluster/cluster.h"
#include "proto/messages.pb.h"
#include "util/flags.h"

namespace pstrain {
namespace cluster {

// The flags above, for ProgramHelp::groups.
FlagGroup NodeFlagGroup();

// ClusterOptionsFromFlags(require_scheduler_address) plus --host, --port,
// --shm_bytes, --rank_hint, --timeline and --timeline_steps, for a node of
// `role`. InvalidArgument names the
// flag, its value and what is allowed.
absl::StatusOr<ClusterOptions> NodeOptionsFromFlags(
    proto::Role role, bool require_scheduler_address = true);

}  // namespace cluster
}  // namespace pstrain

#endif  // PSTRAIN_CLUSTER_NODE_FLAGS_H_
