#include "cluster/cluster.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "glog/logging.h"
#include "util/escape.h"
#include "util/status.h"

namespace pstrain {
namespace cluster {

using transport::Message;
using transport::Transport;
using transport::TransportOptions;

absl::Status ParseHostPort(const std::string& text, std::string* host,
                           int* port) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(text.substr(colon + 1), port) || *port < 0 ||
      *port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "' is not host:port"));
  }
  *host = text.substr(0, colon);
  return absl::OkStatus();
}

ClusterNode::ClusterNode(const ClusterOptions& options)
    : options_(options),
      timeline_(std::make_unique<timeline::Recorder>(options.timeline)) {
  // The tracks in the order the viewers list them.
  const std::vector<const char*> tracks =
      options.role == proto::SERVER
          ? std::vector<const char*>{"sum", "update", "reply"}
          : std::vector<const char*>{"compute", "data", "push", "pull"};
  for (const char* t : tracks) timeline_->Track(t);
}

ClusterNode::~ClusterNode() {
  stop_ = true;
  if (control_.joinable()) control_.join();
  if (transport_) transport_->Stop();
  absl::Status s = WriteTimeline();
  // Leaving anyway: the merge skips a missing part with a warning.
  if (!s.ok()) LOG(ERROR) << "timeline: " << s.message();
}

void ClusterNode::UpdateClockOffset(const proto::Header& h,
                                    int64_t received_us) {
  if (h.echo_clock_us() != 0 && h.echo_received_us() != 0) {
    // NTP: t1 this node sent a heartbeat, T2 the scheduler got it, T3 the
    // scheduler sent this, t4 it came. The round trip's delay bounds the
    // error; the least delayed sample wins.
    const int64_t t1 = h.echo_clock_us(), t2 = h.echo_received_us(),
                  t3 = h.clock_us(), t4 = received_us;
    const int64_t delay = (t4 - t1) - (t3 - t2);
    if (delay >= 0 && (clock_delay_us_ < 0 || delay < clock_delay_us_)) {
      clock_delay_us_ = delay;
      clock_offset_us_ = ((t2 - t1) + (t3 - t4)) / 2;
      has_clock_offset_ = true;
    }
    return;
  }
  if (clock_delay_us_ >= 0) return;  // A round trip is better.
  // No round trip yet (an older scheduler, or the first beats): the
  // one-way difference, which any delay only makes smaller.
  const int64_t offset = h.clock_us() - received_us;
  if (!has_clock_offset_ || offset > clock_offset_us_)
    clock_offset_us_ = offset;
  has_clock_offset_ = true;
}

int64_t ClusterNode::clock_offset_us(bool* aligned) const {
  MutexLock lock(&mu_);
  if (aligned != nullptr) *aligned = has_clock_offset_;
  return clock_offset_us_;
}

absl::Status ClusterNode::WriteTimeline() {
  // A node that never joined the job has nothing to show.
  if (!timeline_->enabled() || id_ < 0) return absl::OkStatus();
  timeline::PartInfo info;
  info.role = options_.role == proto::SERVER ? "server" : "worker";
  info.rank = rank_;
  info.host = options_.host;
  info.port = transport_ ? transport_->port() : options_.port;
  {
    MutexLock lock(&mu_);
    if (timeline_written_) return absl::OkStatus();
    timeline_written_ = true;
    info.clock_offset_us = clock_offset_us_;
    info.clock_aligned = has_clock_offset_;
  }
  PSTRAIN_RETURN_IF_ERROR(timeline_->WritePart(info));
  LOG(INFO) << "timeline: " << timeline_->num_events() << " events ("
            << timeline_->dropped_events() << " dropped) written to "
            << timeline_->options().path;
  return absl::OkStatus();
}

int ClusterNode::WorkerRank(int id) const {
  auto it = worker_rank_of_id_.find(id);
  return it == worker_rank_of_id_.end() ? -1 : it->second;
}

