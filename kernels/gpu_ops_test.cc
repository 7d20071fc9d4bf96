// The GPU kernels (gpu_ops.h) against the CPU kernels (cpu_ops.h) for
// convolution, pooling, fully connected, activations and softmax, and
// against reference loops written here (in double) for batch norm, LRN,
// dropout, concat, add, momentum SGD and buffer sums. The reference loops
// of batch norm and LRN are themselves checked by finite differences; those
// checks, and GpuContext's argument errors, run without a GPU too.
//
// Built only with --config=cuda and tagged "gpu"; where no GPU is usable
// the GPU tests skip and say why.
#include "kernels/gpu_ops.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cpu_ops.h"
#include "kernels/gpu_context.h"
#include "kernels/gpu_tensor.h"
#include "kernels/tensor.h"

namespace pstrain {
namespace kernels {
namespace {

#define ASSERT_OK(expr)                                       \
  do {                                                        \
    const absl::Status assert_ok_status_ = (expr);            \
    ASSERT_TRUE(assert_ok_status_.ok()) << assert_ok_status_; \
  } while (0)

// Relative tolerance for GPU vs CPU (TF32 is off in the default context).
constexpr double kRtol = 1e-4;

Tensor Random(const std::vector<int64_t>& shape, uint32_t seed,
              float lo = -1.0f, float hi = 1.0f) {
  Tensor t(shape);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  for (int64_t i = 0; i < t.size(); ++i) t.data()[i] = dist(rng);
  return t;
}

Tensor FromDoubles(const std::vector<int64_t>& shape,
                   const std::vector<double>& v) {
  Tensor t(shape);
  EXPECT_EQ(t.size(), static_cast<int64_t>(v.size()));
  for (int64_t i = 0; i < t.size(); ++i) t.data()[i] = static_cast<float>(v[i]);
  return t;
}

std::vector<double> ToDoubles(const Tensor& t) {
  return std::vector<double>(t.data(), t.data() + t.size());
}

// |got - want| <= rtol * max(1, |want|) everywhere (NaN fails).
void ExpectNear(const Tensor& got, const Tensor& want, double rtol,
                const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < want.size(); ++i) {
    const double g = got.data()[i], w = want.data()[i];
    if (!(std::fabs(g - w) <= rtol * std::max(1.0, std::fabs(w)))) {
      if (first < 0) first = i;
      ++bad;
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << want.size()
                    << " elements differ; first at " << first << ": got "
                    << (first >= 0 ? got.data()[first] : 0) << ", want "
                    << (first >= 0 ? want.data()[first] : 0);
}

// ---------------------------------------------------------------------------
// Reference loops (double precision).

struct BnRef {
  std::vector<double> y, mean, inv_std, moving_mean, moving_var;
};

// MXNet's BatchNorm in training mode over x [N, C, ...].
BnRef BatchNormTrainingRef(const Tensor& x, const Tensor& gamma,
                           const Tensor& beta, const Tensor& moving_mean,
                           const Tensor& moving_var, const BatchNormParams& p) {
  const int64_t n = x.dim(0), c = x.dim(1), hw = x.size() / (n * c);
  BnRef r;
  r.y.resize(x.size());
  for (int64_t ch = 0; ch < c; ++ch) {
    double sum = 0, sq = 0;
    for (int64_t s = 0; s < n; ++s) {
      for (int64_t k = 0; k < hw; ++k) sum += x.data()[(s * c + ch) * hw + k];
    }
    const double mean = sum / (n * hw);
    for (int64_t s = 0; s < n; ++s) {
      for (int64_t k = 0; k < hw; ++k) {
        const double d = x.data()[(s * c + ch) * hw + k] - mean;
        sq += d * d;
      }
    }
    const double var = sq / (n * hw);
    const double inv_std = 1.0 / std::sqrt(var + p.eps);
    const double g = p.fix_gamma ? 1.0 : gamma.data()[ch];
    for (int64_t s = 0; s < n; ++s) {
      for (int64_t k = 0; k < hw; ++k) {
        const int64_t i = (s * c + ch) * hw + k;
        r.y[i] = g * (x.data()[i] - mean) * inv_std + beta.data()[ch];
      }
    }
    r.mean.push_back(mean);
    r.inv_std.push_back(inv_std);
    r.moving_mean.push_back(moving_mean.data()[ch] * p.momentum +
                            mean * (1 - p.momentum));
    r.moving_var.push_back(moving_var.data()[ch] * p.momentum +
                           var * (1 - p.momentum));
  }
  return r;
}

std::vector<double> BatchNormInferenceRef(const Tensor& x, const Tensor& gamma,
                                          const Tensor& beta,
                                          const Tensor& moving_mean,
                                          const Tensor& moving_var,
                                          const BatchNormParams& p) {
  const int64_t n = x.dim(0), c = x.dim(1), hw = x.size() / (n * c);
  std::vector<double> y(x.size());
  for (int64_t i = 0; i < x.size(); ++i) {
    const int64_t ch = (i / hw) % c;
    const double g = p.fix_gamma ? 1.0 : gamma.data()[ch];
    y[i] = g * (x.data()[i] - moving_mean.data()[ch]) /
               std::sqrt(static_cast<double>(moving_var.data()[ch]) + p.eps) +
           beta.data()[ch];
  }
  return y;
}

struct BnGradRef {
  std::vector<double> dx, dgamma, dbeta;
};

// Gradients of BatchNormTrainingRef's y.
BnGradRef BatchNormBackwardRef(const Tensor& x, const Tensor& gamma,
                               const Tensor& dy, const BatchNormParams& p) {
  const int64_t n = x.dim(0), c = x.dim(1), hw = x.size() / (n * c);
  const double m = static_cast<double>(n * hw);
  const BnRef fwd = BatchNormTrainingRef(x, gamma, gamma, gamma, gamma, p);
  BnGradRef r;
  r.dx.resize(x.size());
  for (int64_t ch = 0; ch < c; ++ch) {
    double sdy = 0, sdyx = 0;
    for (int64_t s = 0; s < n; ++s) {
      for (int64_t k = 0; k < hw; ++k) {
        const int64_t i = (s * c + ch) * hw + k;
        const double xhat = (x.data()[i] - fwd.mean[ch]) * fwd.inv_std[ch];
        sdy += dy.data()[i];
        sdyx += dy.data()[i] * xhat;
      }
    }
    r.dbeta.push_back(sdy);
    r.dgamma.push_back(p.fix_gamma ? 0.0 : sdyx);
    const double g = p.fix_gamma ? 1.0 : gamma.data()[ch];
    for (int64_t s = 0; s < n; ++s) {
      for (int64_t k = 0; k < hw; ++k) {
        const int64_t i = (s * c + ch) * hw + k;
        const double xhat = (x.data()[i] - fwd.mean[ch]) * fwd.inv_std[ch];
        r.dx[i] =
            g * fwd.inv_std[ch] / m * (m * dy.data()[i] - sdy - xhat * sdyx);
      }
    }
  }
  return r;
}

// MXNet's LRN: y = x / scale^beta with scale = knorm + alpha / nsize * sum
// of x^2 over the channels [c - nsize/2, c + nsize/2]. Calls
// fn(i, scale_i, window) for every element i of x [N, C, H, W], window
// being the flat indices of i's channel neighbours (i's included).
void ForEachLrnWindow(
    const Tensor& x, const LrnParams& p,
    const std::function<void(int64_t, double, const std::vector<int64_t>&)>&
        fn) {
  const int64_t c = x.dim(1), hw = x.dim(2) * x.dim(3);
  std::vector<int64_t> window;
  for (int64_t i = 0; i < x.size(); ++i) {
    const int64_t ch = (i / hw) % c;
    window.clear();
    double sum = 0;
    for (int64_t j = std::max<int64_t>(0, ch - p.nsize / 2);
         j <= std::min<int64_t>(c - 1, ch + p.nsize / 2); ++j) {
      const int64_t o = i + (j - ch) * hw;
      window.push_back(o);
      sum += static_cast<double>(x.data()[o]) * x.data()[o];
    }
    fn(i, p.knorm + p.alpha / p.nsize * sum, window);
  }
}

std::vector<double> LrnForwardRef(const Tensor& x, const LrnParams& p) {
  std::vector<double> y(x.size());
  ForEachLrnWindow(x, p,
                   [&](int64_t i, double scale, const std::vector<int64_t>&) {
                     y[i] = x.data()[i] * std::pow(scale, -p.beta);
                   });
  return y;
}

// dx_i = dy_i scale_i^-beta - 2 alpha beta / nsize x_i sum over the
// neighbours j (whose windows hold i) of dy_j x_j scale_j^(-beta - 1).
std::vector<double> LrnBackwardRef(const Tensor& x, const Tensor& dy,
                                   const LrnParams& p) {
  std::vector<double> scale(x.size());
  ForEachLrnWindow(x, p, [&](int64_t i, double s, const std::vector<int64_t>&) {
    scale[i] = s;
  });
  std::vector<double> dx(x.size());
  ForEachLrnWindow(
      x, p, [&](int64_t i, double s, const std::vector<int64_t>& window) {
        double acc = 0;
        for (int64_t j : window) {
          acc += dy.data()[j] * x.data()[j] * std::pow(scale[j], -p.beta - 1);
        }
        dx[i] = dy.data()[i] * std::pow(s, -p.beta) -
                2.0 * p.alpha * p.beta / p.nsize * x.data()[i] * acc;
      });
  return dx;
}

// Central differences of sum(f(x) * r) with respect to every element of x.
std::vector<double> NumericGradient(
    Tensor x, const Tensor& r,
    const std::function<std::vector<double>(const Tensor&)>& f) {
  std::vector<double> g(x.size());
  const float h = 1e-2f;
  for (int64_t i = 0; i < x.size(); ++i) {
    const float keep = x.data()[i];
    double lp = 0, lm = 0;
    x.data()[i] = keep + h;
    std::vector<double> yp = f(x);
    x.data()[i] = keep - h;
    std::vector<double> ym = f(x);
    x.data()[i] = keep;
    for (size_t j = 0; j < yp.size(); ++j) {
      lp += yp[j] * r.data()[j];
      lm += ym[j] * r.data()[j];
    }
    // x moved by the float-rounded steps.
    const double step =
        static_cast<double>(keep + h) - static_cast<double>(keep - h);
    g[i] = (lp - lm) / step;
  }
  return g;
}

void ExpectNearDoubles(const std::vector<double>& got,
                       const std::vector<double>& want, double tol,
                       const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], tol * std::max(1.0, std::fabs(want[i])))
        << what << " at " << i;
  }
}

// These run everywhere: they validate the reference loops the GPU is
// compared against.
TEST(ReferenceTest, BatchNormBackwardMatchesFiniteDifferences) {
  for (bool fix_gamma : {false, true}) {
    const Tensor x = Random({3, 2, 2, 3}, 1);
    const Tensor gamma = Random({2}, 2, 0.5f, 1.5f);
    const Tensor r = Random(x.shape(), 3);
    BatchNormParams p;
    p.fix_gamma = fix_gamma;
    const BnGradRef grads = BatchNormBackwardRef(x, gamma, r, p);
    const std::vector<double> numeric =
        NumericGradient(x, r, [&](const Tensor& xx) {
          return BatchNormTrainingRef(xx, gamma, gamma, gamma, gamma, p).y;
        });
    ExpectNearDoubles(grads.dx, numeric, 2e-3,
                      absl::StrCat("dx, fix_gamma=", fix_gamma));
    // dbeta = sum dy; dgamma = sum dy * xhat.
    const BnRef fwd = BatchNormTrainingRef(x, gamma, gamma, gamma, gamma, p);
    double dbeta0 = 0, dgamma0 = 0;
    for (int64_t s = 0; s < 3; ++s) {
      for (int64_t k = 0; k < 6; ++k) {
        const int64_t i = s * 12 + k;
        dbeta0 += r.data()[i];
        dgamma0 += r.data()[i] * (x.data()[i] - fwd.mean[0]) * fwd.inv_std[0];
      }
    }
    EXPECT_NEAR(grads.dbeta[0], dbeta0, 1e-9);
    EXPECT_NEAR(grads.dgamma[0], fix_gamma ? 0.0 : dgamma0, 1e-9);
  }
}

TEST(ReferenceTest, LrnBackwardMatchesFiniteDifferences) {
  LrnParams p;
  p.nsize = 3;
  p.alpha = 0.8f;
  p.beta = 0.75f;
  p.knorm = 1.5f;
  const Tensor x = Random({2, 5, 2, 2}, 4);
  const Tensor r = Random(x.shape(), 5);
  const std::vector<double> numeric = NumericGradient(
      x, r, [&](const Tensor& xx) { return LrnForwardRef(xx, p); });
  ExpectNearDoubles(LrnBackwardRef(x, r, p), numeric, 2e-3, "LRN dx");
}

// ---------------------------------------------------------------------------
// GpuContext argument errors (no GPU needed).

TEST(GpuContextTest, NegativeDeviceIsInvalid) {
  GpuContextOptions o;
  o.device = -1;
  auto ctx = GpuContext::Create(o);
  ASSERT_FALSE(ctx.ok());
  EXPECT_EQ(ctx.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(ctx.status().message().find("GPU -1"), absl::string_view::npos)
      << ctx.status();
}

TEST(GpuContextTest, MissingDeviceIsNotFoundAndNamed) {
  GpuContextOptions o;
  o.device = 977;
  auto ctx = GpuContext::Create(o);
  ASSERT_FALSE(ctx.ok());
  EXPECT_EQ(ctx.status().code(), absl::StatusCode::kNotFound) << ctx.status();
  EXPECT_NE(ctx.status().message().find("GPU 977"), absl::string_view::npos)
      << ctx.status();
}

// ---------------------------------------------------------------------------
// GPU tests.

GpuTensor UpOn(GpuContext* ctx, const Tensor& t) {
  absl::StatusOr<GpuTensor> g = GpuTensor::FromHost(ctx, t);
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? *g : GpuTensor();
}

Tensor DownOn(GpuContext* ctx, const GpuTensor& t) {
  Tensor h;
  const absl::Status s = t.Download(ctx, &h);
  EXPECT_TRUE(s.ok()) << s;
  return h;
}

class GpuOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ctx = GpuContext::Create(GpuContextOptions());
    if (!ctx.ok()) {
      // Only a machine without a usable GPU may skip; any other failure to
      // set up GPU 0 is a test failure.
      ASSERT_EQ(ctx.status().code(), absl::StatusCode::kNotFound)
          << ctx.status();
      GTEST_SKIP() << "No GPU, GPU test skipped: " << ctx.status();
    }
    ctx_ = std::move(*ctx);
  }

