// ZeroMQ messaging for every role (DESIGN.md, Wire protocol).
//
// A Transport binds one ROUTER socket for incoming messages and opens one
// DEALER socket per peer for outgoing ones. One I/O thread owns every
// socket; other threads hand it work through bounded per-peer queues (woken
// by an eventfd), so each socket is touched by exactly one thread.
//
// Sending: each peer has a queue ordered by priority (higher first, FIFO
// within a priority). Only a window of it (send_window_bytes) is handed to
// ZeroMQ at a time, so a later high-priority message overtakes queued bulk
// data. A message counts against its peer's bound (messages and bytes) from
// Send() until ZeroMQ has released its data frames; a producer that finds
// the bound reached waits for room until its deadline (backpressure).
//
// Receiving: a peer is let in only when it authenticates in the ZeroMQ
// handshake (with `curve`, by its CURVE key; else by presenting the job
// token with PLAIN), before ZeroMQ takes any frame of a message from it;
// until then it can make the transport hold at most one handshake frame of
// max_frame_bytes, and at most max_incoming_connections connections are
// open (transport/gate.h). Every incoming message is then decoded and
// validated before anyone sees it (transport/wire.h): the header must
// parse, carry the job token, and describe its data frames exactly (one
// float32 frame per key, sizes agreeing). Anything else is counted, logged
// (rate-limited, peer-supplied text escaped) and dropped: no input from the
// network can crash the process. Data messages go either to a queue
// (ReceiveData) or, with a handler installed, straight to the handler on the
// I/O thread, which saves two thread hops per request. ZeroMQ buffers at most
// receive_hwm_messages per connection before it stops reading it (TCP
// backpressure).
//
// With options.data_link: messages to a peer go through a TCP connection
// beside ZeroMQ once the peer has connected it (transport/data_link.h has
// the protocol; under CURVE the connection is authenticated with the same
// keys and encrypted, transport/link_crypto.h): written by the sending
// thread with one sendmsg straight from the frames (the I/O thread goes on
// where the socket was full), read by the receiver's I/O thread straight
// into the frames' final buffers (a pull reply into the caller's, see
// ExpectReply), with no ZeroMQ thread in between. The bounds, priorities
// and checks above hold for it alike. Links are two-way where both ends
// allow it (data_link_two_way): the node that connected a link reads it
// too, and the other end sends its own messages to it on the same
// connection instead of connecting one of its own.
//
// Peers on the same host: with options.shm_bytes > 0, data frames of at
// least kShmMinFrameBytes to a peer that has mapped this process's arena
// travel through it (one memcpy instead of two kernel copies; transport/
// shm.h has the handshake). Receivers see ordinary frames.
#ifndef PSTRAIN_TRANSPORT_TRANSPORT_H_
#define PSTRAIN_TRANSPORT_TRANSPORT_H_

