// The builders' architectures (parameter counts against the published
// models), forward/backward of every network, and the graph machinery:
// gradients through concatenation, residual additions, batch norm and LRN
// checked by finite differences; in-place buffers and pooled gradients.
#include <cmath>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "nn/network.h"

namespace pstrain {
namespace nn {
namespace {

using ::testing::HasSubstr;

struct Published {
  const char* network;
  int num_layers;
  std::vector<int64_t> image;
  int classes;
  int64_t learned;  // Weights, biases, batch-norm gamma and beta.
  const char* source;
};

// Counts of the reference implementations, without auxiliary states
// (moving mean and variance).
const Published kPublished[] = {
    {"lenet", 0, {1, 28, 28}, 10, 431080, "MXNet example lenet"},
    {"alexnet",
     0,
     {3, 224, 224},
     1000,
     50844008,
     "MXNet symbols/alexnet.py (203 MB)"},
    {"vgg", 11, {3, 224, 224}, 1000, 132863336, "torchvision vgg11"},
    {"vgg", 16, {3, 224, 224}, 1000, 138357544, "torchvision vgg16"},
    // The post-activation ResNets (torchvision's are too); MXNet's
    // pre-activation "resnet" is checked in ResnetIsMxnetsSymbol.
    {"resnet_v1", 18, {3, 224, 224}, 1000, 11689512, "torchvision resnet18"},
    {"resnet_v1", 34, {3, 224, 224}, 1000, 21797672, "torchvision resnet34"},
    {"resnet_v1", 50, {3, 224, 224}, 1000, 25557032, "torchvision resnet50"},
    {"resnet_v1", 101, {3, 224, 224}, 1000, 44549160, "torchvision resnet101"},
    {"resnet_v1",
     152,
     {3, 224, 224},
     1000,
     60192808,
     "torchvision resnet152 (240 MB)"},
    // He et al. 2016 CIFAR ResNets use zero-padding shortcuts (0.27M, 0.85M,
    // 1.7M: 269722, 853018, 1727962 parameters); resnet_v1 uses 1x1
    // projections where the shape changes, 2752 parameters more.
    {"resnet_v1",
     20,
     {3, 32, 32},
     10,
     269722 + 2752,
     "He et al. 2016 (0.27M) + projections"},
    {"resnet_v1",
     56,
     {3, 32, 32},
     10,
     853018 + 2752,
     "He et al. 2016 (0.85M) + projections"},
    {"resnet_v1",
     110,
     {3, 32, 32},
     10,
     1727962 + 2752,
     "He et al. 2016 (1.7M) + projections"},
    {"inception-v3",
     0,
     {3, 299, 299},
     1000,
     23834568,
     "torchvision inception_v3 without the auxiliary head (95 MB)"},
};

TEST(NetworksTest, ParameterCountsMatchThePublishedArchitectures) {
  for (const Published& p : kPublished) {
    auto net = BuildNetwork(p.network, p.num_layers, p.classes, p.image, 1);
    ASSERT_TRUE(net.ok()) << p.network << p.num_layers << ": " << net.status();
    EXPECT_EQ((*net)->NumLearnedParams(), p.learned)
        << p.network << " " << p.num_layers << " (" << p.source << ")";
    LOG(INFO) << p.network << " " << p.num_layers << ": "
              << (*net)->NumLearnedParams() << " learned, "
              << (*net)->NumParams() << " with auxiliary states ("
              << (*net)->NumParams() * 4 / 1e6 << " MB float32)";
  }
}

TEST(NetworksTest, MiniGooglenetMatchesTheKerasModel) {
  // The Keras MiniGoogLeNet for CIFAR-10 (convolutions with bias, batch
  // norm): 1,656,250 parameters including batch norm's moving statistics.
  auto net = BuildNetwork("minigooglenet", 0, 10, {3, 32, 32}, 1);
  ASSERT_TRUE(net.ok()) << net.status();
  EXPECT_EQ((*net)->NumParams(), 1656250);
}

TEST(NetworksTest, BatchNormParametersHaveMxnetNamesAndFlags) {
  auto net = BuildNetwork("resnet_v1", 20, 10, {3, 32, 32}, 2);
  ASSERT_TRUE(net.ok());
  Param* gamma = (*net)->FindParam("stem_bn_gamma");
  Param* mean = (*net)->FindParam("stem_bn_moving_mean");
  Param* var = (*net)->FindParam("stem_bn_moving_var");
  ASSERT_TRUE(gamma && mean && var && (*net)->FindParam("stem_bn_beta"));
  EXPECT_FALSE(gamma->aux);
  EXPECT_EQ(gamma->wd_mult, 1.0f);  // MXNet decays *_gamma.
  EXPECT_EQ((*net)->FindParam("stem_bn_beta")->wd_mult, 0.0f);
  EXPECT_TRUE(mean->aux && var->aux);
  EXPECT_TRUE(mean->grad.empty());
  ASSERT_TRUE(Initialize(net->get(), "xavier", 1).ok());
  EXPECT_EQ(gamma->value.data()[0], 1.0f);
  EXPECT_EQ(var->value.data()[0], 1.0f);
  EXPECT_EQ(mean->value.data()[0], 0.0f);
  EXPECT_THAT(std::string(Initialize(net->get(), "orthogonal", 1).message()),
              HasSubstr("--initializer orthogonal: unknown"));
  // Compact JSON (ordered keys): "op" then "name" of each node.
  const std::string json = nlohmann::json::parse((*net)->SymbolJson()).dump();
  EXPECT_THAT(json,
              HasSubstr(R"("name":"stage1_unit1_plus","op":"elemwise_add")"));
  EXPECT_THAT(json, HasSubstr(R"("name":"stem_bn","op":"BatchNorm")"));
  auto inception = BuildNetwork("minigooglenet", 0, 10, {3, 32, 32}, 1);
  ASSERT_TRUE(inception.ok());
  EXPECT_THAT(nlohmann::json::parse((*inception)->SymbolJson()).dump(),
              HasSubstr(R"({"attrs":{"dim":"1","num_args":"2"},"inputs":)"));
}

// MXNet's symbols/resnet.py, node for node. Node i of resnet-18's symbol
// (3x224x224) as get_symbol(1000, 18, "3,224,224") saves it: operator,
// name, attributes (as MXNet writes them: Python's str() of what the script
// passed, sorted by key; "" for none) and the nodes read. Variables (op
// "null") come just before the node that takes them, in argument order.
struct SymbolNode {
  const char* op;
  const char* name;
  const char* attrs;
  std::vector<int> inputs;
};

constexpr char kBn[] =
    R"x({"eps":"2e-05","fix_gamma":"False","momentum":"0.9"})x";
constexpr char kRelu[] = R"x({"act_type":"relu"})x";
constexpr char kMean[] = R"x({"__init__":"[\"zero\", {}]"})x";
constexpr char kVar[] = R"x({"__init__":"[\"one\", {}]"})x";
constexpr char kConv3x3[] =
    R"x({"kernel":"(3, 3)","no_bias":"True","num_filter":"64","pad":"(1, 1)",)x"
    R"x("stride":"(1, 1)","workspace":"256"})x";

const std::vector<SymbolNode>& Resnet18Head() {
  static const auto* nodes = new std::vector<SymbolNode>{
      {"null", "data", "", {}},
      {"_copy", "id", "", {0}},  // mx.sym.identity(name='id')
      {"null", "bn_data_gamma", "", {}},
      {"null", "bn_data_beta", "", {}},
      {"null", "bn_data_moving_mean", kMean, {}},
      {"null", "bn_data_moving_var", kVar, {}},
      {"BatchNorm",
       "bn_data",
       R"x({"eps":"2e-05","fix_gamma":"True","momentum":"0.9"})x",
       {1, 2, 3, 4, 5}},
      {"null", "conv0_weight", "", {}},
      {"Convolution",
       "conv0",
       R"x({"kernel":"(7, 7)","no_bias":"True","num_filter":"64",)x"
       R"x("pad":"(3, 3)","stride":"(2, 2)","workspace":"256"})x",
       {6, 7}},
      {"null", "bn0_gamma", "", {}},
      {"null", "bn0_beta", "", {}},
      {"null", "bn0_moving_mean", kMean, {}},
      {"null", "bn0_moving_var", kVar, {}},
      {"BatchNorm", "bn0", kBn, {8, 9, 10, 11, 12}},
      {"Activation", "relu0", kRelu, {13}},
      // Pooling without a name: MXNet's NameManager calls it pooling0.
      {"Pooling",
       "pooling0",
       R"x({"kernel":"(3, 3)","pad":"(1, 1)","pool_type":"max",)x"
       R"x("stride":"(2, 2)"})x",
       {14}},
      // residual_unit(stride (1,1), dim_match False): pre-activation.
      {"null", "stage1_unit1_bn1_gamma", "", {}},
      {"null", "stage1_unit1_bn1_beta", "", {}},
      {"null", "stage1_unit1_bn1_moving_mean", kMean, {}},
      {"null", "stage1_unit1_bn1_moving_var", kVar, {}},
      {"BatchNorm", "stage1_unit1_bn1", kBn, {15, 16, 17, 18, 19}},
      {"Activation", "stage1_unit1_relu1", kRelu, {20}},
      {"null", "stage1_unit1_conv1_weight", "", {}},
      {"Convolution", "stage1_unit1_conv1", kConv3x3, {21, 22}},
      {"null", "stage1_unit1_bn2_gamma", "", {}},
      {"null", "stage1_unit1_bn2_beta", "", {}},
      {"null", "stage1_unit1_bn2_moving_mean", kMean, {}},
      {"null", "stage1_unit1_bn2_moving_var", kVar, {}},
      {"BatchNorm", "stage1_unit1_bn2", kBn, {23, 24, 25, 26, 27}},
      {"Activation", "stage1_unit1_relu2", kRelu, {28}},
      {"null", "stage1_unit1_conv2_weight", "", {}},
      {"Convolution", "stage1_unit1_conv2", kConv3x3, {29, 30}},
      // The projection reads relu1 (not the unit's input) and has no "pad".
      {"null", "stage1_unit1_sc_weight", "", {}},
      {"Convolution",
       "stage1_unit1_sc",
       R"x({"kernel":"(1, 1)","no_bias":"True","num_filter":"64",)x"
       R"x("stride":"(1, 1)","workspace":"256"})x",
       {21, 32}},
      // conv2 + shortcut.
      {"elemwise_add", "_plus0", "", {31, 33}},
  };
  return *nodes;
}

// The symbol's nodes, keys in the order written.
nlohmann::ordered_json SymbolOf(const std::string& network, int num_layers,
                                int classes, std::vector<int64_t> image) {
  auto net = BuildNetwork(network, num_layers, classes, image, 1);
  CHECK(net.ok()) << net.status();
  return nlohmann::ordered_json::parse((*net)->SymbolJson());
}

std::vector<std::string> ArgsNamed(const nlohmann::ordered_json& symbol,
                                   const std::string& prefix) {
  std::vector<std::string> names;
  for (const auto& n : symbol["nodes"]) {
    const std::string name = n["name"];
    if (n["op"] == "null" && name.rfind(prefix, 0) == 0) names.push_back(name);
  }
  return names;
}

const nlohmann::ordered_json& NodeNamed(const nlohmann::ordered_json& symbol,
                                        const std::string& name) {
  for (const auto& n : symbol["nodes"]) {
    if (n["name"] == name) return n;
  }
  static const nlohmann::ordered_json kNone;
  ADD_FAILURE() << "no node " << name;
  return kNone;
}

std::string Attrs(const nlohmann::ordered_json& node) {
  return node.contains("attrs") ? node["attrs"].dump() : "";
}

TEST(NetworksTest, ResnetIsMxnetsSymbol) {
  const nlohmann::ordered_json s = SymbolOf("resnet", 18, 1000, {3, 224, 224});
  const auto& nodes = s["nodes"];
  // 2 + 4 units x (2 BN of 5 nodes, 2 ReLU, 2 conv of 2) + 4 projections
  // x 2 + 8 sums, bn_data, conv0, bn0, relu0, pooling0, bn1, relu1, pool1,
  // flatten0, fc1 (3), softmax_label, softmax: 173 nodes, 101 of them
  // variables (data, softmax_label and 99 parameters).
  ASSERT_EQ(nodes.size(), 173u);
  EXPECT_EQ(s["arg_nodes"].size(), 101u);
  const auto& head = Resnet18Head();
  for (size_t i = 0; i < head.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("node ", i, " ", head[i].name));
    EXPECT_EQ(nodes[i]["op"], head[i].op);
    EXPECT_EQ(nodes[i]["name"], head[i].name);
    EXPECT_EQ(Attrs(nodes[i]), head[i].attrs);
    std::vector<int> inputs;
    for (const auto& e : nodes[i]["inputs"]) inputs.push_back(e[0]);
    EXPECT_EQ(inputs, head[i].inputs);
  }
  // The last unit (dim_match: no projection), then the head of the net.
  EXPECT_THAT(ArgsNamed(s, "stage4_unit2_"),
              ::testing::ElementsAre(
                  "stage4_unit2_bn1_gamma", "stage4_unit2_bn1_beta",
                  "stage4_unit2_bn1_moving_mean", "stage4_unit2_bn1_moving_var",
                  "stage4_unit2_conv1_weight", "stage4_unit2_bn2_gamma",
                  "stage4_unit2_bn2_beta", "stage4_unit2_bn2_moving_mean",
                  "stage4_unit2_bn2_moving_var", "stage4_unit2_conv2_weight"));
  std::vector<std::string> tail;
  for (size_t i = 159; i < nodes.size(); ++i) tail.push_back(nodes[i]["name"]);
  EXPECT_THAT(tail, ::testing::ElementsAre("_plus7", "bn1_gamma", "bn1_beta",
                                           "bn1_moving_mean", "bn1_moving_var",
                                           "bn1", "relu1", "pool1", "flatten0",
                                           "fc1_weight", "fc1_bias", "fc1",
                                           "softmax_label", "softmax"));
  EXPECT_EQ(Attrs(NodeNamed(s, "pool1")),
            R"x({"global_pool":"True","kernel":"(7, 7)","pool_type":"avg"})x");
  EXPECT_EQ(Attrs(NodeNamed(s, "flatten0")), "");
  EXPECT_EQ(Attrs(NodeNamed(s, "fc1")), R"x({"num_hidden":"1000"})x");
  EXPECT_EQ(Attrs(NodeNamed(s, "stage2_unit1_sc")),
            R"x({"kernel":"(1, 1)","no_bias":"True","num_filter":"128",)x"
            R"x("stride":"(2, 2)","workspace":"256"})x");
  EXPECT_EQ(NodeNamed(s, "_plus7")["inputs"],
            nlohmann::ordered_json::parse("[[158,0,0],[142,0,0]]"));
  EXPECT_EQ(s["heads"], nlohmann::ordered_json::parse("[[172,0,0]]"));
}

