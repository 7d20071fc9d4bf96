#include "transport/shm.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "util/escape.h"
#include "util/status.h"

namespace pstrain {
namespace transport {
namespace {

constexpr uint64_t kArenaMagic = 0x41'6e'69'61'72'74'73'70;  // "pstrainA"
constexpr uint32_t kBlockMagic = 0x31'42'73'70;              // "psB1"
constexpr uint64_t kAlign = 64;
constexpr uint64_t kBlockHeaderBytes = 64;
constexpr char kMemfdName[] = "pstrain-shm";
constexpr uint64_t kReclaimBytes = 16 << 20;

uint64_t RoundUp(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

// At offset 0 of an arena. Written once by its owner, except `accepted`,
// which receivers set.
struct ArenaHeader {
  uint64_t magic;
  uint64_t nonce;
  uint64_t size;
  uint32_t accepted[ShmArena::kMaxSlots];
};
const uint64_t kDataStart = RoundUp(sizeof(ArenaHeader), 4096);

// kBlockHeaderBytes before each block's data.
struct BlockHeader {
  uint32_t magic;
  int32_t refs;    // Receivers still reading the block (atomic).
  uint64_t bytes;  // Usable bytes after the header.
  uint32_t slot;   // The peer it was copied in for (ShmArena::kMaxSlots: none).
};
static_assert(sizeof(BlockHeader) <= kBlockHeaderBytes, "block header");

}  // namespace

absl::StatusOr<std::unique_ptr<ShmArena>> ShmArena::Create(size_t bytes) {
  if (bytes < (size_t{1} << 20)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a shared-memory arena needs at least 1 MiB, not ", bytes, " bytes"));
  }
  bytes = RoundUp(bytes, 4096);
  std::unique_ptr<ShmArena> a(new ShmArena);
  a->fd_ = memfd_create(kMemfdName, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (a->fd_ < 0)
    return ErrnoToStatus(errno, "memfd_create for the shared-memory arena");
  if (ftruncate(a->fd_, static_cast<off_t>(bytes)) != 0) {
    return ErrnoToStatus(
        errno,
        absl::StrCat("sizing the shared-memory arena to ", bytes, " bytes"));
  }
  // Sealed at its size: no one can shrink it under a receiver's mapping
  // (which would turn its reads into SIGBUS). Receivers check the seal.
  if (fcntl(a->fd_, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) !=
      0) {
    return ErrnoToStatus(errno, "sealing the shared-memory arena");
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, a->fd_, 0);
  if (p == MAP_FAILED) {
    return ErrnoToStatus(
        errno,
        absl::StrCat("mapping the shared-memory arena (", bytes, " bytes)"));
  }
  a->base_ = static_cast<char*>(p);
  a->size_ = bytes;
  std::random_device rd;
  uint64_t nonce = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  if (nonce == 0) nonce = 1;
  auto* h = reinterpret_cast<ArenaHeader*>(
      a->base_);  // A fresh memfd reads as zeros.
  h->magic = kArenaMagic;
  h->nonce = nonce;
  h->size = bytes;
  a->identity_.set_pid(static_cast<uint32_t>(getpid()));
  a->identity_.set_fd(a->fd_);
  a->identity_.set_nonce(nonce);
  a->identity_.set_size(bytes);
  {
    // Not shared yet; the lock is for the analysis.
    MutexLock lock(&a->mu_);
    a->free_[kDataStart] = bytes - kDataStart;
  }
  return a;
}

ShmArena::~ShmArena() {
  // Receivers that still map the arena keep its pages.
  if (base_ != nullptr) munmap(base_, size_);
  if (fd_ >= 0) close(fd_);
}

bool ShmArena::Accepted(uint32_t slot) const {
  if (slot >= kMaxSlots) return false;
  const auto* h = reinterpret_cast<const ArenaHeader*>(base_);
  return __atomic_load_n(&h->accepted[slot], __ATOMIC_ACQUIRE) != 0;
}

char* ShmArena::Allocate(size_t size) {
  const uint64_t need =
      kBlockHeaderBytes + RoundUp(std::max<size_t>(size, 1), kAlign);
  MutexLock lock(&mu_);
  // Reclaiming scans every block handed out, so it runs once per
  // kReclaimBytes handed out (the warm start of the arena is reused) and
  // whenever nothing fits.
  if (since_reclaim_ >= kReclaimBytes) ReclaimLocked();
  // First fit: the lowest free block, so pages far up the arena are
  // touched only under load.
  auto first_fit = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = free_.begin();
    while (it != free_.end() && it->second < need) ++it;
    return it;
  };
  auto it = first_fit();
  if (it == free_.end()) {
    ReclaimLocked();
    it = first_fit();
  }
  if (it == free_.end()) return nullptr;
  since_reclaim_ += need;
  const uint64_t at = it->first;
  const uint64_t len = it->second;
  free_.erase(it);
  if (len > need) free_[at + need] = len - need;
  used_[at] = need;
  used_bytes_ += static_cast<int64_t>(need);
  auto* b = reinterpret_cast<BlockHeader*>(base_ + at);
  b->magic = kBlockMagic;
  b->bytes = need - kBlockHeaderBytes;
  b->slot = kMaxSlots;
  __atomic_store_n(&b->refs, 1, __ATOMIC_RELAXED);
  return base_ + at + kBlockHeaderBytes;
}

int64_t ShmArena::CopyIn(const void* data, size_t size,
                         uint32_t receiver_slot) {
  char* block = Allocate(size);
  if (block == nullptr) return -1;
  reinterpret_cast<BlockHeader*>(block - kBlockHeaderBytes)->slot =
      receiver_slot;
  // The block is ours until the receiver lets it go.
  std::memcpy(block, data, size);
  return static_cast<int64_t>(block - base_);
}

uint64_t ShmArena::OffsetOf(const void* data) const {
  const char* p = static_cast<const char*>(data);
  CHECK(p >= base_ && p < base_ + size_) << "not in the arena";
  return static_cast<uint64_t>(p - base_);
}

int64_t ShmArena::AddRef(const void* data) {
  const char* p = static_cast<const char*>(data);
  if (p < base_ + kDataStart + kBlockHeaderBytes || p >= base_ + size_)
    return -1;
  const uint64_t offset = static_cast<uint64_t>(p - base_);
  MutexLock lock(&mu_);
  auto it = used_.find(offset - kBlockHeaderBytes);
  if (it == used_.end()) return -1;
  auto* b = reinterpret_cast<BlockHeader*>(base_ + it->first);
  __atomic_fetch_add(&b->refs, 1,
                     __ATOMIC_RELAXED);  // The holder has one already.
  return static_cast<int64_t>(offset);
}

int ShmArena::Refs(uint64_t offset) const {
  const auto* b =
      reinterpret_cast<const BlockHeader*>(base_ + offset - kBlockHeaderBytes);
  return __atomic_load_n(&b->refs, __ATOMIC_ACQUIRE);
}

void ShmArena::Release(uint64_t offset) {
  MutexLock lock(&mu_);
  auto it = used_.find(offset - kBlockHeaderBytes);
  if (it == used_.end()) {
    // Only a peer that sent back a reference it never held gets here.
    LOG_EVERY_N(ERROR, 100) << "shared-memory block at " << offset
                            << " handed back more often than handed out";
    return;
  }
  auto* b = reinterpret_cast<BlockHeader*>(base_ + it->first);
  __atomic_fetch_sub(&b->refs, 1, __ATOMIC_RELEASE);
}

const char* ShmArena::Referenced(uint64_t offset, size_t size,
                                 uint32_t slot) const {
  if (offset < kBlockHeaderBytes || offset >= size_ || !Accepted(slot))
    return nullptr;
  MutexLock lock(&mu_);
  auto it = used_.find(offset - kBlockHeaderBytes);
  if (it == used_.end() || it->second - kBlockHeaderBytes < size)
    return nullptr;
  const auto* b = reinterpret_cast<const BlockHeader*>(base_ + it->first);
  if (b->slot != slot) return nullptr;  // Not that peer's to send back.
  if (__atomic_load_n(&b->refs, __ATOMIC_ACQUIRE) <= 0) return nullptr;
  return base_ + offset;
}

int64_t ShmArena::bytes_in_use() const {
  MutexLock lock(&mu_);
  return used_bytes_;
}

void ShmArena::ReclaimLocked() {
  since_reclaim_ = 0;
  for (auto it = used_.begin(); it != used_.end();) {
    auto* b = reinterpret_cast<BlockHeader*>(base_ + it->first);
    if (__atomic_load_n(&b->refs, __ATOMIC_ACQUIRE) <= 0) {
      used_bytes_ -= static_cast<int64_t>(it->second);
      FreeLocked(it->first, it->second);
      it = used_.erase(it);
    } else {
      ++it;
    }
  }
}

void ShmArena::FreeLocked(uint64_t offset, uint64_t size) {
  auto next = free_.lower_bound(offset);
  if (next != free_.end() && offset + size == next->first) {
    size += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == offset) {
      prev->second += size;
      return;
    }
  }
  free_[offset] = size;
}

struct ShmPeers::Mapping {
  char* base = nullptr;
  uint64_t size = 0;
  // Data offsets of the blocks viewed by live frames (views die on any
  // thread).
  Mutex mu;
  std::multiset<uint64_t> viewed ABSL_GUARDED_BY(mu);
  ~Mapping() {
    if (base != nullptr) munmap(base, size);
  }
};

namespace {

// Maps the arena `o` names, checking that it is the one offered.
absl::Status MapArena(const proto::ShmArena& o, char** base) {
  if (o.size() < kDataStart + kBlockHeaderBytes ||
      o.size() > (uint64_t{1} << 40)) {
    return absl::InvalidArgumentError(
        absl::StrCat("implausible arena size ", o.size()));
  }
  const std::string path = absl::StrCat("/proc/", o.pid(), "/fd/", o.fd());
  char link[256];
  const ssize_t n = readlink(path.c_str(), link, sizeof(link) - 1);
  if (n < 0) return ErrnoToStatus(errno, path);
  link[n] = '\0';
  // Only ever open a pstrain memfd: the pid may be another host's.
  if (!absl::StartsWith(link, absl::StrCat("/memfd:", kMemfdName))) {
    return absl::NotFoundError(
        absl::StrCat(path, " is not a pstrain arena (another host?)"));
  }
  const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, absl::StrCat("opening ", path));
  struct stat st;
  if (fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) != o.size()) {
    close(fd);
    return absl::NotFoundError(
        absl::StrCat(path, " does not have the offered size"));
  }
  const int seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0 || (seals & F_SEAL_SHRINK) == 0) {
    close(fd);
    return absl::NotFoundError(
        absl::StrCat(path, " is not sealed against shrinking"));
  }
  void* p = mmap(nullptr, o.size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int e = errno;
  close(fd);
  if (p == MAP_FAILED) return ErrnoToStatus(e, absl::StrCat("mapping ", path));
  const auto* h = static_cast<const ArenaHeader*>(p);
  if (h->magic != kArenaMagic || h->nonce != o.nonce() || h->size != o.size()) {
    munmap(p, o.size());
    return absl::NotFoundError(
        absl::StrCat(path, " is another arena (another host?)"));
  }
  *base = static_cast<char*>(p);
  return absl::OkStatus();
}

}  // namespace