#include <poll.h>
#include <zmq.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <queue>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "transport/curve.h"
#include "transport/data_link.h"
#include "transport/gate.h"
#include "transport/message.h"
#include "transport/shm.h"
#include "transport/shm_link.h"
#include "util/blocking_queue.h"
#include "util/mutex.h"

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
  // Validated messages waiting in each receive queue; when full, the
  // transport stops reading the socket (backpressure through TCP).
  size_t incoming_capacity = 4096;
  // Largest accepted incoming message part (ZMQ_MAXMSGSIZE); a larger one
  // drops the connection. Also what one connection can make this transport
  // hold before it has authenticated (one handshake frame).
  int64_t max_frame_bytes = int64_t{1} << 31;
  // Incoming connections open at once (authenticated or not); one more is
  // closed as it arrives. Bounds, with max_frame_bytes, what connections
  // that never authenticate can make this transport hold in total.
  int max_incoming_connections = 1024;
  // A connection that has not finished its handshake by then is dropped.
  absl::Duration handshake_timeout = absl::Seconds(10);
  // Deliver data messages to ReceiveData() (or the data handler) instead of
  // Receive().
  bool split_data = false;
  // Per-peer bound on messages queued or still being sent, and on their
  // data bytes. Send() from a thread other than the I/O thread waits while
  // adding its message would pass either bound; a message always fits into
  // an empty queue, however large.
  size_t max_queued_messages_per_peer = 4096;
  int64_t max_queued_bytes_per_peer = int64_t{256} << 20;
  // Data bytes per peer handed to ZeroMQ at a time (at least one message);
  // the rest waits in priority order.
  int64_t send_window_bytes = int64_t{16} << 20;
  // Messages ZeroMQ buffers per connection, each way (ZMQ_SNDHWM on the
  // outgoing sockets, ZMQ_RCVHWM on the incoming one).
  int send_hwm_messages = 1000;
  int receive_hwm_messages = 256;
  // Size of the shared-memory arena for big frames to peers on this host
  // (virtual; pages are used as blocks touch them). 0: no shared memory
  // either way (every byte goes over the socket). A frame that does not
  // fit into the free part of the arena goes over the socket.
  int64_t shm_bytes = 0;
  // ZeroMQ CURVE (transport/curve.h): every connection, both ways, is
  // encrypted and authenticated with `curve_keys`, this node's key pair.
  // Incoming connections are admitted only from clients whose public key is
  // curve_keys.public_key or one of curve_accepted_keys (a ZAP handler
  // checks each handshake; refusals are counted). Outgoing connections
  // expect the peer to hold curve_server_key (empty: curve_keys.public_key,
  // as when every node of the job derives the same keys from the token).
  // Off: plaintext, the token in each header is the only gate.
  bool curve = false;
  CurveKeyPair curve_keys;
  std::set<std::string> curve_accepted_keys;
  std::string curve_server_key;
  // The key pair the incoming socket listens with (empty: curve_keys), for
  // per-node keys (ReadCurveKeysDir: one server key, a key per node).
  CurveKeyPair curve_router_keys;
  // The TCP data link (above, transport/data_link.h), on either wire: with
  // CURVE it is encrypted and admits only the keys ZeroMQ admits.
  bool data_link = true;
  // Encrypted links: AES-256-GCM where both ends run it (false:
  // ChaCha20-Poly1305 always, for tests and comparisons).
  bool data_link_aes_gcm = true;
  // Tests: the data port offered to peers (a relay in front of the
  // listener); 0: the listener's own.
  int data_link_offered_port = 0;
  // Two-way links (transport/data_link.h): send to a peer on the link it
  // connected to this node, and read what a peer sends back on a link this
  // node connected. Who connects: a node that gets a peer's offer (its data
  // port) connects at once unless it offered its own port to that peer
  // first; then it waits up to kLinkAdoptGrace for the peer's connection
  // (which carries both directions) and connects itself only if none came.
  // In a request and reply exchange the replier thus connects and the
  // requester adopts. False: every link carries one direction, each node
  // connects its own (as before).
  bool data_link_two_way = true;
  // When a small message (64 KiB of frames at most) comes in less than
  // twice this after the one before, the I/O thread keeps polling without
  // sleeping for this long after it, yielding the core to any other
  // runnable thread between polls: the next message of a request and
  // reply exchange is then seen without the kernel waking the thread from
  // sleep (an interrupt to an idle core, then a switch). It costs at most
  // this much CPU time after such a message, and nothing after a message
  // that ends a longer silence or a big one. Zero: sleep in poll() at
  // once.
  absl::Duration io_spin = absl::Microseconds(50);
};

// How long a node that offered its data port to a peer waits for that
// peer's link (to send on it too) before it connects its own
// (TransportOptions::data_link_two_way).
inline constexpr absl::Duration kLinkAdoptGrace = absl::Seconds(1);

