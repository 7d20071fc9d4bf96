// Tests of the shared-memory path (transport/shm.h): the arena and the
// receiver's mappings directly, then real transports over 127.0.0.1 in one
// process (/proc/self/fd maps this process's own memfds), then hostile
// headers from a raw peer.
#include "transport/shm.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "transport/raw_peer.h"
#include "transport/transport.h"
#include "util/test_util.h"

namespace pstrain {
namespace transport {
namespace {

using ::testing::HasSubstr;

// Transports have no shared memory under ThreadSanitizer (transport.cc).
#if defined(__SANITIZE_THREAD__)
constexpr bool kTransportShm = false;
#else
constexpr bool kTransportShm = true;
#endif
#define PSTRAIN_SKIP_WITHOUT_TRANSPORT_SHM()                   \
  do {                                                         \
    if (!kTransportShm)                                        \
      GTEST_SKIP() << "transports have no shared memory here"; \
  } while (false)

constexpr int64_t kMiB = int64_t{1} << 20;

absl::Time Soon() { return absl::Now() + absl::Seconds(10); }

std::unique_ptr<Transport> Make(int64_t shm_bytes,
                                const std::string& token = "tok",
                                TransportOptions o = TransportOptions()) {
  o.token = token;
  o.shm_bytes = shm_bytes;
  auto t = Transport::Create(o);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

// `bytes` of a pseudo-random pattern determined by `seed`: every 8-byte word
// differs, so a shifted, stale or partly overwritten copy is noticed.
std::string Pattern(uint64_t seed, size_t bytes) {
  std::string s(bytes, '\0');
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    const uint64_t v = x * 0x2545F4914F6CDD1Dull;
    std::memcpy(&s[i], &v, 8);
  }
  for (; i < bytes; ++i) s[i] = static_cast<char>(x >> (8 * (i % 8)));
  return s;
}

uint64_t FrameSeed(uint64_t seed, size_t frame) { return seed * 1000 + frame; }

// A PUSH with one frame of sizes[i] bytes (a multiple of 4) per key; key i
// is seed * 1000 + i and frame i holds Pattern(FrameSeed(seed, i)).
Message Data(uint64_t seed, const std::vector<size_t>& sizes,
             int priority = 0) {
  Message m;
  m.header.set_type(proto::PUSH);
  m.header.set_priority(priority);
  for (size_t i = 0; i < sizes.size(); ++i) {
    m.header.add_keys(static_cast<int64_t>(FrameSeed(seed, i)));
    m.header.add_offsets(0);
    m.header.add_lengths(static_cast<int64_t>(sizes[i] / sizeof(float)));
    m.frames.push_back(Frame::Own(Pattern(FrameSeed(seed, i), sizes[i])));
  }
  return m;
}

// Whether `m` is exactly what Data(seed, sizes, priority) sent, bit for bit,
// with no shared-memory field left in the header.
::testing::AssertionResult Intact(const Message& m, uint64_t seed,
                                  const std::vector<size_t>& sizes,
                                  int priority = 0) {
  const proto::Header& h = m.header;
  if (h.has_shm_arena() || h.shm_frames_size() > 0) {
    return ::testing::AssertionFailure()
           << "shared-memory fields left: " << h.ShortDebugString();
  }
  if (h.type() != proto::PUSH || h.priority() != priority) {
    return ::testing::AssertionFailure()
           << "header changed: " << h.ShortDebugString();
  }
  if (h.keys_size() != static_cast<int>(sizes.size()) ||
      m.frames.size() != sizes.size()) {
    return ::testing::AssertionFailure()
           << h.keys_size() << " keys and " << m.frames.size()
           << " frames, want " << sizes.size();
  }
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (h.keys(static_cast<int>(i)) !=
        static_cast<int64_t>(FrameSeed(seed, i))) {
      return ::testing::AssertionFailure()
             << "key " << i << " is " << h.keys(static_cast<int>(i))
             << ", want " << FrameSeed(seed, i);
    }
    if (m.frames[i].size() != sizes[i]) {
      return ::testing::AssertionFailure()
             << "frame " << i << " has " << m.frames[i].size()
             << " bytes, want " << sizes[i];
    }
    const std::string want = Pattern(FrameSeed(seed, i), sizes[i]);
    if (sizes[i] > 0 &&
        std::memcmp(m.frames[i].data(), want.data(), sizes[i]) != 0) {
      size_t at = 0;
      while (m.frames[i].data()[at] == want[at]) ++at;
      return ::testing::AssertionFailure()
             << "frame " << i << " of message " << seed << " differs from byte "
             << at << " of " << sizes[i];
    }
  }
  return ::testing::AssertionSuccess();
}

// Sends a small message (which carries `from`'s offer) to `to`, known to
// `from` as `peer`, and waits for it: `to` maps the arena before it
// delivers, so big frames from `from` go through shared memory from then on.
void Handshake(Transport* from, int peer, Transport* to) {
  ASSERT_TRUE(from->Send(peer, Data(999999, {64}), Soon()).ok());
  auto got = to->Receive(Soon());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(Intact(*got, 999999, {64}));
}

// ---------------------------------------------------------------------------
// ShmArena and ShmPeers directly.

// The largest CopyIn that succeeds now, up to `hi` bytes (probes are handed
// back and reclaimed by the next CopyIn).
size_t LargestFit(ShmArena* a, size_t hi) {
  const std::string buf(hi, 'x');
  size_t lo = 0;
  while (lo < hi) {
    const size_t mid = lo + (hi - lo + 1) / 2;
    const int64_t off = a->CopyIn(buf.data(), mid);
    if (off >= 0) {
      a->Release(static_cast<uint64_t>(off));
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

// Makes the arena reclaim released blocks now (a CopyIn that cannot fit).
void Reclaim(ShmArena* a) {
  const std::string big(a->identity().size() + 1, 'x');
  EXPECT_EQ(a->CopyIn(big.data(), big.size()), -1);
}

std::unique_ptr<ShmArena> MakeArena(size_t bytes) {
  auto a = ShmArena::Create(bytes);
  EXPECT_TRUE(a.ok()) << a.status();
  return a.ok() ? std::move(*a) : nullptr;
}

// A message whose frames are all in `arena` at `blocks` (offset, size).
Message InArena(const proto::ShmArena& arena,
                const std::vector<std::pair<int64_t, size_t>>& blocks) {
  Message m;
  *m.header.mutable_shm_arena() = arena;
  for (size_t i = 0; i < blocks.size(); ++i) {
    proto::ShmFrame* d = m.header.add_shm_frames();
    d->set_frame(static_cast<uint32_t>(i));
    d->set_offset(static_cast<uint64_t>(blocks[i].first));
    d->set_size(blocks[i].second);
    m.frames.emplace_back();
  }
  return m;
}

TEST(ShmArenaTest, CreateRefusesLessThanOneMiB) {
  for (size_t bytes : {size_t{0}, size_t{4096}, size_t{kMiB - 1}}) {
    auto a = ShmArena::Create(bytes);
    ASSERT_FALSE(a.ok()) << bytes;
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(a.status().message()), HasSubstr("1 MiB"));
  }
  auto a = MakeArena(kMiB + 1);  // Rounded up to whole pages.
  ASSERT_NE(a, nullptr);
  const proto::ShmArena& id = a->identity();
  EXPECT_EQ(id.pid(), static_cast<uint32_t>(getpid()));
  EXPECT_GE(id.fd(), 0);
  EXPECT_NE(id.nonce(), 0u);
  EXPECT_GE(id.size(), static_cast<uint64_t>(kMiB + 1));
  EXPECT_EQ(id.size() % 4096, 0u);
  EXPECT_EQ(a->bytes_in_use(), 0);
  // No peer has marked any slot; slots out of range never count.
  EXPECT_FALSE(a->Accepted(0));
  EXPECT_FALSE(a->Accepted(ShmArena::kMaxSlots));
  EXPECT_FALSE(a->Accepted(std::numeric_limits<uint32_t>::max()));
  // Two arenas are told apart by their nonce.
  auto b = MakeArena(kMiB);
  ASSERT_NE(b, nullptr);
  EXPECT_NE(a->identity().nonce(), b->identity().nonce());
}

TEST(ShmArenaTest, CopyInReturnsMinusOneWhenFull) {
  auto a = MakeArena(kMiB);
  ASSERT_NE(a, nullptr);
  const std::string too_big(2 * kMiB, 'x');
  EXPECT_EQ(a->CopyIn(too_big.data(), too_big.size()), -1);
  EXPECT_EQ(a->bytes_in_use(), 0);
  const std::string block = Pattern(1, 64 << 10);
  std::vector<int64_t> offsets;
  for (int i = 0; i < 100; ++i) {
    const int64_t off = a->CopyIn(block.data(), block.size());
    if (off < 0) break;
    EXPECT_EQ(off % 64, 0) << "frames must be aligned for any tensor type";
    offsets.push_back(off);
  }
  // 1 MiB minus the arena header and block headers: fewer than 16 blocks.
  EXPECT_GE(offsets.size(), 10u);
  EXPECT_LT(offsets.size(), 16u);
  const int64_t in_use = a->bytes_in_use();
  EXPECT_GE(in_use, static_cast<int64_t>(offsets.size() * block.size()));
  EXPECT_LE(in_use, static_cast<int64_t>(a->identity().size()));
  EXPECT_EQ(a->CopyIn(block.data(), block.size()), -1);
  EXPECT_EQ(a->bytes_in_use(), in_use);  // A refused CopyIn takes nothing.
  // Blocks do not overlap.
  for (size_t i = 1; i < offsets.size(); ++i) {
    EXPECT_GE(offsets[i] - offsets[i - 1], static_cast<int64_t>(block.size()));
  }
  // What is left fits smaller frames, and then nothing at all.
  const size_t rest = LargestFit(a.get(), block.size());
  EXPECT_LT(rest, block.size());
  if (rest > 0) {
    ASSERT_GE(a->CopyIn(block.data(), rest), 0);
  }
  EXPECT_EQ(a->CopyIn(block.data(), 1), -1);
}

TEST(ShmArenaTest, PeersMapTheArenaAndHandBlocksBackWhenViewsDie) {
  auto a = MakeArena(kMiB);
  ASSERT_NE(a, nullptr);
  ShmPeers peers;
  proto::ShmArena offer = a->identity();
  offer.set_slot(3);
  ASSERT_TRUE(peers.Accept(offer, "test"));
  EXPECT_EQ(peers.mapped(), 1u);
  EXPECT_TRUE(a->Accepted(3));
  EXPECT_FALSE(a->Accepted(2));
  EXPECT_FALSE(a->Accepted(4));
  // Mapped once, whatever the number of offers.
  offer.set_slot(5);
  ASSERT_TRUE(peers.Accept(offer, "test"));
  EXPECT_EQ(peers.mapped(), 1u);
  EXPECT_TRUE(a->Accepted(5));

  // Fill the arena with blocks the receiver then views.
  constexpr size_t kBlock = 64 << 10;
  std::vector<std::pair<int64_t, size_t>> blocks;
  for (int i = 0; i < 100; ++i) {
    const std::string data = Pattern(FrameSeed(7, blocks.size()), kBlock);
    const int64_t off = a->CopyIn(data.data(), data.size());
    if (off < 0) break;
    blocks.emplace_back(off, kBlock);
  }
  ASSERT_GE(blocks.size(), 2u);
  const int64_t full = a->bytes_in_use();
  Message m = InArena(a->identity(), blocks);
  ASSERT_EQ(peers.Resolve(&m, nullptr, ShmArena::kMaxSlots), "");
  EXPECT_FALSE(m.header.has_shm_arena());
  EXPECT_EQ(m.header.shm_frames_size(), 0);
  ASSERT_EQ(m.frames.size(), blocks.size());
  for (size_t i = 0; i < blocks.size(); ++i) {
    ASSERT_EQ(m.frames[i].size(), kBlock);
    EXPECT_EQ(std::memcmp(m.frames[i].data(),
                          Pattern(FrameSeed(7, i), kBlock).data(), kBlock),
              0)
        << i;
    EXPECT_NE(m.frames[i].mutable_data(), nullptr) << i;
  }
  const std::string more = Pattern(8, kBlock);
  EXPECT_EQ(a->CopyIn(more.data(), more.size()), -1);  // Every block is held.
  EXPECT_EQ(a->bytes_in_use(), full);

  // One view dies: exactly one block comes back.
  { Frame dead = std::move(m.frames[1]); }
  const int64_t one = a->CopyIn(more.data(), more.size());
  EXPECT_GE(one, 0);
  EXPECT_EQ(a->CopyIn(more.data(), more.size()), -1);
  EXPECT_EQ(a->bytes_in_use(), full);
  // The others still read their own data.
  EXPECT_EQ(std::memcmp(m.frames[0].data(),
                        Pattern(FrameSeed(7, 0), kBlock).data(), kBlock),
            0);

  // The message dies: every other block comes back.
  m = Message();
  const int64_t again = a->CopyIn(more.data(), more.size());
  ASSERT_GE(again, 0);
  EXPECT_EQ(a->bytes_in_use(), full / static_cast<int64_t>(blocks.size()) * 2);
  a->Release(static_cast<uint64_t>(one));
  a->Release(static_cast<uint64_t>(again));
  Reclaim(a.get());
  EXPECT_EQ(a->bytes_in_use(), 0);
}

TEST(ShmArenaTest, PeersRefuseOffersThatAreNotThatArena) {
  auto a = MakeArena(kMiB);
  ASSERT_NE(a, nullptr);
  ShmPeers peers;
  proto::ShmArena wrong_nonce = a->identity();
  wrong_nonce.set_nonce(a->identity().nonce() ^ 1);
  wrong_nonce.set_slot(1);
  EXPECT_FALSE(peers.Accept(wrong_nonce, "test"));
  proto::ShmArena wrong_size = a->identity();
  wrong_size.set_nonce(a->identity().nonce() ^ 2);
  wrong_size.set_size(a->identity().size() + 4096);
  wrong_size.set_slot(1);
  EXPECT_FALSE(peers.Accept(wrong_size, "test"));
  proto::ShmArena huge = wrong_size;
  huge.set_nonce(a->identity().nonce() ^ 3);
  huge.set_size(uint64_t{1} << 62);
  EXPECT_FALSE(peers.Accept(huge, "test"));
  proto::ShmArena no_such_pid = a->identity();
  no_such_pid.set_pid(0x7ffffff0);  // Above any pid_max.
  EXPECT_FALSE(peers.Accept(no_such_pid, "test"));
  EXPECT_EQ(peers.mapped(), 0u);
  EXPECT_FALSE(a->Accepted(1));
  // Frames in an arena that was not mapped are refused; the header is
  // cleared either way.
  const std::string data = Pattern(1, 4096);
  const int64_t off = a->CopyIn(data.data(), data.size());
  ASSERT_GE(off, 0);
  Message m = InArena(wrong_nonce, {{off, data.size()}});
  EXPECT_THAT(peers.Resolve(&m, nullptr, ShmArena::kMaxSlots),
              HasSubstr("not mapped"));
  EXPECT_FALSE(m.header.has_shm_arena());
  EXPECT_EQ(m.header.shm_frames_size(), 0);
  // The genuine offer still works (the failures were remembered under the
  // keys they named).
  proto::ShmArena genuine = a->identity();
  genuine.set_slot(1);
  EXPECT_TRUE(peers.Accept(genuine, "test"));
  EXPECT_TRUE(a->Accepted(1));
}

// A, B, C side by side, then the rest of the arena taken by D: freeing A, B
// and C in any order (each reclaimed before the next is freed) leaves one
// free range that holds three blocks' data and the two headers between.
TEST(ShmArenaTest, FreedNeighboursCoalesceInAnyOrder) {
  constexpr size_t kSize = 64 << 10;
  const std::string data = Pattern(3, 3 * kSize);
  const std::vector<std::vector<int>> orders = {
      {0, 2, 1}, {0, 1, 2}, {2, 1, 0}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}};
  for (const std::vector<int>& order : orders) {
    SCOPED_TRACE(::testing::PrintToString(order));
    auto a = MakeArena(kMiB);
    ASSERT_NE(a, nullptr);
    int64_t abc[3];
    for (int64_t& off : abc) {
      off = a->CopyIn(data.data(), kSize);
      ASSERT_GE(off, 0);
    }
    // D takes exactly what is left.
    const size_t rest = LargestFit(a.get(), a->identity().size());
    ASSERT_GT(rest, 0u);
    const std::string d(rest, 'd');
    ASSERT_GE(a->CopyIn(d.data(), d.size()), 0);
    ASSERT_EQ(a->CopyIn(data.data(), 1), -1) << "the arena should be full";
    for (size_t k = 0; k < order.size(); ++k) {
      a->Release(static_cast<uint64_t>(abc[order[k]]));
      Reclaim(a.get());
      if (k + 1 < order.size()) {
        // Not all three free yet: nothing that needs all three fits.
        EXPECT_EQ(a->CopyIn(data.data(), 3 * kSize), -1) << k;
      }
    }
    // Two free neighbours alone could hold at most two blocks' data and one
    // header: three blocks' data needs A, B and C merged.
    const int64_t merged = a->CopyIn(data.data(), 3 * kSize);
    EXPECT_EQ(merged, abc[0]);
    if (merged >= 0) {
      EXPECT_LT(LargestFit(a.get(), kSize),
                kSize / 2);  // And little else is free.
    }
  }
}

// ---------------------------------------------------------------------------
// Transports.

TEST(ShmTransportTest, OfferFirstThenBigFramesInSharedMemoryBothWays) {
  PSTRAIN_SKIP_WITHOUT_TRANSPORT_SHM();
  auto a = Make(8 * kMiB), b = Make(8 * kMiB);
  ASSERT_TRUE(a->Connect(1, b->address()).ok());
  ASSERT_TRUE(b->Connect(0, a->address()).ok());
  // Small, just below, exactly at the threshold, big, tiny: two frames per
  // message qualify for shared memory, the others stay inline.
  const std::vector<size_t> sizes = {4096, kShmMinFrameBytes - 4,
                                     kShmMinFrameBytes, kMiB + 4, 12};
  constexpr int kShmPerMessage = 2;

  // The first message carries the offer: everything over TCP.
  ASSERT_TRUE(a->Send(1, Data(1, sizes, 3), Soon()).ok());
  std::vector<Message> held;
  {
    auto got = b->Receive(Soon());
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(Intact(*got, 1, sizes, 3));
    held.push_back(std::move(*got));
  }
  EXPECT_EQ(a->stats().shm_frames_sent, 0);
  EXPECT_EQ(b->stats().shm_frames_received, 0);
  // B mapped A's arena before delivering: from now on the big frames of
  // each message travel in it, the small ones with it on the socket.
  for (uint64_t seed = 2; seed <= 5; ++seed) {
    ASSERT_TRUE(a->Send(1, Data(seed, sizes, 3), Soon()).ok());
    auto got = b->Receive(Soon());
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(Intact(*got, seed, sizes, 3));
    EXPECT_EQ(b->stats().shm_frames_received,
              kShmPerMessage * static_cast<int64_t>(seed - 1));
    held.push_back(std::move(*got));
  }
  // Frames held together do not share blocks.
  for (size_t i = 0; i < held.size(); ++i)
    EXPECT_TRUE(Intact(held[i], i + 1, sizes, 3)) << i;
  TransportStats sa = a->stats(), sb = b->stats();
  EXPECT_EQ(sa.shm_frames_sent, 4 * kShmPerMessage);
  EXPECT_EQ(sa.shm_frames_sent, sb.shm_frames_received);
  EXPECT_EQ(sa.shm_frames_inline, 0);
  EXPECT_EQ(sb.shm_frames_sent, 0);
  EXPECT_EQ(sa.shm_frames_received, 0);
  EXPECT_EQ(sb.received, 5);
  EXPECT_EQ(sb.dropped_malformed, 0);

  // The other way: B's arena is offered with its first message, then used.
  for (uint64_t seed = 11; seed <= 14; ++seed) {
    ASSERT_TRUE(b->Send(0, Data(seed, sizes), Soon()).ok());
    auto got = a->Receive(Soon());
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(Intact(*got, seed, sizes));
  }
  sa = a->stats();
  sb = b->stats();
  EXPECT_EQ(sb.shm_frames_sent, 3 * kShmPerMessage);
  EXPECT_EQ(sb.shm_frames_sent, sa.shm_frames_received);
  EXPECT_EQ(sb.shm_frames_inline, 0);
  EXPECT_EQ(sa.dropped_malformed, 0);
  // And A still sends through its own arena.
  ASSERT_TRUE(a->Send(1, Data(6, sizes), Soon()).ok());
  auto got = b->Receive(Soon());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(Intact(*got, 6, sizes));
  EXPECT_EQ(a->stats().shm_frames_sent, 5 * kShmPerMessage);
  EXPECT_EQ(b->stats().shm_frames_received, 5 * kShmPerMessage);
}

TEST(ShmTransportTest, EachPeerIsOfferedTheArenaUntilItAcceptsIt) {
  PSTRAIN_SKIP_WITHOUT_TRANSPORT_SHM();
  auto a = Make(8 * kMiB), b = Make(8 * kMiB), c = Make(8 * kMiB),
       off = Make(0);
  ASSERT_TRUE(a->Connect(1, b->address()).ok());
  ASSERT_TRUE(a->Connect(2, c->address()).ok());
  ASSERT_TRUE(a->Connect(3, off->address()).ok());
  const std::vector<size_t> sizes = {256 << 10};
  Handshake(a.get(), 1, b.get());
  // B's mark does not stand for C: C's first message still goes over TCP.
  ASSERT_TRUE(a->Send(2, Data(1, sizes), Soon()).ok());
  auto got = c->Receive(Soon());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(Intact(*got, 1, sizes));
  EXPECT_EQ(a->stats().shm_frames_sent, 0);
  // One batch to all three: shared memory to B and C, TCP to the peer that
  // has none.
  for (uint64_t seed = 2; seed <= 4; ++seed) {
    std::vector<std::pair<int, Message>> batch;
    for (int peer : {1, 2, 3})
      batch.emplace_back(peer, Data(seed * 10 + peer, sizes));
    ASSERT_TRUE(a->SendBatch(std::move(batch), Soon()).ok());
    Transport* receivers[] = {b.get(), c.get(), off.get()};
    for (int peer : {1, 2, 3}) {
      auto m = receivers[peer - 1]->Receive(Soon());
      ASSERT_TRUE(m.ok()) << m.status();
      EXPECT_TRUE(Intact(*m, seed * 10 + peer, sizes)) << peer;
    }
  }
  EXPECT_EQ(a->stats().shm_frames_sent, 6);
  EXPECT_EQ(b->stats().shm_frames_received, 3);
  EXPECT_EQ(c->stats().shm_frames_received, 3);
  EXPECT_EQ(off->stats().shm_frames_received, 0);
  EXPECT_EQ(off->stats().dropped_malformed, 0);
  EXPECT_EQ(a->stats().shm_frames_inline, 0);
}

TEST(ShmTransportTest, BlocksComeBackWhenTheReceiverDropsItsFrames) {
  PSTRAIN_SKIP_WITHOUT_TRANSPORT_SHM();
  auto a = Make(2 * kMiB), b = Make(2 * kMiB);
  ASSERT_TRUE(a->Connect(1, b->address()).ok());
  Handshake(a.get(), 1, b.get());
  // 200 messages of 512 KiB through a 2 MiB arena (three blocks at most):
  // only possible if every block comes back once its message is dropped.
  constexpr int kMessages = 200;
  const std::vector<size_t> sizes = {512 << 10};
  for (int i = 0; i < kMessages; ++i) {
    ASSERT_TRUE(a->Send(1, Data(i, sizes), Soon()).ok()) << i;
    auto got = b->Receive(Soon());
    ASSERT_TRUE(got.ok()) << i << ": " << got.status();
    ASSERT_TRUE(Intact(*got, i, sizes)) << i;
  }
  const TransportStats sa = a->stats(), sb = b->stats();
  EXPECT_EQ(sa.shm_frames_sent, kMessages);
  EXPECT_EQ(sa.shm_frames_inline, 0);
  EXPECT_EQ(sb.shm_frames_received, kMessages);
  EXPECT_EQ(sb.dropped_malformed, 0);
}

TEST(ShmTransportTest, AFullArenaFallsBackToTheSocket) {
  PSTRAIN_SKIP_WITHOUT_TRANSPORT_SHM();
  auto a = Make(2 * kMiB), b = Make(2 * kMiB);
  ASSERT_TRUE(a->Connect(1, b->address()).ok());
  Handshake(a.get(), 1, b.get());
  const std::vector<size_t> sizes = {512 << 10};
  // B holds everything it receives: the arena fills up (2 MiB hold three
  // such blocks), and the rest goes over TCP. Nothing waits, nothing is lost.
  constexpr int kMessages = 6;
  std::vector<Message> held;
  for (int i = 0; i < kMessages; ++i) {
    ASSERT_TRUE(a->Send(1, Data(i, sizes), Soon()).ok());
    auto got = b->Receive(Soon());
    ASSERT_TRUE(got.ok()) << got.status();
    held.push_back(std::move(*got));
  }
  for (int i = 0; i < kMessages; ++i)
    EXPECT_TRUE(Intact(held[i], i, sizes)) << i;
  TransportStats sa = a->stats();
  const int64_t fit = sa.shm_frames_sent;
  EXPECT_GE(fit, 1);
  EXPECT_LT(fit, kMessages);
  EXPECT_EQ(sa.shm_frames_inline, kMessages - fit);
  EXPECT_EQ(b->stats().shm_frames_received, fit);

  // Within one message, too: with the arena full, all five frames go inline.
  const std::vector<size_t> five(5, 512 << 10);
  ASSERT_TRUE(a->Send(1, Data(50, five), Soon()).ok());
  {
    auto got = b->Receive(Soon());
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(Intact(*got, 50, five));
  }
  EXPECT_EQ(a->stats().shm_frames_sent, fit);
  EXPECT_EQ(a->stats().shm_frames_inline, kMessages - fit + 5);

  // B lets go: the whole arena is usable again (as many blocks as before
  // fit at once), and the next frames go through it.
  held.clear();
  for (int i = 0; i < fit; ++i) {
    ASSERT_TRUE(a->Send(1, Data(100 + i, sizes), Soon()).ok());
    auto got = b->Receive(Soon());
    ASSERT_TRUE(got.ok()) << got.status();
    held.push_back(std::move(*got));
  }
  sa = a->stats();
  EXPECT_EQ(sa.shm_frames_sent, 2 * fit);
  EXPECT_EQ(sa.shm_frames_inline, kMessages - fit + 5);
  for (int i = 0; i < fit; ++i)
    EXPECT_TRUE(Intact(held[i], 100 + i, sizes)) << i;

  // A message of five big frames into an emptied arena: some go through
  // shared memory, the rest inline, in the same message.
  held.clear();
  ASSERT_TRUE(a->Send(1, Data(60, five), Soon()).ok());
  auto got = b->Receive(Soon());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(Intact(*got, 60, five));
  const TransportStats after = a->stats();
  EXPECT_EQ(after.shm_frames_sent - sa.shm_frames_sent, fit);
  EXPECT_EQ(after.shm_frames_inline - sa.shm_frames_inline, 5 - fit);
  EXPECT_EQ(b->stats().shm_frames_received, after.shm_frames_sent);
  EXPECT_EQ(b->stats().dropped_malformed, 0);
}

TEST(ShmTransportTest, ReceivedFramesAreWritableWithoutHarmToOthers) {
  PSTRAIN_SKIP_WITHOUT_TRANSPORT_SHM();
  auto a = Make(4 * kMiB), b = Make(4 * kMiB);
  ASSERT_TRUE(a->Connect(1, b->address()).ok());
  Handshake(a.get(), 1, b.get());
  constexpr size_t kBytes = 256 << 10;
  // Sent without a copy from the caller's memory: the arena has its own.
  auto source = std::make_shared<std::string>(Pattern(FrameSeed(1, 0), kBytes));
  Message m = Data(1, {kBytes});
  m.frames[0] = Frame::Borrow(source->data(), source->size(), source);
  ASSERT_TRUE(a->Send(1, std::move(m), Soon()).ok());
  auto first = b->Receive(Soon());
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(b->stats().shm_frames_received, 1);
  ASSERT_TRUE(Intact(*first, 1, {kBytes}));
  // Writable, also after the frame moves.
  Frame frame = std::move(first->frames[0]);
  char* p = frame.mutable_data();
  ASSERT_NE(p, nullptr);
  std::memset(p, 0xAB, kBytes);
  EXPECT_EQ(frame.data()[0], static_cast<char>(0xAB));
  EXPECT_EQ(frame.data()[kBytes - 1], static_cast<char>(0xAB));
  EXPECT_EQ(*source, Pattern(FrameSeed(1, 0), kBytes))
      << "the sender's memory changed";
  // While it is held and scribbled over, the next messages are intact.
  std::vector<Message> held;
  for (uint64_t seed = 2; seed <= 4; ++seed) {
    ASSERT_TRUE(a->Send(1, Data(seed, {kBytes}), Soon()).ok());
    auto got = b->Receive(Soon());
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(Intact(*got, seed, {kBytes}));
    char* q = got->frames[0].mutable_data();
    ASSERT_NE(q, nullptr);
    held.push_back(std::move(*got));
  }
  EXPECT_EQ(frame.data()[kBytes / 2], static_cast<char>(0xAB));
  // Scribble over all, drop all: the blocks are reused, and the data of
  // later messages is theirs.
  for (Message& h : held) std::memset(h.frames[0].mutable_data(), 0x5C, kBytes);
  held.clear();
  frame = Frame();
  for (uint64_t seed = 5; seed <= 12; ++seed) {
    ASSERT_TRUE(a->Send(1, Data(seed, {kBytes, 64, kBytes}), Soon()).ok());
    auto got = b->Receive(Soon());
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(Intact(*got, seed, {kBytes, 64, kBytes}));
    std::memset(got->frames[2].mutable_data(), 0x11, kBytes);
  }
  EXPECT_EQ(a->stats().shm_frames_sent, 4 + 2 * 8);
  EXPECT_EQ(a->stats().shm_frames_inline, 0);
  EXPECT_EQ(b->stats().shm_frames_received, 4 + 2 * 8);
}

TEST(ShmTransportTest, ReceivedFramesOutliveBothTransports) {
  PSTRAIN_SKIP_WITHOUT_TRANSPORT_SHM();
  auto a = Make(4 * kMiB), b = Make(4 * kMiB);
  ASSERT_TRUE(a->Connect(1, b->address()).ok());
  Handshake(a.get(), 1, b.get());
  ASSERT_TRUE(a->Send(1, Data(1, {kMiB}), Soon()).ok());
  auto got = b->Receive(Soon());
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(b->stats().shm_frames_received, 1);
  a.reset();
  b.reset();
  EXPECT_TRUE(Intact(*got, 1, {kMiB}));
  std::memset(got->frames[0].mutable_data(), 0, kMiB);
}

// shm_bytes = 0 on one side: A offers its arena forever (B never maps it)
// and B never offers one. Every byte goes over TCP both ways.
TEST(ShmTransportTest, SharedMemoryOffOnEitherSideMeansTcp) {
  PSTRAIN_SKIP_WITHOUT_TRANSPORT_SHM();
  auto a = Make(8 * kMiB), b = Make(0);
  ASSERT_TRUE(a->Connect(1, b->address()).ok());
  ASSERT_TRUE(b->Connect(0, a->address()).ok());
  const std::vector<size_t> sizes = {kShmMinFrameBytes, kMiB, 64};
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    // Receiver without shared memory.
    ASSERT_TRUE(a->Send(1, Data(seed, sizes), Soon()).ok());
    auto got = b->Receive(Soon());
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(Intact(*got, seed, sizes));
    // Sender without shared memory.
    ASSERT_TRUE(b->Send(0, Data(seed + 100, sizes), Soon()).ok());
    auto back = a->Receive(Soon());
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_TRUE(Intact(*back, seed + 100, sizes));
  }
  for (const TransportStats& s : {a->stats(), b->stats()}) {
    EXPECT_EQ(s.shm_frames_sent, 0);
    EXPECT_EQ(s.shm_frames_received, 0);
    EXPECT_EQ(s.shm_frames_inline, 0);
    EXPECT_EQ(s.dropped_malformed, 0);
    EXPECT_EQ(s.received, 5);
  }
}

// A batch refused after its frames were copied into the arena hands the
// blocks back: a 2 MiB arena survives many refusals of 512 KiB frames.
TEST(ShmTransportTest, RefusedSendsHandTheirBlocksBack) {
  PSTRAIN_SKIP_WITHOUT_TRANSPORT_SHM();
  auto a = Make(2 * kMiB), b = Make(2 * kMiB);
  ASSERT_TRUE(a->Connect(1, b->address()).ok());
  Handshake(a.get(), 1, b.get());
  const std::vector<size_t> sizes = {512 << 10};
  for (int i = 0; i < 20; ++i) {
    std::vector<std::pair<int, Message>> batch;
    batch.emplace_back(1, Data(i, sizes));
    batch.emplace_back(99, Data(i, {64}));  // Never connected: all or nothing.
    EXPECT_EQ(a->SendBatch(std::move(batch), Soon()).code(),
              absl::StatusCode::kFailedPrecondition);
  }
  const int64_t inline_before = a->stats().shm_frames_inline;
  EXPECT_EQ(inline_before, 0);
  // Three held at once still fit.
  std::vector<Message> held;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(a->Send(1, Data(100 + i, sizes), Soon()).ok());
    auto got = b->Receive(Soon());
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(Intact(*got, 100 + i, sizes));
    held.push_back(std::move(*got));
  }
  EXPECT_EQ(a->stats().shm_frames_inline, 0);
  EXPECT_EQ(b->stats().shm_frames_received, 3);
}

// Data kept in the sender's arena (a server's weights) goes to a peer that
// mapped the arena by reference: the receiver reads the sender's block
// itself, and the holder sees it in use until the receiver lets go. To a
// peer without shared memory it goes over the socket.
TEST(ShmTransportTest, SharedFramesGoByReference) {
  PSTRAIN_SKIP_WITHOUT_TRANSPORT_SHM();
  auto a = Make(2 * kMiB), b = Make(2 * kMiB), c = Make(0);
  ASSERT_TRUE(a->Connect(1, b->address()).ok());
  ASSERT_TRUE(a->Connect(2, c->address()).ok());
  Handshake(a.get(), 1, b.get());
  EXPECT_EQ(c->NewSharedFrame(4096).size(), 0u);      // No arena.
  EXPECT_EQ(a->NewSharedFrame(4 * kMiB).size(), 0u);  // No room.
  const size_t bytes = 1536 << 10;  // Most of the arena: a copy could not fit.
  Frame weights = a->NewSharedFrame(bytes);
  ASSERT_EQ(weights.size(), bytes);
  ASSERT_NE(weights.mutable_data(), nullptr);
  const std::string pattern = Pattern(FrameSeed(77, 0), bytes);
  std::memcpy(weights.mutable_data(), pattern.data(), bytes);
  EXPECT_FALSE(a->SharedFrameInUse(weights));
  auto send = [&](int peer) {
    Message m = Data(77, {bytes});
    m.frames[0] = Frame::Borrow(weights.data(), bytes, nullptr);
    ASSERT_TRUE(a->Send(peer, std::move(m), Soon()).ok());
  };
  send(1);
  auto got = b->Receive(Soon());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(Intact(*got, 77, {bytes}));
  EXPECT_EQ(a->stats().shm_frames_sent, 1);
  EXPECT_EQ(a->stats().shm_frames_inline, 0);
  EXPECT_TRUE(a->SharedFrameInUse(weights));
  EXPECT_EQ(got->frames[0].mutable_data(),
            nullptr);  // The holder's: read-only.
  // The receiver sees the holder's writes: the very same bytes.
  weights.mutable_data()[0] ^= 1;
  EXPECT_EQ(got->frames[0].data()[0], weights.data()[0]);
  weights.mutable_data()[0] ^= 1;
  got = Message();
  EXPECT_FALSE(a->SharedFrameInUse(weights));
  send(2);
  auto tcp = c->Receive(Soon());
  ASSERT_TRUE(tcp.ok()) << tcp.status();
  EXPECT_TRUE(Intact(*tcp, 77, {bytes}));
  EXPECT_EQ(c->stats().shm_frames_received, 0);
  EXPECT_FALSE(a->SharedFrameInUse(weights));
  EXPECT_FALSE(a->SharedFrameInUse(tcp->frames[0]));  // Not in the arena.
}

// A frame received through shared memory and sent back to its sender from
// the I/O thread (a server replying with a push it adopted as its weights)
// goes back by reference into the sender's own block: read-only there, and
// the block comes back once both sides let go.
TEST(ShmTransportTest, AFrameSentBackToItsOwnerGoesByReference) {
  PSTRAIN_SKIP_WITHOUT_TRANSPORT_SHM();
  TransportOptions split;
  split.split_data = true;
  auto a = Make(2 * kMiB), b = Make(2 * kMiB, "tok", split);
  ASSERT_TRUE(a->Connect(1, b->address()).ok());
  ASSERT_TRUE(b->Connect(0, a->address()).ok());
  // B echoes every message from its I/O thread, holding it meanwhile; a
  // probe (key 0) instead reports whether the last big frame B sent back
  // is still read by A.
  std::shared_ptr<Message> last;  // I/O thread only.
  std::atomic<int> in_use{-1};
  b->SetDataHandler([&](Message m) {
    if (m.header.keys(0) == 0) {
      in_use = b->SharedFrameInUse(last->frames[0]) ? 1 : 0;
      if (in_use == 0) last.reset();  // Its block can go back to A.
      return;
    }
    auto keep = std::make_shared<Message>(std::move(m));
    if (keep->frames[0].size() > kShmMinFrameBytes) last = keep;
    Message back;
    back.header = keep->header;
    for (const Frame& f : keep->frames)
      back.frames.push_back(Frame::Borrow(f.data(), f.size(), keep));
    EXPECT_TRUE(b->Send(0, std::move(back), absl::InfinitePast()).ok());
  });
  ASSERT_TRUE(a->Send(1, Data(1, {64}), Soon()).ok());  // The offer.
  auto echo = a->Receive(Soon());
  ASSERT_TRUE(echo.ok()) << echo.status();
  EXPECT_TRUE(Intact(*echo, 1, {64}));
  const size_t bytes =
      1536 << 10;  // Most of A's arena: each round needs the block back.
  for (uint64_t seed = 2; seed < 6; ++seed) {
    ASSERT_TRUE(a->Send(1, Data(seed, {bytes}), Soon()).ok());
    auto got = a->Receive(Soon());
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(Intact(*got, seed, {bytes}));
    EXPECT_EQ(got->frames[0].mutable_data(),
              nullptr);  // B's weights, so to say.
    // B may not write it while A reads it (a server's in-place update).
    Message probe = Data(0, {64});
    probe.header.set_keys(0, 0);
    in_use = -1;
    ASSERT_TRUE(a->Send(1, std::move(probe), Soon()).ok());
    ASSERT_TRUE(WaitFor([&] { return in_use >= 0; }));
    EXPECT_EQ(in_use, 1);
    got = Message();
    probe = Data(0, {64});
    probe.header.set_keys(0, 0);
    in_use = -1;
    ASSERT_TRUE(a->Send(1, std::move(probe), Soon()).ok());
    ASSERT_TRUE(WaitFor([&] { return in_use >= 0; }));
    EXPECT_EQ(in_use, 0);
  }
  const TransportStats sa = a->stats(), sb = b->stats();
  EXPECT_EQ(sa.shm_frames_sent, 4);
  EXPECT_EQ(sa.shm_frames_inline, 0);  // The block came back every time.
  EXPECT_EQ(sb.shm_frames_received, 4);
  EXPECT_EQ(sb.shm_frames_sent, 4);  // Back by reference, not copied.
  EXPECT_EQ(sa.shm_frames_received, 4);
  EXPECT_EQ(sb.shm_frames_inline, 0);
  b->SetDataHandler(nullptr);
  last.reset();
}

// Blocks of a refused batch are handed back and not counted as sent.
TEST(ShmTransportTest, RefusedSendsAreNotCountedAsSent) {
  PSTRAIN_SKIP_WITHOUT_TRANSPORT_SHM();
  auto a = Make(2 * kMiB), b = Make(2 * kMiB);
  ASSERT_TRUE(a->Connect(1, b->address()).ok());
  Handshake(a.get(), 1, b.get());
  const std::vector<size_t> sizes = {512 << 10};
  for (int i = 0; i < 20; ++i) {
    std::vector<std::pair<int, Message>> batch;
    batch.emplace_back(1, Data(i, sizes));
    batch.emplace_back(99, Data(i, {64}));
    EXPECT_FALSE(a->SendBatch(std::move(batch), Soon()).ok());
  }
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(a->Send(1, Data(100 + i, sizes), Soon()).ok());
    ASSERT_TRUE(b->Receive(Soon()).ok());
  }
  EXPECT_EQ(a->stats().shm_frames_sent, b->stats().shm_frames_received);
  EXPECT_EQ(a->stats().shm_frames_sent, 3);
}

