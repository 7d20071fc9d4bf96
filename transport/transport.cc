#include "transport/transport.h"

#include <arpa/inet.h>
#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "glog/logging.h"
#include "transport/wire.h"
#include "util/escape.h"
#include "util/status.h"

namespace pstrain {
namespace transport {
namespace {

// How long Connect waits for the I/O thread to take its request.
constexpr std::chrono::seconds kConnectAnswerTimeout{30};

// The largest message (frames) that starts the I/O thread's spin
// (small_received_).
constexpr int64_t kSpinMessageBytes = 64 << 10;

absl::Status ZmqError(absl::string_view what) {
  const int e = zmq_errno();
  return absl::UnavailableError(
      absl::StrCat(what, ": ", zmq_strerror(e), " (errno ", e, ")"));
}

// Receives one part; returns false when none is waiting.
bool RecvPart(void* socket, zmq_msg_t* msg, bool* more) {
  if (zmq_msg_recv(msg, socket, ZMQ_DONTWAIT) < 0) return false;
  *more = zmq_msg_more(msg) != 0;
  return true;
}

bool IsControl(proto::MessageType type) {
  return type == proto::REGISTER || type == proto::ADDRESS_BOOK ||
         type == proto::BARRIER || type == proto::HEARTBEAT ||
         type == proto::ABORT || type == proto::SHUTDOWN;
}

}  // namespace

// One outgoing peer. The socket belongs to the I/O thread; the rest is
// guarded by Transport::mu_ (not annotated: ABSL_GUARDED_BY cannot name the
// mutex of the Transport that holds the Peer), and `id` and `endpoint` are
// not written after the Peer is in Transport::peers_.
struct Transport::Peer {
  int id = 0;
  std::string endpoint;
  void* dealer = nullptr;  // I/O thread only.
  // Not yet handed to ZeroMQ, highest priority on top.
  std::priority_queue<std::unique_ptr<Outgoing>,
                      std::vector<std::unique_ptr<Outgoing>>, GoesAfter>
      queue;
  // Everything counted against the bound: queued plus handed to ZeroMQ and
  // not yet released.
  size_t messages = 0;
  int64_t bytes = 0;
  // Handed to ZeroMQ and not yet released.
  int64_t window_bytes = 0;
  // Our arena's slot for this peer (ShmArena::kMaxSlots: none).
  uint32_t shm_slot = ShmArena::kMaxSlots;
  // The data link to this peer (transport/data_link.h). link_state is
  // guarded by mu_; kUp is set only with `link` in place, and nothing goes
  // to ZeroMQ once it is.
  // kHandshake: connected, running the encrypted link's handshake.
  // kAwaiting: the peer is expected to connect a two-way link (this node
  // offered its port first); this node connects at link_retry_at if not.
  enum class LinkState {
    kNone,
    kConnecting,
    kHandshake,
    kUp,
    kFailed,
    kAwaiting
  };
  LinkState link_state = LinkState::kNone;
  int data_port = 0;  // Where the peer's listener is (I/O thread).
  // kFailed: when to connect again (InfiniteFuture: never), after how many
  // breaks in a row, and when it last came up; guarded by mu_ (see above).
  absl::Time link_retry_at = absl::InfiniteFuture();
  int link_breaks = 0;
  absl::Time link_up_at;
  int connecting_fd = -1;       // I/O thread only.
  absl::Time connect_deadline;  // I/O thread only.
  uint64_t zmq_sent = 0;        // Messages handed to ZeroMQ (I/O thread).
  bool offered = false;         // A message offered our data port (I/O thread).
  // The link was connected by the peer (two-way), guarded by mu_ (above).
  bool link_adopted = false;
  // The encrypted link's handshake and the answer read so far (I/O thread).
  std::unique_ptr<LinkConnectorHandshake> hs;
  std::string hs_in;
  // Serializes writes to the link; taken before mu_.
  Mutex link_mu;
  std::unique_ptr<LinkWriter> link ABSL_GUARDED_BY(link_mu);
  uint64_t link_conn ABSL_GUARDED_BY(link_mu) = 0;  // The link's connection.
  // Whether the link has bytes the socket did not take yet (the I/O
  // thread then waits for it to be writable).
  std::atomic<bool> link_backlog{false};
  std::atomic<int> link_fd{-1};  // The link's socket, for polling.
};

// One incoming data link (I/O thread only).
struct Transport::IncomingLink {
  std::unique_ptr<LinkReader> reader;
  std::string from;  // The connection's source address, for logs.
  absl::Time hello_deadline;
  // A message that waits for the ZeroMQ messages sent before the link.
  bool held = false;
  Message held_msg;
  absl::Time hold_deadline;
  // Two-way links: the peer whose writer shares this connection (set on
  // adopting and on the connector's reverse side), and the connection.
  Peer* paired = nullptr;
  uint64_t conn = 0;
  bool reverse = false;  // Reads what a peer sends on a link we connected.
  // Its node was replaced (Reconnect): closed at the loop's next pass over
  // the links (which matches them to their poll items by index).
  bool dropped = false;
};

// Counts the data frames of one sent message that ZeroMQ still holds; the
// sender holds one extra count until every frame is handed over.
class Transport::InFlight final : public ReleaseListener {
 public:
  InFlight(Transport* t, Peer* peer, int64_t bytes)
      : t_(t), peer_(peer), bytes_(bytes) {}
  void Hold() { pending_.fetch_add(1, std::memory_order_relaxed); }
  void FrameReleased() override {
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      t_->Released(peer_, bytes_);
      delete this;
    }
  }

