// The key-value server (DESIGN.md, KVStore semantics): holds the key slices
// workers initialize on it, sums dist_sync pushes in worker-rank order
// (bitwise reproducible) and applies the optimizer once per round, applies
// dist_async pushes on arrival, answers pulls, and serves requests by
// priority. A push for an unknown key slice or with a wrong length is
// refused with an error reply; nothing from the network can crash it.
// Negative keys are never optimized: a dist_sync round stores the sum of the
// workers' pushes (used to combine metrics across workers).
#ifndef PSTRAIN_SERVER_SERVER_H_
#define PSTRAIN_SERVER_SERVER_H_

#include "cluster/cluster.h"
#include "server/checkpoint.h"

namespace pstrain {
namespace server {

struct ServerOptions {
  cluster::ClusterOptions cluster;  // role is set to SERVER.
  // Checkpoints (issue #15); `rank` is set once the server has joined.
  ServerCheckpointOptions checkpoint;
  // --recovery=replace: ShardOptions::keep_previous.
  bool keep_previous = false;
};

// Joins the job and serves until the scheduler shuts it down (returns 0) or
// the job aborts / cannot start (returns 1, reason logged).
int Run(const ServerOptions& options);

}  // namespace server
}  // namespace pstrain

#endif  // PSTRAIN_SERVER_SERVER_H_