// Sends messages (seeds after *seed) from `a` to its peer 1 until `b` gets
// one, waiting 200 ms for each: `b` has just restarted at peer 1's address
// and ZeroMQ reconnects in its own time.
absl::StatusOr<Message> SendUntilReceived(Transport* a, Transport* b,
                                          uint64_t* seed,
                                          const std::vector<size_t>& sizes,
                                          absl::Duration total) {
  const absl::Time end = absl::Now() + total;
  absl::Status last = absl::DeadlineExceededError("nothing sent");
  while (absl::Now() < end) {
    ++*seed;
    absl::Status s = a->Send(1, Data(*seed, sizes), Soon());
    if (!s.ok()) return s;
    auto got = b->Receive(absl::Now() + absl::Milliseconds(200));
    if (got.ok()) return got;
    last = got.status();
  }
  return last;
}

// A receiver restarted at the same address maps the arena again: every
// message with frames in the arena names it.
TEST(ShmTransportTest, ARestartedReceiverMapsTheArenaAgain) {
  PSTRAIN_SKIP_WITHOUT_TRANSPORT_SHM();
  auto a = Make(8 * kMiB), b = Make(8 * kMiB);
  ASSERT_TRUE(a->Connect(1, b->address()).ok());
  Handshake(a.get(), 1, b.get());
  const std::vector<size_t> sizes = {64 << 10};
  ASSERT_TRUE(a->Send(1, Data(1, sizes), Soon()).ok());
  ASSERT_TRUE(b->Receive(Soon()).ok());
  ASSERT_EQ(b->stats().shm_frames_received, 1);
  const int port = b->port();
  b.reset();
  TransportOptions o;
  o.bind_port = port;
  b = Make(8 * kMiB, "tok", o);
  ASSERT_NE(b, nullptr);
  uint64_t seed = 100;
  auto got =
      SendUntilReceived(a.get(), b.get(), &seed, sizes, absl::Seconds(5));
  ASSERT_TRUE(got.ok()) << got.status();
  const uint64_t first = static_cast<uint64_t>(got->header.keys(0)) / 1000;
  EXPECT_TRUE(Intact(*got, first, sizes));
  EXPECT_EQ(b->stats().dropped_malformed, 0);
  EXPECT_GE(b->stats().shm_frames_received, 1);
}

