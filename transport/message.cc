#include "transport/message.h"

#include <cstdint>
#include <cstring>
#include <utility>

#include "glog/logging.h"

namespace pstrain {
namespace transport {
namespace {

// Under ThreadSanitizer a received frame is copied once, with the reads of
// ZeroMQ's buffer ignored: ZeroMQ allocates it on its I/O thread and hands
// it over through lock-free pipes that TSan cannot see (libzmq is not
// instrumented), so reads of a reused buffer would each be reported as a
// race with that allocation.
#if defined(__SANITIZE_THREAD__)
extern "C" void AnnotateIgnoreReadsBegin(const char* file, int line);
extern "C" void AnnotateIgnoreReadsEnd(const char* file, int line);
constexpr bool kCopyReceived = true;
void IgnoreReadsBegin() { AnnotateIgnoreReadsBegin(__FILE__, __LINE__); }
void IgnoreReadsEnd() { AnnotateIgnoreReadsEnd(__FILE__, __LINE__); }
#else
constexpr bool kCopyReceived = false;
void IgnoreReadsBegin() {}
void IgnoreReadsEnd() {}
#endif

// What a sent frame keeps alive until ZeroMQ releases it.
struct Hold {
  std::shared_ptr<const void> keep_alive;
  std::string owned;
  ReleaseListener* listener = nullptr;
};

// zmq_msg_init_data's release callback: drops the buffer, then tells the
// listener.
void ReleaseHold(void* /*data*/, void* hint) {
  auto* hold = static_cast<Hold*>(hint);
  ReleaseListener* listener = hold->listener;
  delete hold;
  if (listener != nullptr) listener->FrameReleased();
}

}  // namespace

Frame::Frame() = default;

Frame::~Frame() {
  if (has_zmq_) zmq_msg_close(&zmq_);
}

Frame::Frame(Frame&& o) noexcept { *this = std::move(o); }

Frame& Frame::operator=(Frame&& o) noexcept {
  if (this == &o) return *this;
  if (has_zmq_) zmq_msg_close(&zmq_);
  has_zmq_ = o.has_zmq_;
  if (has_zmq_) {
    zmq_msg_init(&zmq_);
    zmq_msg_move(&zmq_, &o.zmq_);
    zmq_msg_close(&o.zmq_);
    o.has_zmq_ = false;
  }
  keep_alive_ = std::move(o.keep_alive_);
  owned_ = std::move(o.owned_);
  size_ = o.size_;
  writable_ = o.writable_;
  o.writable_ = false;
  data_ = has_zmq_ ? static_cast<const char*>(zmq_msg_data(&zmq_))
                   : (!owned_.empty() ? owned_.data() : o.data_);
  o.data_ = nullptr;
  o.size_ = 0;
  return *this;
}

Frame Frame::Copy(const void* data, size_t size) {
  Frame f;
  f.owned_.assign(static_cast<const char*>(data), size);
  f.data_ = f.owned_.data();
  f.size_ = size;
  return f;
}

Frame Frame::Own(std::string bytes) {
  Frame f;
  f.owned_ = std::move(bytes);
  f.data_ = f.owned_.data();
  f.size_ = f.owned_.size();
  return f;
}

Frame Frame::Borrow(const void* data, size_t size,
                    std::shared_ptr<const void> keep_alive) {
  Frame f;
  f.data_ = static_cast<const char*>(data);
  f.size_ = size;
  f.keep_alive_ = std::move(keep_alive);
  return f;
}

Frame Frame::View(char* data, size_t size,
                  std::shared_ptr<const void> keep_alive) {
  Frame f = Borrow(data, size, std::move(keep_alive));
  f.writable_ = true;
  return f;
}

Frame Frame::FromZmq(zmq_msg_t* msg) {
  const void* data = zmq_msg_data(msg);
  if (kCopyReceived ||
      reinterpret_cast<uintptr_t>(data) % alignof(double) != 0) {
    // ZeroMQ may hand out data at any offset of its receive buffer; tensors
    // are read as floats, so an unaligned frame is copied once.
    IgnoreReadsBegin();
    Frame f = Copy(data, zmq_msg_size(msg));
    IgnoreReadsEnd();
    zmq_msg_close(msg);
    zmq_msg_init(msg);
    return f;
  }
  Frame f;
  f.has_zmq_ = true;
  zmq_msg_init(&f.zmq_);
  zmq_msg_move(&f.zmq_, msg);
  f.data_ = static_cast<const char*>(zmq_msg_data(&f.zmq_));
  f.size_ = zmq_msg_size(&f.zmq_);
  return f;
}

const char* Frame::data() const { return data_; }
size_t Frame::size() const { return size_; }

char* Frame::mutable_data() {
  if (has_zmq_) return static_cast<char*>(zmq_msg_data(&zmq_));
  if (!owned_.empty()) return owned_.data();
  if (writable_) return const_cast<char*>(data_);
  return nullptr;
}

bool Frame::ReleaseTo(zmq_msg_t* msg, ReleaseListener* listener) {
  bool told = false;
  if (has_zmq_) {
    // zmq_msg_move releases the destination's old content: it must be a
    // message, and the caller's need not be initialised.
    CHECK_EQ(zmq_msg_init(msg), 0);
    CHECK_EQ(zmq_msg_move(msg, &zmq_), 0);
    zmq_msg_close(&zmq_);
    has_zmq_ = false;
  } else if (size_ == 0) {
    CHECK_EQ(zmq_msg_init_size(msg, 0), 0);
  } else if (keep_alive_ == nullptr && owned_.empty()) {
    // Borrowed without an owner: copied, as nothing keeps the bytes alive.
    CHECK_EQ(zmq_msg_init_size(msg, size_), 0);
    std::memcpy(zmq_msg_data(msg), data_, size_);
  } else {
    auto* hold = new Hold;
    hold->listener = listener;
    const char* data = data_;
    if (keep_alive_ != nullptr) {
      hold->keep_alive = std::move(keep_alive_);
    } else {
      hold->owned = std::move(owned_);
      data = hold->owned.data();  // Short strings live inside the string.
    }
    CHECK_EQ(zmq_msg_init_data(msg, const_cast<char*>(data), size_, ReleaseHold,
                               hold),
             0);
    told = listener != nullptr;
  }
  keep_alive_.reset();
  owned_.clear();
  writable_ = false;
  data_ = nullptr;
  size_ = 0;
  return told;
}

}  // namespace transport
}  // namespace pstrain
