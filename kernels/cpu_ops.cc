#include "kernels/cpu_ops.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "kernels/cpu_internal.h"

namespace pstrain {
namespace kernels {
namespace {

// Convolution primitives for one shape and parameter set. oneDNN picks
// the layouts (format_tag::any: blocked nChw16c / OIhw16i16o-style on
// AVX-512, its fast JIT kernels); the caller's NCHW/OIHW tensors are
// reordered into them and back through StagedArgs.
struct ConvPrims {
  dnnl::convolution_forward fwd;
  dnnl::convolution_backward_data bwd_data;
  dnnl::convolution_backward_weights bwd_w;
  memory::desc bias_md;
  // Forward: x, w in; y out.
  StagedArg fwd_src, fwd_weights, fwd_dst;
  // Backward weights: x, dy in; dw out.
  StagedArg bw_src, bw_diff_dst, bw_diff_weights;
  // Backward data: dy (shared with backward weights when both want the
  // same layout), w in; dx out.
  bool bd_shares_diff_dst = false;
  StagedArg bd_diff_dst, bd_weights, bd_diff_src;
};

// Scratch roles of the staged convolution arguments.
enum ConvScratchRole {
  kConvSrc,
  kConvWeights,
  kConvDst,
  kConvDiffDst2,
  kConvDiffWeights
};

ScratchBuffers* GetConvScratch(CpuContext* ctx) {
  auto& slot = ctx->cache()["conv:scratch"];
  if (!slot) slot = std::make_shared<ScratchBuffers>();
  return static_cast<ScratchBuffers*>(slot.get());
}

std::shared_ptr<ConvPrims> GetConv(CpuContext* ctx, const Tensor& x,
                                   const Conv2dParams& p, bool bias, int64_t oh,
                                   int64_t ow) {
  const std::string key =
      absl::StrCat("conv:", x.ShapeString(), ":", p.kernel_h, ",", p.kernel_w,
                   ",", p.stride_h, ",", p.stride_w, ",", p.pad_h, ",", p.pad_w,
                   ",", p.dilation_h, ",", p.dilation_w, ",", p.groups, ",",
                   p.num_filter, ",", bias);
  auto& slot = ctx->cache()[key];
  if (slot) return std::static_pointer_cast<ConvPrims>(slot);
  const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
  memory::dims src{n, c, h, w}, dst{n, p.num_filter, oh, ow}, b{p.num_filter};
  memory::dims wt = p.groups == 1
                        ? memory::dims{p.num_filter, c, p.kernel_h, p.kernel_w}
                        : memory::dims{p.groups, p.num_filter / p.groups,
                                       c / p.groups, p.kernel_h, p.kernel_w};
  // The caller's layouts, and "any" for the primitives to choose.
  const memory::desc src_user(src, f32, tag::nchw),
      dst_user(dst, f32, tag::nchw);
  const memory::desc w_user(wt, f32, p.groups == 1 ? tag::oihw : tag::goihw);
  const memory::desc src_md(src, f32, tag::any), dst_md(dst, f32, tag::any);
  const memory::desc w_md(wt, f32, tag::any), b_md(b, f32, tag::x);
  memory::dims strides{p.stride_h, p.stride_w},
      dil{p.dilation_h - 1, p.dilation_w - 1};
  memory::dims pl{p.pad_h, p.pad_w};
  memory::dims pr{
      (oh - 1) * p.stride_h + (p.kernel_h - 1) * p.dilation_h + 1 - h - p.pad_h,
      (ow - 1) * p.stride_w + (p.kernel_w - 1) * p.dilation_w + 1 - w -
          p.pad_w};
  auto prims = std::make_shared<ConvPrims>();
  prims->bias_md = b_md;
  auto& eng = ctx->engine();
  const auto alg = dnnl::algorithm::convolution_direct;
  dnnl::convolution_forward::desc fd =
      bias ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training,
                                             alg, src_md, w_md, b_md, dst_md,
                                             strides, dil, pl, pr)
           : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training,
                                             alg, src_md, w_md, dst_md, strides,
                                             dil, pl, pr);
  dnnl::convolution_forward::primitive_desc fwd_pd(fd, eng);
  prims->fwd = dnnl::convolution_forward(fwd_pd);
  prims->fwd_src = StagedArg(ctx, src_user, fwd_pd.src_desc(), true);
  prims->fwd_weights = StagedArg(ctx, w_user, fwd_pd.weights_desc(), true);
  prims->fwd_dst = StagedArg(ctx, dst_user, fwd_pd.dst_desc(), false);