// Known limitation (shm.h): the mark a receiver leaves in the sender's
// arena is never cleared. If the process behind a peer's address were
// replaced by one that cannot map the arena (shared memory off, as here),
// the sender would keep moving big frames into the arena and the new
// receiver would drop those messages (counted and logged as malformed)
// until the arena filled and frames fell back to the socket. pstrain nodes
// never restart within a job (a dead node ends it), so this does not
// happen in a job; the fix would be to clear the mark when the DEALER
// disconnects (zmq_socket_monitor). Disabled until then.
TEST(ShmTransportTest,
     DISABLED_ARestartedReceiverWithoutSharedMemoryGetsTheData) {
  PSTRAIN_SKIP_WITHOUT_TRANSPORT_SHM();
  auto a = Make(8 * kMiB), b = Make(8 * kMiB);
  ASSERT_TRUE(a->Connect(1, b->address()).ok());
  Handshake(a.get(), 1, b.get());
  const std::vector<size_t> sizes = {64 << 10};
  const int port = b->port();
  b.reset();
  TransportOptions o;
  o.bind_port = port;
  b = Make(0, "tok", o);
  ASSERT_NE(b, nullptr);
  uint64_t seed = 100;
  auto got =
      SendUntilReceived(a.get(), b.get(), &seed, sizes, absl::Seconds(3));
  ASSERT_TRUE(got.ok()) << got.status() << "; " << b->stats().dropped_malformed
                        << " dropped as malformed";
  EXPECT_EQ(b->stats().dropped_malformed, 0);
}

