// Shared memory between processes on the same host: an addition to the
// wire protocol of DESIGN.md for co-located peers (MXNet launches a server
// and a worker on each host), the way BytePS and NCCL share memory within
// a machine.
//
// Over loopback TCP a tensor is copied twice by the kernel (into the socket,
// out of it), and a pull reply a third time into the caller's buffer. A
// process that sends big frames to a peer on the same host instead copies
// each one once into a block of its own arena (a memfd) and sends only a
// descriptor (offset, size) with the header; the receiver views the bytes
// in place and hands the block back by dropping a reference count in the
// block's header when it is done with the frame. Data the sender keeps in
// its arena (a server's weights, Transport::NewSharedFrame) is sent by
// reference, without even that copy.
//
// Handshake, without any extra message: until a peer has mapped the arena,
// every message to it carries the arena's identity (pid, memfd number,
// random nonce, size) and the peer's slot. A receiver on the same host
// opens /proc/PID/fd/FD (only a pstrain memfd), maps it, checks the nonce,
// and marks its slot in the arena's header; the sender sees the mark and
// uses the arena for that peer from then on. A peer on another host (or in
// another pid namespace, or not allowed to open the file) never marks its
// slot: everything keeps going over the socket. When the arena is full
// (receivers hold many blocks), a frame goes over the socket too, so a
// send never waits for shared memory.
//
// A receiver that dies keeps its blocks (they are never handed back): the
// arena shrinks for the rest of the job, which the job ends anyway. A mark
// is never cleared: a process that replaced a peer at the same address and
// could not map the arena would drop big frames (logged) until the arena
// filled; pstrain nodes never restart within a job. Arenas are sealed at
// their size (a receiver never maps one that could shrink under it).
#ifndef PSTRAIN_TRANSPORT_SHM_H_
#define PSTRAIN_TRANSPORT_SHM_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "proto/messages.pb.h"
#include "transport/message.h"
#include "util/mutex.h"

namespace pstrain {
namespace transport {

// Frames smaller than this always travel on the socket (a descriptor and
// the block bookkeeping cost about what copying them costs).
inline constexpr size_t kShmMinFrameBytes = 32 << 10;

// The sending side: one arena per process (per Transport). Thread-safe.
class ShmArena {
 public:
  // Peers one arena can serve (slots 0 .. kMaxSlots - 1).
  static constexpr uint32_t kMaxSlots = 4096;

  // Creates a memfd of `bytes` (at least 1 MiB) and maps it. Pages are
  // allocated as blocks first touch them.
  static absl::StatusOr<std::unique_ptr<ShmArena>> Create(size_t bytes);
  ~ShmArena();
  ShmArena(const ShmArena&) = delete;
  ShmArena& operator=(const ShmArena&) = delete;

  // The arena's identity for offers (slot to be filled in per peer).
  const proto::ShmArena& identity() const { return identity_; }
  // Whether the peer given `slot` has mapped the arena.
  bool Accepted(uint32_t slot) const;

  // Copies `size` bytes into a free block referenced once (by the one
  // receiver) and returns the data's offset; -1 when no block that large
  // is free.
  // `receiver_slot`: the slot of the peer it is for, the only one that may
  // send it back by reference (Referenced).
  int64_t CopyIn(const void* data, size_t size,
                 uint32_t receiver_slot = kMaxSlots);
  // A block of `size` bytes referenced once (by the caller, who hands it
  // back with Release), or nullptr when none that large is free.
  char* Allocate(size_t size);
  // When `data` is the start of a block: one more reference to it and its
  // offset (a frame sent without copying); else -1.
  int64_t AddRef(const void* data);
  // References to the block at `offset` (a data offset that Allocate,
  // CopyIn or AddRef gave, still referenced by the caller).
  int Refs(uint64_t offset) const;
  bool Contains(const void* data) const {
    const char* p = static_cast<const char*>(data);
    return p >= base_ && p < base_ + size_;
  }
  // Offset of `data` in the arena. REQUIRES: Contains(data).
  uint64_t OffsetOf(const void* data) const;
  // Drops one reference to the block at `offset` (from CopyIn, AddRef or
  // Allocate, when that reference is not sent after all).
  void Release(uint64_t offset);

