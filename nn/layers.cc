#include "nn/layers.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "glog/logging.h"
#include "util/status.h"

namespace pstrain {
namespace nn {
namespace {

using kernels::CpuContext;
using kernels::Tensor;
using Shape = Layer::Shape;
using Attrs = std::vector<std::pair<std::string, std::string>>;

std::string Pair(int a, int b) { return absl::StrCat("(", a, ", ", b, ")"); }
std::string Bool(bool b) { return b ? "True" : "False"; }

int64_t Product(const Shape& s, size_t from = 1) {
  int64_t n = 1;
  for (size_t i = from; i < s.size(); ++i) n *= s[i];
  return n;
}

absl::Status NeedNchw(const std::string& name, const Shape& in) {
  if (in.size() == 4) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      name, ": needs NCHW input, got ", kernels::ShapeToString(in)));
}

// A layer with one input.
class UnaryLayer : public Layer {
 public:
  UnaryLayer(std::string name, LayerSpec::Kind kind) : name_(std::move(name)) {
    spec_.kind = kind;
  }
  std::string name() const override { return name_; }
  const LayerSpec& spec() const override { return spec_; }
  absl::Status Setup(const std::vector<Shape>& in, Shape* out,
                     std::vector<Param*>* params) final {
    if (in.size() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(name_, ": takes one input, got ", in.size()));
    }
    return Setup1(in[0], out, params);
  }
  absl::Status Forward(CpuContext* ctx, const std::vector<const Tensor*>& in,
                       Tensor* out, bool training) final {
    return Forward1(ctx, *in[0], out, training);
  }
  absl::Status Backward(CpuContext* ctx, const std::vector<const Tensor*>& in,
                        const Tensor& out, const Tensor& dout,
                        const std::vector<Tensor*>& din) final {
    return Backward1(ctx, *in[0], out, dout, din[0]);
  }

 protected:
  virtual absl::Status Setup1(const Shape& in, Shape* out,
                              std::vector<Param*>* params) = 0;
  virtual absl::Status Forward1(CpuContext* ctx, const Tensor& in, Tensor* out,
                                bool training) = 0;
  // `din` may be null.
  virtual absl::Status Backward1(CpuContext* ctx, const Tensor& in,
                                 const Tensor& out, const Tensor& dout,
                                 Tensor* din) = 0;
  // A learned parameter NAME_suffix of `shape`.
  Param* NewParam(Param* p, const std::string& suffix, Shape shape,
                  int64_t fan_in, float wd_mult) {
    p->name = absl::StrCat(name_, "_", suffix);
    p->value = Tensor(std::move(shape));
    p->fan_in = fan_in;
    p->wd_mult = wd_mult;
    return p;
  }

  std::string name_;
  LayerSpec spec_;
};