// ---------------------------------------------------------------------------
// Hostile headers (with the right token) from a raw peer.

std::string Serialize(const proto::Header& h) {
  std::string s;
  h.SerializeToString(&s);
  return s;
}

// A PUSH of `floats` floats in frame 0 (and `extra` more keys of 2 floats),
// with the token, and optionally an arena and descriptors.
proto::Header RawHeader(int64_t key, int64_t floats, int extra = 0) {
  proto::Header h;
  h.set_type(proto::PUSH);
  h.set_token("secret");
  h.add_keys(key);
  h.add_offsets(0);
  h.add_lengths(floats);
  for (int i = 0; i < extra; ++i) {
    h.add_keys(key + 1 + i);
    h.add_offsets(0);
    h.add_lengths(2);
  }
  return h;
}

void AddShmFrame(proto::Header* h, uint32_t frame, uint64_t offset,
                 uint64_t size) {
  proto::ShmFrame* d = h->add_shm_frames();
  d->set_frame(frame);
  d->set_offset(offset);
  d->set_size(size);
}

// A descriptor of a block of the receiver's own arena, as if sent back.
std::string SentBackHeader(int64_t key, uint64_t offset, uint64_t size) {
  proto::Header h = RawHeader(key, static_cast<int64_t>(size / sizeof(float)));
  AddShmFrame(&h, 0, offset, size);
  h.mutable_shm_frames(0)->set_in_receiver_arena(true);
  return Serialize(h);
}

