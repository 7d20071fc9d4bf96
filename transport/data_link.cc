#include "transport/data_link.h"

#include <limits.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "proto/messages.pb.h"
#include "transport/wire.h"

namespace pstrain {
namespace transport {
namespace {

void PutU32(std::string* s, uint32_t v) {
  char b[4];
  for (int i = 0; i < 4; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  s->append(b, 4);
}
void PutU64(std::string* s, uint64_t v) {
  char b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  s->append(b, 8);
}
uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
uint64_t GetU64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

// Bytes one ReplyDests::ReadInto takes at most (its lock is held meanwhile).
constexpr size_t kMaxReadIntoBytes = size_t{1} << 20;
static_assert(kMaxReadIntoBytes >= kLinkMaxRecordBytes,
              "a whole record must fit one ReadInto to be opened in place");

// Ciphertext an encrypted link's reader buffers (at least one record).
constexpr size_t kRawBytes = 2 * (kLinkMaxRecordBytes + kLinkRecordOverhead);
// An encrypted link's writer's record buffer (it seals one record at a time).
constexpr size_t kOutBytes = kLinkRecordBytes + kLinkRecordOverhead;
// Pieces (a head, a frame) of at least this many bytes are sealed from
// their own memory in records of their own; smaller ones are gathered.
constexpr size_t kSealDirectBytes = 16 << 10;
// A piece of at least kEdgeFrameBytes starts and ends with records of
// kEdgeRecordBytes: its first bytes leave after sealing 64 KiB rather than
// 256 KiB, and the receiver has its last bytes after opening 64 KiB (each
// 40 us sooner at 5 GB/s, 9% of a 1 MiB frame's time on a 10 Gbit/s link).
constexpr size_t kEdgeRecordBytes = 64 << 10;
constexpr size_t kEdgeFrameBytes = 4 * kEdgeRecordBytes;

// Plaintext bytes of the next record of a piece sealed from its own memory:
// `done` of `size` bytes sealed, `room` the most a record may take now.
size_t DirectRecordBytes(size_t size, size_t done, size_t room) {
  const size_t left = size - done;
  size_t take = std::min(left, room);
  if (size < kEdgeFrameBytes) return take;
  if (done == 0) return std::min(take, kEdgeRecordBytes);
  // The last record: kEdgeRecordBytes, the one before it the rest.
  if (left > kEdgeRecordBytes && left - take < kEdgeRecordBytes) {
    take = left - kEdgeRecordBytes;
  }
  return take;
}

}  // namespace

std::string EncodeLinkHello(const std::string& token,
                            const std::string& identity, uint64_t zmq_before,
                            uint32_t flags) {
  std::string s;
  PutU32(&s, kLinkHelloMagic);
  PutU32(&s, static_cast<uint32_t>(token.size()));
  PutU32(&s, static_cast<uint32_t>(identity.size()));
  PutU32(&s, flags);
  PutU64(&s, zmq_before);
  s += token;
  s += identity;
  return s;
}

std::string EncodeLinkHead(const std::string& header,
                           const std::vector<Frame>& frames) {
  std::string s;
  s.reserve(kLinkPreambleBytes + 8 * frames.size() + header.size());
  PutU32(&s, kLinkMessageMagic);
  PutU32(&s, static_cast<uint32_t>(header.size()));
  PutU32(&s, static_cast<uint32_t>(frames.size()));
  PutU32(&s, 0);
  for (const Frame& f : frames) PutU64(&s, f.size());
  s += header;
  return s;
}

void ReplyDests::Add(uint64_t request_id,
                     std::vector<absl::Span<char>> frames) {
  auto d = std::make_shared<ReplyDest>();
  d->frames = std::move(frames);
  MutexLock lock(&mu_);
  by_id_[request_id] = std::move(d);
}

void ReplyDests::Cancel(uint64_t request_id) {
  MutexLock lock(&mu_);
  by_id_.erase(request_id);
  auto it = taken_.find(request_id);
  if (it != taken_.end()) {
    it->second->cancelled = true;
    taken_.erase(it);
  }
}

std::shared_ptr<ReplyDest> ReplyDests::Take(uint64_t request_id) {
  MutexLock lock(&mu_);
  auto it = by_id_.find(request_id);
  if (it == by_id_.end()) return nullptr;
  std::shared_ptr<ReplyDest> d = std::move(it->second);
  by_id_.erase(it);
  taken_[request_id] = d;
  return d;
}

void ReplyDests::Done(uint64_t request_id) {
  MutexLock lock(&mu_);
  taken_.erase(request_id);
}

size_t ReplyDests::size() const {
  MutexLock lock(&mu_);
  return by_id_.size() + taken_.size();
}

ssize_t ReplyDests::ReadInto(
    ReplyDest* dest, size_t i, size_t offset, size_t n,
    const std::function<ssize_t(char*, size_t)>& read) {
  MutexLock lock(&mu_);
  if (dest->cancelled) return -2;
  return read(dest->frames[i].data() + offset, std::min(n, kMaxReadIntoBytes));
}

LinkReader::LinkReader(int fd, std::string token, int64_t max_frame_bytes,
                       ReplyDests* dests,
                       std::function<bool(const std::string&)> check_identity,
                       const LinkKeys* keys)
    : fd_(fd),
      token_(std::move(token)),
      max_frame_bytes_(max_frame_bytes),
      dests_(dests),
      check_identity_(std::move(check_identity)),
      encrypted_(keys != nullptr),
      ahead_(new char[kLinkReadAheadBytes]),
      keys_(keys) {
  small_.resize(kLinkHelloFixedBytes);
  if (keys_ != nullptr) {
    stage_ = Stage::kHs1;
    small_.resize(kLinkHs1Bytes);
    hs_ = std::make_unique<LinkListenerHandshake>(keys_);
  }
}

std::unique_ptr<LinkReader> LinkReader::Reverse(
    int fd, std::string token, int64_t max_frame_bytes, ReplyDests* dests,
    std::string identity, std::unique_ptr<LinkRecordCipher> opener) {
  auto r = std::unique_ptr<LinkReader>(
      new LinkReader(fd, std::move(token), max_frame_bytes, dests,
                     [identity = std::move(identity)](const std::string& id) {
                       return id == identity;
                     }));
  r->reverse_side_ = true;
  if (opener != nullptr) {
    r->encrypted_ = true;
    r->cipher_ = std::move(opener);
    r->raw_.reset(new char[kRawBytes]);
    r->plain_.reset(new char[kLinkMaxRecordBytes]);
  }
  return r;
}

bool LinkReader::buffered() const {
  if (!encrypted_) return ahead_pos_ < ahead_end_;
  if (plain_pos_ < plain_end_) return true;
  if (raw_end_ - raw_pos_ < 4) return false;
  const size_t n = GetU32(raw_.get() + raw_pos_);
  return raw_end_ - raw_pos_ >= n + kLinkRecordOverhead;
}

ssize_t LinkReader::RecvRecords(char* dst, size_t n) {
  if (plain_pos_ < plain_end_) {
    const size_t take = std::min(n, plain_end_ - plain_pos_);
    std::memcpy(dst, plain_.get() + plain_pos_, take);
    plain_pos_ += take;
    return static_cast<ssize_t>(take);
  }
  // A whole record in raw_.
  size_t len = 0;
  while (true) {
    const size_t have = raw_end_ - raw_pos_;
    if (have >= 4) {
      len = GetU32(raw_.get() + raw_pos_);
      if (len == 0 || len > kLinkMaxRecordBytes) {
        record_error_ = absl::StrCat("a record claims ", len, " bytes; 1 to ",
                                     kLinkMaxRecordBytes, " are accepted");
        malformed_ = true;
        errno = EBADMSG;
        return -1;
      }
      if (have >= len + kLinkRecordOverhead) break;
    }
    if (raw_pos_ > 0 && kRawBytes - raw_end_ < kLinkMaxRecordBytes) {
      std::memmove(raw_.get(), raw_.get() + raw_pos_, have);
      raw_pos_ = 0;
      raw_end_ = have;
    }
    if (drained_) {
      errno = EAGAIN;
      return -1;
    }
    const size_t want = kRawBytes - raw_end_;
    const ssize_t got = recv(fd_, raw_.get() + raw_end_, want, MSG_DONTWAIT);
    if (got <= 0) return got;
    drained_ = static_cast<size_t>(got) < want;
    raw_end_ += static_cast<size_t>(got);
  }
  // Straight into `dst` when the whole record goes there.
  char* out = n >= len ? dst : plain_.get();
  if (!cipher_->Open(raw_.get() + raw_pos_, len, out)) {
    record_error_ = absl::StrCat(
        "record ", cipher_->records() + 1,
        " failed authentication (its tag does not check: altered, replayed "
        "or out of order)");
    auth_failed_ = true;
    errno = EBADMSG;
    return -1;
  }
  raw_pos_ += len + kLinkRecordOverhead;
  if (raw_pos_ == raw_end_) raw_pos_ = raw_end_ = 0;
  if (out == dst) return static_cast<ssize_t>(len);
  const size_t take = std::min(n, len);
  std::memcpy(dst, plain_.get(), take);
  plain_pos_ = take;
  plain_end_ = len;
  return static_cast<ssize_t>(take);
}

ssize_t LinkReader::Recv(char* dst, size_t n) {
  if (encrypted_) {
    return cipher_ != nullptr ? RecvRecords(dst, n)
                              : recv(fd_, dst, n, MSG_DONTWAIT);
  }
  if (ahead_pos_ == ahead_end_ && n < kLinkReadAheadBytes) {
    // Small reads go through the read-ahead buffer: a small message's
    // preamble, header and frames then take one recv().
    if (drained_) {
      errno = EAGAIN;
      return -1;
    }
    const ssize_t got =
        recv(fd_, ahead_.get(), kLinkReadAheadBytes, MSG_DONTWAIT);
    if (got <= 0) return got;
    drained_ = static_cast<size_t>(got) < kLinkReadAheadBytes;
    ahead_pos_ = 0;
    ahead_end_ = static_cast<size_t>(got);
  }
  if (ahead_pos_ < ahead_end_) {
    const size_t take = std::min(n, ahead_end_ - ahead_pos_);
    std::memcpy(dst, ahead_.get() + ahead_pos_, take);
    ahead_pos_ += take;
    return static_cast<ssize_t>(take);
  }
  return recv(fd_, dst, n, MSG_DONTWAIT);
}

LinkReader::~LinkReader() {
  if (dest_ != nullptr) dests_->Done(request_id_);
  shutdown(fd_, SHUT_RDWR);
  close(fd_);
}

bool LinkReader::mid_message() const {
  if (reverse_side_ && stage_ == Stage::kHello && small_got_ == 0 &&
      raw_end_ == raw_pos_) {
    return false;  // The listener never adopted the link.
  }
  return stage_ != Stage::kPreamble || small_got_ > 0 || raw_end_ > raw_pos_ ||
         plain_pos_ < plain_end_;
}

std::string LinkReader::Progress() const {
  switch (stage_) {
    case Stage::kHs1:
    case Stage::kHs3:
      return absl::StrCat("in the encryption handshake, ", small_got_,
                          " bytes read");
    case Stage::kHello:
    case Stage::kHelloBody:
      return absl::StrCat("in the hello, ", small_got_, " bytes read");
    case Stage::kPreamble:
      return absl::StrCat("in a message preamble, ", small_got_, " of ",
                          kLinkPreambleBytes, " bytes read");
    case Stage::kSizes:
    case Stage::kHeader:
      return absl::StrCat("in a message head, ", small_got_, " of ",
                          small_.size(), " bytes read");
    case Stage::kFrame:
      return absl::StrCat(
          "in frame ", frame_ + 1, " of ", nframes_, ", ", frame_got_, " of ",
          frame_ < sizes_.size() ? sizes_[frame_] : 0, " bytes read");
  }
  return "";
}

int LinkReader::FillSmall(size_t want, std::string* error, State* state) {
  if (small_.size() != want) small_.resize(want);
  while (small_got_ < want) {
    const ssize_t n = Recv(&small_[small_got_], want - small_got_);
    if (n > 0) {
      small_got_ += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    if (n == 0 && !mid_message()) {
      *state = State::kClosed;
      return -1;
    }
    *error = n == 0 ? absl::StrCat("closed by the peer ", Progress())
             : !record_error_.empty()
                 ? absl::StrCat(record_error_, " ", Progress())
                 : absl::StrCat(strerror(errno), " ", Progress());
    malformed_ = !record_error_.empty() && !auth_failed_;
    *state = State::kError;
    return -1;
  }
  return 1;
}

void LinkReader::StartFrame() {
  frame_got_ = 0;
  buf_.reset();
  if (frame_ >= nframes_) return;
  const uint64_t size = sizes_[frame_];
  if (dest_ != nullptr && !dest_lost_ && frame_ < dest_->frames.size() &&
      dest_->frames[frame_].size() == size) {
    return;  // Straight into the destination.
  }
  if (size > 0) buf_ = std::shared_ptr<char[]>(new char[size]);
}

LinkReader::State LinkReader::Read(std::vector<Frame>* parts,
                                   std::string* error) {
  const State st = ReadSome(parts, error);
  if (st == State::kAgain) SetLowWater();
  return st;
}

void LinkReader::SetLowWater() {
  // While a big plaintext frame comes in, poll() reports the socket only
  // once kLinkLowWaterBytes of it (or all the rest) are there: a loop turn
  // that waits costs a context switch, and woken for every few segments
  // the I/O thread read 61 KB per recv() instead of 94 KB and moved 16 MiB
  // pulls 20% slower. The whole frame is on its way, so the mark is met;
  // a peer that closes or fails still wakes poll().
  int want = 1;
  if (!encrypted_ && stage_ == Stage::kFrame && frame_ < nframes_) {
    const uint64_t rest = sizes_[frame_] - frame_got_;
    if (rest >= 2 * kLinkLowWaterBytes) want = kLinkLowWaterBytes;
  }
  if (want == low_water_) return;
  if (setsockopt(fd_, SOL_SOCKET, SO_RCVLOWAT, &want, sizeof(want)) == 0) {
    low_water_ = want;
  }
}

LinkReader::State LinkReader::ReadSome(std::vector<Frame>* parts,
                                       std::string* error) {
  State st = State::kAgain;
  while (true) {
    switch (stage_) {
      case Stage::kHs1:
      case Stage::kHs3: {
        const State h = Handshake(error);
        if (h != State::kMessage) return h;
        break;
      }
      case Stage::kHello: {
        const int r = FillSmall(kLinkHelloFixedBytes, error, &st);
        if (r <= 0) return r == 0 ? State::kAgain : st;
        const char* p = small_.data();
        token_len_ = GetU32(p + 4);
        identity_len_ = GetU32(p + 8);
        hello_flags_ = GetU32(p + 12);
        zmq_before_ = GetU64(p + 16);
        if (GetU32(p) != kLinkHelloMagic || token_len_ > kLinkMaxTokenBytes ||
            identity_len_ > kLinkMaxIdentityBytes) {
          *error = "not a pstrain data-link hello (magic or sizes off)";
          return State::kRefused;
        }
        small_got_ = 0;
        stage_ = Stage::kHelloBody;
        break;
      }
      case Stage::kHelloBody: {
        const int r = FillSmall(token_len_ + identity_len_, error, &st);
        if (r <= 0) return r == 0 ? State::kAgain : st;
        identity_ = small_.substr(token_len_);
        if (!ConstantTimeEquals(absl::string_view(small_.data(), token_len_),
                                token_)) {
          *error = "the hello does not carry the job token";
          return State::kRefused;
        }
        if (!check_identity_(identity_)) {
          *error = reverse_side_
                       ? "the hello names another node than the one "
                         "connected to"
                       : "the hello names a node this one has no connection "
                         "to";
          return State::kRefused;
        }
        small_got_ = 0;
        stage_ = Stage::kPreamble;
        break;
      }
      case Stage::kPreamble: {
        const int r = FillSmall(kLinkPreambleBytes, error, &st);
        if (r <= 0) return r == 0 ? State::kAgain : st;
        const char* p = small_.data();
        header_len_ = GetU32(p + 4);
        nframes_ = GetU32(p + 8);
        const uint64_t max_header = std::min<uint64_t>(
            kLinkMaxHeaderBytes, static_cast<uint64_t>(max_frame_bytes_));
        if (GetU32(p) != kLinkMessageMagic || header_len_ > max_header ||
            nframes_ > kLinkMaxFrames) {
          *error = absl::StrCat("not a data-link message preamble (magic ",
                                GetU32(p), ", header ", header_len_, " bytes, ",
                                nframes_, " frames)");
          malformed_ = true;
          return State::kError;
        }
        small_got_ = 0;
        stage_ = Stage::kSizes;
        break;
      }
      case Stage::kSizes: {
        const int r = FillSmall(size_t{8} * nframes_, error, &st);
        if (r <= 0) return r == 0 ? State::kAgain : st;
        sizes_.resize(nframes_);
        for (uint32_t i = 0; i < nframes_; ++i) {
          sizes_[i] = GetU64(small_.data() + 8 * i);
          if (sizes_[i] > static_cast<uint64_t>(max_frame_bytes_)) {
            *error = absl::StrCat("frame ", i + 1, " of ", nframes_, " claims ",
                                  sizes_[i], " bytes; at most ",
                                  max_frame_bytes_, " are accepted");
            malformed_ = true;
            return State::kError;
          }
        }
        small_got_ = 0;
        stage_ = Stage::kHeader;
        break;
      }
      case Stage::kHeader: {
        const int r = FillSmall(header_len_, error, &st);
        if (r <= 0) return r == 0 ? State::kAgain : st;
        header_ = small_;
        small_got_ = 0;
        frames_.clear();
        frames_.reserve(nframes_);
        dest_.reset();
        dest_lost_ = false;
        if (nframes_ > 0) {
          proto::Header h;
          if (h.ParseFromString(header_) && h.type() == proto::RESPONSE &&
              h.error().empty()) {
            request_id_ = h.request_id();
            dest_ = dests_->Take(request_id_);
          }
        }
        frame_ = 0;
        StartFrame();
        stage_ = Stage::kFrame;
        break;
      }
      case Stage::kFrame: {
        if (frame_ == nframes_) {
          if (dest_ != nullptr) dests_->Done(request_id_);
          dest_.reset();
          stage_ = Stage::kPreamble;
          small_.resize(kLinkPreambleBytes);
          if (dest_lost_) {
            frames_.clear();  // A reply nobody waits for any more.
            break;
          }
          parts->clear();
          parts->reserve(nframes_ + 1);
          parts->push_back(Frame::Own(std::move(header_)));
          header_.clear();
          for (Frame& f : frames_) parts->push_back(std::move(f));
          frames_.clear();
          return State::kMessage;
        }
        const uint64_t size = sizes_[frame_];
        if (frame_got_ == size) {
          if (buf_ != nullptr) {
            frames_.push_back(
                Frame::View(buf_.get(), size,
                            std::shared_ptr<const void>(buf_, buf_.get())));
          } else if (size > 0) {
            frames_.push_back(
                Frame::View(dest_->frames[frame_].data(), size, nullptr));
          } else {
            frames_.push_back(Frame());
          }
          ++frame_;
          StartFrame();
          break;
        }
        ssize_t n;
        if (buf_ == nullptr) {
          n = dests_->ReadInto(
              dest_.get(), frame_, frame_got_, size - frame_got_,
              [this](char* p, size_t len) { return Recv(p, len); });
          if (n == -2) {
            // Cancelled while being read: read the rest aside, drop it.
            dest_lost_ = true;
            buf_ = std::shared_ptr<char[]>(new char[size]);
            continue;
          }
        } else {
          n = Recv(buf_.get() + frame_got_, size - frame_got_);
        }
        if (n > 0) {
          frame_got_ += static_cast<size_t>(n);
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          return State::kAgain;
        }
        *error = n == 0 ? absl::StrCat("closed by the peer ", Progress())
                 : !record_error_.empty()
                     ? absl::StrCat(record_error_, " ", Progress())
                     : absl::StrCat(strerror(errno), " ", Progress());
        malformed_ = !record_error_.empty() && !auth_failed_;
        return State::kError;
      }
    }
  }
}

LinkReader::State LinkReader::Handshake(std::string* error) {
  State st = State::kAgain;
  if (stage_ == Stage::kHs1) {
    const int r = FillSmall(kLinkHs1Bytes, error, &st);
    if (r <= 0) return r == 0 ? State::kAgain : st;
    std::string m2;
    if (absl::Status s = hs_->OnM1(small_.data(), &m2); !s.ok()) {
      *error = std::string(s.message());
      auth_failed_ = true;
      return State::kRefused;
    }
    // The first bytes this end sends: the socket has room for them.
    const ssize_t n =
        send(fd_, m2.data(), m2.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n != static_cast<ssize_t>(m2.size())) {
      *error = absl::StrCat("cannot answer the encryption handshake: ",
                            n < 0 ? strerror(errno) : "short write");
      return State::kError;
    }
    small_got_ = 0;
    stage_ = Stage::kHs3;
    return State::kMessage;  // Go on.
  }
  const int r = FillSmall(kLinkHs3Bytes, error, &st);
  if (r <= 0) return r == 0 ? State::kAgain : st;
  absl::StatusOr<std::unique_ptr<LinkRecordCipher>> c =
      hs_->OnM3(small_.data(), &reverse_);
  hs_.reset();
  if (!c.ok()) {
    *error = std::string(c.status().message());
    auth_failed_ = true;
    return State::kRefused;
  }
  cipher_ = std::move(*c);
  raw_.reset(new char[kRawBytes]);
  plain_.reset(new char[kLinkMaxRecordBytes]);
  small_got_ = 0;
  small_.resize(kLinkHelloFixedBytes);
  stage_ = Stage::kHello;
  return State::kMessage;
}

LinkWriter::LinkWriter(int fd, std::unique_ptr<LinkRecordCipher> cipher,
                       std::string preface)
    : fd_(fd), cipher_(std::move(cipher)) {
  if (cipher_ != nullptr) {
    out_cap_ = std::max(kOutBytes, preface.size());
    out_.reset(new char[out_cap_]);
    std::memcpy(out_.get(), preface.data(), preface.size());
    out_len_ = preface.size();
  }
}

LinkWriter::~LinkWriter() {
  DropAll();
  shutdown(fd_, SHUT_RDWR);
  close(fd_);
}

void LinkWriter::Append(std::string head, Message msg, Done done) {
  auto item = std::make_unique<Item>();
  item->total = head.size();
  for (const Frame& f : msg.frames) item->total += f.size();
  item->head = std::move(head);
  item->msg = std::move(msg);
  item->done = std::move(done);
  queue_.push_back(std::move(item));
}

void LinkWriter::DropAll() {
  seal_item_ = 0;
  out_pos_ = out_len_ = 0;
  while (!queue_.empty()) {
    std::unique_ptr<Item> item = std::move(queue_.front());
    queue_.pop_front();
    if (item->done) item->done(false, &item->msg);
  }
}

void LinkWriter::SealRecords() {
  // One record: the socket takes it before the next is sealed, so the
  // wire starts after one record's sealing rather than after several.
  out_pos_ = out_len_ = 0;
  char* rec = out_.get();
  const size_t room =
      std::min(kLinkRecordBytes, out_cap_ - kLinkRecordOverhead);
  size_t len = 0;
  while (len < room && seal_item_ < queue_.size()) {
    Item& it = *queue_[seal_item_];
    if (it.piece > it.msg.frames.size()) {
      ++seal_item_;
      continue;
    }
    const char* p;
    size_t plen;
    if (it.piece == 0) {
      p = it.head.data();
      plen = it.head.size();
    } else {
      p = it.msg.frames[it.piece - 1].data();
      plen = it.msg.frames[it.piece - 1].size();
    }
    const size_t left = plen - it.piece_off;
    if (left == 0) {
      ++it.piece;
      it.piece_off = 0;
      continue;
    }
    const char* src = p + it.piece_off;
    if (left >= kSealDirectBytes) {
      if (len > 0) break;  // Seal what is gathered; this one on its own.
      const size_t take = DirectRecordBytes(plen, it.piece_off, room);
      cipher_->Seal(src, take, rec);
      it.piece_off += take;
      it.sealed += take;
      out_len_ = take + kLinkRecordOverhead;
      return;
    }
    const size_t take = std::min(left, room - len);
    std::memcpy(rec + 4 + len, src, take);
    len += take;
    it.piece_off += take;
    it.sealed += take;
  }
  if (len == 0) return;
  cipher_->Seal(rec + 4, len, rec);
  out_len_ = len + kLinkRecordOverhead;
}

std::optional<absl::Status> LinkWriter::SendFailed(int error) {
  if (error == EINTR) return std::nullopt;
  if (error == EAGAIN || error == EWOULDBLOCK) return absl::OkStatus();
  DropAll();
  return absl::UnavailableError(strerror(error));
}

absl::Status LinkWriter::FlushRecords() {
  // Items whose every byte is in records the socket took.
  auto complete = [this] {
    while (!queue_.empty() && queue_.front()->sealed == queue_.front()->total) {
      std::unique_ptr<Item> done = std::move(queue_.front());
      queue_.pop_front();
      if (seal_item_ > 0) --seal_item_;
      if (done->done) done->done(true, &done->msg);
    }
  };
  while (true) {
    if (out_pos_ == out_len_) {
      complete();
      SealRecords();
      if (out_len_ == 0) return absl::OkStatus();
    }
    const ssize_t n = send(fd_, out_.get() + out_pos_, out_len_ - out_pos_,
                           MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      std::optional<absl::Status> s = SendFailed(errno);
      if (!s.has_value()) continue;
      return *s;
    }
    bytes_written_ += n;
    out_pos_ += static_cast<size_t>(n);
  }
}

absl::Status LinkWriter::Flush() {
  if (cipher_ != nullptr) return FlushRecords();
  constexpr size_t kMaxIov = IOV_MAX < 256 ? IOV_MAX : 256;
  iovec iov[kMaxIov];
  while (!queue_.empty()) {
    // Gather from the front item's unwritten part on, across items.
    size_t n_iov = 0;
    for (size_t q = 0; q < queue_.size() && n_iov < kMaxIov; ++q) {
      const Item& it = *queue_[q];
      size_t skip = q == 0 ? it.written : 0;
      auto add = [&](const char* p, size_t len) {
        if (n_iov >= kMaxIov) return;
        if (skip >= len) {
          skip -= len;
          return;
        }
        iov[n_iov].iov_base = const_cast<char*>(p + skip);
        iov[n_iov].iov_len = len - skip;
        skip = 0;
        ++n_iov;
      };
      add(it.head.data(), it.head.size());
      for (const Frame& f : it.msg.frames) {
        if (f.size() > 0) add(f.data(), f.size());
      }
    }
    msghdr mh{};
    mh.msg_iov = iov;
    mh.msg_iovlen = n_iov;
    const ssize_t n = sendmsg(fd_, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      std::optional<absl::Status> s = SendFailed(errno);
      if (!s.has_value()) continue;
      return *s;
    }
    bytes_written_ += n;
    size_t left = static_cast<size_t>(n);
    while (left > 0 || (!queue_.empty() &&
                        queue_.front()->written == queue_.front()->total)) {
      Item& it = *queue_.front();
      const size_t take = std::min(left, it.total - it.written);
      it.written += take;
      left -= take;
      if (it.written == it.total) {
        std::unique_ptr<Item> done = std::move(queue_.front());
        queue_.pop_front();
        if (done->done) done->done(true, &done->msg);
      }
      if (queue_.empty()) break;
    }
  }
  return absl::OkStatus();
}

}  // namespace transport
}  // namespace pstrain
