// Cluster membership for servers and workers (DESIGN.md, Node lifecycle):
// register with the scheduler, receive the address book, heartbeat both
// ways, barriers, abort and shutdown.
//
// Node ids: the scheduler is 0, servers 1..S (by rank), workers S+1..S+W.
// A worker that replaces a dead one (--recovery=replace) keeps its rank and
// id; the scheduler sends every node the new address book and each moves
// its connection to that id (Transport::Reconnect).
// Every wait has a deadline; when the scheduler aborts the job or falls
// silent for heartbeat_timeout, every pending and future call fails with
// Aborted naming the reason.
#ifndef PSTRAIN_CLUSTER_CLUSTER_H_
#define PSTRAIN_CLUSTER_CLUSTER_H_

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/messages.pb.h"
#include "timeline/timeline.h"
#include "transport/transport.h"
#include "util/blocking_queue.h"
#include "util/mutex.h"

namespace pstrain {
namespace cluster {

inline constexpr int kSchedulerId = 0;
// The default shared-memory arena of servers and workers: room for the
// weights of a big network in flight (virtual until used).
inline constexpr int64_t kDefaultShmBytes = int64_t{512} << 20;
// The default largest frame a server or worker accepts.
inline constexpr int64_t kDefaultMaxFrameBytes = int64_t{64} << 20;
// The job's timing defaults, the same for every role (the flags of
// cluster_flags.h and SchedulerOptions use them too).
inline constexpr absl::Duration kDefaultStartTimeout = absl::Seconds(120);
inline constexpr absl::Duration kDefaultHeartbeatInterval = absl::Seconds(1);
inline constexpr absl::Duration kDefaultHeartbeatTimeout = absl::Seconds(10);

struct ClusterOptions {
  proto::Role role = proto::WORKER;
  // Address this node binds and advertises; port 0 picks a free one.
  std::string host = "127.0.0.1";
  int port = 0;
  // The rank this node would like (-1: none): the scheduler ranks hinted
  // nodes of a role first, in hint order (NodeInfo.rank_hint).
  int rank_hint = -1;
  // A worker that replaces dead worker rank `replace_rank` of a running
  // job (--recovery=replace; -1: an ordinary node): it registers for that
  // rank and gets the job's address book at once.
  int replace_rank = -1;
  std::string scheduler_address;  // host:port
  std::string token;
  int num_workers = 1;
  int num_servers = 1;
  absl::Duration heartbeat_interval = kDefaultHeartbeatInterval;
  absl::Duration heartbeat_timeout = kDefaultHeartbeatTimeout;
  // How long the scheduler waits for every node to register (its
  // --start_timeout_s). A node waits start_timeout + heartbeat_timeout for
  // the address book, so that when someone is missing the scheduler's
  // verdict, which names who, reaches it before its own deadline.
  absl::Duration start_timeout = kDefaultStartTimeout;
  // Shared-memory arena for big frames to nodes on this host
  // (TransportOptions::shm_bytes); 0: everything over TCP.
  int64_t shm_bytes = kDefaultShmBytes;
  // A TCP data link beside ZeroMQ to each server and worker
  // (TransportOptions::data_link, transport/data_link.h), encrypted under
  // CURVE (transport/link_crypto.h).
  bool tcp_data_link = true;
  // One connection per pair carries both directions
  // (TransportOptions::data_link_two_way).
  bool two_way_links = true;
  // How long the I/O thread polls without sleeping after each message
  // (TransportOptions::io_spin).
  absl::Duration io_spin = absl::Microseconds(50);
  // Largest frame this node accepts (TransportOptions::max_frame_bytes):
  // at least the largest data message of the job
  // (KVStoreOptions::max_message_bytes, 4 MiB by default) plus its header.
  // Also what a connection can make the node hold before it has
  // authenticated.
  int64_t max_frame_bytes = kDefaultMaxFrameBytes;
  // Data bytes per peer handed to ZeroMQ at a time
  // (TransportOptions::send_window_bytes); the rest waits in priority
  // order, so a later high-priority message overtakes it. 0: the
  // transport's default (16 MiB). Servers: --send_window_bytes.
  int64_t send_window_bytes = 0;
  // false (the default): every connection is encrypted and authenticated
  // with ZeroMQ CURVE under keys derived from the token (transport/curve.h);
  // true: plaintext, the token in each header the only gate. Every node of
  // a job must agree.
  bool insecure_plaintext = false;
  // With CURVE: per-node keys from this directory (transport/curve.h,
  // ReadCurveKeysDir) instead of keys derived from the token.
  std::string curve_keys_dir;
  // The node's timeline (--timeline, --timeline_steps): off unless
  // timeline.path is set.
  timeline::TimelineOptions timeline;
};

// Parses "host:port". InvalidArgument names the text.
absl::Status ParseHostPort(const std::string& text, std::string* host,
                           int* port);

// Thread-safe.
class ClusterNode {
 public:
  // Binds, registers and waits for the address book (or an abort).
  // Aborted with the scheduler's reason when it gives up (its start
  // timeout names who is missing); DeadlineExceeded, naming the scheduler
  // and the job this node expected, when the scheduler never answers.
  static absl::StatusOr<std::unique_ptr<ClusterNode>> Start(
      const ClusterOptions& options);
  // Stops the threads and the transport, and writes the timeline's part
  // (WriteTimeline) if no one did.
  ~ClusterNode();
  ClusterNode(const ClusterNode&) = delete;
  ClusterNode& operator=(const ClusterNode&) = delete;

