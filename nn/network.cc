#include "nn/network.h"

#include <cmath>
#include <random>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "glog/logging.h"
#include "nlohmann/json.hpp"
#include "util/status.h"

namespace pstrain {
namespace nn {

using kernels::CpuContext;
using kernels::Tensor;

int Network::Add(std::unique_ptr<Layer> layer, std::vector<int> inputs) {
  for (int in : inputs)
    CHECK(in >= 0 && in <= last()) << layer->name() << ": input node " << in;
  Node n;
  n.layer = std::move(layer);
  n.inputs = std::move(inputs);
  nodes_.push_back(std::move(n));
  return last();
}

int Network::Add(std::unique_ptr<Layer> layer) {
  return Add(std::move(layer), {last()});
}

void Network::SetSymbolNode(int id, std::string op, SymbolAttrs attrs) {
  CHECK(id >= 1 && id <= last()) << "node " << id;
  Node& n = node(id);
  n.symbol_set = true;
  n.symbol_op = std::move(op);
  n.symbol_attrs = std::move(attrs);
}

void Network::SetParamNames(int id, std::vector<std::string> names) {
  CHECK(id >= 1 && id <= last()) << "node " << id;
  node(id).param_names = std::move(names);
}

const std::vector<int64_t>& Network::ShapeOf(int id) const {
  return id == kInput ? input_shape_ : nodes_[id - 1].shape;
}

absl::Status Network::Build(const std::vector<int64_t>& input_shape,
                            int num_classes) {
  if (nodes_.empty())
    return absl::InvalidArgumentError("the network has no layers");
  num_classes_ = num_classes;
  input_shape_ = input_shape;
  params_.clear();
  std::set<std::string> names, param_names;
  for (int id = 1; id <= last(); ++id) {
    Node& n = node(id);
    std::vector<std::vector<int64_t>> in;
    for (int j : n.inputs) in.push_back(ShapeOf(j));
    n.params.clear();
    PSTRAIN_RETURN_IF_ERROR(n.layer->Setup(in, &n.shape, &n.params));
    if (!names.insert(n.layer->name()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("two layers are named ", n.layer->name()));
    }
    if (!n.param_names.empty()) {
      if (n.param_names.size() != n.params.size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            n.layer->name(), ": ", n.param_names.size(),
            " parameter names for ", n.params.size(), " parameters"));
      }
      for (size_t i = 0; i < n.params.size(); ++i)
        n.params[i]->name = n.param_names[i];
    }
    for (const Param* p : n.params) {
      if (!param_names.insert(p->name).second) {
        return absl::InvalidArgumentError(
            absl::StrCat(n.layer->name(), ": parameter ", p->name,
                         " is already another layer's (shared parameters "
                         "are not supported)"));
      }
    }
    n.learned.clear();
    for (Param* p : n.params) {
      if (!p->aux) {
        p->grad = Tensor(p->value.shape());
        n.learned.push_back(p);
      }
      params_.push_back(p);
    }
    n.consumers = 0;
  }
  for (int id = 1; id <= last(); ++id) {
    for (int j : node(id).inputs) {
      if (j != kInput) ++node(j).consumers;
    }
  }
  // In place: an elementwise layer may overwrite its input when it is the
  // input's only reader and no backward pass needs those values (the
  // producer's backward reads its own output only for activations; the
  // producer may itself share a buffer, which was checked the same way). A
  // view (flatten) is never overwritten: its buffer belongs to a node that
  // may have other readers.
  for (int id = 1; id <= last(); ++id) {
    Node& n = node(id);
    n.in_place = false;
    if (!n.layer->CanRunInPlace() || n.inputs.size() != 1 ||
        n.inputs[0] == kInput)
      continue;
    const Node& producer = node(n.inputs[0]);
    n.in_place = producer.consumers == 1 &&
                 producer.layer->BackwardNeeds() != Needs::kOutput &&
                 !producer.layer->OutputIsView();
  }
  const std::vector<int64_t>& out = ShapeOf(last());
  if (out.size() != 2 || out[1] != num_classes) {
    return absl::InvalidArgumentError(
        absl::StrCat("the network ends in ", kernels::ShapeToString(out),
                     ", not [batch, ", num_classes, "]"));
  }
  outs_.assign(last() + 1, Tensor());
  grads_.assign(last() + 1, Tensor());
  free_grads_.clear();
  grad_pool_bytes_ = 0;
  times_.assign(last(), {0.0, 0.0});
  return absl::OkStatus();
}

