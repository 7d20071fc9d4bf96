// The TCP data link (issue #16): a TCP connection per peer beside ZeroMQ
// (encrypted under CURVE, below), so that a message is written by the
// thread that sends it (plaintext: one sendmsg straight from its frames)
// and read by the receiver's I/O thread straight into its destination (a
// pull reply into the buffer the caller registered, Transport::
// ExpectReply), without ZeroMQ's own I/O threads and receive buffers in
// between.
//
// Setup. A transport with links listens on an ephemeral TCP port of its
// bind host. Every data message it sends through ZeroMQ carries that port
// (Header.data_port) until the receiver has connected: the receiver then
// connects to the port (on the host of the sender's advertised address)
// and opens with a hello carrying the job token, its own advertised address
// (the routing id ZeroMQ messages from it carry) and how many messages it
// has sent to this node through ZeroMQ. From then on everything it sends to
// this node goes through the link; the receiver of the link delivers the
// link's messages only after that many ZeroMQ messages from the same node
// (or after the handshake timeout, with a warning), so a message never
// overtakes one sent before it.
//
// Two-way links. A connector whose hello sets kLinkHelloTwoWay reads the
// connection too. The listener may then send its own messages to the
// connector on it (it "adopts" the link) instead of connecting a second
// one: it writes its own hello (its identity, which must be the node the
// connector connected to, and its ZeroMQ count) and then messages, framed
// alike, the other way. One connection then carries both directions, so the
// acknowledgements of one ride on the other's data instead of taking
// packets of their own. A listener that does not adopt never writes; the
// connector's reading side then waits, idle, until the connection closes.
// Either end that drops the connection (a bad message, a broken write)
// shuts it down both ways, so the other end sees it at once.
//
// Framing, little-endian:
//   hello:   u32 kLinkHelloMagic, u32 token bytes, u32 identity bytes,
//            u32 flags (kLinkHelloTwoWay; other bits 0), u64 ZeroMQ
//            messages sent before, token, identity
//   message: u32 kLinkMessageMagic, u32 header bytes, u32 frames, u32 0,
//            u64 size of each frame, the serialized proto::Header, frames
// A connection whose hello is malformed, carries another token or names a
// node this transport has no connection to, or that sends a preamble with
// the wrong magic or sizes past the bounds below, is closed (counted and
// logged, naming the peer). Each message is then decoded and checked like
// a ZeroMQ one (transport/wire.h).
//
// Under CURVE (LinkKeys given) the connection first runs the handshake of
// transport/link_crypto.h, which authenticates both ends with the job's
// CURVE keys (the listener admits only keys the ZAP handler accepts), and
// everything above (hello included) then travels as AEAD records (a
// two-way link's reverse stream under its own key): the
// writer encrypts on the thread that writes (large frames straight from
// their memory, small pieces gathered) into a reusable buffer; the reader
// checks each record's tag before any of its bytes are used, and decrypts
// a record that belongs wholly to a frame straight into the frame's
// destination (a pull reply's registered buffer). A bad handshake is a
// refusal, a record that fails its tag an error (auth_failed()): either
// closes the connection.
#ifndef PSTRAIN_TRANSPORT_DATA_LINK_H_
#define PSTRAIN_TRANSPORT_DATA_LINK_H_

#include <sys/uio.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "transport/link_crypto.h"
#include "transport/message.h"
#include "util/mutex.h"