  int rank() const { return rank_; }
  int id() const { return id_; }
  int num_workers() const { return options_.num_workers; }
  int num_servers() const { return options_.num_servers; }
  int ServerId(int rank) const { return 1 + rank; }
  int WorkerId(int rank) const { return 1 + options_.num_servers + rank; }
  // Worker rank of node `id`, or -1.
  int WorkerRank(int id) const;
  proto::AddressBook address_book() const ABSL_LOCKS_EXCLUDED(mu_);
  // A replacement (ClusterOptions::replace_rank): the "workers" barriers
  // the scheduler had released when it joined; 0 otherwise.
  int64_t barriers_released() const { return barriers_released_; }

  // Sends a data message (PUSH, PULL, RESPONSE, ...) to node `id`, waiting
  // for room in its queue until `deadline` (Transport::Send). The job's
  // abort reason once it is over.
  absl::Status Send(int id, transport::Message msg, absl::Time deadline);
  absl::Status SendBatch(std::vector<std::pair<int, transport::Message>> batch,
                         absl::Time deadline);
  // The next data message for this node. Aborted when the job is over.
  absl::StatusOr<transport::Message> ReceiveData(absl::Time deadline);
  // Delivers data messages to `handler` on the transport's I/O thread
  // instead (Transport::SetDataHandler); nullptr goes back to
  // ReceiveData(). Whoever installs a handler learns that the job is over
  // from WaitForShutdown() or health().
  void SetDataHandler(transport::Transport::DataHandler handler) {
    transport_->SetDataHandler(std::move(handler));
  }

  // Waits until every member of `group` ("workers", "servers", "all") has
  // entered the barrier `name`.
  absl::Status Barrier(const std::string& group, const std::string& name,
                       absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);

  // Worker: tells the scheduler it has finished.
  absl::Status Finish();
  // Waits until the scheduler ends the job: OK for an orderly SHUTDOWN,
  // Aborted otherwise.
  absl::Status WaitForShutdown(absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);

  // The stats this node's heartbeats carry to the scheduler from now on
  // (Header.stats; issue #17), replacing the previous ones. Any thread; a
  // copy is kept. Every heartbeat also carries this node's transport
  // counters (queued_messages, refused, malformed, link_auth_failures), set
  // as it is sent.
  void SetHeartbeatStats(const proto::NodeStats& stats)
      ABSL_LOCKS_EXCLUDED(mu_);

