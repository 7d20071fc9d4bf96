// The scheduler (DESIGN.md, Node lifecycle): registration, deterministic
// ranks, the address book, barriers, heartbeats and failure detection,
// abort and shutdown.
#ifndef PSTRAIN_SCHEDULER_SCHEDULER_H_
#define PSTRAIN_SCHEDULER_SCHEDULER_H_

#include <string>

#include "absl/time/time.h"
#include "cluster/cluster.h"
#include "scheduler/node_stats.h"
#include "scheduler/straggler.h"

namespace pstrain {
namespace scheduler {

struct SchedulerOptions {
  std::string address;  // host:port to bind; port 0 picks one (printed).
  int num_workers = 1;
  int num_servers = 1;
  std::string token;
  // Every expected node must register within this time.
  absl::Duration start_timeout = cluster::kDefaultStartTimeout;
  absl::Duration heartbeat_interval = cluster::kDefaultHeartbeatInterval;
  // A node silent this long is declared dead and the job is aborted.
  absl::Duration heartbeat_timeout = cluster::kDefaultHeartbeatTimeout;
  // ClusterOptions::insecure_plaintext: CURVE (the default) or plaintext.
  bool insecure_plaintext = false;
  // ClusterOptions::curve_keys_dir: per-node CURVE keys.
  std::string curve_keys_dir;
  // Called with the bound "host:port" once listening (e.g. to print it).
  void (*on_listening)(const std::string& address) = nullptr;
  // Where the scheduler keeps each node's latest heartbeat stats
  // (node_stats.h): every node is listed when the job starts, and updated
  // with each heartbeat. nullptr: not kept. Not owned; must outlive Run();
  // readable from any thread while Run() runs and after it returns.
  NodeStatsTable* node_stats = nullptr;

  // The live status server (status/http_status_server.h): the page at /,
  // /status.json and /metrics. Off when status_port < 0 (the default); 0
  // picks a free port. Bound to status_bind; beyond loopback it requires
  // `token` on every request (and the scheduler refuses to start without
  // one). Runs for as long as Run() does.
  int status_port = -1;
  std::string status_bind = "127.0.0.1";
  // Called with the page's URL ("http://HOST:PORT/") once it serves.
  void (*on_status_listening)(const std::string& url) = nullptr;

  // Workers that hold the job back are logged as warnings by name, host
  // and reason, checked with each heartbeat round (straggler.h), and
  // marked on the status page.
  StragglerOptions stragglers;

  // --recovery=replace (launch): a dead worker does not end the job. A
  // worker silent for heartbeat_timeout is marked dead (logged: "scheduler:
  // worker rank R at H:P declared dead: ..."; launch then kills and
  // replaces its process); a REGISTER with Header.replace_rank takes that
  // rank at the new address: every node gets the updated address book
  // (they move the rank's connection there) and the replacement also how
  // many "workers" barriers were released. A worker dead for longer than
  // replace_timeout without a replacement aborts the job, naming it. Dead
  // servers abort the job as before.
  bool replace_workers = false;
  absl::Duration replace_timeout = absl::Seconds(60);
};

// Runs the job's scheduler until it ends. Returns the exit code: 0 when
// every worker finished, 1 when the job was aborted (start timeout, a dead
// node) or the scheduler could not start (its address or the status
// server's cannot be bound); the reason is logged.
int Run(const SchedulerOptions& options);

}  // namespace scheduler
}  // namespace pstrain

#endif  // PSTRAIN_SCHEDULER_SCHEDULER_H_
