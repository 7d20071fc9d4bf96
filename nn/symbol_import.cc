#include "nn/symbol_import.h"

#include <map>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "glog/logging.h"
#include "nlohmann/json.hpp"
#include "util/file.h"
#include "util/status.h"

namespace pstrain {
namespace nn {
namespace {

using Json = nlohmann::json;
using Attrs = Network::SymbolAttrs;

// One node of the symbol, as read.
struct SymNode {
  int index = 0;
  std::string op;
  std::string name;
  Attrs attrs;  // Operator attributes (the symbol's order).
  std::map<std::string, std::string> attr_map;
  std::vector<int> inputs;  // Node indices (output 0 of each).
};

// A node's attributes in the form the error messages and parsers use.
class NodeAttrs {
 public:
  explicit NodeAttrs(const SymNode& n) : n_(n) {}

  std::string Where() const {
    return absl::StrCat("symbol node ", n_.index, " \"", n_.name, "\" (", n_.op,
                        ")");
  }
  absl::Status Bad(const std::string& key, const std::string& why) const {
    auto it = n_.attr_map.find(key);
    return absl::InvalidArgumentError(absl::StrCat(
        Where(), ": attribute ", key,
        it == n_.attr_map.end() ? "" : absl::StrCat("=\"", it->second, "\""),
        ": ", why));
  }
  bool Has(const std::string& key) const { return n_.attr_map.count(key); }
  std::string Get(const std::string& key, const std::string& dflt) const {
    auto it = n_.attr_map.find(key);
    return it == n_.attr_map.end() ? dflt : it->second;
  }

  absl::StatusOr<bool> Bool(const std::string& key, bool dflt) const {
    if (!Has(key)) return dflt;
    const std::string v = absl::AsciiStrToLower(Get(key, ""));
    if (v == "true" || v == "1") return true;
    if (v == "false" || v == "0") return false;
    return Bad(key, "not a boolean");
  }
  absl::StatusOr<double> Number(const std::string& key, double dflt) const {
    if (!Has(key)) return dflt;
    double v;
    if (!absl::SimpleAtod(Get(key, ""), &v)) return Bad(key, "not a number");
    return v;
  }
  absl::StatusOr<int> Int(const std::string& key, int dflt) const {
    if (!Has(key)) return dflt;
    int v;
    if (!absl::SimpleAtoi(Get(key, ""), &v)) return Bad(key, "not an integer");
    return v;
  }
  // "(a, b)" (or "(a,b)", "[a, b]"): exactly two integers; `dflt` when
  // absent.
  absl::StatusOr<std::pair<int, int>> Pair(const std::string& key,
                                           std::pair<int, int> dflt) const {
    if (!Has(key)) return dflt;
    std::string v(absl::StripAsciiWhitespace(Get(key, "")));
    if (v.size() >= 2 && (v.front() == '(' || v.front() == '[')) {
      v = v.substr(1, v.size() - 2);
    }
    std::vector<int> xs;
    for (absl::string_view part : absl::StrSplit(v, ',', absl::SkipEmpty())) {
      int x;
      if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &x))
        return Bad(key, "not a tuple of integers");
      xs.push_back(x);
    }
    if (xs.size() != 2)
      return Bad(key, "pstrain runs 2-D operators: needs two values");
    return std::make_pair(xs[0], xs[1]);
  }
  // Fails unless the attribute is absent or one of `allowed` (lower case).
  absl::Status OneOf(const std::string& key,
                     const std::vector<std::string>& allowed,
                     const std::string& why) const {
    if (!Has(key)) return absl::OkStatus();
    const std::string v = absl::AsciiStrToLower(Get(key, ""));
    for (const auto& a : allowed) {
      if (v == a) return absl::OkStatus();
    }
    return Bad(key, why);
  }
  // Fails for any attribute not in `known` (annotations "__x__" pass).
  absl::Status OnlyKnown(const std::set<std::string>& known) const {
    for (const auto& [k, v] : n_.attrs) {
      if (known.count(k) || (absl::StartsWith(k, "__") && k.size() > 4 &&
                             absl::EndsWith(k, "__"))) {
        continue;
      }
      return Bad(k, "not supported by pstrain");
    }
    return absl::OkStatus();
  }

