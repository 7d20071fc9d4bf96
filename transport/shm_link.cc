#include "transport/shm_link.h"

#include <utility>

#include "glog/logging.h"
#include "proto/messages.pb.h"

namespace pstrain {
namespace transport {

ShmLink::ShmLink(std::shared_ptr<ShmArena> arena) : arena_(std::move(arena)) {}

std::unique_ptr<ShmLink> ShmLink::Create(int64_t bytes) {
#if defined(__SANITIZE_THREAD__)
  // ThreadSanitizer cannot see the hand-over of a block through the socket
  // (libzmq is not instrumented): no shared memory under it.
  (void)bytes;
  LOG(INFO) << "shared memory is off under ThreadSanitizer";
  return nullptr;
#else
  auto arena = ShmArena::Create(static_cast<size_t>(bytes));
  if (!arena.ok()) {
    LOG(WARNING) << "no shared memory for peers on this host ("
                 << arena.status().message() << "): every byte goes over TCP";
    return nullptr;
  }
  return std::unique_ptr<ShmLink>(
      new ShmLink(std::shared_ptr<ShmArena>(std::move(*arena))));
#endif
}

std::string ShmLink::Strip(Message* msg) {
  proto::Header& h = msg->header;
  const bool frames = h.shm_frames_size() > 0;
  h.clear_shm_arena();
  h.clear_shm_frames();
  return frames ? "shared-memory frames, but shared memory is off here" : "";
}

uint32_t ShmLink::AddPeer(const std::string& endpoint) {
  const uint32_t slot = next_slot_++;  // kMaxSlots and up: none.
  MutexLock lock(&mu_);
  slot_of_endpoint_[endpoint] = slot;
  return slot;
}

void ShmLink::Prepare(uint32_t slot, const std::string& endpoint,
                      bool io_thread, Message* msg) {
  if (slot >= ShmArena::kMaxSlots) return;
  bool offer = !arena_->Accepted(slot);
  for (size_t f = 0; !offer && f < msg->frames.size(); ++f) {
    Frame& frame = msg->frames[f];
    if (frame.size() < kShmMinFrameBytes) continue;
    // Data already in the arena (a server's weights) goes by reference,
    // read-only for the receiver.
    int64_t offset = arena_->AddRef(frame.data());
    const bool by_reference = offset >= 0;
    // The receiver's own block (an adopted push): ReturnToOwner sends it
    // back by reference.
    if (!by_reference && io_thread &&
        peers_.Viewing(endpoint, frame.data(), frame.size())) {
      continue;
    }
    if (!by_reference)
      offset = arena_->CopyIn(frame.data(), frame.size(), slot);
    if (offset < 0) {
      ++inline_;
      continue;
    }
    proto::ShmFrame* d = msg->header.add_shm_frames();
    d->set_frame(static_cast<uint32_t>(f));
    d->set_offset(static_cast<uint64_t>(offset));
    d->set_size(frame.size());
    d->set_by_reference(by_reference);
    frame = Frame();  // An empty placeholder on the socket.
    ++sent_;
  }
  if (offer || msg->header.shm_frames_size() > 0) {
    *msg->header.mutable_shm_arena() = arena_->identity();
    msg->header.mutable_shm_arena()->set_slot(slot);
  }
}

void ShmLink::ReturnToOwner(const std::string& endpoint, Message* msg) {
  for (size_t f = 0; f < msg->frames.size(); ++f) {
    Frame& frame = msg->frames[f];
    if (frame.size() < kShmMinFrameBytes) continue;
    const int64_t offset =
        peers_.AddRefForOwner(endpoint, frame.data(), frame.size());
    if (offset < 0) continue;
    proto::ShmFrame* d = msg->header.add_shm_frames();
    d->set_frame(static_cast<uint32_t>(f));
    d->set_offset(static_cast<uint64_t>(offset));
    d->set_size(frame.size());
    d->set_in_receiver_arena(true);
    frame = Frame();
    ++sent_;
  }
}

void ShmLink::Drop(const Message& msg, const std::string* endpoint) {
  for (const proto::ShmFrame& d : msg.header.shm_frames()) {
    if (d.in_receiver_arena()) {
      CHECK(endpoint != nullptr)
          << "a block of the receiver's arena before it was sent";
      peers_.ReleaseForOwner(*endpoint, d.offset());
    } else {
      arena_->Release(d.offset());
    }
  }
  sent_ -= msg.header.shm_frames_size();  // Counted as sent by Prepare.
}

std::string ShmLink::Receive(Message* msg, const std::string& from) {
  proto::Header& h = msg->header;
  if (h.has_shm_arena()) peers_.Accept(h.shm_arena(), from);
  const int n = h.shm_frames_size();
  // The sender's slot in our arena: only blocks we copied in for it may
  // come back from it by reference.
  uint32_t own_slot = ShmArena::kMaxSlots;
  for (const proto::ShmFrame& d : h.shm_frames()) {
    if (!d.in_receiver_arena()) continue;
    MutexLock lock(&mu_);
    auto it = slot_of_endpoint_.find(from);
    if (it != slot_of_endpoint_.end()) own_slot = it->second;
    break;
  }
  const std::string why = peers_.Resolve(msg, arena_, own_slot);
  if (why.empty()) received_ += n;
  return why;
}

Frame ShmLink::NewSharedFrame(size_t bytes) const {
  if (bytes == 0) return Frame();
  char* data = arena_->Allocate(bytes);
  if (data == nullptr) return Frame();
  return Frame::View(
      data, bytes,
      std::shared_ptr<const void>(data, [arena = arena_](const void* p) {
        arena->Release(arena->OffsetOf(p));
      }));
}

bool ShmLink::SharedFrameInUse(const Frame& frame) const {
  if (frame.size() == 0) return false;
  if (arena_->Contains(frame.data())) {
    return arena_->Refs(arena_->OffsetOf(frame.data())) >
           1;  // More than the holder's.
  }
  return peers_.SentBackInUse(frame.data());
}

ShmCounts ShmLink::counts() const {
  ShmCounts c;
  c.sent = sent_;
  c.received = received_;
  c.inline_ = inline_;
  return c;
}

}  // namespace transport
}  // namespace pstrain