class ConvLayer : public UnaryLayer {
 public:
  ConvLayer(std::string name, const kernels::Conv2dParams& p, bool bias)
      : UnaryLayer(std::move(name), LayerSpec::kConv), p_(p), bias_(bias) {
    spec_.conv = p;
    spec_.bias = bias;
  }
  absl::Status Setup1(const Shape& in, Shape* out,
                      std::vector<Param*>* params) override {
    PSTRAIN_RETURN_IF_ERROR(NeedNchw(name_, in));
    if (in[1] % p_.groups != 0 || p_.num_filter % p_.groups != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(name_, ": ", in[1], " input channels and ",
                       p_.num_filter, " filters for ", p_.groups, " groups"));
    }
    const int64_t oh = kernels::ConvOutSize(in[2], p_.kernel_h, p_.stride_h,
                                            p_.pad_h, p_.dilation_h);
    const int64_t ow = kernels::ConvOutSize(in[3], p_.kernel_w, p_.stride_w,
                                            p_.pad_w, p_.dilation_w);
    if (oh <= 0 || ow <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          name_, ": ", p_.kernel_h, "x", p_.kernel_w,
          " kernel does not fit input ", kernels::ShapeToString(in)));
    }
    *out = {in[0], p_.num_filter, oh, ow};
    const int64_t fan_in = in[1] / p_.groups * p_.kernel_h * p_.kernel_w;
    params->push_back(
        NewParam(&w_, "weight",
                 {p_.num_filter, in[1] / p_.groups, p_.kernel_h, p_.kernel_w},
                 fan_in, 1.0f));
    if (bias_)
      params->push_back(NewParam(&b_, "bias", {p_.num_filter}, 1, 0.0f));
    flops_ = oh * ow * p_.num_filter * fan_in;
    return absl::OkStatus();
  }
  absl::Status Forward1(CpuContext* ctx, const Tensor& in, Tensor* out,
                        bool) override {
    return kernels::Conv2dForward(ctx, in, w_.value,
                                  bias_ ? b_.value : Tensor(), p_, out);
  }
  absl::Status Backward1(CpuContext* ctx, const Tensor& in, const Tensor&,
                         const Tensor& dout, Tensor* din) override {
    return kernels::Conv2dBackward(ctx, in, w_.value, dout, p_, din, &w_.grad,
                                   bias_ ? &b_.grad : nullptr);
  }
  int64_t Flops() const override { return flops_; }
  std::string MxnetOp(Attrs* a) const override {
    *a = {{"kernel", Pair(p_.kernel_h, p_.kernel_w)},
          {"stride", Pair(p_.stride_h, p_.stride_w)},
          {"pad", Pair(p_.pad_h, p_.pad_w)},
          {"dilate", Pair(p_.dilation_h, p_.dilation_w)},
          {"num_filter", absl::StrCat(p_.num_filter)},
          {"num_group", absl::StrCat(p_.groups)},
          {"no_bias", Bool(!bias_)}};
    return "Convolution";
  }

 private:
  kernels::Conv2dParams p_;
  bool bias_;
  Param w_, b_;
  int64_t flops_ = 0;
};

class PoolLayer : public UnaryLayer {
 public:
  PoolLayer(std::string name, const kernels::Pool2dParams& p)
      : UnaryLayer(std::move(name), LayerSpec::kPool), p_(p) {
    spec_.pool = p;
  }
  absl::Status Setup1(const Shape& in, Shape* out,
                      std::vector<Param*>*) override {
    PSTRAIN_RETURN_IF_ERROR(NeedNchw(name_, in));
    const int kh = p_.global ? static_cast<int>(in[2]) : p_.kernel_h;
    const int kw = p_.global ? static_cast<int>(in[3]) : p_.kernel_w;
    const int64_t oh =
        p_.global ? 1
                  : kernels::ConvOutSize(in[2], kh, p_.stride_h, p_.pad_h, 1);
    const int64_t ow =
        p_.global ? 1
                  : kernels::ConvOutSize(in[3], kw, p_.stride_w, p_.pad_w, 1);
    if (oh <= 0 || ow <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(name_, ": pooling window does not fit input ",
                       kernels::ShapeToString(in)));
    }
    *out = {in[0], in[1], oh, ow};
    flops_ = in[1] * oh * ow * kh * kw;
    return absl::OkStatus();
  }
  absl::Status Forward1(CpuContext* ctx, const Tensor& in, Tensor* out,
                        bool) override {
    return kernels::Pool2dForward(ctx, in, p_, out, &state_);
  }
  absl::Status Backward1(CpuContext* ctx, const Tensor& in, const Tensor&,
                         const Tensor& dout, Tensor* din) override {
    if (din == nullptr) return absl::OkStatus();
    return kernels::Pool2dBackward(ctx, in, dout, p_, state_, din);
  }
  int64_t Flops() const override { return flops_; }
  std::string MxnetOp(Attrs* a) const override {
    *a = {{"kernel", Pair(p_.kernel_h, p_.kernel_w)},
          {"stride", Pair(p_.stride_h, p_.stride_w)},
          {"pad", Pair(p_.pad_h, p_.pad_w)},
          {"pool_type", p_.kind == kernels::PoolKind::kMax ? "max" : "avg"},
          {"global_pool", Bool(p_.global)},
          {"pooling_convention", "valid"}};
    return "Pooling";
  }

 private:
  kernels::Pool2dParams p_;
  kernels::PoolState state_;
  int64_t flops_ = 0;
};