struct TransportStats {
  int64_t received = 0;
  int64_t sent = 0;
  int64_t dropped_malformed = 0;  // Header missing/unparsable, sizes off.
  int64_t dropped_bad_token = 0;
  // Messages whose header claims a sender (a connected peer's id) other
  // than the node whose connection they came in on: nobody may speak for
  // another node.
  int64_t dropped_wrong_sender = 0;
  // Incoming connections dropped before they authenticated: handshakes
  // that failed (no or a wrong job token, not a pstrain peer, too slow),
  // and connections closed because max_incoming_connections were open (see
  // transport/gate.h for what is not counted).
  int64_t connections_refused = 0;
  int64_t connections_over_limit = 0;
  // Largest number of data bytes ever queued for one peer: at most
  // max_queued_bytes_per_peer (or one message, when that is larger), plus
  // what a data handler queued (its replies are never held back).
  int64_t max_queued_bytes = 0;
  // Messages waiting now: queued for or handed to ZeroMQ and not yet sent,
  // over every peer, plus received and not yet taken (Receive, the data
  // queue).
  int64_t queued_messages = 0;
  // Data frames sent and received through shared memory, and frames that
  // went over the socket because the arena was full.
  int64_t shm_frames_sent = 0;
  int64_t shm_frames_received = 0;
  int64_t shm_frames_inline = 0;
  // CURVE handshakes refused by the ZAP handler (a key the job does not
  // know); nothing such a connection sends is read. Also counted in
  // connections_refused.
  int64_t refused_unauthenticated = 0;
  // Messages sent and received through TCP data links, and links dropped
  // because they broke (a peer that died or cut a message short, a socket
  // error, bad framing; also counted in dropped_malformed for the latter).
  // Refused link hellos count in connections_refused.
  int64_t link_messages_sent = 0;
  int64_t link_messages_received = 0;
  int64_t link_errors = 0;
  // Encrypted links: handshakes that failed (a key the job does not know,
  // a listener without the server key, garbage; also counted in
  // connections_refused or, on the connecting side, link_errors) and
  // records that failed their tag (altered, replayed, reordered; also in
  // link_errors). Each closes its connection.
  int64_t link_auth_failures = 0;
  // Links connected again after they broke (see LinkDown).
  int64_t link_reconnects = 0;
  // Links a peer connected that this node sent on too (two-way links,
  // TransportOptions::data_link_two_way), including adopted again after a
  // break.
  int64_t links_adopted = 0;
  // I/O loop turns that polled without sleeping because messages came in
  // close together (TransportOptions::io_spin).
  int64_t io_spin_turns = 0;
};

// Turns CURVE on in `o` with the job's keys derived from o->token (every
// node of the job derives the same; DeriveJobKeys).
absl::Status UseJobCurveKeys(TransportOptions* o);

// Turns CURVE on in `o` with the per-node keys of `dir` (ReadCurveKeysDir):
// listens with the server key, connects with this node's key expecting the
// server key, admits only the keys of dir/clients.
absl::Status UseCurveKeysDir(const std::string& dir, TransportOptions* o);

// Thread-safe: Send/Connect/Receive from any thread.
class Transport {
 public:
  // Called on the I/O thread with each validated data message. It may call
  // Send()/SendBatch() (which never wait there: replies are queued even
  // beyond the bound, which the requests that caused them already bound),
  // and must not block or call SetDataHandler().
  using DataHandler = std::function<void(Message)>;

  // Binds and starts the I/O thread. Errors name host:port and the reason.
  static absl::StatusOr<std::unique_ptr<Transport>> Create(
      const TransportOptions& options);
  ~Transport();  // Stop()s.
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  // "host:port" peers use to reach this transport.
  const std::string& address() const { return address_; }
  int port() const { return port_; }
  // The TCP data link listener's port; 0 without links (CURVE, or off).
  int data_port() const { return data_port_; }

  // Registers where the data frames of the RESPONSE to `request_id` go:
  // frame i, when it arrives through a data link and has exactly
  // frames[i].size() bytes, is read straight into frames[i], and the
  // delivered Message's frame i then points there (no copy). Other frames
  // arrive as usual. The memory must stay valid until CancelReply(
  // request_id) returns, which the caller must call once the reply came or
  // it gave up on it (after that nothing is written there). No-op without
  // links. Thread-safe.
  void ExpectReply(uint64_t request_id,
                   std::vector<absl::Span<char>> frames) const;
  void CancelReply(uint64_t request_id) const;

  // Opens the outgoing socket to `peer` (an id chosen by the caller) at
  // "host:port". Idempotent for the same endpoint. Errors name the
  // endpoint and the reason. Returns without waiting for the peer (ZeroMQ
  // connects in the background); DeadlineExceeded if the I/O thread does
  // not take the request within 30 s.
  absl::Status Connect(int peer, const std::string& host_port)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Connect(), but a peer already connected at another endpoint is moved
  // there (a node that replaced a dead one under the same id,
  // --recovery=replace): its socket and its data link are closed and the
  // messages still queued for it are dropped; messages it sends from then
  // on are taken from the new endpoint only (the sender check). The old
  // Peer is kept until the transport stops (messages handed to ZeroMQ
  // still count against it when released).
  absl::Status Reconnect(int peer, const std::string& host_port)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Queues `msg` for `peer`; the token is filled in here. Waits for room
  // in the peer's queue until `deadline` (DeadlineExceeded, naming the
  // peer and what is queued). FailedPrecondition if the peer was never
  // connected, Cancelled after Stop(). Completes asynchronously (the
  // transport keeps the frames until ZeroMQ has sent them).
  absl::Status Send(int peer, Message msg, absl::Time deadline);
  // Queues several messages at once, waiting until every peer involved has
  // room for its share: among them, higher priority is sent first. All or
  // nothing: on error none is queued.
  absl::Status SendBatch(std::vector<std::pair<int, Message>> batch,
                         absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);

