#include "status/status.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace pstrain {
namespace status {
namespace {

// A Prometheus label value: backslash, double quote and newline escaped.
std::string LabelValue(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// A sample value: whole numbers (byte counts) in full, others with 9
// significant digits.
std::string Number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::trunc(v) && std::fabs(v) < 9007199254740992.0) {
    return absl::StrFormat("%.0f", v);
  }
  return absl::StrFormat("%.9g", v);
}

std::string NodeLabels(const NodeStatus& n) {
  return absl::StrCat("role=\"", LabelValue(n.role), "\",rank=\"",
                      n.rank >= 0 ? absl::StrCat(n.rank) : "", "\",host=\"",
                      LabelValue(n.host), "\"");
}

// Appends one metric family: HELP, TYPE and its samples, or nothing when it
// has no samples.
class Family {
 public:
  Family(std::string name, std::string type, std::string help)
      : name_(std::move(name)),
        type_(std::move(type)),
        help_(std::move(help)) {}
  void Add(const std::string& labels, double value) {
    samples_ +=
        absl::StrCat(name_, labels.empty() ? "" : "{", labels,
                     labels.empty() ? "" : "}", " ", Number(value), "\n");
  }
  void AppendTo(std::string* out) const {
    if (samples_.empty()) return;
    absl::StrAppend(out, "# HELP ", name_, " ", help_, "\n", "# TYPE ", name_,
                    " ", type_, "\n", samples_);
  }

 private:
  const std::string name_, type_, help_;
  std::string samples_;
};

// For each node with stats (of `role` only, when not empty), the sample
// `get` gives.
void NodeFamily(const JobStatus& job, const std::string& name,
                const std::string& type, const std::string& help,
                const std::function<double(const NodeStatus&)>& get,
                std::string* out, const std::string& role = "") {
  Family f(name, type, help);
  for (const NodeStatus& n : job.nodes) {
    if (n.has_stats && (role.empty() || n.role == role))
      f.Add(NodeLabels(n), get(n));
  }
  f.AppendTo(out);
}

// The node's time split by phase name: a worker's or a server's.
std::vector<std::pair<const char*, double>> SplitPhases(const NodeStatus& n) {
  if (n.role == "server") {
    const ServerSplit& s = n.server_split;
    return {{"sum", s.sum},
            {"update", s.update},
            {"wait", s.wait},
            {"send", s.send},
            {"idle", s.idle}};
  }
  const TimeSplit& s = n.split;
  return {{"data", s.data},
          {"compute", s.compute},
          {"wait_pull", s.wait_pull},
          {"wait_push", s.wait_push},
          {"optimizer", s.optimizer}};
}

nlohmann::json OrNull(bool known, double v) {
  return known ? nlohmann::json(v) : nlohmann::json(nullptr);
}

}  // namespace

