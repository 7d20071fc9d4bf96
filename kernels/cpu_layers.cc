// CPU kernels for batch norm, LRN (forward on oneDNN), dropout, concat and
// add (parallel loops the compiler vectorises). Contracts in cpu_ops.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "kernels/cpu_internal.h"
#include "kernels/cpu_ops.h"
#include "util/status.h"

namespace pstrain {
namespace kernels {
namespace {

// Exact cache-key text for a float parameter (its bit pattern), so two
// values that print alike never share primitives.
uint32_t Bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return u;
}

// ---------------------------------------------------------------- batch norm

// x as [N, C, S]: S = H * W for [N, C, H, W], 1 for [N, C]. Channel c of
// sample n is the S contiguous floats at (n * C + c) * S.
struct NcsDims {
  int64_t n, c, s;
};

// Checks x and eps and views x as [N, C, S].
absl::Status BnDims(const Tensor& x, const BatchNormParams& p, NcsDims* d) {
  if (!(p.eps > 0))
    return Bad(absl::StrCat("batch norm eps must be positive, got ", p.eps));
  if (x.ndim() == 4) {
    *d = {x.dim(0), x.dim(1), x.dim(2) * x.dim(3)};
  } else if (x.ndim() == 2) {
    *d = {x.dim(0), x.dim(1), 1};
  } else {
    return Bad(
        absl::StrCat("batch norm input must be [N, C, H, W] or [N, C], got ",
                     x.ShapeString()));
  }
  if (x.empty())
    return Bad(absl::StrCat("batch norm input ", x.ShapeString(), " is empty"));
  return absl::OkStatus();
}

// A per-channel tensor (gamma, beta, a statistic) must be [C].
absl::Status CheckPerChannel(const char* name, const Tensor& t,
                             const Tensor& x) {
  if (t.shape() != std::vector<int64_t>{x.dim(1)}) {
    return Bad(absl::StrCat("batch norm ", name, " is ", t.ShapeString(),
                            ", want [", x.dim(1), "] for input ",
                            x.ShapeString()));
  }
  return absl::OkStatus();
}

// The sum of f(i) over the elements i of channel c: vectorised float sums
// along each sample's plane, added up in double across samples.
template <typename Fn>
double ChannelSum(const NcsDims& d, int64_t c, Fn f) {
  double total = 0;
  for (int64_t n = 0; n < d.n; ++n) {
    const int64_t base = (n * d.c + c) * d.s;
    float plane = 0;
#pragma omp simd reduction(+ : plane)
    for (int64_t i = base; i < base + d.s; ++i) plane += f(i);
    total += plane;
  }
  return total;
}

// Calls f(i) for the elements i of channel c, vectorised.
template <typename Fn>
void ForChannel(const NcsDims& d, int64_t c, Fn f) {
  for (int64_t n = 0; n < d.n; ++n) {
    const int64_t base = (n * d.c + c) * d.s;
#pragma omp simd
    for (int64_t i = base; i < base + d.s; ++i) f(i);
  }
}

// Batch norm runs on our own loops rather than oneDNN's: on NCHW its
// implementation (ncsp_bnorm) is about twice as slow, and its fast one
// needs the blocked layout, i.e. reorders of x, y, dy and dx. Channels are
// spread over the threads; each channel's passes stay in cache.

// ----------------------------------------------------------------------- LRN

absl::Status CheckLrn(const Tensor& x, const LrnParams& p) {
  if (x.ndim() != 4)
    return Bad(absl::StrCat("LRN input must be NCHW, got ", x.ShapeString()));
  if (p.nsize < 1 || p.nsize % 2 == 0) {
    return Bad(
        absl::StrCat("LRN nsize must be odd and positive, got ", p.nsize));
  }
  if (!(p.knorm > 0))
    return Bad(absl::StrCat("LRN knorm must be positive, got ", p.knorm));
  return absl::OkStatus();
}

// oneDNN's lrn_across_channels is MXNet's formula with the same alpha
// (dst = src / (k + alpha / n * sum of n squares)^beta, the sum clipped at
// the channel edges but still divided by n); cpu_layers_test checks this
// against a reference.
std::shared_ptr<dnnl::lrn_forward> GetLrnForward(CpuContext* ctx,
                                                 const Tensor& x,
                                                 const LrnParams& p) {
  const std::string key =
      absl::StrCat("lrn:", x.ShapeString(), ":", p.nsize, ",", Bits(p.alpha),
                   ",", Bits(p.beta), ",", Bits(p.knorm));
  auto& slot = ctx->cache()[key];
  if (slot) return std::static_pointer_cast<dnnl::lrn_forward>(slot);
  memory::desc md({x.dim(0), x.dim(1), x.dim(2), x.dim(3)}, f32, tag::nchw);
  dnnl::lrn_forward::desc fd(dnnl::prop_kind::forward_inference,
                             dnnl::algorithm::lrn_across_channels, md, p.nsize,
                             p.alpha, p.beta, p.knorm);
  auto fwd = std::make_shared<dnnl::lrn_forward>(
      dnnl::lrn_forward::primitive_desc(fd, ctx->engine()));
  slot = fwd;
  return fwd;
}

// LRN backward by hand, because oneDNN 2.6 has no fast one for NCHW: its
// NCHW backward is always the reference loop (about 20x slower than its
// forward on AlexNet's first LRN), and its NHWC JIT backward crashes for
// nsize 1. With h = nsize / 2 and the normalizer recomputed from x,
//   s_c  = knorm + alpha / nsize * sum_{|c'-c|<=h} x_c'^2,   y_c = x_c
//   s_c^-beta, dx_c = dy_c s_c^-beta
//          - 2 alpha beta / nsize * x_c * sum_{|c'-c|<=h} dy_c' x_c'
//          s_c'^(-beta-1).
// Every loop but the one calling pow runs along a contiguous H*W plane.
void LrnBackwardLoops(const Tensor& x, const Tensor& dy, const LrnParams& p,
                      Tensor* dx) {
  const int64_t channels = x.dim(1), plane = x.dim(2) * x.dim(3);
  const int64_t half = p.nsize / 2;
  const float a = p.alpha / p.nsize;
  const float coef = 2.0f * p.alpha * p.beta / p.nsize;
  // For one sample: s^-beta and dy x s^(-beta-1), each [C, H*W]; one plane
  // of window sums.
  std::vector<float> pow_s(channels * plane), t(channels * plane), sum(plane);
  for (int64_t n = 0; n < x.dim(0); ++n) {
    const int64_t base = n * channels * plane;
    const float* xs = x.data() + base;
    const float* gs = dy.data() + base;
    float* out = dx->data() + base;
    for (int64_t c = 0; c < channels; ++c) {
      std::fill(sum.begin(), sum.end(), 0.0f);
      for (int64_t k = std::max<int64_t>(0, c - half);
           k <= std::min(channels - 1, c + half); ++k) {
        const float* xk = xs + k * plane;
        for (int64_t i = 0; i < plane; ++i) sum[i] += xk[i] * xk[i];
      }
      for (int64_t i = 0; i < plane; ++i) sum[i] = p.knorm + a * sum[i];  // s
      float* ps = pow_s.data() + c * plane;
      if (p.beta ==
          0.75f) {  // MXNet's and AlexNet's: no pow, and the loop vectorises.
        for (int64_t i = 0; i < plane; ++i)
          ps[i] = 1.0f / std::sqrt(sum[i] * std::sqrt(sum[i]));
      } else {
        for (int64_t i = 0; i < plane; ++i) ps[i] = std::pow(sum[i], -p.beta);
      }
      const float* xc = xs + c * plane;
      const float* gc = gs + c * plane;
      float* tc = t.data() + c * plane;
      for (int64_t i = 0; i < plane; ++i)
        tc[i] = gc[i] * xc[i] * ps[i] / sum[i];
    }
    for (int64_t c = 0; c < channels; ++c) {
      std::fill(sum.begin(), sum.end(), 0.0f);
      for (int64_t k = std::max<int64_t>(0, c - half);
           k <= std::min(channels - 1, c + half); ++k) {
        const float* tk = t.data() + k * plane;
        for (int64_t i = 0; i < plane; ++i) sum[i] += tk[i];
      }
      const float* xc = xs + c * plane;
      const float* gc = gs + c * plane;
      const float* ps = pow_s.data() + c * plane;
      float* oc = out + c * plane;
      for (int64_t i = 0; i < plane; ++i)
        oc[i] = gc[i] * ps[i] - coef * xc[i] * sum[i];
    }
  }
}

// -------------------------------------------------------------------- concat

// The shape the inputs concatenate to along axis 1, or InvalidArgument
// naming the first input that disagrees with input 0 elsewhere.
absl::StatusOr<std::vector<int64_t>> ConcatShape(
    absl::Span<const std::vector<int64_t>> shapes) {
  if (shapes.empty()) return Bad("concat needs at least one input");
  const std::vector<int64_t>& first = shapes[0];
  if (first.size() < 2) {
    return Bad(absl::StrCat("concat input 0 is ", ShapeToString(first),
                            ", want at least 2 dimensions (N, C, ...)"));
  }
  std::vector<int64_t> out = first;
  out[1] = 0;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const std::vector<int64_t>& s = shapes[i];
    bool same = s.size() == first.size();
    for (size_t d = 0; same && d < s.size(); ++d)
      same = d == 1 || s[d] == first[d];
    if (!same) {
      return Bad(absl::StrCat("concat input ", i, " is ", ShapeToString(s),
                              ", which differs from input 0 ",
                              ShapeToString(first),
                              " outside the channel axis 1"));
    }
    out[1] += s[1];
  }
  return out;
}

// Calls fn(i, out_offset, in_offset, count) for every contiguous block:
// `count` floats of input i at in_offset sit at out_offset of the output of
// shape `out`.
template <typename Fn>
void ForEachConcatBlock(absl::Span<const std::vector<int64_t>> shapes,
                        const std::vector<int64_t>& out, Fn fn) {
  int64_t inner = 1;
  for (size_t d = 2; d < out.size(); ++d) inner *= out[d];
  for (int64_t n = 0; n < out[0]; ++n) {
    int64_t channel = 0;
    for (size_t i = 0; i < shapes.size(); ++i) {
      const int64_t count = shapes[i][1] * inner;
      if (count > 0) fn(i, (n * out[1] + channel) * inner, n * count, count);
      channel += shapes[i][1];
    }
  }
}

absl::Status SameShape(const char* what, const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) {
    return Bad(absl::StrCat(what, ": shapes ", a.ShapeString(), " and ",
                            b.ShapeString(), " differ"));
  }
  return absl::OkStatus();
}

