// The worker binary end to end on real Fashion-MNIST records (a small
// slice): MXNet-style lines, a checkpoint MXNet can read, resume with
// --load_epoch, --test_io and --benchmark, and clear errors for bad flags.
#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cluster_util.h"

namespace pstrain {
namespace {

using ::testing::HasSubstr;
using testing_util::Runfile;

int Shell(const std::string& args, std::string* out) {
  const std::string log = absl::StrCat(std::getenv("TEST_TMPDIR"), "/worker.log");
  const int rc = std::system(absl::StrCat(args, " > ", log, " 2>&1").c_str());
  std::ifstream in(log);
  out->assign(std::istreambuf_iterator<char>(in), {});
  return WEXITSTATUS(rc);
}

class WorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string d = "/usr/share/datasets/fashion-mnist/";
    if (!std::ifstream(d + "train-images-idx3-ubyte.gz")) {
      GTEST_SKIP() << "Debian's dataset-fashion-mnist is not installed; skipped";
    }
    tmp_ = std::getenv("TEST_TMPDIR");
    std::string out;
    ASSERT_EQ(Shell(absl::StrCat(Runfile("tools/mnist2rec"), " --images=", d,
                               "train-images-idx3-ubyte.gz --labels=", d,
                               "train-labels-idx1-ubyte.gz --limit=1280 --out=", tmp_, "/train"),
                  &out),
              0)
        << out;
    ASSERT_EQ(Shell(absl::StrCat(Runfile("tools/mnist2rec"), " --images=", d,
                               "t10k-images-idx3-ubyte.gz --labels=", d,
                               "t10k-labels-idx1-ubyte.gz --limit=320 --out=", tmp_, "/val"),
                  &out),
              0);
  }
  std::string Worker(const std::string& flags) {
    return absl::StrCat(Runfile("worker/worker"), " --network=lenet --batch-size=32 --data-train=",
                        tmp_, "/train.rec --data-val=", tmp_, "/val.rec --rgb-mean=72.94 ",
                        "--rgb-std=90.02 --disp-batches=10 --data_nthreads=1 ", flags);
  }
  std::string tmp_;
};

TEST_F(WorkerTest, TrainsChecksPointsAndResumes) {
  std::string out;
  ASSERT_EQ(Shell(Worker(absl::StrCat("--num-epochs=2 --model-prefix=", tmp_, "/m")), &out), 0) << out;
  EXPECT_THAT(out, ::testing::ContainsRegex("Epoch\\[0\\] Batch \\[0-10\\]\tSpeed: .* samples/sec\taccuracy="));
  EXPECT_THAT(out, HasSubstr("Epoch[1] Train-accuracy="));
  EXPECT_THAT(out, HasSubstr("Epoch[1] Time cost="));
  EXPECT_THAT(out, HasSubstr(absl::StrCat("Saved checkpoint to \"", tmp_, "/m-0002.params\"")));
  EXPECT_THAT(out, HasSubstr("Epoch[1] Validation-accuracy="));
  std::ifstream symbol(tmp_ + "/m-symbol.json");
  std::string json((std::istreambuf_iterator<char>(symbol)), {});
  EXPECT_THAT(json, HasSubstr("\"op\": \"SoftmaxOutput\""));
  ASSERT_EQ(Shell(Worker(absl::StrCat("--num-epochs=3 --load-epoch=2 --model-prefix=", tmp_, "/m")),
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
  ASSERT_EQ(Shell(absl::StrCat(Runfile("worker/worker"),
                             " --benchmark --network=mlp --num_examples=320 --batch_size=32"),
                &out),
            0)
      << out;
  EXPECT_THAT(out, HasSubstr("Epoch[0] Train-accuracy="));
  EXPECT_NE(Shell(Worker("--network=resnext"), &out), 0);
  EXPECT_THAT(out, HasSubstr("--network 'resnext'"));
  EXPECT_NE(Shell(Worker("--kv_store=dist_sideways"), &out), 0);
  EXPECT_THAT(out, HasSubstr("--kv_store 'dist_sideways'"));
  EXPECT_NE(Shell(absl::StrCat(Runfile("worker/worker"), " --data_train=/no/such.rec"), &out), 0);
  EXPECT_THAT(out, HasSubstr("/no/such.rec"));
}

}  // namespace
}  // namespace pstrain