bool ShmPeers::Accept(const proto::ShmArena& offer, const std::string& from) {
  MutexLock lock(&mu_);
  const Key key(offer.pid(), offer.nonce());
  std::shared_ptr<Mapping> m;
  auto it = mapped_.find(key);
  if (it != mapped_.end()) {
    m = it->second;
  } else {
    if (failed_.count(key) > 0) return false;
    char* base = nullptr;
    const absl::Status s = MapArena(offer, &base);
    if (!s.ok()) {
      if (failed_.size() >= 4096)
        failed_.clear();  // Bounded, whatever arrives.
      failed_.insert(key);
      LOG(INFO) << "no shared memory with " << EscapeForLog(from) << " ("
                << s.message() << "): its data comes over TCP";
      return false;
    }
    m = std::make_shared<Mapping>();
    m->base = base;
    m->size = offer.size();
    mapped_[key] = m;
    arena_of_[from] = key;
    VLOG(1) << "mapped the shared-memory arena of " << EscapeForLog(from)
            << " (" << offer.size() << " bytes)";
  }
  if (offer.slot() < ShmArena::kMaxSlots) {
    auto* h = reinterpret_cast<ArenaHeader*>(m->base);
    __atomic_store_n(&h->accepted[offer.slot()], 1, __ATOMIC_RELEASE);
  }
  return true;
}