  GpuTensor Up(const Tensor& t) { return UpOn(ctx_.get(), t); }
  Tensor Down(const GpuTensor& t) { return DownOn(ctx_.get(), t); }

  std::unique_ptr<GpuContext> ctx_;
  CpuContext cpu_;
};

TEST_F(GpuOpsTest, TensorRoundTripViewsCloneAndZero) {
  const Tensor host = Random({2, 3, 5}, 11);
  GpuTensor g = Up(host);
  EXPECT_EQ(g.shape(), host.shape());
  EXPECT_EQ(g.device(), 0);
  ExpectNear(Down(g), host, 0, "round trip");

  // A view shares storage: zeroing it zeroes the original.
  GpuTensor view = g.Reshaped({6, 5});
  EXPECT_EQ(view.data(), g.data());
  absl::StatusOr<GpuTensor> clone = g.Clone(ctx_.get());
  ASSERT_TRUE(clone.ok()) << clone.status();
  EXPECT_NE(clone->data(), g.data());
  ASSERT_OK(view.SetZero(ctx_.get()));
  ExpectNear(Down(g), Tensor(host.shape()), 0, "zeroed through a view");
  ExpectNear(Down(*clone), host, 0, "clone kept its data");

  absl::StatusOr<GpuTensor> fresh = GpuTensor::Create(ctx_.get(), {7, 3});
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  ExpectNear(Down(*fresh), Tensor({7, 3}), 0, "new tensors are zero");
  EXPECT_FALSE(GpuTensor::Create(ctx_.get(), {2, -1}).ok());

  // Upload of another shape reallocates.
  const Tensor other = Random({4}, 12);
  ASSERT_OK(g.Upload(ctx_.get(), other));
  EXPECT_EQ(g.shape(), other.shape());
  ExpectNear(Down(g), other, 0, "re-upload");
}

