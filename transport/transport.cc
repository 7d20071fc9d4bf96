#include "transport/transport.h"

#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "util/status.h"

namespace pstrain {
namespace transport {
namespace {

absl::Status ZmqError(absl::string_view what) {
  const int e = zmq_errno();
  return absl::UnavailableError(absl::StrCat(what, ": ", zmq_strerror(e), " (errno ", e, ")"));
}

// Receives one part; returns false when none is waiting.
bool RecvPart(void* socket, zmq_msg_t* msg, bool* more) {
  if (zmq_msg_recv(msg, socket, ZMQ_DONTWAIT) < 0) return false;
  *more = zmq_msg_more(msg) != 0;
  return true;
}

}  // namespace

Transport::Transport(const TransportOptions& options)
    : options_(options), incoming_(options.incoming_capacity), data_(options.incoming_capacity) {}

absl::StatusOr<std::unique_ptr<Transport>> Transport::Create(const TransportOptions& options) {
  std::unique_ptr<Transport> t(new Transport(options));
  t->ctx_ = zmq_ctx_new();
  if (t->ctx_ == nullptr) return ZmqError("zmq_ctx_new");
  t->router_ = zmq_socket(t->ctx_, ZMQ_ROUTER);
  int linger = 0;
  zmq_setsockopt(t->router_, ZMQ_LINGER, &linger, sizeof(linger));
  int64_t max = options.max_frame_bytes;
  zmq_setsockopt(t->router_, ZMQ_MAXMSGSIZE, &max, sizeof(max));
  int hwm = 0;
  zmq_setsockopt(t->router_, ZMQ_RCVHWM, &hwm, sizeof(hwm));
  const std::string endpoint =
      options.bind_port == 0 ? absl::StrCat("tcp://", options.bind_host, ":*")
                             : absl::StrCat("tcp://", options.bind_host, ":", options.bind_port);
  if (zmq_bind(t->router_, endpoint.c_str()) != 0) {
    return ZmqError(absl::StrCat("cannot listen on ", options.bind_host, ":",
                                 options.bind_port == 0 ? std::string("(any port)")
                                                        : absl::StrCat(options.bind_port)));
  }
  char last[256];
  size_t len = sizeof(last);
  zmq_getsockopt(t->router_, ZMQ_LAST_ENDPOINT, last, &len);
  const std::string bound(last);
  t->port_ = std::stoi(bound.substr(bound.rfind(':') + 1));
  t->address_ = absl::StrCat(
      options.advertise_host.empty() ? options.bind_host : options.advertise_host, ":", t->port_);
  t->wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (t->wake_fd_ < 0) return ErrnoToStatus(errno, "eventfd");
  t->thread_ = std::thread([p = t.get()] { p->Loop(); });
  return t;
}

Transport::~Transport() { Stop(); }

void Transport::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  stop_ = true;
  Wake();
  if (thread_.joinable()) {
    thread_.join();  // The loop closes every socket.
  } else if (router_ != nullptr) {
    zmq_close(router_);  // Create() failed before the loop started.
    router_ = nullptr;
  }
  incoming_.Close();
  data_.Close();
  // Reject connects that raced with the stop.
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& c : connects_) c->done.set_value(absl::CancelledError("transport stopped"));
  connects_.clear();
  if (wake_fd_ >= 0) close(wake_fd_);
  wake_fd_ = -1;
  if (ctx_ != nullptr) zmq_ctx_term(ctx_);
  ctx_ = nullptr;
}

void Transport::Wake() {
  const uint64_t one = 1;
  ssize_t n = write(wake_fd_, &one, sizeof(one));
  (void)n;  // A full counter still wakes the loop.
}

absl::Status Transport::Connect(int peer, const std::string& host_port) {
  auto req = std::make_unique<ConnectRequest>();
  req->peer = peer;
  req->endpoint = host_port;
  std::future<absl::Status> done = req->done.get_future();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return absl::CancelledError("transport stopped");
    connects_.push_back(std::move(req));
  }
  Wake();
  return done.get();
}

absl::Status Transport::Send(int peer, Message msg) {
  std::vector<std::pair<int, Message>> batch;
  batch.emplace_back(peer, std::move(msg));
  return SendBatch(std::move(batch));
}

