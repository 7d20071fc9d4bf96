#include "data/augment.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "opencv2/imgcodecs.hpp"
#include "opencv2/imgproc.hpp"

namespace pstrain {
namespace data {
namespace {

float Uniform(std::mt19937* rng, float lo, float hi) {
  return std::uniform_real_distribution<float>(lo, hi)(*rng);
}

int UniformInt(std::mt19937* rng, int lo, int hi) {  // Inclusive.
  return std::uniform_int_distribution<int>(lo, hi)(*rng);
}

cv::Mat ResizeShorter(const cv::Mat& img, int size, int inter) {
  const int h = img.rows, w = img.cols;
  if (std::min(h, w) == size) return img;
  int nh, nw;
  if (h < w) {
    nh = size;
    nw = static_cast<int>(static_cast<int64_t>(w) * size / h);
  } else {
    nw = size;
    nh = static_cast<int>(static_cast<int64_t>(h) * size / w);
  }
  cv::Mat out;
  cv::resize(img, out, cv::Size(nw, nh), 0, 0, inter);
  return out;
}

// Inception-style crop; falls back to a center crop of the whole image when
// ten tries find no fitting box (as MXNet does).
cv::Mat RandomResizedCrop(const cv::Mat& img, const AugmentOptions& o,
                          std::mt19937* rng) {
  const double area = static_cast<double>(img.rows) * img.cols;
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target =
        area * Uniform(rng, o.min_random_area, o.max_random_area);
    const double log_lo = std::log(o.min_aspect_ratio);
    const double log_hi = std::log(o.max_aspect_ratio);
    const double ratio =
        std::exp(log_lo == log_hi ? log_lo : Uniform(rng, log_lo, log_hi));
    const int w = static_cast<int>(std::lround(std::sqrt(target * ratio)));
    const int h = static_cast<int>(std::lround(std::sqrt(target / ratio)));
    if (w >= 1 && h >= 1 && w <= img.cols && h <= img.rows) {
      const int x = UniformInt(rng, 0, img.cols - w);
      const int y = UniformInt(rng, 0, img.rows - h);
      cv::Mat out;
      cv::resize(img(cv::Rect(x, y, w, h)), out, cv::Size(o.width, o.height), 0,
                 0, o.inter_method);
      return out;
    }
  }
  cv::Mat out;
  const int side = std::min(img.rows, img.cols);
  cv::resize(
      img(cv::Rect((img.cols - side) / 2, (img.rows - side) / 2, side, side)),
      out, cv::Size(o.width, o.height), 0, 0, o.inter_method);
  return out;
}

void ColorJitter(cv::Mat* img, const AugmentOptions& o, std::mt19937* rng) {
  std::array<int, 3> order = {0, 1, 2};
  std::shuffle(order.begin(), order.end(), *rng);
  cv::Mat f;
  img->convertTo(f, CV_32F);
  // Luma weights of ITU-R BT.601 in BGR order.
  auto gray_of = [&](const cv::Mat& m) {
    cv::Mat g;
    if (m.channels() == 3) {
      cv::transform(m, g, cv::Matx13f(0.114f, 0.587f, 0.299f));
    } else {
      g = m.clone();
    }
    return g;
  };
  for (int which : order) {
    if (which == 0 && o.brightness > 0) {
      f *= Uniform(rng, 1 - o.brightness, 1 + o.brightness);
    } else if (which == 1 && o.contrast > 0) {
      const float alpha = Uniform(rng, 1 - o.contrast, 1 + o.contrast);
      const double mean = cv::mean(gray_of(f))[0];
      f = f * alpha + (1 - alpha) * mean;
    } else if (which == 2 && o.saturation > 0 && f.channels() == 3) {
      const float alpha = Uniform(rng, 1 - o.saturation, 1 + o.saturation);
      cv::Mat g = gray_of(f), g3;
      cv::merge(std::vector<cv::Mat>{g, g, g}, g3);
      f = f * alpha + g3 * (1 - alpha);
    }
  }
  f.convertTo(*img, CV_8U);  // Saturates to [0, 255].
}

void HlsJitter(cv::Mat* img, const AugmentOptions& o, std::mt19937* rng) {
  if (img->channels() != 3) return;
  const int dh = o.random_h ? UniformInt(rng, -o.random_h, o.random_h) : 0;
  const int ds = o.random_s ? UniformInt(rng, -o.random_s, o.random_s) : 0;
  const int dl = o.random_l ? UniformInt(rng, -o.random_l, o.random_l) : 0;
  cv::Mat hls;
  cv::cvtColor(*img, hls, cv::COLOR_BGR2HLS);
  for (int y = 0; y < hls.rows; ++y) {
    auto* p = hls.ptr<cv::Vec3b>(y);
    for (int x = 0; x < hls.cols; ++x) {
      p[x][0] = static_cast<uchar>(((p[x][0] + dh) % 180 + 180) % 180);
      p[x][1] = cv::saturate_cast<uchar>(p[x][1] + dl);
      p[x][2] = cv::saturate_cast<uchar>(p[x][2] + ds);
    }
  }
  cv::cvtColor(hls, *img, cv::COLOR_HLS2BGR);
}

}  // namespace

absl::Status ValidateAugmentOptions(const AugmentOptions& o) {
  auto bad = [](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("augmentation: ", what));
  };
  if (o.channels != 1 && o.channels != 3) {
    return bad(
        absl::StrCat("image_shape channels must be 1 or 3, not ", o.channels));
  }
  if (o.height <= 0 || o.width <= 0) {
    return bad(absl::StrCat("image_shape ", o.height, "x", o.width,
                            " must be positive"));
  }
  if (o.pad < 0) return bad("pad must be >= 0");
  if (o.fill_value < 0 || o.fill_value > 255)
    return bad("fill_value must be in [0, 255]");
  if (o.random_resized_crop) {
    if (!(o.min_random_area > 0 && o.min_random_area <= o.max_random_area &&
          o.max_random_area <= 1)) {
      return bad(absl::StrCat("need 0 < min_random_area (", o.min_random_area,
                              ") <= max_random_area (", o.max_random_area,
                              ") <= 1"));
    }
    if (!(o.min_aspect_ratio > 0 && o.min_aspect_ratio <= o.max_aspect_ratio)) {
      return bad(absl::StrCat("need 0 < min_aspect_ratio (", o.min_aspect_ratio,
                              ") <= max_aspect_ratio (", o.max_aspect_ratio,
                              ")"));
    }
  }
  if (o.brightness < 0 || o.contrast < 0 || o.saturation < 0 ||
      o.random_h < 0 || o.random_s < 0 || o.random_l < 0) {
    return bad("jitter amounts must be >= 0");
  }
  for (int c = 0; c < 3; ++c) {
    if (o.std[c] == 0)
      return bad(absl::StrCat("rgb_std[", c, "] must not be 0"));
  }
  return absl::OkStatus();
}