TEST(NetworksTest, CifarResnetIsMxnetsSymbol) {
  // get_symbol(10, 20, "3,28,28"): three stages of 3 basic units (16, 32,
  // 64 filters), a 3x3 stem without batch norm or pooling. MXNet refuses 20
  // layers at 32x32; pstrain builds the same symbol there (the JSON has no
  // image shape).
  const nlohmann::ordered_json s28 = SymbolOf("resnet", 20, 10, {3, 28, 28});
  EXPECT_EQ(s28, SymbolOf("resnet", 20, 10, {3, 32, 32}));
  const auto& nodes = s28["nodes"];
  ASSERT_EQ(nodes.size(), 181u);
  EXPECT_EQ(s28["arg_nodes"].size(), 106u);
  EXPECT_EQ(nodes[8]["name"], "conv0");
  EXPECT_EQ(nodes[8]["inputs"],
            nlohmann::ordered_json::parse("[[6,0,0],[7,0,0]]"));
  EXPECT_EQ(Attrs(nodes[8]),
            R"x({"kernel":"(3, 3)","no_bias":"True","num_filter":"16",)x"
            R"x("pad":"(1, 1)","stride":"(1, 1)","workspace":"256"})x");
  EXPECT_EQ(nodes[9]["name"], "stage1_unit1_bn1_gamma");
  EXPECT_EQ(Attrs(NodeNamed(s28, "stage1_unit1_sc")),
            R"x({"kernel":"(1, 1)","no_bias":"True","num_filter":"16",)x"
            R"x("stride":"(1, 1)","workspace":"256"})x");
  EXPECT_EQ(Attrs(NodeNamed(s28, "stage3_unit1_conv1")),
            R"x({"kernel":"(3, 3)","no_bias":"True","num_filter":"64",)x"
            R"x("pad":"(1, 1)","stride":"(2, 2)","workspace":"256"})x");
  EXPECT_EQ(nodes[167]["name"], "_plus8");
  EXPECT_EQ(Attrs(NodeNamed(s28, "fc1")), R"x({"num_hidden":"10"})x");
  EXPECT_THAT(ArgsNamed(s28, "stage3_unit3_"),
              ::testing::ElementsAre(
                  "stage3_unit3_bn1_gamma", "stage3_unit3_bn1_beta",
                  "stage3_unit3_bn1_moving_mean", "stage3_unit3_bn1_moving_var",
                  "stage3_unit3_conv1_weight", "stage3_unit3_bn2_gamma",
                  "stage3_unit3_bn2_beta", "stage3_unit3_bn2_moving_mean",
                  "stage3_unit3_bn2_moving_var", "stage3_unit3_conv2_weight"));
  // Where get_symbol() builds an ImageNet depth at 29 to 32 pixels (3x3
  // stem, four stages), so does pstrain; at 28 it refuses it.
  const nlohmann::ordered_json s18 = SymbolOf("resnet", 18, 10, {3, 32, 32});
  EXPECT_EQ(s18["nodes"].size(), 173u - 7);  // No bn0, relu0, pooling0.
  EXPECT_EQ(Attrs(NodeNamed(s18, "conv0")),
            R"x({"kernel":"(3, 3)","no_bias":"True","num_filter":"64",)x"
            R"x("pad":"(1, 1)","stride":"(1, 1)","workspace":"256"})x");
  auto refused = BuildNetwork("resnet", 18, 10, {3, 28, 28}, 1);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("6n+2 layers below 164"));
}

