#include "nn/network.h"

#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "glog/logging.h"
#include "util/status.h"

namespace pstrain {
namespace nn {
namespace {

using kernels::CpuContext;
using kernels::Tensor;

std::string Pair(int a, int b) { return absl::StrCat("(", a, ", ", b, ")"); }

int64_t Product(const std::vector<int64_t>& s, size_t from = 1) {
  int64_t n = 1;
  for (size_t i = from; i < s.size(); ++i) n *= s[i];
  return n;
}

class ConvLayer : public Layer {
 public:
  ConvLayer(std::string name, const kernels::Conv2dParams& p, bool bias)
      : name_(std::move(name)), p_(p), bias_(bias) {}
  std::string name() const override { return name_; }
  absl::Status Setup(const std::vector<int64_t>& in, std::vector<int64_t>* out,
                     std::vector<Param*>* params) override {
    if (in.size() != 4) {
      return absl::InvalidArgumentError(absl::StrCat(name_, ": needs NCHW input, got ",
                                                     kernels::ShapeToString(in)));
    }
    if (in[1] % p_.groups != 0) {
      return absl::InvalidArgumentError(absl::StrCat(name_, ": ", in[1], " channels for ",
                                                     p_.groups, " groups"));
    }
    const int64_t oh = kernels::ConvOutSize(in[2], p_.kernel_h, p_.stride_h, p_.pad_h, p_.dilation_h);
    const int64_t ow = kernels::ConvOutSize(in[3], p_.kernel_w, p_.stride_w, p_.pad_w, p_.dilation_w);
    if (oh <= 0 || ow <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(name_, ": ", p_.kernel_h, "x", p_.kernel_w,
                                                     " kernel does not fit input ",
                                                     kernels::ShapeToString(in)));
    }
    *out = {in[0], p_.num_filter, oh, ow};
    w_.name = name_ + "_weight";
    w_.value = Tensor({p_.num_filter, in[1] / p_.groups, p_.kernel_h, p_.kernel_w});
    w_.fan_in = in[1] / p_.groups * p_.kernel_h * p_.kernel_w;
    params->push_back(&w_);
    if (bias_) {
      b_.name = name_ + "_bias";
      b_.value = Tensor({p_.num_filter});
      b_.wd_mult = 0;
      params->push_back(&b_);
    }
    flops_ = oh * ow * p_.num_filter * w_.fan_in;
    return absl::OkStatus();
  }
  absl::Status Forward(CpuContext* ctx, const Tensor& in, Tensor* out) override {
    return kernels::Conv2dForward(ctx, in, w_.value, bias_ ? b_.value : Tensor(), p_, out);
  }
  absl::Status Backward(CpuContext* ctx, const Tensor& in, const Tensor&, const Tensor& dout,
                        Tensor* din) override {
    return kernels::Conv2dBackward(ctx, in, w_.value, dout, p_, din, &w_.grad,
                                   bias_ ? &b_.grad : nullptr);
  }
  int64_t Flops() const override { return flops_; }
  std::string MxnetOp(std::vector<std::pair<std::string, std::string>>* a) const override {
    *a = {{"kernel", Pair(p_.kernel_h, p_.kernel_w)},
          {"stride", Pair(p_.stride_h, p_.stride_w)},
          {"pad", Pair(p_.pad_h, p_.pad_w)},
          {"dilate", Pair(p_.dilation_h, p_.dilation_w)},
          {"num_filter", absl::StrCat(p_.num_filter)},
          {"num_group", absl::StrCat(p_.groups)},
          {"no_bias", bias_ ? "False" : "True"}};
    return "Convolution";
  }

 private:
  std::string name_;
  kernels::Conv2dParams p_;
  bool bias_;
  Param w_, b_;
  int64_t flops_ = 0;
};

class PoolLayer : public Layer {
 public:
  PoolLayer(std::string name, const kernels::Pool2dParams& p) : name_(std::move(name)), p_(p) {}
  std::string name() const override { return name_; }
  absl::Status Setup(const std::vector<int64_t>& in, std::vector<int64_t>* out,
                     std::vector<Param*>*) override {
    if (in.size() != 4) return absl::InvalidArgumentError(name_ + ": needs NCHW input");
    const int kh = p_.global ? static_cast<int>(in[2]) : p_.kernel_h;
    const int kw = p_.global ? static_cast<int>(in[3]) : p_.kernel_w;
    const int64_t oh = p_.global ? 1 : kernels::ConvOutSize(in[2], kh, p_.stride_h, p_.pad_h, 1);
    const int64_t ow = p_.global ? 1 : kernels::ConvOutSize(in[3], kw, p_.stride_w, p_.pad_w, 1);
    if (oh <= 0 || ow <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(name_, ": pooling window does not fit input ",
                                                     kernels::ShapeToString(in)));
    }
    *out = {in[0], in[1], oh, ow};
    return absl::OkStatus();
  }
  absl::Status Forward(CpuContext* ctx, const Tensor& in, Tensor* out) override {
    return kernels::Pool2dForward(ctx, in, p_, out, &state_);
  }
  absl::Status Backward(CpuContext* ctx, const Tensor& in, const Tensor&, const Tensor& dout,
                        Tensor* din) override {
    if (din == nullptr) return absl::OkStatus();
    return kernels::Pool2dBackward(ctx, in, dout, p_, state_, din);
  }
  std::string MxnetOp(std::vector<std::pair<std::string, std::string>>* a) const override {
    *a = {{"kernel", Pair(p_.kernel_h, p_.kernel_w)},
          {"stride", Pair(p_.stride_h, p_.stride_w)},
          {"pad", Pair(p_.pad_h, p_.pad_w)},
          {"pool_type", p_.kind == kernels::PoolKind::kMax ? "max" : "avg"},
          {"global_pool", p_.global ? "True" : "False"},
          {"pooling_convention", "valid"}};
    return "Pooling";
  }