class FcLayer : public UnaryLayer {
 public:
  FcLayer(std::string name, int64_t hidden)
      : UnaryLayer(std::move(name), LayerSpec::kFc), hidden_(hidden) {
    spec_.num_hidden = hidden;
  }
  absl::Status Setup1(const Shape& in, Shape* out,
                      std::vector<Param*>* params) override {
    const int64_t k = Product(in);
    *out = {in[0], hidden_};
    params->push_back(NewParam(&w_, "weight", {hidden_, k}, k, 1.0f));
    params->push_back(NewParam(&b_, "bias", {hidden_}, 1, 0.0f));
    return absl::OkStatus();
  }
  absl::Status Forward1(CpuContext*, const Tensor& in, Tensor* out,
                        bool) override {
    return kernels::FullyConnectedForward(in, w_.value, b_.value, out);
  }
  absl::Status Backward1(CpuContext*, const Tensor& in, const Tensor&,
                         const Tensor& dout, Tensor* din) override {
    return kernels::FullyConnectedBackward(in, w_.value, dout, din, &w_.grad,
                                           &b_.grad);
  }
  int64_t Flops() const override { return w_.value.size(); }
  std::string MxnetOp(Attrs* a) const override {
    *a = {{"num_hidden", absl::StrCat(hidden_)},
          {"no_bias", "False"},
          {"flatten", "True"}};
    return "FullyConnected";
  }

 private:
  int64_t hidden_;
  Param w_, b_;
};

class ActLayer : public UnaryLayer {
 public:
  ActLayer(std::string name, kernels::Activation a)
      : UnaryLayer(std::move(name), LayerSpec::kAct), a_(a) {
    spec_.act = a;
  }
  absl::Status Setup1(const Shape& in, Shape* out,
                      std::vector<Param*>*) override {
    *out = in;
    return absl::OkStatus();
  }
  absl::Status Forward1(CpuContext*, const Tensor& in, Tensor* out,
                        bool) override {
    return kernels::ActivationForward(a_, in, out);
  }
  absl::Status Backward1(CpuContext*, const Tensor&, const Tensor& out,
                         const Tensor& dout, Tensor* din) override {
    if (din == nullptr) return absl::OkStatus();
    return kernels::ActivationBackward(a_, out, dout, din);
  }
  Needs BackwardNeeds() const override { return Needs::kOutput; }
  bool CanRunInPlace() const override { return true; }
  std::string MxnetOp(Attrs* a) const override {
    *a = {{"act_type", a_ == kernels::Activation::kRelu   ? "relu"
                       : a_ == kernels::Activation::kTanh ? "tanh"
                                                          : "sigmoid"}};
    return "Activation";
  }

 private:
  kernels::Activation a_;
};

// A view of the input's buffer in another shape (flatten, identity): the
// gradient is copied back in the input's shape.
class ViewLayer : public UnaryLayer {
 public:
  ViewLayer(std::string name, LayerSpec::Kind kind, bool flatten,
            std::string op)
      : UnaryLayer(std::move(name), kind),
        flatten_(flatten),
        op_(std::move(op)) {}
  absl::Status Setup1(const Shape& in, Shape* out,
                      std::vector<Param*>*) override {
    *out = flatten_ ? Shape{in[0], Product(in)} : in;
    return absl::OkStatus();
  }
  absl::Status Forward1(CpuContext*, const Tensor& in, Tensor* out,
                        bool) override {
    *out = in.Reshaped(flatten_ ? Shape{in.dim(0), in.size() / in.dim(0)}
                                : in.shape());
    return absl::OkStatus();
  }
  absl::Status Backward1(CpuContext*, const Tensor& in, const Tensor&,
                         const Tensor& dout, Tensor* din) override {
    if (din == nullptr) return absl::OkStatus();
    if (din->shape() != in.shape()) *din = Tensor(in.shape());
    std::copy(dout.data(), dout.data() + dout.size(), din->data());
    return absl::OkStatus();
  }
  Needs BackwardNeeds() const override { return Needs::kNothing; }
  bool OutputIsView() const override { return true; }
  std::string MxnetOp(Attrs* a) const override {
    a->clear();
    return op_;
  }