TEST(NetworksTest, Resnet50IsMxnetsSymbol) {
  auto net = BuildNetwork("resnet", 50, 1000, {3, 224, 224}, 1);
  ASSERT_TRUE(net.ok()) << net.status();
  // Convolutions 23,454,912 weights (the same shapes as torchvision's
  // resnet50); batch norm over 22,787 channels (bn_data 3, bn0 64, each
  // unit's bn1 on its input's channels and bn2, bn3 on the bottleneck's,
  // the final bn1 2048), each with gamma and beta (45,574 learned) and
  // moving mean and variance (45,574 auxiliary); fc1 2048 x 1000 + 1000 =
  // 2,049,000. torchvision's post-activation resnet50 (25,557,032) has batch
  // norm on the projections instead of bn_data and the final bn1.
  EXPECT_EQ((*net)->NumLearnedParams(), 23454912 + 45574 + 2049000);
  EXPECT_EQ((*net)->NumParams(), 25549486 + 45574);
  const nlohmann::ordered_json s =
      nlohmann::ordered_json::parse((*net)->SymbolJson());
  // 16 bottleneck units (3 BN of 5 nodes, 3 ReLU, 3 conv of 2) + 4
  // projections x 2 + 16 sums + the 29 nodes around them.
  EXPECT_EQ(s["nodes"].size(), 437u);
  EXPECT_EQ(s["arg_nodes"].size(), 261u);
  EXPECT_EQ(Attrs(NodeNamed(s, "stage2_unit1_conv2")),
            R"x({"kernel":"(3, 3)","no_bias":"True","num_filter":"128",)x"
            R"x("pad":"(1, 1)","stride":"(2, 2)","workspace":"256"})x");
  EXPECT_EQ(Attrs(NodeNamed(s, "stage2_unit1_conv3")),
            R"x({"kernel":"(1, 1)","no_bias":"True","num_filter":"512",)x"
            R"x("pad":"(0, 0)","stride":"(1, 1)","workspace":"256"})x");
  EXPECT_EQ(Attrs(NodeNamed(s, "stage4_unit1_sc")),
            R"x({"kernel":"(1, 1)","no_bias":"True","num_filter":"2048",)x"
            R"x("stride":"(2, 2)","workspace":"256"})x");
  const auto& sc = NodeNamed(s, "stage4_unit1_sc");
  EXPECT_EQ(s["nodes"][sc["inputs"][0][0].get<int>()]["name"],
            "stage4_unit1_relu1");
  EXPECT_EQ(NodeNamed(s, "_plus15")["op"], "elemwise_add");
  EXPECT_THAT(ArgsNamed(s, "stage4_unit3_"),
              ::testing::ElementsAre(
                  "stage4_unit3_bn1_gamma", "stage4_unit3_bn1_beta",
                  "stage4_unit3_bn1_moving_mean", "stage4_unit3_bn1_moving_var",
                  "stage4_unit3_conv1_weight", "stage4_unit3_bn2_gamma",
                  "stage4_unit3_bn2_beta", "stage4_unit3_bn2_moving_mean",
                  "stage4_unit3_bn2_moving_var", "stage4_unit3_conv2_weight",
                  "stage4_unit3_bn3_gamma", "stage4_unit3_bn3_beta",
                  "stage4_unit3_bn3_moving_mean", "stage4_unit3_bn3_moving_var",
                  "stage4_unit3_conv3_weight"));
  // bn_data's gamma is fixed at 1 (fix_gamma), as MXNet's.
  Param* gamma = (*net)->FindParam("bn_data_gamma");
  ASSERT_NE(gamma, nullptr);
  EXPECT_TRUE((*net)->layer(2).spec().bn.fix_gamma);
  EXPECT_EQ((*net)->layer(2).name(), "bn_data");
}

