// Who may open a connection to a Transport, and what one can cost before it
// has authenticated (DESIGN.md, Security).
//
// ZeroMQ delivers a message only once its last frame has arrived, and keeps
// every frame of an unfinished one inside the connection's pipe, where the
// application cannot see it: ZMQ_MAXMSGSIZE bounds one frame, ZMQ_RCVHWM
// counts whole messages, and nothing bounds the frames of a message that
// never ends (64 bytes each, however small: 20 MB of empty frames on the
// wire made a receiver hold 615 MiB). Sending our own messages differently
// (say, as one frame each) would not help: it is the receiving ROUTER that
// takes whatever a peer sends. So a connection is authenticated before
// ZeroMQ takes any frame of a message from it: in the ZMTP handshake, with
// the PLAIN mechanism and the job token as password, checked here as a ZAP
// handler (RFC 27). Until the handshake has succeeded a peer can make the
// receiver hold only the greeting, one handshake frame of at most
// max_frame_bytes (a larger one drops the connection) and ZeroMQ's read
// buffer (8 KiB), and only for handshake_timeout; max_connections bounds how
// many connections are open at once, so the total is bounded too. PLAIN
// sends the token in the clear, as every message already does without
// CURVE.
//
// Counting: ZeroMQ reports failed handshakes (wrong token, wrong mechanism,
// malformed commands, a peer gone or too slow) through its socket monitor;
// they are counted as refused. A frame over max_frame_bytes drops the
// connection without saying why, so those drops are not counted. A
// connection that would pass max_connections is closed right away and
// counted as over the limit (and, if it was still in its handshake, as
// refused too).
//
// With CURVE (transport/curve.h, the default between nodes) the CURVE
// handshake and its ZapHandler do the authenticating (GateOptions::plain
// false); everything else here is the same.
//
// Thread-compatible: created, armed and served by the transport's I/O
// thread (or before it starts); stats() may be called from any thread.
#ifndef PSTRAIN_TRANSPORT_GATE_H_
#define PSTRAIN_TRANSPORT_GATE_H_

#include <zmq.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace pstrain {
namespace transport {

struct GateOptions {
  // Authenticate peers with PLAIN and `token` (this gate answers ZAP).
  // False: the socket authenticates otherwise (CURVE, whose ZapHandler
  // answers ZAP, transport/curve.h); the gate still bounds, times out and
  // counts connections.
  bool plain = true;
  // What every connecting peer must present (ZMQ_PLAIN_PASSWORD), at most
  // 255 bytes.
  std::string token;
  // Incoming connections open at once; one more is closed as it arrives.
  int max_connections = 1024;
  // A connection that has not finished its handshake by then is dropped.
  absl::Duration handshake_timeout = absl::Seconds(10);
};

struct GateStats {
  // Handshakes that failed (ZeroMQ's monitor events); see the file comment.
  int64_t refused = 0;
  // Connections closed because max_connections were open.
  int64_t over_limit = 0;
};

class Gate {
 public:
  // With options.plain, binds the ZAP endpoint of `ctx` (one ZAP handler
  // per context; before any socket of the context binds or connects).
  // InvalidArgument for a token over 255 bytes.
  static absl::StatusOr<std::unique_ptr<Gate>> Create(
      void* ctx, const GateOptions& options);
  ~Gate();  // Close()s.
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;

  // Makes `router` authenticate every peer with PLAIN (options.plain), sets
  // its handshake timeout and starts watching its connections. REQUIRES:
  // before `router` binds.
  absl::Status ArmServer(void* router);
  // The port `router` listens on, once bound: only connections to it are
  // ever closed.
  void set_port(int port) { port_ = port; }
  // Makes `dealer` present `token`. REQUIRES: before it connects.
  static absl::Status ArmClient(void* dealer, const std::string& token);

  // The gate's two sockets, for zmq_poll (ZMQ_POLLIN).
  static constexpr int kPollItems = 2;
  void FillPollItems(zmq_pollitem_t* items) const;
  // Answers authentication requests and reads connection events, as far as
  // `items` (filled by FillPollItems, then polled) say they are ready.
  void Serve(const zmq_pollitem_t* items);

  GateStats stats() const;
  // Closes the gate's sockets. REQUIRES: before zmq_ctx_term; on the thread
  // that serves it. Idempotent.
  void Close();

 private:
  explicit Gate(const GateOptions& options) : options_(options) {}
  void AnswerZap();
  void ReadEvent();
  void Accepted(int fd);

  const GateOptions options_;
  void* ctx_ = nullptr;
  void* zap_ = nullptr;      // REP on inproc://zeromq.zap.01 (plain only).
  void* monitor_ = nullptr;  // PAIR reading the router's events.
  int port_ = -1;
  // Open incoming connections: fd -> the peer's address.
  std::map<int, std::string> open_;
  std::atomic<int64_t> refused_{0}, over_limit_{0};
};

}  // namespace transport
}  // namespace pstrain

#endif  // PSTRAIN_TRANSPORT_GATE_H_