namespace pstrain {
namespace transport {

inline constexpr uint32_t kLinkHelloMagic = 0x484c5350;    // "PSLH"
inline constexpr uint32_t kLinkMessageMagic = 0x4d4c5350;  // "PSLM"
inline constexpr size_t kLinkHelloFixedBytes = 24;
// Hello flag: the connector reads what the listener sends back (two-way).
inline constexpr uint32_t kLinkHelloTwoWay = 1;
inline constexpr size_t kLinkPreambleBytes = 16;
inline constexpr uint32_t kLinkMaxTokenBytes = 1024;
inline constexpr uint32_t kLinkMaxIdentityBytes = 1024;
inline constexpr uint32_t kLinkMaxFrames = 1 << 16;
inline constexpr uint32_t kLinkMaxHeaderBytes = 16 << 20;
// What a link reader reads ahead when it wants fewer bytes.
inline constexpr size_t kLinkReadAheadBytes = 64 << 10;
// SO_RCVLOWAT while the rest of a plaintext frame is at least twice this
// (LinkReader::SetLowWater).
inline constexpr int kLinkLowWaterBytes = 64 << 10;

// The hello a node sends first on its direction of a link.
std::string EncodeLinkHello(const std::string& token,
                            const std::string& identity, uint64_t zmq_before,
                            uint32_t flags = 0);

// The preamble, frame sizes and header of a message with `header`
// (serialized) and `frames`: written before the frames' bytes.
std::string EncodeLinkHead(const std::string& header,
                           const std::vector<Frame>& frames);

// A pull reply's destination: where each data frame of the RESPONSE with a
// given request id is read to, when its size matches (else into a fresh
// buffer). Shared between the registry and the connection reading into it;
// `cancelled` (guarded by the registry's mutex) stops further writes.
struct ReplyDest {
  std::vector<absl::Span<char>> frames;
  bool cancelled = false;
};

// Destinations by request id (Transport::ExpectReply). Thread-safe.
class ReplyDests {
 public:
  void Add(uint64_t request_id, std::vector<absl::Span<char>> frames)
      ABSL_LOCKS_EXCLUDED(mu_);
  // After this returns, nothing is written into the destination of
  // `request_id` any more. Idempotent.
  void Cancel(uint64_t request_id) ABSL_LOCKS_EXCLUDED(mu_);
  // Removes and returns the destination of `request_id` (null: none).
  std::shared_ptr<ReplyDest> Take(uint64_t request_id) ABSL_LOCKS_EXCLUDED(mu_);
  size_t size() const ABSL_LOCKS_EXCLUDED(mu_);
  // Calls read(p, len) to read up to `n` bytes (non-blocking) into frame
  // `i` of `dest` at `offset`, unless the destination was cancelled
  // (returns -2 then, without reading). Otherwise read()'s result.
  ssize_t ReadInto(ReplyDest* dest, size_t i, size_t offset, size_t n,
                   const std::function<ssize_t(char*, size_t)>& read)
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  mutable Mutex mu_;
  std::map<uint64_t, std::shared_ptr<ReplyDest>> by_id_ ABSL_GUARDED_BY(mu_);
  // Taken by a connection and not yet complete, so Cancel can mark them.
  std::map<uint64_t, std::shared_ptr<ReplyDest>> taken_ ABSL_GUARDED_BY(mu_);
  friend class LinkReader;
  void Done(uint64_t request_id) ABSL_LOCKS_EXCLUDED(mu_);
};

// The reading side of a link connection: reads the hello, then message
// after message, without blocking, as bytes arrive. Owned by the I/O
// thread. Destroying it shuts the connection down both ways (a writer on
// the same connection then fails) and closes the socket.
class LinkReader {
 public:
  // `check_identity`: whether a hello may name this node (a connected
  // peer). `max_frame_bytes`: the largest frame accepted. `keys`: run the
  // encrypted link's handshake with them first (null: plaintext); must
  // outlive the reader.
  LinkReader(int fd, std::string token, int64_t max_frame_bytes,
             ReplyDests* dests,
             std::function<bool(const std::string&)> check_identity,
             const LinkKeys* keys = nullptr);
  // The connector's side of a two-way link: reads what the listener sends
  // back on `fd` (a dup of the connector's socket). No handshake: `opener`
  // opens the listener's records (null: plaintext). The hello must name
  // `identity` (the node connected to); a connection that closes before
  // any byte came is kClosed (the listener never adopted it).
  static std::unique_ptr<LinkReader> Reverse(
      int fd, std::string token, int64_t max_frame_bytes, ReplyDests* dests,
      std::string identity, std::unique_ptr<LinkRecordCipher> opener);
  ~LinkReader();
  LinkReader(const LinkReader&) = delete;
  LinkReader& operator=(const LinkReader&) = delete;

