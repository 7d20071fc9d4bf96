// The flags of a job's cluster, defined once for every program that takes
// part in one (the scheduler, servers, workers, kv_bench's join mode), with
// one default each (DESIGN.md, Node lifecycle):
//   --scheduler_address, --num_workers, --num_servers, --token_file,
//   --start_timeout_s, --heartbeat_interval_s, --heartbeat_timeout_s,
//   --insecure_plaintext, --curve_keys_dir.
// Servers and workers also link node_flags.h (--host, --port, --shm_bytes).
//
// These are the one exception to "DEFINE_* only in main.cc" (STYLE.md): a
// job's nodes must agree on them, so they are defined in one place. Only
// binaries link this target; libraries still take ClusterOptions.
#ifndef PSTRAIN_CLUSTER_CLUSTER_FLAGS_H_
#define PSTRAIN_CLUSTER_CLUSTER_FLAGS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cluster/cluster.h"
#include "util/flags.h"

namespace pstrain {
namespace cluster {

// The flags above, for ProgramHelp::groups.
FlagGroup ClusterFlagGroup();

// The flags' values in a ClusterOptions (host, port, shm_bytes and role
// left at their defaults), checked. InvalidArgument names the flag, its
// value and what is allowed ("--heartbeat_timeout_s -1: must be in (0,
// 86400]"); --token_file's errors name the file. An empty
// --scheduler_address is refused when `require_scheduler_address`, else
// left empty. Reads the flags: call after parsing them (not thread-safe).
absl::StatusOr<ClusterOptions> ClusterOptionsFromFlags(
    bool require_scheduler_address = true);

// The job-wide flags of `options` every node must agree on
// ("--start_timeout_s=...", "--heartbeat_interval_s=...",
// "--heartbeat_timeout_s=...", "--insecure_plaintext=..."), for the command
// lines of nodes a program starts itself.
std::vector<std::string> TimingFlags(const ClusterOptions& options);

}  // namespace cluster
}  // namespace pstrain

#endif  // PSTRAIN_CLUSTER_CLUSTER_FLAGS_H_