absl::Status Transport::SendBatch(std::vector<std::pair<int, Message>> batch) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return absl::CancelledError("transport stopped");
    for (const auto& [peer, msg] : batch) {
      if (!known_peers_.count(peer)) {
        return absl::FailedPreconditionError(absl::StrCat("no connection to peer ", peer));
      }
    }
    for (auto& [peer, msg] : batch) {
      msg.header.set_token(options_.token);
      auto out = std::make_unique<Outgoing>();
      out->peer = peer;
      out->priority = msg.header.priority();
      out->seq = seq_++;
      out->msg = std::move(msg);
      outgoing_.push(std::move(out));
    }
  }
  Wake();
  return absl::OkStatus();
}

absl::StatusOr<Message> Transport::Receive(absl::Time deadline) {
  return incoming_.Pop(deadline);
}

absl::StatusOr<Message> Transport::ReceiveData(absl::Time deadline) {
  return data_.Pop(deadline);
}

TransportStats Transport::stats() const {
  TransportStats s;
  s.received = received_;
  s.sent = sent_;
  s.dropped_malformed = malformed_;
  s.dropped_bad_token = bad_token_;
  return s;
}

void Transport::DrainCommands() {
  std::deque<std::unique_ptr<ConnectRequest>> connects;
  std::vector<std::unique_ptr<Outgoing>> sends;
  {
    std::lock_guard<std::mutex> lock(mu_);
    connects.swap(connects_);
    while (!outgoing_.empty()) {
      // priority_queue::top is const; the element is moved out right away.
      sends.push_back(std::move(const_cast<std::unique_ptr<Outgoing>&>(outgoing_.top())));
      outgoing_.pop();
    }
  }
  for (auto& c : connects) {
    auto it = endpoints_.find(c->peer);
    if (it != endpoints_.end()) {
      c->done.set_value(it->second == c->endpoint
                            ? absl::OkStatus()
                            : absl::AlreadyExistsError(absl::StrCat(
                                  "peer ", c->peer, " is already connected to ", it->second)));
      continue;
    }
    void* dealer = zmq_socket(ctx_, ZMQ_DEALER);
    int linger = 0, hwm = 0;
    zmq_setsockopt(dealer, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_setsockopt(dealer, ZMQ_SNDHWM, &hwm, sizeof(hwm));
    zmq_setsockopt(dealer, ZMQ_ROUTING_ID, address_.data(), address_.size());
    const std::string ep = absl::StrCat("tcp://", c->endpoint);
    if (zmq_connect(dealer, ep.c_str()) != 0) {
      absl::Status s = ZmqError(absl::StrCat("cannot connect to ", c->endpoint));
      zmq_close(dealer);
      c->done.set_value(s);
      continue;
    }
    dealers_[c->peer] = dealer;
    endpoints_[c->peer] = c->endpoint;
    {
      std::lock_guard<std::mutex> lock(mu_);
      known_peers_[c->peer] = true;
    }
    c->done.set_value(absl::OkStatus());
  }
  for (auto& s : sends) SendNow(s.get());
}

void Transport::SendNow(Outgoing* out) {
  auto it = dealers_.find(out->peer);
  if (it == dealers_.end()) return;  // Checked in Send(); cannot happen.
  void* sock = it->second;
  std::string header;
  out->msg.header.SerializeToString(&header);
  zmq_msg_t part;
  zmq_msg_init_size(&part, header.size());
  std::memcpy(zmq_msg_data(&part), header.data(), header.size());
  const size_t n = out->msg.frames.size();
  if (zmq_msg_send(&part, sock, n > 0 ? ZMQ_SNDMORE : 0) < 0) {
    LOG_EVERY_N(ERROR, 100) << "send to peer " << out->peer << " (" << endpoints_[out->peer]
                            << ") failed: " << zmq_strerror(zmq_errno());
    zmq_msg_close(&part);
    return;
  }
  for (size_t i = 0; i < n; ++i) {
    zmq_msg_t f;
    out->msg.frames[i].ReleaseTo(&f);
    if (zmq_msg_send(&f, sock, i + 1 < n ? ZMQ_SNDMORE : 0) < 0) {
      LOG_EVERY_N(ERROR, 100) << "send to peer " << out->peer << " failed: "
                              << zmq_strerror(zmq_errno());
      zmq_msg_close(&f);
      return;
    }
  }
  ++sent_;
}

std::string Transport::Validate(const Message& msg) const {
  const proto::Header& h = msg.header;
  const int n = h.keys_size();
  if (h.offsets_size() != n || h.lengths_size() != n) {
    return absl::StrCat(n, " keys but ", h.offsets_size(), " offsets and ", h.lengths_size(),
                        " lengths");
  }
  if (static_cast<int>(msg.frames.size()) != n && !msg.frames.empty()) {
    return absl::StrCat(n, " keys but ", msg.frames.size(), " data frames");
  }
  for (size_t i = 0; i < msg.frames.size(); ++i) {
    const int64_t len = h.lengths(static_cast<int>(i));
    if (len < 0 || h.offsets(static_cast<int>(i)) < 0 ||
        static_cast<uint64_t>(len) * sizeof(float) != msg.frames[i].size()) {
      return absl::StrCat("frame ", i, " has ", msg.frames[i].size(), " bytes but the header says ",
                          len, " floats at offset ", h.offsets(static_cast<int>(i)));
    }
  }
  return "";
}

void Transport::ReadIncoming() {
  for (int budget = 0; budget < 256; ++budget) {
    if (incoming_.size() >= incoming_.capacity() || data_.size() >= data_.capacity()) {
      return;  // Backpressure.
    }
    zmq_msg_t part;
    zmq_msg_init(&part);
    bool more = false;
    if (!RecvPart(router_, &part, &more)) {
      zmq_msg_close(&part);
      return;
    }
    // Part 0 is the sender's routing id, part 1 the header, then data.
    const std::string identity(static_cast<const char*>(zmq_msg_data(&part)), zmq_msg_size(&part));
    zmq_msg_close(&part);
    std::vector<Frame> parts;
    while (more) {
      zmq_msg_t p;
      zmq_msg_init(&p);
      if (zmq_msg_recv(&p, router_, 0) < 0) {  // Rest of a multipart: already here.
        zmq_msg_close(&p);
        break;
      }
      more = zmq_msg_more(&p) != 0;
      parts.push_back(Frame::FromZmq(&p));
      zmq_msg_close(&p);
    }
    if (parts.empty()) {
      ++malformed_;
      LOG_EVERY_N(WARNING, 100) << "dropped a message without header from '" << identity << "'";
      continue;
    }
    Message msg;
    if (!msg.header.ParseFromArray(parts[0].data(), static_cast<int>(parts[0].size()))) {
      ++malformed_;
      LOG_EVERY_N(WARNING, 100) << "dropped a message whose header does not parse ("
                                << parts[0].size() << " bytes) from '" << identity << "' ("
                                << malformed_ << " malformed so far)";
      continue;
    }
    if (msg.header.token() != options_.token) {
      ++bad_token_;
      LOG_EVERY_N(WARNING, 100) << "refused a message with a wrong job token from '" << identity
                                << "' (" << bad_token_ << " so far)";
      continue;
    }
    for (size_t i = 1; i < parts.size(); ++i) msg.frames.push_back(std::move(parts[i]));
    const std::string why = Validate(msg);
    if (!why.empty()) {
      ++malformed_;
      LOG_EVERY_N(WARNING, 100) << "dropped a malformed message from '" << identity
                                << "': " << why;
      continue;
    }
    ++received_;
    const proto::MessageType type = msg.header.type();
    const bool control = type == proto::REGISTER || type == proto::ADDRESS_BOOK ||
                         type == proto::BARRIER || type == proto::HEARTBEAT ||
                         type == proto::ABORT || type == proto::SHUTDOWN;
    absl::Status s = (options_.split_data && !control) ? data_.TryPush(std::move(msg))
                                                        : incoming_.TryPush(std::move(msg));
    if (!s.ok()) {
      LOG_EVERY_N(WARNING, 100) << "incoming message dropped: " << s;  // Closed at shutdown.
    }
  }
}

void Transport::Loop() {
  while (!stop_) {
    zmq_pollitem_t items[2] = {{router_, 0, ZMQ_POLLIN, 0}, {nullptr, wake_fd_, ZMQ_POLLIN, 0}};
    const bool room =
        incoming_.size() < incoming_.capacity() && data_.size() < data_.capacity();
    if (!room) items[0].events = 0;
    const int rc = zmq_poll(items, 2, room ? 100 : 5);
    if (rc < 0 && zmq_errno() != EINTR) {
      LOG_EVERY_N(ERROR, 100) << "zmq_poll: " << zmq_strerror(zmq_errno());
    }
    if (items[1].revents & ZMQ_POLLIN) {
      uint64_t v;
      ssize_t n = read(wake_fd_, &v, sizeof(v));
      (void)n;
    }
    DrainCommands();
    if (items[0].revents & ZMQ_POLLIN) ReadIncoming();
  }
  for (auto& [peer, sock] : dealers_) zmq_close(sock);
  dealers_.clear();
  zmq_close(router_);
  router_ = nullptr;
}

}  // namespace transport
}  // namespace pstrain
