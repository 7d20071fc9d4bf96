// A worker's part of a RecordIO image dataset as a SampleSource: the part
// is chosen with dmlc's rules (indexed split when every file has its
// `.idx`, else the byte-range split), and records are read by random access
// from any number of threads.
#ifndef PSTRAIN_DATA_RECORD_SOURCE_H_
#define PSTRAIN_DATA_RECORD_SOURCE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/pipeline.h"
#include "recordio/recordio.h"
#include "util/mutex.h"

namespace pstrain {
namespace data {

struct RecordSourceOptions {
  // Split by bytes and scan the `.rec` files even where `.idx` files exist
  // (for an index that does not match its `.rec`).
  bool ignore_index = false;
};

class RecordSource : public SampleSource {
 public:
  // `path` is a .rec file or a folder of them (sorted by name). With an
  // `.idx` next to every file (and !ignore_index), each index is checked
  // against its `.rec` (recordio::CheckIndex): FailedPrecondition naming
  // both files when one does not match, or has a malformed line. Without,
  // the part is scanned: corrupt spots are skipped and reported by loss().
  // Other errors name the file.
  static absl::StatusOr<std::unique_ptr<RecordSource>> Open(
      const std::string& path, int part_index, int num_parts,
      const RecordSourceOptions& options = {});
  int64_t size() const override {
    return static_cast<int64_t>(records_.size());
  }
  absl::Status Read(int64_t index, Sample* out) override;
  // "FILE: record N at byte offset X" (N, the record's index in its file,
  // when known).
  std::string Describe(int64_t index) const override;
  recordio::SkipStats loss() const override { return loss_; }
  bool indexed() const { return indexed_; }

 private:
  struct Rec {
    int file;
    int64_t offset;
    int64_t index_in_file;  // -1: unknown.
  };
  std::vector<std::string> files_;
  std::vector<Rec> records_;
  bool indexed_ = false;
  recordio::SkipStats loss_;  // What the scan of the part skipped.
  Mutex mu_;
  // Idle readers per file (RecordReader is not thread-safe).
  std::vector<std::vector<std::unique_ptr<recordio::RecordReader>>> pool_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace data
}  // namespace pstrain

#endif  // PSTRAIN_DATA_RECORD_SOURCE_H_