// *out = op(a[i], b[i]) for every i, once the shapes agree. *out may share
// storage with a or b (each element is read before it is written).
template <typename Op>
absl::Status Elementwise(const char* what, const Tensor& a, const Tensor& b,
                         Tensor* out, Op op) {
  PSTRAIN_RETURN_IF_ERROR(SameShape(what, a, b));
  Resize(out, a.shape());
  const float* pa = a.data();
  const float* pb = b.data();
  float* po = out->data();
  ParallelFor(a.size(), [=](int64_t i) { po[i] = op(pa[i], pb[i]); });
  return absl::OkStatus();
}

}  // namespace

absl::Status BatchNormForwardTraining(CpuContext* /*ctx*/, const Tensor& x,
                                      const Tensor& gamma, const Tensor& beta,
                                      const BatchNormParams& p, Tensor* y,
                                      BatchNormState* state,
                                      Tensor* moving_mean, Tensor* moving_var) {
  NcsDims d;
  PSTRAIN_RETURN_IF_ERROR(BnDims(x, p, &d));
  PSTRAIN_RETURN_IF_ERROR(CheckPerChannel("gamma", gamma, x));
  PSTRAIN_RETURN_IF_ERROR(CheckPerChannel("beta", beta, x));
  PSTRAIN_RETURN_IF_ERROR(CheckPerChannel("moving mean", *moving_mean, x));
  PSTRAIN_RETURN_IF_ERROR(CheckPerChannel("moving variance", *moving_var, x));
  Resize(y, x.shape());
  Resize(&state->mean, {d.c});
  Resize(&state->inv_std, {d.c});
  const double count = static_cast<double>(d.n * d.s);
  const float* in = x.data();
  float* out = y->data();
  const float* g = gamma.data();
  const float* b = beta.data();
  float* mean = state->mean.data();
  float* inv_std = state->inv_std.data();
  float* mm = moving_mean->data();
  float* mv = moving_var->data();
  const float m = p.momentum;
  ParallelForRows(d.c, d.n * d.s, [=](int64_t c) {
    const float mu = static_cast<float>(
        ChannelSum(d, c, [=](int64_t i) { return in[i]; }) / count);
    // The biased variance, from the centred values (no cancellation).
    auto square = [=](int64_t i) { return (in[i] - mu) * (in[i] - mu); };
    const float var = static_cast<float>(ChannelSum(d, c, square) / count);
    const float inv = 1.0f / std::sqrt(var + p.eps);
    const float scale = p.fix_gamma ? inv : g[c] * inv;
    const float shift = b[c];
    ForChannel(d, c, [=](int64_t i) { out[i] = (in[i] - mu) * scale + shift; });
    mean[c] = mu;
    inv_std[c] = inv;
    mm[c] = mm[c] * m + mu * (1 - m);
    mv[c] = mv[c] * m + var * (1 - m);
  });
  return absl::OkStatus();
}