std::string ShmPeers::Resolve(Message* msg,
                              const std::shared_ptr<ShmArena>& own,
                              uint32_t own_slot) {
  MutexLock lock(&mu_);
  proto::Header& h = msg->header;
  std::string why;
  // Blocks of our own arena, sent back by the peer that holds them.
  for (const proto::ShmFrame& d : h.shm_frames()) {
    if (!d.in_receiver_arena()) continue;
    const char* data = own == nullptr
                           ? nullptr
                           : own->Referenced(d.offset(), d.size(), own_slot);
    if (d.frame() >= msg->frames.size() || msg->frames[d.frame()].size() != 0 ||
        d.size() == 0 || data == nullptr) {
      return absl::StrCat("frame ", d.frame(), " names no block of ", d.size(),
                          " bytes at offset ", d.offset(),
                          " in this process's arena");
    }
    msg->frames[d.frame()] = Frame::Borrow(
        data, d.size(),
        std::shared_ptr<const void>(
            data,
            [own, offset = d.offset()](const void*) { own->Release(offset); }));
  }
  bool peer_frames = false;
  for (const proto::ShmFrame& d : h.shm_frames())
    peer_frames |= !d.in_receiver_arena();
  if (peer_frames) {
    auto it = mapped_.find(Key(h.shm_arena().pid(), h.shm_arena().nonce()));
    if (it == mapped_.end()) {
      why = "shared-memory frames in an arena this process has not mapped";
    } else {
      const std::shared_ptr<Mapping>& m = it->second;
      for (const proto::ShmFrame& d : h.shm_frames()) {
        if (d.in_receiver_arena()) continue;
        const uint64_t off = d.offset(), size = d.size();
        if (d.frame() >= msg->frames.size() ||
            msg->frames[d.frame()].size() != 0 || size == 0) {
          why = absl::StrCat(
              "shared-memory frame ", d.frame(), " of ", msg->frames.size(),
              " frames is not an empty placeholder or has no bytes");
          break;
        }
        if (off % kAlign != 0 || off < kDataStart + kBlockHeaderBytes ||
            off > m->size || size > m->size - off) {
          why =
              absl::StrCat("shared-memory frame at ", off, " (", size,
                           " bytes) outside the arena of ", m->size, " bytes");
          break;
        }
        auto* b =
            reinterpret_cast<BlockHeader*>(m->base + off - kBlockHeaderBytes);
        if (b->magic != kBlockMagic || b->bytes < size) {
          why = absl::StrCat("no block of ", size, " bytes at offset ", off);
          break;
        }
        char* data = m->base + off;
        {
          MutexLock view_lock(&m->mu);
          m->viewed.insert(off);
        }
        std::shared_ptr<const void> hand_back(
            data, [keep = m, b, off](const void*) {
              {
                MutexLock lock(&keep->mu);
                keep->viewed.erase(keep->viewed.find(off));
              }
              __atomic_fetch_sub(&b->refs, 1, __ATOMIC_RELEASE);
            });
        // A block the sender keeps (by reference) is read-only here.
        msg->frames[d.frame()] =
            d.by_reference() ? Frame::Borrow(data, size, std::move(hand_back))
                             : Frame::View(data, size, std::move(hand_back));
      }
    }
  }
  h.clear_shm_arena();
  h.clear_shm_frames();
  return why;
}

