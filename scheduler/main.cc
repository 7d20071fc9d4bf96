// scheduler: registration, ranks, barriers, heartbeats, failure detection.
#include <iostream>
#include <string>

#include "cluster/cluster_flags.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "scheduler/scheduler.h"
#include "status/http_status_server.h"
#include "util/flags.h"

DEFINE_int32(status_port, -1,
             "Serve the job's live status on this port: a page at /, "
             "/status.json and Prometheus /metrics (printed as `status page: "
             "URL`). 0: any free port. Default -1: off.");
DEFINE_string(status_bind, "127.0.0.1",
              "Address the status server binds. Beyond loopback (e.g. "
              "0.0.0.0) every request needs the job token (--token_file), as "
              "`Authorization: Bearer TOKEN` or `?token=TOKEN`.");
DEFINE_double(straggler_ratio, 1.2,
              "Log a worker as a straggler (by rank, host and reason) when "
              "its own time per image, everything but waiting for weights, "
              "is above this many times the median worker's (> 1).");
DEFINE_int32(straggler_intervals, 3,
             "...for this many of its stats reports in a row (one per "
             "--disp_batches batches; >= 1).");

DEFINE_string(recovery, "restart",
              "What a dead worker does to the job: restart (the job is "
              "aborted; launch --max_restarts restarts it from a checkpoint) "
              "or replace (the job waits up to --replace_timeout_s for a "
              "replacement worker of that rank; launch starts it).");
DEFINE_double(replace_timeout_s, 60,
              "--recovery=replace: seconds to wait for a dead worker's "
              "replacement before aborting the job, in (0, 540] (below the "
              "workers' 10-minute wait for a round).");

int main(int argc, char** argv) {
  pstrain::ParseFlagsOrExit(
      {"scheduler",
       "scheduler --scheduler_address=HOST:PORT --num_workers=N "
       "--num_servers=S --token_file=F\n"
       "   or with MXNet's DMLC_ROLE=scheduler DMLC_PS_ROOT_URI "
       "DMLC_PS_ROOT_PORT DMLC_NUM_WORKER\n   DMLC_NUM_SERVER "
       "[DMLC_NODE_HOST | DMLC_INTERFACE] PSTRAIN_TOKEN_FILE in the\n"
       "   environment (flags win).\n"
       "The scheduler of a pstrain job (launch starts it): registers the "
       "servers and\nworkers, assigns ranks, runs barriers and heartbeats, "
       "and aborts the job when\na node is missing or dead.",
       {{__FILE__, "Status page, stragglers, recovery"},
        pstrain::cluster::ClusterFlagGroup()}},
      {argv, argv + argc});
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  pstrain::cluster::ApplyEnvironmentOrExit("scheduler",
                                           pstrain::proto::SCHEDULER);
  auto c = pstrain::cluster::ClusterOptionsFromFlags();
  if (!c.ok()) pstrain::ExitWithError("scheduler", c.status().message());
  if (FLAGS_status_port < -1 || FLAGS_status_port > 65535) {
    pstrain::ExitWithError("scheduler",
                           pstrain::BadFlag("status_port", FLAGS_status_port,
                                            "must be in [-1, 65535]")
                               .message());
  }
  if (FLAGS_status_port >= 0 && c->token.empty() &&
      !pstrain::status::IsLoopbackAddress(FLAGS_status_bind)) {
    pstrain::ExitWithError(
        "scheduler", pstrain::BadFlag("status_bind", FLAGS_status_bind,
                                      "beyond loopback needs --token_file")
                         .message());
  }
  if (!(FLAGS_straggler_ratio > 1)) {
    pstrain::ExitWithError(
        "scheduler", pstrain::BadFlag("straggler_ratio", FLAGS_straggler_ratio,
                                      "must be > 1")
                         .message());
  }
  if (FLAGS_straggler_intervals < 1) {
    pstrain::ExitWithError(
        "scheduler", pstrain::BadFlag("straggler_intervals",
                                      FLAGS_straggler_intervals, "must be >= 1")
                         .message());
  }
  if (FLAGS_recovery != "restart" && FLAGS_recovery != "replace") {
    pstrain::ExitWithError("scheduler",
                           pstrain::BadFlag("recovery", FLAGS_recovery,
                                            "must be restart or replace")
                               .message());
  }
  if (!(FLAGS_replace_timeout_s > 0 && FLAGS_replace_timeout_s <= 540)) {
    pstrain::ExitWithError(
        "scheduler",
        pstrain::BadFlag("replace_timeout_s", FLAGS_replace_timeout_s,
                         "must be in (0, 540]")
            .message());
  }
  pstrain::scheduler::SchedulerOptions o;
  o.replace_workers = FLAGS_recovery == "replace";
  o.replace_timeout = absl::Seconds(FLAGS_replace_timeout_s);
  o.stragglers.ratio = FLAGS_straggler_ratio;
  o.stragglers.intervals = FLAGS_straggler_intervals;
  o.address = c->scheduler_address;
  o.num_workers = c->num_workers;
  o.num_servers = c->num_servers;
  o.token = c->token;
  o.start_timeout = c->start_timeout;
  o.heartbeat_interval = c->heartbeat_interval;
  o.heartbeat_timeout = c->heartbeat_timeout;
  o.insecure_plaintext = c->insecure_plaintext;
  o.curve_keys_dir = c->curve_keys_dir;
  o.on_listening = [](const std::string& address) {
    std::cout << "scheduler address: " << address << std::endl;
  };
  o.status_port = FLAGS_status_port;
  o.status_bind = FLAGS_status_bind;
  o.on_status_listening = [](const std::string& url) {
    std::cout << "status page: " << url << std::endl;
  };
  return pstrain::scheduler::Run(o);
}