absl::Status BatchNormForwardInference(CpuContext* /*ctx*/, const Tensor& x,
                                       const Tensor& gamma, const Tensor& beta,
                                       const Tensor& moving_mean,
                                       const Tensor& moving_var,
                                       const BatchNormParams& p, Tensor* y) {
  NcsDims d;
  PSTRAIN_RETURN_IF_ERROR(BnDims(x, p, &d));
  PSTRAIN_RETURN_IF_ERROR(CheckPerChannel("gamma", gamma, x));
  PSTRAIN_RETURN_IF_ERROR(CheckPerChannel("beta", beta, x));
  PSTRAIN_RETURN_IF_ERROR(CheckPerChannel("moving mean", moving_mean, x));
  PSTRAIN_RETURN_IF_ERROR(CheckPerChannel("moving variance", moving_var, x));
  Resize(y, x.shape());
  const float* in = x.data();
  float* out = y->data();
  const float* g = gamma.data();
  const float* b = beta.data();
  const float* mm = moving_mean.data();
  const float* mv = moving_var.data();
  ParallelForRows(d.c, d.n * d.s, [=](int64_t c) {
    const float inv = 1.0f / std::sqrt(mv[c] + p.eps);
    const float scale = p.fix_gamma ? inv : g[c] * inv;
    const float mu = mm[c], shift = b[c];
    ForChannel(d, c, [=](int64_t i) { out[i] = (in[i] - mu) * scale + shift; });
  });
  return absl::OkStatus();
}