 private:
  const SymNode& n_;
};

// Attributes that change how an operator runs on a device, never what it
// computes.
const std::set<std::string>& Ignorable() {
  static const auto* s = new std::set<std::string>{"workspace", "cudnn_tune",
                                                   "cudnn_off", "ctx_group"};
  return *s;
}

std::set<std::string> Known(std::initializer_list<std::string> keys) {
  std::set<std::string> s = Ignorable();
  s.insert(keys);
  return s;
}

// Reads one node's attributes: "attrs" (MXNet >= 0.9), or the older "param"
// and "attr" objects. Values are strings; anything else is written as JSON.
absl::Status ReadAttrs(const Json& j, SymNode* n) {
  for (const char* key : {"param", "attr", "attrs"}) {
    if (!j.contains(key)) continue;
    const Json& a = j[key];
    if (!a.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat("symbol node ", n->index, " \"", n->name, "\": \"", key,
                       "\" is not an object"));
    }
    for (auto it = a.begin(); it != a.end(); ++it) {
      const std::string v =
          it.value().is_string() ? it.value().get<std::string>() : it->dump();
      if (n->attr_map.emplace(it.key(), v).second) {
        n->attrs.emplace_back(it.key(), v);
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<SymNode>> ReadNodes(const Json& root,
                                               int* head_out) {
  if (!root.is_object() || !root.contains("nodes") ||
      !root["nodes"].is_array()) {
    return absl::InvalidArgumentError(
        "not an MXNet symbol: no \"nodes\" array");
  }
  const Json& nodes = root["nodes"];
  std::vector<SymNode> out;
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Json& j = nodes[i];
    SymNode n;
    n.index = static_cast<int>(i);
    if (!j.is_object() || !j.contains("op") || !j["op"].is_string() ||
        !j.contains("name") || !j["name"].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "symbol node ", i, ": needs string \"op\" and \"name\""));
    }
    n.op = j["op"].get<std::string>();
    n.name = j["name"].get<std::string>();
    PSTRAIN_RETURN_IF_ERROR(ReadAttrs(j, &n));
    if (j.contains("inputs")) {
      if (!j["inputs"].is_array()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "symbol node ", i, " \"", n.name, "\": \"inputs\" is not a list"));
      }
      for (const Json& e : j["inputs"]) {
        if (!e.is_array() || e.size() < 2 || !e[0].is_number_integer() ||
            !e[1].is_number_integer()) {
          return absl::InvalidArgumentError(
              absl::StrCat("symbol node ", i, " \"", n.name,
                           "\": an input is not [node, output, version]"));
        }
        const int src = e[0].get<int>();
        if (src < 0 || src >= static_cast<int>(i)) {
          return absl::InvalidArgumentError(
              absl::StrCat("symbol node ", i, " \"", n.name, "\": input node ",
                           src, " is not an earlier node"));
        }
        if (e[1].get<int>() != 0) {
          return absl::InvalidArgumentError(
              absl::StrCat("symbol node ", i, " \"", n.name, "\" (", n.op,
                           "): reads output ", e[1].get<int>(), " of node ",
                           src, " \"", nodes[src].value("name", ""),
                           "\"; pstrain's layers have one output"));
        }
        n.inputs.push_back(src);
      }
    }
    out.push_back(std::move(n));
  }
  if (!root.contains("heads") || !root["heads"].is_array() ||
      root["heads"].size() != 1 || !root["heads"][0].is_array() ||
      root["heads"][0].empty() || !root["heads"][0][0].is_number_integer()) {
    return absl::InvalidArgumentError(
        "the symbol must have exactly one output (\"heads\"); pstrain "
        "networks end in one classifier");
  }
  *head_out = root["heads"][0][0].get<int>();
  if (*head_out < 0 || *head_out >= static_cast<int>(out.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"heads\" names node ", *head_out, ", which is absent"));
  }
  return out;
}

// Imports node by node into a Network.
class Importer {
 public:
  Importer(const std::vector<SymNode>& nodes, const ImportOptions& options)
      : nodes_(nodes), options_(options), net_(std::make_unique<Network>()) {}

