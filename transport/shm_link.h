// The transport's one hook into shared memory (shm.h): what happens to a
// message's big frames on their way to and from peers on the same host.
// Transport calls it at four points — a peer connects (AddPeer), a batch is
// queued (Prepare), a message leaves (ReturnToOwner) or is dropped (Drop),
// a message arrives (Receive) — and knows nothing else of arenas.
#ifndef PSTRAIN_TRANSPORT_SHM_LINK_H_
#define PSTRAIN_TRANSPORT_SHM_LINK_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "transport/message.h"
#include "transport/shm.h"
#include "util/mutex.h"

namespace pstrain {
namespace transport {

// Frames counted by a ShmLink (TransportStats has the meanings).
struct ShmCounts {
  int64_t sent = 0;
  int64_t received = 0;
  int64_t inline_ = 0;
};

// Thread-safe unless a method says "I/O thread".
class ShmLink {
 public:
  // A link with an arena of `bytes`. Null, with a warning logged, when the
  // arena cannot be made (every byte then goes over TCP), and always under
  // ThreadSanitizer, which cannot see a block handed over through a socket.
  static std::unique_ptr<ShmLink> Create(int64_t bytes);

  // A message received while shared memory is off here: drops its
  // shared-memory fields. Returns what is wrong ("" when nothing).
  static std::string Strip(Message* msg);

  // I/O thread: our arena's slot for a newly connected peer at `endpoint`
  // (ShmArena::kMaxSlots and up: none left).
  uint32_t AddPeer(const std::string& endpoint);

  // Before queueing `msg` for the peer in `slot` at `endpoint`: offers the
  // arena to a peer that has not mapped it, and moves big frames to one
  // that has into the arena (by reference when they are in it already).
  // `io_thread`: the caller is the I/O thread (only it may see the
  // receiver's own blocks, which ReturnToOwner sends back).
  void Prepare(uint32_t slot, const std::string& endpoint, bool io_thread,
               Message* msg);
  // I/O thread, as `msg` leaves for `endpoint`: frames that are blocks of
  // that peer's own arena go back by reference.
  void ReturnToOwner(const std::string& endpoint, Message* msg);
  // Hands back the arena blocks of a message that will not be sent. Those
  // in the receiver's arena (after ReturnToOwner) need its `endpoint`.
  void Drop(const Message& msg, const std::string* endpoint = nullptr);
  // I/O thread: turns an incoming message's shared-memory frames from
  // `from` into views. Returns what is wrong ("" when nothing).
  std::string Receive(Message* msg, const std::string& from);

  // Transport::NewSharedFrame and Transport::SharedFrameInUse.
  Frame NewSharedFrame(size_t bytes) const;
  bool SharedFrameInUse(const Frame& frame) const;

  ShmCounts counts() const;

 private:
  explicit ShmLink(std::shared_ptr<ShmArena> arena);

  const std::shared_ptr<ShmArena> arena_;
  ShmPeers peers_;
  uint32_t next_slot_ = 0;  // I/O thread only.
  mutable Mutex mu_;
  std::map<std::string, uint32_t> slot_of_endpoint_ ABSL_GUARDED_BY(mu_);
  std::atomic<int64_t> sent_{0}, received_{0}, inline_{0};
};

}  // namespace transport
}  // namespace pstrain

#endif  // PSTRAIN_TRANSPORT_SHM_LINK_H_