// With xc = x - mean, inv = 1 / std, g = gamma (1 with fix_gamma) and m
// elements per channel:
//   dbeta = sum dy,  dgamma = inv * sum dy xc,
//   dx = g inv (dy - dbeta / m) - g inv^3 xc (sum dy xc) / m.
absl::Status BatchNormBackward(CpuContext* /*ctx*/, const Tensor& x,
                               const Tensor& gamma, const Tensor& dy,
                               const BatchNormParams& p,
                               const BatchNormState& state, Tensor* dx,
                               Tensor* dgamma, Tensor* dbeta) {
  NcsDims d;
  PSTRAIN_RETURN_IF_ERROR(BnDims(x, p, &d));
  PSTRAIN_RETURN_IF_ERROR(CheckPerChannel("gamma", gamma, x));
  PSTRAIN_RETURN_IF_ERROR(
      SameShape("batch norm backward: input and output gradient", x, dy));
  if (state.mean.empty() || state.inv_std.empty()) {
    return absl::FailedPreconditionError(
        "batch norm backward needs its training forward's state");
  }
  PSTRAIN_RETURN_IF_ERROR(CheckPerChannel("saved mean", state.mean, x));
  PSTRAIN_RETURN_IF_ERROR(CheckPerChannel("saved 1/std", state.inv_std, x));
  if (dx != nullptr) Resize(dx, x.shape());
  Resize(dgamma, {d.c});
  Resize(dbeta, {d.c});
  const double count = static_cast<double>(d.n * d.s);
  const float* in = x.data();
  const float* grad = dy.data();
  float* out = dx != nullptr ? dx->data() : nullptr;
  const float* g = gamma.data();
  const float* mean = state.mean.data();
  const float* inv_std = state.inv_std.data();
  float* dg = dgamma->data();
  float* db = dbeta->data();
  ParallelForRows(d.c, d.n * d.s, [=](int64_t c) {
    const float mu = mean[c], inv = inv_std[c];
    const double sum_dy = ChannelSum(d, c, [=](int64_t i) { return grad[i]; });
    const double sum_dy_xc =
        ChannelSum(d, c, [=](int64_t i) { return grad[i] * (in[i] - mu); });
    db[c] = static_cast<float>(sum_dy);
    dg[c] = p.fix_gamma ? 0.0f : static_cast<float>(sum_dy_xc * inv);
    if (out == nullptr) return;
    const float gc = p.fix_gamma ? 1.0f : g[c];
    const float a = gc * inv;
    const float mean_dy = static_cast<float>(sum_dy / count);
    const float k = static_cast<float>(gc * static_cast<double>(inv) * inv *
                                       inv * sum_dy_xc / count);
    ForChannel(d, c, [=](int64_t i) {
      out[i] = a * (grad[i] - mean_dy) - k * (in[i] - mu);
    });
  });
  return absl::OkStatus();
}