  dnnl::convolution_backward_weights::desc wd =
      bias ? dnnl::convolution_backward_weights::desc(
                 alg, src_md, w_md, b_md, dst_md, strides, dil, pl, pr)
           : dnnl::convolution_backward_weights::desc(alg, src_md, w_md, dst_md,
                                                      strides, dil, pl, pr);
  dnnl::convolution_backward_weights::primitive_desc bw_pd(wd, eng, fwd_pd);
  prims->bwd_w = dnnl::convolution_backward_weights(bw_pd);
  prims->bw_src = StagedArg(ctx, src_user, bw_pd.src_desc(), true);
  prims->bw_diff_dst = StagedArg(ctx, dst_user, bw_pd.diff_dst_desc(), true);
  prims->bw_diff_weights =
      StagedArg(ctx, w_user, bw_pd.diff_weights_desc(), false);

  dnnl::convolution_backward_data::desc bd(alg, src_md, w_md, dst_md, strides,
                                           dil, pl, pr);
  dnnl::convolution_backward_data::primitive_desc bd_pd(bd, eng, fwd_pd);
  prims->bwd_data = dnnl::convolution_backward_data(bd_pd);
  prims->bd_shares_diff_dst = bd_pd.diff_dst_desc() == bw_pd.diff_dst_desc();
  prims->bd_diff_dst = StagedArg(ctx, dst_user, bd_pd.diff_dst_desc(), true);
  prims->bd_weights = StagedArg(ctx, w_user, bd_pd.weights_desc(), true);
  prims->bd_diff_src = StagedArg(ctx, src_user, bd_pd.diff_src_desc(), false);
  slot = prims;
  return prims;
}

absl::Status CheckConv(const Tensor& x, const Tensor& w, const Tensor& b,
                       const Conv2dParams& p, int64_t* oh, int64_t* ow) {
  // An empty bias tensor means no bias, whatever its shape.
  return CheckConv2dShapes(x.shape(), w.shape(),
                           b.empty() ? std::vector<int64_t>{} : b.shape(), p,
                           oh, ow);
}

}  // namespace

CpuContext::CpuContext()
    : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {}

int64_t ConvOutSize(int64_t in, int kernel, int stride, int pad, int dilation) {
  const int64_t span = static_cast<int64_t>(kernel - 1) * dilation + 1;
  if (stride < 1 || in + 2 * pad < span) return -1;
  return (in + 2 * pad - span) / stride + 1;
}

absl::Status CheckConv2dShapes(const std::vector<int64_t>& x,
                               const std::vector<int64_t>& w,
                               const std::vector<int64_t>& b,
                               const Conv2dParams& p, int64_t* oh,
                               int64_t* ow) {
  if (x.size() != 4) {
    return Bad(
        absl::StrCat("convolution input must be NCHW, got ", ShapeToString(x)));
  }
  if (p.groups < 1 || x[1] % p.groups != 0 || p.num_filter % p.groups != 0) {
    return Bad(absl::StrCat("convolution: ", x[1], " channels and ",
                            p.num_filter, " filters are not divisible by ",
                            p.groups, " groups"));
  }
  const std::vector<int64_t> want{p.num_filter, x[1] / p.groups, p.kernel_h,
                                  p.kernel_w};
  if (w != want) {
    return Bad(absl::StrCat("convolution weight is ", ShapeToString(w),
                            ", want ", ShapeToString(want)));
  }
  if (!b.empty() && b != std::vector<int64_t>{p.num_filter}) {
    return Bad(absl::StrCat("convolution bias is ", ShapeToString(b)));
  }
  *oh = ConvOutSize(x[2], p.kernel_h, p.stride_h, p.pad_h, p.dilation_h);
  *ow = ConvOutSize(x[3], p.kernel_w, p.stride_w, p.pad_w, p.dilation_w);
  if (*oh <= 0 || *ow <= 0) {
    return Bad(absl::StrCat("convolution window ", p.kernel_h, "x", p.kernel_w,
                            " does not fit input ", ShapeToString(x)));
  }
  return absl::OkStatus();
}

