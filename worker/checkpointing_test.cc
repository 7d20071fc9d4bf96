#include "worker/checkpointing.h"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint/ndarray_list.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pstrain {
namespace worker {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<nn::Network> Lenet(uint32_t seed) {
  auto net = nn::BuildNetwork("lenet", 0, 10, {1, 28, 28}, 1);
  EXPECT_TRUE(net.ok()) << net.status();
  if (!net.ok()) return nullptr;
  EXPECT_TRUE(nn::Initialize(net->get(), "xavier", seed).ok());
  return std::move(*net);
}

std::string TmpDir() { return ::testing::TempDir(); }

TEST(CheckpointingTest, ParamsPathHasFourDigitEpochs) {
  EXPECT_EQ(CheckpointParamsPath("/a/m", 3), "/a/m-0003.params");
  EXPECT_EQ(CheckpointParamsPath("m", 12345), "m-12345.params");
}

TEST(CheckpointingTest, SaveThenLoadRestoresEveryParameter) {
  auto saved = Lenet(1), loaded = Lenet(2);
  ASSERT_TRUE(saved && loaded);
  const std::string prefix = TmpDir() + "roundtrip";
  auto path = SaveCheckpoint(prefix, 3, saved.get());
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, prefix + "-0003.params");
  std::ifstream symbol(prefix + "-symbol.json");
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(symbol), {}),
            saved->SymbolJson());

  ASSERT_TRUE(LoadCheckpoint(*path, loaded.get()).ok());
  const auto a = saved->params(), b = loaded->params();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    absl::Span<const float> x = a[i]->value.span(), y = b[i]->value.span();
    EXPECT_TRUE(std::equal(x.begin(), x.end(), y.begin(), y.end()))
        << a[i]->name;
  }
}

TEST(CheckpointingTest, AnArrayThatDoesNotFitNamesItAndThePath) {
  auto mlp = nn::BuildNetwork("mlp", 0, 10, {1, 28, 28}, 1);
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  const std::string prefix = TmpDir() + "mlp";
  auto path = SaveCheckpoint(prefix, 1, mlp->get());
  ASSERT_TRUE(path.ok()) << path.status();
  auto lenet = Lenet(1);
  ASSERT_TRUE(lenet);
  absl::Status s = LoadCheckpoint(*path, lenet.get());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr(*path));
  EXPECT_THAT(s.message(), HasSubstr("does not fit the network"));
}

// A file that lacks one of the network's parameters loads (the others)
// by default, as --load_epoch always did, and is refused with
// require_every_param, naming the parameter.
TEST(CheckpointingTest, AMissingParameterIsRefusedOnlyWhenRequired) {
  auto net = Lenet(1);
  ASSERT_TRUE(net);
  std::vector<checkpoint::NDArray> arrays;
  for (nn::Param* p : net->params()) {
    if (p->name == "fc1_bias") continue;
    std::vector<float> v(p->value.data(), p->value.data() + p->value.size());
    arrays.push_back(checkpoint::NDArray::FromFloats(
        (p->aux ? "aux:" : "arg:") + p->name, p->value.shape(), v));
  }
  ASSERT_LT(arrays.size(), net->params().size()) << "no fc1_bias in LeNet?";
  const std::string path = TmpDir() + "partial-0001.params";
  ASSERT_TRUE(checkpoint::WriteNDArrayListFile(path, arrays).ok());
  EXPECT_TRUE(LoadCheckpoint(path, net.get()).ok());
  absl::Status s = LoadCheckpoint(path, net.get(), true);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr(path));
  EXPECT_THAT(s.message(),
              HasSubstr("no array for the network's parameter arg:fc1_bias"));
}

TEST(CheckpointingTest, ErrorsNameTheFile) {
  auto net = Lenet(1);
  ASSERT_TRUE(net);
  const std::string missing = TmpDir() + "missing-0001.params";
  absl::Status s = LoadCheckpoint(missing, net.get());
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr(missing));

  const std::string prefix = TmpDir() + "no/such/dir/m";
  auto saved = SaveCheckpoint(prefix, 1, net.get());
  EXPECT_FALSE(saved.ok());
  EXPECT_THAT(saved.status().message(), HasSubstr(prefix + "-symbol.json"));
}

}  // namespace
}  // namespace worker
}  // namespace pstrain