  // The next validated incoming control message (REGISTER, ADDRESS_BOOK,
  // BARRIER, HEARTBEAT, ABORT, SHUTDOWN), waiting until `deadline`
  // (DeadlineExceeded) or Stop() (Cancelled). With `split_data` off (the
  // default), every message comes here.
  absl::StatusOr<Message> Receive(absl::Time deadline);
  // With options.split_data and no handler: the next data message
  // (everything else).
  absl::StatusOr<Message> ReceiveData(absl::Time deadline);
  // With options.split_data: delivers data messages to `handler` on the I/O
  // thread from now on, in priority order among those read together (data
  // queued before goes first); nullptr goes back to the queue. Returns
  // after any running call of the previous handler has finished, so its
  // owner may be destroyed. REQUIRES: not called from a handler.
  void SetDataHandler(DataHandler handler) ABSL_LOCKS_EXCLUDED(handler_mu_);
  // Closes the data queue (consumers get Cancelled once it is drained).
  void CloseData() { data_.Close(); }

  TransportStats stats() const ABSL_LOCKS_EXCLUDED(mu_);

  // A writable frame of `bytes` in this process's shared-memory arena, for
  // data sent again and again (a server's weights): to a peer that mapped
  // the arena it travels by reference, without a copy; to others like any
  // frame. An empty frame when shared memory is off or the arena has no
  // room. The block stays valid after Stop() while the frame lives.
  Frame NewSharedFrame(size_t bytes) const;
  // Whether a peer still reads `frame` (a NewSharedFrame, or a frame
  // received through shared memory) from a message sent by reference: the
  // holder must not write it until this is false. False for other frames.
  bool SharedFrameInUse(const Frame& frame) const;

  // While at least one caller is between BeginBusyPoll() and EndBusyPoll()
  // (waiting for a reply, briefly), the I/O thread polls without sleeping,
  // yielding its core, so a reply is read without a wake-up. Thread-safe.
  void BeginBusyPoll() const {
    busy_pollers_.fetch_add(1, std::memory_order_relaxed);
  }
  void EndBusyPoll() const {
    busy_pollers_.fetch_sub(1, std::memory_order_relaxed);
  }

  // Stops the I/O thread, closes the sockets (unsent messages are dropped)
  // and wakes every waiting Send (Cancelled). Idempotent.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Peer;
  struct IncomingLink;
  // Hands each message of `batch` to shm_->Prepare with its peer's slot.
  void PrepareShm(std::vector<std::pair<int, Message>>* batch)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Whether a message claiming `sender` may come in on the connection whose
  // routing id is `from`: the connected peer of that id (a server or a
  // worker; see Connect) must be the node at `from`. Unknown ids pass (the
  // roles check them against their address book).
  bool SenderMatches(int64_t sender, const std::string& from)
      ABSL_LOCKS_EXCLUDED(mu_);
  struct Outgoing {
    int priority;
    uint64_t seq;
    int64_t bytes;  // Data frame bytes.
    Message msg;
  };
  // Order of the send queue (a max-heap): true when `a` goes after `b`,
  // i.e. lower priority, or equal priority and queued later.
  struct GoesAfter {
    bool operator()(const std::unique_ptr<Outgoing>& a,
                    const std::unique_ptr<Outgoing>& b) const {
      if (a->priority != b->priority) return a->priority < b->priority;
      return a->seq > b->seq;
    }
  };
  struct ConnectRequest {
    int peer;
    std::string endpoint;
    bool replace = false;  // Reconnect().
    std::promise<absl::Status> done;
  };
  class InFlight;  // One message handed to ZeroMQ, until its frames are
                   // released.