absl::Status Network::CheckBatch(const Tensor& x,
                                 absl::Span<const float> labels) const {
  if (x.shape() != input_shape_) {
    return absl::InvalidArgumentError(
        absl::StrCat("input ", x.ShapeString(),
                     " but the network "
                     "was built for ",
                     kernels::ShapeToString(input_shape_)));
  }
  if (static_cast<int64_t>(labels.size()) != x.dim(0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(labels.size(), " labels for a batch of ", x.dim(0)));
  }
  return absl::OkStatus();
}

absl::StatusOr<double> Network::Forward(CpuContext* ctx, const Tensor& x,
                                        absl::Span<const float> labels,
                                        Mode mode, const ParamsNeeded& needed) {
  PSTRAIN_RETURN_IF_ERROR(CheckBatch(x, labels));
  const bool training = mode == Mode::kTrain;
  outs_[kInput] = x;
  std::vector<const Tensor*> ins;
  for (int id = 1; id <= last(); ++id) {
    Node& n = node(id);
    ins.clear();
    for (int j : n.inputs) ins.push_back(&outs_[j]);
    if (n.in_place) outs_[id] = outs_[n.inputs[0]];
    if (needed && !n.learned.empty())
      PSTRAIN_RETURN_IF_ERROR(needed(n.learned));
    const bool timed = profile_ || observer_;
    const absl::Time t0 = timed ? absl::Now() : absl::Time();
    PSTRAIN_RETURN_IF_ERROR(Annotate(
        n.layer->Forward(ctx, ins, &outs_[id], training), n.layer->name()));
    if (timed) {
      const absl::Time t1 = absl::Now();
      if (profile_) times_[id - 1].first = absl::ToDoubleSeconds(t1 - t0);
      if (observer_) observer_(id, /*backward=*/false, t0, t1);
    }
  }
  labels_.assign(labels.begin(), labels.end());
  trained_forward_ = training;
  double loss = 0;
  PSTRAIN_RETURN_IF_ERROR(
      kernels::SoftmaxCrossEntropy(outs_[last()], labels, &probs_, &loss));
  return loss;
}

Tensor Network::AcquireGrad(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  auto it = free_grads_.find(n);
  if (it != free_grads_.end() && !it->second.empty()) {
    Tensor t = it->second.back().Reshaped(shape);
    it->second.pop_back();
    return t;
  }
  grad_pool_bytes_ += n * static_cast<int64_t>(sizeof(float));
  return Tensor(shape);
}

void Network::ReleaseGrad(Tensor* t) {
  if (t->empty()) return;
  free_grads_[t->size()].push_back(*t);
  *t = Tensor();
}

absl::Status Network::Backward(CpuContext* ctx, float scale,
                               const GradsReady& ready) {
  if (!trained_forward_) {
    return absl::FailedPreconditionError(
        "Backward() needs a training-mode Forward() first");
  }
  grads_[last()] = AcquireGrad(ShapeOf(last()));
  PSTRAIN_RETURN_IF_ERROR(kernels::SoftmaxCrossEntropyBackward(
      probs_, labels_, scale, &grads_[last()]));
  std::vector<const Tensor*> ins;
  std::vector<Tensor*> din;
  std::vector<Tensor> temps;
  for (int id = last(); id >= 1; --id) {
    Node& n = node(id);
    if (grads_[id].empty()) {
      // Nothing downstream reads this node: its parameters' gradients are
      // zero, and still reported (a KVStore round needs every key).
      for (Param* p : n.learned) p->grad.Fill(0.0f);
      if (ready && !n.learned.empty()) ready(n.learned);
      continue;
    }
    ins.clear();
    din.clear();
    temps.assign(n.inputs.size(), Tensor());
    std::set<int> seen;
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      const int j = n.inputs[k];
      ins.push_back(&outs_[j]);
      if (j == kInput) {
        din.push_back(nullptr);
      } else if (grads_[j].empty() && seen.insert(j).second) {
        grads_[j] = AcquireGrad(ShapeOf(j));
        din.push_back(&grads_[j]);
      } else {
        // Another reader already contributed: compute aside, then add.
        temps[k] = AcquireGrad(ShapeOf(j));
        din.push_back(&temps[k]);
      }
    }
    const bool timed = profile_ || observer_;
    const absl::Time t0 = timed ? absl::Now() : absl::Time();
    PSTRAIN_RETURN_IF_ERROR(
        Annotate(n.layer->Backward(ctx, ins, outs_[id], grads_[id], din),
                 n.layer->name()));
    for (size_t k = 0; k < temps.size(); ++k) {
      if (temps[k].empty()) continue;
      PSTRAIN_RETURN_IF_ERROR(
          kernels::AddInPlace(temps[k], &grads_[n.inputs[k]]));
      ReleaseGrad(&temps[k]);
    }
    if (timed) {
      const absl::Time t1 = absl::Now();
      if (profile_) times_[id - 1].second = absl::ToDoubleSeconds(t1 - t0);
      if (observer_) observer_(id, /*backward=*/true, t0, t1);
    }
    ReleaseGrad(&grads_[id]);
    if (ready && !n.learned.empty()) ready(n.learned);
  }
  for (Tensor& g : grads_) ReleaseGrad(&g);
  return absl::OkStatus();
}

