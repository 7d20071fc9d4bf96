#include "recordio/index.h"

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

}  // namespace
}  // namespace recordio
}  // namespace pstrain
