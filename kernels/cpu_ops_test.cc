// CPU kernels: forward results against straightforward reference loops, and
// every gradient against finite differences (in double).
#include "kernels/cpu_ops.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/grad_check.h"
#include "kernels/threads.h"

namespace pstrain {
namespace kernels {
namespace {

using test_util::CheckGradient;
using test_util::Dot;
using test_util::Ok;
using test_util::Random;

// Calls fn(y_index, x_index, w_index) for every multiply-add of the
// convolution of an input of shape xs by weights of parameters p (NCHW,
// OIHW), skipping taps in the padding.
template <typename Fn>
void ForEachConvTap(const std::vector<int64_t>& xs, const Conv2dParams& p,
                    Fn fn) {
  const int64_t n = xs[0], c = xs[1], h = xs[2], wd = xs[3];
  const int64_t oh =
      ConvOutSize(h, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h);
  const int64_t ow =
      ConvOutSize(wd, p.kernel_w, p.stride_w, p.pad_w, p.dilation_w);
  const int64_t cg = c / p.groups, fg = p.num_filter / p.groups;
  for (int64_t in = 0; in < n; ++in)
    for (int64_t f = 0; f < p.num_filter; ++f)
      for (int64_t yy = 0; yy < oh; ++yy)
        for (int64_t xx = 0; xx < ow; ++xx) {
          const int64_t g = f / fg;
          const int64_t yi = ((in * p.num_filter + f) * oh + yy) * ow + xx;
          for (int64_t cc = 0; cc < cg; ++cc)
            for (int ky = 0; ky < p.kernel_h; ++ky)
              for (int kx = 0; kx < p.kernel_w; ++kx) {
                const int64_t iy =
                    yy * p.stride_h - p.pad_h + ky * p.dilation_h;
                const int64_t ix =
                    xx * p.stride_w - p.pad_w + kx * p.dilation_w;
                if (iy < 0 || iy >= h || ix < 0 || ix >= wd) continue;
                fn(yi, ((in * c + g * cg + cc) * h + iy) * wd + ix,
                   ((f * cg + cc) * p.kernel_h + ky) * p.kernel_w + kx);
              }
        }
}

std::vector<int64_t> ConvOutShape(const Tensor& x, const Conv2dParams& p) {
  return {x.dim(0), p.num_filter,
          ConvOutSize(x.dim(2), p.kernel_h, p.stride_h, p.pad_h, p.dilation_h),
          ConvOutSize(x.dim(3), p.kernel_w, p.stride_w, p.pad_w, p.dilation_w)};
}

// Reference convolution in double.
Tensor RefConv(const Tensor& x, const Tensor& w, const Tensor& b,
               const Conv2dParams& p) {
  Tensor y(ConvOutShape(x, p));
  const int64_t plane = y.dim(2) * y.dim(3);
  std::vector<double> acc(y.size());
  for (int64_t i = 0; i < y.size(); ++i)
    acc[i] = b.empty() ? 0 : b.data()[i / plane % p.num_filter];
  ForEachConvTap(x.shape(), p, [&](int64_t yi, int64_t xi, int64_t wi) {
    acc[yi] += static_cast<double>(x.data()[xi]) * w.data()[wi];
  });
  for (int64_t i = 0; i < y.size(); ++i)
    y.data()[i] = static_cast<float>(acc[i]);
  return y;
}

struct ConvCase {
  int c, h, w, f, k, stride, pad, dilation, groups;
  bool bias;