struct ConvCase {
  std::vector<int64_t> x;  // NCHW
  Conv2dParams p;
};

Conv2dParams Conv(int f, int kh, int kw, int stride, int pad, int dilation,
                  int groups) {
  Conv2dParams p;
  p.num_filter = f;
  p.kernel_h = kh;
  p.kernel_w = kw;
  p.stride_h = p.stride_w = stride;
  p.pad_h = p.pad_w = pad;
  p.dilation_h = p.dilation_w = dilation;
  p.groups = groups;
  return p;
}

std::vector<ConvCase> ConvCases() {
  return {
      {{2, 3, 7, 9}, Conv(4, 3, 3, 1, 1, 1, 1)},
      {{2, 5, 11, 10}, Conv(7, 3, 2, 2, 0, 1, 1)},    // odd, stride 2
      {{1, 4, 8, 8}, Conv(6, 3, 3, 1, 1, 1, 2)},      // groups
      {{2, 6, 9, 9}, Conv(6, 3, 3, 2, 1, 1, 6)},      // depthwise
      {{1, 3, 13, 11}, Conv(5, 3, 3, 1, 2, 2, 1)},    // dilation
      {{3, 8, 7, 7}, Conv(16, 1, 1, 2, 0, 1, 1)},     // 1x1 stride 2
      {{4, 16, 15, 15}, Conv(32, 5, 5, 1, 2, 1, 1)},  // 5x5
      {{2, 12, 6, 5}, Conv(9, 3, 3, 1, 1, 1, 3)},     // groups, odd
  };
}

