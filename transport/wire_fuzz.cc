// libFuzzer target: any frames decode into a message or a Status (Decode),
// and the shared-memory descriptors of a decoded message resolve into views
// of a real arena or a refusal (ShmPeers::Resolve): never a crash, an
// out-of-bounds read or an outsized allocation. Build with scripts/fuzz.
//
// Input: frames, each a 2-byte little-endian length and that many bytes
// (the last one cut short where the input ends). Frame 0 is the header;
// a header must carry the token "tok" to get past the token check.
// Descriptors of the sender's arena are pointed at an arena this process
// created and mapped as a peer would (slot 0, with a few blocks copied in
// for that slot), so bounds and block checks run against real memory.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "transport/shm.h"
#include "transport/wire.h"

namespace {

using pstrain::transport::Frame;
using pstrain::transport::ShmArena;
using pstrain::transport::ShmPeers;

struct Arena {
  std::shared_ptr<ShmArena> arena;
  std::unique_ptr<ShmPeers> peers;
  Arena() {
    auto a = ShmArena::Create(size_t{1} << 20);
    if (!a.ok()) return;
    arena = std::move(*a);
    peers = std::make_unique<ShmPeers>();
    pstrain::proto::ShmArena offer = arena->identity();
    offer.set_slot(0);
    if (!peers->Accept(offer, "fuzz")) {
      peers.reset();
      return;
    }
    const std::string block(4096, 'b');
    for (int i = 0; i < 4; ++i) arena->CopyIn(block.data(), block.size(), 0);
  }
};

std::vector<Frame> Split(const uint8_t* data, size_t size) {
  std::vector<Frame> parts;
  size_t at = 0;
  while (at + 2 <= size && parts.size() < 1024) {
    size_t n = data[at] | (static_cast<size_t>(data[at + 1]) << 8);
    at += 2;
    if (n > size - at) n = size - at;
    parts.push_back(Frame::Copy(data + at, n));
    at += n;
  }
  return parts;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Arena* const shared = new Arena;
  auto msg = pstrain::transport::Decode(Split(data, size), "tok");
  if (!msg.ok() || shared->peers == nullptr) return 0;
  pstrain::proto::Header& h = msg->header;
  if (h.shm_frames_size() == 0) return 0;
  const bool peer_frames = h.has_shm_arena();
  *h.mutable_shm_arena() = shared->arena->identity();
  if (!peer_frames) h.clear_shm_arena();
  (void)shared->peers->Resolve(&*msg, shared->arena, /*own_slot=*/0);
  // Read every resolved frame: views must lie inside the mapping.
  uint64_t sum = 0;
  for (const Frame& f : msg->frames) {
    for (size_t i = 0; i < f.size(); i += 512)
      sum += static_cast<uint8_t>(f.data()[i]);
    if (f.size() > 0) sum += static_cast<uint8_t>(f.data()[f.size() - 1]);
  }
  volatile uint64_t sink = sum;
  (void)sink;
  return 0;
}
