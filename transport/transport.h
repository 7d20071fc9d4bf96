// ZeroMQ messaging for every role (DESIGN.md, Wire protocol).
//
// A Transport binds one ROUTER socket for incoming messages and opens one
// DEALER socket per peer for outgoing ones. One I/O thread owns every
// socket; other threads hand it work through a queue (woken by an eventfd),
// so each socket is touched by exactly one thread. Sends are ordered by
// priority (higher first, FIFO within a priority).
//
// Every incoming message is validated before anyone sees it: the header
// must parse, carry the job token, and describe its data frames exactly
// (one float32 frame per key, sizes agreeing). Anything else is counted,
// logged (rate-limited) and dropped: no input from the network can crash
// the process.
#ifndef PSTRAIN_TRANSPORT_TRANSPORT_H_
#define PSTRAIN_TRANSPORT_TRANSPORT_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <queue>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "transport/message.h"
#include "util/blocking_queue.h"

namespace pstrain {
namespace transport {

struct TransportOptions {
  // Interface to bind ("127.0.0.1", "0.0.0.0", a host name) and port
  // (0: an ephemeral port).
  std::string bind_host = "127.0.0.1";
  int bind_port = 0;
  // Address peers use to reach us; empty: bind_host.
  std::string advertise_host;
  // The job token every message must carry.
  std::string token;
  // Validated messages waiting for the consumer; when full, the transport
  // stops reading the socket (backpressure through TCP).
  size_t incoming_capacity = 4096;
  // Largest accepted incoming message part (ZMQ_MAXMSGSIZE).
  int64_t max_frame_bytes = int64_t{1} << 31;
  // Deliver data messages to ReceiveData() instead of Receive().
  bool split_data = false;
};

struct TransportStats {
  int64_t received = 0;
  int64_t sent = 0;
  int64_t dropped_malformed = 0;  // Header missing/unparsable, sizes off.
  int64_t dropped_bad_token = 0;
};

// Thread-safe: Send/Connect/Receive from any thread.
class Transport {
 public:
  // Binds and starts the I/O thread. Errors name host:port and the reason.
  static absl::StatusOr<std::unique_ptr<Transport>> Create(const TransportOptions& options);
  ~Transport();  // Stop()s.
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  // "host:port" peers use to reach this transport.
  const std::string& address() const { return address_; }
  int port() const { return port_; }

  // Opens the outgoing socket to `peer` (an id chosen by the caller) at
  // "host:port". Idempotent for the same endpoint. Errors name the
  // endpoint and the reason.
  absl::Status Connect(int peer, const std::string& host_port);

  // Queues `msg` for `peer`; the token is filled in here. Returns
  // FailedPrecondition if the peer was never connected, Cancelled after
  // Stop(). Completes asynchronously (the transport keeps the frames).
  absl::Status Send(int peer, Message msg);
  // Queues several messages at once: among them, higher priority is sent
  // first. All or nothing: on error none is queued.
  absl::Status SendBatch(std::vector<std::pair<int, Message>> batch);

  // The next validated incoming control message (REGISTER, ADDRESS_BOOK,
  // BARRIER, HEARTBEAT, ABORT, SHUTDOWN), waiting until `deadline`
  // (DeadlineExceeded) or Stop() (Cancelled). With `split_data` off (the
  // default), every message comes here.
  absl::StatusOr<Message> Receive(absl::Time deadline);
  // With options.split_data: the next data message (everything else), so
  // data reaches its consumer without another thread in between.
  absl::StatusOr<Message> ReceiveData(absl::Time deadline);
  // Closes the data queue (consumers get Cancelled once it is drained).
  void CloseData() { data_.Close(); }

  TransportStats stats() const;

  // Stops the I/O thread, closes the sockets (unsent messages are dropped).
  // Idempotent.
  void Stop();

 private:
  struct Outgoing {
    int peer;
    int priority;
    uint64_t seq;
    Message msg;
  };
  struct ConnectRequest {
    int peer;
    std::string endpoint;
    std::promise<absl::Status> done;
  };
  struct Later {
    bool operator()(const std::unique_ptr<Outgoing>& a,
                    const std::unique_ptr<Outgoing>& b) const {
      if (a->priority != b->priority) return a->priority < b->priority;
      return a->seq > b->seq;
    }
  };

  explicit Transport(const TransportOptions& options);
  void Loop();
  void Wake();
  void DrainCommands();
  void SendNow(Outgoing* out);
  void ReadIncoming();
  // Returns an error description, or "" when `msg` is valid.
  std::string Validate(const Message& msg) const;

  const TransportOptions options_;
  std::string address_;
  int port_ = 0;
  void* ctx_ = nullptr;
  void* router_ = nullptr;  // I/O thread only (after Create).
  std::map<int, void*> dealers_;  // I/O thread only.
  std::map<int, std::string> endpoints_;  // I/O thread only.
  int wake_fd_ = -1;

  std::mutex mu_;
  std::priority_queue<std::unique_ptr<Outgoing>, std::vector<std::unique_ptr<Outgoing>>, Later>
      outgoing_;  // Guarded by mu_.
  std::deque<std::unique_ptr<ConnectRequest>> connects_;  // Guarded by mu_.
  std::map<int, bool> known_peers_;  // Guarded by mu_.
  uint64_t seq_ = 0;  // Guarded by mu_.
  bool stopped_ = false;  // Guarded by mu_.

  BlockingQueue<Message> incoming_;
  BlockingQueue<Message> data_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> received_{0}, sent_{0}, malformed_{0}, bad_token_{0};
  std::thread thread_;
};

}  // namespace transport
}  // namespace pstrain

#endif  // PSTRAIN_TRANSPORT_TRANSPORT_H_