absl::Status Pool2dGeometry(const std::vector<int64_t>& x, Pool2dParams* p,
                            int64_t* oh, int64_t* ow) {
  if (x.size() != 4) {
    return Bad(
        absl::StrCat("pooling input must be NCHW, got ", ShapeToString(x)));
  }
  if (p->global) {
    p->kernel_h = static_cast<int>(x[2]);
    p->kernel_w = static_cast<int>(x[3]);
    p->stride_h = p->stride_w = 1;
    p->pad_h = p->pad_w = 0;
  }
  *oh = ConvOutSize(x[2], p->kernel_h, p->stride_h, p->pad_h, 1);
  *ow = ConvOutSize(x[3], p->kernel_w, p->stride_w, p->pad_w, 1);
  if (*oh <= 0 || *ow <= 0) {
    return Bad(absl::StrCat("pooling window ", p->kernel_h, "x", p->kernel_w,
                            " does not fit input ", ShapeToString(x)));
  }
  return absl::OkStatus();
}

absl::Status Conv2dForward(CpuContext* ctx, const Tensor& x, const Tensor& w,
                           const Tensor& b, const Conv2dParams& p, Tensor* y) {
  int64_t oh, ow;
  absl::Status s = CheckConv(x, w, b, p, &oh, &ow);
  if (!s.ok()) return s;
  Resize(y, {x.dim(0), p.num_filter, oh, ow});
  return Guard("convolution forward", [&] {
    auto prims = GetConv(ctx, x, p, !b.empty(), oh, ow);
    ScratchBuffers* scratch = GetConvScratch(ctx);
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, prims->fwd_src.In(ctx, scratch, kConvSrc, x.data())},
        {DNNL_ARG_WEIGHTS,
         prims->fwd_weights.In(ctx, scratch, kConvWeights, w.data())},
        {DNNL_ARG_DST, prims->fwd_dst.Out(scratch, kConvDst, y->data())}};
    if (!b.empty()) args[DNNL_ARG_BIAS] = Mem(prims->bias_md, ctx, b.data());
    prims->fwd.execute(ctx->stream(), args);
    prims->fwd_dst.Finish(ctx);
    ctx->stream().wait();
  });
}

absl::Status Conv2dBackward(CpuContext* ctx, const Tensor& x, const Tensor& w,
                            const Tensor& dy, const Conv2dParams& p, Tensor* dx,
                            Tensor* dw, Tensor* db) {
  int64_t oh, ow;
  const bool bias = db != nullptr;
  Tensor no_bias;
  absl::Status s = CheckConv(x, w, no_bias, p, &oh, &ow);
  if (!s.ok()) return s;
  if (dy.shape() != std::vector<int64_t>{x.dim(0), p.num_filter, oh, ow}) {
    return Bad(
        absl::StrCat("convolution output gradient is ", dy.ShapeString()));
  }
  if (dx != nullptr) Resize(dx, x.shape());
  Resize(dw, w.shape());
  if (bias) Resize(db, {p.num_filter});
  return Guard("convolution backward", [&] {
    auto prims = GetConv(ctx, x, p, bias, oh, ow);
    ScratchBuffers* scratch = GetConvScratch(ctx);
    // Weights first: its staged x is no longer needed afterwards, so dx can
    // take the same scratch.
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, prims->bw_src.In(ctx, scratch, kConvSrc, x.data())},
        {DNNL_ARG_DIFF_DST,
         prims->bw_diff_dst.In(ctx, scratch, kConvDst, dy.data())},
        {DNNL_ARG_DIFF_WEIGHTS,
         prims->bw_diff_weights.Out(scratch, kConvDiffWeights, dw->data())}};
    if (bias) args[DNNL_ARG_DIFF_BIAS] = Mem(prims->bias_md, ctx, db->data());
    prims->bwd_w.execute(ctx->stream(), args);
    prims->bw_diff_weights.Finish(ctx);
    if (dx != nullptr) {
      const memory& diff_dst =
          prims->bd_shares_diff_dst
              ? prims->bw_diff_dst.prim()
              : prims->bd_diff_dst.In(ctx, scratch, kConvDiffDst2, dy.data());
      prims->bwd_data.execute(
          ctx->stream(),
          {{DNNL_ARG_DIFF_DST, diff_dst},
           {DNNL_ARG_WEIGHTS,
            prims->bd_weights.In(ctx, scratch, kConvWeights, w.data())},
           {DNNL_ARG_DIFF_SRC,
            prims->bd_diff_src.Out(scratch, kConvSrc, dx->data())}});
      prims->bd_diff_src.Finish(ctx);
    }
    ctx->stream().wait();
  });
}