  // This node's timeline recorder (ClusterOptions::timeline; never null,
  // enabled() only with a path). Thread-safe; lives as long as the node.
  timeline::Recorder* timeline() const { return timeline_.get(); }
  // The scheduler's clock minus this node's, microseconds, estimated as NTP
  // does from the heartbeats (Header.clock_us and the scheduler's echo of
  // this node's last beat): of the round trips so far, the one with the
  // least delay gives the offset, within half its delay (only an
  // asymmetric path misleads it). Before the first round trip, the largest
  // (scheduler clock - local receive time) of its messages. On one machine
  // (and in the network-namespace test bed, which shares its clock) the
  // offset is about 0; across real hosts it removes their clocks'
  // difference. Sets *aligned (if given) to whether any estimate exists.
  int64_t clock_offset_us(bool* aligned = nullptr) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // Writes the timeline's part file once (later calls do nothing); OK when
  // the timeline is off. The recorder's write errors.
  absl::Status WriteTimeline() ABSL_LOCKS_EXCLUDED(mu_);

  // OK while the job runs; the abort reason afterwards.
  absl::Status health() const ABSL_LOCKS_EXCLUDED(mu_);
  const transport::Transport& transport() const { return *transport_; }

 private:
  explicit ClusterNode(const ClusterOptions& options);
  void ControlLoop() ABSL_LOCKS_EXCLUDED(mu_);
  // An ADDRESS_BOOK after the start (a replacement took a worker rank):
  // moves the connection of every node whose address changed.
  void UpdateAddressBook(const proto::AddressBook& book)
      ABSL_LOCKS_EXCLUDED(mu_);
  void Abort(const absl::Status& why) ABSL_LOCKS_EXCLUDED(mu_);
  // Takes scheduler message `h`, which came at `received_us` (this clock),
  // into the clock offset's estimate.
  void UpdateClockOffset(const proto::Header& h, int64_t received_us)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status SendControl(proto::MessageType type, absl::Time deadline,
                           const std::string& barrier = "")
      ABSL_LOCKS_EXCLUDED(mu_);

  const ClusterOptions options_;
  std::unique_ptr<transport::Transport> transport_;
  int rank_ = -1;
  int id_ = -1;
  // Updated by the control loop when a replacement moves a rank.
  proto::AddressBook book_ ABSL_GUARDED_BY(mu_);
  int64_t barriers_released_ = 0;
  std::map<int, int> worker_rank_of_id_;

  mutable Mutex mu_;
  CondVar cv_;  // Signalled when the job ends or a barrier is passed.
  absl::Status health_ ABSL_GUARDED_BY(mu_);
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, bool> barrier_done_ ABSL_GUARDED_BY(mu_);
  absl::Time last_from_scheduler_ ABSL_GUARDED_BY(mu_);
  // For the heartbeats: set once SetHeartbeatStats() was called.
  bool has_stats_ ABSL_GUARDED_BY(mu_) = false;
  proto::NodeStats stats_ ABSL_GUARDED_BY(mu_);
  // clock_offset_us(): set once a scheduler message carried clock_us.
  bool has_clock_offset_ ABSL_GUARDED_BY(mu_) = false;
  int64_t clock_offset_us_ ABSL_GUARDED_BY(mu_) = 0;
  // The round-trip delay of that estimate; -1: none from a round trip.
  int64_t clock_delay_us_ ABSL_GUARDED_BY(mu_) = -1;
  bool timeline_written_ ABSL_GUARDED_BY(mu_) = false;
  // Made by the constructor (before registering: its clock origin is the
  // node's start).
  const std::unique_ptr<timeline::Recorder> timeline_;

  std::atomic<bool> stop_{false};
  std::thread control_;
};

}  // namespace cluster
}  // namespace pstrain

#endif  // PSTRAIN_CLUSTER_CLUSTER_H_