// Naming the receiver's live blocks as "sent back" (they were never copied
// in for the sender) is refused: the block is not handed back, so it is
// not reused under its holder.
TEST(ShmTransportTest, OnlyThePeerABlockWasCopiedForMaySendItBack) {
  PSTRAIN_SKIP_WITHOUT_TRANSPORT_SHM();
  auto b = Make(2 * kMiB, "secret");
  ASSERT_NE(b, nullptr);
  const size_t bytes = kMiB / 2;
  Frame weights = b->NewSharedFrame(bytes);
  ASSERT_EQ(weights.size(), bytes);
  RawPeer raw(b->address(), "secret");
  int sent = 0;
  // Every plausible offset of the first blocks (first fit from the start).
  for (uint64_t offset = 4096; offset < 65536 + 4096; offset += 64) {
    raw.Send({SentBackHeader(1, offset, bytes), ""});
    ++sent;
  }
  ASSERT_TRUE(WaitFor([&] { return b->stats().dropped_malformed == sent; }));
  EXPECT_EQ(b->stats().received, 0);
  // The weights' block is still held: a new one lands elsewhere.
  Frame other = b->NewSharedFrame(bytes);
  ASSERT_EQ(other.size(), bytes);
  EXPECT_NE(other.data(), weights.data());
}