  enum class State {
    kAgain,    // Nothing more to read now.
    kMessage,  // *parts holds one message: header, then data frames.
    kClosed,   // The peer closed between messages.
    kError,    // Broken: *error says why (the connection must go).
    kRefused,  // The hello was refused: *error says why.
  };
  // Reads what is available. On kMessage the parts are ready for Decode().
  State Read(std::vector<Frame>* parts, std::string* error);

  int fd() const { return fd_; }
  // Bytes read ahead and not yet taken: Read() has more to do without the
  // socket becoming readable.
  bool buffered() const;
  // Called when poll() finds the socket readable. A buffered read that came
  // back short has drained the socket: until the next Polled(), Read()
  // reports kAgain there instead of asking the kernel again (a system
  // call each, in a small round trip's path).
  void Polled() { drained_ = false; }
  bool hello_done() const {
    return stage_ != Stage::kHello && stage_ != Stage::kHelloBody &&
           stage_ != Stage::kHs1 && stage_ != Stage::kHs3;
  }
  // Whether the last kError or kRefused was cryptographic: a record that
  // failed its tag, or a handshake that did not check.
  bool auth_failed() const { return auth_failed_; }
  // The cipher of an encrypted link once its handshake is done, else null.
  const LinkRecordCipher* cipher() const { return cipher_.get(); }
  // Whether the hello said the connector reads the link too.
  bool two_way() const { return (hello_flags_ & kLinkHelloTwoWay) != 0; }
  // An encrypted link's listener: the cipher that seals records to the
  // connector (k_r), once; null before the handshake, for plaintext, or
  // when taken already.
  std::unique_ptr<LinkRecordCipher> TakeReverseCipher() {
    return std::move(reverse_);
  }
  // From the hello: the sender's advertised address and how many messages
  // it sent through ZeroMQ before the link.
  const std::string& identity() const { return identity_; }
  uint64_t zmq_before() const { return zmq_before_; }
  // Whether the last kError was bad framing (rather than a cut
  // connection or a socket error).
  bool malformed() const { return malformed_; }
  // Whether any byte of a message (or of the hello) is read and its rest is
  // not: a close now cuts a message short.
  bool mid_message() const;
  std::string Progress() const;  // "frame 2 of 3, 100 of 4096 bytes"

 private:
  enum class Stage {
    kHs1,
    kHs3,
    kHello,
    kHelloBody,
    kPreamble,
    kSizes,
    kHeader,
    kFrame
  };
  // recv() semantics (non-blocking), through the read-ahead buffer, or
  // the records of an encrypted link.
  ssize_t Recv(char* dst, size_t n);
  // Recv() of an encrypted link: plaintext of whole records only (errno
  // EBADMSG with auth_failed_ or malformed_ when one does not check).
  ssize_t RecvRecords(char* dst, size_t n);
  // The handshake stages (encrypted links).
  State Handshake(std::string* error);
  // Reads into small_ until it holds `want` bytes: 1 done, 0 again, <0 err.
  int FillSmall(size_t want, std::string* error, State* state);
  State ReadSome(std::vector<Frame>* parts, std::string* error);
  // SO_RCVLOWAT for the next wait: part of the rest of a big plaintext
  // frame (see Read), else 1.
  void SetLowWater();
  void StartFrame();

