#include "cluster/cluster_flags.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gflags/gflags.h"
#include "transport/curve.h"
#include "util/status.h"
#include "util/token.h"

DEFINE_string(scheduler_address, "",
              "The scheduler's host:port. The scheduler binds it (port 0: any "
              "free port, printed as `scheduler address: H:P`); servers and "
              "workers connect to it. launch passes it.");
DEFINE_int32(num_workers, 1, "Workers in the job.");
DEFINE_int32(num_servers, 1, "Servers in the job.");
DEFINE_string(token_file, "",
              "File whose first line is the job token; messages without it "
              "are refused (launch passes it). Empty: no token.");
DEFINE_double(start_timeout_s,
              absl::ToDoubleSeconds(pstrain::cluster::kDefaultStartTimeout),
              "Seconds the scheduler waits for every node to register; it "
              "then aborts the job naming who is missing. Servers and workers "
              "wait this plus --heartbeat_timeout_s for the scheduler's "
              "answer.");
DEFINE_double(
    heartbeat_interval_s,
    absl::ToDoubleSeconds(pstrain::cluster::kDefaultHeartbeatInterval),
    "Seconds between heartbeats.");
DEFINE_double(heartbeat_timeout_s,
              absl::ToDoubleSeconds(pstrain::cluster::kDefaultHeartbeatTimeout),
              "A node silent this long is declared dead and the job aborts; "
              "nodes exit when the scheduler is silent this long.");

DEFINE_bool(insecure_plaintext, false,
            "Plaintext wire: the job token in each header is the only gate. "
            "Default: ZeroMQ CURVE with keys derived from the token file, "
            "every connection encrypted and authenticated. Every node of a "
            "job must agree.");

DEFINE_string(curve_keys_dir, "",
              "Per-node CURVE keys instead of keys derived from the token: a "
              "folder with server.key (the job's), node.key (this node's) and "
              "clients/*.pub (every node's public key; only these get in). "
              "tools/curve_keys makes one.");

namespace pstrain {
namespace cluster {
namespace {

// Every wait has a deadline: no timing flag may be unbounded.
constexpr double kMaxSeconds = 86400;

absl::Status Seconds(const char* flag, double value) {
  if (value > 0 && value <= kMaxSeconds) return absl::OkStatus();
  return BadFlag(flag, value,
                 absl::StrCat("must be in (0, ", kMaxSeconds, "]"));
}

}  // namespace

FlagGroup ClusterFlagGroup() {
  return {__FILE__, "Flags common to the scheduler, servers and workers"};
}

absl::StatusOr<ClusterOptions> ClusterOptionsFromFlags(
    bool require_scheduler_address) {
  ClusterOptions o;
  if (!FLAGS_scheduler_address.empty() || require_scheduler_address) {
    std::string host;
    int port = 0;
    if (!ParseHostPort(FLAGS_scheduler_address, &host, &port).ok() ||
        host.empty()) {
      return BadFlag("scheduler_address", FLAGS_scheduler_address,
                     "must be host:port (port 0-65535; 0 only for the "
                     "scheduler, which then picks one)");
    }
  }
  o.scheduler_address = FLAGS_scheduler_address;
  if (FLAGS_num_workers < 1) {
    return BadFlag("num_workers", FLAGS_num_workers, "must be >= 1");
  }
  if (FLAGS_num_servers < 1) {
    return BadFlag("num_servers", FLAGS_num_servers, "must be >= 1");
  }
  o.num_workers = FLAGS_num_workers;
  o.num_servers = FLAGS_num_servers;
  PSTRAIN_RETURN_IF_ERROR(Seconds("start_timeout_s", FLAGS_start_timeout_s));
  PSTRAIN_RETURN_IF_ERROR(
      Seconds("heartbeat_interval_s", FLAGS_heartbeat_interval_s));
  PSTRAIN_RETURN_IF_ERROR(
      Seconds("heartbeat_timeout_s", FLAGS_heartbeat_timeout_s));
  if (FLAGS_heartbeat_timeout_s <= FLAGS_heartbeat_interval_s) {
    return BadFlag("heartbeat_timeout_s", FLAGS_heartbeat_timeout_s,
                   absl::StrCat("must be greater than --heartbeat_interval_s ",
                                FLAGS_heartbeat_interval_s));
  }
  o.start_timeout = absl::Seconds(FLAGS_start_timeout_s);
  o.heartbeat_interval = absl::Seconds(FLAGS_heartbeat_interval_s);
  o.heartbeat_timeout = absl::Seconds(FLAGS_heartbeat_timeout_s);
  PSTRAIN_ASSIGN_OR_RETURN(o.token, ReadTokenFile(FLAGS_token_file));
  o.insecure_plaintext = FLAGS_insecure_plaintext;
  if (!FLAGS_curve_keys_dir.empty()) {
    if (FLAGS_insecure_plaintext) {
      return BadFlag("curve_keys_dir", FLAGS_curve_keys_dir,
                     "goes with CURVE, not with --insecure_plaintext");
    }
    absl::StatusOr<transport::CurveKeysDir> keys =
        transport::ReadCurveKeysDir(FLAGS_curve_keys_dir);
    if (!keys.ok()) {
      return BadFlag("curve_keys_dir", FLAGS_curve_keys_dir,
                     keys.status().message());
    }
  }
  o.curve_keys_dir = FLAGS_curve_keys_dir;
  return o;
}

std::vector<std::string> TimingFlags(const ClusterOptions& o) {
  auto flag = [](const char* name, absl::Duration d) {
    return absl::StrFormat("--%s=%.9g", name, absl::ToDoubleSeconds(d));
  };
  return {flag("start_timeout_s", o.start_timeout),
          flag("heartbeat_interval_s", o.heartbeat_interval),
          flag("heartbeat_timeout_s", o.heartbeat_timeout),
          o.insecure_plaintext ? "--insecure_plaintext=true"
                               : "--insecure_plaintext=false"};
}

}  // namespace cluster
}  // namespace pstrain