absl::StatusOr<std::unique_ptr<ClusterNode>> ClusterNode::Start(
    const ClusterOptions& o) {
  std::string sched_host;
  int sched_port;
  PSTRAIN_RETURN_IF_ERROR(
      Annotate(ParseHostPort(o.scheduler_address, &sched_host, &sched_port),
               "--scheduler_address"));
  std::unique_ptr<ClusterNode> node(new ClusterNode(o));
  TransportOptions t;
  t.bind_host = o.host;
  t.bind_port = o.port;
  t.token = o.token;
  t.split_data = true;
  t.shm_bytes = o.shm_bytes;
  t.data_link = o.tcp_data_link;
  t.data_link_two_way = o.two_way_links;
  t.io_spin = o.io_spin;
  t.max_frame_bytes = o.max_frame_bytes;
  if (o.send_window_bytes > 0) t.send_window_bytes = o.send_window_bytes;
  // The scheduler and every node (this one too) connect once; room for as
  // many reconnecting.
  t.max_incoming_connections = 2 * (o.num_servers + o.num_workers + 1) + 16;
  if (!o.insecure_plaintext) {
    PSTRAIN_RETURN_IF_ERROR(
        o.curve_keys_dir.empty()
            ? UseJobCurveKeys(&t)
            : Annotate(UseCurveKeysDir(o.curve_keys_dir, &t),
                       "--curve_keys_dir"));
  }
  PSTRAIN_ASSIGN_OR_RETURN(node->transport_, Transport::Create(t));
  PSTRAIN_RETURN_IF_ERROR(
      node->transport_->Connect(kSchedulerId, o.scheduler_address));
  Message reg;
  reg.header.set_type(proto::REGISTER);
  reg.header.set_sender(-1);
  proto::NodeInfo* me = reg.header.mutable_node();
  me->set_role(o.role);
  me->set_rank(-1);
  me->set_host(o.host);
  if (o.rank_hint >= 0) me->set_rank_hint(o.rank_hint);
  if (o.replace_rank >= 0) reg.header.set_replace_rank(o.replace_rank);
  me->set_port(node->transport_->port());
  const absl::Duration wait = o.start_timeout + o.heartbeat_timeout;
  const absl::Time deadline = absl::Now() + wait;
  PSTRAIN_RETURN_IF_ERROR(
      node->transport_->Send(kSchedulerId, std::move(reg), deadline));
  LOG(INFO) << proto::Role_Name(o.role) << " at " << node->transport_->address()
            << " registered with the scheduler at " << o.scheduler_address;

  // Wait for the address book. (Peers that got theirs first may already
  // send data; it waits in the transport's data queue.)
  while (true) {
    auto msg = node->transport_->Receive(deadline);
    if (!msg.ok()) {
      return absl::DeadlineExceededError(absl::StrCat(
          "no answer from the scheduler at ", o.scheduler_address, " within ",
          absl::FormatDuration(wait),
          " (--start_timeout_s plus --heartbeat_timeout_s) to this ",
          proto::Role_Name(o.role), " at ", node->transport_->address(),
          ", which expects ", o.num_servers, " server(s) and ", o.num_workers,
          " worker(s): is the scheduler running, at that address, with the "
          "same job token?"));
    }
    if (msg->header.type() == proto::ABORT) {
      return absl::AbortedError(
          absl::StrCat("the scheduler aborted the job: ",
                       EscapeForLog(msg->header.error())));
    }
    if (msg->header.type() != proto::ADDRESS_BOOK) continue;
    MutexLock lock(&node->mu_);  // No other thread yet: for the analysis.
    node->book_ = msg->header.address_book();
    node->barriers_released_ = msg->header.barriers_released();
    break;
  }
  proto::AddressBook book = node->address_book();
  for (int i = 0; i < book.nodes_size(); ++i) {
    const proto::NodeInfo& n = book.nodes(i);
    const int id = n.role() == proto::SERVER ? node->ServerId(n.rank())
                                             : node->WorkerId(n.rank());
    if (n.role() == proto::WORKER) node->worker_rank_of_id_[id] = n.rank();
    if (n.host() == o.host && n.port() == node->transport_->port()) {
      node->rank_ = n.rank();
      node->id_ = id;
    }
    PSTRAIN_RETURN_IF_ERROR(
        node->transport_->Connect(id, absl::StrCat(n.host(), ":", n.port())));
  }
  if (node->id_ < 0) {
    return absl::InternalError("the address book does not list this node");
  }
  LOG(INFO) << proto::Role_Name(o.role) << " rank " << node->rank_ << " (node "
            << node->id_ << ") of " << o.num_servers << " server(s) and "
            << o.num_workers << " worker(s)";
  {
    // No other thread runs yet; the lock is for the analysis.
    MutexLock lock(&node->mu_);
    node->last_from_scheduler_ = absl::Now();
  }
  node->control_ = std::thread([p = node.get()] { p->ControlLoop(); });
  return node;
}

