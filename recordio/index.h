// MXNet `.idx` files: one line per record, "key\toffset\n", where offset is
// the byte offset of the record's head in the `.rec` (formats.md §2).
#ifndef PSTRAIN_RECORDIO_INDEX_H_
#define PSTRAIN_RECORDIO_INDEX_H_

#include <cstdint>
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

}  // namespace recordio
}  // namespace pstrain

#endif  // PSTRAIN_RECORDIO_INDEX_H_