void ShmPeers::FindViewed(
    const std::string& address, const void* data, size_t size,
    const std::function<void(Mapping*, uint64_t)>& found) const {
  MutexLock peers_lock(&mu_);
  auto a = arena_of_.find(address);
  if (a == arena_of_.end()) return;
  auto it = mapped_.find(a->second);
  if (it == mapped_.end()) return;
  Mapping* m = it->second.get();
  const char* p = static_cast<const char*>(data);
  if (p < m->base || p >= m->base + m->size) return;
  const uint64_t off = static_cast<uint64_t>(p - m->base);
  // Viewed: a block start Resolve checked, referenced while the view lives.
  MutexLock lock(&m->mu);
  if (m->viewed.count(off) == 0) return;
  const auto* b =
      reinterpret_cast<const BlockHeader*>(m->base + off - kBlockHeaderBytes);
  if (b->bytes < size) return;
  found(m, off);
}

bool ShmPeers::Viewing(const std::string& address, const void* data,
                       size_t size) const {
  bool viewing = false;
  FindViewed(address, data, size, [&](Mapping*, uint64_t) { viewing = true; });
  return viewing;
}

int64_t ShmPeers::AddRefForOwner(const std::string& address, const void* data,
                                 size_t size) {
  int64_t offset = -1;
  FindViewed(address, data, size, [&](Mapping* m, uint64_t off) {
    // Under m->mu with the block viewed here: its reference count is at
    // least one (a view's deleter leaves `viewed` before it lets go).
    auto* b = reinterpret_cast<BlockHeader*>(m->base + off - kBlockHeaderBytes);
    __atomic_fetch_add(&b->refs, 1, __ATOMIC_RELAXED);
    offset = static_cast<int64_t>(off);
  });
  return offset;
}

