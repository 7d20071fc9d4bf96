// The worker binary end to end on real Fashion-MNIST records (a small
// slice): MXNet-style lines, a checkpoint MXNet can read, resume with
// --load_epoch, --test_io and --benchmark, and clear errors for bad flags.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "recordio/index.h"
#include "tests/worker_util.h"

namespace pstrain {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing_util::Runfile;
using testing_util::Shell;

class WorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing_util::HaveFashionMnist()) {
      GTEST_SKIP()
          << "Debian's dataset-fashion-mnist is not installed; skipped";
    }
    tmp_ = testing_util::TestTmp();
    ASSERT_EQ(testing_util::PackFashion("train", 1280, tmp_ + "/train"), "");
    ASSERT_EQ(testing_util::PackFashion("t10k", 320, tmp_ + "/val"), "");
  }
  std::string Worker(const std::string& flags) {
    return absl::StrCat(
        Runfile("worker/worker"),
        " --network=lenet --batch-size=32 --data-train=", tmp_,
        "/train.rec --data-val=", tmp_, "/val.rec --rgb-mean=72.94 ",
        "--rgb-std=90.02 --disp-batches=10 --data_nthreads=1 ", flags);
  }
  std::string tmp_;
};

TEST_F(WorkerTest, TrainsChecksPointsAndResumes) {
  std::string out;
  ASSERT_EQ(
      Shell(Worker(absl::StrCat("--num-epochs=2 --model-prefix=", tmp_, "/m")),
            &out),
      0)
      << out;
  EXPECT_THAT(
      out,
      ::testing::ContainsRegex(
          "Epoch\\[0\\] Batch \\[0-10\\]\tSpeed: .* samples/sec\taccuracy="));
  EXPECT_THAT(out, HasSubstr("Epoch[1] Train-accuracy="));
  EXPECT_THAT(out, HasSubstr("Epoch[1] Time cost="));
  // The time split follows it; the local KVStore runs the optimizer here.
  EXPECT_THAT(out, ::testing::ContainsRegex(
                       "Epoch\\[1\\] Time cost=[0-9.]+\n"
                       "Epoch\\[1\\] Time split: data [0-9]+% compute "
                       "[0-9]+% wait-pull [0-9]+% wait-push [0-9]+% "
                       "optimizer [0-9]+% other [0-9]+%\n"));
  EXPECT_THAT(out, HasSubstr(absl::StrCat("Saved checkpoint to \"", tmp_,
                                          "/m-0002.params\"")));
  EXPECT_THAT(out, HasSubstr("Epoch[1] Validation-accuracy="));
  std::ifstream symbol(tmp_ + "/m-symbol.json");
  std::string json((std::istreambuf_iterator<char>(symbol)), {});
  EXPECT_THAT(json, HasSubstr("\"op\": \"SoftmaxOutput\""));
  ASSERT_EQ(
      Shell(Worker(absl::StrCat(
                "--num-epochs=3 --load-epoch=2 --model-prefix=", tmp_, "/m")),
            &out),
      0)
      << out;
  EXPECT_THAT(out, HasSubstr("Loaded checkpoint"));
  EXPECT_THAT(out, HasSubstr("Epoch[2] Train-accuracy="));
  EXPECT_THAT(out, ::testing::Not(HasSubstr("Epoch[1] Train")));
  EXPECT_THAT(out, HasSubstr("m-0003.params"));
}

