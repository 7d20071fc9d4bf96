// dmlc RecordIO, byte-compatible with MXNet (formats.md §1).
//
// A file is a sequence of records, each `[magic u32][lrec u32][payload]
// [zero pad to 4]`, little-endian, magic 0xced7230a. lrec holds a 3-bit
// continuation flag (cflag, bits 29-31) and a 29-bit length. A payload that
// contains the magic at a 4-aligned offset is stored as several parts
// (cflag 1 = first, 2 = middle, 3 = last) with those magic words removed;
// readers put them back. Record heads are always 4-aligned, and a head is an
// aligned magic whose next word has cflag 0 or 1 — unambiguous because
// writers split out every aligned magic inside payloads.
#ifndef PSTRAIN_RECORDIO_RECORDIO_H_
#define PSTRAIN_RECORDIO_RECORDIO_H_

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pstrain {
namespace recordio {

inline constexpr uint32_t kMagic = 0xced7230a;
// Largest part length lrec can hold.
inline constexpr uint32_t kMaxPartLength = (1u << 29) - 1;

inline uint32_t EncodeLRec(uint32_t cflag, uint32_t length) {
  return (cflag << 29) | length;
}
inline uint32_t CFlag(uint32_t lrec) { return lrec >> 29; }
inline uint32_t Length(uint32_t lrec) { return lrec & kMaxPartLength; }

// Appends the on-disk bytes of one record holding `payload` to `*out`,
// splitting it into parts where the payload holds the magic at an aligned
// offset, exactly as dmlc's writer does. REQUIRES: payload.size() <
// 2^29.
void AppendRecord(absl::string_view payload, std::string* out);

// How messages name a record: "PATH: record INDEX at byte offset OFFSET"
// (the index in the file; left out when `index` < 0, i.e. unknown).
std::string RecordLocation(absl::string_view path, int64_t index,
                           int64_t offset);

// Writes records to a file. Not thread-safe.
class RecordWriter {
 public:
  // Creates (truncates) `path`. Errors name the path.
  static absl::StatusOr<std::unique_ptr<RecordWriter>> Create(
      const std::string& path);
  ~RecordWriter();  // Closes the file; call Close() to see errors.
  RecordWriter(const RecordWriter&) = delete;
  RecordWriter& operator=(const RecordWriter&) = delete;

  // Offset at which the next record's head will be written (what MXNet's
  // `.idx` stores for it).
  int64_t Tell() const { return offset_; }
  // Appends one record. Returns InvalidArgument for a payload of 2^29 bytes
  // or more, an error naming the file when writing fails.
  absl::Status Write(absl::string_view payload);
  // Flushes and closes. Idempotent.
  absl::Status Close();

 private:
  RecordWriter(std::string path, FILE* f) : path_(std::move(path)), file_(f) {}
  std::string path_;
  FILE* file_;
  int64_t offset_ = 0;
  std::string buf_;
};

// What a reader does with a corrupt record.
enum class CorruptionPolicy {
  kFail,  // Return the error (the default).
  kSkip,  // Log it, count it, resynchronize at the next record head.
};

struct ReaderOptions {
  CorruptionPolicy policy = CorruptionPolicy::kFail;
  // Bytes read from the file per system call.
  size_t buffer_bytes = 4 << 20;
};

// What a kSkip reader passed over. Each message names the file, the byte
// offset, the record index where it is known, what is wrong, and how many
// bytes were skipped to where reading went on.
struct SkipStats {
  int64_t corrupt_records = 0;  // Corrupt spots found (each resync is one).
  int64_t skipped_bytes = 0;
  std::string first;  // The first corrupt spot ("" if none).
  std::string last;   // The last one.
  // The first spot where the file ends inside a record (its header or
  // payload runs past the end and no record head follows): the file was
  // cut short, and how much of it was lost is unknown. "" if none.
  std::string truncated;

  // Adds the counts of `later`, read after these.
  void Add(const SkipStats& later);
};

// Where ReadAt found a record, or why it found none.
struct RecordExtent {
  int64_t end = -1;  // Success: the offset after the record and its padding.
  // Failure: the file ends before the record does (or before its head).
  bool past_end_of_file = false;
};

// Reads the records whose heads lie in a byte range of one file, in order.
// Never crashes and never reads out of bounds on any input; a corrupt record
// is an absl::Status (DataLoss) naming the file, the byte offset and the
// record index (kFail), or is skipped and counted (kSkip). Not thread-safe.
class RecordReader {
 public:
  // Opens `path` for the records whose heads are in [begin, end) (end < 0:
  // the end of the file). `begin` need not be a record head: reading starts
  // at the first head at or after it.
  static absl::StatusOr<std::unique_ptr<RecordReader>> Open(
      const std::string& path, const ReaderOptions& options = {},
      int64_t begin = 0, int64_t end = -1);
  ~RecordReader();
  RecordReader(const RecordReader&) = delete;
  RecordReader& operator=(const RecordReader&) = delete;

  // Reads the next record into `*payload` (a view valid until the next call
  // on this reader). Returns false at the end of the range.
  absl::StatusOr<bool> Next(absl::string_view* payload);

  // The byte offset of the head of the record Next() last returned.
  int64_t record_offset() const { return record_offset_; }
  // Its index among the records this reader returned (0-based; corrupt
  // records skipped under kSkip are not counted).
  int64_t record_index() const { return returned_ - 1; }
  // Its index in the file, counting each corrupt spot skipped before it as
  // one record; -1 when the reader's range starts after byte 0 (the records
  // before it were not counted).
  int64_t file_record_index() const {
    return begin_ == 0 ? returned_ - 1 + skips_.corrupt_records : -1;
  }
  const SkipStats& skip_stats() const { return skips_; }
  const std::string& path() const { return path_; }
  int64_t file_size() const { return file_size_; }

  // Reads the single record whose head is at `offset` (for indexed
  // access); the reader's sequential position is unaffected. `index`, when
  // >= 0, is the record's index in the file, named in errors. DataLoss
  // (file, index, offset) when no valid record starts there. `*extent`, if
  // given, says where the record ends or whether the file ends first.
  absl::Status ReadAt(int64_t offset, std::string* payload, int64_t index = -1,
                      RecordExtent* extent = nullptr);

  // The first record head at or after `pos` (file_size() if none).
  absl::StatusOr<int64_t> FindHead(int64_t pos);

 private:
  RecordReader(std::string path, int fd, int64_t file_size,
               const ReaderOptions& options);
  // Makes bytes [pos, pos + n) available in the buffer; false if the file
  // ends first. May move the buffer.
  absl::StatusOr<bool> Ensure(int64_t pos, size_t n);
  uint32_t Word(int64_t pos) const;
  // Parses the record at `pos` (index `index` in the file, -1: unknown)
  // into `*payload`; sets extent->end to the offset after it, or on failure
  // extent->past_end_of_file.
  absl::Status ParseAt(int64_t pos, int64_t index, absl::string_view* payload,
                       RecordExtent* extent);
  absl::Status Corrupt(int64_t index, int64_t offset,
                       absl::string_view what) const;

  std::string path_;
  int fd_;
  int64_t file_size_;
  ReaderOptions options_;
  int64_t end_ = 0;
  int64_t pos_ = 0;  // Next head to read.
  bool started_ = false;
  int64_t begin_ = 0;
  // buffer_ holds file bytes [buf_start_, buf_start_ + buf_len_).
  std::vector<char> buffer_;
  int64_t buf_start_ = 0;
  size_t buf_len_ = 0;
  std::string joined_;  // Multi-part records are assembled here.
  int64_t record_offset_ = -1;
  int64_t returned_ = 0;
  SkipStats skips_;
};

}  // namespace recordio
}  // namespace pstrain

#endif  // PSTRAIN_RECORDIO_RECORDIO_H_
