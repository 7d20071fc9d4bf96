#include "recordio/recordio.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "glog/logging.h"
#include "util/status.h"

namespace pstrain {
namespace recordio {
namespace {

void PutWord(uint32_t w, std::string* out) {
  out->append(reinterpret_cast<const char*>(&w), sizeof(w));
}

int64_t Ceil4(int64_t n) { return (n + 3) & ~int64_t{3}; }

}  // namespace

void AppendRecord(absl::string_view payload, std::string* out) {
  CHECK_LE(payload.size(), kMaxPartLength);
  const uint32_t len = static_cast<uint32_t>(payload.size());
  const uint32_t lower_align = len & ~3u;
  const char* data = payload.data();
  uint32_t dptr = 0;
  for (uint32_t i = 0; i < lower_align; i += 4) {
    uint32_t w;
    std::memcpy(&w, data + i, 4);
    if (w != kMagic) continue;
    PutWord(kMagic, out);
    PutWord(EncodeLRec(dptr == 0 ? 1u : 2u, i - dptr), out);
    out->append(data + dptr, i - dptr);  // A multiple of 4: no padding.
    dptr = i + 4;
  }
  PutWord(kMagic, out);
  PutWord(EncodeLRec(dptr != 0 ? 3u : 0u, len - dptr), out);
  out->append(data + dptr, len - dptr);
  out->append(Ceil4(len) - len, '\0');
}

std::string RecordLocation(absl::string_view path, int64_t index,
                           int64_t offset) {
  return absl::StrCat(path, ": record ",
                      index >= 0 ? absl::StrCat(index, " ") : "",
                      "at byte offset ", offset);
}

// ---------------------------------------------------------------- writer

absl::StatusOr<std::unique_ptr<RecordWriter>> RecordWriter::Create(
    const std::string& path) {
  FILE* f = fopen(path.c_str(), "wb");
  if (f == nullptr) return ErrnoToStatus(errno, absl::StrCat("create ", path));
  setvbuf(f, nullptr, _IOFBF, 1 << 20);
  return std::unique_ptr<RecordWriter>(new RecordWriter(path, f));
}

RecordWriter::~RecordWriter() {
  absl::Status s = Close();
  if (!s.ok()) LOG(ERROR) << s;
}

absl::Status RecordWriter::Write(absl::string_view payload) {
  if (file_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(path_, ": writer closed"));
  }
  if (payload.size() > kMaxPartLength) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": record of ", payload.size(),
                     " bytes is too large for RecordIO (limit 2^29 - 1)"));
  }
  buf_.clear();
  AppendRecord(payload, &buf_);
  if (fwrite(buf_.data(), 1, buf_.size(), file_) != buf_.size()) {
    return ErrnoToStatus(errno, absl::StrCat("write ", path_));
  }
  offset_ += static_cast<int64_t>(buf_.size());
  return absl::OkStatus();
}

absl::Status RecordWriter::Close() {
  if (file_ == nullptr) return absl::OkStatus();
  const bool flushed = fflush(file_) == 0;
  const int flush_errno = errno;
  const bool closed = fclose(file_) == 0;
  file_ = nullptr;
  if (!flushed || !closed) {
    return ErrnoToStatus(flushed ? errno : flush_errno,
                         absl::StrCat("close ", path_));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------- reader

absl::StatusOr<std::unique_ptr<RecordReader>> RecordReader::Open(
    const std::string& path, const ReaderOptions& options, int64_t begin,
    int64_t end) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, absl::StrCat("open ", path));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return ErrnoToStatus(e, absl::StrCat("stat ", path));
  }
  if (S_ISDIR(st.st_mode)) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, " is a directory"));
  }
#ifdef POSIX_FADV_SEQUENTIAL
  posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
  std::unique_ptr<RecordReader> r(
      new RecordReader(path, fd, st.st_size, options));
  r->begin_ = std::max<int64_t>(0, begin);
  r->end_ = end < 0 ? r->file_size_ : std::min<int64_t>(end, r->file_size_);
  return r;
}

RecordReader::RecordReader(std::string path, int fd, int64_t file_size,
                           const ReaderOptions& options)
    : path_(std::move(path)),
      fd_(fd),
      file_size_(file_size),
      options_(options) {
  if (options_.buffer_bytes < 4096) options_.buffer_bytes = 4096;
}