TEST(NetworksTest, MsraAndNormalScaleWeights) {
  auto net_or = BuildNetwork("lenet", 0, 10, {1, 28, 28}, 1);
  ASSERT_TRUE(net_or.ok());
  Network* net = net_or->get();
  auto rms = [](const Param* p) {
    double sq = 0;
    for (float v : p->value.span()) sq += v * v;
    return std::sqrt(sq / p->value.size());
  };
  ASSERT_TRUE(Initialize(net, "msra", 5).ok());
  // fc0_weight: [500, 800] -> std sqrt(1.88235 / 650).
  Param* fc = net->FindParam("fc0_weight");
  ASSERT_NE(fc, nullptr);
  EXPECT_NEAR(rms(fc), std::sqrt(2.0 / 1.0625 / 650), 0.01 * rms(fc));
  for (float v : net->FindParam("fc0_bias")->value.span()) EXPECT_EQ(v, 0.0f);
  ASSERT_TRUE(Initialize(net, "normal", 5).ok());
  EXPECT_NEAR(rms(fc), 0.01, 1e-4);
  ASSERT_TRUE(Initialize(net, "xavier", 5).ok());
  EXPECT_NEAR(rms(fc), std::sqrt(2.0 / 800), 0.01 * rms(fc));
}

void RandomInput(kernels::Tensor* x, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  for (auto& v : x->span()) v = nd(rng);
}