  const int fd_;
  const std::string token_;
  const int64_t max_frame_bytes_;
  ReplyDests* const dests_;
  const std::function<bool(const std::string&)> check_identity_;
  // Records to open: an encrypted link's listener, or a reverse reader
  // with an opener.
  bool encrypted_;
  bool reverse_side_ = false;  // Made by Reverse().
  uint32_t hello_flags_ = 0;
  std::unique_ptr<LinkRecordCipher> reverse_;  // See TakeReverseCipher().
  Stage stage_ = Stage::kHello;
  std::string small_;  // Hello, preamble, sizes, header being read.
  size_t small_got_ = 0;
  std::string identity_;
  uint64_t zmq_before_ = 0;
  uint32_t token_len_ = 0, identity_len_ = 0;
  uint32_t header_len_ = 0, nframes_ = 0;
  std::vector<uint64_t> sizes_;
  std::string header_;
  std::vector<Frame> frames_;
  // The frame being read: into dest_ (frame `frame_`) or into buf_.
  size_t frame_ = 0;
  size_t frame_got_ = 0;
  uint64_t request_id_ = 0;
  std::shared_ptr<ReplyDest> dest_;
  bool dest_lost_ = false;
  bool malformed_ = false;
  std::unique_ptr<char[]> ahead_;
  size_t ahead_pos_ = 0,
         ahead_end_ = 0;  // Cancelled mid-message: the reply is dropped.
  std::shared_ptr<char[]> buf_;
  // Encrypted links.
  const LinkKeys* const keys_;
  std::unique_ptr<LinkListenerHandshake> hs_;
  std::unique_ptr<LinkRecordCipher> cipher_;
  bool auth_failed_ = false;
  std::string record_error_;     // Why RecvRecords failed.
  std::unique_ptr<char[]> raw_;  // Ciphertext read, not yet opened.
  size_t raw_pos_ = 0, raw_end_ = 0;
  bool drained_ = false;           // See Polled().
  int low_water_ = 1;              // The socket's SO_RCVLOWAT.
  std::unique_ptr<char[]> plain_;  // An opened record not yet taken.
  size_t plain_pos_ = 0, plain_end_ = 0;
};

// Non-blocking writes of whole messages, in order, to one link socket.
// Thread-compatible (the owner serializes calls).
class LinkWriter {
 public:
  // Plaintext: the bytes as they are. With `cipher`: `preface` (the
  // handshake's last message) first, then everything as records sealed by
  // `cipher`.
  explicit LinkWriter(int fd, std::unique_ptr<LinkRecordCipher> cipher = {},
                      std::string preface = {});
  ~LinkWriter();  // Shuts the connection down both ways, closes the socket.
  LinkWriter(const LinkWriter&) = delete;
  LinkWriter& operator=(const LinkWriter&) = delete;

  // Called once per message: sent=true from Flush once the kernel has all
  // of it, false when the link broke before (msg: its frames, to drop).
  using Done = std::function<void(bool sent, Message* msg)>;
  // Queues `head` (EncodeLinkHead, or a hello) and `msg`'s frames.
  void Append(std::string head, Message msg, Done done);
  // Writes as much as the socket takes without blocking. OK when all or
  // some was written (pending() says what remains); Unavailable, naming
  // the error, when the socket broke: every queued message is then dropped
  // (its Done told so) and the writer must go.
  absl::Status Flush();
  // Drops every queued message (Done told), e.g. at shutdown.
  void DropAll();
  bool pending() const { return !queue_.empty() || out_pos_ < out_len_; }
  int fd() const { return fd_; }
  int64_t bytes_written() const { return bytes_written_; }

 private:
  struct Item {
    std::string head;
    Message msg;
    Done done;
    size_t written = 0;  // Of head plus frames.
    size_t total = 0;
    // Encrypted links: what is sealed into records; the piece (0: head,
    // i: frame i-1) and offset where sealing goes on.
    size_t sealed = 0;
    size_t piece = 0, piece_off = 0;
  };
  absl::Status FlushRecords();
  // What Flush does after send()/sendmsg() failed with `error` (errno):
  // nullopt on EINTR (send again); OK on EAGAIN/EWOULDBLOCK (the socket is
  // full: wait until writable); otherwise drops every queued message
  // (DropAll) and returns Unavailable naming the error.
  std::optional<absl::Status> SendFailed(int error);
  // Seals the next record of queued bytes into out_ (empty), if any.
  void SealRecords();
  const int fd_;
  std::unique_ptr<LinkRecordCipher> cipher_;
  std::unique_ptr<char[]> out_;  // Records (and the preface) to write.
  size_t out_cap_ = 0, out_pos_ = 0, out_len_ = 0;
  size_t seal_item_ = 0;  // Items before this index are sealed wholly.
  std::deque<std::unique_ptr<Item>> queue_;  // Front first.
  int64_t bytes_written_ = 0;
};

}  // namespace transport
}  // namespace pstrain

#endif  // PSTRAIN_TRANSPORT_DATA_LINK_H_
