#include "cluster/cluster_flags.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
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

// True when --`flag` exists in this binary and was given (command line or
// flag file).
bool FlagGiven(const char* flag) {
  gflags::CommandLineFlagInfo info;
  return gflags::GetCommandLineFlagInfo(flag, &info) && !info.is_default;
}

std::string FlagValue(const char* flag) {
  std::string v;
  gflags::GetCommandLineOption(flag, &v);
  return v;
}

// Sets --`flag` to `value` unless it was given; a given value that differs
// is kept and noted.
void SetUnlessGiven(const char* flag, const std::string& value,
                    const std::string& from, std::vector<std::string>* notes) {
  if (FlagGiven(flag)) {
    if (FlagValue(flag) != value) {
      notes->push_back(absl::StrCat("--", flag, "=", FlagValue(flag),
                                    " (given) wins over ", from));
    }
    return;
  }
  CHECK(!gflags::SetCommandLineOption(flag, value.c_str()).empty())
      << "--" << flag << " " << value;
}

absl::Status BadVariable(const std::string& name, const std::string& value,
                         absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("environment variable ", name, "='", value, "': ", why));
}

// The IPv4 address of network interface `name`.
absl::StatusOr<std::string> InterfaceAddress(const std::string& name) {
  ifaddrs* all = nullptr;
  if (getifaddrs(&all) != 0) {
    return absl::InternalError(absl::StrCat(
        "cannot list the network interfaces: ", std::strerror(errno)));
  }
  std::string found;
  std::set<std::string> names;
  for (ifaddrs* i = all; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    names.insert(i->ifa_name);
    if (found.empty() && name == i->ifa_name) {
      char ip[INET_ADDRSTRLEN] = {0};
      const auto* v4 = reinterpret_cast<const sockaddr_in*>(i->ifa_addr);
      inet_ntop(AF_INET, &v4->sin_addr, ip, sizeof(ip));
      found = ip;
    }
  }
  freeifaddrs(all);
  if (found.empty()) {
    return absl::NotFoundError(absl::StrCat(
        "environment variable DMLC_INTERFACE='", name,
        "': no such interface with an IPv4 address here (there are: ",
        absl::StrJoin(names, ", "), ")"));
  }
  return found;
}

}  // namespace

Environment ProcessEnvironment() {
  Environment env;
  for (char** e = environ; *e != nullptr; ++e) {
    const char* eq = std::strchr(*e, '=');
    if (eq != nullptr)
      env[std::string(*e, static_cast<size_t>(eq - *e))] = eq + 1;
  }
  return env;
}