std::vector<Param*> Network::params() { return params_; }

Param* Network::FindParam(const std::string& name) {
  for (Param* p : params_) {
    if (p->name == name) return p;
  }
  return nullptr;
}

std::vector<LayerSummary> Network::Summary() const {
  std::vector<LayerSummary> out;
  for (const Node& n : nodes_) {
    LayerSummary s;
    s.name = n.layer->name();
    std::vector<std::pair<std::string, std::string>> attrs;
    s.op = n.layer->MxnetOp(&attrs);
    s.out_shape.assign(n.shape.begin() + 1, n.shape.end());
    for (const Param* p : n.params) s.params += p->value.size();
    s.flops = n.layer->Flops();
    out.push_back(s);
  }
  return out;
}

int64_t Network::PlannedForwardBytes() const {
  int64_t bytes = 0;
  for (int id = 1; id <= last(); ++id) {
    const Node& n = nodes_[id - 1];
    if (n.in_place || n.layer->OutputIsView()) continue;
    int64_t e = 1;
    for (int64_t d : n.shape) e *= d;
    bytes += e * static_cast<int64_t>(sizeof(float));
  }
  return bytes;
}

MemoryStats Network::Memory() const {
  MemoryStats m;
  std::set<const float*> seen;
  for (int id = 1; id <= last(); ++id) {
    const int64_t bytes = [&] {
      int64_t e = 1;
      for (int64_t d : ShapeOf(id)) e *= d;
      return e * static_cast<int64_t>(sizeof(float));
    }();
    m.unplanned_bytes += 2 * bytes;
    const Tensor& t = outs_[id];
    if (!t.empty() && t.data() != outs_[kInput].data() &&
        seen.insert(t.data()).second) {
      m.forward_bytes += t.size() * static_cast<int64_t>(sizeof(float));
    }
  }
  m.gradient_bytes = grad_pool_bytes_;
  for (const Param* p : params_) {
    m.param_bytes += (p->value.size() + p->grad.size()) *
                     static_cast<int64_t>(sizeof(float));
  }
  return m;
}