// Forward and backward of one convolution on the GPU against the CPU, twice
// (the second time on the cached plan and algorithms).
void CheckConvCase(CpuContext* cpu, GpuContext* ctx, const ConvCase& c,
                   bool bias, uint32_t seed) {
  const std::string what = absl::StrCat(
      ShapeToString(c.x), " F=", c.p.num_filter, " k=", c.p.kernel_h, "x",
      c.p.kernel_w, " s=", c.p.stride_h, " p=", c.p.pad_h,
      " d=", c.p.dilation_h, " g=", c.p.groups, bias ? " +bias" : "");
  const Tensor x = Random(c.x, seed);
  const Tensor w =
      Random({c.p.num_filter, c.x[1] / c.p.groups, c.p.kernel_h, c.p.kernel_w},
             seed + 1);
  const Tensor b = bias ? Random({c.p.num_filter}, seed + 2) : Tensor();
  Tensor y;
  ASSERT_OK(Conv2dForward(cpu, x, w, b, c.p, &y));
  const Tensor dy = Random(y.shape(), seed + 3);
  Tensor dx, dw, db;
  ASSERT_OK(Conv2dBackward(cpu, x, w, dy, c.p, &dx, &dw, bias ? &db : nullptr));

  GpuTensor gx = UpOn(ctx, x), gw = UpOn(ctx, w);
  GpuTensor gb = bias ? UpOn(ctx, b) : GpuTensor();
  GpuTensor gdy = UpOn(ctx, dy);
  GpuTensor gy, gdx, gdw, gdb;
  for (int round = 0; round < 2; ++round) {
    ASSERT_OK(Conv2dForward(ctx, gx, gw, gb, c.p, &gy));
    ASSERT_OK(Conv2dBackward(ctx, gx, gw, gdy, c.p, &gdx, &gdw,
                             bias ? &gdb : nullptr));
    ExpectNear(DownOn(ctx, gy), y, kRtol, what + " y");
    ExpectNear(DownOn(ctx, gdx), dx, kRtol, what + " dx");
    ExpectNear(DownOn(ctx, gdw), dw, kRtol, what + " dw");
    if (bias) ExpectNear(DownOn(ctx, gdb), db, kRtol, what + " db");
  }
}

TEST_F(GpuOpsTest, ConvolutionMatchesCpu) {
  uint32_t seed = 100;
  for (const ConvCase& c : ConvCases()) {
    for (bool bias : {true, false}) {
      CheckConvCase(&cpu_, ctx_.get(), c, bias, seed += 10);
    }
  }
}

TEST_F(GpuOpsTest, ConvolutionWithBenchmarkedAlgorithmsMatchesCpu) {
  GpuContextOptions o;
  o.conv_algo_search = ConvAlgoSearch::kBenchmark;
  o.conv_workspace_limit_bytes = size_t{64} << 20;
  o.deterministic = true;
  auto ctx = GpuContext::Create(o);
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  uint32_t seed = 500;
  for (const ConvCase& c : ConvCases()) {
    CheckConvCase(&cpu_, ctx->get(), c, true, seed += 10);
  }
}