RecordReader::~RecordReader() { close(fd_); }

absl::StatusOr<bool> RecordReader::Ensure(int64_t pos, size_t n) {
  if (pos < 0 || pos + static_cast<int64_t>(n) > file_size_) return false;
  if (pos >= buf_start_ && pos + static_cast<int64_t>(n) <=
                               buf_start_ + static_cast<int64_t>(buf_len_)) {
    return true;
  }
  // Keep what is already buffered from `pos` on, read the rest.
  size_t keep = 0;
  if (pos >= buf_start_ && pos < buf_start_ + static_cast<int64_t>(buf_len_)) {
    keep = buf_start_ + buf_len_ - pos;
    std::memmove(buffer_.data(), buffer_.data() + (pos - buf_start_), keep);
  }
  const size_t want = std::max(n, options_.buffer_bytes);
  const size_t cap = static_cast<size_t>(
      std::min<int64_t>(static_cast<int64_t>(want), file_size_ - pos));
  if (buffer_.size() < cap) buffer_.resize(cap);
  buf_start_ = pos;
  buf_len_ = keep;
  while (buf_len_ < cap) {
    ssize_t got = pread(fd_, buffer_.data() + buf_len_, cap - buf_len_,
                        pos + static_cast<int64_t>(buf_len_));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      return ErrnoToStatus(
          errno,
          absl::StrCat("read ", path_, " at byte offset ", pos + buf_len_));
    }
    if (got == 0) break;  // The file shrank under us.
    buf_len_ += static_cast<size_t>(got);
  }
  return buf_len_ >= n;
}

uint32_t RecordReader::Word(int64_t pos) const {
  uint32_t w;
  std::memcpy(&w, buffer_.data() + (pos - buf_start_), 4);
  return w;
}

absl::Status RecordReader::Corrupt(int64_t index, int64_t offset,
                                   absl::string_view what) const {
  return absl::DataLossError(
      absl::StrCat(RecordLocation(path_, index, offset), ": ", what));
}

absl::Status RecordReader::ParseAt(int64_t pos, int64_t index,
                                   absl::string_view* payload,
                                   RecordExtent* extent) {
  const int64_t head = pos;
  auto header = [&](int64_t at, uint32_t* cflag,
                    uint32_t* len) -> absl::Status {
    PSTRAIN_ASSIGN_OR_RETURN(bool have, Ensure(at, 8));
    if (!have) {
      extent->past_end_of_file = true;
      if (at >= file_size_) {
        return Corrupt(index, at,
                       absl::StrCat("past the end of the file (", file_size_,
                                    " bytes): truncated"));
      }
      return Corrupt(index, at,
                     absl::StrCat("truncated: ", file_size_ - at,
                                  " bytes left where an 8-byte record "
                                  "header should be"));
    }
    const uint32_t magic = Word(at);
    if (magic != kMagic) {
      return Corrupt(
          index, at,
          absl::StrFormat("bad magic 0x%08x (want 0x%08x)", magic, kMagic));
    }
    const uint32_t lrec = Word(at + 4);
    *cflag = CFlag(lrec);
    *len = Length(lrec);
    if (*cflag > 3) {
      return Corrupt(index, at,
                     absl::StrCat("invalid continuation flag ", *cflag));
    }
    if (at + 8 + Ceil4(*len) > file_size_) {
      extent->past_end_of_file = true;
      return Corrupt(
          index, at,
          absl::StrCat("record length ", *len,
                       " runs past the end of the file (", file_size_ - at - 8,
                       " bytes left): truncated"));
    }
    return absl::OkStatus();
  };
  if (pos < 0) return Corrupt(index, pos, "negative offset");
  if (pos % 4 != 0) {
    return Corrupt(index, pos, "record head is not 4-byte aligned");
  }
  uint32_t cflag, len;
  PSTRAIN_RETURN_IF_ERROR(header(pos, &cflag, &len));
  if (cflag == 2 || cflag == 3) {
    return Corrupt(index, pos,
                   absl::StrCat("broken multi-part chain: record starts "
                                "with a continuation part (cflag ",
                                cflag, ")"));
  }
  if (cflag == 0) {
    PSTRAIN_ASSIGN_OR_RETURN(bool have, Ensure(pos + 8, len));
    if (!have) {
      extent->past_end_of_file = true;
      return Corrupt(index, pos, "truncated payload");
    }
    *payload = absl::string_view(buffer_.data() + (pos + 8 - buf_start_), len);
    extent->end = pos + 8 + Ceil4(len);
    return absl::OkStatus();
  }
  joined_.clear();
  while (true) {
    PSTRAIN_ASSIGN_OR_RETURN(bool have, Ensure(pos + 8, len));
    if (!have) {
      extent->past_end_of_file = true;
      return Corrupt(index, pos, "truncated payload");
    }
    joined_.append(buffer_.data() + (pos + 8 - buf_start_), len);
    pos += 8 + Ceil4(len);
    if (cflag == 3) break;
    absl::Status s = header(pos, &cflag, &len);
    if (!s.ok()) {
      return Corrupt(index, head,
                     absl::StrCat("broken multi-part chain: ", s.message()));
    }
    if (cflag != 2 && cflag != 3) {
      return Corrupt(index, head,
                     absl::StrCat("broken multi-part chain: part at byte "
                                  "offset ",
                                  pos, " has cflag ", cflag, " (want 2 or 3)"));
    }
    PutWord(kMagic, &joined_);
  }
  *payload = joined_;
  extent->end = pos;
  return absl::OkStatus();
}

