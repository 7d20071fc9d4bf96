#include "data/pipeline.h"

#include <cmath>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "opencv2/imgcodecs.hpp"

namespace pstrain {
namespace data {
namespace {

using ::testing::HasSubstr;

// Records held in memory: record i is a PNG whose pixels all equal i (so a
// batch tells which record went where) with label i. Indices in `corrupt`
// hold bytes that do not decode.
class MemorySource : public SampleSource {
 public:
  MemorySource(int n, std::set<int> corrupt) {
    for (int i = 0; i < n; ++i) {
      Sample s;
      s.labels = {static_cast<float>(i), 100.0f + i};
      s.id = 1000 + i;
      if (corrupt.count(i)) {
        s.image = "definitely not an image";
      } else {
        cv::Mat m(6, 6, CV_8UC3, cv::Scalar::all(i));
        std::vector<uchar> buf;
        cv::imencode(".png", m, buf);
        s.image.assign(buf.begin(), buf.end());
      }
      samples_.push_back(std::move(s));
    }
  }
  int64_t size() const override { return samples_.size(); }
  absl::Status Read(int64_t index, Sample* out) override {
    *out = samples_[index];
    return absl::OkStatus();
  }
  std::string Describe(int64_t index) const override {
    return absl::StrCat("memory@", index);
  }
  recordio::SkipStats loss() const override { return loss_; }
  // What the source pretends it lost when opened.
  recordio::SkipStats loss_;

