#include "recordio/image_record.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pstrain {
namespace recordio {
namespace {

using ::testing::ElementsAre;

TEST(ImageRecordTest, ScalarLabelRoundTrip) {
  const std::string p = PackImageRecord(3.0f, {}, 17, 5, "JPEGBYTES");
  EXPECT_EQ(p.size(), 24u + 9u);
  auto r = ParseImageRecord(p);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->flag, 0u);
  EXPECT_EQ(r->label, 3.0f);
  EXPECT_EQ(r->id, 17u);
  EXPECT_EQ(r->id2, 5u);
  EXPECT_EQ(r->image, "JPEGBYTES");
  EXPECT_THAT(r->AllLabels(), ElementsAre(3.0f));
}

TEST(ImageRecordTest, PackedLabelsRoundTrip) {
  const std::string p = PackImageRecord(9.0f, {1.5f, 2.5f, -1.0f}, 4, 0, "img");
  auto r = ParseImageRecord(p);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->flag, 3u);
  EXPECT_EQ(r->label, 0.0f);  // MXNet writes 0 when labels are packed.
  EXPECT_THAT(r->labels, ElementsAre(1.5f, 2.5f, -1.0f));
  EXPECT_THAT(r->AllLabels(), ElementsAre(1.5f, 2.5f, -1.0f));
  EXPECT_EQ(r->image, "img");
}

TEST(ImageRecordTest, EmptyImageAndCorruptHeaders) {
  auto r = ParseImageRecord(PackImageRecord(1, {}, 0, 0, ""));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->image.empty());
  EXPECT_EQ(ParseImageRecord("short").status().code(),
            absl::StatusCode::kDataLoss);
  std::string p = PackImageRecord(0, {1, 2}, 0, 0, "");
  p.resize(p.size() - 1);  // Labels cut short.
  EXPECT_EQ(ParseImageRecord(p).status().code(), absl::StatusCode::kDataLoss);
  std::string huge = PackImageRecord(0, {}, 0, 0, "x");
  huge[3] = 0x7f;  // flag ~ 2^30 labels.
  auto h = ParseImageRecord(huge);
  EXPECT_EQ(h.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(h.status().message()),
              ::testing::HasSubstr("labels"));
}

}  // namespace
}  // namespace recordio
}  // namespace pstrain
