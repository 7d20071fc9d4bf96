#include "nn/symbol_import.h"

#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "checkpoint/ndarray_list.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "nn/network.h"

namespace pstrain {
namespace nn {
namespace {

using ::testing::HasSubstr;

// Every layer and parameter of `b` is `a`'s: names, operators, shapes,
// multipliers and the MXNet JSON.
void ExpectSameNetwork(Network& a, Network& b) {
  const auto sa = a.Summary(), sb = b.Summary();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    EXPECT_EQ(sa[i].name, sb[i].name);
    EXPECT_EQ(sa[i].op, sb[i].op) << sa[i].name;
    EXPECT_EQ(sa[i].out_shape, sb[i].out_shape) << sa[i].name;
    EXPECT_EQ(sa[i].params, sb[i].params) << sa[i].name;
    EXPECT_EQ(sa[i].flops, sb[i].flops) << sa[i].name;
  }
  for (int id = 1; id <= a.last(); ++id) {
    EXPECT_EQ(a.inputs(id), b.inputs(id)) << a.layer(id).name();
    EXPECT_EQ(a.layer(id).spec().kind, b.layer(id).spec().kind);
  }
  const auto pa = a.params(), pb = b.params();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_EQ(pa[i]->name, pb[i]->name);
    EXPECT_EQ(pa[i]->value.shape(), pb[i]->value.shape()) << pa[i]->name;
    EXPECT_EQ(pa[i]->aux, pb[i]->aux) << pa[i]->name;
    EXPECT_EQ(pa[i]->lr_mult, pb[i]->lr_mult) << pa[i]->name;
    EXPECT_EQ(pa[i]->wd_mult, pb[i]->wd_mult) << pa[i]->name;
    EXPECT_EQ(pa[i]->fan_in, pb[i]->fan_in) << pa[i]->name;
  }
  EXPECT_EQ(nlohmann::json::parse(a.SymbolJson()),
            nlohmann::json::parse(b.SymbolJson()));
}

// The same weights give the same probabilities, bit for bit.
void ExpectSameOutputs(Network& a, Network& b, uint32_t seed) {
  InitializeXavier(&a, seed);
  for (Param* p : a.params()) {
    Param* q = b.FindParam(p->name);
    ASSERT_NE(q, nullptr) << p->name;
    std::copy(p->value.data(), p->value.data() + p->value.size(),
              q->value.data());
  }
  kernels::Tensor x(a.output_shape(Network::kInput));
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  for (float& v : x.span()) v = nd(rng);
  std::vector<float> labels(x.dim(0), 1.0f);
  kernels::CpuContext ctx;
  for (Mode mode : {Mode::kTrain, Mode::kInference}) {
    auto la = a.Forward(&ctx, x, labels, mode);
    auto lb = b.Forward(&ctx, x, labels, mode);
    ASSERT_TRUE(la.ok() && lb.ok()) << la.status() << lb.status();
    EXPECT_EQ(*la, *lb);
    const auto pa = a.probabilities().span(), pb = b.probabilities().span();
    ASSERT_EQ(pa.size(), pb.size());
    for (size_t i = 0; i < pa.size(); ++i) ASSERT_EQ(pa[i], pb[i]) << i;
  }
}

struct Case {
  std::string network;
  int num_layers;
  std::vector<int64_t> shape;
  bool run;  // Also compare a forward pass (small networks).
};

TEST(SymbolImportTest, EveryBuiltInNetworkRoundTrips) {
  const std::vector<Case> cases = {
      {"mlp", 0, {1, 28, 28}, true},
      {"lenet", 0, {1, 28, 28}, true},
      {"alexnet", 0, {3, 67, 67}, false},
      {"vgg", 11, {3, 32, 32}, false},
      {"vgg", 16, {3, 32, 32}, false},
      {"resnet", 20, {3, 32, 32}, true},
      {"resnet", 18, {3, 64, 64}, false},
      {"resnet", 50, {3, 64, 64}, false},
      {"resnet", 164, {3, 28, 28}, false},
      {"resnet_v1", 20, {3, 32, 32}, true},
      {"resnet_v1", 50, {3, 64, 64}, false},
      {"inception-v3", 0, {3, 75, 75}, false},
      {"minigooglenet", 0, {3, 32, 32}, true},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrCat(c.network, " ", c.num_layers));
    auto built = BuildNetwork(c.network, c.num_layers, 10, c.shape, 2);
    ASSERT_TRUE(built.ok()) << built.status();
    auto imported = ImportSymbol((*built)->SymbolJson(), c.shape, 2);
    ASSERT_TRUE(imported.ok()) << imported.status();
    ExpectSameNetwork(**built, **imported);
    if (c.run) ExpectSameOutputs(**built, **imported, 7);
  }
}