std::string MetricsText(const JobStatus& job) {
  std::string out;
  {
    Family f("pstrain_job_info", "gauge",
             "The job: network, kv_store and state as labels; always 1.");
    f.Add(absl::StrCat("network=\"", LabelValue(job.network), "\",kv_store=\"",
                       LabelValue(job.kv_store), "\",state=\"",
                       LabelValue(job.state), "\""),
          1);
    f.AppendTo(&out);
  }
  {
    Family f("pstrain_job_expected_nodes", "gauge",
             "Servers and workers the job expects.");
    f.Add("role=\"server\"", job.num_servers);
    f.Add("role=\"worker\"", job.num_workers);
    f.AppendTo(&out);
  }
  if (job.epoch >= 0) {
    Family f("pstrain_job_epoch", "gauge", "The current epoch.");
    f.Add("", job.epoch);
    f.AppendTo(&out);
  }
  if (job.step >= 0) {
    Family f("pstrain_job_step", "gauge", "The current step (batches).");
    f.Add("", job.step);
    f.AppendTo(&out);
  }
  if (job.eta_s >= 0) {
    Family f("pstrain_job_eta_seconds", "gauge",
             "Estimated seconds until training ends.");
    f.Add("", job.eta_s);
    f.AppendTo(&out);
  }
  {
    Family f("pstrain_node_up", "gauge",
             "1 while the node is registered, alive or finished; 0 when dead.");
    for (const NodeStatus& n : job.nodes) {
      f.Add(NodeLabels(n), n.state == "dead" ? 0 : 1);
    }
    f.AppendTo(&out);
  }
  {
    Family f("pstrain_node_heartbeat_age_seconds", "gauge",
             "Seconds since the scheduler last heard from the node.");
    for (const NodeStatus& n : job.nodes) {
      if (n.heartbeat_age_s >= 0) f.Add(NodeLabels(n), n.heartbeat_age_s);
    }
    f.AppendTo(&out);
  }
  NodeFamily(
      job, "pstrain_node_images_per_second", "gauge",
      "Images a worker trains per second (last reporting interval).",
      [](const NodeStatus& n) { return n.images_per_s; }, &out, "worker");
  {
    Family f("pstrain_node_time_fraction", "gauge",
             "Fraction of a node's wall time per phase: workers data, "
             "compute, wait_pull, wait_push, optimizer; servers sum, update, "
             "wait, send, idle.");
    for (const NodeStatus& n : job.nodes) {
      if (!n.has_stats) continue;
      for (const auto& [phase, value] : SplitPhases(n)) {
        f.Add(absl::StrCat(NodeLabels(n), ",phase=\"", phase, "\""), value);
      }
    }
    f.AppendTo(&out);
  }
  NodeFamily(
      job, "pstrain_node_pushed_bytes_total", "counter",
      "Tensor bytes pushed to the server (gradients, initial values).",
      [](const NodeStatus& n) { return static_cast<double>(n.bytes_pushed); },
      &out, "server");
  NodeFamily(
      job, "pstrain_node_pulled_bytes_total", "counter",
      "Tensor bytes pulled from the server (weights).",
      [](const NodeStatus& n) { return static_cast<double>(n.bytes_pulled); },
      &out, "server");
  NodeFamily(
      job, "pstrain_node_queue_depth", "gauge",
      "Messages waiting in the node's queues.",
      [](const NodeStatus& n) { return static_cast<double>(n.queue_depth); },
      &out);
  NodeFamily(
      job, "pstrain_node_refused_messages_total", "counter",
      "Messages the node refused (token, sender, limits).",
      [](const NodeStatus& n) { return static_cast<double>(n.refused); }, &out);
  NodeFamily(
      job, "pstrain_node_malformed_messages_total", "counter",
      "Messages the node received that did not parse.",
      [](const NodeStatus& n) { return static_cast<double>(n.malformed); },
      &out);
  NodeFamily(
      job, "pstrain_node_link_auth_failures_total", "counter",
      "Encrypted data link handshakes and records that failed "
      "authentication.",
      [](const NodeStatus& n) {
        return static_cast<double>(n.link_auth_failures);
      },
      &out);
  NodeFamily(
      job, "pstrain_node_straggler", "gauge",
      "1 when the worker is markedly slower than the median worker.",
      [](const NodeStatus& n) { return n.straggler ? 1.0 : 0.0; }, &out);
  return out;
}

std::string StatusJson(const JobStatus& job) {
  using nlohmann::json;
  json j;
  j["job"] = {{"network", job.network},
              {"kv_store", job.kv_store},
              {"state", job.state},
              {"num_servers", job.num_servers},
              {"num_workers", job.num_workers},
              {"epoch", job.epoch >= 0 ? json(job.epoch) : json(nullptr)},
              {"step", job.step >= 0 ? json(job.step) : json(nullptr)},
              {"eta_s", OrNull(job.eta_s >= 0, job.eta_s)}};
  json nodes = json::array();
  for (const NodeStatus& n : job.nodes) {
    const bool s = n.has_stats;
    json split = nullptr;
    if (s) {
      split = json::object();
      for (const auto& [phase, value] : SplitPhases(n)) split[phase] = value;
    }
    nodes.push_back(
        {{"role", n.role},
         {"rank", n.rank >= 0 ? json(n.rank) : json(nullptr)},
         {"host", n.host},
         {"state", n.state},
         {"heartbeat_age_s", OrNull(n.heartbeat_age_s >= 0, n.heartbeat_age_s)},
         {"has_stats", s},
         {"images_per_s", OrNull(s, n.images_per_s)},
         {"split", split},
         {"bytes_pushed", s ? json(n.bytes_pushed) : json(nullptr)},
         {"bytes_pulled", s ? json(n.bytes_pulled) : json(nullptr)},
         {"queue_depth", s ? json(n.queue_depth) : json(nullptr)},
         {"refused", s ? json(n.refused) : json(nullptr)},
         {"malformed", s ? json(n.malformed) : json(nullptr)},
         {"link_auth_failures", s ? json(n.link_auth_failures) : json(nullptr)},
         {"straggler", n.straggler},
         {"straggler_reason", n.straggler_reason}});
  }
  j["nodes"] = std::move(nodes);
  // Replace, not throw, on bytes that are not UTF-8 (hosts come from the
  // network).
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace status
}  // namespace pstrain
