// A pstrain message: a protobuf header plus raw tensor frames (DESIGN.md,
// Wire protocol). Frames are zero-copy both ways: a received frame is the
// ZeroMQ message itself, viewed in place and released when the Frame dies;
// a frame to send can wrap caller-owned memory kept alive by a shared_ptr.
#ifndef PSTRAIN_TRANSPORT_MESSAGE_H_
#define PSTRAIN_TRANSPORT_MESSAGE_H_

#include <zmq.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "proto/messages.pb.h"

namespace pstrain {
namespace transport {

// Told when ZeroMQ no longer needs the memory of a frame it was given by
// Frame::ReleaseTo (called on ZeroMQ's own I/O thread, or inside
// zmq_close / zmq_ctx_term when unsent messages are dropped).
class ReleaseListener {
 public:
  virtual void FrameReleased() = 0;

 protected:
  ~ReleaseListener() = default;
};

// One data frame. Move-only. Thread-compatible.
class Frame {
 public:
  Frame();
  ~Frame();
  Frame(Frame&& other) noexcept;
  Frame& operator=(Frame&& other) noexcept;
  Frame(const Frame&) = delete;
  Frame& operator=(const Frame&) = delete;

  // A frame that owns a copy of `bytes`.
  static Frame Copy(const void* data, size_t size);
  // A frame that owns `bytes` (no copy).
  static Frame Own(std::string bytes);
  // A frame over `data`, which must stay valid and unchanged while any
  // copy of `keep_alive` lives (sent without copying).
  static Frame Borrow(const void* data, size_t size,
                      std::shared_ptr<const void> keep_alive);
  // Like Borrow, but the holder may also write the bytes (a received frame
  // viewed in another process's shared memory, transport/shm.h).
  static Frame View(char* data, size_t size,
                    std::shared_ptr<const void> keep_alive);
  // Takes ownership of a received ZeroMQ message (viewed in place when its
  // data is 8-byte aligned, else copied once into aligned memory).
  static Frame FromZmq(zmq_msg_t* msg);

  const char* data() const;
  size_t size() const;
  // The bytes, writable, when the frame owns them (received, Copy, Own,
  // View); nullptr for a borrowed frame.
  char* mutable_data();
  template <typename T>
  absl::Span<const T> As() const {
    return absl::Span<const T>(reinterpret_cast<const T*>(data()),
                               size() / sizeof(T));
  }

  // Moves the frame into `*msg` for zmq_msg_send without copying its bytes
  // (an empty frame becomes an empty message). The frame is empty
  // afterwards. Returns true when `listener` (if not null) will be told,
  // exactly once, that ZeroMQ has released the memory; false when it will
  // not be told (received frames passed on, empty frames).
  bool ReleaseTo(zmq_msg_t* msg, ReleaseListener* listener = nullptr);

 private:
  bool has_zmq_ = false;
  zmq_msg_t zmq_;
  std::shared_ptr<const void> keep_alive_;
  const char* data_ = nullptr;
  size_t size_ = 0;
  bool writable_ = false;  // View.
  std::string owned_;
};

struct Message {
  proto::Header header;
  std::vector<Frame> frames;
  // Received messages: the routing id of the connection the message came
  // in on (the sending node's advertised "host:port"). Empty when sending.
  std::string from;
};

}  // namespace transport
}  // namespace pstrain

#endif  // PSTRAIN_TRANSPORT_MESSAGE_H_