  explicit Transport(const TransportOptions& options);
  void Loop();
  // One wait of the loop: zmq_poll(items, timeout_ms), but with a single
  // poll() over the sockets' ZMQ_FDs while *zmq_settled (the last call
  // found no socket ready). Updates *zmq_settled; `pfds` is scratch.
  int PollItems(std::vector<zmq_pollitem_t>* items, long timeout_ms,
                bool* zmq_settled, std::vector<pollfd>* pfds);
  void Wake();
  bool OnIoThread() const;
  void DrainCommands() ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status ConnectOrReplace(int peer, const std::string& host_port,
                                bool replace) ABSL_LOCKS_EXCLUDED(mu_);
  // Hands queued messages to ZeroMQ while the peers' windows allow.
  void PumpSends() ABSL_LOCKS_EXCLUDED(mu_);
  // False when ZeroMQ cannot take the message now (it stays queued).
  bool SendNow(Peer* peer, Outgoing* out) ABSL_LOCKS_EXCLUDED(mu_);
  void Released(Peer* peer, int64_t bytes) ABSL_LOCKS_EXCLUDED(mu_);
  void ReadIncoming() ABSL_LOCKS_EXCLUDED(mu_, handler_mu_);
  // Appends the data messages queued for ReceiveData to `batch`.
  void TakeQueuedData(std::vector<Message>* batch);
  void Deliver(std::vector<Message>* batch)
      ABSL_LOCKS_EXCLUDED(mu_, handler_mu_);
  // Routes a decoded message from `identity` (I/O thread): checks its
  // sender and shared-memory frames, then queues it or adds it to `batch`
  // (for the handler). False when it was dropped.
  bool Admit(Message msg, const std::string& identity, bool to_handler,
             std::vector<Message>* batch) ABSL_LOCKS_EXCLUDED(mu_);