 private:
  std::vector<Sample> samples_;
};

PipelineOptions Options(int batch, int64_t batches) {
  PipelineOptions o;
  o.batch_size = batch;
  o.batches_per_epoch = batches;
  o.num_threads = 2;
  o.prefetch = 2;
  o.augment.height = 4;
  o.augment.width = 4;
  return o;
}

absl::Time Later() { return absl::Now() + absl::Seconds(30); }

// The record each sample of the batch came from (from its pixels), which
// its label, Batch::records and Batch::ids (MemorySource: 1000 + i) agree
// with.
std::vector<int> Records(const Batch& b, const PipelineOptions& o) {
  std::vector<int> r;
  const size_t per = 3 * o.augment.height * o.augment.width;
  EXPECT_EQ(b.records.size(), static_cast<size_t>(o.batch_size));
  EXPECT_EQ(b.ids.size(), static_cast<size_t>(o.batch_size));
  for (int i = 0; i < o.batch_size; ++i) {
    r.push_back(static_cast<int>(b.data[i * per]));
    EXPECT_EQ(b.labels[i * o.label_width], r.back());
    EXPECT_EQ(b.records[i], r.back());
    EXPECT_EQ(b.ids[i], 1000u + r.back());
  }
  return r;
}

std::vector<int> Epoch(Pipeline* p, const PipelineOptions& o, int epoch) {
  p->StartEpoch(epoch);
  std::vector<int> all;
  for (int64_t k = 0; k < o.batches_per_epoch; ++k) {
    auto b = p->Next(Later());
    EXPECT_TRUE(b.ok()) << b.status();
    if (!b.ok()) return all;
    EXPECT_EQ(b->index, k);
    for (int r : Records(*b, o)) all.push_back(r);
  }
  EXPECT_EQ(p->Next(Later()).status().code(), absl::StatusCode::kOutOfRange);
  return all;
}

TEST(PipelineTest, FixedBatchesPerEpochWrapAroundInOrder) {
  MemorySource src(10, {});
  PipelineOptions o = Options(4, 4);  // 16 samples from 10 records.
  auto p = Pipeline::Create(&src, o);
  ASSERT_TRUE(p.ok()) << p.status();
  std::vector<int> got = Epoch(p->get(), o, 0);
  std::vector<int> want = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5};
  EXPECT_EQ(got, want);
  EXPECT_EQ((*p)->stats().batches, 4);
  // Restarting gives the same epoch again.
  EXPECT_EQ(Epoch(p->get(), o, 0), want);
}

TEST(PipelineTest, ShuffleIsAPermutationPerEpochAndReproducible) {
  MemorySource src(24, {});
  PipelineOptions o = Options(6, 4);
  o.shuffle = true;
  o.seed = 7;
  auto p = Pipeline::Create(&src, o);
  ASSERT_TRUE(p.ok());
  std::vector<int> e0 = Epoch(p->get(), o, 0);
  std::vector<int> e1 = Epoch(p->get(), o, 1);
  EXPECT_EQ(std::set<int>(e0.begin(), e0.end()).size(), 24u);
  EXPECT_EQ(std::set<int>(e1.begin(), e1.end()).size(), 24u);
  EXPECT_NE(e0, e1);
  // Same seed and epoch in another pipeline with another thread count.
  o.num_threads = 3;
  auto q = Pipeline::Create(&src, o);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(Epoch(q->get(), o, 1), e1);
}

TEST(PipelineTest, StartingAtABatchGivesTheRestOfTheSameEpoch) {
  // A resumed job (worker/recovery.h) starts its epoch at the batch after
  // the checkpoint and must see exactly the batches an unbroken epoch
  // delivers from there: same shuffle, same augmentation.
  MemorySource src(24, {});
  PipelineOptions o = Options(6, 4);
  o.shuffle = true;
  o.seed = 5;
  o.augment.rand_mirror = true;
  auto p = Pipeline::Create(&src, o);
  ASSERT_TRUE(p.ok());
  (*p)->StartEpoch(3);
  std::vector<Batch> whole;
  for (int k = 0; k < 4; ++k) {
    auto b = (*p)->Next(Later());
    ASSERT_TRUE(b.ok()) << b.status();
    whole.push_back(std::move(*b));
  }
  auto q = Pipeline::Create(&src, o);
  ASSERT_TRUE(q.ok());
  (*q)->StartEpoch(3, /*first_batch=*/2);
  for (int k = 2; k < 4; ++k) {
    auto b = (*q)->Next(Later());
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ(b->index, k);
    EXPECT_EQ(b->records, whole[k].records);
    EXPECT_EQ(b->data, whole[k].data);
  }
  EXPECT_EQ((*q)->Next(Later()).status().code(), absl::StatusCode::kOutOfRange);
  // Starting at the end: an epoch with nothing left.
  (*q)->StartEpoch(4, 4);
  EXPECT_EQ((*q)->Next(Later()).status().code(), absl::StatusCode::kOutOfRange);
}

TEST(PipelineTest, CorruptRecordsAreSkippedCountedAndReplaced) {
  MemorySource src(8, {2, 5});
  PipelineOptions o = Options(3, 2);
  o.label_width = 2;
  o.max_corrupt_fraction = 0.25;  // 2 of 8 is within it.
  auto p = Pipeline::Create(&src, o);
  ASSERT_TRUE(p.ok());
  std::vector<int> got = Epoch(p->get(), o, 0);
  EXPECT_EQ(got, (std::vector<int>{0, 1, 3, 3, 4, 6}));
  EXPECT_EQ((*p)->stats().skipped, 2);
}

// Every skip is counted: per epoch, over all epochs, and as distinct
// corrupt records of the part.
TEST(PipelineTest, SkipsAreCountedPerEpochAndDistinct) {
  MemorySource src(100, {10, 50});
  src.loss_.corrupt_records = 1;  // One more lost when opened.
  PipelineOptions o = Options(10, 10);
  o.max_corrupt_fraction = 0.03;  // 3 of 101 is within it.
  auto p = Pipeline::Create(&src, o);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(Epoch(p->get(), o, 0).size(), 100u);
  EXPECT_EQ((*p)->stats().epoch_skipped, 2);
  EXPECT_EQ((*p)->stats().corrupt_records, 3);
  Epoch(p->get(), o, 1);
  EXPECT_EQ((*p)->stats().epoch_skipped, 2);
  EXPECT_EQ((*p)->stats().skipped, 4);
  EXPECT_EQ((*p)->stats().corrupt_records, 3);
}

// Runs epoch 0 until an error; returns it (OK if the epoch completes).
absl::Status RunEpoch(Pipeline* p, const PipelineOptions& o) {
  p->StartEpoch(0);
  for (int64_t k = 0; k < o.batches_per_epoch; ++k) {
    auto b = p->Next(Later());
    if (!b.ok()) return b.status();
  }
  return absl::OkStatus();
}

// Past --max_corrupt_fraction of the part the pipeline stops, naming the
// first corrupt record; the fraction is of the whole part, so a corrupt
// record in the first batch does not stop it early.
TEST(PipelineTest, PastTheCorruptFractionStopsNamingTheFirstRecord) {
  MemorySource src(100, {10, 50});
  PipelineOptions o = Options(10, 10);
  o.num_threads = 1;
  o.max_corrupt_fraction = 0.02;  // Allows 2 of 100.
  auto p = Pipeline::Create(&src, o);
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(RunEpoch(p->get(), o).ok());
  o.max_corrupt_fraction = 0.01;  // Allows 1.
  p = Pipeline::Create(&src, o);
  ASSERT_TRUE(p.ok());
  absl::Status s = RunEpoch(p->get(), o);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(
      std::string(s.message()),
      HasSubstr(
          "2 of the part's 100 records are corrupt, more than "
          "max_corrupt_fraction 0.01 allows (1); the first: memory@10: "));
  // It stays stopped.
  EXPECT_EQ((*p)->Next(Later()).status(), s);
}

TEST(PipelineTest, PastMaxCorruptRecordsStops) {
  MemorySource src(100, {10, 50, 70});
  PipelineOptions o = Options(10, 10);
  o.max_corrupt_fraction = 1;
  o.max_corrupt_records = 3;
  auto p = Pipeline::Create(&src, o);
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(RunEpoch(p->get(), o).ok());
  o.max_corrupt_records = 2;
  p = Pipeline::Create(&src, o);
  ASSERT_TRUE(p.ok());
  absl::Status s = RunEpoch(p->get(), o);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("3 of the part's 100 records are corrupt, more than "
                        "max_corrupt_records 2; the first: memory@10: "));
}

// What the source lost when opened counts too; a file cut inside a record
// lost an unknown number of records, which only fraction 1 with no cap
// accepts.
TEST(PipelineTest, WhatTheSourceLostCountsAndATruncatedFileStops) {
  MemorySource src(100, {});
  src.loss_.corrupt_records = 3;
  src.loss_.first = "x.rec: record 7 at byte offset 64: bad magic";
  PipelineOptions o = Options(10, 10);
  o.max_corrupt_fraction = 0.02;  // 3 of 103 is too many.
  auto p = Pipeline::Create(&src, o);
  EXPECT_EQ(p.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(
      std::string(p.status().message()),
      HasSubstr(
          "3 of the part's 103 records are corrupt, more than "
          "max_corrupt_fraction "
          "0.02 allows (2); the first: x.rec: record 7 at byte offset 64"));
  src.loss_ = {};
  src.loss_.corrupt_records = 1;
  src.loss_.truncated = "x.rec: record 99 at byte offset 960: truncated";
  o.max_corrupt_fraction = 0.5;
  p = Pipeline::Create(&src, o);
  EXPECT_EQ(p.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(p.status().message()),
              HasSubstr("a file ends inside a record, so an unknown number of "
                        "its records are "
                        "lost"));
  EXPECT_THAT(std::string(p.status().message()),
              HasSubstr("x.rec: record 99 at byte offset 960"));
  o.max_corrupt_fraction = 1;
  o.max_corrupt_records = 1000;
  EXPECT_FALSE(Pipeline::Create(&src, o).ok());
  o.max_corrupt_records = -1;
  EXPECT_TRUE(Pipeline::Create(&src, o).ok());
}

TEST(PipelineTest, AllCorruptIsAnErrorNotAHang) {
  MemorySource src(3, {0, 1, 2});
  PipelineOptions o = Options(2, 1);
  o.max_corrupt_fraction = 1;
  auto p = Pipeline::Create(&src, o);
  ASSERT_TRUE(p.ok());
  (*p)->StartEpoch(0);
  auto b = (*p)->Next(Later());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(b.status().message()), HasSubstr("can be decoded"));
}

TEST(PipelineTest, BadOptionsAndMissingStart) {
  MemorySource src(3, {});
  PipelineOptions o = Options(0, 1);
  EXPECT_FALSE(Pipeline::Create(&src, o).ok());
  o = Options(2, 1);
  o.label_width = 3;  // Records carry two labels.
  auto p = Pipeline::Create(&src, o);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ((*p)->Next(Later()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  (*p)->StartEpoch(0);
  EXPECT_EQ((*p)->Next(Later()).status().code(), absl::StatusCode::kDataLoss);
  MemorySource empty(0, {});
  EXPECT_FALSE(Pipeline::Create(&empty, Options(1, 1)).ok());
  for (double f : {-0.1, 1.5, std::nan("")}) {
    o = Options(2, 1);
    o.max_corrupt_fraction = f;
    EXPECT_EQ(Pipeline::Create(&src, o).status().code(),
              absl::StatusCode::kInvalidArgument)
        << f;
  }
  o = Options(2, 1);
  o.max_corrupt_records = -2;
  EXPECT_EQ(Pipeline::Create(&src, o).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace data
}  // namespace pstrain