  absl::StatusOr<std::unique_ptr<Network>> Run(
      int head, const std::vector<int64_t>& image_shape, int batch) {
    // The loss at the head is the one every pstrain network has.
    if (nodes_[head].op == "SoftmaxOutput") {
      PSTRAIN_RETURN_IF_ERROR(CheckSoftmaxOutput(nodes_[head]));
      head = nodes_[head].inputs[0];
    }
    if (nodes_[head].op == "null") {
      return absl::InvalidArgumentError("the symbol has no operators");
    }
    std::vector<bool> needed(nodes_.size(), false);
    needed[head] = true;
    for (int i = head; i >= 0; --i) {
      if (!needed[i]) continue;
      for (int j : nodes_[i].inputs) needed[j] = true;
    }
    node_id_.assign(nodes_.size(), -1);
    for (int i = 0; i <= head; ++i) {
      if (!needed[i] || nodes_[i].op == "null") continue;
      PSTRAIN_RETURN_IF_ERROR(AddNode(nodes_[i], i == head));
    }
    if (data_ < 0) {
      return absl::InvalidArgumentError("the symbol reads no data variable");
    }
    std::vector<int64_t> shape = {batch};
    shape.insert(shape.end(), image_shape.begin(), image_shape.end());
    // The class count is the last layer's width: a FullyConnected says it;
    // other layers are built once to find it.
    int classes = last_fc_hidden_;
    if (classes <= 0) {
      absl::Status probe = net_->Build(shape, 0);
      const auto& out = net_->output_shape(net_->last());
      if (out.size() != 2) return probe;
      classes = static_cast<int>(out[1]);
    }
    if (options_.num_classes > 0 && options_.num_classes != classes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--num_classes ", options_.num_classes, ": the symbol's output \"",
          nodes_[head].name, "\" (", nodes_[head].op, ") has ", classes,
          " classes, and only a FullyConnected output can be replaced"));
    }
    PSTRAIN_RETURN_IF_ERROR(net_->Build(shape, classes));
    PSTRAIN_RETURN_IF_ERROR(ApplyMultipliers());
    return std::move(net_);
  }

 private:
  absl::Status CheckSoftmaxOutput(const SymNode& n) {
    NodeAttrs a(n);
    PSTRAIN_RETURN_IF_ERROR(a.OnlyKnown(
        Known({"grad_scale", "normalization", "use_ignore", "ignore_label",
               "multi_output", "preserve_shape", "out_grad", "smooth_alpha"})));
    PSTRAIN_ASSIGN_OR_RETURN(double scale, a.Number("grad_scale", 1.0));
    if (scale != 1.0) return a.Bad("grad_scale", "only 1 is supported");
    PSTRAIN_RETURN_IF_ERROR(a.OneOf("normalization", {"null"},
                                    "only \"null\" (MXNet's default; the "
                                    "optimizer's rescale_grad divides by "
                                    "the batch) is supported"));
    for (const char* k :
         {"use_ignore", "multi_output", "preserve_shape", "out_grad"}) {
      PSTRAIN_ASSIGN_OR_RETURN(bool on, a.Bool(k, false));
      if (on) return a.Bad(k, "only False is supported");
    }
    PSTRAIN_ASSIGN_OR_RETURN(double smooth, a.Number("smooth_alpha", 0.0));
    if (smooth != 0.0) return a.Bad("smooth_alpha", "only 0 is supported");
    if (n.inputs.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(a.Where(), ": has no data input"));
    }
    return absl::OkStatus();
  }

  // The network node for the data input `i` of symbol node `n`.
  absl::StatusOr<int> DataInput(const SymNode& n, int i) {
    const int src = n.inputs[i];
    if (nodes_[src].op != "null") {
      if (node_id_[src] < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(NodeAttrs(n).Where(), ": reads node ", src, " \"",
                         nodes_[src].name, "\", which was not imported"));
      }
      return node_id_[src];
    }
    if (data_ < 0) data_ = src;
    if (data_ != src) {
      return absl::InvalidArgumentError(absl::StrCat(
          NodeAttrs(n).Where(), ": reads variable \"", nodes_[src].name,
          "\" as data, but \"", nodes_[data_].name,
          "\" is the input already; pstrain networks take one input"));
    }
    return static_cast<int>(Network::kInput);
  }

  // The variables `n` reads after its `data_inputs` data inputs: its
  // parameters, which must be variables, `count` of them.
  absl::StatusOr<std::vector<std::string>> ParamInputs(const SymNode& n,
                                                       int data_inputs,
                                                       size_t count) {
    const size_t have = n.inputs.size() - data_inputs;
    if (n.inputs.size() < static_cast<size_t>(data_inputs) || have != count) {
      return absl::InvalidArgumentError(
          absl::StrCat(NodeAttrs(n).Where(), ": has ", n.inputs.size(),
                       " inputs; expected ", data_inputs + count));
    }
    std::vector<std::string> names;
    for (size_t i = data_inputs; i < n.inputs.size(); ++i) {
      const SymNode& v = nodes_[n.inputs[i]];
      if (v.op != "null") {
        return absl::InvalidArgumentError(absl::StrCat(
            NodeAttrs(n).Where(), ": parameter input ", i, " is node \"",
            v.name, "\" (", v.op, "), not a variable"));
      }
      param_vars_.push_back(n.inputs[i]);
      names.push_back(v.name);
    }
    return names;
  }

  absl::Status AddNode(const SymNode& n, bool is_head) {
    NodeAttrs a(n);
    const std::string& op = n.op;
    std::unique_ptr<Layer> layer;
    int data_inputs = 1;
    size_t num_params = 0;
    if (op == "Convolution") {
      PSTRAIN_RETURN_IF_ERROR(
          a.OnlyKnown(Known({"kernel", "stride", "pad", "dilate", "num_filter",
                             "num_group", "no_bias", "layout"})));
      PSTRAIN_RETURN_IF_ERROR(
          a.OneOf("layout", {"nchw", "none"}, "pstrain runs NCHW only"));
      if (!a.Has("kernel")) return a.Bad("kernel", "is required");
      kernels::Conv2dParams c;
      PSTRAIN_ASSIGN_OR_RETURN(auto k, a.Pair("kernel", {1, 1}));
      PSTRAIN_ASSIGN_OR_RETURN(auto s, a.Pair("stride", {1, 1}));
      PSTRAIN_ASSIGN_OR_RETURN(auto p, a.Pair("pad", {0, 0}));
      PSTRAIN_ASSIGN_OR_RETURN(auto d, a.Pair("dilate", {1, 1}));
      PSTRAIN_ASSIGN_OR_RETURN(c.num_filter, a.Int("num_filter", 0));
      PSTRAIN_ASSIGN_OR_RETURN(c.groups, a.Int("num_group", 1));
      PSTRAIN_ASSIGN_OR_RETURN(bool no_bias, a.Bool("no_bias", false));
      std::tie(c.kernel_h, c.kernel_w) = k;
      std::tie(c.stride_h, c.stride_w) = s;
      std::tie(c.pad_h, c.pad_w) = p;
      std::tie(c.dilation_h, c.dilation_w) = d;
      if (c.num_filter < 1) return a.Bad("num_filter", "must be positive");
      if (c.groups < 1) return a.Bad("num_group", "must be positive");
      for (int v : {c.kernel_h, c.kernel_w, c.stride_h, c.stride_w,
                    c.dilation_h, c.dilation_w}) {
        if (v < 1) return a.Bad("kernel", "sizes must be positive");
      }
      if (c.pad_h < 0 || c.pad_w < 0) return a.Bad("pad", "is negative");
      layer = MakeConvolution(n.name, c, !no_bias);
      num_params = no_bias ? 1 : 2;
    } else if (op == "Pooling") {
      PSTRAIN_RETURN_IF_ERROR(a.OnlyKnown(
          Known({"kernel", "stride", "pad", "pool_type", "global_pool",
                 "pooling_convention", "count_include_pad", "layout"})));
      PSTRAIN_RETURN_IF_ERROR(
          a.OneOf("layout", {"nchw", "none"}, "pstrain runs NCHW only"));
      PSTRAIN_RETURN_IF_ERROR(
          a.OneOf("pool_type", {"max", "avg"}, "pstrain pools max or avg"));
      PSTRAIN_RETURN_IF_ERROR(a.OneOf("pooling_convention", {"valid"},
                                      "pstrain computes \"valid\" (floor) "
                                      "output sizes only"));
      PSTRAIN_ASSIGN_OR_RETURN(bool include_pad,
                               a.Bool("count_include_pad", true));
      if (!include_pad) {
        return a.Bad("count_include_pad",
                     "pstrain's average pooling counts the padding");
      }
      kernels::Pool2dParams p;
      p.kind = absl::AsciiStrToLower(a.Get("pool_type", "max")) == "avg"
                   ? kernels::PoolKind::kAvg
                   : kernels::PoolKind::kMax;
      PSTRAIN_ASSIGN_OR_RETURN(p.global, a.Bool("global_pool", false));
      if (!p.global && !a.Has("kernel")) {
        return a.Bad("kernel", "is required without global_pool");
      }
      PSTRAIN_ASSIGN_OR_RETURN(auto k, a.Pair("kernel", {1, 1}));
      PSTRAIN_ASSIGN_OR_RETURN(auto s, a.Pair("stride", {1, 1}));
      PSTRAIN_ASSIGN_OR_RETURN(auto pd, a.Pair("pad", {0, 0}));
      std::tie(p.kernel_h, p.kernel_w) = k;
      std::tie(p.stride_h, p.stride_w) = s;
      std::tie(p.pad_h, p.pad_w) = pd;
      if (!p.global && (p.kernel_h < 1 || p.kernel_w < 1 || p.stride_h < 1 ||
                        p.stride_w < 1)) {
        return a.Bad("kernel", "kernel and stride must be positive");
      }
      if (p.pad_h < 0 || p.pad_w < 0) return a.Bad("pad", "is negative");
      layer = MakePooling(n.name, p);
    } else if (op == "FullyConnected") {
      PSTRAIN_RETURN_IF_ERROR(
          a.OnlyKnown(Known({"num_hidden", "no_bias", "flatten"})));
      PSTRAIN_ASSIGN_OR_RETURN(int hidden, a.Int("num_hidden", 0));
      if (hidden < 1) return a.Bad("num_hidden", "must be positive");
      PSTRAIN_ASSIGN_OR_RETURN(bool no_bias, a.Bool("no_bias", false));
      if (no_bias) {
        return a.Bad("no_bias", "pstrain's FullyConnected has a bias");
      }
      PSTRAIN_ASSIGN_OR_RETURN(bool flatten, a.Bool("flatten", true));
      // flatten=False on a 2-D input computes the same; on more axes it
      // would not, and Build() cannot tell: refuse it.
      if (!flatten) {
        return a.Bad("flatten", "only True (the default) is supported");
      }
      if (is_head && options_.num_classes > 0 &&
          options_.num_classes != hidden) {
        hidden = options_.num_classes;  // Fine-tuning: a fresh classifier.
      }
      last_fc_hidden_ = is_head ? hidden : 0;
      layer = MakeFullyConnected(n.name, hidden);
      num_params = 2;
    } else if (op == "Activation" || op == "relu" || op == "sigmoid" ||
               op == "tanh") {
      std::string type = op;
      if (op == "Activation") {
        PSTRAIN_RETURN_IF_ERROR(a.OnlyKnown(Known({"act_type"})));
        if (!a.Has("act_type")) return a.Bad("act_type", "is required");
        type = a.Get("act_type", "");
      } else {
        PSTRAIN_RETURN_IF_ERROR(a.OnlyKnown(Known({})));
      }
      kernels::Activation act;
      if (type == "relu") {
        act = kernels::Activation::kRelu;
      } else if (type == "sigmoid") {
        act = kernels::Activation::kSigmoid;
      } else if (type == "tanh") {
        act = kernels::Activation::kTanh;
      } else {
        return a.Bad("act_type", "pstrain has relu, sigmoid and tanh");
      }
      layer = MakeActivation(n.name, act);
    } else if (op == "Flatten" || op == "flatten") {
      PSTRAIN_RETURN_IF_ERROR(a.OnlyKnown(Known({})));
      layer = MakeFlatten(n.name);
    } else if (op == "BatchNorm") {
      PSTRAIN_RETURN_IF_ERROR(a.OnlyKnown(Known(
          {"eps", "momentum", "fix_gamma", "use_global_stats",
           "output_mean_var", "axis", "min_calib_range", "max_calib_range"})));
      kernels::BatchNormParams p;
      PSTRAIN_ASSIGN_OR_RETURN(double eps, a.Number("eps", 1e-3));
      PSTRAIN_ASSIGN_OR_RETURN(double mom, a.Number("momentum", 0.9));
      // MXNet's BatchNorm fixes gamma unless told otherwise.
      PSTRAIN_ASSIGN_OR_RETURN(p.fix_gamma, a.Bool("fix_gamma", true));
      PSTRAIN_ASSIGN_OR_RETURN(bool global, a.Bool("use_global_stats", false));
      PSTRAIN_ASSIGN_OR_RETURN(bool mean_var, a.Bool("output_mean_var", false));
      PSTRAIN_ASSIGN_OR_RETURN(int axis, a.Int("axis", 1));
      if (global) return a.Bad("use_global_stats", "only False is supported");
      if (mean_var) return a.Bad("output_mean_var", "only False is supported");
      if (axis != 1) return a.Bad("axis", "pstrain normalizes channels (1)");
      if (a.Has("min_calib_range") || a.Has("max_calib_range")) {
        return a.Bad(
            a.Has("min_calib_range") ? "min_calib_range" : "max_calib_range",
            "quantized models are not supported");
      }
      if (!(eps > 0)) return a.Bad("eps", "must be positive");
      p.eps = static_cast<float>(eps);
      p.momentum = static_cast<float>(mom);
      layer = MakeBatchNorm(n.name, p);
      num_params = 4;
    } else if (op == "LRN") {
      PSTRAIN_RETURN_IF_ERROR(
          a.OnlyKnown(Known({"nsize", "alpha", "beta", "knorm"})));
      kernels::LrnParams p;
      if (!a.Has("nsize")) return a.Bad("nsize", "is required");
      PSTRAIN_ASSIGN_OR_RETURN(p.nsize, a.Int("nsize", 5));
      PSTRAIN_ASSIGN_OR_RETURN(double alpha, a.Number("alpha", 1e-4));
      PSTRAIN_ASSIGN_OR_RETURN(double beta, a.Number("beta", 0.75));
      PSTRAIN_ASSIGN_OR_RETURN(double knorm, a.Number("knorm", 2.0));
      if (p.nsize < 1) return a.Bad("nsize", "must be positive");
      p.alpha = static_cast<float>(alpha);
      p.beta = static_cast<float>(beta);
      p.knorm = static_cast<float>(knorm);
      layer = MakeLrn(n.name, p);
    } else if (op == "Dropout") {
      PSTRAIN_RETURN_IF_ERROR(a.OnlyKnown(Known({"p", "mode", "axes"})));
      PSTRAIN_RETURN_IF_ERROR(
          a.OneOf("mode", {"training"},
                  "only \"training\" (dropout while training) is supported"));
      if (a.Has("axes") && a.Get("axes", "") != "()") {
        return a.Bad("axes", "only () is supported");
      }
      PSTRAIN_ASSIGN_OR_RETURN(double p, a.Number("p", 0.5));
      if (p < 0 || p >= 1) return a.Bad("p", "must be in [0, 1)");
      layer = MakeDropout(n.name, static_cast<float>(p),
                          options_.seed + ++dropouts_);
    } else if (op == "Concat" || op == "concat") {
      PSTRAIN_RETURN_IF_ERROR(a.OnlyKnown(Known({"dim", "num_args"})));
      PSTRAIN_ASSIGN_OR_RETURN(int dim, a.Int("dim", 1));
      if (dim != 1) return a.Bad("dim", "pstrain concatenates channels (1)");
      data_inputs = static_cast<int>(n.inputs.size());
      PSTRAIN_ASSIGN_OR_RETURN(int num_args, a.Int("num_args", data_inputs));
      if (num_args != data_inputs || data_inputs < 1) {
        return a.Bad("num_args", absl::StrCat("does not match the ",
                                              data_inputs, " inputs"));
      }
      layer = MakeConcat(n.name, data_inputs);
    } else if (op == "elemwise_add" || op == "_Plus" || op == "_plus" ||
               op == "broadcast_add" || op == "ElementWiseSum" ||
               op == "add_n" || op == "_add") {
      PSTRAIN_RETURN_IF_ERROR(a.OnlyKnown(Known({"num_args"})));
      if (n.inputs.size() != 2) {
        return absl::InvalidArgumentError(
            absl::StrCat(a.Where(), ": adds ", n.inputs.size(),
                         " inputs; pstrain adds two"));
      }
      // broadcast_add of unequal shapes fails in Build() (AddLayer checks
      // that the shapes are equal), so no broadcast is approximated.
      data_inputs = 2;
      layer = MakeAdd(n.name);
    } else if (op == "_copy" || op == "identity") {
      PSTRAIN_RETURN_IF_ERROR(a.OnlyKnown(Known({})));
      layer = MakeIdentity(n.name);
    } else if (op == "SoftmaxOutput") {
      return absl::InvalidArgumentError(absl::StrCat(
          a.Where(), ": SoftmaxOutput must be the symbol's output"));
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          a.Where(), ": operator ", op, " is not supported by pstrain"));
    }
    if (n.inputs.size() < static_cast<size_t>(data_inputs)) {
      return absl::InvalidArgumentError(
          absl::StrCat(a.Where(), ": has no data input"));
    }
    std::vector<int> inputs;
    for (int i = 0; i < data_inputs; ++i) {
      PSTRAIN_ASSIGN_OR_RETURN(int in, DataInput(n, i));
      inputs.push_back(in);
    }
    PSTRAIN_ASSIGN_OR_RETURN(std::vector<std::string> names,
                             ParamInputs(n, data_inputs, num_params));
    const int id = net_->Add(std::move(layer), inputs);
    node_id_[n.index] = id;
    net_->SetSymbolNode(id, n.op, n.attrs);
    if (!names.empty()) net_->SetParamNames(id, std::move(names));
    return absl::OkStatus();
  }

  // A variable's __lr_mult__ / __wd_mult__ override the default
  // multipliers, as MXNet's Optimizer.set_lr_mult/set_wd_mult do.
  absl::Status ApplyMultipliers() {
    for (int v : param_vars_) {
      const SymNode& var = nodes_[v];
      Param* p = net_->FindParam(var.name);
      CHECK(p != nullptr) << var.name;
      NodeAttrs a(var);
      PSTRAIN_ASSIGN_OR_RETURN(double lr, a.Number("__lr_mult__", p->lr_mult));
      PSTRAIN_ASSIGN_OR_RETURN(double wd, a.Number("__wd_mult__", p->wd_mult));
      p->lr_mult = static_cast<float>(lr);
      p->wd_mult = static_cast<float>(wd);
    }
    return absl::OkStatus();
  }

  const std::vector<SymNode>& nodes_;
  ImportOptions options_;
  std::unique_ptr<Network> net_;
  std::vector<int> node_id_;     // Symbol node -> network node (-1: none).
  std::vector<int> param_vars_;  // Symbol variables that are parameters.
  int data_ = -1;                // The data variable.
  int last_fc_hidden_ = 0;       // The head's width when it is an FC.
  uint64_t dropouts_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Network>> ImportSymbol(
    const std::string& json, const std::vector<int64_t>& image_shape, int batch,
    const ImportOptions& options) {
  if (image_shape.size() != 3 || batch < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("importing a symbol needs an image shape C,H,W and a "
                     "positive batch, not ",
                     kernels::ShapeToString(image_shape), " and ", batch));
  }
  Json root = Json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) {
    return absl::InvalidArgumentError("not valid JSON");
  }
  int head = 0;
  PSTRAIN_ASSIGN_OR_RETURN(std::vector<SymNode> nodes, ReadNodes(root, &head));
  Importer importer(nodes, options);
  return importer.Run(head, image_shape, batch);
}

absl::StatusOr<std::unique_ptr<Network>> ImportSymbolFile(
    const std::string& path, const std::vector<int64_t>& image_shape, int batch,
    const ImportOptions& options) {
  PSTRAIN_ASSIGN_OR_RETURN(std::string json,
                           ReadFileToString(path, "symbol file"));
  auto net = ImportSymbol(json, image_shape, batch, options);
  if (!net.ok()) {
    return absl::Status(net.status().code(),
                        absl::StrCat(path, ": ", net.status().message()));
  }
  return net;
}

}  // namespace nn
}  // namespace pstrain
