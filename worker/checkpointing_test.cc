#include "worker/checkpointing.h"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>

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
