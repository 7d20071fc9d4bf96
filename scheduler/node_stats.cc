#include "scheduler/node_stats.h"

namespace pstrain {
namespace scheduler {

void NodeStatsTable::AddNode(const proto::NodeInfo& info) {
  NodeStatsEntry e;
  e.role = info.role();
  e.rank = info.rank();
  e.host = info.host();
  e.port = info.port();
  MutexLock lock(&mu_);
  nodes_[{info.role(), info.rank()}] = std::move(e);
}

void NodeStatsTable::Heartbeat(proto::Role role, int rank, absl::Time now,
                               const proto::NodeStats* stats) {
  MutexLock lock(&mu_);
  auto it = nodes_.find({role, rank});
  if (it == nodes_.end()) return;
  it->second.last_heartbeat = now;
  if (stats != nullptr) {
    it->second.stats = *stats;
    it->second.has_stats = true;
  }
}

std::vector<NodeStatsEntry> NodeStatsTable::Snapshot() const {
  MutexLock lock(&mu_);
  std::vector<NodeStatsEntry> out;
  out.reserve(nodes_.size());
  for (const auto& [key, e] : nodes_) out.push_back(e);
  return out;
}

}  // namespace scheduler
}  // namespace pstrain