  // Data links (I/O thread unless said otherwise).
  absl::Status ListenForLinks();
  // A data_port offer from `identity`: connect to it unless done.
  void MaybeConnectLink(const std::string& identity, int data_port)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The connect of `peer`'s link finished (or failed, or timed out).
  void FinishConnect(Peer* peer, bool timed_out) ABSL_LOCKS_EXCLUDED(mu_);
  // Encrypted links: the listener's answer to the handshake can be read
  // (or the handshake timed out).
  void ContinueHandshake(Peer* peer, bool timed_out) ABSL_LOCKS_EXCLUDED(mu_);
  // Puts `peer`'s link down (LinkDown) and logs why, naming `port`: every
  // failure that is not retried, and of a series of retried ones the first
  // and every tenth, at WARNING (the rest at VLOG(1)).
  void LinkFailed(Peer* peer, int port, const std::string& why, bool retry)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The connecting side gives up on `peer`'s link: closes its socket, logs
  // `why`; later messages go through ZeroMQ (see LinkDown for `retry`).
  void LinkConnectFailed(Peer* peer, const std::string& why, bool retry)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Connects `peer`'s link to peer->data_port (state kConnecting).
  void StartLinkConnect(Peer* peer) ABSL_LOCKS_EXCLUDED(mu_);
  // Any thread: `peer`'s link is down (kFailed); with `retry`, the I/O
  // thread connects it again after a back-off (0.5 s doubling to 30 s),
  // else its messages stay on ZeroMQ (a failed handshake: keys do not
  // change).
  void LinkDown(Peer* peer, bool retry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Puts `peer`'s link up on `fd` (hello first). `conn` names the
  // connection. A link this node connected (`adopted` false) gets a
  // reverse reader on a dup of `fd` when two-way links are on (`opener`
  // opens the listener's records, null for plaintext). `adopted`: a link
  // the peer connected, read by an IncomingLink already.
  void LinkUp(Peer* peer, int fd, std::unique_ptr<LinkRecordCipher> cipher,
              std::string preface, uint64_t conn, bool adopted,
              std::unique_ptr<LinkRecordCipher> opener)
      ABSL_LOCKS_EXCLUDED(mu_);
  // After reading `in`'s hello: sends to its node on the same connection
  // when the node's own link is neither up nor being connected.
  void MaybeAdopt(IncomingLink* in) ABSL_LOCKS_EXCLUDED(mu_);
  // `in` is being dropped: if a writer to its paired peer shares its
  // connection, that writer goes too (its messages to ZeroMQ until a link
  // is up again).
  void Unpair(IncomingLink* in) ABSL_LOCKS_EXCLUDED(mu_);
  // Any thread: hands `peer`'s queued messages to its link and writes
  // what the socket takes.
  // The highest-priority message queued for `p` if the send window has
  // room for it (taking that room), else null.
  std::unique_ptr<Outgoing> PopWithinWindow(Peer* p)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PumpLink(Peer* peer) ABSL_LOCKS_EXCLUDED(mu_);
  void AcceptLinks();
  // Reads link `in`; false when it is to be closed.
  bool ServeLink(IncomingLink* in, std::vector<Message>* batch)
      ABSL_LOCKS_EXCLUDED(mu_, handler_mu_);
  bool IsPeerEndpoint(const std::string& identity) ABSL_LOCKS_EXCLUDED(mu_);
  // Closes `p`'s link, its socket being connected and its handshake; what
  // the link had not sent is dropped.
  void CloseLinkOf(Peer* p) ABSL_LOCKS_EXCLUDED(mu_);
  void CloseLinks() ABSL_LOCKS_EXCLUDED(mu_);

  const TransportOptions options_;
  std::unique_ptr<ShmLink> shm_;  // Null: no shared memory.
  std::unique_ptr<Gate> gate_;    // I/O thread only (after Create).
  std::string address_;
  int port_ = 0;
  int link_listen_fd_ = -1;  // I/O thread only (after Create).
  // Keys of encrypted links (null: plaintext links); set in Create.
  std::unique_ptr<LinkKeys> link_keys_;
  int data_port_ = 0;
  // Incoming data links (I/O thread only).
  std::vector<std::unique_ptr<IncomingLink>> links_in_;
  // Messages received through ZeroMQ, by sender identity (I/O thread
  // only): a link's messages wait for the count its hello names.
  std::map<std::string, uint64_t> zmq_received_;
  // Messages of at most kSpinMessageBytes taken in (I/O thread only): what
  // starts the I/O thread's spin (TransportOptions::io_spin). A bigger one
  // arrives over longer than the spin lasts, and spinning while it does
  // would only take the core from whoever sends or decrypts it.
  int64_t small_received_ = 0;
  mutable ReplyDests dests_;
  void* ctx_ = nullptr;
  void* router_ = nullptr;  // I/O thread only (after Create).
  // Answers the CURVE handshakes of router_ (options_.curve); stopped after
  // the I/O thread, before the context ends.
  std::unique_ptr<ZapHandler> zap_;
  int wake_fd_ = -1;
  std::atomic<bool> wake_pending_{false};
  std::atomic<std::thread::id> io_thread_id_{};

  mutable Mutex mu_;
  CondVar room_;  // Signalled when queued messages leave.
  // The map; the fields of each Peer but its socket are guarded by mu_ too
  // (documented at Peer: the analysis cannot name the mutex from there).
  std::map<int, std::unique_ptr<Peer>> peers_ ABSL_GUARDED_BY(mu_);
  // Peers replaced by Reconnect(): released messages may still name them.
  std::vector<std::unique_ptr<Peer>> retired_ ABSL_GUARDED_BY(mu_);
  std::deque<std::unique_ptr<ConnectRequest>> connects_ ABSL_GUARDED_BY(mu_);
  uint64_t seq_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  int room_waiters_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t max_queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;

  // Held while the handler runs, which may Send() (taking mu_).
  Mutex handler_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  DataHandler handler_ ABSL_GUARDED_BY(handler_mu_);
  std::atomic<bool> has_handler_{false};

  BlockingQueue<Message> incoming_;
  BlockingQueue<Message> data_;
  std::atomic<bool> stop_{false};
  mutable std::atomic<int> busy_pollers_{0};
  bool retry_sends_ = false;  // I/O thread only: ZeroMQ was full.
  std::atomic<int64_t> received_{0}, sent_{0}, malformed_{0}, bad_token_{0},
      wrong_sender_{0}, link_sent_{0}, link_received_{0}, link_errors_{0},
      link_refused_{0}, link_auth_failures_{0}, link_reconnects_{0},
      links_adopted_{0}, io_spin_turns_{0};
  uint64_t next_conn_ = 0;  // I/O thread: names link connections.
  std::thread thread_;
};

// ZeroMQ receives every message into a fresh malloc'd buffer (up to
// KVStoreOptions::max_message_bytes, 4 MiB). glibc serves such sizes from
// mmap or trims them back to the kernel on free, so every message then
// page-faults its buffer in again (ps-lite's slowdown above 32 MiB). This
// makes glibc keep freed buffers of up to 32 MiB for reuse: no mmap below
// 32 MiB, no trimming until 256 MiB are free. Process-wide; call it once
// at the start of main() of a process that moves tensors (server, worker,
// kv_bench). Returns false when the C library refused (not glibc).
bool TuneMallocForMessages();

}  // namespace transport
}  // namespace pstrain

#endif  // PSTRAIN_TRANSPORT_TRANSPORT_H_
