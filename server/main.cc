// server: a key-value parameter server of a pstrain job.
#include "cluster/cluster_flags.h"
#include "cluster/node_flags.h"
#include "glog/logging.h"
#include "server/server.h"
#include "transport/transport.h"
#include "util/flags.h"

DEFINE_int64(max_frame_bytes, pstrain::cluster::kDefaultMaxFrameBytes,
             "Largest frame accepted from the network: at least the workers' "
             "largest data message (KVStoreOptions::max_message_bytes) plus "
             "1 MiB; also what a connection can make the server hold before "
             "it has authenticated.");

DEFINE_int64(send_window_bytes, 0,
             "Reply bytes handed to the socket of each worker at a time; the "
             "rest waits in priority order, so a small high-priority reply "
             "overtakes the queued parts of big ones (issue #16). 0: the "
             "transport's default, 16777216.");

DEFINE_string(checkpoint_dir, "",
              "Where job checkpoints go (a filesystem every host reaches; "
              "launch --checkpoint_dir passes it): this server writes its "
              "slices and their optimizer state there when worker 0 asks.");
DEFINE_string(recovery, "restart",
              "launch --recovery passes it: with replace, every learned "
              "slice also keeps the weights of the round before the last (a "
              "copy per round), for a replacement worker whose "
              "predecessor's push reached this server and not others.");
DEFINE_string(resume_from, "",
              "A checkpoint folder (DIR/step-N) to restore this server's "
              "slices and optimizer state from when the job starts.");

int main(int argc, char** argv) {
  pstrain::ParseFlagsOrExit(
      {"server",
       "server --scheduler_address=HOST:PORT --num_workers=N --num_servers=S "
       "--token_file=F [--host=ADDR]\n"
       "   or with MXNet's DMLC_* variables in the environment (see "
       "scheduler --help).\n"
       "A key-value parameter server of a pstrain job (launch starts it).",
       {pstrain::cluster::ClusterFlagGroup(),
        pstrain::cluster::NodeFlagGroup()}},
      {argv, argv + argc});
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  pstrain::cluster::ApplyEnvironmentOrExit("server", pstrain::proto::SERVER);
  pstrain::server::ServerOptions o;
  auto c = pstrain::cluster::NodeOptionsFromFlags(pstrain::proto::SERVER);
  if (!c.ok()) pstrain::ExitWithError("server", c.status().message());
  o.cluster = *c;
  if (!pstrain::transport::TuneMallocForMessages()) {
    LOG(WARNING) << "could not tune malloc for message buffers (not glibc?)";
  }
  if (FLAGS_max_frame_bytes < (int64_t{1} << 20)) {
    pstrain::ExitWithError(
        "server", pstrain::BadFlag("max_frame_bytes", FLAGS_max_frame_bytes,
                                   "must be >= 1048576")
                      .message());
  }
  o.cluster.max_frame_bytes = FLAGS_max_frame_bytes;
  if (FLAGS_send_window_bytes < 0) {
    pstrain::ExitWithError(
        "server", pstrain::BadFlag("send_window_bytes", FLAGS_send_window_bytes,
                                   "must be >= 0 (0: the default)")
                      .message());
  }
  o.cluster.send_window_bytes = FLAGS_send_window_bytes;
  o.checkpoint.checkpoint_dir = FLAGS_checkpoint_dir;
  o.checkpoint.resume_from = FLAGS_resume_from;
  if (FLAGS_recovery != "restart" && FLAGS_recovery != "replace") {
    pstrain::ExitWithError("server",
                           pstrain::BadFlag("recovery", FLAGS_recovery,
                                            "must be restart or replace")
                               .message());
  }
  o.keep_previous = FLAGS_recovery == "replace";
  return pstrain::server::Run(o);
}