// A peer that names blocks of the receiver's own arena it does not hold is
// refused, and nothing of the receiver's arena is handed back for it.
TEST(ShmTransportTest, BlocksOfTheReceiversArenaMustBeHeld) {
  PSTRAIN_SKIP_WITHOUT_TRANSPORT_SHM();
  auto b = Make(2 * kMiB, "secret");
  ASSERT_NE(b, nullptr);
  RawPeer raw(b->address(), "secret");
  for (uint64_t offset :
       {uint64_t{0}, uint64_t{64}, uint64_t{1} << 40, uint64_t{65536 + 64}}) {
    raw.Send({SentBackHeader(1, offset, 64), ""});
  }
  ASSERT_TRUE(WaitFor([&] { return b->stats().dropped_malformed == 4; }));
  EXPECT_EQ(b->stats().received, 0);
}

// The bytes of the file behind `fd`.
std::string Contents(int fd, size_t bytes) {
  std::string s(bytes, '\0');
  EXPECT_EQ(pread(fd, &s[0], bytes, 0), static_cast<ssize_t>(bytes));
  return s;
}

struct Hostile : ::testing::Test {
  void SetUp() override {
    if (!kTransportShm) {
      GTEST_SKIP() << "transports have no shared memory here";
    }
    b = Make(2 * kMiB, "secret");
    ASSERT_NE(b, nullptr);
    raw = std::make_unique<RawPeer>(b->address(), "secret");
  }
  // Sends a good message (key `key`, frame of 2 floats) and waits for it:
  // everything sent before has been handled.
  void Sync(int64_t key) {
    raw->Send({Serialize(RawHeader(key, 2)), Pattern(key, 8)});
    auto got = b->Receive(Soon());
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->header.keys(0), key);
    ASSERT_EQ(got->frames.size(), 1u);
    EXPECT_EQ(std::string(got->frames[0].data(), 8), Pattern(key, 8));
  }
  // Sends an offer of `arena` with a good inline frame: delivered intact.
  void OfferAndExpectDelivery(const proto::ShmArena& arena, int64_t key) {
    proto::Header h = RawHeader(key, 16);
    *h.mutable_shm_arena() = arena;
    raw->Send({Serialize(h), Pattern(key, 64)});
    auto got = b->Receive(Soon());
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->header.keys(0), key);
    EXPECT_FALSE(got->header.has_shm_arena());
    ASSERT_EQ(got->frames.size(), 1u);
    EXPECT_EQ(std::string(got->frames[0].data(), got->frames[0].size()),
              Pattern(key, 64));
  }

  std::unique_ptr<Transport> b;
  std::unique_ptr<RawPeer> raw;
};