// Every network runs a training step and an inference forward at a small
// batch (and, to stay quick, small images: the full sizes are built above);
// every learned parameter gets a finite gradient, and the weights of nearly
// every layer a non-zero one.
TEST(NetworksTest, EveryNetworkTrainsOneStep) {
  struct Case {
    const char* network;
    int num_layers;
    std::vector<int64_t> image;
  };
  const Case cases[] = {
      {"mlp", 0, {1, 28, 28}},           {"lenet", 0, {1, 28, 28}},
      {"alexnet", 0, {3, 99, 99}},       {"vgg", 11, {3, 64, 64}},
      {"vgg", 16, {3, 32, 32}},          {"resnet", 18, {3, 64, 64}},
      {"resnet", 50, {3, 64, 64}},       {"resnet", 152, {3, 64, 64}},
      {"resnet", 20, {3, 32, 32}},       {"resnet", 110, {3, 32, 32}},
      {"resnet", 18, {3, 32, 32}},       {"resnet", 164, {3, 28, 28}},
      {"resnet_v1", 18, {3, 64, 64}},    {"resnet_v1", 50, {3, 64, 64}},
      {"resnet_v1", 20, {3, 32, 32}},    {"inception-v3", 0, {3, 75, 75}},
      {"minigooglenet", 0, {3, 32, 32}},
  };
  kernels::CpuContext ctx;
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrCat(c.network, " ", c.num_layers));
    auto net = BuildNetwork(c.network, c.num_layers, 10, c.image, 2);
    ASSERT_TRUE(net.ok()) << net.status();
    ASSERT_TRUE(Initialize(net->get(), "msra", 5).ok());
    kernels::Tensor x({2, c.image[0], c.image[1], c.image[2]});
    RandomInput(&x, 9);
    auto loss = (*net)->Forward(&ctx, x, std::vector<float>{3, 7});
    ASSERT_TRUE(loss.ok()) << loss.status();
    EXPECT_TRUE(std::isfinite(*loss));
    ASSERT_TRUE((*net)->Backward(&ctx, 1.0f).ok());
    int nonzero = 0, weights = 0;
    for (Param* p : (*net)->params()) {
      if (p->aux) continue;
      double sum = 0;
      for (float g : p->grad.span()) sum += std::fabs(g);
      ASSERT_TRUE(std::isfinite(sum)) << p->name;
      if (p->name.size() > 7 &&
          p->name.substr(p->name.size() - 7) == "_weight") {
        ++weights;
        nonzero += sum > 0;
      }
    }
    EXPECT_GT(nonzero, weights * 9 / 10);
    auto infer =
        (*net)->Forward(&ctx, x, std::vector<float>{3, 7}, Mode::kInference);
    ASSERT_TRUE(infer.ok()) << infer.status();
    EXPECT_TRUE(std::isfinite(*infer));
  }
}

