#include "recordio/index.h"

#include <cerrno>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "recordio/recordio.h"
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
      return absl::InvalidArgumentError(absl::StrCat(
          source, ":", line_no, ": malformed index line '", line,
          "' (want key<TAB>offset)"));
    }
    out.push_back(e);
  }
  return out;
}

absl::StatusOr<std::vector<IndexEntry>> ReadIndexFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return ErrnoToStatus(errno, absl::StrCat("open ", path));
  std::stringstream buf;
  buf << in.rdbuf();
  return ParseIndex(buf.str(), path);
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

absl::StatusOr<std::unique_ptr<IndexedReader>> IndexedReader::Open(
    const std::string& rec_path, const std::string& idx_path) {
  std::unique_ptr<IndexedReader> r(new IndexedReader());
  PSTRAIN_ASSIGN_OR_RETURN(r->entries_, ReadIndexFile(idx_path));
  PSTRAIN_ASSIGN_OR_RETURN(r->reader_, RecordReader::Open(rec_path));
  for (const auto& e : r->entries_) r->offset_of_[e.key] = e.offset;
  return r;
}

IndexedReader::~IndexedReader() = default;

absl::Status IndexedReader::Read(int64_t key, std::string* payload) {
  auto it = offset_of_.find(key);
  if (it == offset_of_.end()) {
    return absl::NotFoundError(absl::StrCat(reader_->path(), ": no record with key ", key,
                                            " in its index"));
  }
  return reader_->ReadAt(it->second, payload);
}

}  // namespace recordio
}  // namespace pstrain