 private:
  std::string name_;
  kernels::Pool2dParams p_;
  kernels::PoolState state_;
};

class FcLayer : public Layer {
 public:
  FcLayer(std::string name, int64_t hidden) : name_(std::move(name)), hidden_(hidden) {}
  std::string name() const override { return name_; }
  absl::Status Setup(const std::vector<int64_t>& in, std::vector<int64_t>* out,
                     std::vector<Param*>* params) override {
    const int64_t k = Product(in);
    *out = {in[0], hidden_};
    w_.name = name_ + "_weight";
    w_.value = Tensor({hidden_, k});
    w_.fan_in = k;
    b_.name = name_ + "_bias";
    b_.value = Tensor({hidden_});
    b_.wd_mult = 0;
    params->push_back(&w_);
    params->push_back(&b_);
    return absl::OkStatus();
  }
  absl::Status Forward(CpuContext*, const Tensor& in, Tensor* out) override {
    return kernels::FullyConnectedForward(in, w_.value, b_.value, out);
  }
  absl::Status Backward(CpuContext*, const Tensor& in, const Tensor&, const Tensor& dout,
                        Tensor* din) override {
    return kernels::FullyConnectedBackward(in, w_.value, dout, din, &w_.grad, &b_.grad);
  }
  int64_t Flops() const override { return w_.value.size(); }
  std::string MxnetOp(std::vector<std::pair<std::string, std::string>>* a) const override {
    *a = {{"num_hidden", absl::StrCat(hidden_)}, {"no_bias", "False"}, {"flatten", "True"}};
    return "FullyConnected";
  }

 private:
  std::string name_;
  int64_t hidden_;
  Param w_, b_;
};

class ActLayer : public Layer {
 public:
  ActLayer(std::string name, kernels::Activation a) : name_(std::move(name)), a_(a) {}
  std::string name() const override { return name_; }
  absl::Status Setup(const std::vector<int64_t>& in, std::vector<int64_t>* out,
                     std::vector<Param*>*) override {
    *out = in;
    return absl::OkStatus();
  }
  absl::Status Forward(CpuContext*, const Tensor& in, Tensor* out) override {
    return kernels::ActivationForward(a_, in, out);
  }
  absl::Status Backward(CpuContext*, const Tensor&, const Tensor& out, const Tensor& dout,
                        Tensor* din) override {
    if (din == nullptr) return absl::OkStatus();
    return kernels::ActivationBackward(a_, out, dout, din);
  }
  std::string MxnetOp(std::vector<std::pair<std::string, std::string>>* a) const override {
    *a = {{"act_type", a_ == kernels::Activation::kRelu   ? "relu"
                       : a_ == kernels::Activation::kTanh ? "tanh"
                                                          : "sigmoid"}};
    return "Activation";
  }

 private:
  std::string name_;
  kernels::Activation a_;
};

class FlattenLayer : public Layer {
 public:
  explicit FlattenLayer(std::string name) : name_(std::move(name)) {}
  std::string name() const override { return name_; }
  absl::Status Setup(const std::vector<int64_t>& in, std::vector<int64_t>* out,
                     std::vector<Param*>*) override {
    *out = {in[0], Product(in)};
    return absl::OkStatus();
  }
  absl::Status Forward(CpuContext*, const Tensor& in, Tensor* out) override {
    *out = in.Reshaped({in.dim(0), in.size() / in.dim(0)});
    return absl::OkStatus();
  }
  absl::Status Backward(CpuContext*, const Tensor& in, const Tensor&, const Tensor& dout,
                        Tensor* din) override {
    if (din != nullptr) *din = dout.Reshaped(in.shape());
    return absl::OkStatus();
  }
  std::string MxnetOp(std::vector<std::pair<std::string, std::string>>* a) const override {
    a->clear();
    return "Flatten";
  }

