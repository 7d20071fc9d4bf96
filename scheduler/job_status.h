// The job's live status (status/status.h) as the scheduler's membership
// sees it, for the status server (--status_port).
#ifndef PSTRAIN_SCHEDULER_JOB_STATUS_H_
#define PSTRAIN_SCHEDULER_JOB_STATUS_H_

#include <vector>

#include "absl/time/time.h"
#include "scheduler/membership.h"
#include "scheduler/node_stats.h"
#include "status/status.h"

namespace pstrain {
namespace scheduler {

// The job and its nodes as `m` knows them at `now`:
//   job: num_servers, num_workers, state "starting" before Start(), then
//        "running" (the caller sets "finished" / "aborted" at the end);
//        network, kv_store, epoch, step and ETA are unknown (the scheduler
//        does not learn them);
//   nodes: before Start(), every registered node (state "registered", no
//        rank, heartbeat age unknown); after, every member in id order
//        (servers by rank, then workers): rank, state "alive", "finished"
//        (a worker that sent SHUTDOWN) or "dead" (silent longer than the
//        heartbeat timeout), and the seconds since it was last heard from.
// No node has stats (has_stats false). This is where they join: when
// `node_ids` is given it receives the transport id of each node, index for
// index (-1 before Start()), so that a caller holding per-node stats by id
// (reported with heartbeats) fills nodes[i]'s stats fields from them and
// then calls status::MarkStragglers.
status::JobStatus MembershipStatus(const Membership& m, absl::Time now,
                                   std::vector<int>* node_ids = nullptr);

// Fills the stats of `job`'s ranked nodes from `stats` (NodeStatsTable's
// snapshot), matched by role and rank: a worker's images/s and time split
// (fractions), a server's bytes in and out as bytes pushed to it and pulled
// from it and its split, every node's queued, refused and malformed
// messages and its data links' authentication failures. has_stats becomes true
// once the role's own stats arrived (a worker's images/s, a server's bytes).
// The job's epoch, step, network, kv_store and ETA become worker rank 0's when
// it reported them.
void MergeNodeStats(const std::vector<NodeStatsEntry>& stats,
                    status::JobStatus* job);

}  // namespace scheduler
}  // namespace pstrain

#endif  // PSTRAIN_SCHEDULER_JOB_STATUS_H_