TEST_F(GpuOpsTest, ConvolutionRejectsBadShapes) {
  const Conv2dParams p = Conv(4, 3, 3, 1, 1, 1, 1);
  GpuTensor x = Up(Random({1, 3, 5, 5}, 1));
  GpuTensor w = Up(Random({4, 2, 3, 3}, 2));  // Wrong input channels.
  GpuTensor y;
  absl::Status s = Conv2dForward(ctx_.get(), x, w, GpuTensor(), p, &y);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  GpuTensor dw;
  GpuTensor w_ok = Up(Random({4, 3, 3, 3}, 3));
  GpuTensor dy = Up(Random({1, 4, 4, 5}, 4));  // Wrong output size.
  s = Conv2dBackward(ctx_.get(), x, w_ok, dy, p, nullptr, &dw, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

TEST_F(GpuOpsTest, PoolingMatchesCpu) {
  struct Case {
    std::vector<int64_t> x;
    PoolKind kind;
    int k, stride, pad;
    bool global;
  };
  const std::vector<Case> cases = {
      {{2, 3, 8, 8}, PoolKind::kMax, 2, 2, 0, false},
      {{2, 3, 9, 7}, PoolKind::kMax, 3, 2, 1, false},
      {{1, 5, 11, 11}, PoolKind::kMax, 3, 1, 1, false},
      {{2, 4, 8, 8}, PoolKind::kAvg, 3, 1, 1, false},
      {{2, 3, 7, 7}, PoolKind::kAvg, 2, 2, 0, false},
      {{1, 2, 10, 9}, PoolKind::kAvg, 3, 2, 1, false},
      {{3, 6, 7, 5}, PoolKind::kAvg, 1, 1, 0, true},
      {{2, 4, 6, 6}, PoolKind::kMax, 1, 1, 0, true},
  };
  uint32_t seed = 900;
  for (const Case& c : cases) {
    Pool2dParams p;
    p.kind = c.kind;
    p.kernel_h = p.kernel_w = c.k;
    p.stride_h = p.stride_w = c.stride;
    p.pad_h = p.pad_w = c.pad;
    p.global = c.global;
    const std::string what = absl::StrCat(
        ShapeToString(c.x), c.kind == PoolKind::kMax ? " max" : " avg",
        c.global ? " global"
                 : absl::StrCat(" k", c.k, " s", c.stride, " p", c.pad));
    // Distinct values, so the maximum of every window is unique.
    const Tensor x = Random(c.x, seed += 3);
    Tensor y, dx;
    PoolState cpu_state;
    ASSERT_OK(Pool2dForward(&cpu_, x, p, &y, &cpu_state));
    const Tensor dy = Random(y.shape(), seed + 1);
    ASSERT_OK(Pool2dBackward(&cpu_, x, dy, p, cpu_state, &dx));

    GpuTensor gx = Up(x), gdy = Up(dy), gy, gdx;
    PoolState state;
    ASSERT_OK(Pool2dForward(ctx_.get(), gx, p, &gy, &state));
    ASSERT_OK(Pool2dBackward(ctx_.get(), gx, gdy, p, state, &gdx));
    ExpectNear(Down(gy), y, kRtol, what + " y");
    ExpectNear(Down(gdx), dx, kRtol, what + " dx");
  }
}

TEST_F(GpuOpsTest, MaxPoolingBackwardNeedsItsState) {
  Pool2dParams p;
  GpuTensor x = Up(Random({1, 1, 4, 4}, 1)), dy = Up(Random({1, 1, 2, 2}, 2));
  GpuTensor dx;
  const absl::Status s = Pool2dBackward(ctx_.get(), x, dy, p, PoolState(), &dx);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
}

TEST_F(GpuOpsTest, FullyConnectedMatchesCpu) {
  struct Case {
    std::vector<int64_t> x;
    int64_t out;
  };
  uint32_t seed = 1300;
  for (const Case& c : std::vector<Case>{
           {{5, 7}, 3}, {{32, 4, 5, 5}, 10}, {{1, 300}, 129}, {{17, 33}, 1}}) {
    for (bool bias : {true, false}) {
      const std::string what =
          absl::StrCat(ShapeToString(c.x), " -> ", c.out, bias ? " +bias" : "");
      const Tensor x = Random(c.x, seed += 5);
      const Tensor w = Random({c.out, x.size() / c.x[0]}, seed + 1);
      const Tensor b = bias ? Random({c.out}, seed + 2) : Tensor();
      Tensor y, dx, dw, db;
      ASSERT_OK(FullyConnectedForward(x, w, b, &y));
      const Tensor dy = Random(y.shape(), seed + 3);
      ASSERT_OK(
          FullyConnectedBackward(x, w, dy, &dx, &dw, bias ? &db : nullptr));

      GpuTensor gx = Up(x), gw = Up(w), gb = bias ? Up(b) : GpuTensor();
      GpuTensor gdy = Up(dy), gy, gdx, gdw, gdb;
      ASSERT_OK(FullyConnectedForward(ctx_.get(), gx, gw, gb, &gy));
      ASSERT_OK(FullyConnectedBackward(ctx_.get(), gx, gw, gdy, &gdx, &gdw,
                                       bias ? &gdb : nullptr));
      ExpectNear(Down(gy), y, kRtol, what + " y");
      ExpectNear(Down(gdx), dx, kRtol, what + " dx");
      EXPECT_EQ(gdx.shape(), x.shape());
      ExpectNear(Down(gdw), dw, kRtol, what + " dw");
      if (bias) ExpectNear(Down(gdb), db, kRtol, what + " db");
    }
  }
  GpuTensor y;
  const absl::Status s =
      FullyConnectedForward(ctx_.get(), Up(Random({2, 3}, 1)),
                            Up(Random({4, 5}, 2)), GpuTensor(), &y);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

TEST_F(GpuOpsTest, ActivationsMatchCpu) {
  uint32_t seed = 1700;
  for (Activation a :
       {Activation::kRelu, Activation::kTanh, Activation::kSigmoid}) {
    for (const std::vector<int64_t>& shape :
         std::vector<std::vector<int64_t>>{{1001}, {2, 3, 7, 5}}) {
      const std::string what = absl::StrCat("activation ", static_cast<int>(a),
                                            " ", ShapeToString(shape));
      const Tensor x = Random(shape, seed += 3, -3.0f, 3.0f);
      Tensor y, dx;
      ASSERT_OK(ActivationForward(a, x, &y));
      const Tensor dy = Random(shape, seed + 1);
      ASSERT_OK(ActivationBackward(a, y, dy, &dx));

      GpuTensor gx = Up(x), gdy = Up(dy), gy, gdx;
      ASSERT_OK(ActivationForward(ctx_.get(), a, gx, &gy));
      ASSERT_OK(ActivationBackward(ctx_.get(), a, gy, gdy, &gdx));
      ExpectNear(Down(gy), y, kRtol, what + " y");
      ExpectNear(Down(gdx), dx, kRtol, what + " dx");
      // In place.
      ASSERT_OK(ActivationForward(ctx_.get(), a, gx, &gx));
      ExpectNear(Down(gx), y, kRtol, what + " in place");
    }
  }
}

TEST_F(GpuOpsTest, SoftmaxCrossEntropyMatchesCpu) {
  struct Case {
    int64_t n, c;
  };
  uint32_t seed = 2100;
  for (const Case& c : std::vector<Case>{{7, 10}, {3, 1000}, {64, 3}, {1, 1}}) {
    const std::string what = absl::StrCat("softmax [", c.n, ", ", c.c, "]");
    const Tensor logits = Random({c.n, c.c}, seed += 3, -5.0f, 5.0f);
    std::vector<float> labels(c.n);
    std::mt19937 rng(seed);
    for (float& l : labels) l = static_cast<float>(rng() % c.c);
    Tensor probs, dlogits;
    double loss = 0;
    ASSERT_OK(SoftmaxCrossEntropy(logits, labels, &probs, &loss));
    ASSERT_OK(SoftmaxCrossEntropyBackward(probs, labels, 0.5f, &dlogits));

    GpuTensor glogits = Up(logits), gprobs, gdlogits;
    double gloss = -1;
    ASSERT_OK(
        SoftmaxCrossEntropy(ctx_.get(), glogits, labels, &gprobs, &gloss));
    EXPECT_NEAR(gloss, loss, kRtol * std::max(1.0, std::fabs(loss))) << what;
    ExpectNear(Down(gprobs), probs, kRtol, what + " probs");
    // Without a loss: no wait, same probabilities.
    GpuTensor gprobs2;
    ASSERT_OK(
        SoftmaxCrossEntropy(ctx_.get(), glogits, labels, &gprobs2, nullptr));
    ExpectNear(Down(gprobs2), probs, kRtol, what + " probs (no loss)");
    ASSERT_OK(SoftmaxCrossEntropyBackward(ctx_.get(), gprobs, labels, 0.5f,
                                          &gdlogits));
    ExpectNear(Down(gdlogits), dlogits, kRtol, what + " dlogits");
  }
  GpuTensor probs;
  double loss;
  const std::vector<float> bad = {0.0f, 3.0f};
  const absl::Status s = SoftmaxCrossEntropy(ctx_.get(), Up(Random({2, 3}, 1)),
                                             bad, &probs, &loss);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("label 3 of sample 1"), absl::string_view::npos)
      << s;
}

TEST_F(GpuOpsTest, BatchNormMatchesReference) {
  uint32_t seed = 2500;
  for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{
           {4, 3, 5, 7}, {8, 5}, {2, 16, 3, 3}, {1, 2, 1, 1}, {3, 1, 40, 33}}) {
    for (bool fix_gamma : {false, true}) {
      const std::string what = absl::StrCat("batch norm ", ShapeToString(shape),
                                            fix_gamma ? " fix_gamma" : "");
      const int64_t c = shape[1];
      BatchNormParams p;
      p.fix_gamma = fix_gamma;
      p.momentum = 0.8f;
      const Tensor x = Random(shape, seed += 7, -2.0f, 3.0f);
      const Tensor gamma = Random({c}, seed + 1, 0.5f, 1.5f);
      const Tensor beta = Random({c}, seed + 2);
      const Tensor mm = Random({c}, seed + 3);
      const Tensor mv = Random({c}, seed + 4, 0.5f, 2.0f);
      const Tensor dy = Random(shape, seed + 5);

      const BnRef ref = BatchNormTrainingRef(x, gamma, beta, mm, mv, p);
      GpuTensor gx = Up(x), ggamma = Up(gamma), gbeta = Up(beta);
      GpuTensor gmm = Up(mm), gmv = Up(mv), gy;
      GpuBatchNormState state;
      ASSERT_OK(BatchNormForwardTraining(ctx_.get(), gx, ggamma, gbeta, p, &gy,
                                         &state, &gmm, &gmv));
      ExpectNear(Down(gy), FromDoubles(shape, ref.y), kRtol, what + " y");
      ExpectNear(Down(state.mean), FromDoubles({c}, ref.mean), kRtol,
                 what + " mean");
      ExpectNear(Down(state.inv_std), FromDoubles({c}, ref.inv_std), kRtol,
                 what + " inv_std");
      ExpectNear(Down(gmm), FromDoubles({c}, ref.moving_mean), kRtol,
                 what + " moving mean");
      ExpectNear(Down(gmv), FromDoubles({c}, ref.moving_var), kRtol,
                 what + " moving var (biased)");

      const BnGradRef gref = BatchNormBackwardRef(x, gamma, dy, p);
      GpuTensor gdy = Up(dy), gdx, gdgamma, gdbeta;
      ASSERT_OK(BatchNormBackward(ctx_.get(), gx, ggamma, gdy, p, state, &gdx,
                                  &gdgamma, &gdbeta));
      ExpectNear(Down(gdx), FromDoubles(shape, gref.dx), kRtol, what + " dx");
      ExpectNear(Down(gdgamma), FromDoubles({c}, gref.dgamma), kRtol,
                 what + " dgamma");
      ExpectNear(Down(gdbeta), FromDoubles({c}, gref.dbeta), kRtol,
                 what + " dbeta");
      // Without dx.
      GpuTensor gdgamma2, gdbeta2;
      ASSERT_OK(BatchNormBackward(ctx_.get(), gx, ggamma, gdy, p, state,
                                  nullptr, &gdgamma2, &gdbeta2));
      ExpectNear(Down(gdbeta2), FromDoubles({c}, gref.dbeta), kRtol,
                 what + " dbeta without dx");

      GpuTensor gyi;
      ASSERT_OK(BatchNormForwardInference(ctx_.get(), gx, ggamma, gbeta, Up(mm),
                                          Up(mv), p, &gyi));
      ExpectNear(
          Down(gyi),
          FromDoubles(shape, BatchNormInferenceRef(x, gamma, beta, mm, mv, p)),
          kRtol, what + " inference");
    }
  }
  GpuTensor y, mm = Up(Random({3}, 1)), mv = Up(Random({3}, 2));
  GpuBatchNormState state;
  const absl::Status s = BatchNormForwardTraining(
      ctx_.get(), Up(Random({2, 4, 2, 2}, 3)), Up(Random({4}, 4)),
      Up(Random({4}, 5)), BatchNormParams(), &y, &state, &mm, &mv);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

TEST_F(GpuOpsTest, LrnMatchesReference) {
  struct Case {
    std::vector<int64_t> x;
    LrnParams p;
  };
  LrnParams alexnet;  // MXNet's defaults: nsize 5, alpha 1e-4, beta 0.75, k 2.
  LrnParams strong;
  strong.nsize = 3;
  strong.alpha = 0.9f;
  strong.beta = 0.6f;
  strong.knorm = 1.0f;
  LrnParams wide;
  wide.nsize = 7;
  wide.alpha = 0.5f;
  wide.knorm = 1.5f;
  uint32_t seed = 3100;
  for (const Case& c : std::vector<Case>{{{2, 7, 5, 5}, alexnet},
                                         {{1, 3, 4, 4}, strong},
                                         {{2, 16, 3, 3}, wide},
                                         {{1, 2, 3, 2}, wide}}) {
    const std::string what = absl::StrCat(
        "LRN ", ShapeToString(c.x), " n=", c.p.nsize, " alpha=", c.p.alpha);
    const Tensor x = Random(c.x, seed += 3, -2.0f, 2.0f);
    const Tensor dy = Random(c.x, seed + 1);
    GpuTensor gx = Up(x), gdy = Up(dy), gy, gdx;
    LrnState state;
    ASSERT_OK(LrnForward(ctx_.get(), gx, c.p, &gy, &state));
    ASSERT_OK(LrnBackward(ctx_.get(), gx, gdy, c.p, state, &gdx));
    ExpectNear(Down(gy), FromDoubles(c.x, LrnForwardRef(x, c.p)), kRtol,
               what + " y");
    ExpectNear(Down(gdx), FromDoubles(c.x, LrnBackwardRef(x, dy, c.p)), kRtol,
               what + " dx");
  }
  LrnParams even;
  even.nsize = 4;
  GpuTensor y;
  LrnState state;
  const absl::Status s =
      LrnForward(ctx_.get(), Up(Random({1, 4, 2, 2}, 1)), even, &y, &state);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

TEST_F(GpuOpsTest, DropoutMaskStatisticsAndBackward) {
  const int64_t n = 1 << 20;
  const Tensor x = Random({n}, 41);
  const Tensor dy = Random({n}, 42);
  GpuTensor gx = Up(x), gdy = Up(dy);
  for (float p : {0.0f, 0.1f, 0.5f, 0.9f}) {
    const std::string what = absl::StrCat("dropout p=", p);
    std::mt19937_64 rng(7);
    GpuTensor gy, gmask, gdx;
    ASSERT_OK(DropoutForward(ctx_.get(), p, &rng, gx, &gy, &gmask));
    ASSERT_OK(DropoutBackward(ctx_.get(), gmask, gdy, &gdx));
    const Tensor y = Down(gy), mask = Down(gmask), dx = Down(gdx);
    const float scale = 1.0f / (1.0f - p);
    int64_t kept = 0, kept_pairs = 0, bad = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float m = mask.data()[i];
      const bool k = m != 0.0f;
      if (m != 0.0f && m != scale) ++bad;
      // The same float products as the kernel: exact.
      if (y.data()[i] != x.data()[i] * m) ++bad;
      if (dx.data()[i] != dy.data()[i] * m) ++bad;
      kept += k;
      if (i % 2 == 1) kept_pairs += k && mask.data()[i - 1] != 0.0f;
    }
    EXPECT_EQ(bad, 0) << what;
    // Binomial(n, 1 - p): 0.005 is over 10 standard deviations.
    const double keep_rate = static_cast<double>(kept) / n;
    EXPECT_NEAR(keep_rate, 1.0 - p, 0.005) << what;
    // Neighbours are independent.
    EXPECT_NEAR(static_cast<double>(kept_pairs) / (n / 2),
                (1.0 - p) * (1.0 - p), 0.01)
        << what;

    // The same seed repeats the mask; the generator's next seed does not.
    std::mt19937_64 again(7);
    GpuTensor gy2, gmask2, gmask3;
    ASSERT_OK(DropoutForward(ctx_.get(), p, &again, gx, &gy2, &gmask2));
    ExpectNear(Down(gmask2), mask, 0, what + " same seed");
    ASSERT_OK(DropoutForward(ctx_.get(), p, &again, gx, &gy2, &gmask3));
    if (p > 0) {
      const Tensor m3 = Down(gmask3);
      int64_t differ = 0;
      for (int64_t i = 0; i < n; ++i) differ += m3.data()[i] != mask.data()[i];
      EXPECT_GT(differ, n * p * (1 - p)) << what << " next seed";
    }
  }
  std::mt19937_64 rng(1);
  GpuTensor y, mask;
  EXPECT_EQ(DropoutForward(ctx_.get(), 1.0f, &rng, gx, &y, &mask).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(GpuOpsTest, ConcatAndSplitMatchReference) {
  struct Case {
    std::vector<std::vector<int64_t>> shapes;
  };
  uint32_t seed = 3700;
  for (const Case& c :
       std::vector<Case>{{{{2, 3, 4, 5}, {2, 1, 4, 5}, {2, 6, 4, 5}}},
                         {{{3, 2}, {3, 5}}},
                         {{{1, 7, 3, 3}}},
                         {{{2, 0, 3, 3}, {2, 4, 3, 3}}}}) {
    std::vector<Tensor> xs;
    std::vector<GpuTensor> gxs;
    std::vector<const GpuTensor*> ptrs;
    for (const auto& s : c.shapes) {
      xs.push_back(Random(s, seed += 2));
      gxs.push_back(Up(xs.back()));
    }
    for (const GpuTensor& g : gxs) ptrs.push_back(&g);
    const std::vector<int64_t>& first = c.shapes[0];
    const int64_t n = first[0];
    int64_t channels = 0, inner = 1;
    for (const auto& s : c.shapes) channels += s[1];
    for (size_t d = 2; d < first.size(); ++d) inner *= first[d];
    std::vector<int64_t> out = first;
    out[1] = channels;
    const std::string what = absl::StrCat("concat to ", ShapeToString(out));
    // Reference: sample by sample, the inputs' channel blocks in order.
    Tensor want(out);
    for (int64_t s = 0; s < n; ++s) {
      int64_t offset = 0;
      for (const Tensor& x : xs) {
        const int64_t block = x.dim(1) * inner;
        for (int64_t k = 0; k < block; ++k) {
          want.data()[s * channels * inner + offset + k] =
              x.data()[s * block + k];
        }
        offset += block;
      }
    }
    GpuTensor gy;
    ASSERT_OK(ConcatForward(ctx_.get(), ptrs, &gy));
    ExpectNear(Down(gy), want, 0, what);

    // Split a gradient back; the first input's gradient is not wanted.
    const Tensor dy = Random(out, seed + 1);
    std::vector<GpuTensor> gdxs(xs.size());
    std::vector<GpuTensor*> dptrs;
    for (GpuTensor& g : gdxs) dptrs.push_back(&g);
    if (dptrs.size() > 1) dptrs[0] = nullptr;
    ASSERT_OK(ConcatBackward(ctx_.get(), Up(dy), c.shapes, dptrs));
    int64_t offset = 0;
    for (size_t i = 0; i < xs.size(); ++i) {
      const int64_t block = c.shapes[i][1] * inner;
      if (dptrs[i] != nullptr) {
        Tensor dwant(c.shapes[i]);
        for (int64_t s = 0; s < n; ++s) {
          for (int64_t k = 0; k < block; ++k) {
            dwant.data()[s * block + k] =
                dy.data()[s * channels * inner + offset + k];
          }
        }
        ExpectNear(Down(gdxs[i]), dwant, 0, absl::StrCat(what, " dx", i));
      } else {
        EXPECT_TRUE(gdxs[i].empty());
      }
      offset += block;
    }
  }
  GpuTensor a = Up(Random({2, 3, 4, 4}, 1)), b = Up(Random({2, 3, 4, 5}, 2));
  std::vector<const GpuTensor*> bad = {&a, &b};
  GpuTensor y;
  EXPECT_EQ(ConcatForward(ctx_.get(), bad, &y).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(GpuOpsTest, AddMatchesReference) {
  const Tensor a = Random({3, 5, 7, 3}, 51), b = Random({3, 5, 7, 3}, 52);
  Tensor want(a.shape());
  for (int64_t i = 0; i < a.size(); ++i) {
    want.data()[i] = a.data()[i] + b.data()[i];
  }
  GpuTensor ga = Up(a), gb = Up(b), gy;
  ASSERT_OK(AddForward(ctx_.get(), ga, gb, &gy));
  ExpectNear(Down(gy), want, 0, "add");
  ASSERT_OK(AddInPlace(ctx_.get(), gb, &ga));
  ExpectNear(Down(ga), want, 0, "add in place");
  GpuTensor other = Up(Random({3, 5, 7, 4}, 53));
  EXPECT_EQ(AddInPlace(ctx_.get(), other, &ga).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(GpuOpsTest, MomentumSgdMatchesReference) {
  struct Case {
    SgdMomentumParams p;
  };
  SgdMomentumParams plain;
  plain.lr = 0.1f;
  plain.momentum = 0.0f;
  SgdMomentumParams mom;
  mom.lr = 0.05f;
  mom.momentum = 0.9f;
  mom.weight_decay = 1e-3f;
  mom.rescale_grad = 1.0f / 32;
  SgdMomentumParams clipped = mom;
  clipped.rescale_grad = 2.0f;
  clipped.clip_gradient = 0.5f;
  const int64_t n = 100003;
  uint32_t seed = 4100;
  for (const SgdMomentumParams& p : {plain, mom, clipped}) {
    const std::string what = absl::StrCat(
        "sgd lr=", p.lr, " momentum=", p.momentum, " clip=", p.clip_gradient);
    Tensor w = Random({n}, seed += 3);
    Tensor m({n});
    GpuTensor gw = Up(w), gm = Up(m);
    for (int step = 0; step < 3; ++step) {
      const Tensor g = Random({n}, seed + 10 + step, -3.0f, 3.0f);
      for (int64_t i = 0; i < n; ++i) {
        float grad = p.rescale_grad * g.data()[i];
        if (p.clip_gradient > 0) {
          grad = std::min(p.clip_gradient, std::max(-p.clip_gradient, grad));
        }
        grad += p.weight_decay * w.data()[i];
        if (p.momentum == 0) {
          w.data()[i] -= p.lr * grad;
        } else {
          m.data()[i] = p.momentum * m.data()[i] - p.lr * grad;
          w.data()[i] += m.data()[i];
        }
      }
      ASSERT_OK(SgdMomentumUpdate(ctx_.get(), p, Up(g), &gw,
                                  p.momentum == 0 ? nullptr : &gm));
    }
    ExpectNear(Down(gw), w, 1e-6, what + " weights");
    ExpectNear(Down(gm), m, 1e-6, what + " momentum");
  }
  GpuTensor gw = Up(Random({4}, 1));
  EXPECT_EQ(SgdMomentumUpdate(ctx_.get(), mom, Up(Random({4}, 2)), &gw, nullptr)
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(GpuOpsTest, SumBuffersMatchesReference) {
  const std::vector<int64_t> shape = {3, 1001};
  uint32_t seed = 4500;
  // 9 and 17 sources take more than one launch of the 8-way kernel; the
  // destination is also a source in the later rounds, in the first launch
  // or in a later one.
  struct Case {
    int count;
    int alias;  // Index of the source that is also the destination, or -1.
  };
  for (const Case& c :
       std::vector<Case>{{1, -1}, {3, -1}, {3, 0}, {9, -1}, {9, 8}, {17, 12}}) {
    const std::string what =
        absl::StrCat("sum of ", c.count, " buffers, alias ", c.alias);
    std::vector<Tensor> hs;
    std::vector<GpuTensor> gs;
    for (int k = 0; k < c.count; ++k) {
      hs.push_back(Random(shape, seed += 1));
      gs.push_back(Up(hs.back()));
    }
    std::vector<double> want(hs[0].size(), 0.0);
    for (const Tensor& h : hs) {
      for (int64_t i = 0; i < h.size(); ++i) want[i] += h.data()[i];
    }
    std::vector<const GpuTensor*> srcs;
    for (const GpuTensor& g : gs) srcs.push_back(&g);
    GpuTensor own;
    GpuTensor* dst = c.alias >= 0 ? &gs[c.alias] : &own;
    ASSERT_OK(SumBuffers(ctx_.get(), srcs, dst));
    ExpectNear(Down(*dst), FromDoubles(shape, want), 1e-5, what);
  }
  EXPECT_EQ(SumBuffers(ctx_.get(), {}, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(GpuOpsTest, SumBuffersAcrossDevices) {
  int count = 0;
  ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
  if (count < 2) GTEST_SKIP() << "Needs 2 GPUs, this machine has " << count;
  GpuContextOptions o;
  o.device = 1;
  auto other = GpuContext::Create(o);
  ASSERT_TRUE(other.ok()) << other.status();
  const Tensor a = Random({1000}, 61), b = Random({1000}, 62);
  GpuTensor ga = Up(a);
  GpuTensor gb = UpOn(other->get(), b);
  EXPECT_EQ(gb.device(), 1);
  ASSERT_OK((*other)->Synchronize());
  Tensor want(a.shape());
  for (int64_t i = 0; i < a.size(); ++i) {
    want.data()[i] = a.data()[i] + b.data()[i];
  }
  GpuTensor sum;
  ASSERT_OK(SumBuffers(ctx_.get(), {&ga, &gb}, &sum));
  EXPECT_EQ(sum.device(), 0);
  ExpectNear(Down(sum), want, 1e-6, "sum across devices");
  // An op given a tensor of another device refuses it.
  GpuTensor y;
  EXPECT_EQ(AddForward(ctx_.get(), ga, gb, &y).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kernels
}  // namespace pstrain