 private:
  bool flatten_;
  std::string op_;
};

class BatchNormLayer : public UnaryLayer {
 public:
  BatchNormLayer(std::string name, const kernels::BatchNormParams& p)
      : UnaryLayer(std::move(name), LayerSpec::kBatchNorm), p_(p) {
    spec_.bn = p;
  }
  absl::Status Setup1(const Shape& in, Shape* out,
                      std::vector<Param*>* params) override {
    if (in.size() != 4 && in.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          name_, ": needs NCHW or NC input, got ", kernels::ShapeToString(in)));
    }
    *out = in;
    params->push_back(NewParam(&gamma_, "gamma", {in[1]}, 1, 1.0f));
    params->push_back(NewParam(&beta_, "beta", {in[1]}, 1, 0.0f));
    params->push_back(NewParam(&mean_, "moving_mean", {in[1]}, 1, 0.0f));
    params->push_back(NewParam(&var_, "moving_var", {in[1]}, 1, 0.0f));
    mean_.aux = var_.aux = true;
    flops_ = Product(in) * 2;
    return absl::OkStatus();
  }
  absl::Status Forward1(CpuContext* ctx, const Tensor& in, Tensor* out,
                        bool training) override {
    if (!training) {
      return kernels::BatchNormForwardInference(
          ctx, in, gamma_.value, beta_.value, mean_.value, var_.value, p_, out);
    }
    return kernels::BatchNormForwardTraining(ctx, in, gamma_.value, beta_.value,
                                             p_, out, &state_, &mean_.value,
                                             &var_.value);
  }
  absl::Status Backward1(CpuContext* ctx, const Tensor& in, const Tensor&,
                         const Tensor& dout, Tensor* din) override {
    return kernels::BatchNormBackward(ctx, in, gamma_.value, dout, p_, state_,
                                      din, &gamma_.grad, &beta_.grad);
  }
  int64_t Flops() const override { return flops_; }
  std::string MxnetOp(Attrs* a) const override {
    *a = {{"eps", absl::StrFormat("%g", p_.eps)},
          {"momentum", absl::StrFormat("%g", p_.momentum)},
          {"fix_gamma", Bool(p_.fix_gamma)}};
    return "BatchNorm";
  }

 private:
  kernels::BatchNormParams p_;
  kernels::BatchNormState state_;
  Param gamma_, beta_, mean_, var_;
  int64_t flops_ = 0;
};

class LrnLayer : public UnaryLayer {
 public:
  LrnLayer(std::string name, const kernels::LrnParams& p)
      : UnaryLayer(std::move(name), LayerSpec::kLrn), p_(p) {
    spec_.lrn = p;
  }
  absl::Status Setup1(const Shape& in, Shape* out,
                      std::vector<Param*>*) override {
    PSTRAIN_RETURN_IF_ERROR(NeedNchw(name_, in));
    *out = in;
    flops_ = Product(in) * p_.nsize;
    return absl::OkStatus();
  }
  absl::Status Forward1(CpuContext* ctx, const Tensor& in, Tensor* out,
                        bool) override {
    return kernels::LrnForward(ctx, in, p_, out, &state_);
  }
  absl::Status Backward1(CpuContext* ctx, const Tensor& in, const Tensor&,
                         const Tensor& dout, Tensor* din) override {
    if (din == nullptr) return absl::OkStatus();
    return kernels::LrnBackward(ctx, in, dout, p_, state_, din);
  }
  int64_t Flops() const override { return flops_; }
  std::string MxnetOp(Attrs* a) const override {
    *a = {{"nsize", absl::StrCat(p_.nsize)},
          {"alpha", absl::StrFormat("%g", p_.alpha)},
          {"beta", absl::StrFormat("%g", p_.beta)},
          {"knorm", absl::StrFormat("%g", p_.knorm)}};
    return "LRN";
  }