// What MXNet's Gluon export of a LeNet (../shared/testdata/mxnet) holds:
// layers named "..._fwd" whose parameters are named without the suffix,
// FullyConnected as the output (no SoftmaxOutput), and its weights.
TEST(SymbolImportTest, ImportsAndRunsMxnetsOwnLenetExport) {
  const char* shared = std::getenv("PSTRAIN_SHARED_DIR");
  const std::string dir = shared ? absl::StrCat(shared, "/testdata/mxnet") : "";
  if (!shared || !std::ifstream(dir + "/lenet-symbol.json")) {
    GTEST_SKIP() << "MXNet test data not found (PSTRAIN_SHARED_DIR="
                 << (shared ? shared : "unset")
                 << "); compatibility test skipped";
  }
  auto net = ImportSymbolFile(dir + "/lenet-symbol.json", {1, 28, 28}, 4);
  ASSERT_TRUE(net.ok()) << net.status();
  Network& n = **net;
  ASSERT_EQ(n.last(), 10);
  EXPECT_EQ(n.layer(1).name(), "hybridsequential0_conv0_fwd");
  EXPECT_EQ(n.layer(1).spec().conv.num_filter, 5);
  EXPECT_EQ(n.num_classes(), 10);
  EXPECT_EQ(n.output_shape(9), (std::vector<int64_t>{4, 32}));
  // Gluon writes __wd_mult__ 1.0 on every variable, biases included, and
  // MXNet's optimizer follows the symbol.
  EXPECT_EQ(n.FindParam("hybridsequential0_dense1_bias")->wd_mult, 1.0f);
  auto arrays = checkpoint::ReadNDArrayListFile(dir + "/lenet-0001.params");
  ASSERT_TRUE(arrays.ok()) << arrays.status();
  ASSERT_EQ(arrays->size(), n.params().size());
  for (const auto& a : *arrays) {
    const std::string name = a.name.substr(a.name.find(':') + 1);
    Param* p = n.FindParam(name);
    ASSERT_NE(p, nullptr) << name;
    ASSERT_EQ(p->value.shape(), a.shape) << name;
    auto v = a.ToFloats();
    ASSERT_TRUE(v.ok());
    std::copy(v->begin(), v->end(), p->value.data());
  }
  kernels::Tensor x({4, 1, 28, 28});
  for (int64_t i = 0; i < x.size(); ++i) x.data()[i] = (i % 29) / 29.0f;
  kernels::CpuContext ctx;
  auto loss = n.Forward(&ctx, x, {0, 1, 2, 3}, Mode::kInference);
  ASSERT_TRUE(loss.ok()) << loss.status();
  EXPECT_TRUE(std::isfinite(*loss));
  for (int64_t r = 0; r < 4; ++r) {
    double sum = 0;
    for (int64_t k = 0; k < 10; ++k)
      sum += n.probabilities().data()[r * 10 + k];
    EXPECT_NEAR(sum, 1.0, 1e-5);
  }
  // Exported again, it is the same graph with MXNet's names and attributes.
  const nlohmann::json again = nlohmann::json::parse(n.SymbolJson());
  std::ifstream in(dir + "/lenet-symbol.json");
  const nlohmann::json orig = nlohmann::json::parse(in);
  for (size_t i = 0; i < orig["nodes"].size(); ++i) {
    const auto& o = orig["nodes"][i];
    const auto& e = again["nodes"][i];
    EXPECT_EQ(e["name"], o["name"]) << i;
    EXPECT_EQ(e["op"], o["op"]) << i;
    EXPECT_EQ(e["inputs"], o["inputs"]) << i;
    if (o["op"] != "null") {
      EXPECT_EQ(e.value("attrs", nlohmann::json()),
                o.value("attrs", nlohmann::json()))
          << i;
    }
  }
}

// A small symbol in MXNet's JSON, written the way old and new MXNet
// versions name things; `body` is the node list after "data".
std::string Symbol(const std::string& body, int head) {
  return absl::StrCat(
      R"({"nodes": [{"op": "null", "name": "data", "inputs": []},)", body,
      R"(], "arg_nodes": [0], "heads": [[)", head, R"(, 0, 0]]})");
}

