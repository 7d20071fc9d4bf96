// A worker's part of a RecordIO image dataset as a SampleSource: the part
// is chosen with dmlc's rules (indexed split when every file has its
// `.idx`, else the byte-range split), and records are read by random access
// from any number of threads.
#ifndef PSTRAIN_DATA_RECORD_SOURCE_H_
#define PSTRAIN_DATA_RECORD_SOURCE_H_

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/pipeline.h"
#include "recordio/recordio.h"

namespace pstrain {
namespace data {

class RecordSource : public SampleSource {
 public:
  // `path` is a .rec file or a folder of them (sorted by name). Errors name
  // the file.
  static absl::StatusOr<std::unique_ptr<RecordSource>> Open(const std::string& path,
                                                            int part_index, int num_parts);
  int64_t size() const override { return static_cast<int64_t>(records_.size()); }
  absl::Status Read(int64_t index, Sample* out) override;
  std::string Describe(int64_t index) const override;
  bool indexed() const { return indexed_; }

 private:
  struct Rec {
    int file;
    int64_t offset;
  };
  std::vector<std::string> files_;
  std::vector<Rec> records_;
  bool indexed_ = false;
  std::mutex mu_;
  // Idle readers per file (RecordReader is not thread-safe).
  std::vector<std::vector<std::unique_ptr<recordio::RecordReader>>> pool_;
};

}  // namespace data
}  // namespace pstrain

#endif  // PSTRAIN_DATA_RECORD_SOURCE_H_
