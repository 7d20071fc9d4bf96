// scheduler: registration, ranks, barriers, heartbeats, failure detection.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "util/token.h"
#include "scheduler/scheduler.h"

DEFINE_string(scheduler_address, "127.0.0.1:9091", "host:port to listen on (port 0: any).");
DEFINE_int32(num_workers, 1, "Workers in the job.");
DEFINE_int32(num_servers, 1, "Servers in the job.");
DEFINE_string(token_file, "", "File whose first line is the job token (launch passes it).");
DEFINE_double(start_timeout_s, 120, "Seconds for every node to register.");
DEFINE_double(heartbeat_interval_s, 1, "Seconds between heartbeats.");
DEFINE_double(heartbeat_timeout_s, 10, "A node silent this long is dead; the job aborts.");
DEFINE_bool(insecure_plaintext, false,
            "Plaintext wire (the job token in each header is the only gate). Default: ZeroMQ CURVE, "
            "keys derived from the token file: every connection encrypted and authenticated. Every "
            "node of a job must agree.");

int main(int argc, char** argv) {
  gflags::SetUsageMessage("scheduler --scheduler_address=HOST:PORT --num_workers=N --num_servers=S --token_file=F");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  pstrain::scheduler::SchedulerOptions o;
  o.address = FLAGS_scheduler_address;
  o.num_workers = FLAGS_num_workers;
  o.num_servers = FLAGS_num_servers;
  if (o.num_workers < 1 || o.num_servers < 1) LOG(FATAL) << "--num_workers and --num_servers must be >= 1";
  auto token = pstrain::ReadTokenFile(FLAGS_token_file);
  if (!token.ok()) LOG(FATAL) << token.status().message();
  o.token = *token;
  o.start_timeout = absl::Seconds(FLAGS_start_timeout_s);
  o.heartbeat_interval = absl::Seconds(FLAGS_heartbeat_interval_s);
  o.heartbeat_timeout = absl::Seconds(FLAGS_heartbeat_timeout_s);
  o.insecure_plaintext = FLAGS_insecure_plaintext;
  o.on_listening = [](const std::string& address) {
    std::cout << "scheduler address: " << address << std::endl;
  };
  return pstrain::scheduler::Run(o);
}