  Conv2dParams Params() const {
    Conv2dParams p;
    p.kernel_h = p.kernel_w = k;
    p.stride_h = p.stride_w = stride;
    p.pad_h = p.pad_w = pad;
    p.dilation_h = p.dilation_w = dilation;
    p.groups = groups;
    p.num_filter = f;
    return p;
  }
  std::string Name() const {
    return absl::StrCat("c", c, " f", f, " h", h, " k", k, " s", stride, " p",
                        pad, " d", dilation, " g", groups);
  }
};

TEST(CpuOpsTest, ConvolutionForwardAndGradients) {
  CpuContext ctx;
  const std::vector<ConvCase> cases = {
      {1, 6, 6, 2, 3, 1, 0, 1, 1, true},  {3, 7, 5, 4, 3, 2, 1, 1, 1, true},
      {2, 8, 8, 3, 3, 1, 2, 2, 1, false}, {4, 6, 6, 4, 3, 1, 1, 1, 2, true},
      {2, 5, 5, 2, 1, 1, 0, 1, 1, true},  {3, 9, 9, 2, 5, 2, 2, 1, 1, true}};
  uint32_t seed = 1;
  for (const auto& cc : cases) {
    SCOPED_TRACE(cc.Name());
    const Conv2dParams p = cc.Params();
    Tensor x = Random({2, cc.c, cc.h, cc.w}, seed++);
    Tensor w = Random({cc.f, cc.c / cc.groups, cc.k, cc.k}, seed++, 0.5f);
    Tensor b = cc.bias ? Random({cc.f}, seed++) : Tensor();
    Tensor y;
    ASSERT_TRUE(Conv2dForward(&ctx, x, w, b, p, &y).ok());
    Tensor ref = RefConv(x, w, b, p);
    ASSERT_EQ(y.shape(), ref.shape());
    for (int64_t i = 0; i < y.size(); ++i)
      ASSERT_NEAR(y.data()[i], ref.data()[i], 1e-4) << i;

    Tensor r = Random(y.shape(), seed++);  // L = sum(y * r): dL/dy = r.
    Tensor dx, dw, db;
    ASSERT_TRUE(
        Conv2dBackward(&ctx, x, w, r, p, &dx, &dw, cc.bias ? &db : nullptr)
            .ok());
    auto loss = [&] {
      Tensor out;
      EXPECT_TRUE(Conv2dForward(&ctx, x, w, b, p, &out).ok());
      return Dot(out, r);
    };
    CheckGradient("dx", &x, dx, loss);
    CheckGradient("dw", &w, dw, loss);
    if (cc.bias) CheckGradient("db", &b, db, loss);
  }
}

void ExpectNearRef(const char* what, const Tensor& got,
                   const std::vector<double>& want) {
  ASSERT_EQ(got.size(), static_cast<int64_t>(want.size())) << what;
  for (int64_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got.data()[i], want[i], 2e-4 * (1 + std::fabs(want[i])))
        << what << " " << i;
  }
}

// Channel counts where oneDNN picks its blocked layouts (16-channel blocks
// on AVX-512, 8 on AVX2): multiples of the block, counts that leave a
// partly filled (zero-padded) block, a plain 3-channel input, groups
// (depthwise too), dilation, strided 1x1 and 7x7 kernels. Forward and both
// gradients against double-precision references; every case twice, in
// opposite orders, on one context, so the staging buffers the
// convolutions share hold another layout's data when a case starts.
TEST(CpuOpsTest, ConvolutionOnBlockedLayoutsMatchesReferences) {
  CpuContext ctx;
  const std::vector<ConvCase> cases = {{16, 9, 9, 32, 3, 1, 1, 1, 1, false},
                                       {20, 9, 7, 50, 3, 2, 1, 1, 1, true},
                                       {3, 11, 11, 16, 7, 2, 3, 1, 1, false},
                                       {32, 8, 8, 32, 3, 1, 2, 2, 2, true},
                                       {16, 8, 8, 16, 3, 1, 1, 1, 16, false},
                                       {64, 7, 7, 128, 1, 2, 0, 1, 1, false},
                                       {24, 6, 6, 40, 1, 1, 0, 1, 4, true},
                                       {17, 5, 6, 33, 3, 1, 1, 1, 1, true}};
  std::vector<size_t> order;
  for (size_t i = 0; i < cases.size(); ++i) order.push_back(i);
  for (size_t i = cases.size(); i-- > 0;) order.push_back(i);
  for (size_t k : order) {
    const ConvCase& cc = cases[k];
    SCOPED_TRACE(cc.Name());
    const Conv2dParams p = cc.Params();
    const uint32_t seed = 100 + 10 * static_cast<uint32_t>(k);
    Tensor x = Random({2, cc.c, cc.h, cc.w}, seed);
    Tensor w = Random({cc.f, cc.c / cc.groups, cc.k, cc.k}, seed + 1, 0.5f);
    Tensor b = cc.bias ? Random({cc.f}, seed + 2) : Tensor();
    Tensor y(ConvOutShape(x, p));
    y.Fill(7.0f);  // Old values are overwritten.
    ASSERT_TRUE(Ok(Conv2dForward(&ctx, x, w, b, p, &y)));
    const Tensor ref = RefConv(x, w, b, p);
    ExpectNearRef("y", y,
                  std::vector<double>(ref.data(), ref.data() + ref.size()));

    const Tensor dy = Random(y.shape(), seed + 3);
    std::vector<double> want_dx(x.size()), want_dw(w.size()), want_db(cc.f);
    ForEachConvTap(x.shape(), p, [&](int64_t yi, int64_t xi, int64_t wi) {
      want_dx[xi] += static_cast<double>(dy.data()[yi]) * w.data()[wi];
      want_dw[wi] += static_cast<double>(dy.data()[yi]) * x.data()[xi];
    });
    const int64_t plane = y.dim(2) * y.dim(3);
    for (int64_t i = 0; i < dy.size(); ++i)
      want_db[i / plane % cc.f] += dy.data()[i];
    Tensor dx(x.shape()), dw(w.shape()), db({cc.f});
    dx.Fill(7.0f);
    dw.Fill(7.0f);
    db.Fill(7.0f);
    ASSERT_TRUE(Ok(
        Conv2dBackward(&ctx, x, w, dy, p, &dx, &dw, cc.bias ? &db : nullptr)));
    ExpectNearRef("dx", dx, want_dx);
    ExpectNearRef("dw", dw, want_dw);
    if (cc.bias) ExpectNearRef("db", db, want_db);
    // Without dx, the same weight gradient.
    Tensor dw2;
    ASSERT_TRUE(Ok(Conv2dBackward(&ctx, x, w, dy, p, nullptr, &dw2, nullptr)));
    ExpectNearRef("dw without dx", dw2, want_dw);
  }
}

TEST(CpuOpsTest, PoolingForwardAndGradients) {
  CpuContext ctx;
  for (PoolKind kind : {PoolKind::kMax, PoolKind::kAvg}) {
    for (int variant = 0; variant < 3; ++variant) {
      Pool2dParams p;
      p.kind = kind;
      if (variant == 1) {
        p.kernel_h = p.kernel_w = 3;
        p.stride_h = p.stride_w = 2;
        p.pad_h = p.pad_w = 1;
      }
      p.global = variant == 2;
      SCOPED_TRACE(
          absl::StrCat("kind ", static_cast<int>(kind), " variant ", variant));
      Tensor x = Random({2, 3, 6, 6}, 10 + variant);
      Tensor y;
      PoolState st;
      ASSERT_TRUE(Pool2dForward(&ctx, x, p, &y, &st).ok());
      // Reference forward.
      const int k = p.global ? 6 : p.kernel_h, s = p.global ? 1 : p.stride_h,
                pad = p.global ? 0 : p.pad_h;
      for (int64_t n = 0; n < 2; ++n)
        for (int64_t c = 0; c < 3; ++c)
          for (int64_t oy = 0; oy < y.dim(2); ++oy)
            for (int64_t ox = 0; ox < y.dim(3); ++ox) {
              double best = -1e30, sum = 0;
              for (int ky = 0; ky < k; ++ky)
                for (int kx = 0; kx < k; ++kx) {
                  const int64_t iy = oy * s - pad + ky, ix = ox * s - pad + kx;
                  if (iy < 0 || iy >= 6 || ix < 0 || ix >= 6) continue;
                  const float v = x.data()[((n * 3 + c) * 6 + iy) * 6 + ix];
                  best = std::max<double>(best, v);
                  sum += v;
                }
              const double want = kind == PoolKind::kMax ? best : sum / (k * k);
              ASSERT_NEAR(
                  y.data()[((n * 3 + c) * y.dim(2) + oy) * y.dim(3) + ox], want,
                  1e-5);
            }
      Tensor r = Random(y.shape(), 20 + variant);
      Tensor dx;
      ASSERT_TRUE(Pool2dBackward(&ctx, x, r, p, st, &dx).ok());
      auto loss = [&] {
        Tensor out;
        PoolState s2;
        EXPECT_TRUE(Pool2dForward(&ctx, x, p, &out, &s2).ok());
        return Dot(out, r);
      };
      // Small steps keep the argmax of max pooling where it is.
      CheckGradient("dx", &x, dx, loss, 1e-3, 5e-3);
    }
  }
}

TEST(CpuOpsTest, FullyConnectedForwardAndGradients) {
  Tensor x = Random({4, 2, 3, 2}, 31);  // Flattened to [4, 12].
  Tensor w = Random({5, 12}, 32);
  Tensor b = Random({5}, 33);
  Tensor y;
  ASSERT_TRUE(FullyConnectedForward(x, w, b, &y).ok());
  ASSERT_EQ(y.shape(), (std::vector<int64_t>{4, 5}));
  for (int i = 0; i < 4; ++i)
    for (int o = 0; o < 5; ++o) {
      double s = b.data()[o];
      for (int k = 0; k < 12; ++k)
        s += static_cast<double>(x.data()[i * 12 + k]) * w.data()[o * 12 + k];
      ASSERT_NEAR(y.data()[i * 5 + o], s, 1e-4);
    }
  Tensor r = Random(y.shape(), 34), dx, dw, db;
  ASSERT_TRUE(FullyConnectedBackward(x, w, r, &dx, &dw, &db).ok());
  EXPECT_EQ(dx.shape(), x.shape());
  auto loss = [&] {
    Tensor out;
    EXPECT_TRUE(FullyConnectedForward(x, w, b, &out).ok());
    return Dot(out, r);
  };
  CheckGradient("dx", &x, dx, loss);
  CheckGradient("dw", &w, dw, loss);
  CheckGradient("db", &b, db, loss);
}

TEST(CpuOpsTest, ActivationsAndTheirGradients) {
  for (Activation a :
       {Activation::kRelu, Activation::kTanh, Activation::kSigmoid}) {
    Tensor x = Random({3, 7}, 40);
    for (auto& v : x.span()) {
      if (std::fabs(v) < 0.05f) v = 0.3f;  // Away from ReLU's kink.
    }
    Tensor y, dx;
    ASSERT_TRUE(ActivationForward(a, x, &y).ok());
    const float x0 = x.data()[0];
    const float want0 = a == Activation::kRelu   ? std::max(0.0f, x0)
                        : a == Activation::kTanh ? std::tanh(x0)
                                                 : 1 / (1 + std::exp(-x0));
    EXPECT_NEAR(y.data()[0], want0, 1e-6);
    Tensor r = Random(y.shape(), 41);
    ASSERT_TRUE(ActivationBackward(a, y, r, &dx).ok());
    auto loss = [&] {
      Tensor out;
      EXPECT_TRUE(ActivationForward(a, x, &out).ok());
      return Dot(out, r);
    };
    CheckGradient(absl::StrCat("activation ", static_cast<int>(a)), &x, dx,
                  loss, 1e-3, 5e-3);
  }
}

// The vectorised activations over a tensor large enough for several
// threads, against the formulas in double: tanh and sigmoid within a few
// float ulps over [-12, 12] (and saturated beyond), ReLU exactly, and every
// backward.
TEST(CpuOpsTest, ActivationsOnLargeTensorsFollowTheFormulas) {
  SetCpuThreads(2);
  Tensor x({3, 37, 29, 13});
  const int64_t n = x.size();
  for (int64_t i = 0; i < n; ++i)
    x.data()[i] = -12.0f + 24.0f * static_cast<float>(i) / n;
  const std::vector<float> special = {0.0f,    -0.0f,    1e-30f, -1e-8f, 0.625f,
                                      -0.625f, 0.62499f, 30.0f,  -30.0f, 100.0f,
                                      -100.0f, 1e6f,     -1e6f};
  for (size_t i = 0; i < special.size(); ++i) x.data()[i * 997] = special[i];
  const Tensor dy = Random(x.shape(), 45);
  for (Activation a :
       {Activation::kRelu, Activation::kTanh, Activation::kSigmoid}) {
    SCOPED_TRACE(static_cast<int>(a));
    Tensor y, dx;
    ASSERT_TRUE(ActivationForward(a, x, &y).ok());
    ASSERT_TRUE(ActivationBackward(a, y, dy, &dx).ok());
    for (int64_t i = 0; i < n; ++i) {
      const double v = x.data()[i];
      const double want = a == Activation::kRelu   ? std::max(0.0, v)
                          : a == Activation::kTanh ? std::tanh(v)
                                                   : 1 / (1 + std::exp(-v));
      // Within 4 ulps, or (sigmoid far below -87, clamped) 1e-37.
      ASSERT_LE(std::fabs(y.data()[i] - want),
                std::max(5e-7 * std::fabs(want), 1e-37))
          << "x = " << v;
      const double out = y.data()[i], g = dy.data()[i];
      const double want_dx = a == Activation::kRelu   ? (out > 0 ? g : 0)
                             : a == Activation::kTanh ? g * (1 - out * out)
                                                      : g * out * (1 - out);
      ASSERT_NEAR(dx.data()[i], want_dx, 1e-6 * (1 + std::fabs(want_dx)))
          << "x = " << v;
    }
    // NaN propagates (a diverging network shows it).
    Tensor nan({1});
    nan.data()[0] = std::nanf("");
    Tensor nan_out;
    ASSERT_TRUE(ActivationForward(a, nan, &nan_out).ok());
    EXPECT_TRUE(std::isnan(nan_out.data()[0]));
    // In place (the network's in-place activations): the same values.
    Tensor in_place = x.Clone();
    ASSERT_TRUE(ActivationForward(a, in_place, &in_place).ok());
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(in_place.data()[i], y.data()[i]) << i;
  }
}

TEST(CpuOpsTest, SoftmaxCrossEntropyAndGradient) {
  Tensor z = Random({4, 6}, 50, 2.0f);
  const std::vector<float> labels = {0, 5, 2, 2};
  Tensor p;
  double loss = 0;
  ASSERT_TRUE(SoftmaxCrossEntropy(z, labels, &p, &loss).ok());
  for (int i = 0; i < 4; ++i) {
    double s = 0;
    for (int j = 0; j < 6; ++j) s += p.data()[i * 6 + j];
    EXPECT_NEAR(s, 1.0, 1e-6);
  }
  Tensor dz;
  ASSERT_TRUE(SoftmaxCrossEntropyBackward(p, labels, 1.0f / 4, &dz).ok());
  auto f = [&] {
    Tensor q;
    double l = 0;
    EXPECT_TRUE(SoftmaxCrossEntropy(z, labels, &q, &l).ok());
    return l;
  };
  CheckGradient("dlogits", &z, dz, f, 1e-3, 5e-3);
  EXPECT_FALSE(SoftmaxCrossEntropy(z, {0, 6, 1, 1}, &p, &loss)
                   .ok());  // Label 6 of 6 classes.
}

TEST(CpuOpsTest, BadShapesAreErrorsNamingThem) {
  CpuContext ctx;
  Conv2dParams p;
  p.kernel_h = p.kernel_w = 3;
  p.num_filter = 4;
  Tensor x({1, 3, 2, 2}), w({4, 3, 3, 3}), y;
  absl::Status s = Conv2dForward(&ctx, x, w, Tensor(), p, &y);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              ::testing::HasSubstr("does not fit input [1, 3, 2, 2]"));
  Tensor bad_w({4, 2, 3, 3});
  Tensor x2({1, 3, 8, 8});
  EXPECT_THAT(
      std::string(Conv2dForward(&ctx, x2, bad_w, Tensor(), p, &y).message()),
      ::testing::HasSubstr("want [4, 3, 3, 3]"));
  EXPECT_FALSE(
      FullyConnectedForward(Tensor({2, 5}), Tensor({3, 4}), Tensor(), &y).ok());
}

}  // namespace
}  // namespace kernels
}  // namespace pstrain