namespace {

struct PoolPrims {
  dnnl::pooling_forward::primitive_desc fwd_pd;
  dnnl::pooling_forward fwd;
  dnnl::pooling_backward::primitive_desc bwd_pd;
  dnnl::pooling_backward bwd;
};

absl::Status PoolGeometry(const Tensor& x, Pool2dParams* p, int64_t* oh,
                          int64_t* ow) {
  return Pool2dGeometry(x.shape(), p, oh, ow);
}

std::shared_ptr<PoolPrims> GetPool(CpuContext* ctx, const Tensor& x,
                                   const Pool2dParams& p, int64_t oh,
                                   int64_t ow) {
  const std::string key =
      absl::StrCat("pool:", x.ShapeString(), ":", static_cast<int>(p.kind), ",",
                   p.kernel_h, ",", p.kernel_w, ",", p.stride_h, ",",
                   p.stride_w, ",", p.pad_h, ",", p.pad_w);
  auto& slot = ctx->cache()[key];
  if (slot) return std::static_pointer_cast<PoolPrims>(slot);
  memory::desc src_md({x.dim(0), x.dim(1), x.dim(2), x.dim(3)}, f32, tag::nchw);
  memory::desc dst_md({x.dim(0), x.dim(1), oh, ow}, f32, tag::nchw);
  memory::dims strides{p.stride_h, p.stride_w}, kernel{p.kernel_h, p.kernel_w};
  memory::dims pl{p.pad_h, p.pad_w};
  memory::dims pr{(oh - 1) * p.stride_h + p.kernel_h - x.dim(2) - p.pad_h,
                  (ow - 1) * p.stride_w + p.kernel_w - x.dim(3) - p.pad_w};
  // MXNet's average pooling counts the padding (count_include_pad).
  const auto alg = p.kind == PoolKind::kMax
                       ? dnnl::algorithm::pooling_max
                       : dnnl::algorithm::pooling_avg_include_padding;
  auto prims = std::make_shared<PoolPrims>();
  dnnl::pooling_forward::desc fd(dnnl::prop_kind::forward_training, alg, src_md,
                                 dst_md, strides, kernel, pl, pr);
  prims->fwd_pd = dnnl::pooling_forward::primitive_desc(fd, ctx->engine());
  prims->fwd = dnnl::pooling_forward(prims->fwd_pd);
  dnnl::pooling_backward::desc bd(alg, src_md, dst_md, strides, kernel, pl, pr);
  prims->bwd_pd =
      dnnl::pooling_backward::primitive_desc(bd, ctx->engine(), prims->fwd_pd);
  prims->bwd = dnnl::pooling_backward(prims->bwd_pd);
  slot = prims;
  return prims;
}

}  // namespace

absl::Status Pool2dForward(CpuContext* ctx, const Tensor& x,
                           const Pool2dParams& params, Tensor* y,
                           PoolState* state) {
  Pool2dParams p = params;
  int64_t oh, ow;
  absl::Status s = PoolGeometry(x, &p, &oh, &ow);
  if (!s.ok()) return s;
  Resize(y, {x.dim(0), x.dim(1), oh, ow});
  return Guard("pooling forward", [&] {
    auto prims = GetPool(ctx, x, p, oh, ow);
    const auto& pd = prims->fwd_pd;
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, Mem(pd.src_desc(), ctx, x.data())},
        {DNNL_ARG_DST, Mem(pd.dst_desc(), ctx, y->data())}};
    if (p.kind == PoolKind::kMax) {
      auto ws = std::make_shared<memory>(pd.workspace_desc(), ctx->engine());
      args[DNNL_ARG_WORKSPACE] = *ws;
      state->workspace = ws;
    }
    prims->fwd.execute(ctx->stream(), args);
    ctx->stream().wait();
  });
}

