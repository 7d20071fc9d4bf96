// The latest stats each node of the job reported with its heartbeats
// (issue #17, "See inside a running job"): a worker's steps, epoch,
// images/s and time split, a server's time split and bytes (the
// proto::NodeStats fields; what each role sets is documented there).
//
// The scheduler's loop thread writes it (every member when the job starts,
// then each heartbeat); any thread may read a snapshot, e.g. a status page
// or a straggler detector. Thread-safe.
#ifndef PSTRAIN_SCHEDULER_NODE_STATS_H_
#define PSTRAIN_SCHEDULER_NODE_STATS_H_

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"
#include "proto/messages.pb.h"
#include "util/mutex.h"

namespace pstrain {
namespace scheduler {

// One node as of its last heartbeat.
struct NodeStatsEntry {
  proto::Role role = proto::ROLE_UNKNOWN;
  int rank = -1;
  // As the node registered (it came from the network: escape it before
  // printing it, util/escape.h).
  std::string host;
  int port = 0;
  // When its last heartbeat arrived at the scheduler; InfinitePast() before
  // the first one.
  absl::Time last_heartbeat = absl::InfinitePast();
  // Whether a heartbeat has carried stats yet (nodes that predate them
  // never send any), and the latest ones.
  bool has_stats = false;
  proto::NodeStats stats;
};

class NodeStatsTable {
 public:
  NodeStatsTable() = default;
  NodeStatsTable(const NodeStatsTable&) = delete;
  NodeStatsTable& operator=(const NodeStatsTable&) = delete;

  // Lists a ranked node of the job (no heartbeat yet); again: resets it.
  void AddNode(const proto::NodeInfo& info) ABSL_LOCKS_EXCLUDED(mu_);
  // A heartbeat from the node of `role` and `rank` at `now`; `stats`
  // (nullptr: the heartbeat carried none, the previous ones stay) replaces
  // its stats. Unknown nodes are ignored.
  void Heartbeat(proto::Role role, int rank, absl::Time now,
                 const proto::NodeStats* stats) ABSL_LOCKS_EXCLUDED(mu_);
  // Every listed node, servers then workers, each by rank: a copy.
  std::vector<NodeStatsEntry> Snapshot() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  mutable Mutex mu_;
  // By (role, rank); SERVER < WORKER in the enum.
  std::map<std::pair<int, int>, NodeStatsEntry> nodes_ ABSL_GUARDED_BY(mu_);
};

}  // namespace scheduler
}  // namespace pstrain

#endif  // PSTRAIN_SCHEDULER_NODE_STATS_H_
