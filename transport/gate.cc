#include "transport/gate.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "glog/logging.h"
#include "transport/wire.h"
#include "util/escape.h"

namespace pstrain {
namespace transport {
namespace {

constexpr char kZapEndpoint[] = "inproc://zeromq.zap.01";
constexpr char kMonitorEndpoint[] = "inproc://pstrain.gate.monitor";
constexpr char kUser[] = "pstrain";
// PLAIN carries a user name and password of at most 255 bytes each.
constexpr size_t kMaxToken = 255;

absl::Status ZmqStatus(absl::string_view what) {
  const int e = zmq_errno();
  return absl::InternalError(
      absl::StrCat(what, ": ", zmq_strerror(e), " (errno ", e, ")"));
}

// Reads every part of the next message on `socket` (there is one).
std::vector<std::string> ReadParts(void* socket) {
  std::vector<std::string> parts;
  while (true) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, socket, 0) < 0) {
      zmq_msg_close(&m);
      break;
    }
    parts.emplace_back(static_cast<const char*>(zmq_msg_data(&m)),
                       zmq_msg_size(&m));
    const bool more = zmq_msg_more(&m) != 0;
    zmq_msg_close(&m);
    if (!more) break;
  }
  return parts;
}

bool HasInput(void* socket) {
  int events = 0;
  size_t len = sizeof(events);
  return zmq_getsockopt(socket, ZMQ_EVENTS, &events, &len) == 0 &&
         (events & ZMQ_POLLIN);
}

// "ip:port" of the local (`peer` false) or remote end of socket `fd`, or ""
// when `fd` is no connected TCP socket (any more).
std::string Endpoint(int fd, bool peer, int* port = nullptr) {
  sockaddr_storage a{};
  socklen_t len = sizeof(a);
  const int rc = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len)
                      : getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  if (rc != 0) return "";
  char ip[INET6_ADDRSTRLEN] = {0};
  int p = 0;
  if (a.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&a);
    inet_ntop(AF_INET, &v4->sin_addr, ip, sizeof(ip));
    p = ntohs(v4->sin_port);
  } else if (a.ss_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&a);
    inet_ntop(AF_INET6, &v6->sin6_addr, ip, sizeof(ip));
    p = ntohs(v6->sin6_port);
  } else {
    return "";
  }
  if (port != nullptr) *port = p;
  return absl::StrCat(ip, ":", p);
}

