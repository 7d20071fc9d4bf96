// The worker with MXNet models end to end, on real Fashion-MNIST records:
// --symbol trains an imported symbol (the same job as the built-in network
// it came from, bit for bit; MXNet's own LeNet export), --pretrained starts
// from a checkpoint with a fresh classifier for another class count and
// learns faster than from scratch, and --fixed_params freezes parameters
// through a dist_sync job.
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker_util.h"

namespace pstrain {
namespace {

using ::testing::HasSubstr;
using testing_util::LinesWith;
using testing_util::Params;
using testing_util::ReadParams;
using testing_util::Runfile;
using testing_util::Shell;

// The label of a record payload (MXNet's IRHeader: flag, then the label).
float Label(const std::string& payload) {
  float label = -1;
  if (payload.size() >= 8) std::memcpy(&label, payload.data() + 4, 4);
  return label;
}

// Validation accuracy per epoch, from "Epoch[E] Validation-accuracy=A".
std::vector<double> ValidationAccuracies(const std::string& out) {
  std::vector<double> acc;
  for (const std::string& line : LinesWith(out, "Validation-accuracy=")) {
    double a = 0;
    EXPECT_TRUE(absl::SimpleAtod(line.substr(line.find('=') + 1), &a)) << line;
    acc.push_back(a);
  }
  return acc;
}

// The first epoch whose validation accuracy reaches `target`, or the
// number of epochs when none does.
size_t EpochsTo(const std::vector<double>& acc, double target) {
  for (size_t e = 0; e < acc.size(); ++e) {
    if (acc[e] >= target) return e;
  }
  return acc.size();
}

class FineTuneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing_util::HaveFashionMnist()) {
      GTEST_SKIP()
          << "Debian's dataset-fashion-mnist is not installed; skipped";
    }
    tmp_ = testing_util::TestTmp();
    // The tests of this binary share TEST_TMPDIR: made once.
    if (std::ifstream(tmp_ + "/ten.rec")) return;
    ASSERT_EQ(testing_util::PackFashion("train", 6000, tmp_ + "/all"), "");
    ASSERT_EQ(testing_util::PackFashion("t10k", 1000, tmp_ + "/val"), "");
    // The first 3,000 images of classes 0-4 (pretraining), and the first
    // 400 of all ten classes (fine-tuning).
    std::vector<std::string> five, ten;
    for (const std::string& p : testing_util::ReadPayloads(tmp_ + "/all.rec")) {
      if (Label(p) < 5 && five.size() < 3000) five.push_back(p);
      if (ten.size() < 400) ten.push_back(p);
    }
    ASSERT_EQ(five.size(), 3000u);
    testing_util::WritePayloads(tmp_ + "/five.rec", five);
    testing_util::WritePayloads(tmp_ + "/ten.rec", ten);
  }
  // The worker on `train` (a .rec in tmp_), with validation on val.rec
  // (ten classes) unless `validate` is false.
  std::string Worker(const std::string& train, const std::string& flags,
                     bool validate = true) {
    return absl::StrCat(
        Runfile("worker/worker"), " --batch-size=32 --data-train=", tmp_, "/",
        train, validate ? absl::StrCat(" --data-val=", tmp_, "/val.rec") : "",
        " --rgb-mean=72.94 --rgb-std=90.02 --disp-batches=1000 "
        "--data_nthreads=1 ",
        flags);
  }
  // Pretrains LeNet on five classes for two epochs: tmp_/five-0002.params
  // and tmp_/five-symbol.json (once for all the tests).
  void Pretrain() {
    if (std::ifstream(tmp_ + "/five-0002.params")) return;
    std::string out;
    ASSERT_EQ(Shell(Worker("five.rec",
                           absl::StrCat("--network=lenet --num_classes=5 "
                                        "--num-epochs=2 --model-prefix=",
                                        tmp_, "/five"),
                           /*validate=*/false),
                    &out),
              0)
        << out;
  }
  std::string tmp_;
};