// A small graph with every multi-input path: a stem feeding two branches
// (a node read twice), concatenation, a residual addition, batch norm, LRN,
// in-place tanh, global pooling.
std::unique_ptr<Network> SmallGraph(int classes) {
  auto net = std::make_unique<Network>();
  kernels::Conv2dParams c;
  c.kernel_h = c.kernel_w = 3;
  c.pad_h = c.pad_w = 1;
  c.num_filter = 4;
  net->Add(MakeConvolution("stem", c));
  const int bn = net->Add(MakeBatchNorm("bn", kernels::BatchNormParams()));
  // tanh rather than ReLU: batch norm couples every element, and a ReLU kink
  // crossed by a finite-difference step would spoil the comparison.
  const int relu = net->Add(MakeActivation("act", kernels::Activation::kTanh));
  c.kernel_h = c.kernel_w = 1;
  c.pad_h = c.pad_w = 0;
  c.num_filter = 3;
  const int a = net->Add(MakeConvolution("branch_a", c), {relu});
  kernels::Pool2dParams p;
  p.kind = kernels::PoolKind::kAvg;
  p.kernel_h = p.kernel_w = 3;
  p.stride_h = p.stride_w = 1;
  p.pad_h = p.pad_w = 1;
  const int b = net->Add(MakePooling("branch_b", p), {relu});
  const int cat = net->Add(MakeConcat("concat", 2), {a, b});  // 7 channels
  c.num_filter = 7;
  const int proj = net->Add(MakeConvolution("proj", c), {bn});
  const int sum = net->Add(MakeAdd("plus"), {cat, proj});
  net->Add(MakeLrn("lrn", kernels::LrnParams()), {sum});
  net->Add(MakeActivation("tanh", kernels::Activation::kTanh));
  kernels::Pool2dParams g;
  g.kind = kernels::PoolKind::kAvg;
  g.global = true;
  net->Add(MakePooling("pool", g));
  net->Add(MakeFullyConnected("fc", classes));
  return net;
}