TEST_F(Hostile, FramesWithoutAMappedArenaAreDropped) {
  const std::string empty;
  // (a) Descriptors but no arena.
  proto::Header no_arena = RawHeader(1, 64);
  AddShmFrame(&no_arena, 0, 64 << 10, 256);
  raw->Send({Serialize(no_arena), empty});
  // (b) Descriptors in an arena of a process that does not exist.
  proto::Header unknown = RawHeader(2, 64);
  unknown.mutable_shm_arena()->set_pid(0x7ffffff0);
  unknown.mutable_shm_arena()->set_fd(3);
  unknown.mutable_shm_arena()->set_nonce(0x0123456789abcdefull);
  unknown.mutable_shm_arena()->set_size(2 * kMiB);
  AddShmFrame(&unknown, 0, 64 << 10, 256);
  raw->Send({Serialize(unknown), empty});
  // ... and of this process, but no such arena (nonce of nothing).
  proto::Header self = unknown;
  self.mutable_shm_arena()->set_pid(static_cast<uint32_t>(getpid()));
  raw->Send({Serialize(self), empty});
  Sync(10);
  const TransportStats s = b->stats();
  EXPECT_EQ(s.dropped_malformed, 3);
  EXPECT_EQ(s.received, 1);
  EXPECT_EQ(s.shm_frames_received, 0);
}

// A faithful copy of a real arena (with one 256-byte block in it) in a file
// that is not a pstrain memfd: were it mapped, its nonce, size and block
// would all check out.
struct Forgery {
  std::unique_ptr<ShmArena> original;
  proto::ShmArena identity;  // The original's, but naming the copy's fd.
  uint64_t block_offset = 0;
  std::string bytes;  // What the copy holds.
};

Forgery Forge(int fd) {
  Forgery f;
  f.original = MakeArena(kMiB);
  if (f.original == nullptr) return f;
  const std::string block = Pattern(5, 256);
  f.block_offset =
      static_cast<uint64_t>(f.original->CopyIn(block.data(), block.size()));
  f.identity = f.original->identity();
  f.identity.set_fd(fd);
  f.bytes = Contents(f.original->identity().fd(), f.identity.size());
  EXPECT_EQ(pwrite(fd, f.bytes.data(), f.bytes.size(), 0),
            static_cast<ssize_t>(f.bytes.size()));
  return f;
}

TEST_F(Hostile, OffersOfFilesThatAreNotPstrainArenasAreIgnoredNotDropped) {
  const uint32_t pid = static_cast<uint32_t>(getpid());
  const int memfd = memfd_create("not-pstrain", MFD_CLOEXEC);
  ASSERT_GE(memfd, 0);
  const char* tmpdir = getenv("TEST_TMPDIR");
  const std::string path =
      absl::StrCat(tmpdir != nullptr ? tmpdir : "/tmp", "/shm_test_file");
  const int file =
      open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(file, 0);
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  // Each forgery under its own (pid, nonce): a refusal is remembered per key.
  const Forgery in_memfd = Forge(memfd), in_file = Forge(file);
  ASSERT_NE(in_memfd.original, nullptr);
  ASSERT_NE(in_file.original, nullptr);

  int64_t key = 100;
  for (const Forgery* f : {&in_memfd, &in_file}) {
    for (uint32_t slot : {0u, 1u, ShmArena::kMaxSlots}) {
      proto::ShmArena offer = f->identity;
      offer.set_slot(slot);
      OfferAndExpectDelivery(offer, ++key);
    }
  }
  // Standard streams, a pipe, no such fd: with a nonce of nothing.
  for (int fd : {0, 1, 2, pipe_fds[0], -1, 1 << 30}) {
    for (uint32_t slot :
         {0u, ShmArena::kMaxSlots, std::numeric_limits<uint32_t>::max()}) {
      SCOPED_TRACE(absl::StrCat("fd ", fd, " slot ", slot));
      proto::ShmArena offer;
      offer.set_pid(pid);
      offer.set_fd(fd);
      offer.set_nonce(0xfeedface00000000ull + static_cast<uint64_t>(key));
      offer.set_size(2 * kMiB);
      offer.set_slot(slot);
      OfferAndExpectDelivery(offer, ++key);
    }
  }
  // Frames "in" the copies are refused: they were not mapped.
  for (const Forgery* f : {&in_memfd, &in_file}) {
    proto::Header h = RawHeader(++key, 64);
    *h.mutable_shm_arena() = f->identity;
    AddShmFrame(&h, 0, f->block_offset, 256);
    raw->Send({Serialize(h), ""});
  }
  Sync(++key);
  const TransportStats s = b->stats();
  EXPECT_EQ(s.dropped_malformed, 2);
  EXPECT_EQ(s.shm_frames_received, 0);
  // Nothing was written into the copies (no slot marked).
  EXPECT_EQ(Contents(memfd, in_memfd.bytes.size()), in_memfd.bytes);
  EXPECT_EQ(Contents(file, in_file.bytes.size()), in_file.bytes);
  close(pipe_fds[0]);
  close(pipe_fds[1]);
  close(file);
  close(memfd);
  unlink(path.c_str());
}

