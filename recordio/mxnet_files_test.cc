// Compatibility with real files written by MXNet (../shared/testdata/mxnet,
// found through $PSTRAIN_SHARED_DIR; skipped, saying so, when absent).
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "opencv2/imgcodecs.hpp"
#include "recordio/image_record.h"
#include "recordio/index.h"
#include "recordio/recordio.h"
#include "recordio/split.h"

namespace pstrain {
namespace recordio {
namespace {

std::string DataDir() {
  const char* shared = std::getenv("PSTRAIN_SHARED_DIR");
  if (shared == nullptr) return "";
  std::string dir = absl::StrCat(shared, "/testdata/mxnet");
  if (!std::ifstream(dir + "/cgzzt_val.rec")) return "";
  return dir;
}

#define REQUIRE_MXNET_DATA(dir)                                          \
  const std::string dir = DataDir();                                     \
  if (dir.empty()) {                                                     \
    GTEST_SKIP() << "MXNet test data not found (set PSTRAIN_SHARED_DIR " \
                    "to ../shared; scripts/test does); test skipped";    \
  }

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

struct Read {
  std::vector<std::string> payloads;
  std::vector<int64_t> offsets;
};

Read ReadFile(const std::string& path) {
  Read out;
  auto r = RecordReader::Open(path);
  EXPECT_TRUE(r.ok()) << r.status();
  absl::string_view v;
  while (true) {
    auto more = (*r)->Next(&v);
    EXPECT_TRUE(more.ok()) << more.status();
    if (!more.ok() || !*more) break;
    out.payloads.emplace_back(v);
    out.offsets.push_back((*r)->record_offset());
  }
  return out;
}

void ExpectSplitsReadEachOnce(const std::string& path, size_t n) {
  for (int parts = 1; parts <= 8; ++parts) {
    std::map<int64_t, int> seen;
    for (int k = 0; k < parts; ++k) {
      auto r = PartReader::Open({path}, k, parts);
      ASSERT_TRUE(r.ok());
      absl::string_view v;
      while (*(*r)->Next(&v)) ++seen[(*r)->record_offset()];
    }
    EXPECT_EQ(seen.size(), n) << parts << " parts";
    for (const auto& [off, count] : seen) EXPECT_EQ(count, 1) << off;
  }
}

TEST(MxnetFilesTest, CgzztEveryRecordDecodesAndReencodesByteForByte) {
  REQUIRE_MXNET_DATA(dir);
  const std::string path = dir + "/cgzzt_val.rec";
  Read got = ReadFile(path);
  ASSERT_EQ(got.payloads.size(), 392u);
  std::string rewritten;
  for (const auto& p : got.payloads) {
    auto rec = ParseImageRecord(p);
    ASSERT_TRUE(rec.ok()) << rec.status();
    EXPECT_EQ(rec->flag, 0u);
    cv::Mat img =
        cv::imdecode(cv::Mat(1, static_cast<int>(rec->image.size()), CV_8U,
                             const_cast<char*>(rec->image.data())),
                     cv::IMREAD_COLOR);
    ASSERT_FALSE(img.empty()) << "record " << rec->id << " does not decode";
    AppendRecord(p, &rewritten);
  }
  EXPECT_EQ(rewritten, ReadAll(path));
  ExpectSplitsReadEachOnce(path, 392);
}

TEST(MxnetFilesTest, ImagedetectPackedLabelsIndexAndList) {
  REQUIRE_MXNET_DATA(dir);
  const std::string path = dir + "/imagedetect_val.rec";
  Read got = ReadFile(path);
  ASSERT_EQ(got.payloads.size(), 4u);
  auto idx = ReadIndexFile(dir + "/imagedetect_val.idx");
  ASSERT_TRUE(idx.ok()) << idx.status();
  ASSERT_EQ(idx->size(), 4u);
  // MXNet's index passes the check every .idx gets against its .rec.
  auto indexed = IndexedReader::Open(path, dir + "/imagedetect_val.idx");
  EXPECT_TRUE(indexed.ok()) << indexed.status();
  // The .lst: index, 19 labels, path.
  std::vector<std::vector<float>> lst_labels;
  for (absl::string_view line : absl::StrSplit(
           ReadAll(dir + "/imagedetect_val.lst"), '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> f = absl::StrSplit(line, '\t');
    std::vector<float> labels;
    for (size_t i = 1; i + 1 < f.size(); ++i) {
      double v;
      ASSERT_TRUE(absl::SimpleAtod(f[i], &v));
      labels.push_back(static_cast<float>(v));
    }
    lst_labels.push_back(labels);
  }
  ASSERT_EQ(lst_labels.size(), 4u);
  std::string rewritten;
  auto reader = RecordReader::Open(path);
  ASSERT_TRUE(reader.ok());
  for (size_t i = 0; i < 4; ++i) {
    auto rec = ParseImageRecord(got.payloads[i]);
    ASSERT_TRUE(rec.ok());
    EXPECT_EQ(rec->flag, 19u);
    EXPECT_EQ(rec->labels, lst_labels[rec->id]);
    cv::Mat img =
        cv::imdecode(cv::Mat(1, static_cast<int>(rec->image.size()), CV_8U,
                             const_cast<char*>(rec->image.data())),
                     cv::IMREAD_COLOR);
    EXPECT_FALSE(img.empty());
    // Each .idx offset is the head of the record whose id is the key.
    EXPECT_EQ((*idx)[i].offset, got.offsets[i]);
    std::string at;
    ASSERT_TRUE((*reader)->ReadAt((*idx)[i].offset, &at).ok());
    EXPECT_EQ(ParseImageRecord(at)->id, static_cast<uint64_t>((*idx)[i].key));
    AppendRecord(got.payloads[i], &rewritten);
  }
  EXPECT_EQ(rewritten, ReadAll(path));
  ExpectSplitsReadEachOnce(path, 4);
  for (int parts = 1; parts <= 8; ++parts) {
    size_t total = 0;
    for (int k = 0; k < parts; ++k)
      total += IndexedPart(*idx, k, parts)->size();
    EXPECT_EQ(total, 4u);
  }
}

}  // namespace
}  // namespace recordio
}  // namespace pstrain