absl::Status ClusterNode::SendControl(proto::MessageType type,
                                      absl::Time deadline,
                                      const std::string& barrier) {
  Message m;
  m.header.set_type(type);
  m.header.set_sender(id_);
  m.header.set_barrier_name(barrier);
  m.header.set_priority(1 << 20);  // Control first.
  if (type == proto::HEARTBEAT) {
    proto::NodeStats* st = m.header.mutable_stats();
    {
      MutexLock lock(&mu_);
      if (has_stats_) *st = stats_;
    }
    const transport::TransportStats t = transport_->stats();
    st->set_queued_messages(t.queued_messages);
    st->set_refused(t.dropped_bad_token + t.dropped_wrong_sender +
                    t.connections_refused + t.connections_over_limit);
    st->set_malformed(t.dropped_malformed);
    st->set_link_auth_failures(t.link_auth_failures);
    // Echoed by the scheduler for clock_offset_us().
    m.header.set_clock_us(absl::ToUnixMicros(absl::Now()));
  }
  return transport_->Send(kSchedulerId, std::move(m), deadline);
}

void ClusterNode::SetHeartbeatStats(const proto::NodeStats& stats) {
  MutexLock lock(&mu_);
  stats_ = stats;
  has_stats_ = true;
}

void ClusterNode::Abort(const absl::Status& why) {
  {
    MutexLock lock(&mu_);
    if (!health_.ok() || shutdown_) return;
    health_ = why;
  }
  LOG(ERROR) << "job aborted: " << why.message();
  cv_.SignalAll();
  transport_->CloseData();
}

void ClusterNode::ControlLoop() {
  absl::Time next_beat = absl::Now();
  while (!stop_) {
    const absl::Time now = absl::Now();
    if (now >= next_beat) {
      // Never wait: a scheduler that does not take heartbeats is handled
      // by the silence check below.
      absl::Status s = SendControl(proto::HEARTBEAT, absl::InfinitePast());
      if (!s.ok()) {
        LOG_EVERY_N(WARNING, 10) << "heartbeat: " << s;
      }
      next_beat = now + options_.heartbeat_interval;
    }
    double silent = 0;
    {
      MutexLock lock(&mu_);
      if (health_.ok() && !shutdown_)
        silent = absl::ToDoubleSeconds(now - last_from_scheduler_);
    }
    if (silent > absl::ToDoubleSeconds(options_.heartbeat_timeout)) {
      Abort(absl::AbortedError(
          absl::StrCat("the scheduler at ", options_.scheduler_address,
                       " has been silent for ", silent, " s")));
    }
    auto msg =
        transport_->Receive(std::min(next_beat, now + absl::Milliseconds(100)));
    if (!msg.ok()) {
      if (msg.status().code() == absl::StatusCode::kCancelled) return;
      continue;
    }
    const proto::Header& h = msg->header;
    if (h.sender() == kSchedulerId) {
      const absl::Time now = absl::Now();
      MutexLock lock(&mu_);
      last_from_scheduler_ = now;
      if (h.clock_us() != 0) UpdateClockOffset(h, absl::ToUnixMicros(now));
    }
    switch (h.type()) {
      case proto::HEARTBEAT:
        break;
      case proto::ABORT:
        Abort(absl::AbortedError(absl::StrCat("the scheduler aborted the job: ",
                                              EscapeForLog(h.error()))));
        break;
      case proto::SHUTDOWN: {
        {
          MutexLock lock(&mu_);
          shutdown_ = true;
        }
        cv_.SignalAll();
        transport_->CloseData();
        break;
      }
      case proto::BARRIER: {
        {
          MutexLock lock(&mu_);
          barrier_done_[h.barrier_name()] = true;
        }
        cv_.SignalAll();
        break;
      }
      case proto::ADDRESS_BOOK:
        if (h.sender() == kSchedulerId) UpdateAddressBook(h.address_book());
        break;
      default:
        break;  // Late duplicates of REGISTER.
    }
  }
}

