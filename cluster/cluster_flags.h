// The flags of a job's cluster, defined once for every program that takes
// part in one (the scheduler, servers, workers, kv_bench's join mode), with
// one default each (DESIGN.md, Node lifecycle), or from MXNet's DMLC_*
// variables where a flag is absent (ApplyEnvironment):
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

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cluster/cluster.h"
#include "proto/messages.pb.h"
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

// Environment variables, name -> value.
using Environment = std::map<std::string, std::string>;

// This process's environment.
Environment ProcessEnvironment();

// The variables ApplyEnvironment reads.
inline constexpr const char* kEnvironmentVariables[] = {
    "DMLC_ROLE",       "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT",
    "DMLC_NUM_WORKER", "DMLC_NUM_SERVER",  "DMLC_NODE_HOST",
    "DMLC_INTERFACE",  "DMLC_WORKER_ID",   "PSTRAIN_TOKEN_FILE"};

// MXNet/ps-lite's environment (as Kubeflow's MXJob operator, MXNet's
// tools/launch.py and BytePS set it), applied to the flags a binary of
// `role` has where they were not given on the command line or in a flag
// file (flags win; a variable that disagrees with a given flag is noted):
//   DMLC_ROLE          scheduler | server | worker: must be `role`
//                      (FailedPrecondition naming both otherwise);
//   DMLC_PS_ROOT_URI,  --scheduler_address URI:PORT (both or neither). The
//   DMLC_PS_ROOT_PORT  scheduler binds PORT on --host's address when
//                      DMLC_NODE_HOST or DMLC_INTERFACE gives one, else on
//                      every interface (0.0.0.0), as ps-lite's does: in a
//                      pod the URI names a service, not a local address;
//   DMLC_NUM_WORKER,   --num_workers, --num_servers;
//   DMLC_NUM_SERVER
//   DMLC_NODE_HOST     --host (servers, workers): bind and advertise it;
//   DMLC_INTERFACE     --host = that interface's IPv4 address (when
//                      DMLC_NODE_HOST is absent); NotFound names the
//                      interface and lists the ones there are;
//   DMLC_WORKER_ID     --rank_hint (workers; BytePS's worker id);
//   PSTRAIN_TOKEN_FILE --token_file. A variable holding the token itself is
//                      never read: it would show in every process listing.
// Every name above is in kEnvironmentVariables; no other is read.
// Returns the notes to log (conflicts, the wildcard bind); InvalidArgument
// names the variable, its value and what is allowed. `role` is SCHEDULER,
// SERVER or WORKER. Sets flags: call after parsing them, before
// ClusterOptionsFromFlags / NodeOptionsFromFlags (not thread-safe).
absl::StatusOr<std::vector<std::string>> ApplyEnvironment(
    proto::Role role, const Environment& env);

// For main(): ApplyEnvironment(role, ProcessEnvironment()); logs the notes
// (call after InitGoogleLogging) or exits with the error (ExitWithError).
void ApplyEnvironmentOrExit(absl::string_view program, proto::Role role);

}  // namespace cluster
}  // namespace pstrain

#endif  // PSTRAIN_CLUSTER_CLUSTER_FLAGS_H_
