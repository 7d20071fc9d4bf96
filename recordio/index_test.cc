#include "recordio/index.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "recordio/recordio.h"

namespace pstrain {
namespace recordio {
namespace {

using ::testing::HasSubstr;

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
  for (const char* bad :
       {"0\t0\nx\t4\n", "0\t0\n1\n", "0\t0\n1\t-4\n", "0\t0\n1\t2\t3\n"}) {
    auto e = ParseIndex(bad, "bad.idx");
    ASSERT_FALSE(e.ok()) << bad;
    EXPECT_THAT(std::string(e.status().message()),
                ::testing::HasSubstr("bad.idx:2"));
  }
  EXPECT_EQ(ReadIndexFile("/no/such.idx").status().code(),
            absl::StatusCode::kNotFound);
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
  // An index pointing into the middle of a record is caught when read.
  std::vector<IndexEntry> mid = idx;
  mid[2].offset += 4;
  ASSERT_TRUE(WriteIndexFile(dir + "/bad.idx", mid).ok());
  auto bad = IndexedReader::Open(dir + "/k.rec", dir + "/bad.idx");
  ASSERT_TRUE(bad.ok()) << bad.status();
  absl::Status s = (*bad)->Read(102, &p);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("k.rec"));
}

// CheckIndex against a .rec of six records: one case per way an index can
// disagree with its file. Every error names both files.
class CheckIndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::getenv("TEST_TMPDIR");
    rec_ = dir_ + "/c.rec";
    auto w = RecordWriter::Create(rec_);
    ASSERT_TRUE(w.ok());
    for (int i = 0; i < 6; ++i) {
      idx_.push_back({10 + i, (*w)->Tell()});
      ASSERT_TRUE((*w)->Write(absl::StrCat("record number ", i)).ok());
    }
    ASSERT_TRUE((*w)->Close().ok());
  }
  // CheckIndex of `entries` against c.rec (first cut to `size` bytes).
  absl::Status Check(const std::vector<IndexEntry>& entries,
                     int64_t size = -1) {
    if (size >= 0) std::filesystem::resize_file(rec_, size);
    auto r = RecordReader::Open(rec_);
    EXPECT_TRUE(r.ok());
    return CheckIndex(entries, dir_ + "/c.idx", r->get());
  }
  // Expects FailedPrecondition naming both files and `what`.
  void ExpectMismatch(const absl::Status& s, const std::string& what) {
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    const std::string m(s.message());
    EXPECT_THAT(
        m, HasSubstr(absl::StrCat(dir_, "/c.idx does not match ", rec_, ": ")))
        << m;
    EXPECT_THAT(m, HasSubstr(what)) << m;
  }
  std::string dir_, rec_;
  std::vector<IndexEntry> idx_;
};

TEST_F(CheckIndexTest, MatchingIndexPasses) {
  EXPECT_TRUE(Check(idx_).ok());
  EXPECT_TRUE(Check({}, 0).ok());  // Empty file, empty index.
}

TEST_F(CheckIndexTest, TruncatedIndexStopsShortOfTheFile) {
  const std::vector<IndexEntry> head(idx_.begin(), idx_.begin() + 3);
  ExpectMismatch(
      Check(head),
      absl::StrCat(
          "it lists 3 records, but the file holds more after byte offset ",
          idx_[3].offset, " (a record at byte offset ", idx_[3].offset));
  ExpectMismatch(Check({}), "it lists 0 records");
}

TEST_F(CheckIndexTest, TruncatedRecordFile) {
  // Cut inside record 4: entry 5 runs past the end, entry 6 lies past it.
  const int64_t size = idx_[4].offset + 10;
  ExpectMismatch(
      Check(idx_, size),
      absl::StrCat("entry 5 of 6 (key 14) at byte offset ", idx_[4].offset,
                   " runs past the end of the file: ", rec_, " (", size,
                   " bytes) is truncated"));
  // Cut exactly at record 4's head: entry 5 lies past the end.
  ExpectMismatch(
      Check(idx_, idx_[4].offset),
      absl::StrCat("entry 5 of 6 (key 14) at byte offset ", idx_[4].offset,
                   " lies past the end of the file"));
}

TEST_F(CheckIndexTest, OffsetBeyondTheFile) {
  std::vector<IndexEntry> e = idx_;
  e.push_back({99, idx_[5].offset + 4096});
  ExpectMismatch(Check(e),
                 absl::StrCat("entry 7 of 7 (key 99) at byte offset ",
                              idx_[5].offset + 4096, " lies past the end"));
}

TEST_F(CheckIndexTest, EntriesOutOfOrder) {
  std::vector<IndexEntry> e = idx_;
  std::swap(e[2], e[3]);
  ExpectMismatch(
      Check(e),
      absl::StrCat("entry 4 of 6 (key 12) at byte offset ", idx_[2].offset,
                   " does not come after entry 3 at byte offset ",
                   idx_[3].offset));
  e = idx_;
  e[3] = e[2];  // A repeated offset is out of order too.
  ExpectMismatch(Check(e), "does not come after");
}

TEST_F(CheckIndexTest, UnalignedOffset) {
  std::vector<IndexEntry> e = idx_;
  e[1].offset += 2;
  ExpectMismatch(Check(e), "entry 2 of 6 (key 11) at byte offset");
  ExpectMismatch(Check(e), "is not 4-byte aligned");
}

TEST_F(CheckIndexTest, MoreEntriesThanTheFileCanHold) {
  const int64_t size = std::filesystem::file_size(rec_);
  std::vector<IndexEntry> e;
  for (int64_t i = 0; i <= size / 8; ++i) e.push_back({i, i * 8});
  ExpectMismatch(Check(e), absl::StrCat("it lists ", size / 8 + 1,
                                        " records, more than the ", size,
                                        "-byte file can hold"));
}

TEST_F(CheckIndexTest, IndexedReaderOpenChecksAndMalformedIsAMismatchToo) {
  const std::vector<IndexEntry> head(idx_.begin(), idx_.begin() + 2);
  ASSERT_TRUE(WriteIndexFile(dir_ + "/c.idx", head).ok());
  auto r = IndexedReader::Open(rec_, dir_ + "/c.idx");
  ExpectMismatch(r.status(), "it lists 2 records");
  std::ofstream(dir_ + "/c.idx") << "0\t0\nnot a line\n";
  r = IndexedReader::Open(rec_, dir_ + "/c.idx");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("c.idx:2: malformed"));
}

}  // namespace
}  // namespace recordio
}  // namespace pstrain