  // The bytes of the block at data `offset` when it is one, handed out,
  // still referenced, holds at least `size` bytes and was copied in for
  // the peer with `slot` (which mapped the arena); else nullptr.
  const char* Referenced(uint64_t offset, size_t size, uint32_t slot) const;

  // Bytes of blocks handed out and not yet reclaimed (blocks given back
  // are reclaimed once per 16 MiB handed out, or when nothing fits).
  int64_t bytes_in_use() const;

 private:
  ShmArena() = default;
  // Moves blocks whose reference count dropped to zero to the free list.
  void ReclaimLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FreeLocked(uint64_t offset, uint64_t size)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  int fd_ = -1;
  char* base_ = nullptr;
  size_t size_ = 0;
  proto::ShmArena identity_;
  mutable Mutex mu_;
  std::map<uint64_t, uint64_t> free_
      ABSL_GUARDED_BY(mu_);  // Block offset -> bytes.
  std::map<uint64_t, uint64_t> used_ ABSL_GUARDED_BY(mu_);
  int64_t used_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // Bytes handed out since the last reclaim.
  uint64_t since_reclaim_ ABSL_GUARDED_BY(mu_) = 0;
};

// The receiving side: the arenas of same-host peers this process has
// mapped. Thread-safe.
class ShmPeers {
 public:
  ShmPeers() = default;
  ShmPeers(const ShmPeers&) = delete;
  ShmPeers& operator=(const ShmPeers&) = delete;

  // Maps an offered arena (once; a failure is remembered and logged once,
  // naming `from`) and marks the offer's slot. True when mapped.
  bool Accept(const proto::ShmArena& offer, const std::string& from);

  // Replaces the message's shared-memory frames (header.shm_frames, over
  // the arena named by header.shm_arena) with views into that arena, each
  // handing its block back when the view dies, and clears both header
  // fields. Views are writable (Frame::View) except of blocks the sender
  // keeps (ShmFrame.by_reference: Frame::Borrow). Returns "" or what is wrong
  // with the descriptors (the blocks of the valid ones are handed back when the
  // caller drops the message). `own` (may be null) is this process's arena, for
  // frames in it (ShmFrame.in_receiver_arena: read-only views that drop the
  // sender's reference when they die), accepted only from the peer each block
  // was copied in for: `own_slot`, the sender's slot in `own`.
  std::string Resolve(Message* msg, const std::shared_ptr<ShmArena>& own,
                      uint32_t own_slot);

  // Whether `data` is the start of a block of at least `size` bytes in the
  // arena of the peer whose routing id is `address`, viewed here right
  // now (a frame received from it): it can go back to that peer by
  // reference.
  bool Viewing(const std::string& address, const void* data, size_t size) const;
  // If Viewing(): one more reference to the block (for the peer's message)
  // and its data offset; else -1.
  int64_t AddRefForOwner(const std::string& address, const void* data,
                         size_t size);
  // Whether a block viewed here at `data` is also referenced by a message
  // sent back to its owner (AddRefForOwner) that the owner still reads.
  // False for data in no mapped arena.
  bool SentBackInUse(const void* data) const;
  // Drops a reference AddRefForOwner took (the message was not sent).
  void ReleaseForOwner(const std::string& address, uint64_t offset);

  // Arenas mapped so far.
  size_t mapped() const ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    return mapped_.size();
  }

 private:
  struct Mapping;
  using Key = std::pair<uint32_t, uint64_t>;  // pid, nonce.
  // Calls `found` with the mapping and data offset of the block of the
  // peer at `address` that starts at `data`, holds `size` bytes and is
  // viewed here, under the mapping's lock; not at all if there is none.
  void FindViewed(const std::string& address, const void* data, size_t size,
                  const std::function<void(Mapping*, uint64_t)>& found) const
      ABSL_LOCKS_EXCLUDED(mu_);
  mutable Mutex mu_;  // Guards the maps; taken before a Mapping's.
  std::map<Key, std::shared_ptr<Mapping>> mapped_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Key> arena_of_
      ABSL_GUARDED_BY(mu_);  // Routing id -> its arena.
  std::set<Key> failed_ ABSL_GUARDED_BY(mu_);
};

}  // namespace transport
}  // namespace pstrain

#endif  // PSTRAIN_TRANSPORT_SHM_H_
