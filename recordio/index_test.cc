#include "recordio/index.h"

#include "recordio/recordio.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pstrain {
namespace recordio {
namespace {

TEST(IndexTest, ParsesWritesAndRoundTrips) {
  auto e = ParseIndex("0\t0\n1\t1024\n\n7\t2048\r\n", "x.idx");
  ASSERT_TRUE(e.ok()) << e.status();
  ASSERT_EQ(e->size(), 3u);
  EXPECT_EQ((*e)[2].key, 7);
  EXPECT_EQ((*e)[2].offset, 2048);
  EXPECT_EQ(FormatIndexLine({5, 40}), "5\t40\n");
  const std::string path = absl::StrCat(std::getenv("TEST_TMPDIR"), "/a.idx");
  ASSERT_TRUE(WriteIndexFile(path, *e).ok());
  auto back = ReadIndexFile(path);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, *e);
}

TEST(IndexTest, MalformedLinesNameFileAndLine) {
  for (const char* bad : {"0\t0\nx\t4\n", "0\t0\n1\n", "0\t0\n1\t-4\n", "0\t0\n1\t2\t3\n"}) {
    auto e = ParseIndex(bad, "bad.idx");
    ASSERT_FALSE(e.ok()) << bad;
    EXPECT_THAT(std::string(e.status().message()), ::testing::HasSubstr("bad.idx:2"));
  }
  EXPECT_EQ(ReadIndexFile("/no/such.idx").status().code(), absl::StatusCode::kNotFound);
}

TEST(IndexedReaderTest, ReadsByKey) {
  const std::string dir = std::getenv("TEST_TMPDIR");
  auto w = RecordWriter::Create(dir + "/k.rec");
  std::vector<IndexEntry> idx;
  for (int i = 0; i < 5; ++i) {
    idx.push_back({100 + i, (*w)->Tell()});
    ASSERT_TRUE((*w)->Write(absl::StrCat("payload-", i)).ok());
  }
  ASSERT_TRUE((*w)->Close().ok());
  ASSERT_TRUE(WriteIndexFile(dir + "/k.idx", idx).ok());
  auto r = IndexedReader::Open(dir + "/k.rec", dir + "/k.idx");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->entries().size(), 5u);
  std::string p;
  ASSERT_TRUE((*r)->Read(103, &p).ok());
  EXPECT_EQ(p, "payload-3");
  ASSERT_TRUE((*r)->Read(100, &p).ok());
  EXPECT_EQ(p, "payload-0");
  EXPECT_EQ((*r)->Read(7, &p).code(), absl::StatusCode::kNotFound);
  // An index pointing into the middle of a record is caught.
  ASSERT_TRUE(WriteIndexFile(dir + "/bad.idx", {{1, idx[2].offset + 4}}).ok());
  auto bad = IndexedReader::Open(dir + "/k.rec", dir + "/bad.idx");
  ASSERT_TRUE(bad.ok());
  absl::Status s = (*bad)->Read(1, &p);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("k.rec"));
}

}  // namespace
}  // namespace recordio
}  // namespace pstrain
