#include "cluster/node_flags.h"

#include "cluster/cluster_flags.h"
#include "gflags/gflags.h"
#include "timeline/timeline.h"
#include "util/status.h"

DEFINE_string(host, "127.0.0.1",
              "Address this node binds and advertises to the other nodes "
              "(launch passes the host of the hosts file).");
DEFINE_int32(port, 0, "Port this node binds (0: any free port).");
DEFINE_int32(rank_hint, -1,
             "The rank this node would like (BytePS's DMLC_WORKER_ID); the "
             "scheduler still assigns ranks, hinted nodes first in hint "
             "order. -1: none.");
DEFINE_int64(shm_bytes, pstrain::cluster::kDefaultShmBytes,
             "Shared-memory arena for tensors to and from nodes on the same "
             "host (one copy instead of two kernel copies); 0: everything "
             "over TCP. Either side's 0 turns it off for the pair.");
DEFINE_bool(tcp_data_link, true,
            "Send to each server or worker through a TCP connection beside "
            "ZeroMQ, written straight from the tensors and read straight "
            "into their destination (README, The TCP path). Under CURVE (the "
            "default) the connection is authenticated with the job's CURVE "
            "keys and encrypted (AES-256-GCM, or ChaCha20-Poly1305 without "
            "AES-NI). Either side's false keeps the pair on ZeroMQ.");
DEFINE_bool(two_way_links, true,
            "With --tcp_data_link: send to a peer on the link it connected "
            "to this node, and read what it sends back on a link this node "
            "connected, so one TCP connection carries both directions and "
            "acknowledgements ride on data (README, Two-way links). Either "
            "side's false gives each direction a connection of its own.");
DEFINE_int32(io_spin_us, 50,
             "When a small message (at most 64 KiB) comes in less than "
             "twice this many microseconds after the one before, the "
             "node's I/O thread polls without sleeping for this long "
             "(yielding the core to any other runnable thread), so that "
             "the next small request or reply is seen without a kernel "
             "wake-up (README, The TCP path). 0: sleep at once, for hosts "
             "where every core computes.");

DEFINE_string(timeline, "",
              "Write this node's part of a timeline (a Chrome trace of "
              "--timeline_steps) to this file when it leaves the job; empty: "
              "off. launch --timeline FILE sets it for every node and merges "
              "the parts into FILE (README.md, Timeline).");
DEFINE_string(timeline_steps, "10:20",
              "A:B: the training steps the timeline records, A to B "
              "included. Steps are a worker's batches counted from 1 since "
              "it started, across epochs; servers record the dist_sync "
              "rounds A to B of each key (round n is step n).");

namespace pstrain {
namespace cluster {

FlagGroup NodeFlagGroup() {
  return {__FILE__, "Flags common to servers and workers"};
}

absl::StatusOr<ClusterOptions> NodeOptionsFromFlags(
    proto::Role role, bool require_scheduler_address) {
  PSTRAIN_ASSIGN_OR_RETURN(ClusterOptions o,
                           ClusterOptionsFromFlags(require_scheduler_address));
  if (FLAGS_host.empty()) {
    return BadFlag("host", FLAGS_host, "must name this host's address");
  }
  if (FLAGS_port < 0 || FLAGS_port > 65535) {
    return BadFlag("port", FLAGS_port, "must be in [0, 65535] (0: any)");
  }
  if (FLAGS_shm_bytes < 0) {
    return BadFlag("shm_bytes", FLAGS_shm_bytes, "must be >= 0 (0: off)");
  }
  std::string host;
  int port = 0;
  if (ParseHostPort(o.scheduler_address, &host, &port).ok() && port == 0) {
    return BadFlag("scheduler_address", o.scheduler_address,
                   "port 0 is for the scheduler to pick one; give its real "
                   "port");
  }
  if (FLAGS_io_spin_us < 0 || FLAGS_io_spin_us > 100000) {
    return BadFlag("io_spin_us", FLAGS_io_spin_us,
                   "must be in [0, 100000] (0: off)");
  }
  if (FLAGS_rank_hint < -1) {
    return BadFlag("rank_hint", FLAGS_rank_hint, "must be >= 0 (-1: none)");
  }
  o.rank_hint = FLAGS_rank_hint;
  o.role = role;
  o.host = FLAGS_host;
  o.port = FLAGS_port;
  o.shm_bytes = FLAGS_shm_bytes;
  o.tcp_data_link = FLAGS_tcp_data_link;
  o.two_way_links = FLAGS_two_way_links;
  o.io_spin = absl::Microseconds(FLAGS_io_spin_us);
  o.timeline.path = FLAGS_timeline;
  absl::Status steps = timeline::ParseStepWindow(
      FLAGS_timeline_steps, &o.timeline.first_step, &o.timeline.last_step);
  if (!steps.ok()) {
    return BadFlag("timeline_steps", FLAGS_timeline_steps, steps.message());
  }
  return o;
}

}  // namespace cluster
}  // namespace pstrain