constexpr char kConvFc[] = R"j(
  {"op": "null", "name": "c_weight", "inputs": []},
  {"op": "Convolution", "name": "c", "attrs": {"kernel": "(3,3)",
   "num_filter": "4", "no_bias": "True", "pad": "(1, 1)",
   "workspace": "512"}, "inputs": [[0, 0, 0], [1, 0, 0]]},
  {"op": "null", "name": "bn_gamma", "attrs": {"__wd_mult__": "0.5"},
   "inputs": []},
  {"op": "null", "name": "bn_beta", "inputs": []},
  {"op": "null", "name": "bn_moving_mean", "inputs": []},
  {"op": "null", "name": "bn_moving_var", "inputs": []},
  {"op": "BatchNorm", "name": "bn", "attr": {"eps": "2e-05"},
   "inputs": [[2, 0, 0], [3, 0, 0], [4, 0, 0], [5, 0, 0], [6, 0, 0]]},
  {"op": "relu", "name": "r", "inputs": [[7, 0, 0]]},
  {"op": "_Plus", "name": "_plus0", "inputs": [[8, 0, 0], [2, 0, 0]]},
  {"op": "flatten", "name": "f", "inputs": [[9, 0, 0]]},
  {"op": "null", "name": "fc_weight", "attrs": {"__lr_mult__": "2"},
   "inputs": []},
  {"op": "null", "name": "fc_bias", "inputs": []},
  {"op": "FullyConnected", "name": "fc", "param": {"num_hidden": "3"},
   "inputs": [[10, 0, 0], [11, 0, 0], [12, 0, 0]]},
  {"op": "null", "name": "softmax_label", "inputs": []},
  {"op": "SoftmaxOutput", "name": "softmax", "inputs": [[13, 0, 0], [14, 0, 0]]}
)j";

TEST(SymbolImportTest, OldNamesDefaultsAndMultipliers) {
  auto net = ImportSymbol(Symbol(kConvFc, 15), {2, 5, 5}, 3);
  ASSERT_TRUE(net.ok()) << net.status();
  Network& n = **net;
  ASSERT_EQ(n.last(), 6);
  EXPECT_EQ(n.layer(1).spec().conv.pad_h, 1);
  EXPECT_FALSE(n.layer(1).spec().bias);
  // MXNet's BatchNorm defaults: fix_gamma True, momentum 0.9.
  EXPECT_TRUE(n.layer(2).spec().bn.fix_gamma);
  EXPECT_FLOAT_EQ(n.layer(2).spec().bn.eps, 2e-5f);
  EXPECT_EQ(n.layer(3).spec().kind, LayerSpec::kAct);
  EXPECT_EQ(n.layer(4).spec().kind, LayerSpec::kAdd);
  EXPECT_EQ(n.inputs(4), (std::vector<int>{3, 1}));
  EXPECT_EQ(n.num_classes(), 3);
  EXPECT_EQ(n.FindParam("bn_gamma")->wd_mult, 0.5f);
  EXPECT_EQ(n.FindParam("bn_beta")->wd_mult, 0.0f);
  EXPECT_EQ(n.FindParam("fc_weight")->lr_mult, 2.0f);
  EXPECT_EQ(n.FindParam("c_weight")->value.shape(),
            (std::vector<int64_t>{4, 2, 3, 3}));
  EXPECT_TRUE(n.FindParam("bn_moving_var")->aux);
  // The node keeps the symbol's operator name and attributes.
  const nlohmann::json j = nlohmann::json::parse(n.SymbolJson());
  EXPECT_EQ(j["nodes"][2]["attrs"]["workspace"], "512");
  EXPECT_EQ(j["nodes"][9]["op"], "_Plus");
  EXPECT_EQ(j["nodes"][8]["op"], "relu");
}

TEST(SymbolImportTest, FineTuningReplacesTheClassifier) {
  ImportOptions o;
  o.num_classes = 7;
  auto net = ImportSymbol(Symbol(kConvFc, 15), {2, 5, 5}, 1, o);
  ASSERT_TRUE(net.ok()) << net.status();
  EXPECT_EQ((*net)->num_classes(), 7);
  EXPECT_EQ((*net)->FindParam("fc_weight")->value.shape(),
            (std::vector<int64_t>{7, 100}));
  // Only a FullyConnected output can be replaced.
  const std::string relu_head = Symbol(
      R"({"op": "flatten", "name": "f", "inputs": [[0, 0, 0]]},
         {"op": "relu", "name": "r", "inputs": [[1, 0, 0]]})",
      2);
  EXPECT_TRUE(ImportSymbol(relu_head, {1, 2, 2}, 1).ok());
  auto bad = ImportSymbol(relu_head, {1, 2, 2}, 1, o);
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("only a FullyConnected output can be replaced"));
}

