#include "recordio/index.h"

#include <cerrno>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "recordio/recordio.h"
#include "util/file.h"
#include "util/status.h"

namespace pstrain {
namespace recordio {

absl::StatusOr<std::vector<IndexEntry>> ParseIndex(absl::string_view text,
                                                   absl::string_view source) {
  std::vector<IndexEntry> out;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    std::vector<absl::string_view> f =
        absl::StrSplit(line, absl::ByAnyChar("\t \r"), absl::SkipEmpty());
    if (f.empty()) continue;
    IndexEntry e;
    if (f.size() != 2 || !absl::SimpleAtoi(f[0], &e.key) ||
        !absl::SimpleAtoi(f[1], &e.offset) || e.offset < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ":", line_no, ": malformed index line '", line,
                       "' (want key<TAB>offset)"));
    }
    out.push_back(e);
  }
  return out;
}

absl::StatusOr<std::vector<IndexEntry>> ReadIndexFile(const std::string& path) {
  PSTRAIN_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(path));
  return ParseIndex(text, path);
}

std::string FormatIndexLine(const IndexEntry& e) {
  return absl::StrCat(e.key, "\t", e.offset, "\n");
}

absl::Status WriteIndexFile(const std::string& path,
                            const std::vector<IndexEntry>& entries) {
  std::ofstream out(path, std::ios::trunc);
  if (!out) return ErrnoToStatus(errno, absl::StrCat("create ", path));
  for (const auto& e : entries) out << FormatIndexLine(e);
  out.flush();
  if (!out) return ErrnoToStatus(errno, absl::StrCat("write ", path));
  return absl::OkStatus();
}

absl::Status CheckIndex(const std::vector<IndexEntry>& entries,
                        const std::string& idx_path, RecordReader* rec) {
  const std::string& rec_path = rec->path();
  const int64_t size = rec->file_size();
  const int64_t n = static_cast<int64_t>(entries.size());
  auto mismatch = [&](absl::string_view what) {
    return absl::FailedPreconditionError(
        absl::StrCat(idx_path, " does not match ", rec_path, ": ", what));
  };
  // Entry i (0-based) as "entry N (key K) at byte offset X".
  auto entry = [&](int64_t i) {
    return absl::StrCat("entry ", i + 1, " of ", n, " (key ", entries[i].key,
                        ") at byte offset ", entries[i].offset);
  };
  if (n > size / 8) {
    return mismatch(absl::StrCat("it lists ", n, " records, more than the ",
                                 size,
                                 "-byte file can hold (8 header bytes each)"));
  }
  // The entries whose headers fit in the file come first (offsets increase).
  int64_t fit = n;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t off = entries[i].offset;
    if (off % 4 != 0) {
      return mismatch(absl::StrCat(
          entry(i), " is not 4-byte aligned: no record starts there"));
    }
    if (i > 0 && off <= entries[i - 1].offset) {
      return mismatch(absl::StrCat(entry(i), " does not come after entry ", i,
                                   " at byte offset ", entries[i - 1].offset,
                                   " (offsets must increase)"));
    }
    if (off + 8 > size && fit == n) fit = i;
  }
  const std::string cut = absl::StrCat(
      ": ", rec_path, " (", size,
      " bytes) is truncated, or the index belongs to another file");
  // The last entry that fits must hold a whole record; anything after it
  // lies past the end of the file.
  int64_t after = 0;  // Where the records the index lists end.
  if (fit > 0) {
    std::string payload;
    RecordExtent extent;
    absl::Status s =
        rec->ReadAt(entries[fit - 1].offset, &payload, fit - 1, &extent);
    if (!s.ok() && s.code() != absl::StatusCode::kDataLoss) return s;
    if (extent.past_end_of_file) {
      return mismatch(
          absl::StrCat(entry(fit - 1), " runs past the end of the file", cut));
    }
    // A corrupt last record is left to the reader; look for heads after it.
    after = s.ok() ? extent.end : entries[fit - 1].offset + 4;
  }
  if (fit < n) {
    return mismatch(
        absl::StrCat(entry(fit), " lies past the end of the file", cut));
  }
  PSTRAIN_ASSIGN_OR_RETURN(int64_t head, rec->FindHead(after));
  if (head < size) {
    return mismatch(absl::StrCat(
        "it lists ", n, " records, but the file holds more after byte offset ",
        after, " (a record at byte offset ", head, " of ", size,
        "): the index is truncated, or belongs to another file"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<IndexedReader>> IndexedReader::Open(
    const std::string& rec_path, const std::string& idx_path) {
  std::unique_ptr<IndexedReader> r(new IndexedReader());
  auto entries = ReadIndexFile(idx_path);
  if (absl::IsInvalidArgument(entries.status())) {
    return absl::FailedPreconditionError(entries.status().message());
  }
  if (!entries.ok()) return entries.status();
  r->entries_ = *std::move(entries);
  PSTRAIN_ASSIGN_OR_RETURN(r->reader_, RecordReader::Open(rec_path));
  PSTRAIN_RETURN_IF_ERROR(CheckIndex(r->entries_, idx_path, r->reader_.get()));
  for (const auto& e : r->entries_) r->offset_of_[e.key] = e.offset;
  return r;
}

IndexedReader::~IndexedReader() = default;

absl::Status IndexedReader::Read(int64_t key, std::string* payload) {
  auto it = offset_of_.find(key);
  if (it == offset_of_.end()) {
    return absl::NotFoundError(absl::StrCat(
        reader_->path(), ": no record with key ", key, " in its index"));
  }
  return reader_->ReadAt(it->second, payload);
}

}  // namespace recordio
}  // namespace pstrain
