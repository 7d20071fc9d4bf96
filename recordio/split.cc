#include "recordio/split.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "util/status.h"

namespace pstrain {
namespace recordio {
namespace {

absl::Status CheckPart(int part_index, int num_parts) {
  if (num_parts < 1 || part_index < 0 || part_index >= num_parts) {
    return absl::InvalidArgumentError(
        absl::StrCat("part_index ", part_index, " of num_parts ", num_parts,
                     ": need 0 <= part_index < num_parts"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<FileRange>> PartRanges(
    const std::vector<std::string>& files, const std::vector<int64_t>& sizes,
    int part_index, int num_parts) {
  PSTRAIN_RETURN_IF_ERROR(CheckPart(part_index, num_parts));
  CHECK_EQ(files.size(), sizes.size());
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  int64_t step = (total + num_parts - 1) / num_parts;
  step = (step + 3) / 4 * 4;
  const int64_t begin = std::min(step * part_index, total);
  const int64_t end = std::min(step * (part_index + 1), total);
  std::vector<FileRange> out;
  int64_t start = 0;
  for (size_t f = 0; f < files.size(); ++f) {
    const int64_t lo = std::max(begin, start),
                  hi = std::min(end, start + sizes[f]);
    if (lo < hi) out.push_back({files[f], lo - start, hi - start});
    start += sizes[f];
  }
  return out;
}

absl::StatusOr<std::vector<IndexEntry>> IndexedPart(
    std::vector<IndexEntry> entries, int part_index, int num_parts) {
  PSTRAIN_RETURN_IF_ERROR(CheckPart(part_index, num_parts));
  std::stable_sort(entries.begin(), entries.end(),
                   [](const IndexEntry& a, const IndexEntry& b) {
                     return a.offset < b.offset;
                   });
  const size_t n = entries.size();
  const size_t per = (n + num_parts - 1) / num_parts;
  const size_t lo = std::min(n, per * part_index),
               hi = std::min(n, per * (part_index + 1));
  return std::vector<IndexEntry>(entries.begin() + lo, entries.begin() + hi);
}

absl::StatusOr<std::unique_ptr<PartReader>> PartReader::Open(
    const std::vector<std::string>& files, int part_index, int num_parts,
    const ReaderOptions& options) {
  std::vector<int64_t> sizes;
  for (const auto& f : files) {
    struct stat st;
    if (stat(f.c_str(), &st) != 0)
      return ErrnoToStatus(errno, absl::StrCat("stat ", f));
    sizes.push_back(st.st_size);
  }
  std::unique_ptr<PartReader> r(new PartReader());
  PSTRAIN_ASSIGN_OR_RETURN(r->ranges_,
                           PartRanges(files, sizes, part_index, num_parts));
  r->options_ = options;
  return r;
}

absl::StatusOr<bool> PartReader::Next(absl::string_view* payload) {
  while (current_ < ranges_.size()) {
    if (reader_ == nullptr) {
      const FileRange& fr = ranges_[current_];
      PSTRAIN_ASSIGN_OR_RETURN(
          reader_, RecordReader::Open(fr.path, options_, fr.begin, fr.end));
    }
    PSTRAIN_ASSIGN_OR_RETURN(bool got, reader_->Next(payload));
    if (got) return true;
    done_skips_.Add(reader_->skip_stats());
    reader_.reset();
    ++current_;
  }
  return false;
}

const std::string& PartReader::path() const {
  static const std::string* const kNone = new std::string();
  return reader_ ? reader_->path() : *kNone;
}

int64_t PartReader::record_offset() const {
  return reader_ ? reader_->record_offset() : -1;
}

int64_t PartReader::file_record_index() const {
  return reader_ ? reader_->file_record_index() : -1;
}

SkipStats PartReader::skip_stats() const {
  SkipStats s = done_skips_;
  if (reader_) s.Add(reader_->skip_stats());
  return s;
}

}  // namespace recordio
}  // namespace pstrain