std::string Network::SymbolJson() const {
  using Json = nlohmann::ordered_json;
  Json nodes = Json::array();
  Json arg_nodes = Json::array();
  auto entry = [](int node) { return Json::array({node, 0, 0}); };
  auto null_node = [&](const std::string& name, const char* init = nullptr) {
    const int id = static_cast<int>(nodes.size());
    arg_nodes.push_back(id);
    Json n = {{"op", "null"}, {"name", name}};
    if (init != nullptr) n["attrs"] = {{"__init__", init}};
    n["inputs"] = Json::array();
    nodes.push_back(std::move(n));
    return id;
  };
  std::vector<int> json_id(last() + 1);  // Network node -> JSON node.
  json_id[kInput] = null_node("data");
  for (int id = 1; id <= last(); ++id) {
    const Node& n = nodes_[id - 1];
    Json inputs = Json::array();
    for (int j : n.inputs) inputs.push_back(entry(json_id[j]));
    const bool bn = n.layer->spec().kind == LayerSpec::kBatchNorm;
    for (size_t i = 0; i < n.params.size(); ++i) {
      // MXNet's BatchNorm sets these on its auxiliary variables.
      const char* init = !bn      ? nullptr
                         : i == 2 ? "[\"zero\", {}]"
                         : i == 3 ? "[\"one\", {}]"
                                  : nullptr;
      inputs.push_back(entry(null_node(n.params[i]->name, init)));
    }
    SymbolAttrs attrs = n.symbol_attrs;
    const std::string op =
        n.symbol_set ? n.symbol_op : n.layer->MxnetOp(&attrs);
    Json node_json = {{"op", op}, {"name", n.layer->name()}};
    if (!attrs.empty()) {
      Json a = Json::object();
      for (const auto& [k, v] : attrs) a[k] = v;
      node_json["attrs"] = a;
    }
    node_json["inputs"] = inputs;
    json_id[id] = static_cast<int>(nodes.size());
    nodes.push_back(std::move(node_json));
  }
  const int label = null_node("softmax_label");
  nodes.push_back(
      {{"op", "SoftmaxOutput"},
       {"name", "softmax"},
       {"inputs", Json::array({entry(json_id[last()]), entry(label)})}});
  Json row_ptr = Json::array();
  for (size_t i = 0; i <= nodes.size(); ++i) row_ptr.push_back(i);
  Json symbol = {
      {"nodes", nodes},
      {"arg_nodes", arg_nodes},
      {"node_row_ptr", row_ptr},
      {"heads", Json::array({entry(static_cast<int>(nodes.size()) - 1)})},
      {"attrs", {{"mxnet_version", Json::array({"int", 10901})}}}};
  return symbol.dump(2) + "\n";
}

int64_t Network::NumParams() const {
  int64_t n = 0;
  for (const Param* p : params_) n += p->value.size();
  return n;
}

int64_t Network::NumLearnedParams() const {
  int64_t n = 0;
  for (const Param* p : params_) n += p->aux ? 0 : p->value.size();
  return n;
}

namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

absl::Status Initialize(Network* net, const std::string& initializer,
                        uint32_t seed) {
  const bool xavier = initializer == "xavier" || initializer == "default";
  if (!xavier && initializer != "msra" && initializer != "normal") {
    return absl::InvalidArgumentError(
        absl::StrCat("--initializer ", initializer,
                     ": unknown; use xavier (the default), msra or normal"));
  }
  std::mt19937 rng(seed);
  for (Param* p : net->params()) {
    if (EndsWith(p->name, "_gamma") || EndsWith(p->name, "_moving_var")) {
      p->value.Fill(1.0f);
    } else if (!EndsWith(p->name, "_weight")) {
      p->value.Fill(0.0f);  // Biases, beta, moving mean.
    } else {
      // MXNet's Xavier: fan_in = shape[1] * receptive field, fan_out =
      // shape[0] * receptive field. fit.py's default Xavier(gaussian, "in",
      // 2) is N(0, sqrt(2 / fan_in)); MSRAPrelu(slope 0.25) is
      // Xavier(gaussian, "avg", 2 / (1 + 0.25^2)); Normal() is N(0, 0.01),
      // fit.py's choice for AlexNet.
      const auto& s = p->value.shape();
      const double receptive =
          s.size() > 2 ? static_cast<double>(p->value.size()) / (s[0] * s[1])
                       : 1.0;
      const double fan_in = s.size() > 1 ? s[1] * receptive : 1.0;
      const double fan_out = s[0] * receptive;
      const double sigma =
          xavier ? std::sqrt(2.0 / fan_in)
          : initializer == "msra"
              ? std::sqrt((2.0 / 1.0625) / ((fan_in + fan_out) / 2.0))
              : 0.01;
      std::normal_distribution<float> nd(0.0f, static_cast<float>(sigma));
      for (auto& v : p->value.span()) v = nd(rng);
    }
  }
  return absl::OkStatus();
}

void InitializeXavier(Network* net, uint32_t seed) {
  CHECK(Initialize(net, "xavier", seed).ok());
}

}  // namespace nn
}  // namespace pstrain
