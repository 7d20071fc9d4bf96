#include "scheduler/job_status.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace pstrain {
namespace scheduler {
namespace {

status::NodeStatus FromInfo(const proto::NodeInfo& info) {
  status::NodeStatus n;
  n.role = absl::AsciiStrToLower(proto::Role_Name(info.role()));
  n.host = absl::StrCat(info.host(), ":", info.port());
  return n;
}

}  // namespace

status::JobStatus MembershipStatus(const Membership& m, absl::Time now,
                                   std::vector<int>* node_ids) {
  status::JobStatus job;
  job.num_servers = m.options().num_servers;
  job.num_workers = m.options().num_workers;
  job.state = m.started() ? "running" : "starting";
  if (node_ids != nullptr) node_ids->clear();
  if (!m.started()) {
    for (const auto& [address, info] : m.registered()) {
      status::NodeStatus n = FromInfo(info);
      n.state = "registered";
      job.nodes.push_back(std::move(n));
      if (node_ids != nullptr) node_ids->push_back(-1);
    }
    return job;
  }
  for (const auto& [id, member] : m.members()) {
    status::NodeStatus n = FromInfo(member.info);
    n.rank = member.info.rank();
    const absl::Duration age = now - member.last_seen;
    n.heartbeat_age_s =
        absl::ToDoubleSeconds(std::max(age, absl::ZeroDuration()));
    n.state = member.finished                       ? "finished"
              : age > m.options().heartbeat_timeout ? "dead"
                                                    : "alive";
    job.nodes.push_back(std::move(n));
    if (node_ids != nullptr) node_ids->push_back(id);
  }
  return job;
}

void MergeNodeStats(const std::vector<NodeStatsEntry>& stats,
                    status::JobStatus* job) {
  for (status::NodeStatus& n : job->nodes) {
    if (n.rank < 0) continue;
    const proto::Role role = n.role == "server" ? proto::SERVER : proto::WORKER;
    for (const NodeStatsEntry& e : stats) {
      if (e.role != role || e.rank != n.rank || !e.has_stats) continue;
      const proto::NodeStats& s = e.stats;
      // Every heartbeat carries the transport's counters; the role's own
      // stats come later (a worker's after its first --disp_batches).
      n.has_stats =
          role == proto::WORKER ? s.has_images_per_sec() : s.has_bytes_in();
      n.queue_depth = s.queued_messages();
      n.refused = s.refused();
      n.malformed = s.malformed();
      n.link_auth_failures = s.link_auth_failures();
      if (role == proto::WORKER) {
        n.images_per_s = s.images_per_sec();
        n.split.data = s.data_fraction();
        n.split.compute = s.compute_fraction();
        n.split.wait_pull = s.wait_pull_fraction();
        n.split.wait_push = s.wait_push_fraction();
        n.split.optimizer = s.optimizer_fraction();
        if (n.rank == 0) {
          if (s.has_epoch()) job->epoch = s.epoch();
          if (s.has_steps()) job->step = s.steps();
          if (s.has_network()) job->network = s.network();
          if (s.has_kv_store()) job->kv_store = s.kv_store();
          if (s.has_eta_s()) job->eta_s = s.eta_s();
        }
      } else {
        n.bytes_pushed = s.bytes_in();
        n.bytes_pulled = s.bytes_out();
        n.server_split.sum = s.sum_fraction();
        n.server_split.update = s.update_fraction();
        n.server_split.wait = s.wait_fraction();
        n.server_split.send = s.send_fraction();
        n.server_split.idle = s.idle_fraction();
      }
    }
  }
}

}  // namespace scheduler
}  // namespace pstrain