 private:
  std::string name_;
};

}  // namespace

std::unique_ptr<Layer> MakeConvolution(std::string name, const kernels::Conv2dParams& p, bool bias) {
  return std::make_unique<ConvLayer>(std::move(name), p, bias);
}
std::unique_ptr<Layer> MakePooling(std::string name, const kernels::Pool2dParams& p) {
  return std::make_unique<PoolLayer>(std::move(name), p);
}
std::unique_ptr<Layer> MakeFullyConnected(std::string name, int64_t num_hidden) {
  return std::make_unique<FcLayer>(std::move(name), num_hidden);
}
std::unique_ptr<Layer> MakeActivation(std::string name, kernels::Activation a) {
  return std::make_unique<ActLayer>(std::move(name), a);
}
std::unique_ptr<Layer> MakeFlatten(std::string name) {
  return std::make_unique<FlattenLayer>(std::move(name));
}

absl::Status Network::Build(const std::vector<int64_t>& input_shape, int num_classes) {
  num_classes_ = num_classes;
  shapes_ = {input_shape};
  params_.clear();
  layer_params_.clear();
  for (auto& layer : layers_) {
    std::vector<int64_t> out;
    std::vector<Param*> ps;
    PSTRAIN_RETURN_IF_ERROR(layer->Setup(shapes_.back(), &out, &ps));
    for (Param* p : ps) {
      p->grad = Tensor(p->value.shape());
      params_.push_back(p);
    }
    layer_params_.push_back(ps);
    shapes_.push_back(out);
  }
  if (shapes_.back().size() != 2 || shapes_.back()[1] != num_classes) {
    return absl::InvalidArgumentError(absl::StrCat("the network ends in ",
                                                   kernels::ShapeToString(shapes_.back()),
                                                   ", not [batch, ", num_classes, "]"));
  }
  acts_.assign(layers_.size() + 1, Tensor());
  return absl::OkStatus();
}

absl::StatusOr<double> Network::Forward(CpuContext* ctx, const Tensor& x,
                                        absl::Span<const float> labels) {
  if (x.shape() != shapes_[0]) {
    return absl::InvalidArgumentError(absl::StrCat("input ", x.ShapeString(), " but the network "
                                                   "was built for ", kernels::ShapeToString(shapes_[0])));
  }
  acts_[0] = x;
  for (size_t i = 0; i < layers_.size(); ++i) {
    PSTRAIN_RETURN_IF_ERROR(
        Annotate(layers_[i]->Forward(ctx, acts_[i], &acts_[i + 1]), layers_[i]->name()));
  }
  labels_.assign(labels.begin(), labels.end());
  double loss = 0;
  PSTRAIN_RETURN_IF_ERROR(kernels::SoftmaxCrossEntropy(acts_.back(), labels, &probs_, &loss));
  return loss;
}

absl::Status Network::Backward(CpuContext* ctx, float scale) {
  Tensor grad;
  PSTRAIN_RETURN_IF_ERROR(kernels::SoftmaxCrossEntropyBackward(probs_, labels_, scale, &grad));
  for (size_t i = layers_.size(); i-- > 0;) {
    Tensor din;
    PSTRAIN_RETURN_IF_ERROR(Annotate(
        layers_[i]->Backward(ctx, acts_[i], acts_[i + 1], grad, i == 0 ? nullptr : &din),
        layers_[i]->name()));
    grad = din;
  }
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
  for (size_t i = 0; i < layers_.size(); ++i) {
    LayerSummary s;
    s.name = layers_[i]->name();
    s.out_shape.assign(shapes_[i + 1].begin() + 1, shapes_[i + 1].end());
    for (const Param* p : layer_params_[i]) s.params += p->value.size();
    s.flops = layers_[i]->Flops();
    out.push_back(s);
  }
  return out;
}

