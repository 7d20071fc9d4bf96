#include "worker/validation.h"

#include <memory>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "opencv2/imgcodecs.hpp"

namespace pstrain {
namespace worker {
namespace {

using ::testing::StartsWith;

constexpr int kClasses = 10;

// Gray 28x28 PNGs of random pixels with label i % 10, in memory; records
// in `corrupt` do not decode.
class MemorySource : public data::SampleSource {
 public:
  MemorySource(int n, std::set<int> corrupt) {
    std::mt19937 rng(5);
    for (int i = 0; i < n; ++i) {
      data::Sample s;
      s.labels = {static_cast<float>(i % kClasses)};
      if (corrupt.count(i)) {
        s.image = "not an image";
      } else {
        cv::Mat m(28, 28, CV_8UC1);
        for (int p = 0; p < 28 * 28; ++p) m.data[p] = rng() % 256;
        std::vector<uchar> buf;
        cv::imencode(".png", m, buf);
        s.image.assign(buf.begin(), buf.end());
      }
      samples_.push_back(std::move(s));
    }
  }
  int64_t size() const override { return samples_.size(); }
  absl::Status Read(int64_t index, data::Sample* out) override {
    *out = samples_[index];
    return absl::OkStatus();
  }
  std::string Describe(int64_t index) const override {
    return absl::StrCat("memory@", index);
  }

 private:
  std::vector<data::Sample> samples_;
};

std::unique_ptr<data::Pipeline> MakePipeline(data::SampleSource* source,
                                             int batch) {
  data::PipelineOptions o;
  o.batch_size = batch;
  o.batches_per_epoch = (source->size() + batch - 1) / batch;
  o.num_threads = 1;
  o.augment.channels = 1;
  o.augment.height = 28;
  o.augment.width = 28;
  o.max_corrupt_fraction = 1;
  auto p = data::Pipeline::Create(source, o);
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? std::move(*p) : nullptr;
}

std::unique_ptr<Replicas> MakeReplicas(int devices, int batch) {
  auto r = Replicas::Create("lenet", 0, kClasses, {1, 28, 28}, batch, devices);
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return nullptr;
  EXPECT_TRUE(nn::Initialize((*r)->net(0), "xavier", 7).ok());
  EXPECT_TRUE((*r)->CopyWeightsFromFirst(absl::Now() + absl::Seconds(60)).ok());
  return std::move(*r);
}

absl::StatusOr<Metrics> ValidateAll(int devices, int batch,
                                    data::SampleSource* src,
                                    kvstore::KVStore* kv) {
  auto reps = MakeReplicas(devices, batch);
  auto pipeline = MakePipeline(src, batch);
  if (!reps || !pipeline) return absl::InternalError("setup");
  return Validate(reps.get(), pipeline.get(), src->size(), kClasses,
                  /*top_k=*/3, kv, absl::Seconds(60));
}

std::unique_ptr<kvstore::KVStore> Local() {
  auto kv = kvstore::KVStore::Create("local", {});
  EXPECT_TRUE(kv.ok()) << kv.status();
  return kv.ok() ? std::move(*kv) : nullptr;
}

// 7 records in batches of 4: the second batch wraps around and counts only
// its 3 real samples, on one device or split over two (the second device
// then holds 1 real sample). The metrics match one record per batch.
TEST(ValidationTest, CountsEveryRecordOnceWhateverTheBatchAndDevices) {
  MemorySource src(7, {});
  auto kv = Local();
  ASSERT_TRUE(kv);
  auto reference = ValidateAll(1, 1, &src, kv.get());
  ASSERT_TRUE(reference.ok()) << reference.status();
  EXPECT_EQ(reference->count(), 7);
  for (int devices : {1, 2}) {
    auto m = ValidateAll(devices, 4, &src, kv.get());
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->count(), 7) << devices << " device(s)";
    const auto want = reference->NameValues(), got = m->NameValues();
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(got[i].first, want[i].first);
      EXPECT_DOUBLE_EQ(got[i].second, want[i].second)
          << got[i].first << " on " << devices << " device(s)";
    }
  }
}

TEST(ValidationTest, AnEmptyPartStillTakesPartInTheSum) {
  auto reps = MakeReplicas(1, 4);
  auto kv = Local();
  ASSERT_TRUE(reps && kv);
  auto m = Validate(reps.get(), nullptr, 0, kClasses, 0, kv.get(),
                    absl::Seconds(60));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->count(), 0);
}

TEST(ValidationTest, ADataErrorNamesDataVal) {
  MemorySource src(4, {0, 1, 2, 3});
  auto kv = Local();
  ASSERT_TRUE(kv);
  auto m = ValidateAll(1, 4, &src, kv.get());
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()), StartsWith("--data_val: "));
}

}  // namespace
}  // namespace worker
}  // namespace pstrain
