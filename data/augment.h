// Image decoding and augmentation for training batches, with the semantics
// of MXNet's ImageRecordIter (formats.md §4): resize, pad, crop (random
// resized crop, random or center crop, upscaling small images), colour
// jitter, mirror, then BGR -> RGB and (pixel - mean) * scale / std into
// float32 CHW.
#ifndef PSTRAIN_DATA_AUGMENT_H_
#define PSTRAIN_DATA_AUGMENT_H_

#include <cstdint>
#include <random>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "opencv2/core.hpp"

namespace pstrain {
namespace data {

struct AugmentOptions {
  // Output: channels (1 or 3), height, width.
  int channels = 3;
  int height = 224;
  int width = 224;
  // Shorter edge resized to this first; <= 0: no resize.
  int resize = -1;
  // Pixels of `fill_value` added on every side before cropping.
  int pad = 0;
  int fill_value = 255;
  // Random crop position (else centered) and random horizontal mirror.
  bool rand_crop = false;
  bool rand_mirror = false;
  // Inception-style crop: a random area fraction in [min_random_area,
  // max_random_area] and aspect ratio in [min_aspect_ratio,
  // max_aspect_ratio], resized to the output size.
  bool random_resized_crop = false;
  float min_random_area = 1.0f;
  float max_random_area = 1.0f;
  float min_aspect_ratio = 1.0f;
  float max_aspect_ratio = 1.0f;
  // Colour jitter, applied in random order: each factor drawn from
  // [1 - x, 1 + x]. 0 disables.
  float brightness = 0.0f;
  float contrast = 0.0f;
  float saturation = 0.0f;
  // HLS jitter: hue, lightness and saturation offsets drawn from [-x, x]
  // (OpenCV's 8-bit HLS units, as MXNet's random_h/l/s).
  int random_h = 0;
  int random_s = 0;
  int random_l = 0;
  // Normalization, per output channel in RGB order.
  float mean[3] = {0.0f, 0.0f, 0.0f};
  float std[3] = {1.0f, 1.0f, 1.0f};
  float scale = 1.0f;
  // OpenCV interpolation for resizes (1 = INTER_LINEAR, MXNet's default).
  int inter_method = 1;
};

// Returns InvalidArgument naming the option when `options` cannot work
// (channels not 1 or 3, non-positive output size, areas outside (0, 1],
// inverted ranges, zero std, negative pad or jitter).
absl::Status ValidateAugmentOptions(const AugmentOptions& options);

// Decodes an encoded image (JPEG, PNG, ...) with OpenCV into 8-bit BGR
// (channels == 3) or grayscale (channels == 1). Returns DataLoss naming
// `source` when the bytes do not decode. Never throws.
absl::StatusOr<cv::Mat> DecodeImage(absl::string_view bytes, int channels,
                                    absl::string_view source);

// Augments `image` (8-bit, 1 or 3 channels, BGR) and writes the result as
// float32 CHW into `out`. Randomness comes from `rng` only, so a seeded
// generator reproduces a batch exactly.
// REQUIRES: ValidateAugmentOptions(options).ok(),
//           out.size() == channels * height * width.
// Returns InvalidArgument for an empty image or a channel count that does
// not match the options.
absl::Status Augment(const cv::Mat& image, const AugmentOptions& options,
                     std::mt19937* rng, absl::Span<float> out);

}  // namespace data
}  // namespace pstrain

#endif  // PSTRAIN_DATA_AUGMENT_H_