absl::Status LrnForward(CpuContext* ctx, const Tensor& x, const LrnParams& p,
                        Tensor* y, LrnState* state) {
  PSTRAIN_RETURN_IF_ERROR(CheckLrn(x, p));
  Resize(y, x.shape());
  state->workspace.reset();  // Backward needs nothing saved.
  return Guard("LRN forward", [&] {
    auto fwd = GetLrnForward(ctx, x, p);
    const memory::desc md({x.dim(0), x.dim(1), x.dim(2), x.dim(3)}, f32,
                          tag::nchw);
    fwd->execute(ctx->stream(), {{DNNL_ARG_SRC, Mem(md, ctx, x.data())},
                                 {DNNL_ARG_DST, Mem(md, ctx, y->data())}});
    ctx->stream().wait();
  });
}

absl::Status LrnBackward(CpuContext* /*ctx*/, const Tensor& x, const Tensor& dy,
                         const LrnParams& p, const LrnState& /*state*/,
                         Tensor* dx) {
  PSTRAIN_RETURN_IF_ERROR(CheckLrn(x, p));
  PSTRAIN_RETURN_IF_ERROR(
      SameShape("LRN backward: input and output gradient", x, dy));
  Resize(dx, x.shape());
  LrnBackwardLoops(x, dy, p, dx);
  return absl::OkStatus();
}

