#include "data/record_source.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "opencv2/imgcodecs.hpp"
#include "recordio/image_record.h"
#include "recordio/index.h"
#include "recordio/recordio.h"

namespace pstrain {
namespace data {
namespace {

using ::testing::HasSubstr;

// A dataset of 20 image records (record i: a PNG of value i, label i) in
// d.rec with its d.idx, in a folder of its own per test.
class RecordSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(
        std::getenv("TEST_TMPDIR"), "/",
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    rec_ = dir_ + "/d.rec";
    idx_ = dir_ + "/d.idx";
    auto w = recordio::RecordWriter::Create(rec_);
    ASSERT_TRUE(w.ok());
    for (int i = 0; i < 20; ++i) {
      std::vector<uchar> png;
      cv::imencode(".png", cv::Mat(4, 4, CV_8UC3, cv::Scalar::all(i)), png);
      entries_.push_back({i, (*w)->Tell()});
      ASSERT_TRUE(
          (*w)->Write(recordio::PackImageRecord(
                          i, {}, i, 0, std::string(png.begin(), png.end())))
              .ok());
    }
    ASSERT_TRUE((*w)->Close().ok());
    ASSERT_TRUE(recordio::WriteIndexFile(idx_, entries_).ok());
  }
  // Zeroes the magic of record `i`.
  void BreakRecord(int i) {
    std::fstream f(rec_, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(entries_[i].offset);
    f.write("\0\0\0\0", 4);
  }
  absl::StatusOr<std::unique_ptr<RecordSource>> Open(bool ignore_index,
                                                     int part = 0,
                                                     int parts = 1) {
    RecordSourceOptions o;
    o.ignore_index = ignore_index;
    return RecordSource::Open(rec_, part, parts, o);
  }
  std::string At(int i) const {
    return absl::StrCat(rec_, ": record ", i, " at byte offset ",
                        entries_[i].offset);
  }
  std::string dir_, rec_, idx_;
  std::vector<recordio::IndexEntry> entries_;
};

TEST_F(RecordSourceTest, IndexedWhenTheIndexMatches) {
  auto s = Open(false);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE((*s)->indexed());
  EXPECT_EQ((*s)->size(), 20);
  EXPECT_EQ((*s)->Describe(7), At(7));
  Sample sample;
  ASSERT_TRUE((*s)->Read(7, &sample).ok());
  EXPECT_EQ(sample.labels, std::vector<float>{7});
  EXPECT_EQ(sample.id, 7u);  // The header's id.
}

// Case 6 of issue #18: a truncated .idx used to be trusted (the worker
// trained on the records it listed).
TEST_F(RecordSourceTest, TruncatedIndexIsAnErrorNamingBothFilesUnlessIgnored) {
  ASSERT_TRUE(recordio::WriteIndexFile(
                  idx_, std::vector<recordio::IndexEntry>(entries_.begin(),
                                                          entries_.begin() + 8))
                  .ok());
  auto s = Open(false);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.status().message()),
              HasSubstr(absl::StrCat(idx_, " does not match ", rec_,
                                     ": it lists 8 records")));
  s = Open(true);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_FALSE((*s)->indexed());
  EXPECT_EQ((*s)->size(), 20);
  EXPECT_EQ((*s)->loss().corrupt_records, 0);
}

// Case 5 of issue #18: a .rec truncated with its .idx intact used to read
// on, "skipping" the records past the end one by one.
TEST_F(RecordSourceTest, TruncatedRecIsAnErrorAndAScanReportsTheTruncation) {
  std::filesystem::resize_file(rec_, entries_[12].offset + 10);
  auto s = Open(false);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.status().message()),
              HasSubstr(absl::StrCat(
                  idx_, " does not match ", rec_,
                  ": entry 13 of 20 (key 12) at byte offset ",
                  entries_[12].offset, " runs past the end of the file")));
  // Split by bytes, the scan keeps the 12 whole records and reports the cut.
  s = Open(true);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ((*s)->size(), 12);
  EXPECT_EQ((*s)->loss().corrupt_records, 1);
  EXPECT_THAT((*s)->loss().truncated, HasSubstr(At(12)));
  // Which no corruption limit short of "read whatever is left" accepts.
  PipelineOptions p;
  p.batch_size = 4;
  p.augment.height = p.augment.width = 4;
  p.max_corrupt_fraction = 0.5;
  auto pipe = Pipeline::Create(s->get(), p);
  EXPECT_EQ(pipe.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(pipe.status().message()),
              HasSubstr("a file ends inside a record"));
  EXPECT_THAT(std::string(pipe.status().message()), HasSubstr(At(12)));
}

// Errors name a record by its index in the file, also in a part that
// starts further in (the old message said "record 0" for every record read
// by offset).
TEST_F(RecordSourceTest, CorruptRecordIsNamedByItsIndexInTheFile) {
  BreakRecord(13);
  auto s = Open(false, 1, 2);  // Records 10..19.
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ((*s)->size(), 10);
  Sample sample;
  absl::Status r = (*s)->Read(3, &sample);
  EXPECT_EQ(r.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(r.message()), HasSubstr(At(13) + ": bad magic"));
  {
    // The pipeline stops past its limit, naming it. (It reads the source from
    // its threads: it goes before the source does.)
    PipelineOptions p;
    p.batch_size = 5;
    p.batches_per_epoch = 2;
    p.augment.height = p.augment.width = 4;
    p.max_corrupt_fraction = 0.05;  // 1 of 10 is too many.
    auto pipe = Pipeline::Create(s->get(), p);
    ASSERT_TRUE(pipe.ok());
    (*pipe)->StartEpoch(0);
    absl::Status err;
    for (int b = 0; b < 2 && err.ok(); ++b)
      err = (*pipe)->Next(absl::InfiniteFuture()).status();
    EXPECT_EQ(err.code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(std::string(err.message()),
                HasSubstr("1 of the part's 10 records are corrupt, more than "
                          "max_corrupt_fraction"));
    EXPECT_THAT(std::string(err.message()), HasSubstr(At(13)));
  }
  // Split by bytes, the scan skips it and says which it was.
  s = Open(true);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ((*s)->size(), 19);
  EXPECT_EQ((*s)->loss().corrupt_records, 1);
  EXPECT_EQ((*s)->loss().truncated, "");
  EXPECT_THAT((*s)->loss().first, HasSubstr(At(13) + ": bad magic"));
  EXPECT_EQ((*s)->Describe(13), At(14));
}

}  // namespace
}  // namespace data
}  // namespace pstrain