 private:
  Transport* const t_;
  Peer* const peer_;
  const int64_t bytes_;
  std::atomic<int> pending_{1};
};

absl::Status UseCurveKeysDir(const std::string& dir, TransportOptions* o) {
  PSTRAIN_ASSIGN_OR_RETURN(CurveKeysDir keys, ReadCurveKeysDir(dir));
  o->curve = true;
  o->curve_keys = keys.node;
  o->curve_router_keys = keys.server;
  o->curve_server_key = keys.server.public_key;
  o->curve_accepted_keys = keys.clients;
  return absl::OkStatus();
}

absl::Status UseJobCurveKeys(TransportOptions* o) {
  PSTRAIN_ASSIGN_OR_RETURN(o->curve_keys, DeriveJobKeys(o->token));
  o->curve = true;
  return absl::OkStatus();
}

Transport::Transport(const TransportOptions& options)
    : options_(options),
      incoming_(options.incoming_capacity),
      data_(options.incoming_capacity) {}

absl::StatusOr<std::unique_ptr<Transport>> Transport::Create(
    const TransportOptions& options) {
  std::unique_ptr<Transport> t(new Transport(options));
  t->ctx_ = zmq_ctx_new();
  if (t->ctx_ == nullptr) return ZmqError("zmq_ctx_new");
  GateOptions gate;
  gate.token = options.token;
  gate.max_connections = options.max_incoming_connections;
  gate.handshake_timeout = options.handshake_timeout;
  gate.plain = !options.curve;  // With CURVE, the ZapHandler below admits.
  PSTRAIN_ASSIGN_OR_RETURN(t->gate_, Gate::Create(t->ctx_, gate));
  t->router_ = zmq_socket(t->ctx_, ZMQ_ROUTER);
  PSTRAIN_RETURN_IF_ERROR(t->gate_->ArmServer(t->router_));
  int linger = 0;
  zmq_setsockopt(t->router_, ZMQ_LINGER, &linger, sizeof(linger));
  int64_t max = options.max_frame_bytes;
  zmq_setsockopt(t->router_, ZMQ_MAXMSGSIZE, &max, sizeof(max));
  int hwm = options.receive_hwm_messages;
  zmq_setsockopt(t->router_, ZMQ_RCVHWM, &hwm, sizeof(hwm));
  if (options.curve) {
    std::set<std::string> accepted = options.curve_accepted_keys;
    accepted.insert(options.curve_keys.public_key);
    auto zap = ZapHandler::Start(t->ctx_, accepted);
    if (!zap.ok()) return zap.status();
    t->zap_ = std::move(*zap);
    const CurveKeyPair& router_keys =
        options.curve_router_keys.secret_key.empty()
            ? options.curve_keys
            : options.curve_router_keys;
    const int server = 1;
    if (zmq_setsockopt(t->router_, ZMQ_CURVE_SERVER, &server, sizeof(server)) !=
            0 ||
        zmq_setsockopt(t->router_, ZMQ_CURVE_SECRETKEY,
                       router_keys.secret_key.c_str(),
                       router_keys.secret_key.size() + 1) != 0) {
      return ZmqError("CURVE server key (not a Z85 key of 40 characters?)");
    }
  }
  const std::string endpoint =
      options.bind_port == 0
          ? absl::StrCat("tcp://", options.bind_host, ":*")
          : absl::StrCat("tcp://", options.bind_host, ":", options.bind_port);
  if (zmq_bind(t->router_, endpoint.c_str()) != 0) {
    return ZmqError(absl::StrCat("cannot listen on ", options.bind_host, ":",
                                 options.bind_port == 0
                                     ? std::string("(any port)")
                                     : absl::StrCat(options.bind_port)));
  }
  char last[256];
  size_t len = sizeof(last);
  zmq_getsockopt(t->router_, ZMQ_LAST_ENDPOINT, last, &len);
  const std::string bound(last);
  t->port_ = std::stoi(bound.substr(bound.rfind(':') + 1));
  t->gate_->set_port(t->port_);
  t->address_ =
      absl::StrCat(options.advertise_host.empty() ? options.bind_host
                                                  : options.advertise_host,
                   ":", t->port_);
  if (options.data_link) {
    if (options.curve) {
      const CurveKeyPair& listen = options.curve_router_keys.secret_key.empty()
                                       ? options.curve_keys
                                       : options.curve_router_keys;
      std::set<std::string> accepted = options.curve_accepted_keys;
      accepted.insert(options.curve_keys.public_key);
      PSTRAIN_ASSIGN_OR_RETURN(t->link_keys_,
                               MakeLinkKeys(options.curve_keys,
                                            options.curve_server_key.empty()
                                                ? options.curve_keys.public_key
                                                : options.curve_server_key,
                                            listen, accepted));
      t->link_keys_->allow_aes = options.data_link_aes_gcm;
    }
    PSTRAIN_RETURN_IF_ERROR(t->ListenForLinks());
  }
  if (options.shm_bytes > 0) t->shm_ = ShmLink::Create(options.shm_bytes);
  t->wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (t->wake_fd_ < 0) return ErrnoToStatus(errno, "eventfd");
  t->thread_ = std::thread([p = t.get()] { p->Loop(); });
  return t;
}

Transport::~Transport() { Stop(); }

void Transport::Stop() {
  {
    MutexLock lock(&mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  room_.SignalAll();
  stop_ = true;
  Wake();
  if (thread_.joinable()) {
    thread_.join();  // The loop closes every socket.
  } else if (router_ != nullptr) {
    zmq_close(router_);  // Create() failed before the loop started.
    router_ = nullptr;
    if (link_listen_fd_ >= 0) close(link_listen_fd_);
    link_listen_fd_ = -1;
  }
  if (gate_ != nullptr) gate_->Close();  // Closed by the loop, if it ran.
  incoming_.Close();
  data_.Close();
  {
    // Reject connects that raced with the stop.
    MutexLock lock(&mu_);
    for (auto& c : connects_)
      c->done.set_value(absl::CancelledError("transport stopped"));
    connects_.clear();
  }
  if (zap_ != nullptr) zap_->Stop();  // Its socket closes before the context.
  // Dropped messages are released (InFlight::FrameReleased) while the
  // context terminates; they may still Wake().
  if (ctx_ != nullptr) zmq_ctx_term(ctx_);
  ctx_ = nullptr;
  if (wake_fd_ >= 0) close(wake_fd_);
  wake_fd_ = -1;
}

void Transport::Wake() {
  if (wake_pending_.exchange(true)) return;  // The loop has not drained yet.
  const uint64_t one = 1;
  ssize_t n = write(wake_fd_, &one, sizeof(one));
  (void)n;  // A full counter still wakes the loop.
}

bool Transport::OnIoThread() const {
  return io_thread_id_.load(std::memory_order_relaxed) ==
         std::this_thread::get_id();
}

absl::Status Transport::Connect(int peer, const std::string& host_port) {
  return ConnectOrReplace(peer, host_port, /*replace=*/false);
}

absl::Status Transport::Reconnect(int peer, const std::string& host_port) {
  return ConnectOrReplace(peer, host_port, /*replace=*/true);
}

absl::Status Transport::ConnectOrReplace(int peer, const std::string& host_port,
                                         bool replace) {
  auto req = std::make_unique<ConnectRequest>();
  req->peer = peer;
  req->endpoint = host_port;
  req->replace = replace;
  std::future<absl::Status> done = req->done.get_future();
  {
    MutexLock lock(&mu_);
    if (stopped_) return absl::CancelledError("transport stopped");
    connects_.push_back(std::move(req));
  }
  Wake();
  // The I/O thread answers within one turn of its loop (ZeroMQ connects in
  // the background); a longer wait means it is stuck, which is reported
  // rather than waited out.
  if (done.wait_for(kConnectAnswerTimeout) != std::future_status::ready) {
    return absl::DeadlineExceededError(absl::StrCat(
        "connect to ", EscapeForLog(host_port),
        ": the I/O thread did not answer in ",
        absl::FormatDuration(absl::FromChrono(kConnectAnswerTimeout))));
  }
  return done.get();
}

absl::Status Transport::Send(int peer, Message msg, absl::Time deadline) {
  std::vector<std::pair<int, Message>> batch;
  batch.emplace_back(peer, std::move(msg));
  return SendBatch(std::move(batch), deadline);
}

absl::Status Transport::SendBatch(std::vector<std::pair<int, Message>> batch,
                                  absl::Time deadline) {
  if (batch.empty()) return absl::OkStatus();
  if (shm_ != nullptr) PrepareShm(&batch);
  // Hands back the arena blocks when the batch is refused.
  auto refuse = [&](absl::Status s) {
    if (shm_ != nullptr) {
      for (const auto& [id, m] : batch) shm_->Drop(m);
    }
    return s;
  };
  // Each peer's share of the batch: messages and bytes.
  std::map<int, std::pair<size_t, int64_t>> share;
  std::vector<int64_t> bytes(batch.size(), 0);
  for (size_t i = 0; i < batch.size(); ++i) {
    for (const Frame& f : batch[i].second.frames)
      bytes[i] += static_cast<int64_t>(f.size());
    auto& s = share[batch[i].first];
    s.first += 1;
    s.second += bytes[i];
  }
  const bool io_thread = OnIoThread();
  std::vector<Peer*> link_peers;  // Written to from this thread.
  bool wake = false;
  {
    MutexLock lock(&mu_);
    if (stopped_) return refuse(absl::CancelledError("transport stopped"));
    std::vector<std::pair<Peer*, std::pair<size_t, int64_t>>> targets;
    for (const auto& [id, s] : share) {
      auto it = peers_.find(id);
      if (it == peers_.end()) {
        return refuse(absl::FailedPreconditionError(
            absl::StrCat("no connection to peer ", id)));
      }
      targets.emplace_back(it->second.get(), s);
    }
    // Peer's counts are guarded by mu_ (see Peer).
    auto fits = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      for (const auto& [p, s] : targets) {
        if (p->messages == 0) continue;  // Anything fits into an empty queue.
        if (p->messages + s.first > options_.max_queued_messages_per_peer ||
            p->bytes + s.second > options_.max_queued_bytes_per_peer) {
          return false;
        }
      }
      return true;
    };
    // The I/O thread never waits: it is the one that drains the queues.
    if (!io_thread) {
      ++room_waiters_;
      const bool ok = room_.WaitUntil(&mu_, deadline,
                                      [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
                                        return stopped_ || fits();
                                      });
      --room_waiters_;
      if (stopped_) return refuse(absl::CancelledError("transport stopped"));
      if (!ok) {
        for (const auto& [p, s] : targets) {
          if (p->messages > 0) {
            return refuse(absl::DeadlineExceededError(absl::StrCat(
                "the queue to peer ", p->id, " (", p->endpoint,
                ") stayed full: ", p->messages, " messages, ", p->bytes,
                " bytes queued (bounds ", options_.max_queued_messages_per_peer,
                ", ", options_.max_queued_bytes_per_peer, ")")));
          }
        }
        return refuse(absl::DeadlineExceededError("send queue full"));
      }
    }
    for (size_t i = 0; i < batch.size(); ++i) {
      Peer* p = peers_.at(batch[i].first).get();
      Message& msg = batch[i].second;
      msg.header.set_token(options_.token);
      auto out = std::make_unique<Outgoing>();
      out->priority = msg.header.priority();
      out->seq = seq_++;
      out->bytes = bytes[i];
      out->msg = std::move(msg);
      p->queue.push(std::move(out));
      p->messages += 1;
      p->bytes += bytes[i];
      max_queued_bytes_ = std::max(max_queued_bytes_, p->bytes);
      if (p->link_state == Peer::LinkState::kUp) {
        if (std::find(link_peers.begin(), link_peers.end(), p) ==
            link_peers.end()) {
          link_peers.push_back(p);
        }
      } else {
        wake = true;
      }
    }
  }
  // On the I/O thread the loop pumps right after the handler returns.
  // Elsewhere, messages to a peer with a link leave from this thread (no
  // hand-off); the rest wakes the I/O thread.
  if (!io_thread) {
    for (Peer* p : link_peers) PumpLink(p);
    if (wake) Wake();
  }
  return absl::OkStatus();
}

absl::StatusOr<Message> Transport::Receive(absl::Time deadline) {
  return incoming_.Pop(deadline);
}

absl::StatusOr<Message> Transport::ReceiveData(absl::Time deadline) {
  return data_.Pop(deadline);
}

void Transport::SetDataHandler(DataHandler handler) {
  CHECK(!OnIoThread()) << "SetDataHandler from a data handler";
  {
    MutexLock lock(&handler_mu_);  // Waits for a running call.
    handler_ = std::move(handler);
    has_handler_ = handler_ != nullptr;
  }
  Wake();  // Delivers what is already queued.
}

TransportStats Transport::stats() const {
  TransportStats s;
  s.received = received_;
  s.sent = sent_;
  s.dropped_malformed = malformed_;
  s.dropped_bad_token = bad_token_;
  s.dropped_wrong_sender = wrong_sender_;
  const GateStats gate = gate_->stats();
  s.connections_refused = gate.refused;
  s.connections_over_limit = gate.over_limit;
  if (shm_ != nullptr) {
    const ShmCounts c = shm_->counts();
    s.shm_frames_sent = c.sent;
    s.shm_frames_received = c.received;
    s.shm_frames_inline = c.inline_;
  }
  s.refused_unauthenticated = zap_ != nullptr ? zap_->refused() : 0;
  s.connections_refused += link_refused_;
  s.link_messages_sent = link_sent_;
  s.link_messages_received = link_received_;
  s.link_errors = link_errors_;
  s.link_auth_failures = link_auth_failures_;
  s.link_reconnects = link_reconnects_;
  s.links_adopted = links_adopted_;
  s.io_spin_turns = io_spin_turns_;
  s.queued_messages = static_cast<int64_t>(incoming_.size() + data_.size());
  MutexLock lock(&mu_);
  s.max_queued_bytes = max_queued_bytes_;
  for (const auto& [id, peer] : peers_) {
    s.queued_messages += static_cast<int64_t>(peer->messages);
  }
  return s;
}

void Transport::DrainCommands() {
  std::deque<std::unique_ptr<ConnectRequest>> connects;
  {
    MutexLock lock(&mu_);
    connects.swap(connects_);
  }
  for (auto& c : connects) {
    void* old_dealer = nullptr;
    Peer* retired = nullptr;  // Its link is closed below.
    {
      MutexLock lock(&mu_);
      auto it = peers_.find(c->peer);
      if (it != peers_.end() &&
          (it->second->endpoint == c->endpoint || !c->replace)) {
        c->done.set_value(
            it->second->endpoint == c->endpoint
                ? absl::OkStatus()
                : absl::AlreadyExistsError(absl::StrCat(
                      "peer ", c->peer, " is already connected to ",
                      EscapeForLog(it->second->endpoint))));
        continue;
      }
      if (it != peers_.end()) {
        // Reconnect(): retire the old peer; what is queued for it goes.
        std::unique_ptr<Peer> old = std::move(it->second);
        peers_.erase(it);
        while (!old->queue.empty()) {
          const Outgoing& out = *old->queue.top();
          old->messages -= 1;
          old->bytes -= out.bytes;
          if (shm_ != nullptr) shm_->Drop(out.msg, &old->endpoint);
          old->queue.pop();
        }
        old_dealer = old->dealer;
        old->dealer = nullptr;
        // Its data link goes too, and is never connected again.
        old->link_state = Peer::LinkState::kFailed;
        old->link_retry_at = absl::InfiniteFuture();
        old->link_adopted = false;
        LOG(INFO) << "peer " << c->peer << " moved from "
                  << EscapeForLog(old->endpoint) << " to "
                  << EscapeForLog(c->endpoint);
        retired = old.get();
        retired_.push_back(std::move(old));
        if (room_waiters_ > 0) room_.SignalAll();
      }
    }
    // Closing may release dropped messages (Released() takes mu_).
    if (old_dealer != nullptr) zmq_close(old_dealer);
    if (retired != nullptr) {
      CloseLinkOf(retired);
      // And the links it connected here: nothing they carry is taken from
      // it any more (the sender check).
      std::string gone;
      {
        MutexLock lock(&mu_);
        gone = retired->endpoint;
      }
      for (auto& in : links_in_) {
        if (in->reader->hello_done() && in->reader->identity() == gone) {
          in->dropped = true;
        }
      }
    }
    void* dealer = zmq_socket(ctx_, ZMQ_DEALER);
    int linger = 0, hwm = options_.send_hwm_messages;
    zmq_setsockopt(dealer, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_setsockopt(dealer, ZMQ_SNDHWM, &hwm, sizeof(hwm));
    zmq_setsockopt(dealer, ZMQ_ROUTING_ID, address_.data(), address_.size());
    if (options_.curve) {
      const std::string& server_key = options_.curve_server_key.empty()
                                          ? options_.curve_keys.public_key
                                          : options_.curve_server_key;
      zmq_setsockopt(dealer, ZMQ_CURVE_SERVERKEY, server_key.c_str(),
                     server_key.size() + 1);
      zmq_setsockopt(dealer, ZMQ_CURVE_PUBLICKEY,
                     options_.curve_keys.public_key.c_str(),
                     options_.curve_keys.public_key.size() + 1);
      zmq_setsockopt(dealer, ZMQ_CURVE_SECRETKEY,
                     options_.curve_keys.secret_key.c_str(),
                     options_.curve_keys.secret_key.size() + 1);
    }
    const std::string ep = absl::StrCat("tcp://", c->endpoint);
    absl::Status armed = options_.curve
                             ? absl::OkStatus()
                             : Gate::ArmClient(dealer, options_.token);
    if (!armed.ok() || zmq_connect(dealer, ep.c_str()) != 0) {
      absl::Status s = armed.ok()
                           ? ZmqError(absl::StrCat("cannot connect to ",
                                                   EscapeForLog(c->endpoint)))
                           : armed;
      zmq_close(dealer);
      c->done.set_value(
          std::move(s));  // One owner: no shared refcount across threads.
      continue;
    }
    auto peer = std::make_unique<Peer>();
    peer->id = c->peer;
    peer->endpoint = c->endpoint;
    peer->dealer = dealer;
    if (shm_ != nullptr) peer->shm_slot = shm_->AddPeer(peer->endpoint);
    {
      MutexLock lock(&mu_);
      peers_[c->peer] = std::move(peer);
    }
    c->done.set_value(absl::OkStatus());
  }
  if (has_handler_) {
    std::vector<Message> queued;
    TakeQueuedData(&queued);
    Deliver(&queued);
  }
  PumpSends();
}

void Transport::TakeQueuedData(std::vector<Message>* batch) {
  while (data_.size() > 0) {
    auto m = data_.Pop(absl::InfinitePast());
    if (!m.ok()) break;
    batch->push_back(std::move(*m));
  }
}

void Transport::PumpSends() {
  std::vector<std::pair<Peer*, std::unique_ptr<Outgoing>>> ready;
  std::vector<Peer*> link_peers;
  {
    MutexLock lock(&mu_);
    for (auto& [id, p] : peers_) {
      if (p->link_state == Peer::LinkState::kUp) {
        if (!p->queue.empty() || p->link_backlog) link_peers.push_back(p.get());
        continue;
      }
      while (std::unique_ptr<Outgoing> out = PopWithinWindow(p.get())) {
        ready.emplace_back(p.get(), std::move(out));
      }
    }
  }
  for (Peer* p : link_peers) PumpLink(p);
  for (size_t i = 0; i < ready.size(); ++i) {
    if (SendNow(ready[i].first, ready[i].second.get())) continue;
    // ZeroMQ's pipe to that peer is full (send_hwm_messages): requeue this
    // one and the rest of the round, and retry shortly.
    MutexLock lock(&mu_);
    for (size_t j = i; j < ready.size(); ++j) {
      ready[j].first->window_bytes -= ready[j].second->bytes;
      ready[j].first->queue.push(std::move(ready[j].second));
    }
    retry_sends_ = true;
    break;
  }
}

bool Transport::SendNow(Peer* peer, Outgoing* out) {
  void* sock = peer->dealer;
  if (shm_ != nullptr) shm_->ReturnToOwner(peer->endpoint, &out->msg);
  if (data_port_ > 0 && !IsControl(out->msg.header.type())) {
    // Offer our link listener.
    out->msg.header.set_data_port(options_.data_link_offered_port > 0
                                      ? options_.data_link_offered_port
                                      : data_port_);
    peer->offered = true;
  }
  std::string header;
  out->msg.header.SerializeToString(&header);
  zmq_msg_t part;
  zmq_msg_init_size(&part, header.size());
  std::memcpy(zmq_msg_data(&part), header.data(), header.size());
  const size_t n = out->msg.frames.size();
  if (zmq_msg_send(&part, sock, ZMQ_DONTWAIT | (n > 0 ? ZMQ_SNDMORE : 0)) < 0) {
    const int e = zmq_errno();
    zmq_msg_close(&part);
    if (e == EAGAIN) return false;
    LOG_EVERY_N(ERROR, 100)
        << "send to peer " << peer->id << " (" << peer->endpoint
        << ") failed: " << zmq_strerror(e);
    if (shm_ != nullptr) shm_->Drop(out->msg, &peer->endpoint);
    Released(peer, out->bytes);
    return true;
  }
  // The first part went through, so ZeroMQ takes the rest of the message.
  ++peer->zmq_sent;
  auto* flight = new InFlight(this, peer, out->bytes);
  for (size_t i = 0; i < n; ++i) {
    zmq_msg_t f;
    if (out->msg.frames[i].ReleaseTo(&f, flight)) flight->Hold();
    if (zmq_msg_send(&f, sock, i + 1 < n ? ZMQ_SNDMORE : 0) < 0) {
      LOG_EVERY_N(ERROR, 100) << "send to peer " << peer->id
                              << " failed: " << zmq_strerror(zmq_errno());
      zmq_msg_close(&f);  // Releases it (and tells `flight`).
      // Release the frames that will never be handed over.
      for (size_t j = i + 1; j < n; ++j) {
        zmq_msg_t g;
        if (out->msg.frames[j].ReleaseTo(&g, flight)) flight->Hold();
        zmq_msg_close(&g);
      }
      // The receiver drops the partial message: its blocks are ours again.
      if (shm_ != nullptr) shm_->Drop(out->msg, &peer->endpoint);
      break;
    }
  }
  ++sent_;
  flight->FrameReleased();  // The sender's own count.
  return true;
}

void Transport::PrepareShm(std::vector<std::pair<int, Message>>* batch) {
  std::vector<std::pair<uint32_t, std::string>> slots(
      batch->size(), {ShmArena::kMaxSlots, std::string()});
  {
    MutexLock lock(&mu_);
    for (size_t i = 0; i < batch->size(); ++i) {
      auto it = peers_.find((*batch)[i].first);
      if (it != peers_.end())
        slots[i] = {it->second->shm_slot, it->second->endpoint};
    }
  }
  const bool io_thread = OnIoThread();
  for (size_t i = 0; i < batch->size(); ++i) {
    shm_->Prepare(slots[i].first, slots[i].second, io_thread,
                  &(*batch)[i].second);
  }
}

Frame Transport::NewSharedFrame(size_t bytes) const {
  return shm_ != nullptr ? shm_->NewSharedFrame(bytes) : Frame();
}

bool Transport::SharedFrameInUse(const Frame& frame) const {
  return shm_ != nullptr && shm_->SharedFrameInUse(frame);
}

void Transport::Released(Peer* peer, int64_t bytes) {
  bool pump = false;
  {
    MutexLock lock(&mu_);
    peer->messages -= 1;
    peer->bytes -= bytes;
    peer->window_bytes -= bytes;
    pump = !peer->queue.empty();
    if (room_waiters_ > 0) room_.SignalAll();
  }
  if (pump)
    Wake();  // The window opened (on the I/O thread: no wait in the next poll).
}

void Transport::Deliver(std::vector<Message>* batch) {
  if (batch->empty()) return;
  // Serve the highest priority first among what arrived together.
  std::stable_sort(batch->begin(), batch->end(),
                   [](const Message& a, const Message& b) {
                     return a.header.priority() > b.header.priority();
                   });
  MutexLock lock(&handler_mu_);
  for (Message& m : *batch) {
    if (handler_) {
      handler_(std::move(m));
      PumpSends();  // Its replies leave while the next message is handled.
    } else {
      // The handler was removed meanwhile: back to the queue.
      absl::Status s = data_.TryPush(std::move(m));
      if (!s.ok()) {
        LOG_EVERY_N(WARNING, 100) << "incoming message dropped: " << s;
      }
    }
  }
  batch->clear();
}

bool Transport::SenderMatches(int64_t sender, const std::string& from) {
  // The scheduler (id 0) is reached at the address its nodes were given,
  // which need not be how it names itself (a wildcard bind, a host name):
  // only servers and workers, whose ids and addresses both come from the
  // address book, are bound to their connection.
  if (sender <= 0) return true;
  MutexLock lock(&mu_);
  auto it = peers_.find(static_cast<int>(sender));
  return it == peers_.end() || it->second->endpoint == from;
}

void Transport::ReadIncoming() {
  // Data goes to the handler or to the queue, the same way for the whole
  // read, and data queued before the handler came goes first (the handler
  // may have come since DrainCommands looked).
  const bool to_handler = has_handler_;
  std::vector<Message> batch;
  if (to_handler) TakeQueuedData(&batch);
  for (int budget = 0; budget < 256; ++budget) {
    if (incoming_.size() >= incoming_.capacity() ||
        (!to_handler && data_.size() >= data_.capacity())) {
      break;  // Backpressure.
    }
    zmq_msg_t part;
    zmq_msg_init(&part);
    bool more = false;
    if (!RecvPart(router_, &part, &more)) {
      zmq_msg_close(&part);
      break;
    }
    // Part 0 is the sender's routing id, part 1 the header, then data.
    const std::string identity(static_cast<const char*>(zmq_msg_data(&part)),
                               zmq_msg_size(&part));
    zmq_msg_close(&part);
    std::vector<Frame> parts;
    while (more) {
      zmq_msg_t p;
      zmq_msg_init(&p);
      if (zmq_msg_recv(&p, router_, 0) <
          0) {  // Rest of a multipart: already here.
        zmq_msg_close(&p);
        break;
      }
      more = zmq_msg_more(&p) != 0;
      parts.push_back(Frame::FromZmq(&p));
      zmq_msg_close(&p);
    }
    absl::StatusOr<Message> decoded = Decode(std::move(parts), options_.token);
    if (!decoded.ok()) {
      const bool token =
          decoded.status().code() == absl::StatusCode::kPermissionDenied;
      const int64_t n = token ? ++bad_token_ : ++malformed_;
      LOG_EVERY_N(WARNING, 100)
          << (token ? "refused" : "dropped") << " a message from '"
          << EscapeForLog(identity) << "': " << decoded.status().message()
          << " (" << n << (token ? " refused" : " malformed") << " so far)";
      continue;
    }
    const int offer = decoded->header.data_port();
    if (Admit(std::move(*decoded), identity, to_handler, &batch)) {
      // Counted for the data link's order (its hello names how many
      // messages came this way before it).
      if (data_port_ > 0) ++zmq_received_[identity];
      if (offer > 0 && data_port_ > 0) MaybeConnectLink(identity, offer);
    }
  }
  Deliver(&batch);
}

bool Transport::Admit(Message msg, const std::string& identity, bool to_handler,
                      std::vector<Message>* batch) {
  {
    if (!SenderMatches(msg.header.sender(), identity)) {
      const int64_t n = ++wrong_sender_;
      LOG_EVERY_N(WARNING, 100)
          << "dropped a message from '" << EscapeForLog(identity)
          << "' that claims to come from node " << msg.header.sender()
          << ", which is another node (" << n << " so far)";
      return false;
    }
    msg.from = identity;
    if (msg.header.has_shm_arena() || msg.header.shm_frames_size() > 0) {
      const std::string why = shm_ != nullptr ? shm_->Receive(&msg, identity)
                                              : ShmLink::Strip(&msg);
      if (!why.empty()) {
        ++malformed_;
        LOG_EVERY_N(WARNING, 100)
            << "dropped a message with bad shared-memory frames from '"
            << EscapeForLog(identity) << "': " << why;
        return false;
      }
    }
    ++received_;
    int64_t bytes = 0;
    for (const Frame& f : msg.frames) bytes += static_cast<int64_t>(f.size());
    if (bytes <= kSpinMessageBytes) ++small_received_;
    absl::Status s;
    if (!options_.split_data || IsControl(msg.header.type())) {
      s = incoming_.TryPush(std::move(msg));
    } else if (to_handler) {
      batch->push_back(std::move(msg));
    } else {
      s = data_.TryPush(std::move(msg));
    }
    if (!s.ok()) {
      LOG_EVERY_N(WARNING, 100)
          << "incoming message dropped: " << s;  // Closed at shutdown.
    }
    return true;
  }
}

int Transport::PollItems(std::vector<zmq_pollitem_t>* items, long timeout_ms,
                         bool* zmq_settled, std::vector<pollfd>* pfds) {
  const int n = static_cast<int>(items->size());
  int rc;
  bool zmq_ready = true;
  if (*zmq_settled) {
    // ZeroMQ's own zmq_poll asks every socket for ZMQ_EVENTS before and
    // after poll(), and each ask is a poll() and a getpid() of its own:
    // 14 system calls for a loop turn that waits, the most of a small
    // round trip's cost. When the last turn saw none of the sockets ready
    // and no ZeroMQ call touched them since, nothing can be pending
    // without its ZMQ_FD turning readable (ZeroMQ signals the socket's
    // mailbox when an empty pipe receives), so one poll() over the
    // ZMQ_FDs and the plain descriptors waits for the same things.
    pfds->resize(n);
    for (int i = 0; i < n; ++i) {
      const zmq_pollitem_t& it = (*items)[i];
      pollfd& p = (*pfds)[i];
      p.revents = 0;
      if (it.socket != nullptr) {
        int fd = -1;
        size_t len = sizeof(fd);
        zmq_getsockopt(it.socket, ZMQ_FD, &fd, &len);
        p.fd = fd;
        p.events = (it.events & ZMQ_POLLIN) ? POLLIN : 0;
      } else {
        p.fd = it.fd;
        p.events =
            static_cast<short>(((it.events & ZMQ_POLLIN) ? POLLIN : 0) |
                               ((it.events & ZMQ_POLLOUT) ? POLLOUT : 0));
      }
    }
    rc = poll(pfds->data(), n, static_cast<int>(timeout_ms));
    zmq_ready = false;
    for (int i = 0; i < n; ++i) {
      if ((*items)[i].socket != nullptr && (*pfds)[i].revents != 0) {
        zmq_ready = true;
      }
    }
    if (rc < 0) zmq_ready = true;  // EINTR or worse: ask ZeroMQ.
    if (!zmq_ready) {
      for (int i = 0; i < n; ++i) {
        zmq_pollitem_t& it = (*items)[i];
        const short r = (*pfds)[i].revents;
        it.revents = 0;
        if (it.socket != nullptr) continue;
        if (r & POLLIN) it.revents |= ZMQ_POLLIN;
        if (r & POLLOUT) it.revents |= ZMQ_POLLOUT;
        if (r & ~(POLLIN | POLLOUT)) it.revents |= ZMQ_POLLERR;
      }
    }
  }
  if (zmq_ready) {
    // Exact readiness from ZeroMQ; waits only when the fast poll did not.
    rc = zmq_poll(items->data(), n, *zmq_settled ? 0 : timeout_ms);
  }
  // Settled: every ZeroMQ socket was asked for input and none had any.
  // The loop only calls ZeroMQ on a socket it saw ready, so the next turn
  // may take the fast way.
  *zmq_settled = rc >= 0;
  for (const zmq_pollitem_t& it : *items) {
    if (it.socket != nullptr && (it.events != ZMQ_POLLIN || it.revents != 0)) {
      *zmq_settled = false;
    }
  }
  return rc;
}

void Transport::Loop() {
  io_thread_id_ = std::this_thread::get_id();
  constexpr int kFixed = 2 + Gate::kPollItems;
  std::vector<zmq_pollitem_t> items;
  std::vector<Peer*> link_peers;  // Polled for writing, after the fixed.
  size_t polled_in = 0;           // Incoming links polled, after those.
  // True while the last poll saw no ZeroMQ socket ready and no ZeroMQ call
  // has been made on them since (see PollItems).
  bool zmq_settled = false;
  std::vector<pollfd> pfds;
  // Until then the loop polls without sleeping (TransportOptions::io_spin).
  absl::Time spin_until = absl::InfinitePast();
  absl::Time last_arrival = absl::InfinitePast();  // Of a message.
  while (!stop_) {
    const int64_t small_before = small_received_;
    items.assign(kFixed, zmq_pollitem_t{});
    items[0] = {router_, 0, ZMQ_POLLIN, 0};
    items[1] = {nullptr, wake_fd_, ZMQ_POLLIN, 0};
    gate_->FillPollItems(items.data() + 2);
    const bool room = incoming_.size() < incoming_.capacity() &&
                      (has_handler_ || data_.size() < data_.capacity());
    if (!room) items[0].events = 0;
    bool holding = false;
    bool buffered = false;  // A link read ahead: read on without waiting.
    const absl::Time turn = absl::Now();
    absl::Time retry_at = absl::InfiniteFuture();  // A broken link's retry.
    std::vector<Peer*> reconnect;
    if (link_listen_fd_ >= 0) {
      items.push_back({nullptr, link_listen_fd_, ZMQ_POLLIN, 0});
      polled_in = links_in_.size();
      for (const auto& in : links_in_) {
        holding = holding || in->held;
        buffered = buffered || (room && !in->held && in->reader->buffered());
        const short ev = room && !in->held ? ZMQ_POLLIN : 0;
        items.push_back({nullptr, in->reader->fd(), ev, 0});
      }
      link_peers.clear();
      MutexLock lock(&mu_);
      for (auto& [id, p] : peers_) {
        if (p->link_state == Peer::LinkState::kConnecting) {
          link_peers.push_back(p.get());
          items.push_back({nullptr, p->connecting_fd, ZMQ_POLLOUT, 0});
        } else if (p->link_state == Peer::LinkState::kHandshake) {
          link_peers.push_back(p.get());
          items.push_back({nullptr, p->connecting_fd, ZMQ_POLLIN, 0});
        } else if (p->link_state == Peer::LinkState::kUp && p->link_backlog) {
          link_peers.push_back(p.get());
          items.push_back({nullptr, p->link_fd.load(), ZMQ_POLLOUT, 0});
        } else if ((p->link_state == Peer::LinkState::kFailed ||
                    p->link_state == Peer::LinkState::kAwaiting) &&
                   p->link_retry_at != absl::InfiniteFuture()) {
          retry_at = std::min(retry_at, p->link_retry_at);
          if (p->link_retry_at <= turn) {
            p->link_state = Peer::LinkState::kConnecting;
            p->link_retry_at = absl::InfiniteFuture();
            reconnect.push_back(p.get());
          }
        }
      }
    }
    for (Peer* p : reconnect) {
      VLOG(1) << "data link to peer " << p->id << ": connecting again";
      StartLinkConnect(p);
    }
    const bool spinning = room && turn < spin_until;
    if (spinning) ++io_spin_turns_;
    const bool caller_polls =
        room && busy_pollers_.load(std::memory_order_relaxed) > 0;
    const bool busy = spinning || caller_polls;
    long timeout_ms = busy || buffered                     ? 0
                      : (!room || retry_sends_ || holding) ? 5
                                                           : 100;
    if (!reconnect.empty()) timeout_ms = 0;  // Their sockets join the poll.
    if (retry_at != absl::InfiniteFuture()) {
      timeout_ms = std::min<long>(
          timeout_ms,
          std::max<int64_t>(0, absl::ToInt64Milliseconds(retry_at - turn) + 1));
    }
    retry_sends_ = false;
    const int rc = PollItems(&items, timeout_ms, &zmq_settled, &pfds);
    if (rc < 0 && zmq_errno() != EINTR) {
      LOG_EVERY_N(ERROR, 100) << "zmq_poll: " << zmq_strerror(zmq_errno());
    }
    if (rc == 0 && busy) std::this_thread::yield();
    if (items[1].revents & ZMQ_POLLIN) {
      uint64_t v;
      ssize_t n = read(wake_fd_, &v, sizeof(v));
      (void)n;
    }
    gate_->Serve(items.data() + 2);  // Admits or refuses new connections.
    wake_pending_ = false;  // Before draining: a later Wake() writes again.
    if (link_listen_fd_ >= 0) {
      // Links being connected, and links the socket took more of.
      const size_t first_peer = kFixed + 1 + polled_in;
      for (size_t i = 0; i < link_peers.size(); ++i) {
        Peer* p = link_peers[i];
        const short rev = items[first_peer + i].revents;
        Peer::LinkState state;
        {
          MutexLock lock(&mu_);
          state = p->link_state;
        }
        if (state == Peer::LinkState::kConnecting) {
          if (rev != 0) {
            FinishConnect(p, false);
          } else if (absl::Now() > p->connect_deadline) {
            FinishConnect(p, true);
          }
        } else if (state == Peer::LinkState::kHandshake) {
          if (rev != 0) {
            ContinueHandshake(p, false);
          } else if (absl::Now() > p->connect_deadline) {
            ContinueHandshake(p, true);
          }
        }
      }
    }
    DrainCommands();  // Pumps every peer's queue (and link) too.
    if (items[0].revents & ZMQ_POLLIN) {
      ReadIncoming();
    }
    if (link_listen_fd_ >= 0) {
      if (items[kFixed].revents & ZMQ_POLLIN) AcceptLinks();
      // Links that can be read (or hold a message, or wait for a hello).
      const bool to_handler = has_handler_;
      std::vector<Message> batch;
      if (to_handler) TakeQueuedData(&batch);
      const absl::Time now = absl::Now();
      const size_t n_in = polled_in;
      std::vector<bool> keep(links_in_.size(), true);
      for (size_t i = 0; i < links_in_.size(); ++i) {
        IncomingLink* in = links_in_[i].get();
        if (in->dropped) {
          keep[i] = false;
          continue;
        }
        const bool polled = i < n_in && items[kFixed + 1 + i].revents != 0;
        if (polled) in->reader->Polled();
        const bool readable = polled || in->reader->buffered();
        if (!in->reader->hello_done() && now > in->hello_deadline) {
          ++link_refused_;
          LOG_EVERY_N(WARNING, 100)
              << "closed an incoming data link from " << in->from
              << " that sent no hello within "
              << absl::FormatDuration(options_.handshake_timeout);
          keep[i] = false;
          continue;
        }
        if (readable || in->held) keep[i] = ServeLink(in, &batch);
      }
      size_t w = 0;
      for (size_t i = 0; i < links_in_.size(); ++i) {
        if (keep[i]) {
          links_in_[w++] = std::move(links_in_[i]);
        } else {
          Unpair(links_in_[i].get());
        }
      }
      links_in_.resize(w);
      const bool delivered = !batch.empty();
      Deliver(&batch);
      // A caller may be polling for what was just delivered
      // (BeginBusyPoll), most likely on this core: let it run now rather
      // than after one more poll.
      if (delivered && caller_polls) std::this_thread::yield();
    }
    if (options_.io_spin > absl::ZeroDuration() &&
        small_received_ != small_before) {
      // Only while messages come close together (a request and reply
      // exchange): after a longer silence (a layer's gradient in
      // backward, a heartbeat) the spin would only take the core from
      // computing threads. Twice the spin: a round trip the kernel had to
      // wake this thread for takes longer than one the spin caught, and
      // must not turn the spin off for good.
      const absl::Time now = absl::Now();
      if (now - last_arrival <= 2 * options_.io_spin) {
        spin_until = now + options_.io_spin;
      }
      last_arrival = now;
    }
  }
  CloseLinks();
  // Closing may release dropped messages (Released() takes mu_): collect
  // the sockets first.
  std::vector<void*> dealers;
  {
    MutexLock lock(&mu_);
    for (auto& [id, p] : peers_) {
      dealers.push_back(p->dealer);
      p->dealer = nullptr;
    }
  }
  for (void* d : dealers) zmq_close(d);
  zmq_close(router_);
  router_ = nullptr;
  gate_->Close();
}

void Transport::ExpectReply(uint64_t request_id,
                            std::vector<absl::Span<char>> frames) const {
  if (data_port_ > 0) dests_.Add(request_id, std::move(frames));
}

void Transport::CancelReply(uint64_t request_id) const {
  if (data_port_ > 0) dests_.Cancel(request_id);
}

absl::Status Transport::ListenForLinks() {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  const int g = getaddrinfo(options_.bind_host.c_str(), "0", &hints, &res);
  if (g != 0 || res == nullptr) {
    return absl::UnavailableError(absl::StrCat("data link: cannot resolve ",
                                               EscapeForLog(options_.bind_host),
                                               ": ", gai_strerror(g)));
  }
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  const bool ok = fd >= 0 && bind(fd, res->ai_addr, res->ai_addrlen) == 0 &&
                  listen(fd, 128) == 0;
  freeaddrinfo(res);
  if (!ok) {
    const int e = errno;
    if (fd >= 0) close(fd);
    return ErrnoToStatus(e, absl::StrCat("data link: cannot listen on ",
                                         EscapeForLog(options_.bind_host)));
  }
  sockaddr_in a{};
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  link_listen_fd_ = fd;
  data_port_ = ntohs(a.sin_port);
  return absl::OkStatus();
}

bool Transport::IsPeerEndpoint(const std::string& identity) {
  MutexLock lock(&mu_);
  for (const auto& [id, p] : peers_) {
    if (p->endpoint == identity) return true;
  }
  return false;
}

void Transport::MaybeConnectLink(const std::string& identity, int data_port) {
  Peer* peer = nullptr;
  {
    MutexLock lock(&mu_);
    for (auto& [id, p] : peers_) {
      if (p->endpoint == identity && p->link_state == Peer::LinkState::kNone) {
        peer = p.get();
        break;
      }
    }
    if (peer == nullptr) return;
    if (options_.data_link_two_way && peer->offered && data_port <= 65535) {
      // The peer has our offer and is likely connecting a link we can send
      // on too: wait for it a while (MaybeAdopt), then connect our own.
      peer->link_state = Peer::LinkState::kAwaiting;
      peer->link_retry_at = absl::Now() + kLinkAdoptGrace;
      peer->data_port = data_port;
      return;
    }
    peer->link_state = Peer::LinkState::kConnecting;
  }
  if (data_port > 65535) {
    return LinkFailed(peer, data_port, "bad port", /*retry=*/false);
  }
  peer->data_port = data_port;
  StartLinkConnect(peer);
}

void Transport::LinkDown(Peer* peer, bool retry) {
  peer->link_state = Peer::LinkState::kFailed;
  const bool adopted = peer->link_adopted;
  peer->link_adopted = false;
  if (!retry || peer->data_port <= 0) {
    peer->link_retry_at = absl::InfiniteFuture();
    return;
  }
  // 0.5 s, doubling up to 30 s for a link that keeps failing; a link that
  // stayed up for a minute starts again from 0.5 s. A link the peer had
  // connected: the peer connects again first (MaybeAdopt).
  const int n = std::min(++peer->link_breaks, 7);
  peer->link_retry_at =
      absl::Now() +
      std::min(absl::Milliseconds(500) * (1 << (n - 1)), absl::Seconds(30)) +
      (adopted ? kLinkAdoptGrace : absl::ZeroDuration());
}

void Transport::StartLinkConnect(Peer* peer) {
  const int data_port = peer->data_port;
  auto fail = [&](const std::string& why) {
    LinkFailed(peer, data_port, why, /*retry=*/true);
  };
  const std::string& identity = peer->endpoint;
  const std::string host = identity.substr(0, identity.rfind(':'));
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int g = getaddrinfo(host.c_str(), std::to_string(data_port).c_str(),
                            &hints, &res);
  if (g != 0 || res == nullptr) {
    return fail(absl::StrCat("cannot resolve: ", gai_strerror(g)));
  }
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int rc = fd < 0 ? -1 : connect(fd, res->ai_addr, res->ai_addrlen);
  const int e = errno;
  freeaddrinfo(res);
  if (fd < 0 || (rc != 0 && e != EINPROGRESS)) {
    if (fd >= 0) close(fd);
    return fail(absl::StrCat("connect: ", strerror(e)));
  }
  peer->connecting_fd = fd;
  peer->connect_deadline = absl::Now() + options_.handshake_timeout;
}

void Transport::FinishConnect(Peer* peer, bool timed_out) {
  const int fd = peer->connecting_fd;
  peer->connecting_fd = -1;
  int err = 0;
  socklen_t len = sizeof(err);
  if (!timed_out) getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (timed_out || err != 0) {
    close(fd);
    return LinkFailed(peer, peer->data_port,
                      timed_out ? "connect timed out" : strerror(err),
                      /*retry=*/true);
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (link_keys_ == nullptr) {
    LinkUp(peer, fd, nullptr, "", ++next_conn_, /*adopted=*/false, nullptr);
    return;
  }
  // Encrypted: the handshake's first message, then wait for the answer.
  peer->hs = std::make_unique<LinkConnectorHandshake>(link_keys_.get());
  const std::string& m1 = peer->hs->m1();
  const ssize_t n = send(fd, m1.data(), m1.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  peer->connecting_fd = fd;
  if (n != static_cast<ssize_t>(m1.size())) {
    return LinkConnectFailed(
        peer,
        absl::StrCat("cannot start the encryption handshake: ",
                     n < 0 ? strerror(errno) : "short write"),
        /*retry=*/true);
  }
  peer->hs_in.clear();
  peer->connect_deadline = absl::Now() + options_.handshake_timeout;
  MutexLock lock(&mu_);
  peer->link_state = Peer::LinkState::kHandshake;
}

void Transport::LinkConnectFailed(Peer* peer, const std::string& why,
                                  bool retry) {
  if (peer->connecting_fd >= 0) close(peer->connecting_fd);
  peer->connecting_fd = -1;
  peer->hs.reset();
  LinkFailed(peer, peer->data_port, why, retry);
}

void Transport::LinkFailed(Peer* peer, int port, const std::string& why,
                           bool retry) {
  absl::Time retry_at;
  int breaks;
  {
    MutexLock lock(&mu_);
    LinkDown(peer, retry);
    retry_at = peer->link_retry_at;
    breaks = peer->link_breaks;
  }
  const bool again = retry_at != absl::InfiniteFuture();
  const std::string line = absl::StrCat(
      "data link to peer ", peer->id, " (", EscapeForLog(peer->endpoint),
      ", port ", port, "): ", why, "; its messages stay on ZeroMQ",
      again ? absl::StrCat("; connecting again in ",
                           absl::FormatDuration(absl::Trunc(
                               retry_at - absl::Now(), absl::Milliseconds(1))),
                           " (failure ", breaks, " in a row)")
            : std::string());
  // A peer that stays away is tried every 30 s: its first failure and every
  // tenth after it are warnings, the others only verbose.
  if (!again || breaks <= 1 || breaks % 10 == 0) {
    LOG(WARNING) << line;
  } else {
    VLOG(1) << line;
  }
}

void Transport::ContinueHandshake(Peer* peer, bool timed_out) {
  if (timed_out) {
    ++link_auth_failures_;
    ++link_errors_;
    return LinkConnectFailed(
        peer,
        absl::StrCat("no answer to the encryption handshake within ",
                     absl::FormatDuration(options_.handshake_timeout)),
        /*retry=*/false);
  }
  char buf[kLinkHs2Bytes];
  const size_t want = kLinkHs2Bytes - peer->hs_in.size();
  const ssize_t n = recv(peer->connecting_fd, buf, want, MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
    return;
  }
  if (n <= 0) {
    ++link_auth_failures_;
    ++link_errors_;
    return LinkConnectFailed(
        peer,
        absl::StrCat("the listener ",
                     n == 0 ? std::string("closed the connection")
                            : std::string(strerror(errno)),
                     " in the encryption handshake"),
        /*retry=*/false);
  }
  peer->hs_in.append(buf, static_cast<size_t>(n));
  if (peer->hs_in.size() < kLinkHs2Bytes) return;
  std::string m3;
  std::unique_ptr<LinkRecordCipher> opener;  // The listener's records.
  absl::StatusOr<std::unique_ptr<LinkRecordCipher>> cipher = peer->hs->Finish(
      peer->hs_in.data(), &m3, options_.data_link_two_way ? &opener : nullptr);
  peer->hs.reset();
  if (!cipher.ok()) {
    ++link_auth_failures_;
    ++link_errors_;
    return LinkConnectFailed(peer, std::string(cipher.status().message()),
                             /*retry=*/false);
  }
  const int fd = peer->connecting_fd;
  peer->connecting_fd = -1;
  VLOG(1) << "data link to peer " << peer->id << ": "
          << LinkCipherName((*cipher)->cipher());
  LinkUp(peer, fd, std::move(*cipher), std::move(m3), ++next_conn_,
         /*adopted=*/false, std::move(opener));
}

void Transport::LinkUp(Peer* peer, int fd,
                       std::unique_ptr<LinkRecordCipher> cipher,
                       std::string preface, uint64_t conn, bool adopted,
                       std::unique_ptr<LinkRecordCipher> opener) {
  uint32_t flags = 0;
  if (!adopted && options_.data_link_two_way) {
    // Read what the peer may send back on this connection; the hello says
    // so only when it is read.
    const int rfd = dup(fd);
    if (rfd >= 0) {
      auto in = std::make_unique<IncomingLink>();
      in->from = absl::StrCat(EscapeForLog(peer->endpoint),
                              ", on the link this node connected");
      in->reader =
          LinkReader::Reverse(rfd, options_.token, options_.max_frame_bytes,
                              &dests_, peer->endpoint, std::move(opener));
      in->hello_deadline = absl::InfiniteFuture();  // Never adopted: idle.
      in->paired = peer;
      in->conn = conn;
      in->reverse = true;
      links_in_.push_back(std::move(in));
      flags = kLinkHelloTwoWay;
    } else {
      LOG(WARNING) << "data link to peer " << peer->id
                   << ": dup: " << strerror(errno)
                   << "; the link carries one direction";
    }
  }
  bool again = false;
  {
    MutexLock link(&peer->link_mu);
    peer->link =
        std::make_unique<LinkWriter>(fd, std::move(cipher), std::move(preface));
    peer->link_fd = fd;
    peer->link_conn = conn;
    // Everything sent through ZeroMQ so far is counted here; from now on
    // nothing more goes there (this thread is the only one that sends to
    // ZeroMQ, and it switches the peer under both locks).
    peer->link->Append(
        EncodeLinkHello(options_.token, address_, peer->zmq_sent, flags),
        Message(), nullptr);
    peer->link_backlog = true;
    MutexLock lock(&mu_);
    peer->link_state = Peer::LinkState::kUp;
    peer->link_adopted = adopted;
    peer->link_retry_at = absl::InfiniteFuture();
    again = peer->link_breaks > 0;
    peer->link_up_at = absl::Now();
  }
  const char* how = adopted ? " (two-way: the link it connected)" : "";
  if (again) {
    ++link_reconnects_;
    LOG(INFO) << "data link to peer " << peer->id << " ("
              << EscapeForLog(peer->endpoint) << ") is up again" << how;
  } else {
    VLOG(1) << "data link to peer " << peer->id << " ("
            << EscapeForLog(peer->endpoint) << ") is up" << how;
  }
  PumpLink(peer);
}

void Transport::MaybeAdopt(IncomingLink* in) {
  if (!options_.data_link_two_way || in->reverse || in->paired != nullptr ||
      !in->reader->two_way()) {
    return;
  }
  Peer* peer = nullptr;
  {
    MutexLock lock(&mu_);
    for (auto& [id, p] : peers_) {
      if (p->endpoint == in->reader->identity() &&
          (p->link_state == Peer::LinkState::kNone ||
           p->link_state == Peer::LinkState::kAwaiting ||
           p->link_state == Peer::LinkState::kFailed)) {
        peer = p.get();
        break;
      }
    }
  }
  if (peer == nullptr) return;  // Our own link is up or being connected.
  std::unique_ptr<LinkRecordCipher> sealer = in->reader->TakeReverseCipher();
  if (link_keys_ != nullptr && sealer == nullptr) return;
  const int fd = dup(in->reader->fd());
  if (fd < 0) {
    LOG(WARNING) << "data link from " << in->from
                 << ": dup: " << strerror(errno) << "; not sending on it";
    return;
  }
  in->paired = peer;
  in->conn = ++next_conn_;
  ++links_adopted_;
  LinkUp(peer, fd, std::move(sealer), "", in->conn, /*adopted=*/true, nullptr);
}

void Transport::Unpair(IncomingLink* in) {
  Peer* peer = in->paired;
  if (peer == nullptr) return;
  {
    MutexLock link(&peer->link_mu);
    if (peer->link == nullptr || peer->link_conn != in->conn) return;
    peer->link_fd = -1;
    peer->link_conn = 0;
    peer->link.reset();  // Drops what is unsent (Released takes mu_).
    peer->link_backlog = false;
    MutexLock lock(&mu_);
    if (absl::Now() - peer->link_up_at > absl::Minutes(1)) {
      peer->link_breaks = 0;
    }
    LinkDown(peer, /*retry=*/true);
  }
  // A break like a failed write (the peer died, stopped or dropped the
  // connection); ServeLink logged why where it was an error.
  const int64_t n = ++link_errors_;
  VLOG(1) << "data link to peer " << peer->id << " ("
          << EscapeForLog(peer->endpoint)
          << "): its connection closed; later messages go through ZeroMQ "
             "until a link is up again ("
          << n << " link errors so far)";
  Wake();  // What is still queued goes to ZeroMQ.
}

std::unique_ptr<Transport::Outgoing> Transport::PopWithinWindow(Peer* p) {
  if (p->queue.empty()) return nullptr;
  const std::unique_ptr<Outgoing>& top = p->queue.top();
  if (p->window_bytes > 0 &&
      p->window_bytes + top->bytes > options_.send_window_bytes) {
    return nullptr;  // Released() pumps again when the window opens.
  }
  p->window_bytes += top->bytes;
  // priority_queue::top is const; the element is moved out right away.
  std::unique_ptr<Outgoing> out =
      std::move(const_cast<std::unique_ptr<Outgoing>&>(top));
  p->queue.pop();
  return out;
}

void Transport::PumpLink(Peer* peer) {
  MutexLock link(&peer->link_mu);
  if (peer->link == nullptr) return;
  std::vector<std::unique_ptr<Outgoing>> ready;
  {
    MutexLock lock(&mu_);
    if (peer->link_state != Peer::LinkState::kUp) return;
    while (std::unique_ptr<Outgoing> out = PopWithinWindow(peer)) {
      ready.push_back(std::move(out));
    }
  }
  for (auto& out : ready) {
    if (shm_ != nullptr) shm_->ReturnToOwner(peer->endpoint, &out->msg);
    std::string header;
    out->msg.header.SerializeToString(&header);
    std::string head = EncodeLinkHead(header, out->msg.frames);
    const int64_t bytes = out->bytes;
    peer->link->Append(std::move(head), std::move(out->msg),
                       [this, peer, bytes](bool sent, Message* m) {
                         if (sent) {
                           ++sent_;
                           ++link_sent_;
                         } else if (shm_ != nullptr) {
                           shm_->Drop(*m, &peer->endpoint);
                         }
                         Released(peer, bytes);
                       });
  }
  absl::Status s = peer->link->Flush();
  if (!s.ok()) {
    const int64_t n = ++link_errors_;
    LOG_EVERY_N(ERROR, 100)
        << "data link to peer " << peer->id << " ("
        << EscapeForLog(peer->endpoint) << ") broke: " << s.message()
        << "; its unsent messages are dropped, later ones go through ZeroMQ "
           "until it is connected again ("
        << n << " link errors so far)";
    peer->link_fd = -1;
    peer->link_conn = 0;
    peer->link.reset();
    peer->link_backlog = false;
    {
      MutexLock lock(&mu_);
      if (absl::Now() - peer->link_up_at > absl::Minutes(1)) {
        peer->link_breaks = 0;
      }
      LinkDown(peer, /*retry=*/true);
    }
    Wake();  // What is still queued goes to ZeroMQ.
    return;
  }
  peer->link_backlog = peer->link->pending();
  if (peer->link_backlog && !OnIoThread()) Wake();  // It polls for room.
}

void Transport::AcceptLinks() {
  for (int i = 0; i < 64; ++i) {
    const int fd = accept4(link_listen_fd_, nullptr, nullptr,
                           SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    if (static_cast<int>(links_in_.size()) >=
        options_.max_incoming_connections) {
      ++link_refused_;
      LOG_EVERY_N(WARNING, 100)
          << "closed an incoming data link: " << links_in_.size()
          << " are open already";
      close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto in = std::make_unique<IncomingLink>();
    sockaddr_in a{};
    socklen_t alen = sizeof(a);
    char host[INET_ADDRSTRLEN] = "?";
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&a), &alen) == 0) {
      inet_ntop(AF_INET, &a.sin_addr, host, sizeof(host));
    }
    in->from = absl::StrCat(host, ":", ntohs(a.sin_port));
    in->reader = std::make_unique<LinkReader>(
        fd, options_.token, options_.max_frame_bytes, &dests_,
        [this](const std::string& id) { return IsPeerEndpoint(id); },
        link_keys_.get());
    in->hello_deadline = absl::Now() + options_.handshake_timeout;
    links_in_.push_back(std::move(in));
  }
}

bool Transport::ServeLink(IncomingLink* in, std::vector<Message>* batch) {
  const bool to_handler = has_handler_;
  for (int budget = 0; budget < 256; ++budget) {
    if (in->held) {
      // Wait for the ZeroMQ messages the peer sent before the link.
      const std::string& id = in->reader->identity();
      auto it = zmq_received_.find(id);
      const uint64_t got = it == zmq_received_.end() ? 0 : it->second;
      if (got < in->reader->zmq_before()) {
        if (absl::Now() < in->hold_deadline) return true;
        LOG(WARNING) << "data link from '" << EscapeForLog(id)
                     << "': " << in->reader->zmq_before() - got << " of the "
                     << in->reader->zmq_before()
                     << " messages it sent through ZeroMQ before it never "
                        "came; delivering its link messages anyway";
        zmq_received_[id] = in->reader->zmq_before();
      }
      in->held = false;
      ++link_received_;
      Admit(std::move(in->held_msg), id, to_handler, batch);
      continue;
    }
    if (incoming_.size() >= incoming_.capacity() ||
        (!to_handler && data_.size() >= data_.capacity())) {
      return true;  // Backpressure: read on once there is room.
    }
    std::vector<Frame> parts;
    std::string error;
    const bool had_hello = in->reader->hello_done();
    const LinkReader::State st = in->reader->Read(&parts, &error);
    if (!had_hello && in->reader->hello_done() &&
        (st == LinkReader::State::kAgain ||
         st == LinkReader::State::kMessage)) {
      MaybeAdopt(in);  // Two-way: send on it too.
    }
    const std::string who =
        in->reader->identity().empty()
            ? absl::StrCat("an unidentified node at ", in->from)
            : absl::StrCat("'", EscapeForLog(in->reader->identity()), "' (",
                           in->from, ")");
    switch (st) {
      case LinkReader::State::kAgain:
        return true;
      case LinkReader::State::kClosed:
        return false;
      case LinkReader::State::kRefused: {
        if (in->reader->auth_failed()) ++link_auth_failures_;
        const int64_t n = ++link_refused_;
        LOG_EVERY_N(WARNING, 100)
            << "refused an incoming data link from " << who << ": " << error
            << " (" << n << " refused so far)";
        return false;
      }
      case LinkReader::State::kError: {
        const int64_t n = ++link_errors_;
        if (in->reader->malformed()) ++malformed_;
        if (in->reader->auth_failed()) ++link_auth_failures_;
        LOG_EVERY_N(WARNING, 100)
            << "dropped the data link from " << who << ": " << error << " ("
            << n << " link errors so far)";
        return false;
      }
      case LinkReader::State::kMessage:
        break;
    }
    absl::StatusOr<Message> decoded = Decode(std::move(parts), options_.token);
    if (!decoded.ok()) {
      const bool token =
          decoded.status().code() == absl::StatusCode::kPermissionDenied;
      const int64_t n = token ? ++bad_token_ : ++malformed_;
      LOG_EVERY_N(WARNING, 100)
          << (token ? "refused" : "dropped") << " a message from " << who
          << " (data link): " << decoded.status().message() << " (" << n
          << (token ? " refused" : " malformed") << " so far)";
      continue;
    }
    in->held = true;
    in->held_msg = std::move(*decoded);
    in->hold_deadline = absl::Now() + options_.handshake_timeout;
  }
  return true;
}

void Transport::CloseLinkOf(Peer* p) {
  {
    MutexLock lock(&mu_);
    if (p->connecting_fd >= 0) close(p->connecting_fd);
    p->connecting_fd = -1;
    p->hs.reset();
  }
  MutexLock link(&p->link_mu);
  p->link_fd = -1;
  p->link_conn = 0;
  p->link.reset();  // Drops what is unsent (Released takes mu_).
  p->link_backlog = false;
}

void Transport::CloseLinks() {
  links_in_.clear();
  if (link_listen_fd_ >= 0) close(link_listen_fd_);
  link_listen_fd_ = -1;
  std::vector<Peer*> peers;
  {
    MutexLock lock(&mu_);
    for (auto& [id, p] : peers_) peers.push_back(p.get());
  }
  for (Peer* p : peers) CloseLinkOf(p);
}

bool TuneMallocForMessages() {
  // 32 MiB is the largest mmap threshold glibc accepts on 64-bit; setting
  // it also stops glibc's dynamic threshold adjustment.
  const bool mmap_ok = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1;
  const bool trim_ok = mallopt(M_TRIM_THRESHOLD, 256 << 20) == 1;
  return mmap_ok && trim_ok;
}

}  // namespace transport
}  // namespace pstrain