absl::StatusOr<int64_t> RecordReader::FindHead(int64_t pos) {
  pos = Ceil4(std::max<int64_t>(pos, 0));
  while (true) {
    PSTRAIN_ASSIGN_OR_RETURN(bool have, Ensure(pos, 8));
    if (!have) return file_size_;
    if (Word(pos) == kMagic && CFlag(Word(pos + 4)) <= 1) return pos;
    pos += 4;
  }
}

absl::StatusOr<bool> RecordReader::Next(absl::string_view* payload) {
  if (!started_) {
    PSTRAIN_ASSIGN_OR_RETURN(pos_, FindHead(begin_));
    started_ = true;
  }
  while (true) {
    if (pos_ >= end_ || pos_ >= file_size_) return false;
    // The record's index in the file, when the range starts at its head.
    const int64_t index = begin_ == 0 ? returned_ + skips_.corrupt_records : -1;
    RecordExtent extent;
    absl::Status s = ParseAt(pos_, index, payload, &extent);
    if (s.ok()) {
      record_offset_ = pos_;
      pos_ = extent.end;
      ++returned_;
      return true;
    }
    if (options_.policy == CorruptionPolicy::kFail ||
        s.code() != absl::StatusCode::kDataLoss) {
      return s;
    }
    PSTRAIN_ASSIGN_OR_RETURN(int64_t resync, FindHead(pos_ + 4));
    const std::string spot = absl::StrCat(
        s.message(), "; skipped ", resync - pos_, " bytes to ",
        resync < file_size_
            ? absl::StrCat("the next record head at byte offset ", resync)
            : std::string("the end of the file"));
    LOG_EVERY_N(WARNING, 1000) << "skipping corrupt record: " << spot;
    ++skips_.corrupt_records;
    skips_.skipped_bytes += resync - pos_;
    if (skips_.first.empty()) skips_.first = spot;
    skips_.last = spot;
    if (extent.past_end_of_file && resync >= file_size_ &&
        skips_.truncated.empty()) {
      skips_.truncated = spot;
    }
    pos_ = resync;
  }
}

absl::Status RecordReader::ReadAt(int64_t offset, std::string* payload,
                                  int64_t index, RecordExtent* extent) {
  absl::string_view view;
  RecordExtent local;
  if (extent == nullptr) extent = &local;
  *extent = RecordExtent();
  PSTRAIN_RETURN_IF_ERROR(ParseAt(offset, index, &view, extent));
  payload->assign(view.data(), view.size());
  return absl::OkStatus();
}

void SkipStats::Add(const SkipStats& later) {
  corrupt_records += later.corrupt_records;
  skipped_bytes += later.skipped_bytes;
  if (first.empty()) first = later.first;
  if (!later.last.empty()) last = later.last;
  if (truncated.empty()) truncated = later.truncated;
}

}  // namespace recordio
}  // namespace pstrain
