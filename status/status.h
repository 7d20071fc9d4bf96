// The live status of a job (issue #17) as plain values, and the two texts
// the status server serves from them: Prometheus metrics and JSON. Pure
// functions, no I/O; the HTTP side is http_status_server.h.
//
// Who fills a JobStatus: the scheduler (scheduler/job_status.h) from what
// it knows (membership, heartbeats) plus the per-node stats nodes report.
// A value a node has not reported yet is "unknown" (see each field), and
// unknown values are left out of both texts rather than shown as zero.
#ifndef PSTRAIN_STATUS_STATUS_H_
#define PSTRAIN_STATUS_STATUS_H_

#include <cstdint>
#include <string>
#include <vector>

namespace pstrain {
namespace status {

// Fractions of a worker's wall time over its last reporting interval (each
// in [0, 1]; they need not sum to 1: the rest is unaccounted).
struct TimeSplit {
  double data = 0;       // Reading and decoding input.
  double compute = 0;    // Forward and backward.
  double wait_pull = 0;  // Waiting for weights from the servers.
  double wait_push = 0;  // Waiting for pushes to be accepted.
  double optimizer = 0;  // The update rule, where it runs on the worker.
};

// Fractions of a server's wall time since it started serving
// (server/time_split.h).
struct ServerSplit {
  double sum = 0;     // Summing pushed gradients.
  double update = 0;  // The optimizer.
  double wait = 0;    // Waiting for the slowest worker's push of a round.
  double send = 0;    // Sending replies.
  double idle = 0;    // Nothing to do.
};

// One node of the job.
struct NodeStatus {
  std::string role;  // "server" or "worker" (Prometheus label `role`).
  int rank = -1;     // -1: not assigned yet (label rank="").
  // The node's address "host:port" as it registered (label `host`; unique
  // per node, unlike the bare host). Peer-supplied: escaped by every text.
  std::string host;
  std::string state;  // "registered", "alive", "finished" or "dead".
  // Seconds since the scheduler last heard from the node; < 0: unknown.
  double heartbeat_age_s = -1;

  // Stats the node reports with its heartbeats. When has_stats is false
  // none of the fields below is known and none is exported.
  bool has_stats = false;
  double images_per_s = 0;   // Workers; 0 for servers.
  TimeSplit split;           // Workers.
  ServerSplit server_split;  // Servers.
  // Servers: tensor bytes pushed to and pulled from it since it started.
  int64_t bytes_pushed = 0;
  int64_t bytes_pulled = 0;
  int64_t queue_depth = 0;  // Messages waiting in its send/receive queues.
  int64_t refused = 0;      // Messages refused (token, sender, limits).
  int64_t malformed = 0;    // Messages that did not parse.
  // Encrypted data links: failed handshakes and records that failed their
  // tag (transport::TransportStats::link_auth_failures).
  int64_t link_auth_failures = 0;

  // A worker that holds the job back (scheduler/straggler.h), and why.
  bool straggler = false;
  std::string straggler_reason;
};

// The job as a whole.
struct JobStatus {
  std::string network;   // e.g. "resnet"; empty: unknown.
  std::string kv_store;  // e.g. "dist_sync"; empty: unknown.
  // "starting" (waiting for nodes), "running", "finished" or "aborted".
  std::string state;
  int num_servers = 0;  // Expected by the job.
  int num_workers = 0;
  int64_t epoch = -1;  // < 0: unknown.
  int64_t step = -1;   // < 0: unknown.
  double eta_s = -1;   // Seconds to the end of training; < 0: unknown.
  std::vector<NodeStatus> nodes;
};

// `job` in Prometheus's text exposition format 0.0.4 (what
// `promtool check metrics` reads): a # HELP and # TYPE line per family,
// families named pstrain_*, per-node series labelled role, rank and host
// (label values escaped: backslash, double quote, newline), counters ending
// in _total. Unknown values are left out; a family with no samples is left
// out entirely. Thread-safe.
std::string MetricsText(const JobStatus& job);

// `job` as one JSON object:
//   {"job": {"network", "kv_store", "state", "num_servers", "num_workers",
//            "epoch", "step", "eta_s"},            (unknown: null)
//    "nodes": [{"role", "rank" (null when unassigned), "host", "state",
//               "heartbeat_age_s", "has_stats", "images_per_s",
//               "split": workers {"data", "compute", "wait_pull",
//                        "wait_push", "optimizer"}, servers {"sum",
//                        "update", "wait", "send", "idle"},
//               "bytes_pushed", "bytes_pulled", "queue_depth", "refused",
//               "malformed", "link_auth_failures", "straggler",
//               "straggler_reason"}, ...]}
// The stats fields are null when has_stats is false. Strings that are not
// valid UTF-8 have the bad bytes replaced (U+FFFD). Never throws.
// Thread-safe.
std::string StatusJson(const JobStatus& job);

}  // namespace status
}  // namespace pstrain

#endif  // PSTRAIN_STATUS_STATUS_H_