proto::AddressBook ClusterNode::address_book() const {
  MutexLock lock(&mu_);
  return book_;
}

void ClusterNode::UpdateAddressBook(const proto::AddressBook& book) {
  std::map<int, std::string> old;
  {
    MutexLock lock(&mu_);
    for (const proto::NodeInfo& n : book_.nodes()) {
      const int id =
          n.role() == proto::SERVER ? ServerId(n.rank()) : WorkerId(n.rank());
      old[id] = absl::StrCat(n.host(), ":", n.port());
    }
  }
  for (const proto::NodeInfo& n : book.nodes()) {
    const int id =
        n.role() == proto::SERVER ? ServerId(n.rank()) : WorkerId(n.rank());
    const std::string address = absl::StrCat(n.host(), ":", n.port());
    auto it = old.find(id);
    if (it == old.end() || it->second == address || id == id_) continue;
    absl::Status s = transport_->Reconnect(id, address);
    if (!s.ok()) {
      LOG(ERROR) << "cannot reach the replacement "
                 << proto::Role_Name(n.role()) << " rank " << n.rank() << " at "
                 << EscapeForLog(address) << ": " << s.message();
      continue;
    }
    LOG(INFO) << proto::Role_Name(n.role()) << " rank " << n.rank() << " (node "
              << id << ") replaced: now at " << EscapeForLog(address)
              << " (was " << EscapeForLog(it->second) << ")";
  }
  MutexLock lock(&mu_);
  book_ = book;
}

absl::Status ClusterNode::health() const {
  MutexLock lock(&mu_);
  return health_;
}

absl::Status ClusterNode::Send(int id, Message msg, absl::Time deadline) {
  PSTRAIN_RETURN_IF_ERROR(health());
  msg.header.set_sender(id_);
  return transport_->Send(id, std::move(msg), deadline);
}

absl::Status ClusterNode::SendBatch(std::vector<std::pair<int, Message>> batch,
                                    absl::Time deadline) {
  PSTRAIN_RETURN_IF_ERROR(health());
  for (auto& [id, m] : batch) m.header.set_sender(id_);
  return transport_->SendBatch(std::move(batch), deadline);
}

absl::StatusOr<Message> ClusterNode::ReceiveData(absl::Time deadline) {
  auto m = transport_->ReceiveData(deadline);
  if (!m.ok() && m.status().code() == absl::StatusCode::kCancelled) {
    absl::Status h = health();
    if (!h.ok()) return h;
    return absl::CancelledError("the job has shut down");
  }
  return m;
}

absl::Status ClusterNode::Barrier(const std::string& group,
                                  const std::string& name,
                                  absl::Time deadline) {
  const std::string key = absl::StrCat(group, ":", name);
  PSTRAIN_RETURN_IF_ERROR(SendControl(proto::BARRIER, deadline, key));
  MutexLock lock(&mu_);
  const bool done =
      cv_.WaitUntil(&mu_, deadline, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return barrier_done_.count(key) > 0 || !health_.ok() || shutdown_;
      });
  if (!health_.ok()) return health_;
  if (!done) {
    return absl::DeadlineExceededError(
        absl::StrCat("barrier ", key, " not reached in time"));
  }
  if (shutdown_ && !barrier_done_.count(key))
    return absl::CancelledError("the job has shut down");
  barrier_done_.erase(key);
  return absl::OkStatus();
}

absl::Status ClusterNode::Finish() {
  return SendControl(proto::SHUTDOWN, absl::Now() + options_.heartbeat_timeout);
}

absl::Status ClusterNode::WaitForShutdown(absl::Time deadline) {
  MutexLock lock(&mu_);
  cv_.WaitUntil(&mu_, deadline, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return shutdown_ || !health_.ok();
  });
  if (!health_.ok()) return health_;
  if (!shutdown_) return absl::DeadlineExceededError("no shutdown in time");
  return absl::OkStatus();
}

}  // namespace cluster
}  // namespace pstrain