// A memfd named like an arena but not sealed against shrinking (a faithful
// copy of an arena, offered by a hostile or broken peer with the token) is
// never mapped, so shrinking it later cannot turn the receiver's reads into
// SIGBUS; a genuine arena is sealed and cannot shrink.
TEST_F(Hostile, AnUnsealedArenaIsNotMappedAndAGenuineOneCannotShrink) {
  const int memfd = memfd_create("pstrain-shm", MFD_CLOEXEC);
  ASSERT_GE(memfd, 0);
  const Forgery f = Forge(memfd);
  ASSERT_NE(f.original, nullptr);
  proto::ShmArena offer = f.identity;
  offer.set_slot(0);
  proto::Header h = RawHeader(1, 64);
  *h.mutable_shm_arena() = offer;
  AddShmFrame(&h, 0, f.block_offset, 256);
  raw->Send({Serialize(h), ""});
  Sync(2);
  EXPECT_EQ(b->stats().dropped_malformed, 1);
  EXPECT_EQ(b->stats().shm_frames_received, 0);
  ASSERT_EQ(ftruncate(memfd, 0), 0);  // Nothing maps it.
  h.set_keys(0, 3);
  raw->Send({Serialize(h), ""});
  Sync(4);
  EXPECT_EQ(b->stats().dropped_malformed, 2);
  close(memfd);
  EXPECT_NE(ftruncate(f.original->identity().fd(), 0), 0);
  EXPECT_EQ(errno, EPERM);
}

// (c), (d): a genuine arena (this process's own, offered by the raw peer)
// is mapped; slots out of range are ignored; then bad descriptors into it
// are each dropped as malformed, and a good one after them is delivered.
TEST_F(Hostile, BadDescriptorsIntoAMappedArenaAreDropped) {
  auto arena = MakeArena(kMiB);
  ASSERT_NE(arena, nullptr);
  const uint64_t size = arena->identity().size();
  proto::ShmArena offer = arena->identity();
  for (uint32_t slot :
       {ShmArena::kMaxSlots, std::numeric_limits<uint32_t>::max()}) {
    offer.set_slot(slot);
    OfferAndExpectDelivery(offer, slot == ShmArena::kMaxSlots ? 1 : 2);
  }
  for (uint32_t slot = 0; slot < ShmArena::kMaxSlots; ++slot) {
    ASSERT_FALSE(arena->Accepted(slot)) << slot;
  }
  offer.set_slot(7);
  OfferAndExpectDelivery(offer, 3);
  EXPECT_TRUE(arena->Accepted(7));
  EXPECT_FALSE(arena->Accepted(6));
  EXPECT_FALSE(arena->Accepted(8));

  // Blocks: `kept`, `dup` and `invalid` are only ever named by bad
  // descriptors that fail before a view exists (Decode refuses a frame
  // described twice, or a size that disagrees with the header, before any
  // block is looked at); `good` is viewed and handed back.
  const std::string bytes[] = {Pattern(21, 256), Pattern(22, 256),
                               Pattern(23, 256), Pattern(24, 256)};
  const uint64_t kept =
      static_cast<uint64_t>(arena->CopyIn(bytes[0].data(), 256));
  const int64_t one_block = arena->bytes_in_use();
  const uint64_t dup =
      static_cast<uint64_t>(arena->CopyIn(bytes[1].data(), 256));
  const uint64_t invalid =
      static_cast<uint64_t>(arena->CopyIn(bytes[2].data(), 256));
  const uint64_t good =
      static_cast<uint64_t>(arena->CopyIn(bytes[3].data(), 256));
  ASSERT_LT(good, size);

  const std::string empty;
  struct Case {
    std::string name;
    std::vector<std::tuple<uint32_t, uint64_t, uint64_t>> descriptors;
    int64_t floats = 64;
    std::vector<std::string> frames = {""};
  };
  const uint64_t max64 = std::numeric_limits<uint64_t>::max();
  const std::vector<Case> cases = {
      {"past the end", {{0, size + 4096, 256}}},
      {"at the end", {{0, size, 256}}},
      {"size wraps around", {{0, kept, max64 - 63}}, 64},
      {"runs over the end", {{0, size - 64, 128}}, 32},
      {"unaligned", {{0, kept + 8, 248}}, 62},
      {"arena header", {{0, 0, 256}}},
      {"arena header + 64", {{0, 64, 256}}},
      {"no block there", {{0, size - 8192, 256}}},
      {"larger than the block", {{0, kept, 64 << 10}}, 16 << 10},
      {"empty", {{0, kept, 0}}, 0},
      {"frame index past the frames", {{1, kept, 256}}},
      {"frame index huge", {{std::numeric_limits<uint32_t>::max(), kept, 256}}},
      {"placeholder not empty", {{0, kept, 256}}, 64, {std::string(256, 'x')}},
      {"no frames at all", {{0, kept, 256}}, 64, {}},
      {"duplicate frame index", {{0, dup, 256}, {0, dup, 256}}, 64, {"", ""}},
      {"sizes disagree with the header", {{0, invalid, 256}}, 32},
  };
  int64_t key = 100;
  for (const Case& c : cases) {
    proto::Header h =
        RawHeader(++key, c.floats, static_cast<int>(c.frames.size()) - 1);
    if (c.frames.size() > 1)
      h.set_lengths(1, 64);  // Duplicate: both 256 bytes.
    *h.mutable_shm_arena() = offer;
    for (const auto& [frame, off, bytes_] : c.descriptors)
      AddShmFrame(&h, frame, off, bytes_);
    std::vector<std::string> parts = {Serialize(h)};
    parts.insert(parts.end(), c.frames.begin(), c.frames.end());
    raw->Send(parts);
  }
  // A good one: one frame in the arena, one inline.
  proto::Header h = RawHeader(++key, 64, 1);
  *h.mutable_shm_arena() = offer;
  AddShmFrame(&h, 0, good, 256);
  raw->Send({Serialize(h), empty, Pattern(25, 8)});
  auto got = b->Receive(Soon());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->header.keys(0), key);
  EXPECT_FALSE(got->header.has_shm_arena());
  EXPECT_EQ(got->header.shm_frames_size(), 0);
  ASSERT_EQ(got->frames.size(), 2u);
  EXPECT_EQ(std::string(got->frames[0].data(), got->frames[0].size()),
            bytes[3]);
  EXPECT_EQ(std::string(got->frames[1].data(), got->frames[1].size()),
            Pattern(25, 8));
  const TransportStats s = b->stats();
  EXPECT_EQ(s.dropped_malformed, static_cast<int64_t>(cases.size()));
  EXPECT_EQ(s.shm_frames_received, 1);  // The delivered frame.
  EXPECT_EQ(s.received, 4);
  // The blocks viewed by dropped messages, and the delivered one once it is
  // dropped, are handed back: only `kept`, `dup`, `invalid` (and a new
  // probe) remain.
  got = Message();
  Reclaim(arena.get());
  const int64_t probe = arena->CopyIn(bytes[0].data(), 256);
  ASSERT_GE(probe, 0);
  EXPECT_EQ(arena->bytes_in_use(), 4 * one_block);
  // The transport survives and keeps delivering.
  Sync(++key);
}

}  // namespace
}  // namespace transport
}  // namespace pstrain
