// server: a key-value parameter server of a pstrain job.
#include <fstream>
#include <string>

#include "absl/time/time.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "util/token.h"
#include "server/server.h"
#include "transport/cluster.h"
#include "transport/transport.h"

DEFINE_string(scheduler_address, "", "The scheduler's host:port.");
DEFINE_string(host, "127.0.0.1", "Address to bind and advertise to the other nodes.");
DEFINE_int32(port, 0, "Port to bind (0: any free port).");
DEFINE_int32(num_workers, 1, "Workers in the job.");
DEFINE_int32(num_servers, 1, "Servers in the job.");
DEFINE_string(token_file, "", "File whose first line is the job token (launch passes it).");
DEFINE_double(start_timeout_s, 120, "Seconds to wait for the address book.");
DEFINE_double(heartbeat_interval_s, 1, "Seconds between heartbeats.");
DEFINE_double(heartbeat_timeout_s, 10, "Exit when the scheduler is silent this long.");
DEFINE_bool(insecure_plaintext, false,
            "Plaintext wire (the job token in each header is the only gate). Default: ZeroMQ CURVE, "
            "keys derived from the token file: every connection encrypted and authenticated. Every "
            "node of a job must agree.");
DEFINE_int64(shm_bytes, pstrain::transport::kDefaultShmBytes,
             "Shared-memory arena for tensors to and from nodes on the same host (one copy "
             "instead of two kernel copies); 0: everything over TCP. Either side's 0 turns it "
             "off for the pair.");
DEFINE_int64(max_frame_bytes, pstrain::transport::kDefaultMaxFrameBytes,
             "Largest frame accepted from the network: at least the workers' "
             "largest data "
             "message (KVStoreOptions::max_message_bytes) plus 1 MiB; also "
             "what a connection "
             "can make the server hold before it has presented the job token.");

int main(int argc, char** argv) {
  gflags::SetUsageMessage("server --scheduler_address=HOST:PORT --num_workers=N --num_servers=S --token_file=F");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  if (!pstrain::transport::TuneMallocForMessages()) {
    LOG(WARNING) << "could not tune malloc for message buffers (not glibc?)";
  }
  if (FLAGS_scheduler_address.empty()) LOG(FATAL) << "--scheduler_address is required";
  pstrain::server::ServerOptions o;
  auto& c = o.cluster;
  c.host = FLAGS_host;
  c.port = FLAGS_port;
  c.scheduler_address = FLAGS_scheduler_address;
  c.num_workers = FLAGS_num_workers;
  c.num_servers = FLAGS_num_servers;
  auto token = pstrain::ReadTokenFile(FLAGS_token_file);
  if (!token.ok()) LOG(FATAL) << token.status().message();
  c.token = *token;
  c.start_timeout = absl::Seconds(FLAGS_start_timeout_s);
  c.heartbeat_interval = absl::Seconds(FLAGS_heartbeat_interval_s);
  c.heartbeat_timeout = absl::Seconds(FLAGS_heartbeat_timeout_s);
  c.shm_bytes = FLAGS_shm_bytes;
  c.max_frame_bytes = FLAGS_max_frame_bytes;
  c.insecure_plaintext = FLAGS_insecure_plaintext;
  return pstrain::server::Run(o);
}