TEST_F(FineTuneTest, FineTunedLenetReachesTheTargetBeforeOneFromScratch) {
  Pretrain();
  const std::string ten = "--network=lenet --num_classes=10 --num-epochs=3 ";
  std::string tuned, scratch;
  ASSERT_EQ(Shell(Worker("ten.rec",
                         absl::StrCat(ten, "--pretrained=", tmp_, "/five,2")),
                  &tuned),
            0)
      << tuned;
  // Every array but the classifier's (5 classes there, 10 here).
  EXPECT_THAT(
      tuned, HasSubstr(absl::StrCat("Loaded 6 pretrained arrays from \"", tmp_,
                                    "/five-0002.params\"; freshly initialized: "
                                    "fc1_weight, fc1_bias")));
  ASSERT_EQ(Shell(Worker("ten.rec", ten), &scratch), 0) << scratch;
  const auto a = ValidationAccuracies(tuned);
  const auto b = ValidationAccuracies(scratch);
  ASSERT_EQ(a.size(), 3u) << tuned;
  ASSERT_EQ(b.size(), 3u) << scratch;
  // Measured: fine-tuned 0.652, 0.697, 0.733; from scratch 0.558, 0.627,
  // 0.637 (400 training images, 1,000 validation images).
  constexpr double kTarget = 0.64;
  EXPECT_LE(EpochsTo(a, kTarget), 1u) << tuned;
  EXPECT_LT(EpochsTo(a, kTarget), EpochsTo(b, kTarget))
      << "fine-tuned " << a[0] << " " << a[1] << " " << a[2]
      << "; from scratch " << b[0] << " " << b[1] << " " << b[2];
}

TEST_F(FineTuneTest, FixedParamsKeepTheirValuesThroughADistSyncJob) {
  Pretrain();
  bool ok = false;
  const std::string out = testing_util::LaunchWorkers(
      2, 1,
      {"--kv_store=dist_sync", "--network=lenet", "--num_classes=10",
       "--batch_size=32", "--num_epochs=1", "--data_nthreads=1",
       absl::StrCat("--data_train=", tmp_, "/ten.rec"),
       absl::StrCat("--pretrained=", tmp_, "/five,2"), "--fixed_params=conv.*",
       absl::StrCat("--model_prefix=", tmp_, "/fixed")},
      absl::Seconds(120), &ok);
  ASSERT_TRUE(ok) << out;
  EXPECT_THAT(out, HasSubstr("Fixed 4 parameters (--fixed_params): "
                             "conv0_weight, conv0_bias, conv1_weight, "
                             "conv1_bias"));
  const Params before = ReadParams(tmp_ + "/five-0002.params");
  const Params after = ReadParams(tmp_ + "/fixed-0001.params");
  ASSERT_FALSE(after.empty());
  for (const char* name : {"arg:conv0_weight", "arg:conv0_bias",
                           "arg:conv1_weight", "arg:conv1_bias"}) {
    EXPECT_EQ(after.at(name), before.at(name)) << name;
  }
  // The rest trained: the pretrained hidden layer moved.
  EXPECT_NE(after.at("arg:fc0_weight"), before.at("arg:fc0_weight"));
}

TEST_F(FineTuneTest, AnExportedSymbolTrainsAsTheBuiltInNetwork) {
  Pretrain();  // Writes five-symbol.json too.
  std::string built, imported;
  const std::string flags = "--num_classes=5 --num-epochs=1 --model-prefix=";
  ASSERT_EQ(
      Shell(Worker("five.rec",
                   absl::StrCat("--network=lenet ", flags, tmp_, "/built"),
                   /*validate=*/false),
            &built),
      0)
      << built;
  ASSERT_EQ(Shell(Worker("five.rec",
                         absl::StrCat("--symbol=", tmp_, "/five-symbol.json ",
                                      flags, tmp_, "/imported"),
                         /*validate=*/false),
                  &imported),
            0)
      << imported;
  const Params a = ReadParams(tmp_ + "/built-0001.params");
  const Params b = ReadParams(tmp_ + "/imported-0001.params");
  ASSERT_FALSE(a.empty());
  EXPECT_EQ(a, b);
  // Without --num_classes the symbol's own count (5) is used.
  std::string out;
  ASSERT_EQ(Shell(Worker("five.rec", absl::StrCat("--symbol=", tmp_,
                                                  "/five-symbol.json "
                                                  "--dry_run")),
                  &out),
            0)
      << out;
  EXPECT_THAT(out, HasSubstr("dry run: network OK"));
}