absl::Status Pool2dBackward(CpuContext* ctx, const Tensor& x, const Tensor& dy,
                            const Pool2dParams& params, const PoolState& state,
                            Tensor* dx) {
  Pool2dParams p = params;
  int64_t oh, ow;
  absl::Status s = PoolGeometry(x, &p, &oh, &ow);
  if (!s.ok()) return s;
  if (dy.shape() != std::vector<int64_t>{x.dim(0), x.dim(1), oh, ow}) {
    return Bad(absl::StrCat("pooling output gradient is ", dy.ShapeString()));
  }
  if (p.kind == PoolKind::kMax && state.workspace == nullptr) {
    return absl::FailedPreconditionError(
        "max pooling backward needs its forward's state");
  }
  Resize(dx, x.shape());
  return Guard("pooling backward", [&] {
    auto prims = GetPool(ctx, x, p, oh, ow);
    const auto& pd = prims->bwd_pd;
    std::unordered_map<int, memory> args{
        {DNNL_ARG_DIFF_DST, Mem(pd.diff_dst_desc(), ctx, dy.data())},
        {DNNL_ARG_DIFF_SRC, Mem(pd.diff_src_desc(), ctx, dx->data())}};
    if (p.kind == PoolKind::kMax) {
      args[DNNL_ARG_WORKSPACE] =
          *std::static_pointer_cast<memory>(state.workspace);
    }
    prims->bwd.execute(ctx->stream(), args);
    ctx->stream().wait();
  });
}

absl::Status FullyConnectedForward(const Tensor& x, const Tensor& w,
                                   const Tensor& b, Tensor* y) {
  if (x.ndim() < 2 || w.ndim() != 2 || x.size() / x.dim(0) != w.dim(1)) {
    return Bad(absl::StrCat("fully connected: input ", x.ShapeString(),
                            " does not match weight ", w.ShapeString()));
  }
  const int64_t n = x.dim(0), k = w.dim(1), o = w.dim(0);
  if (!b.empty() && b.size() != o)
    return Bad(absl::StrCat("fully connected bias is ", b.ShapeString()));
  Resize(y, {n, o});
  if (dnnl_sgemm('N', 'T', n, o, k, 1.0f, x.data(), k, w.data(), k, 0.0f,
                 y->data(), o) != dnnl_success) {
    return absl::InternalError("dnnl_sgemm failed");
  }
  if (!b.empty()) {
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < o; ++j) y->data()[i * o + j] += b.data()[j];
    }
  }
  return absl::OkStatus();
}

absl::Status FullyConnectedBackward(const Tensor& x, const Tensor& w,
                                    const Tensor& dy, Tensor* dx, Tensor* dw,
                                    Tensor* db) {
  const int64_t n = x.dim(0), k = w.dim(1), o = w.dim(0);
  if (x.size() / n != k || dy.shape() != std::vector<int64_t>{n, o}) {
    return Bad(absl::StrCat("fully connected backward: input ", x.ShapeString(),
                            ", weight ", w.ShapeString(), ", output gradient ",
                            dy.ShapeString()));
  }
  if (dx != nullptr) {
    Resize(dx, x.shape());
    if (dnnl_sgemm('N', 'N', n, k, o, 1.0f, dy.data(), o, w.data(), k, 0.0f,
                   dx->data(), k) != dnnl_success) {
      return absl::InternalError("dnnl_sgemm failed");
    }
  }
  Resize(dw, w.shape());
  if (dnnl_sgemm('T', 'N', o, k, n, 1.0f, dy.data(), o, x.data(), k, 0.0f,
                 dw->data(), k) != dnnl_success) {
    return absl::InternalError("dnnl_sgemm failed");
  }
  if (db != nullptr) {
    Resize(db, {o});
    db->Fill(0.0f);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < o; ++j) db->data()[j] += dy.data()[i * o + j];
    }
  }
  return absl::OkStatus();
}

