// MXNet `.idx` files: one line per record, "key\toffset\n", where offset is
// the byte offset of the record's head in the `.rec` (formats.md §2).
#ifndef PSTRAIN_RECORDIO_INDEX_H_
#define PSTRAIN_RECORDIO_INDEX_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pstrain {
namespace recordio {

struct IndexEntry {
  int64_t key = 0;
  int64_t offset = 0;
  bool operator==(const IndexEntry& o) const {
    return key == o.key && offset == o.offset;
  }
};

// Parses `.idx` text. Returns InvalidArgument naming `source` and the line
// for a malformed line (not two integers, negative offset).
absl::StatusOr<std::vector<IndexEntry>> ParseIndex(absl::string_view text,
                                                   absl::string_view source);
absl::StatusOr<std::vector<IndexEntry>> ReadIndexFile(const std::string& path);

// "key\toffset\n", as MXNet writes it.
std::string FormatIndexLine(const IndexEntry& e);
absl::Status WriteIndexFile(const std::string& path,
                            const std::vector<IndexEntry>& entries);

class RecordReader;

// Checks that `entries`, read from `idx_path`, can be the index of the
// `.rec` that `rec` reads: no more entries than the file has room for (8
// header bytes each), offsets 4-byte aligned and strictly increasing in
// file order, every offset inside the file and the last entry's record
// whole, and no record head after that record (an index that stops short
// of the file's end, e.g. a truncated `.idx`). Records in between are not
// read; a corrupt one is found when it is read. Returns FailedPrecondition
// naming both files, the entry (1-based, with its key) and the byte offset
// of the first disagreement; an error reading the `.rec` as it is.
absl::Status CheckIndex(const std::vector<IndexEntry>& entries,
                        const std::string& idx_path, RecordReader* rec);

// Random access to the records of a `.rec` by the keys of its `.idx`.
// Not thread-safe (use one per thread).
class IndexedReader {
 public:
  // Opens `rec_path` and reads `idx_path`. FailedPrecondition when the
  // `.idx` cannot serve as the `.rec`'s index: a malformed line (naming
  // the file and line) or a disagreement CheckIndex finds (naming both
  // files); other errors (a file that cannot be read) name the file.
  static absl::StatusOr<std::unique_ptr<IndexedReader>> Open(
      const std::string& rec_path, const std::string& idx_path);
  ~IndexedReader();

  // The entries of the index, in file order.
  const std::vector<IndexEntry>& entries() const { return entries_; }
  // Reads the record of `key`: NotFound for a key the index does not list,
  // DataLoss (file, offset) when no valid record starts at its offset.
  absl::Status Read(int64_t key, std::string* payload);

 private:
  IndexedReader() = default;
  std::unique_ptr<RecordReader> reader_;
  std::vector<IndexEntry> entries_;
  std::map<int64_t, int64_t> offset_of_;
};

}  // namespace recordio
}  // namespace pstrain

#endif  // PSTRAIN_RECORDIO_INDEX_H_