std::string HandshakeFailure(uint16_t event, uint32_t value) {
  switch (event) {
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
      return absl::StrCat("authentication refused (ZAP status ", value, ")");
    case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
      return value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
                 ? std::string("not a pstrain peer: wrong security mechanism")
                 : absl::StrFormat("protocol error 0x%x", value);
    default:
      return absl::StrCat("the peer left or was too slow (",
                          strerror(static_cast<int>(value)), ")");
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Gate>> Gate::Create(void* ctx,
                                                   const GateOptions& options) {
  if (options.token.size() > kMaxToken) {
    return absl::InvalidArgumentError(
        absl::StrCat("the job token has ", options.token.size(),
                     " bytes; at most ", kMaxToken, " work"));
  }
  std::unique_ptr<Gate> g(new Gate(options));
  g->ctx_ = ctx;
  if (!options.plain) return g;
  g->zap_ = zmq_socket(ctx, ZMQ_REP);
  if (g->zap_ == nullptr) return ZmqStatus("creating the ZAP handler");
  const int linger = 0;
  zmq_setsockopt(g->zap_, ZMQ_LINGER, &linger, sizeof(linger));
  if (zmq_bind(g->zap_, kZapEndpoint) != 0)
    return ZmqStatus("binding the ZAP handler");
  return g;
}

Gate::~Gate() { Close(); }

absl::Status Gate::ArmServer(void* router) {
  const int on = 1;
  const int handshake_ms =
      static_cast<int>(absl::ToInt64Milliseconds(options_.handshake_timeout));
  if ((options_.plain &&
       zmq_setsockopt(router, ZMQ_PLAIN_SERVER, &on, sizeof(on)) != 0) ||
      zmq_setsockopt(router, ZMQ_HANDSHAKE_IVL, &handshake_ms,
                     sizeof(handshake_ms)) != 0) {
    return ZmqStatus("setting up authentication");
  }
  const int events = ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED |
                     ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                     ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                     ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
  if (zmq_socket_monitor(router, kMonitorEndpoint, events) != 0) {
    return ZmqStatus("monitoring connections");
  }
  monitor_ = zmq_socket(ctx_, ZMQ_PAIR);
  if (monitor_ == nullptr) return ZmqStatus("creating the connection monitor");
  const int linger = 0;
  zmq_setsockopt(monitor_, ZMQ_LINGER, &linger, sizeof(linger));
  if (zmq_connect(monitor_, kMonitorEndpoint) != 0) {
    return ZmqStatus("connecting the connection monitor");
  }
  return absl::OkStatus();
}

absl::Status Gate::ArmClient(void* dealer, const std::string& token) {
  const absl::Status bad = absl::InvalidArgumentError(
      absl::StrCat("cannot present a job token of ", token.size(), " bytes"));
  if (token.size() > kMaxToken) return bad;
  // The user name selects PLAIN; the password stays empty unless set
  // (ZeroMQ refuses to set an empty one).
  if (zmq_setsockopt(dealer, ZMQ_PLAIN_USERNAME, kUser, sizeof(kUser) - 1) != 0)
    return bad;
  if (!token.empty() && zmq_setsockopt(dealer, ZMQ_PLAIN_PASSWORD, token.data(),
                                       token.size()) != 0) {
    return bad;
  }
  return absl::OkStatus();
}

void Gate::FillPollItems(zmq_pollitem_t* items) const {
  // A missing socket is polled as fd -1 (ignored) for nothing.
  if (zap_ != nullptr) {
    items[0] = {zap_, 0, ZMQ_POLLIN, 0};
  } else {
    items[0] = {nullptr, -1, 0, 0};
  }
  items[1] = {monitor_, 0,
              static_cast<short>(monitor_ != nullptr ? ZMQ_POLLIN : 0), 0};
}

void Gate::Serve(const zmq_pollitem_t* items) {
  if (items[0].revents & ZMQ_POLLIN) {
    while (HasInput(zap_)) AnswerZap();
  }
  if (items[1].revents & ZMQ_POLLIN) {
    while (HasInput(monitor_)) ReadEvent();
  }
}

void Gate::AnswerZap() {
  // RFC 27: version, request id, domain, address, identity, mechanism,
  // credentials (PLAIN: user name, password). Made by ZeroMQ itself; only
  // the address and the credentials come from the peer.
  const std::vector<std::string> req = ReadParts(zap_);
  const bool well_formed = req.size() >= 6 && req[0] == "1.0";
  const bool ok = well_formed && req[5] == "PLAIN" && req.size() == 8 &&
                  ConstantTimeEquals(req[7], options_.token);
  if (!ok) {  // Counted when ZeroMQ reports the failed handshake.
    LOG_EVERY_N(WARNING, 100) << "refused a connection from "
                              << (req.size() > 3 ? EscapeForLog(req[3]) : "?")
                              << ": it does not present the job token";
  }
  // Reply: version, request id, status code and text, user id, metadata.
  const std::vector<std::string> reply = {"1.0",
                                          req.size() > 1 ? req[1] : "",
                                          ok ? "200" : "400",
                                          ok ? "OK" : "wrong job token",
                                          ok ? kUser : "",
                                          ""};
  for (size_t i = 0; i < reply.size(); ++i) {
    zmq_send(zap_, reply[i].data(), reply[i].size(),
             i + 1 < reply.size() ? ZMQ_SNDMORE : 0);
  }
}

void Gate::ReadEvent() {
  // Frame 1: the event (16 bits) and its value (32 bits); frame 2: the
  // endpoint.
  const std::vector<std::string> parts = ReadParts(monitor_);
  if (parts.empty() || parts[0].size() < 6) return;
  uint16_t event;
  uint32_t value;
  std::memcpy(&event, parts[0].data(), sizeof(event));
  std::memcpy(&value, parts[0].data() + sizeof(event), sizeof(value));
  switch (event) {
    case ZMQ_EVENT_ACCEPTED:
      Accepted(static_cast<int>(value));
      break;
    case ZMQ_EVENT_DISCONNECTED:
      open_.erase(static_cast<int>(value));
      break;
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
      ++refused_;  // Logged by whoever answered ZAP.
      break;
    default: {
      const int64_t n = ++refused_;
      LOG_EVERY_N(WARNING, 100) << "a connection failed its handshake: "
                                << HandshakeFailure(event, value) << " (" << n
                                << " connections refused so far)";
      break;
    }
  }
}

void Gate::Accepted(int fd) {
  const std::string peer = Endpoint(fd, /*peer=*/true);
  if (static_cast<int>(open_.size()) < options_.max_connections) {
    open_[fd] = peer;
    return;
  }
  // Events arrive after the fact: close `fd` only while it is still a
  // connection to our port (ZeroMQ may have closed it and reused the
  // number since).
  int local_port = -1;
  if (peer.empty() || Endpoint(fd, /*peer=*/false, &local_port).empty() ||
      local_port != port_) {
    return;
  }
  // ZeroMQ sees the connection end and closes it (and its fd) itself.
  shutdown(fd, SHUT_RDWR);
  const int64_t n = ++over_limit_;
  LOG_EVERY_N(WARNING, 100)
      << "closed a connection from " << peer
      << " as it arrived: " << open_.size()
      << " incoming connections are open, the most allowed (" << n
      << " closed so far)";
}

GateStats Gate::stats() const {
  GateStats s;
  s.refused = refused_;
  s.over_limit = over_limit_;
  return s;
}

void Gate::Close() {
  if (monitor_ != nullptr) zmq_close(monitor_);
  if (zap_ != nullptr) zmq_close(zap_);
  monitor_ = nullptr;
  zap_ = nullptr;
}

}  // namespace transport
}  // namespace pstrain
