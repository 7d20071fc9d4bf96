#include "tools/mnist.h"

#include <zlib.h>

#include <cstdlib>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "opencv2/imgcodecs.hpp"
#include "recordio/image_record.h"
#include "recordio/index.h"
#include "recordio/recordio.h"

namespace pstrain {
namespace tools {
namespace {

std::string Tmp(const std::string& name) {
  return absl::StrCat(std::getenv("TEST_TMPDIR"), "/", name);
}

void PutBE(std::string* s, uint32_t v) {
  for (int i = 3; i >= 0; --i)
    s->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void WriteGz(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
}

TEST(MnistTest, ConvertsIdxToRecordsLosslessly) {
  std::string images, labels;
  PutBE(&images, 0x803);
  PutBE(&images, 3);
  PutBE(&images, 4);
  PutBE(&images, 5);
  for (int i = 0; i < 3 * 20; ++i) images.push_back(static_cast<char>(i * 4));
  PutBE(&labels, 0x801);
  PutBE(&labels, 3);
  labels += std::string("\x07\x00\x09", 3);
  WriteGz(Tmp("img.gz"), images);
  std::ofstream(Tmp("lab"), std::ios::binary) << labels;  // Plain works too.
  auto n = ConvertMnist(Tmp("img.gz"), Tmp("lab"), Tmp("m"), {});
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 3);
  auto idx = recordio::ReadIndexFile(Tmp("m.idx"));
  ASSERT_TRUE(idx.ok());
  ASSERT_EQ(idx->size(), 3u);
  auto r = recordio::RecordReader::Open(Tmp("m.rec"));
  absl::string_view v;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(*(*r)->Next(&v));
    EXPECT_EQ((*r)->record_offset(), (*idx)[i].offset);
    auto rec = recordio::ParseImageRecord(v);
    EXPECT_EQ(rec->id, static_cast<uint64_t>(i));
    EXPECT_EQ(rec->label, static_cast<float>(labels[8 + i]));
    cv::Mat img =
        cv::imdecode(cv::Mat(1, static_cast<int>(rec->image.size()), CV_8U,
                             const_cast<char*>(rec->image.data())),
                     cv::IMREAD_UNCHANGED);
    ASSERT_EQ(img.rows, 4);
    ASSERT_EQ(img.cols, 5);
    for (int p = 0; p < 20; ++p) {
      EXPECT_EQ(img.data[p], static_cast<uint8_t>(images[16 + i * 20 + p]));
    }
  }
}

TEST(MnistTest, BadFilesAreNamed) {
  std::ofstream(Tmp("junk"), std::ios::binary) << "not idx at all";
  auto r = ReadIdxImages(Tmp("junk"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("junk"));
  std::string short_images;
  PutBE(&short_images, 0x803);
  PutBE(&short_images, 1000);
  PutBE(&short_images, 28);
  PutBE(&short_images, 28);
  std::ofstream(Tmp("short"), std::ios::binary) << short_images;
  EXPECT_THAT(std::string(ReadIdxImages(Tmp("short")).status().message()),
              ::testing::HasSubstr("header says 1000 images"));
  EXPECT_EQ(ReadIdxLabels(Tmp("none")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(MnistTest, RealFashionMnistWhenInstalled) {
  const std::string dir = "/usr/share/datasets/fashion-mnist/";
  if (!std::ifstream(dir + "t10k-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << "Debian's dataset-fashion-mnist is not installed; skipped";
  }
  MnistOptions o;
  o.limit = 200;
  auto n = ConvertMnist(dir + "t10k-images-idx3-ubyte.gz",
                        dir + "t10k-labels-idx1-ubyte.gz", Tmp("fm"), o);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 200);
  auto r = recordio::RecordReader::Open(Tmp("fm.rec"));
  absl::string_view v;
  int count = 0;
  std::vector<int> per_class(10, 0);
  while (*(*r)->Next(&v)) {
    auto rec = recordio::ParseImageRecord(v);
    ASSERT_TRUE(rec.ok());
    ASSERT_GE(rec->label, 0);
    ASSERT_LT(rec->label, 10);
    ++per_class[static_cast<int>(rec->label)];
    ++count;
  }
  EXPECT_EQ(count, 200);
  for (int c : per_class) EXPECT_GT(c, 5);  // All ten classes occur.
}

}  // namespace
}  // namespace tools
}  // namespace pstrain
