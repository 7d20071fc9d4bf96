// Splitting RecordIO datasets into parts for distributed reading, with
// exactly dmlc's rules (formats.md §1), so every record is read by exactly
// one worker and files packed by MXNet split the same way.
#ifndef PSTRAIN_RECORDIO_SPLIT_H_
#define PSTRAIN_RECORDIO_SPLIT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "recordio/index.h"
#include "recordio/recordio.h"

namespace pstrain {
namespace recordio {

// A byte range of one file; its records are those whose heads lie in
// [begin, end).
struct FileRange {
  std::string path;
  int64_t begin = 0;
  int64_t end = 0;
};

// Split type "recordio": all `files` (sizes in `sizes`) are one
// concatenation; part k is bytes [k*step, (k+1)*step) with step =
// ceil(total / num_parts) rounded up to 4, and a record belongs to the part
// holding its head. Returns InvalidArgument for num_parts < 1 or part_index
// outside [0, num_parts).
absl::StatusOr<std::vector<FileRange>> PartRanges(
    const std::vector<std::string>& files, const std::vector<int64_t>& sizes,
    int part_index, int num_parts);

// Split type "indexed_recordio": the entries sorted by offset; part k holds
// entries [k*c, (k+1)*c) with c = ceil(N / num_parts).
absl::StatusOr<std::vector<IndexEntry>> IndexedPart(
    std::vector<IndexEntry> entries, int part_index, int num_parts);

// Reads part `part_index` of `num_parts` of a list of `.rec` files
// sequentially (split type "recordio"). Not thread-safe.
class PartReader {
 public:
  // Errors name the file that cannot be opened.
  static absl::StatusOr<std::unique_ptr<PartReader>> Open(
      const std::vector<std::string>& files, int part_index, int num_parts,
      const ReaderOptions& options = {});

  // As RecordReader::Next, across the files of the part.
  absl::StatusOr<bool> Next(absl::string_view* payload);
  // File and head offset of the record Next() last returned, and its index
  // in that file (RecordReader::file_record_index(): -1 when the part
  // starts inside the file).
  const std::string& path() const;
  int64_t record_offset() const;
  int64_t file_record_index() const;
  // Summed over the files read so far.
  SkipStats skip_stats() const;

 private:
  PartReader() = default;
  std::vector<FileRange> ranges_;
  ReaderOptions options_;
  size_t current_ = 0;
  std::unique_ptr<RecordReader> reader_;
  SkipStats done_skips_;
};

}  // namespace recordio
}  // namespace pstrain

#endif  // PSTRAIN_RECORDIO_SPLIT_H_