absl::StatusOr<cv::Mat> DecodeImage(absl::string_view bytes, int channels,
                                    absl::string_view source) {
  if (bytes.empty()) {
    return absl::DataLossError(absl::StrCat(source, ": empty image"));
  }
  cv::Mat img;
  try {
    cv::Mat buf(1, static_cast<int>(bytes.size()), CV_8U,
                const_cast<char*>(bytes.data()));
    img = cv::imdecode(buf,
                       channels == 1 ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR);
  } catch (const cv::Exception& e) {
    return absl::DataLossError(
        absl::StrCat(source, ": image does not decode: ", e.what()));
  }
  if (img.empty()) {
    return absl::DataLossError(absl::StrCat(source, ": image does not decode (",
                                            bytes.size(), " bytes)"));
  }
  return img;
}

absl::Status Augment(const cv::Mat& image, const AugmentOptions& o,
                     std::mt19937* rng, absl::Span<float> out) {
  CHECK_EQ(out.size(), static_cast<size_t>(o.channels) * o.height * o.width);
  if (image.empty()) return absl::InvalidArgumentError("empty image");
  if (image.channels() != o.channels || image.depth() != CV_8U) {
    return absl::InvalidArgumentError(absl::StrCat(
        "image has ", image.channels(), " channels (depth ", image.depth(),
        "), options want ", o.channels, " 8-bit channels"));
  }
  try {
    cv::Mat img = image;
    if (o.resize > 0) img = ResizeShorter(img, o.resize, o.inter_method);
    if (o.pad > 0) {
      cv::Mat padded;
      cv::copyMakeBorder(img, padded, o.pad, o.pad, o.pad, o.pad,
                         cv::BORDER_CONSTANT, cv::Scalar::all(o.fill_value));
      img = padded;
    }
    if (o.random_resized_crop) {
      img = RandomResizedCrop(img, o, rng);
    } else {
      if (img.rows < o.height || img.cols < o.width) {
        // Too small: scale up so the crop fits (keeps the aspect ratio).
        const double s = std::max(static_cast<double>(o.height) / img.rows,
                                  static_cast<double>(o.width) / img.cols);
        cv::Mat up;
        cv::resize(
            img, up,
            cv::Size(
                std::max(o.width, static_cast<int>(std::ceil(img.cols * s))),
                std::max(o.height, static_cast<int>(std::ceil(img.rows * s)))),
            0, 0, o.inter_method);
        img = up;
      }
      int x = (img.cols - o.width) / 2, y = (img.rows - o.height) / 2;
      if (o.rand_crop) {
        x = UniformInt(rng, 0, img.cols - o.width);
        y = UniformInt(rng, 0, img.rows - o.height);
      }
      img = img(cv::Rect(x, y, o.width, o.height));
    }
    if (o.brightness > 0 || o.contrast > 0 || o.saturation > 0) {
      cv::Mat copy = img.clone();
      ColorJitter(&copy, o, rng);
      img = copy;
    }
    if (o.random_h || o.random_s || o.random_l) {
      cv::Mat copy = img.clone();
      HlsJitter(&copy, o, rng);
      img = copy;
    }
    const bool mirror = o.rand_mirror && UniformInt(rng, 0, 1) == 1;
    // Write CHW, BGR -> RGB, normalized, mirrored while writing.
    const int plane = o.height * o.width;
    for (int c = 0; c < o.channels; ++c) {
      const int src_c = o.channels == 3 ? 2 - c : 0;
      const float mean = o.mean[c], mul = o.scale / o.std[c];
      float* dst = out.data() + static_cast<size_t>(c) * plane;
      for (int yy = 0; yy < o.height; ++yy) {
        const uchar* row = img.ptr<uchar>(yy);
        for (int xx = 0; xx < o.width; ++xx) {
          const int sx = mirror ? o.width - 1 - xx : xx;
          dst[yy * o.width + xx] =
              (static_cast<float>(row[sx * o.channels + src_c]) - mean) * mul;
        }
      }
    }
  } catch (const cv::Exception& e) {
    return absl::InternalError(absl::StrCat("augmentation failed: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace data
}  // namespace pstrain
