// Gradient compression (issue #16) in real jobs: LeNet on Fashion-MNIST,
// 2 workers x 1 server, dist_sync, one short epoch (4000 training
// records, batch 32: 63 steps) uncompressed and with each
// --gradient_compression type. Every type must reach a sane accuracy,
// close to the uncompressed one; 2bit at MXNet's usual threshold 0.5
// trains at the same learning rate. Prints a line per type with the
// validation accuracy and the epoch's time (loopback: no link to save).
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/worker_util.h"

namespace pstrain {
namespace {

using testing_util::LinesWith;

// The number after the first `key` in `line`.
double NumberAfter(const std::string& line, const std::string& key) {
  const size_t at = line.find(key);
  if (at == std::string::npos) return -1;
  std::string rest = line.substr(at + key.size());
  rest = rest.substr(0, rest.find_first_not_of("0123456789.e-"));
  double v = -1;
  if (!absl::SimpleAtod(rest, &v)) return -1;
  return v;
}

class CompressionClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing_util::HaveFashionMnist()) {
      GTEST_SKIP()
          << "Debian's dataset-fashion-mnist is not installed; skipped";
    }
    tmp_ = testing_util::TestTmp();
  }

  struct Result {
    double accuracy = -1;
    double epoch_s = -1;
  };

  // One job with `compression` (empty: none).
  Result Train(const std::string& compression) {
    bool ok = false;
    std::string out = testing_util::LaunchWorkers(
        2, 1,
        {"--network=lenet", "--rgb-mean=72.94", "--rgb-std=90.02",
         "--data_nthreads=1", "--lr=0.05", "--wd=0.0001", "--mom=0.9",
         "--kv_store=dist_sync", "--batch_size=32", "--num_epochs=1",
         "--disp_batches=100", "--gradient_compression=" + compression,
         "--data_train=" + tmp_ + "/train.rec",
         "--data_val=" + tmp_ + "/val.rec"},
        absl::Seconds(60), &ok);
    EXPECT_TRUE(ok) << out;
    Result r;
    // dist_sync combines validation: both workers print the same line.
    const std::vector<std::string> acc =
        LinesWith(out, "Epoch[0] Validation-accuracy=");
    EXPECT_EQ(acc.size(), 2u) << out;
    if (!acc.empty()) r.accuracy = NumberAfter(acc[0], "accuracy=");
    const std::vector<std::string> cost = LinesWith(out, "Epoch[0] Time cost=");
    if (!cost.empty()) r.epoch_s = NumberAfter(cost[0], "cost=");
    std::cout << "compression " << (compression.empty() ? "none" : compression)
              << ": validation accuracy " << r.accuracy << ", epoch "
              << r.epoch_s << " s\n";
    return r;
  }

  std::string tmp_;
};

TEST_F(CompressionClusterTest, EveryTypeTrainsLeNetLikeUncompressed) {
  ASSERT_EQ(testing_util::PackFashion("train", 4000, tmp_ + "/train"), "");
  ASSERT_EQ(testing_util::PackFashion("t10k", 1000, tmp_ + "/val"), "");
  const Result none = Train("");
  // Typically 0.70 after these 63 steps (chance: 0.1).
  ASSERT_GT(none.accuracy, 0.6);
  for (const char* type :
       {"type=fp16", "type=2bit,threshold=0.5", "type=onebit"}) {
    const Result r = Train(type);
    // Typically fp16 0.71, 2bit 0.70, onebit 0.68.
    EXPECT_GT(r.accuracy, 0.6) << type;
    EXPECT_GT(r.accuracy, none.accuracy - 0.1) << type;
  }
}

}  // namespace
}  // namespace pstrain
