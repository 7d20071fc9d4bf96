// MXNet image records: a 24-byte IRHeader {u32 flag; f32 label; u64 id;
// u64 id2}, then (when flag > 0) `flag` float32 labels, then the encoded
// image (formats.md §2).
#ifndef PSTRAIN_RECORDIO_IMAGE_RECORD_H_
#define PSTRAIN_RECORDIO_IMAGE_RECORD_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pstrain {
namespace recordio {

inline constexpr size_t kIRHeaderSize = 24;

struct ImageRecord {
  uint32_t flag = 0;  // Number of packed labels (0: the scalar `label`).
  float label = 0;    // The label when flag == 0 (MXNet writes 0 otherwise).
  uint64_t id = 0;    // im2rec: the .lst index.
  uint64_t id2 = 0;
  std::vector<float> labels;  // The packed labels (flag of them).
  absl::string_view image;    // Encoded image bytes (a view into the payload).

  // The labels a training iterator uses: the packed ones, or {label}.
  std::vector<float> AllLabels() const;
};

// Parses a record payload. Returns DataLoss when it is shorter than the
// header or than the labels its flag announces. `image` points into
// `payload`.
absl::StatusOr<ImageRecord> ParseImageRecord(absl::string_view payload);

// Builds a payload as MXNet's recordio.pack does: with `labels` empty,
// flag 0 and `label`; otherwise flag = labels.size(), header label 0 and the
// labels packed before the image.
std::string PackImageRecord(float label, const std::vector<float>& labels,
                            uint64_t id, uint64_t id2, absl::string_view image);

}  // namespace recordio
}  // namespace pstrain

#endif  // PSTRAIN_RECORDIO_IMAGE_RECORD_H_