 private:
  kernels::LrnParams p_;
  kernels::LrnState state_;
  int64_t flops_ = 0;
};

class DropoutLayer : public UnaryLayer {
 public:
  DropoutLayer(std::string name, float p, uint64_t seed)
      : UnaryLayer(std::move(name), LayerSpec::kDropout), p_(p), rng_(seed) {
    spec_.p = p;
    spec_.seed = seed;
  }
  absl::Status Setup1(const Shape& in, Shape* out,
                      std::vector<Param*>*) override {
    if (!(p_ >= 0.0f && p_ < 1.0f)) {
      return absl::InvalidArgumentError(absl::StrCat(
          name_, ": dropout probability ", p_, " is not in [0, 1)"));
    }
    *out = in;
    return absl::OkStatus();
  }
  absl::Status Forward1(CpuContext*, const Tensor& in, Tensor* out,
                        bool training) override {
    training_ = training && p_ > 0.0f;
    if (!training_) {
      if (out->data() != in.data()) {
        if (out->shape() != in.shape()) *out = Tensor(in.shape());
        std::copy(in.data(), in.data() + in.size(), out->data());
      }
      return absl::OkStatus();
    }
    return kernels::DropoutForward(p_, &rng_, in, out, &mask_);
  }
  absl::Status Backward1(CpuContext*, const Tensor&, const Tensor&,
                         const Tensor& dout, Tensor* din) override {
    if (din == nullptr) return absl::OkStatus();
    if (!training_) {
      if (din->shape() != dout.shape()) *din = Tensor(dout.shape());
      std::copy(dout.data(), dout.data() + dout.size(), din->data());
      return absl::OkStatus();
    }
    return kernels::DropoutBackward(mask_, dout, din);
  }
  Needs BackwardNeeds() const override { return Needs::kNothing; }
  bool CanRunInPlace() const override { return true; }
  std::string MxnetOp(Attrs* a) const override {
    *a = {{"p", absl::StrFormat("%g", p_)}};
    return "Dropout";
  }

 private:
  float p_;
  std::mt19937_64 rng_;
  Tensor mask_;
  bool training_ = false;
};

class ConcatLayer : public Layer {
 public:
  ConcatLayer(std::string name, int n) : name_(std::move(name)), n_(n) {
    spec_.kind = LayerSpec::kConcat;
    spec_.num_inputs = n;
  }
  std::string name() const override { return name_; }
  const LayerSpec& spec() const override { return spec_; }
  absl::Status Setup(const std::vector<Shape>& in, Shape* out,
                     std::vector<Param*>*) override {
    if (static_cast<int>(in.size()) != n_ || n_ < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(name_, ": expects ", n_, " inputs, got ", in.size()));
    }
    *out = in[0];
    for (size_t i = 1; i < in.size(); ++i) {
      Shape a = in[i], b = in[0];
      if (a.size() < 2 || a.size() != b.size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            name_, ": input ", i, " is ", kernels::ShapeToString(in[i])));
      }
      a[1] = b[1] = 0;
      if (a != b) {
        return absl::InvalidArgumentError(
            absl::StrCat(name_, ": inputs differ beyond the channel axis: ",
                         kernels::ShapeToString(in[0]), " and ",
                         kernels::ShapeToString(in[i])));
      }
      (*out)[1] += in[i][1];
    }
    shapes_ = in;
    return absl::OkStatus();
  }
  absl::Status Forward(CpuContext*, const std::vector<const Tensor*>& in,
                       Tensor* out, bool) override {
    return kernels::ConcatForward(in, out);
  }
  absl::Status Backward(CpuContext*, const std::vector<const Tensor*>&,
                        const Tensor&, const Tensor& dout,
                        const std::vector<Tensor*>& din) override {
    return kernels::ConcatBackward(dout, shapes_, din);
  }
  Needs BackwardNeeds() const override { return Needs::kNothing; }
  std::string MxnetOp(Attrs* a) const override {
    *a = {{"dim", "1"}, {"num_args", absl::StrCat(n_)}};
    return "Concat";
  }

 private:
  std::string name_;
  int n_;
  LayerSpec spec_;
  std::vector<Shape> shapes_;
};

