#include "recordio/image_record.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace pstrain {
namespace recordio {

std::vector<float> ImageRecord::AllLabels() const {
  if (flag > 0) return labels;
  return {label};
}

absl::StatusOr<ImageRecord> ParseImageRecord(absl::string_view payload) {
  if (payload.size() < kIRHeaderSize) {
    return absl::DataLossError(
        absl::StrCat("image record of ", payload.size(),
                     " bytes is shorter than its 24-byte "
                     "header"));
  }
  ImageRecord r;
  const char* p = payload.data();
  std::memcpy(&r.flag, p, 4);
  std::memcpy(&r.label, p + 4, 4);
  std::memcpy(&r.id, p + 8, 8);
  std::memcpy(&r.id2, p + 16, 8);
  const size_t rest = payload.size() - kIRHeaderSize;
  if (r.flag > rest / 4) {
    return absl::DataLossError(absl::StrCat("image record header announces ",
                                            r.flag, " labels but only ", rest,
                                            " bytes follow it"));
  }
  r.labels.resize(r.flag);
  if (r.flag > 0) std::memcpy(r.labels.data(), p + kIRHeaderSize, 4 * r.flag);
  r.image = payload.substr(kIRHeaderSize + 4 * static_cast<size_t>(r.flag));
  return r;
}

std::string PackImageRecord(float label, const std::vector<float>& labels,
                            uint64_t id, uint64_t id2,
                            absl::string_view image) {
  std::string out(kIRHeaderSize + 4 * labels.size() + image.size(), '\0');
  const uint32_t flag = static_cast<uint32_t>(labels.size());
  const float header_label = labels.empty() ? label : 0.0f;
  char* p = out.data();
  std::memcpy(p, &flag, 4);
  std::memcpy(p + 4, &header_label, 4);
  std::memcpy(p + 8, &id, 8);
  std::memcpy(p + 16, &id2, 8);
  if (!labels.empty())
    std::memcpy(p + kIRHeaderSize, labels.data(), 4 * labels.size());
  if (!image.empty()) {
    std::memcpy(p + kIRHeaderSize + 4 * labels.size(), image.data(),
                image.size());
  }
  return out;
}

}  // namespace recordio
}  // namespace pstrain
