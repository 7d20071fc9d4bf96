// Converts MNIST-style IDX files (e.g. Debian's dataset-fashion-mnist,
// /usr/share/datasets/fashion-mnist/*-ubyte.gz) into RecordIO image
// datasets (.rec + .idx), for the demo and for tests with real images.
#ifndef PSTRAIN_TOOLS_MNIST_H_
#define PSTRAIN_TOOLS_MNIST_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace pstrain {
namespace tools {

struct IdxImages {
  int64_t count = 0;
  int rows = 0;
  int cols = 0;
  std::vector<uint8_t> pixels;  // count x rows x cols.
};

// Reads an IDX3 image file (gzip-compressed or plain). DataLoss names the
// file for a bad magic, impossible sizes or a short file.
absl::StatusOr<IdxImages> ReadIdxImages(const std::string& path);
// Reads an IDX1 label file.
absl::StatusOr<std::vector<uint8_t>> ReadIdxLabels(const std::string& path);

struct MnistOptions {
  std::string encoding = ".png";  // .png (lossless) or .jpg.
  int quality = 95;
  int64_t limit = -1;  // Convert at most this many images; < 0: all.
};

// Writes `prefix`.rec and `prefix`.idx: record i has id i, the label as
// its float label, and the image encoded as grayscale. Returns the number
// of records.
absl::StatusOr<int64_t> ConvertMnist(const std::string& images_path,
                                     const std::string& labels_path,
                                     const std::string& prefix,
                                     const MnistOptions& options);

}  // namespace tools
}  // namespace pstrain

#endif  // PSTRAIN_TOOLS_MNIST_H_