absl::Status DropoutForward(float p, std::mt19937_64* rng, const Tensor& x,
                            Tensor* y, Tensor* mask) {
  if (!(p >= 0.0f && p < 1.0f)) {
    return Bad(absl::StrCat("dropout probability ", p, " is not in [0, 1)"));
  }
  Resize(y, x.shape());
  Resize(mask, x.shape());
  const int64_t n = x.size();
  float* m = mask->data();
  if (p == 0.0f) {
    std::fill(m, m + n, 1.0f);
  } else {
    CHECK(rng != nullptr);
    // Each 64-bit draw gives two 32-bit uniforms; an element is kept when
    // its uniform is below (1 - p) * 2^32. The mask depends only on the
    // generator's state, never on the platform's distributions.
    const uint64_t threshold = static_cast<uint64_t>(std::ldexp(1.0 - p, 32));
    const float scale = 1.0f / (1.0f - p);
    int64_t i = 0;
    for (; i + 1 < n; i += 2) {
      const uint64_t r = (*rng)();
      m[i] = (r & 0xffffffffu) < threshold ? scale : 0.0f;
      m[i + 1] = (r >> 32) < threshold ? scale : 0.0f;
    }
    if (i < n) m[i] = ((*rng)() & 0xffffffffu) < threshold ? scale : 0.0f;
  }
  return Elementwise("dropout", x, *mask, y,
                     [](float v, float k) { return v * k; });
}

absl::Status DropoutBackward(const Tensor& mask, const Tensor& dy, Tensor* dx) {
  return Elementwise("dropout backward: mask and output gradient", mask, dy, dx,
                     [](float m, float g) { return m * g; });
}

absl::Status ConcatForward(absl::Span<const Tensor* const> xs, Tensor* y) {
  std::vector<std::vector<int64_t>> shapes;
  shapes.reserve(xs.size());
  for (const Tensor* x : xs) {
    CHECK(x != y && (y->empty() || x->data() != y->data()))
        << "concat output is an input";
    shapes.push_back(x->shape());
  }
  PSTRAIN_ASSIGN_OR_RETURN(const std::vector<int64_t> out, ConcatShape(shapes));
  Resize(y, out);
  float* dst = y->data();
  ForEachConcatBlock(
      shapes, out, [&](size_t i, int64_t out_at, int64_t in_at, int64_t count) {
        std::memcpy(dst + out_at, xs[i]->data() + in_at, count * sizeof(float));
      });
  return absl::OkStatus();
}

absl::Status ConcatBackward(const Tensor& dy,
                            absl::Span<const std::vector<int64_t>> shapes,
                            absl::Span<Tensor* const> dxs) {
  if (dxs.size() != shapes.size()) {
    return Bad(absl::StrCat("concat backward: ", shapes.size(),
                            " input shapes but ", dxs.size(), " gradients"));
  }
  PSTRAIN_ASSIGN_OR_RETURN(const std::vector<int64_t> out, ConcatShape(shapes));
  if (out != dy.shape()) {
    return Bad(
        absl::StrCat("concat backward: output gradient is ", dy.ShapeString(),
                     ", but the inputs concatenate to ", ShapeToString(out)));
  }
  for (size_t i = 0; i < dxs.size(); ++i) {
    if (dxs[i] == nullptr) continue;
    CHECK(dxs[i] != &dy && (dxs[i]->empty() || dxs[i]->data() != dy.data()))
        << "concat backward: gradient " << i << " is the output gradient";
    Resize(dxs[i], shapes[i]);
  }
  const float* src = dy.data();
  ForEachConcatBlock(
      shapes, out, [&](size_t i, int64_t out_at, int64_t in_at, int64_t count) {
        if (dxs[i] != nullptr)
          std::memcpy(dxs[i]->data() + in_at, src + out_at,
                      count * sizeof(float));
      });
  return absl::OkStatus();
}

absl::Status AddForward(const Tensor& a, const Tensor& b, Tensor* y) {
  return Elementwise("add", a, b, y, [](float u, float v) { return u + v; });
}

absl::Status AddInPlace(const Tensor& x, Tensor* acc) {
  return Elementwise("add in place", x, *acc, acc,
                     [](float u, float v) { return u + v; });
}

}  // namespace kernels
}  // namespace pstrain