TEST_F(WorkerTest, TestIoBenchmarkAndBadFlags) {
  std::string out;
  ASSERT_EQ(Shell(Worker("--test-io"), &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("test_io:"));
  EXPECT_THAT(out, HasSubstr("images/sec"));
  ASSERT_EQ(
      Shell(
          absl::StrCat(
              Runfile("worker/worker"),
              " --benchmark --network=mlp --num_examples=320 --batch_size=32"),
          &out),
      0)
      << out;
  EXPECT_THAT(out, HasSubstr("Epoch[0] Train-accuracy="));
  EXPECT_THAT(out, HasSubstr("Epoch[0] Time split: data "));
  EXPECT_THAT(out, ::testing::ContainsRegex(
                       "benchmark: \\{.*\"compute_s\":.*\"data_s\":.*"
                       "\"optimizer_s\":.*\"other_s\":"));
  EXPECT_NE(Shell(Worker("--network=resnext"), &out), 0);
  EXPECT_THAT(out, HasSubstr("--network 'resnext'"));
  EXPECT_NE(Shell(Worker("--kv_store=dist_sideways"), &out), 0);
  EXPECT_THAT(out, HasSubstr("--kv_store dist_sideways: must be"));
  EXPECT_NE(Shell(absl::StrCat(Runfile("worker/worker"),
                               " --data_train=/no/such.rec"),
                  &out),
            0);
  EXPECT_THAT(out, HasSubstr("/no/such.rec"));
}

// Issue #18, case 5: a .rec truncated to half used to train and exit 0
// ("skipped 10713 corrupt records", each named "record 0" with a negative
// byte count). With its .idx, the index check stops the worker naming both
// files and the first record that does not fit; split by bytes
// (--ignore_index), the scan finds that the file ends inside a record.
TEST_F(WorkerTest, TruncatedRecStopsNamingTheFileAndOffset) {
  const std::string rec = tmp_ + "/train.rec", idx = tmp_ + "/train.idx";
  auto entries = recordio::ReadIndexFile(idx);
  ASSERT_TRUE(entries.ok()) << entries.status();
  const int64_t full = std::filesystem::file_size(rec), half = full / 2;
  std::filesystem::resize_file(rec, half);
  // The first record that does not fit in the half left.
  size_t k = 0;
  while (k + 1 < entries->size() && (*entries)[k + 1].offset <= half) ++k;
  const int64_t off = (*entries)[k].offset;
  std::string out;
  EXPECT_EQ(Shell(Worker("--network=mlp"), &out), 1) << out;
  EXPECT_THAT(
      out,
      HasSubstr(absl::StrCat(
          "--data_train: ", idx, " does not match ", rec, ": entry ", k + 1,
          " of 1280 (key ", k, ") at byte offset ", off,
          off + 8 <= half ? " runs past" : " lies past",
          " the end of the file: ", rec, " (", half, " bytes) is truncated")));
  EXPECT_THAT(out, HasSubstr("--ignore_index"));
  EXPECT_THAT(out, Not(HasSubstr("Train-accuracy")));
  EXPECT_NE(Shell(Worker("--network=mlp --ignore_index"), &out), 0) << out;
  EXPECT_THAT(out, HasSubstr(absl::StrCat(
                       "--data_train: a file ends inside a record, so an "
                       "unknown number of its "
                       "records are lost (only max_corrupt_fraction 1 without "
                       "max_corrupt_records reads on): ",
                       rec, ": record ", k, " at byte offset ", off, ": ")));
  EXPECT_THAT(out, Not(HasSubstr("Train-accuracy")));
  EXPECT_THAT(out, Not(HasSubstr("Check failed")));
}

// Issue #18, case 6: a truncated .idx was trusted (the worker trained on
// the records it listed, without a word). Now it is an error naming both
// files, and --ignore_index trains on every record of the .rec.
TEST_F(WorkerTest, TruncatedIdxIsAnErrorUnlessIgnored) {
  const std::string rec = tmp_ + "/train.rec", idx = tmp_ + "/train.idx";
  auto entries = recordio::ReadIndexFile(idx);
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_TRUE(recordio::WriteIndexFile(
                  idx, std::vector<recordio::IndexEntry>(
                           entries->begin(), entries->begin() + 600))
                  .ok());
  std::string out;
  EXPECT_EQ(Shell(Worker("--network=mlp"), &out), 1) << out;
  EXPECT_THAT(out, HasSubstr(absl::StrCat(
                       "--data_train: ", idx, " does not match ", rec,
                       ": it lists 600 records, but the file holds more "
                       "after byte offset ",
                       (*entries)[600].offset)));
  EXPECT_THAT(out, Not(HasSubstr("Train-accuracy")));
  ASSERT_EQ(Shell(Worker("--network=mlp --ignore_index"), &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("1280 records in its part of --data_train"));
  EXPECT_THAT(out, HasSubstr("Epoch[0] skipped 0 corrupt records"));
}

// A few corrupt records within --max_corrupt_fraction: trained on, and
// every epoch line says how many were skipped. Past the limits the worker
// stops, naming the first corrupt record.
TEST_F(WorkerTest, CorruptRecordsWithinTheLimitAreSkippedAndCounted) {
  const std::string rec = tmp_ + "/train.rec";
  auto entries = recordio::ReadIndexFile(tmp_ + "/train.idx");
  ASSERT_TRUE(entries.ok()) << entries.status();
  {
    std::fstream f(rec, std::ios::in | std::ios::out | std::ios::binary);
    for (int r : {100, 700, 1100}) {
      f.seekp((*entries)[r].offset);
      f.write("\0\0\0\0", 4);  // The record's magic.
    }
  }
  std::string out;
  ASSERT_EQ(
      Shell(Worker("--network=mlp --num-epochs=2 --max-corrupt-fraction=0.01"),
            &out),
      0)
      << out;
  EXPECT_THAT(out, HasSubstr("Epoch[0] skipped 3 corrupt records"));
  EXPECT_THAT(out, HasSubstr("Epoch[1] skipped 3 corrupt records"));
  EXPECT_THAT(out, HasSubstr("Epoch[1] Validation skipped 0 corrupt records"));
  // The default, 0.001 of 1280, allows one: reading in order, the second
  // stops the worker.
  EXPECT_EQ(Shell(Worker("--network=mlp --shuffle=false"), &out), 1) << out;
  const std::string first = absl::StrCat(rec, ": record 100 at byte offset ",
                                         (*entries)[100].offset, ": bad magic");
  EXPECT_THAT(out, HasSubstr(absl::StrCat(
                       "--data_train: 2 of the part's 1280 records are "
                       "corrupt, more than max_corrupt_fraction 0.001 "
                       "allows (1); the first: ",
                       first)));
  EXPECT_EQ(
      Shell(
          Worker(
              "--network=mlp --max-corrupt-fraction=1 --max_corrupt_records=2"),
          &out),
      1)
      << out;
  EXPECT_THAT(out,
              HasSubstr("3 of the part's 1280 records are corrupt, more than "
                        "max_corrupt_records 2; the first: " +
                        first));
}

// A residual network with batch norm through the worker (local KVStore,
// synthetic data): the moving statistics (auxiliary states) move, are saved
// as aux:... next to the arg:... parameters, and come back with
// --load_epoch.
TEST(WorkerNetworksTest, BatchNormStatesAreSavedAndResumed) {
  const std::string tmp = testing_util::TestTmp();
  const std::string base = absl::StrCat(
      Runfile("worker/worker"), " --benchmark --network=resnet --num_layers=8 ",
      "--image_shape=3,16,16 --num_examples=64 --batch_size=16 "
      "--disp_batches=2 --model_prefix=",
      tmp, "/r");
  std::string out;
  ASSERT_EQ(Shell(base + " --num_epochs=1", &out), 0) << out;
  auto saved = testing_util::ReadParams(tmp + "/r-0001.params");
  // MXNet's resnet.py names (--network resnet).
  ASSERT_TRUE(saved.count("aux:stage1_unit1_bn1_moving_var")) << out;
  ASSERT_TRUE(saved.count("arg:bn_data_gamma"));
  ASSERT_TRUE(saved.count("arg:stage1_unit1_conv1_weight"));
  double moved = 0;
  for (float v : saved["aux:stage1_unit1_bn1_moving_var"])
    moved += std::fabs(v - 1.0f);
  EXPECT_GT(moved, 0) << "moving variance still at its initial 1";
  std::ifstream symbol(tmp + "/r-symbol.json");
  std::string json((std::istreambuf_iterator<char>(symbol)), {});
  EXPECT_THAT(json, HasSubstr("\"op\": \"BatchNorm\""));
  EXPECT_THAT(json, HasSubstr("\"op\": \"elemwise_add\""));
  EXPECT_THAT(json, HasSubstr("\"name\": \"_plus0\""));
  ASSERT_EQ(Shell(base + " --num_epochs=2 --load_epoch=1", &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("Loaded checkpoint"));
  EXPECT_THAT(out, HasSubstr("Epoch[1] Train-accuracy="));
}

// --cpu_devices 2 (two replicas of batch 16 on two threads, gradients
// summed before one push) trains exactly as --cpu_devices 1 with batch 32.
TEST_F(WorkerTest, TwoCpuDevicesEqualOne) {
  std::string out;
  for (int devices : {1, 2}) {
    ASSERT_EQ(Shell(Worker(absl::StrCat(
                        "--cpu-devices=", devices, " --num-examples=320 ",
                        "--top-k=3 --model-prefix=", tmp_, "/dev", devices)),
                    &out),
              0)
        << out;
    EXPECT_THAT(out, HasSubstr("10 batches of 32 per epoch on " +
                               std::to_string(devices) + " device(s)"));
    EXPECT_THAT(out, HasSubstr("Epoch[0] Validation-top_k_accuracy_3="));
  }
  auto one = testing_util::ReadParams(tmp_ + "/dev1-0001.params");
  auto two = testing_util::ReadParams(tmp_ + "/dev2-0001.params");
  const double diff = testing_util::MaxRelativeDiff(one, two);
  std::cout << "cpu_devices 2 vs 1 after 10 steps: max relative difference "
            << diff << "\n";
  EXPECT_LT(diff, 1e-5);
  // The comparison can fail: one more step moves the weights far more.
  ASSERT_EQ(Shell(Worker(absl::StrCat(
                      "--num-examples=352 --model-prefix=", tmp_, "/dev11")),
                  &out),
            0)
      << out;
  EXPECT_GT(testing_util::MaxRelativeDiff(
                one, testing_util::ReadParams(tmp_ + "/dev11-0001.params")),
            1e-3);
}

#ifdef PSTRAIN_WORKER_CUDA
// --gpus 0 trains LeNet as the CPU does (same seed, same batches, local
// KVStore): every weight agrees to float rounding after 10 steps. Skips,
// saying so, where GPU 0 does not exist (the worker must then exit non-zero
// naming it).
TEST_F(WorkerTest, OneGpuTrainsAsTheCpu) {
  std::string out;
  const std::string common =
      absl::StrCat("--num-examples=320 --model-prefix=", tmp_);
  ASSERT_EQ(Shell(Worker(common + "/cpu"), &out), 0) << out;
  const int rc = Shell(Worker("--gpus=0 " + common + "/gpu"), &out);
  if (rc != 0 &&
      (out.find("GPU 0: no usable CUDA device") != std::string::npos ||
       out.find("GPU 0: this machine has 0 CUDA device") !=
           std::string::npos)) {
    GTEST_SKIP() << "No GPU 0, GPU training skipped; the worker said: " << out;
  }
  ASSERT_EQ(rc, 0) << out;
  EXPECT_THAT(out, HasSubstr("10 batches of 32 per epoch on 1 device(s)"));
  EXPECT_THAT(out, HasSubstr("Epoch[0] Validation-accuracy="));
  const double diff = testing_util::MaxRelativeDiff(
      testing_util::ReadParams(tmp_ + "/cpu-0001.params"),
      testing_util::ReadParams(tmp_ + "/gpu-0001.params"));
  std::cout << "gpus 0 vs CPU after 10 steps: max relative difference " << diff
            << "\n";
  EXPECT_LT(diff, 1e-4);
}
#endif

// Every new flag refuses bad values with an error naming the flag, in
// either spelling, and exits 2 (a usage error), without a stack trace.
TEST(WorkerFlagsTest, BadValuesNameTheFlag) {
  const std::string worker =
      Runfile("worker/worker") + " --benchmark --network=mlp ";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--random-resized-crop --min-random-area=0", "--min_random_area 0"},
      {"--max_random_area=1.5", "--max_random_area 1.5"},
      {"--min-random-aspect-ratio=-1", "--min_random_aspect_ratio -1"},
      {"--max_random_aspect_ratio=2", "--max_random_aspect_ratio 2"},
      {"--brightness=-0.5", "--brightness -0.5"},
      {"--contrast=3", "--contrast 3"},
      {"--saturation=-1", "--saturation -1"},
      {"--max-random-h=181", "--max_random_h 181"},
      {"--max_random_s=-2", "--max_random_s -2"},
      {"--max-random-l=300", "--max_random_l 300"},
      {"--fill-value=256", "--fill_value 256"},
      {"--resize=-3", "--resize -3"},
      {"--initializer=orthogonal", "--initializer orthogonal: unknown"},
      {"--top-k=1", "--top_k 1"},
      {"--top_k=20", "--top_k 20"},
      {"--cpu-devices=0", "--cpu_devices 0"},
      {"--max-corrupt-fraction=1.5",
       "--max_corrupt_fraction 1.5: must be in [0, 1]"},
      {"--max_corrupt_records=-2", "--max_corrupt_records -2: must be >= -1"},
      {"--cpu_devices=3 --batch_size=64",
       "--batch_size 64: does not split evenly over 3"},
      {"--gpus=0,x", "--gpus 0,x"},
      {"--gpus=0,1 --cpu-devices=2",
       "--cpu_devices 2: cannot be combined with --gpus"},
#ifdef PSTRAIN_WORKER_CUDA
      // No machine has GPU 977: creating its context fails, naming it.
      {"--gpus=977", "GPU 977: "},
#else
      {"--gpus=0,1", "--gpus 0,1: this worker was built without CUDA"},
#endif
  };
  for (const auto& [flags, error] : cases) {
    std::string out;
    EXPECT_EQ(Shell(worker + flags, &out), 2) << flags << "\n" << out;
    EXPECT_THAT(out, HasSubstr(error)) << flags;
    EXPECT_THAT(out, ::testing::Not(HasSubstr("stack trace"))) << flags;
  }
}

// Every job flag file in configs/ parses: known flags, valid values (the
// worker's --dry_run), and its network builds.
TEST(WorkerFlagsTest, EveryConfigParses) {
  const std::string dir = Runfile("configs");
  int configs = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() != ".flags") continue;
    ++configs;
    std::string out;
    const int rc =
        Shell(absl::StrCat(Runfile("worker/worker"),
                           " --flagfile=", e.path().string(), " --dry_run"),
              &out);
    EXPECT_THAT(out, HasSubstr("dry run: flags OK")) << e.path();
    EXPECT_EQ(rc, 0) << e.path() << ":\n" << out;
    EXPECT_THAT(out, HasSubstr("dry run: network OK")) << e.path();
  }
  EXPECT_GE(configs, 5);
}

}  // namespace
}  // namespace pstrain