absl::Status ActivationForward(Activation a, const Tensor& x, Tensor* y) {
  Resize(y, x.shape());
  // y may be x (in-place activations): every element is read before it is
  // written.
  const float* in = x.data();
  float* out = y->data();
  const int64_t n = x.size();
  switch (a) {
    case Activation::kRelu:
      ParallelFor(n, [=](int64_t i) { out[i] = std::max(in[i], 0.0f); });
      break;
    case Activation::kTanh:
      ParallelFor(n, [=](int64_t i) { out[i] = TanhApprox(in[i]); });
      break;
    case Activation::kSigmoid:
      ParallelFor(n, [=](int64_t i) { out[i] = SigmoidApprox(in[i]); });
      break;
  }
  return absl::OkStatus();
}

absl::Status ActivationBackward(Activation a, const Tensor& y, const Tensor& dy,
                                Tensor* dx) {
  if (y.shape() != dy.shape()) {
    return Bad(absl::StrCat("activation backward: ", y.ShapeString(), " vs ",
                            dy.ShapeString()));
  }
  Resize(dx, y.shape());
  const float* out = y.data();
  const float* g = dy.data();
  float* d = dx->data();
  const int64_t n = y.size();
  switch (a) {
    case Activation::kRelu:
      // g[i] is loaded unconditionally, so that the select vectorises.
      ParallelFor(n, [=](int64_t i) {
        const float gi = g[i];
        d[i] = out[i] > 0.0f ? gi : 0.0f;
      });
      break;
    case Activation::kTanh:
      ParallelFor(n,
                  [=](int64_t i) { d[i] = g[i] * (1.0f - out[i] * out[i]); });
      break;
    case Activation::kSigmoid:
      ParallelFor(n,
                  [=](int64_t i) { d[i] = g[i] * out[i] * (1.0f - out[i]); });
      break;
  }
  return absl::OkStatus();
}

absl::Status SoftmaxCrossEntropy(const Tensor& logits,
                                 absl::Span<const float> labels, Tensor* probs,
                                 double* loss) {
  if (logits.ndim() != 2 ||
      static_cast<int64_t>(labels.size()) != logits.dim(0)) {
    return Bad(absl::StrCat("softmax: logits ", logits.ShapeString(), " for ",
                            labels.size(), " labels"));
  }
  const int64_t n = logits.dim(0), c = logits.dim(1);
  Resize(probs, logits.shape());
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* z = logits.data() + i * c;
    float* p = probs->data() + i * c;
    const float m = *std::max_element(z, z + c);
    double sum = 0;
    for (int64_t j = 0; j < c; ++j) sum += (p[j] = std::exp(z[j] - m));
    for (int64_t j = 0; j < c; ++j) p[j] = static_cast<float>(p[j] / sum);
    const float l = labels[i];
    if (!(l >= 0 && l < c) || l != std::floor(l)) {
      return Bad(absl::StrCat("label ", l, " of sample ", i,
                              " is not a class in [0, ", c, ")"));
    }
    total += -std::log(std::max(1e-30f, p[static_cast<int64_t>(l)]));
  }
  *loss = total / n;
  return absl::OkStatus();
}

absl::Status SoftmaxCrossEntropyBackward(const Tensor& probs,
                                         absl::Span<const float> labels,
                                         float scale, Tensor* dlogits) {
  const int64_t n = probs.dim(0), c = probs.dim(1);
  if (static_cast<int64_t>(labels.size()) != n)
    return Bad("softmax backward: label count");
  Resize(dlogits, probs.shape());
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < c; ++j) {
      dlogits->data()[i * c + j] =
          scale * (probs.data()[i * c + j] -
                   (j == static_cast<int64_t>(labels[i]) ? 1.0f : 0.0f));
    }
  }
  return absl::OkStatus();
}

}  // namespace kernels
}  // namespace pstrain