class AddLayer : public Layer {
 public:
  explicit AddLayer(std::string name) : name_(std::move(name)) {
    spec_.kind = LayerSpec::kAdd;
    spec_.num_inputs = 2;
  }
  std::string name() const override { return name_; }
  const LayerSpec& spec() const override { return spec_; }
  absl::Status Setup(const std::vector<Shape>& in, Shape* out,
                     std::vector<Param*>*) override {
    if (in.size() != 2 || in[0] != in[1]) {
      return absl::InvalidArgumentError(
          absl::StrCat(name_, ": adds two inputs of the same shape, got ",
                       in.empty() ? "none" : kernels::ShapeToString(in[0]),
                       in.size() > 1 ? " and " : "",
                       in.size() > 1 ? kernels::ShapeToString(in[1]) : ""));
    }
    *out = in[0];
    return absl::OkStatus();
  }
  absl::Status Forward(CpuContext*, const std::vector<const Tensor*>& in,
                       Tensor* out, bool) override {
    return kernels::AddForward(*in[0], *in[1], out);
  }
  absl::Status Backward(CpuContext*, const std::vector<const Tensor*>&,
                        const Tensor&, const Tensor& dout,
                        const std::vector<Tensor*>& din) override {
    for (Tensor* d : din) {
      if (d == nullptr) continue;
      if (d->shape() != dout.shape()) *d = Tensor(dout.shape());
      std::copy(dout.data(), dout.data() + dout.size(), d->data());
    }
    return absl::OkStatus();
  }
  Needs BackwardNeeds() const override { return Needs::kNothing; }
  std::string MxnetOp(Attrs* a) const override {
    a->clear();
    return "elemwise_add";
  }

 private:
  std::string name_;
  LayerSpec spec_;
};

}  // namespace

std::unique_ptr<Layer> MakeConvolution(std::string name,
                                       const kernels::Conv2dParams& p,
                                       bool bias) {
  return std::make_unique<ConvLayer>(std::move(name), p, bias);
}
std::unique_ptr<Layer> MakePooling(std::string name,
                                   const kernels::Pool2dParams& p) {
  return std::make_unique<PoolLayer>(std::move(name), p);
}
std::unique_ptr<Layer> MakeFullyConnected(std::string name,
                                          int64_t num_hidden) {
  return std::make_unique<FcLayer>(std::move(name), num_hidden);
}
std::unique_ptr<Layer> MakeActivation(std::string name, kernels::Activation a) {
  return std::make_unique<ActLayer>(std::move(name), a);
}
std::unique_ptr<Layer> MakeFlatten(std::string name) {
  return std::make_unique<ViewLayer>(std::move(name), LayerSpec::kFlatten,
                                     /*flatten=*/true, "Flatten");
}
std::unique_ptr<Layer> MakeBatchNorm(std::string name,
                                     const kernels::BatchNormParams& p) {
  return std::make_unique<BatchNormLayer>(std::move(name), p);
}
std::unique_ptr<Layer> MakeLrn(std::string name, const kernels::LrnParams& p) {
  return std::make_unique<LrnLayer>(std::move(name), p);
}
std::unique_ptr<Layer> MakeDropout(std::string name, float p, uint64_t seed) {
  return std::make_unique<DropoutLayer>(std::move(name), p, seed);
}
std::unique_ptr<Layer> MakeConcat(std::string name, int num_inputs) {
  return std::make_unique<ConcatLayer>(std::move(name), num_inputs);
}
std::unique_ptr<Layer> MakeAdd(std::string name) {
  return std::make_unique<AddLayer>(std::move(name));
}
std::unique_ptr<Layer> MakeIdentity(std::string name) {
  return std::make_unique<ViewLayer>(std::move(name), LayerSpec::kIdentity,
                                     /*flatten=*/false, "_copy");
}

}  // namespace nn
}  // namespace pstrain
