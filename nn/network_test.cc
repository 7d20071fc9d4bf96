#include "nn/network.h"

#include <cmath>
#include <fstream>
#include <random>

#include "absl/time/clock.h"
#include "glog/logging.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "nn/optimizer.h"
#include "tools/mnist.h"

namespace pstrain {
namespace nn {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<std::string> Names(Network* net) {
  std::vector<std::string> n;
  for (Param* p : net->params()) n.push_back(p->name);
  return n;
}

TEST(NetworkTest, LenetAndMlpMatchThePublishedArchitectures) {
  auto lenet = BuildNetwork("lenet", 0, 10, {1, 28, 28}, 4);
  ASSERT_TRUE(lenet.ok()) << lenet.status();
  // conv 5x5x20 (520) + conv 5x5x50 (25050) + fc 800->500 (400500) + fc 500->10
  // (5010).
  EXPECT_EQ((*lenet)->NumParams(), 431080);
  EXPECT_THAT(
      Names(lenet->get()),
      ElementsAre("conv0_weight", "conv0_bias", "conv1_weight", "conv1_bias",
                  "fc0_weight", "fc0_bias", "fc1_weight", "fc1_bias"));
  EXPECT_EQ((*lenet)->FindParam("fc0_bias")->wd_mult, 0.0f);
  auto summary = (*lenet)->Summary();
  EXPECT_THAT(summary[2].out_shape, ElementsAre(20, 12, 12));
  EXPECT_EQ(summary[0].flops, 24 * 24 * 20 * 25);
  auto mlp = BuildNetwork("mlp", 0, 10, {1, 28, 28}, 4);
  ASSERT_TRUE(mlp.ok());
  EXPECT_EQ((*mlp)->NumParams(),
            784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10);
}

TEST(NetworkTest, SymbolJsonHasMxnetLayout) {
  auto net = BuildNetwork("lenet", 0, 10, {1, 28, 28}, 2);
  ASSERT_TRUE(net.ok());
  const nlohmann::json json = nlohmann::json::parse((*net)->SymbolJson());
  const nlohmann::json& nodes = json["nodes"];
  ASSERT_EQ(nodes.size(), 21u);
  EXPECT_EQ(nodes[0], nlohmann::json::parse(
                          R"({"op": "null", "name": "data", "inputs": []})"));
  EXPECT_EQ(nodes[3]["op"], "Convolution");
  EXPECT_EQ(nodes[3]["name"], "conv0");
  EXPECT_EQ(nodes[3]["attrs"]["kernel"], "(5, 5)");
  EXPECT_EQ(nodes[3]["inputs"],
            nlohmann::json::parse("[[0, 0, 0], [1, 0, 0], [2, 0, 0]]"));
  const std::string text = json.dump();
  EXPECT_THAT(text, HasSubstr(R"("act_type":"tanh")"));
  EXPECT_THAT(text, HasSubstr(R"("pool_type":"max")"));
  EXPECT_EQ(nodes[18]["op"], "FullyConnected");
  EXPECT_EQ(nodes[18]["name"], "fc1");
  EXPECT_EQ(nodes[18]["attrs"]["num_hidden"], "10");
  // data, 8 parameters, softmax_label are the argument nodes.
  EXPECT_EQ(json["arg_nodes"],
            nlohmann::json::parse("[0, 1, 2, 6, 7, 12, 13, 16, 17, 19]"));
  EXPECT_EQ(json["heads"], nlohmann::json::parse("[[20, 0, 0]]"));
  EXPECT_EQ(json["node_row_ptr"].size(), 22u);
}

// A layer whose output nothing reads still reports its (zero) gradients,
// so a KVStore round that waits for every key gets them.
TEST(NetworkTest, DeadBranchReportsZeroGradients) {
  Network net;
  const int flat = net.Add(MakeFlatten("flatten0"), {Network::kInput});
  net.Add(MakeFullyConnected("dead", 3), {flat});
  net.Add(MakeFullyConnected("fc", 4), {flat});
  ASSERT_TRUE(net.Build({2, 1, 2, 2}, 4).ok());
  InitializeXavier(&net, 1);
  Param* dead = net.FindParam("dead_weight");
  ASSERT_NE(dead, nullptr);
  dead->grad.Fill(7.0f);
  kernels::CpuContext ctx;
  kernels::Tensor x({2, 1, 2, 2});
  x.Fill(0.5f);
  ASSERT_TRUE(net.Forward(&ctx, x, std::vector<float>{1, 2}).ok());
  std::vector<std::string> reported;
  ASSERT_TRUE(net.Backward(&ctx, 1.0f,
                           [&](const std::vector<Param*>& ps) {
                             for (const Param* p : ps)
                               reported.push_back(p->name);
                           })
                  .ok());
  EXPECT_THAT(reported,
              ElementsAre("fc_weight", "fc_bias", "dead_weight", "dead_bias"));
  for (float g : dead->grad.span()) EXPECT_EQ(g, 0.0f);
}

TEST(NetworkTest, BadCombinationsNameTheProblem) {
  auto small = BuildNetwork("lenet", 0, 10, {1, 8, 8}, 2);
  ASSERT_FALSE(small.ok());
  EXPECT_THAT(std::string(small.status().message()),
              HasSubstr("at least 16x16"));
  EXPECT_THAT(std::string(small.status().message()),
              HasSubstr("--image_shape 1,8,8"));
  // MXNet's get_symbol() builds ImageNet depths from 29 pixels up (so does
  // resnet), and the CIFAR family up to 28.
  auto resnet = BuildNetwork("resnet", 18, 10, {3, 28, 28}, 2);
  ASSERT_FALSE(resnet.ok());
  EXPECT_THAT(std::string(resnet.status().message()),
              HasSubstr("--num_layers 18"));
  EXPECT_THAT(std::string(resnet.status().message()),
              HasSubstr("20, 32, 44, 56, 110"));
  auto resnet21 = BuildNetwork("resnet", 21, 10, {3, 224, 224}, 2);
  EXPECT_THAT(std::string(resnet21.status().message()),
              HasSubstr("18, 34, 50, 101, 152, 200 or 269"));
  auto resnet_v1 = BuildNetwork("resnet_v1", 18, 10, {3, 32, 32}, 2);
  ASSERT_FALSE(resnet_v1.ok());
  EXPECT_THAT(std::string(resnet_v1.status().message()),
              HasSubstr("--network resnet_v1 --num_layers 18"));
  EXPECT_THAT(std::string(resnet_v1.status().message()),
              HasSubstr("20, 32, 44, 56, 110"));
  auto resnet_v1_21 = BuildNetwork("resnet_v1", 21, 10, {3, 224, 224}, 2);
  EXPECT_THAT(std::string(resnet_v1_21.status().message()),
              HasSubstr("18, 34, 50, 101 or 152"));
  auto vgg = BuildNetwork("vgg", 13, 10, {3, 224, 224}, 2);
  EXPECT_THAT(std::string(vgg.status().message()), HasSubstr("11 or 16"));
  auto inception = BuildNetwork("inception-v3", 0, 10, {3, 32, 32}, 2);
  EXPECT_THAT(std::string(inception.status().message()),
              HasSubstr("at least 75x75"));
  auto unknown = BuildNetwork("transformer", 0, 10, {1, 28, 28}, 2);
  EXPECT_THAT(std::string(unknown.status().message()),
              HasSubstr("--network 'transformer'"));
  EXPECT_FALSE(BuildNetwork("mlp", 0, 1, {1, 28, 28}, 2).ok());
}

TEST(NetworkTest, WholeNetworkGradientMatchesFiniteDifferences) {
  auto net = BuildNetwork("lenet", 0, 3, {1, 16, 16}, 2);
  ASSERT_TRUE(net.ok()) << net.status();
  InitializeXavier(net->get(), 7);
  kernels::CpuContext ctx;
  kernels::Tensor x({2, 1, 16, 16});
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  for (auto& v : x.span()) v = nd(rng);
  const std::vector<float> labels = {1, 2};
  ASSERT_TRUE((*net)->Forward(&ctx, x, labels).ok());
  ASSERT_TRUE((*net)->Backward(&ctx, 1.0f).ok());
  for (const char* name :
       {"conv0_weight", "conv1_bias", "fc0_weight", "fc1_bias"}) {
    Param* p = (*net)->FindParam(name);
    ASSERT_NE(p, nullptr);
    kernels::Tensor analytic = p->grad.Clone();
    for (int64_t i = 0; i < p->value.size();
         i += std::max<int64_t>(1, p->value.size() / 20)) {
      const float keep = p->value.data()[i];
      const float eps = 1e-3f;  // Small: max pooling must keep its argmax.
      p->value.data()[i] = keep + eps;
      double up =
          *(*net)->Forward(&ctx, x, labels) * 2;  // Sum of the 2 losses.
      p->value.data()[i] = keep - eps;
      double down = *(*net)->Forward(&ctx, x, labels) * 2;
      p->value.data()[i] = keep;
      const double numeric = (up - down) / (2 * eps);
      EXPECT_NEAR(analytic.data()[i], numeric, 3e-3 + 2e-2 * std::fabs(numeric))
          << name << " " << i;
    }
  }
}

// Fashion-MNIST's pixel mean and deviation (as --rgb_mean/--rgb_std would).
float Normalize(uint8_t v) { return (v / 255.0f - 0.286f) / 0.353f; }

// LeNet on real Fashion-MNIST images: the loss falls and accuracy on held-out
// images is sensible after a few hundred small steps.
TEST(NetworkTest, LenetLearnsFashionMnist) {
  const std::string dir = "/usr/share/datasets/fashion-mnist/";
  if (!std::ifstream(dir + "train-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << "Debian's dataset-fashion-mnist is not installed; skipped";
  }
  auto images = tools::ReadIdxImages(dir + "train-images-idx3-ubyte.gz");
  auto labels = tools::ReadIdxLabels(dir + "train-labels-idx1-ubyte.gz");
  ASSERT_TRUE(images.ok() && labels.ok());
  constexpr int kBatch = 32, kSteps = 300, kTest = 1000;
  auto net = BuildNetwork("lenet", 0, 10, {1, 28, 28}, kBatch);
  ASSERT_TRUE(net.ok());
  InitializeXavier(net->get(), 1);
  proto::OptimizerConfig cfg;
  cfg.set_kind(proto::OptimizerConfig::SGD);
  // lr 0.05 with momentum 0.9 made the last steps' loss swing with the
  // seventh digit of the initial weights; 0.02 learns steadily.
  cfg.set_learning_rate(0.02);
  cfg.set_momentum(0.9);
  cfg.set_weight_decay(1e-4);
  cfg.set_rescale_grad(1.0 / kBatch);
  auto opt = Optimizer::Create(cfg);
  ASSERT_TRUE(opt.ok());
  kernels::CpuContext ctx;
  kernels::Tensor x({kBatch, 1, 28, 28});
  std::vector<float> y(kBatch);
  auto load = [&](int64_t first) {
    for (int b = 0; b < kBatch; ++b) {
      const int64_t idx =
          (first + b) %
          (images->count - kTest);  // The last kTest are held out.
      for (int p = 0; p < 784; ++p)
        x.data()[b * 784 + p] = Normalize(images->pixels[idx * 784 + p]);
      y[b] = (*labels)[idx];
    }
  };
  double first_loss = 0, last_loss = 0;
  const absl::Time start = absl::Now();
  for (int step = 0; step < kSteps; ++step) {
    load(static_cast<int64_t>(step) * kBatch);
    auto loss = (*net)->Forward(&ctx, x, y);
    ASSERT_TRUE(loss.ok()) << loss.status();
    if (step < 20) first_loss += *loss / 20;
    if (step >= kSteps - 20) last_loss += *loss / 20;
    ASSERT_TRUE((*net)->Backward(&ctx, 1.0f).ok());
    int64_t key = 0;
    for (Param* p : (*net)->params()) {
      (*opt)->Update(key++, 0, p->value.span(), p->grad.span());
    }
  }
  LOG(INFO) << kSteps << " LeNet steps of " << kBatch << " in "
            << absl::FormatDuration(absl::Now() - start) << "; loss "
            << first_loss << " -> " << last_loss;
  EXPECT_LT(last_loss, first_loss * 0.8);
  int correct = 0;
  for (int first = 0; first < kTest; first += kBatch) {
    for (int b = 0; b < kBatch; ++b) {
      const int64_t idx =
          images->count - kTest + std::min(first + b, kTest - 1);
      for (int p = 0; p < 784; ++p)
        x.data()[b * 784 + p] = Normalize(images->pixels[idx * 784 + p]);
      y[b] = (*labels)[idx];
    }
    ASSERT_TRUE((*net)->Forward(&ctx, x, y).ok());
    const auto& probs = (*net)->probabilities();
    for (int b = 0; b < kBatch && first + b < kTest; ++b) {
      const float* p = probs.data() + b * 10;
      correct += std::max_element(p, p + 10) - p == static_cast<int>(y[b]);
    }
  }
  const double accuracy = static_cast<double>(correct) / kTest;
  LOG(INFO) << "held-out accuracy after " << kSteps << " steps: " << accuracy;
  EXPECT_GT(accuracy, 0.7);  // Chance is 0.1; measured 0.81 here.
}

}  // namespace
}  // namespace nn
}  // namespace pstrain