bool ShmPeers::SentBackInUse(const void* data) const {
  const char* p = static_cast<const char*>(data);
  MutexLock peers_lock(&mu_);
  for (const auto& [key, m] : mapped_) {
    if (p < m->base || p >= m->base + m->size) continue;
    const uint64_t off = static_cast<uint64_t>(p - m->base);
    MutexLock lock(&m->mu);
    const size_t views = m->viewed.count(off);
    if (views == 0) return false;
    const auto* b =
        reinterpret_cast<const BlockHeader*>(m->base + off - kBlockHeaderBytes);
    // One reference per view here; the rest are messages sent back.
    return __atomic_load_n(&b->refs, __ATOMIC_ACQUIRE) >
           static_cast<int32_t>(views);
  }
  return false;
}

void ShmPeers::ReleaseForOwner(const std::string& address, uint64_t offset) {
  MutexLock lock(&mu_);
  auto a = arena_of_.find(address);
  auto it = a == arena_of_.end() ? mapped_.end() : mapped_.find(a->second);
  // The peer's arena changed meanwhile (a restarted peer): nothing to do.
  if (it == mapped_.end() || offset < kDataStart + kBlockHeaderBytes ||
      offset >= it->second->size) {
    return;
  }
  auto* b = reinterpret_cast<BlockHeader*>(it->second->base + offset -
                                           kBlockHeaderBytes);
  if (b->magic != kBlockMagic) return;
  __atomic_fetch_sub(&b->refs, 1, __ATOMIC_RELEASE);
}

}  // namespace transport
}  // namespace pstrain