TEST_F(FineTuneTest, TrainsMxnetsOwnLenetExport) {
  const char* shared = std::getenv("PSTRAIN_SHARED_DIR");
  const std::string dir = shared ? absl::StrCat(shared, "/testdata/mxnet") : "";
  if (!shared || !std::ifstream(dir + "/lenet-symbol.json")) {
    GTEST_SKIP() << "MXNet test data not found (PSTRAIN_SHARED_DIR="
                 << (shared ? shared : "unset")
                 << "); compatibility test skipped";
  }
  std::string out;
  ASSERT_EQ(
      Shell(Worker("ten.rec", absl::StrCat("--symbol=", dir,
                                           "/lenet-symbol.json --num-epochs=2 "
                                           "--model-prefix=",
                                           tmp_, "/mx")),
            &out),
      0)
      << out;
  const auto acc = ValidationAccuracies(out);
  ASSERT_EQ(acc.size(), 2u) << out;
  // Ten classes: chance is 0.1. Measured 0.240, then 0.391.
  EXPECT_GT(acc[1], 0.3) << out;
  const Params saved = ReadParams(tmp_ + "/mx-0002.params");
  EXPECT_EQ(saved.count("arg:hybridsequential0_dense1_weight"), 1u);
  // MXNet's weights load by name.
  ASSERT_EQ(Shell(Worker("ten.rec", absl::StrCat("--symbol=", dir,
                                                 "/lenet-symbol.json "
                                                 "--pretrained=",
                                                 dir, "/lenet,1")),
                  &out),
            0)
      << out;
  EXPECT_THAT(out, HasSubstr("Loaded 8 pretrained arrays"));
}

TEST_F(FineTuneTest, BadModelFlagsNameTheFlagOrFile) {
  Pretrain();
  std::string out;
  EXPECT_EQ(Shell(Worker("ten.rec", "--pretrained=five"), &out), 2);
  EXPECT_THAT(out, HasSubstr("--pretrained 'five': must be PREFIX,EPOCH"));
  EXPECT_NE(Shell(Worker("ten.rec", "--fixed_params='nothing.*'"), &out), 0);
  EXPECT_THAT(out, HasSubstr("--fixed_params 'nothing.*' matches no learned "
                             "parameter"));
  EXPECT_NE(Shell(Worker("ten.rec", "--fixed_params='conv('"), &out), 0);
  EXPECT_THAT(out, HasSubstr("--fixed_params 'conv('"));
  // A checkpoint of another network.
  EXPECT_NE(Shell(Worker("ten.rec", absl::StrCat("--network=mlp --pretrained=",
                                                 tmp_, "/five,2")),
                  &out),
            0);
  EXPECT_THAT(out, HasSubstr(absl::StrCat(tmp_, "/five-0002.params: array ")));
  EXPECT_NE(Shell(Worker("ten.rec", "--symbol=/no/such-symbol.json"), &out), 0);
  EXPECT_THAT(out, HasSubstr("/no/such-symbol.json"));
  // An operator pstrain lacks is named with its node.
  std::ifstream in(tmp_ + "/five-symbol.json");
  std::string json((std::istreambuf_iterator<char>(in)), {});
  const size_t at = json.find("\"Activation\"");
  ASSERT_NE(at, std::string::npos);
  json.replace(at, 12, "\"LeakyReLU\"");
  std::ofstream(tmp_ + "/leaky-symbol.json") << json;
  EXPECT_NE(Shell(Worker("ten.rec",
                         absl::StrCat("--symbol=", tmp_, "/leaky-symbol.json")),
                  &out),
            0);
  EXPECT_THAT(out, HasSubstr("operator LeakyReLU is not supported"));
}

}  // namespace
}  // namespace pstrain
