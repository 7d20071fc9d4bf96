#include "data/augment.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "opencv2/imgcodecs.hpp"

namespace pstrain {
namespace data {
namespace {

using ::testing::HasSubstr;

// A BGR image whose pixel (y, x) is (b, g, r) = (x, y, x + y).
cv::Mat Gradient(int h, int w) {
  cv::Mat m(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      m.at<cv::Vec3b>(y, x) = cv::Vec3b(x, y, (x + y) & 0xff);
    }
  }
  return m;
}

AugmentOptions Small(int h, int w) {
  AugmentOptions o;
  o.height = h;
  o.width = w;
  return o;
}

float At(const std::vector<float>& chw, const AugmentOptions& o, int c, int y,
         int x) {
  return chw[(c * o.height + y) * o.width + x];
}

TEST(AugmentTest, CenterCropConvertsBgrToRgbAndNormalizes) {
  AugmentOptions o = Small(4, 6);
  o.mean[0] = 10;  // R
  o.mean[1] = 20;  // G
  o.mean[2] = 30;  // B
  o.std[0] = 2;
  o.std[1] = 4;
  o.std[2] = 5;
  ASSERT_TRUE(ValidateAugmentOptions(o).ok());
  std::vector<float> out(3 * 4 * 6);
  std::mt19937 rng(1);
  ASSERT_TRUE(Augment(Gradient(10, 20), o, &rng, absl::MakeSpan(out)).ok());
  // Center crop of 10x20 to 4x6 starts at (y, x) = (3, 7).
  for (int y = 0; y < 4; ++y) {
    for (int x = 0; x < 6; ++x) {
      const int sy = y + 3, sx = x + 7;
      EXPECT_FLOAT_EQ(At(out, o, 0, y, x), (sx + sy - 10) / 2.0f);  // R
      EXPECT_FLOAT_EQ(At(out, o, 1, y, x), (sy - 20) / 4.0f);       // G
      EXPECT_FLOAT_EQ(At(out, o, 2, y, x), (sx - 30) / 5.0f);       // B
    }
  }
}

TEST(AugmentTest, MirrorFlipsRowsAndIsSeeded) {
  AugmentOptions o = Small(8, 8);
  o.rand_mirror = true;
  cv::Mat img = Gradient(8, 8);
  int mirrored = 0, plain = 0;
  for (int seed = 0; seed < 40; ++seed) {
    std::vector<float> out(3 * 64), again(3 * 64);
    std::mt19937 a(seed), b(seed);
    ASSERT_TRUE(Augment(img, o, &a, absl::MakeSpan(out)).ok());
    ASSERT_TRUE(Augment(img, o, &b, absl::MakeSpan(again)).ok());
    EXPECT_EQ(out, again);  // Same seed, same result.
    // Blue channel holds x: ascending or descending along a row.
    if (At(out, o, 2, 0, 0) == 7) {
      ++mirrored;
      EXPECT_EQ(At(out, o, 2, 0, 7), 0);
    } else {
      ++plain;
      EXPECT_EQ(At(out, o, 2, 0, 0), 0);
    }
  }
  EXPECT_GT(mirrored, 5);
  EXPECT_GT(plain, 5);
}

TEST(AugmentTest, PadUsesFillValueAndRandomCropStaysInside) {
  AugmentOptions o = Small(12, 12);
  o.pad = 2;
  o.fill_value = 200;
  o.rand_crop = true;
  cv::Mat img(10, 10, CV_8UC3, cv::Scalar(5, 5, 5));
  bool saw_fill = false;
  for (int seed = 0; seed < 20; ++seed) {
    std::vector<float> out(3 * 144);
    std::mt19937 rng(seed);
    ASSERT_TRUE(Augment(img, o, &rng, absl::MakeSpan(out)).ok());
    for (float v : out) {
      ASSERT_TRUE(v == 5 || v == 200) << v;
      saw_fill |= v == 200;
    }
    // 14x14 padded, 12x12 crop: the crop always keeps some of the image.
    EXPECT_EQ(At(out, o, 0, 6, 6), 5);
  }
  EXPECT_TRUE(saw_fill);
}

TEST(AugmentTest, SmallImagesAreScaledUpAndResizeUsesShorterEdge) {
  AugmentOptions o = Small(32, 32);
  std::vector<float> out(3 * 32 * 32);
  std::mt19937 rng(0);
  EXPECT_TRUE(Augment(Gradient(8, 16), o, &rng, absl::MakeSpan(out)).ok());
  o.resize = 40;  // 100x50 -> 80x40, then center crop 32x32.
  EXPECT_TRUE(Augment(Gradient(100, 50), o, &rng, absl::MakeSpan(out)).ok());
}

TEST(AugmentTest, RandomResizedCropAndJitterProduceValidOutput) {
  AugmentOptions o = Small(16, 16);
  o.random_resized_crop = true;
  o.min_random_area = 0.08f;
  o.min_aspect_ratio = 0.75f;
  o.max_aspect_ratio = 4.0f / 3;
  o.brightness = o.contrast = o.saturation = 0.4f;
  o.random_h = 10;
  o.random_s = 20;
  o.random_l = 20;
  ASSERT_TRUE(ValidateAugmentOptions(o).ok());
  cv::Mat img = Gradient(60, 90);
  std::vector<float> first;
  bool differs = false;
  for (int seed = 0; seed < 10; ++seed) {
    std::vector<float> out(3 * 256);
    std::mt19937 rng(seed);
    ASSERT_TRUE(Augment(img, o, &rng, absl::MakeSpan(out)).ok());
    for (float v : out) ASSERT_TRUE(v >= 0 && v <= 255) << v;
    if (seed == 0) first = out;
    differs |= out != first;
  }
  EXPECT_TRUE(differs);
}

TEST(AugmentTest, GrayscaleSingleChannel) {
  AugmentOptions o = Small(2, 2);
  o.channels = 1;
  cv::Mat img(2, 2, CV_8UC1, cv::Scalar(9));
  std::vector<float> out(4);
  std::mt19937 rng(0);
  ASSERT_TRUE(Augment(img, o, &rng, absl::MakeSpan(out)).ok());
  EXPECT_THAT(out, ::testing::Each(9.0f));
  // A colour image for a grayscale job is refused, not misread.
  EXPECT_FALSE(Augment(Gradient(2, 2), o, &rng, absl::MakeSpan(out)).ok());
}

TEST(AugmentTest, BadOptionsNameTheOption) {
  AugmentOptions o;
  o.channels = 2;
  EXPECT_THAT(std::string(ValidateAugmentOptions(o).message()),
              HasSubstr("channels must be 1 or 3"));
  o = AugmentOptions();
  o.random_resized_crop = true;
  o.min_random_area = 0;
  EXPECT_THAT(std::string(ValidateAugmentOptions(o).message()),
              HasSubstr("min_random_area"));
  o = AugmentOptions();
  o.std[1] = 0;
  EXPECT_THAT(std::string(ValidateAugmentOptions(o).message()),
              HasSubstr("rgb_std[1]"));
}

TEST(DecodeImageTest, DecodesJpegAndPngAndRejectsGarbage) {
  cv::Mat img = Gradient(20, 30);
  for (const char* ext : {".jpg", ".png"}) {
    std::vector<uchar> buf;
    ASSERT_TRUE(cv::imencode(ext, img, buf));
    auto m =
        DecodeImage(absl::string_view(reinterpret_cast<const char*>(buf.data()),
                                      buf.size()),
                    3, "x");
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->rows, 20);
    EXPECT_EQ(m->cols, 30);
    auto gray =
        DecodeImage(absl::string_view(reinterpret_cast<const char*>(buf.data()),
                                      buf.size()),
                    1, "x");
    ASSERT_TRUE(gray.ok());
    EXPECT_EQ(gray->channels(), 1);
  }
  auto bad = DecodeImage("not an image at all", 3, "train.rec@1234");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("train.rec@1234"));
  EXPECT_FALSE(DecodeImage("", 3, "x").ok());
  // A JPEG cut in half must not crash (OpenCV may decode a partial image).
  std::vector<uchar> buf;
  cv::imencode(".jpg", img, buf);
  (void)DecodeImage(absl::string_view(reinterpret_cast<const char*>(buf.data()),
                                      buf.size() / 2),
                    3, "half");
}

}  // namespace
}  // namespace data
}  // namespace pstrain