absl::StatusOr<std::vector<std::string>> ApplyEnvironment(
    proto::Role role, const Environment& env) {
  CHECK(role == proto::SCHEDULER || role == proto::SERVER ||
        role == proto::WORKER)
      << proto::Role_Name(role);
  auto get = [&env](const char* name) -> const std::string* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : &it->second;
  };
  std::vector<std::string> notes;
  const std::string mine = absl::AsciiStrToLower(proto::Role_Name(role));
  if (const std::string* r = get("DMLC_ROLE")) {
    if (*r != "scheduler" && *r != "server" && *r != "worker") {
      return BadVariable("DMLC_ROLE", *r,
                         "must be scheduler, server or worker");
    }
    if (*r != mine) {
      return absl::FailedPreconditionError(absl::StrCat(
          "environment variable DMLC_ROLE='", *r, "', but this is the ", mine,
          " binary: start `", *r, "` for that role"));
    }
  }
  auto count = [&](const char* name, const char* flag) -> absl::Status {
    const std::string* v = get(name);
    if (v == nullptr) return absl::OkStatus();
    int n = 0;
    if (!absl::SimpleAtoi(*v, &n) || n < 1) {
      return BadVariable(name, *v, "must be an integer >= 1");
    }
    SetUnlessGiven(flag, absl::StrCat(n), absl::StrCat(name, "=", *v), &notes);
    return absl::OkStatus();
  };
  PSTRAIN_RETURN_IF_ERROR(count("DMLC_NUM_WORKER", "num_workers"));
  PSTRAIN_RETURN_IF_ERROR(count("DMLC_NUM_SERVER", "num_servers"));

  // This node's address: DMLC_NODE_HOST, else DMLC_INTERFACE's.
  std::string host, host_from;
  if (const std::string* h = get("DMLC_NODE_HOST"); h != nullptr) {
    if (h->empty()) return BadVariable("DMLC_NODE_HOST", *h, "is empty");
    host = *h;
    host_from = absl::StrCat("DMLC_NODE_HOST=", *h);
  } else if (const std::string* i = get("DMLC_INTERFACE"); i != nullptr) {
    PSTRAIN_ASSIGN_OR_RETURN(host, InterfaceAddress(*i));
    host_from = absl::StrCat("DMLC_INTERFACE=", *i, " (", host, ")");
  }
  if (!host.empty() && role != proto::SCHEDULER) {
    SetUnlessGiven("host", host, host_from, &notes);
  }

  const std::string* uri = get("DMLC_PS_ROOT_URI");
  const std::string* port = get("DMLC_PS_ROOT_PORT");
  if ((uri == nullptr) != (port == nullptr)) {
    return absl::InvalidArgumentError(
        absl::StrCat("environment variable ",
                     uri == nullptr ? "DMLC_PS_ROOT_PORT" : "DMLC_PS_ROOT_URI",
                     " is set without ",
                     uri == nullptr ? "DMLC_PS_ROOT_URI" : "DMLC_PS_ROOT_PORT",
                     ": give both, the scheduler's address and port"));
  }
  if (uri != nullptr) {
    int p = 0;
    if (!absl::SimpleAtoi(*port, &p) || p < 1 || p > 65535) {
      return BadVariable("DMLC_PS_ROOT_PORT", *port, "must be in [1, 65535]");
    }
    if (uri->empty()) return BadVariable("DMLC_PS_ROOT_URI", *uri, "is empty");
    const std::string from =
        absl::StrCat("DMLC_PS_ROOT_URI=", *uri, " DMLC_PS_ROOT_PORT=", *port);
    if (role != proto::SCHEDULER) {
      SetUnlessGiven("scheduler_address", absl::StrCat(*uri, ":", p), from,
                     &notes);
    } else {
      const std::string bind =
          absl::StrCat(host.empty() ? "0.0.0.0" : host, ":", p);
      if (host.empty() && !FlagGiven("scheduler_address")) {
        notes.push_back(
            absl::StrCat("binding every interface (", bind, ") for ", from,
                         "; DMLC_NODE_HOST or DMLC_INTERFACE would name one"));
      }
      SetUnlessGiven("scheduler_address", bind, from, &notes);
    }
  }

  if (const std::string* id = get("DMLC_WORKER_ID");
      id != nullptr && role == proto::WORKER) {
    int r = 0;
    if (!absl::SimpleAtoi(*id, &r) || r < 0) {
      return BadVariable("DMLC_WORKER_ID", *id, "must be an integer >= 0");
    }
    SetUnlessGiven("rank_hint", absl::StrCat(r),
                   absl::StrCat("DMLC_WORKER_ID=", *id), &notes);
  }
  if (const std::string* t = get("PSTRAIN_TOKEN_FILE")) {
    SetUnlessGiven("token_file", *t, absl::StrCat("PSTRAIN_TOKEN_FILE=", *t),
                   &notes);
  }
  return notes;
}

void ApplyEnvironmentOrExit(absl::string_view program, proto::Role role) {
  absl::StatusOr<std::vector<std::string>> notes =
      ApplyEnvironment(role, ProcessEnvironment());
  if (!notes.ok()) ExitWithError(program, notes.status().message());
  for (const std::string& n : *notes) LOG(WARNING) << n;
}

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