std::string Err(const std::string& json,
                std::vector<int64_t> shape = {2, 5, 5}) {
  auto net = ImportSymbol(json, shape, 1);
  EXPECT_FALSE(net.ok());
  return std::string(net.status().message());
}

// kConvFc with `replace` applied, as a whole symbol.
std::string Fc(
    std::initializer_list<std::pair<absl::string_view, absl::string_view>>
        replace) {
  return Symbol(absl::StrReplaceAll(kConvFc, replace), 15);
}

TEST(SymbolImportTest, ErrorsNameTheNodeOperatorAndAttribute) {
  EXPECT_THAT(Err(Fc({{"\"relu\"", "\"LeakyReLU\""}})),
              HasSubstr("symbol node 8 \"r\" (LeakyReLU): operator LeakyReLU "
                        "is not supported"));
  EXPECT_THAT(Err(Fc({{"\"workspace\"", "\"layout\""}})),
              HasSubstr("symbol node 2 \"c\" (Convolution): attribute "
                        "layout=\"512\": pstrain runs NCHW only"));
  EXPECT_THAT(Err(Fc({{"\"workspace\"", "\"foo\""}})),
              HasSubstr("attribute foo=\"512\": not supported by pstrain"));
  EXPECT_THAT(Err(Fc({{"(3,3)", "(3,3,3)"}})),
              HasSubstr("kernel=\"(3,3,3)\": pstrain runs 2-D operators"));
  EXPECT_THAT(
      Err(Fc({{R"("eps": "2e-05")", R"("use_global_stats": "True")"}})),
      HasSubstr("\"bn\" (BatchNorm): attribute use_global_stats=\"True\""));
  EXPECT_THAT(Err(Fc({{R"("num_hidden": "3")",
                       R"("num_hidden": "3", "no_bias": "1")"}})),
              HasSubstr("\"fc\" (FullyConnected): attribute no_bias=\"1\""));
  EXPECT_THAT(Err(Symbol(R"j({"op": "Pooling", "name": "p", "attrs":
      {"kernel": "(2, 2)", "pooling_convention": "full"},
      "inputs": [[0, 0, 0]]})j",
                         1)),
              HasSubstr("pooling_convention=\"full\""));
  // broadcast_add on unequal shapes would broadcast: refused by shape.
  EXPECT_FALSE(ImportSymbol(Symbol(R"j(
      {"op": "Pooling", "name": "p", "attrs": {"kernel": "(2, 2)",
       "stride": "(2, 2)"}, "inputs": [[0, 0, 0]]},
      {"op": "broadcast_add", "name": "a", "inputs": [[0, 0, 0], [1, 0, 0]]},
      {"op": "flatten", "name": "f", "inputs": [[2, 0, 0]]})j",
                                   3),
                            {1, 4, 4}, 1)
                   .ok());
  EXPECT_THAT(Err("{\"nodes\": ["), HasSubstr("not valid JSON"));
  EXPECT_THAT(Err(R"({"nodes": [], "heads": []})"),
              HasSubstr("exactly one output"));
  EXPECT_THAT(Err(Symbol(R"({"op": "null", "name": "x", "inputs": []},
      {"op": "elemwise_add", "name": "a", "inputs": [[0, 0, 0], [1, 0, 0]]},
      {"op": "flatten", "name": "f", "inputs": [[2, 0, 0]]})",
                         3)),
              HasSubstr("pstrain networks take one input"));
  EXPECT_THAT(Err(Symbol(R"({"op": "BatchNorm", "name": "b",
      "inputs": [[0, 1, 0]]})",
                         1)),
              HasSubstr("reads output 1 of node 0"));
  auto missing = ImportSymbolFile("/no/such/lenet-symbol.json", {1, 2, 2}, 1);
  EXPECT_THAT(std::string(missing.status().message()),
              HasSubstr("/no/such/lenet-symbol.json"));
}

}  // namespace
}  // namespace nn
}  // namespace pstrain