std::string Network::SymbolJson() const {
  std::vector<std::string> nodes;
  std::vector<int> arg_nodes;
  auto null_node = [&](const std::string& name) {
    arg_nodes.push_back(static_cast<int>(nodes.size()));
    nodes.push_back(absl::StrCat("    {\"op\": \"null\", \"name\": \"", name, "\", \"inputs\": []}"));
    return static_cast<int>(nodes.size()) - 1;
  };
  int prev = null_node("data");
  for (size_t i = 0; i < layers_.size(); ++i) {
    std::vector<int> inputs = {prev};
    for (const Param* p : layer_params_[i]) inputs.push_back(null_node(p->name));
    std::vector<std::pair<std::string, std::string>> attrs;
    const std::string op = layers_[i]->MxnetOp(&attrs);
    std::vector<std::string> a, in;
    for (const auto& [k, v] : attrs) a.push_back(absl::StrCat("\"", k, "\": \"", v, "\""));
    for (int x : inputs) in.push_back(absl::StrCat("[", x, ", 0, 0]"));
    nodes.push_back(absl::StrCat("    {\"op\": \"", op, "\", \"name\": \"", layers_[i]->name(),
                                 "\", \"attrs\": {", absl::StrJoin(a, ", "),
                                 "}, \"inputs\": [", absl::StrJoin(in, ", "), "]}"));
    prev = static_cast<int>(nodes.size()) - 1;
  }
  const int label = null_node("softmax_label");
  nodes.push_back(absl::StrCat("    {\"op\": \"SoftmaxOutput\", \"name\": \"softmax\", "
                               "\"inputs\": [[", prev, ", 0, 0], [", label, ", 0, 0]]}"));
  std::vector<int> row_ptr;
  for (size_t i = 0; i <= nodes.size(); ++i) row_ptr.push_back(static_cast<int>(i));
  return absl::StrCat("{\n  \"nodes\": [\n", absl::StrJoin(nodes, ",\n"), "\n  ],\n",
                      "  \"arg_nodes\": [", absl::StrJoin(arg_nodes, ", "), "],\n",
                      "  \"node_row_ptr\": [", absl::StrJoin(row_ptr, ", "), "],\n",
                      "  \"heads\": [[", nodes.size() - 1, ", 0, 0]],\n",
                      "  \"attrs\": {\"mxnet_version\": [\"int\", 10901]}\n}\n");
}

int64_t Network::NumParams() const {
  int64_t n = 0;
  for (const Param* p : params_) n += p->value.size();
  return n;
}

void InitializeXavier(Network* net, uint32_t seed) {
  std::mt19937 rng(seed);
  for (Param* p : net->params()) {
    if (p->name.size() >= 5 && p->name.compare(p->name.size() - 5, 5, "_bias") == 0) {
      p->value.Fill(0.0f);
      continue;
    }
    std::normal_distribution<float> nd(0.0f, std::sqrt(2.0f / static_cast<float>(p->fan_in)));
    for (auto& v : p->value.span()) v = nd(rng);
  }
}

absl::StatusOr<std::unique_ptr<Network>> BuildNetwork(const std::string& name, int num_layers,
                                                      int num_classes,
                                                      const std::vector<int64_t>& image_shape,
                                                      int batch_size) {
  (void)num_layers;
  if (image_shape.size() != 3 || image_shape[0] <= 0 || image_shape[1] <= 0 || image_shape[2] <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("--image_shape ",
                                                   kernels::ShapeToString(image_shape),
                                                   " is not C,H,W"));
  }
  if (num_classes < 2) return absl::InvalidArgumentError("--num_classes must be >= 2");
  if (batch_size < 1) return absl::InvalidArgumentError("--batch_size must be >= 1");
  auto net = std::make_unique<Network>();
  using kernels::Activation;
  if (name == "mlp") {
    net->Add(MakeFlatten("flatten0"));
    net->Add(MakeFullyConnected("fc0", 128));
    net->Add(MakeActivation("relu0", Activation::kRelu));
    net->Add(MakeFullyConnected("fc1", 64));
    net->Add(MakeActivation("relu1", Activation::kRelu));
    net->Add(MakeFullyConnected("fc2", num_classes));
  } else if (name == "lenet") {
    // MXNet's example LeNet: conv 5x5x20, tanh, max 2x2; conv 5x5x50, tanh,
    // max 2x2; fc 500, tanh; fc classes.
    kernels::Conv2dParams c;
    c.kernel_h = c.kernel_w = 5;
    c.num_filter = 20;
    kernels::Pool2dParams p;  // max 2x2 stride 2
    net->Add(MakeConvolution("conv0", c));
    net->Add(MakeActivation("tanh0", Activation::kTanh));
    net->Add(MakePooling("pool0", p));
    c.num_filter = 50;
    net->Add(MakeConvolution("conv1", c));
    net->Add(MakeActivation("tanh1", Activation::kTanh));
    net->Add(MakePooling("pool1", p));
    net->Add(MakeFlatten("flatten0"));
    net->Add(MakeFullyConnected("fc0", 500));
    net->Add(MakeActivation("tanh2", Activation::kTanh));
    net->Add(MakeFullyConnected("fc1", num_classes));
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "--network '", name, "' is not available yet (built: mlp, lenet)"));
  }
  PSTRAIN_RETURN_IF_ERROR(Annotate(
      net->Build({batch_size, image_shape[0], image_shape[1], image_shape[2]}, num_classes),
      absl::StrCat("--network ", name, " with --image_shape ", kernels::ShapeToString(image_shape))));
  return net;
}

}  // namespace nn
}  // namespace pstrain