TEST(NetworksTest, GraphGradientMatchesFiniteDifferences) {
  auto net = SmallGraph(3);
  ASSERT_TRUE(net->Build({3, 2, 5, 5}, 3).ok());
  ASSERT_TRUE(Initialize(net.get(), "xavier", 11).ok());
  // Non-trivial gamma/beta so their gradients are checked away from 1 and 0.
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> u(0.5f, 1.5f);
  for (auto& v : net->FindParam("bn_gamma")->value.span()) v = u(rng);
  for (auto& v : net->FindParam("bn_beta")->value.span()) v = u(rng) - 1.0f;
  kernels::CpuContext ctx;
  kernels::Tensor x({3, 2, 5, 5});
  RandomInput(&x, 4);
  const std::vector<float> labels = {0, 2, 1};
  // Forward in training mode updates moving statistics but the loss depends
  // only on the batch, so repeated forwards are the same function.
  ASSERT_TRUE(net->Forward(&ctx, x, labels).ok());
  ASSERT_TRUE(net->Backward(&ctx, 1.0f).ok());
  for (Param* p : net->params()) {
    if (p->aux) continue;
    kernels::Tensor analytic = p->grad.Clone();
    for (int64_t i = 0; i < p->value.size();
         i += std::max<int64_t>(1, p->value.size() / 12)) {
      const float keep = p->value.data()[i];
      const float eps = 1e-3f;
      p->value.data()[i] = keep + eps;
      const double up = *net->Forward(&ctx, x, labels) * 3;
      p->value.data()[i] = keep - eps;
      const double down = *net->Forward(&ctx, x, labels) * 3;
      p->value.data()[i] = keep;
      const double numeric = (up - down) / (2 * eps);
      EXPECT_NEAR(analytic.data()[i], numeric, 2e-3 + 2e-2 * std::fabs(numeric))
          << p->name << "[" << i << "]";
    }
  }
}

TEST(NetworksTest, ForwardAndBackwardReportParametersInLayerOrder) {
  auto net = SmallGraph(3);
  ASSERT_TRUE(net->Build({2, 2, 5, 5}, 3).ok());
  InitializeXavier(net.get(), 1);
  kernels::CpuContext ctx;
  kernels::Tensor x({2, 2, 5, 5});
  RandomInput(&x, 1);
  EXPECT_FALSE(net->Backward(&ctx, 1.0f).ok());  // No forward yet.
  ASSERT_TRUE(net->Forward(&ctx, x, std::vector<float>{0, 1}).ok());
  std::vector<std::string> order;
  ASSERT_TRUE(net->Backward(&ctx, 1.0f,
                            [&](const std::vector<Param*>& ps) {
                              for (Param* p : ps) order.push_back(p->name);
                            })
                  .ok());
  EXPECT_THAT(order, ::testing::ElementsAre(
                         "fc_weight", "fc_bias", "proj_weight", "proj_bias",
                         "branch_a_weight", "branch_a_bias", "bn_gamma",
                         "bn_beta", "stem_weight", "stem_bias"));
  // Forward asks for each layer's parameters before running it, in layer
  // order, and stops at the first error.
  std::vector<std::string> needed;
  auto loss = net->Forward(&ctx, x, std::vector<float>{0, 1}, Mode::kTrain,
                           [&](const std::vector<Param*>& ps) {
                             needed.push_back(ps[0]->name);
                             return ps[0]->name == "proj_weight"
                                        ? absl::UnavailableError("pull failed")
                                        : absl::OkStatus();
                           });
  EXPECT_THAT(std::string(loss.status().message()), HasSubstr("pull failed"));
  EXPECT_THAT(needed, ::testing::ElementsAre("stem_weight", "bn_gamma",
                                             "branch_a_weight", "proj_weight"));
}

TEST(NetworksTest, InferenceUsesMovingStatisticsAndNoDropout) {
  auto net = BuildNetwork("minigooglenet", 0, 10, {3, 32, 32}, 4);
  ASSERT_TRUE(net.ok());
  InitializeXavier(net->get(), 3);
  kernels::CpuContext ctx;
  kernels::Tensor x({4, 3, 32, 32});
  RandomInput(&x, 8);
  const std::vector<float> labels = {1, 2, 3, 4};
  // Inference is deterministic; training (dropout, batch statistics) is not
  // the same function.
  const double a = *(*net)->Forward(&ctx, x, labels, Mode::kInference);
  const double b = *(*net)->Forward(&ctx, x, labels, Mode::kInference);
  EXPECT_EQ(a, b);
  const double t = *(*net)->Forward(&ctx, x, labels, Mode::kTrain);
  EXPECT_NE(a, t);
  // A training forward moved the moving statistics.
  Param* mean = (*net)->FindParam("conv0_bn_moving_mean");
  ASSERT_NE(mean, nullptr);
  double moved = 0;
  for (float v : mean->value.span()) moved += std::fabs(v);
  EXPECT_GT(moved, 0);
}

// A ReLU after a flatten must not run in place: the flatten is a view of a
// buffer another layer also reads. Here the fc reads concat(relu(x), x)
// (identity pooling, two flattens of it), so its weight gradient for the
// second half must be built from x itself, negative values included.
TEST(NetworksTest, InPlaceNeverOverwritesAViewsBuffer) {
  auto net = std::make_unique<Network>();
  kernels::Pool2dParams p;
  p.kind = kernels::PoolKind::kAvg;
  p.kernel_h = p.kernel_w = p.stride_h = p.stride_w = 1;
  const int pool = net->Add(MakePooling("pool", p));
  const int flat = net->Add(MakeFlatten("flatten"), {pool});
  const int relu =
      net->Add(MakeActivation("relu", kernels::Activation::kRelu), {flat});
  const int flat2 = net->Add(MakeFlatten("flatten2"), {pool});
  const int cat = net->Add(MakeConcat("concat", 2), {relu, flat2});
  net->Add(MakeFullyConnected("fc", 3), {cat});
  ASSERT_TRUE(net->Build({2, 2, 3, 3}, 3).ok());
  InitializeXavier(net.get(), 1);
  kernels::CpuContext ctx;
  kernels::Tensor x({2, 2, 3, 3});
  RandomInput(&x, 3);
  const std::vector<float> labels = {0, 1};
  ASSERT_TRUE(net->Forward(&ctx, x, labels).ok());
  ASSERT_TRUE(net->Backward(&ctx, 1.0f).ok());
  // d loss / d fc_weight[o][18 + j] = sum_n (p[n][o] - [o == label n]) x[n][j].
  const Param* w = net->FindParam("fc_weight");
  ASSERT_NE(w, nullptr);
  ASSERT_EQ(w->value.dim(1), 36);
  const float* probs = net->probabilities().data();
  for (int o = 0; o < 3; ++o) {
    for (int j = 0; j < 18; ++j) {
      double want = 0;
      for (int n = 0; n < 2; ++n) {
        want += (probs[n * 3 + o] - (o == labels[n] ? 1.0 : 0.0)) *
                x.data()[n * 18 + j];
      }
      EXPECT_NEAR(w->grad.data()[o * 36 + 18 + j], want, 1e-5) << o << " " << j;
    }
  }
}

// The plan's forward bytes, computed from the shapes alone, are what a
// forward pass allocates, for networks with views, concatenations and
// in-place layers.
TEST(NetworksTest, PlannedForwardBytesAreWhatForwardAllocates) {
  for (const auto& [name, layers, shape] :
       std::vector<std::tuple<std::string, int, std::vector<int64_t>>>{
           {"lenet", 0, {1, 28, 28}},
           {"mlp", 0, {1, 28, 28}},
           {"minigooglenet", 0, {3, 32, 32}}}) {
    auto net = BuildNetwork(name, layers, 10, shape, 2);
    ASSERT_TRUE(net.ok()) << name;
    const int64_t planned = (*net)->PlannedForwardBytes();
    InitializeXavier(net->get(), 1);
    kernels::CpuContext ctx;
    kernels::Tensor x({2, shape[0], shape[1], shape[2]});
    RandomInput(&x, 1);
    ASSERT_TRUE((*net)->Forward(&ctx, x, {0, 1}).ok()) << name;
    EXPECT_EQ(planned, (*net)->Memory().forward_bytes) << name;
    EXPECT_GT(planned, 0) << name;
  }
}

TEST(NetworksTest, MemoryPlanningSharesBuffers) {
  auto net = BuildNetwork("resnet", 20, 10, {3, 32, 32}, 8);
  ASSERT_TRUE(net.ok());
  InitializeXavier(net->get(), 1);
  kernels::CpuContext ctx;
  kernels::Tensor x({8, 3, 32, 32});
  RandomInput(&x, 1);
  std::vector<float> labels(8, 1.0f);
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE((*net)->Forward(&ctx, x, labels).ok());
    ASSERT_TRUE((*net)->Backward(&ctx, 1.0f).ok());
  }
  const MemoryStats m = (*net)->Memory();
  // Known before the first Forward allocated anything.
  EXPECT_EQ((*net)->PlannedForwardBytes(), m.forward_bytes);
  LOG(INFO) << "resnet-20 batch 8: forward " << m.forward_bytes << " gradients "
            << m.gradient_bytes << " unplanned " << m.unplanned_bytes;
  // ReLUs run in place: the forward keeps fewer buffers than layers.
  EXPECT_LT(m.forward_bytes, m.unplanned_bytes / 2);
  // Gradients live only between their producer's and consumer's backward.
  EXPECT_LT(m.gradient_bytes, m.unplanned_bytes / 8);
  EXPECT_LT(m.forward_bytes + m.gradient_bytes, m.unplanned_bytes * 6 / 10);
}

}  // namespace
}  // namespace nn
}  // namespace pstrain
