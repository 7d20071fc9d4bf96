// CPU kernels: forward results against straightforward reference loops, and
// every gradient against finite differences (in double).
#include "kernels/cpu_ops.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/grad_check.h"

namespace pstrain {
namespace kernels {
namespace {

using test_util::CheckGradient;
using test_util::Dot;
using test_util::Random;

// Reference convolution in double.
Tensor RefConv(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p) {
  const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), wd = x.dim(3);
  const int64_t oh = ConvOutSize(h, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h);
  const int64_t ow = ConvOutSize(wd, p.kernel_w, p.stride_w, p.pad_w, p.dilation_w);
  Tensor y({n, p.num_filter, oh, ow});
  const int64_t cg = c / p.groups, fg = p.num_filter / p.groups;
  for (int64_t in = 0; in < n; ++in)
    for (int64_t f = 0; f < p.num_filter; ++f)
      for (int64_t yy = 0; yy < oh; ++yy)
        for (int64_t xx = 0; xx < ow; ++xx) {
          double s = b.empty() ? 0 : b.data()[f];
          const int64_t g = f / fg;
          for (int64_t cc = 0; cc < cg; ++cc)
            for (int ky = 0; ky < p.kernel_h; ++ky)
              for (int kx = 0; kx < p.kernel_w; ++kx) {
                const int64_t iy = yy * p.stride_h - p.pad_h + ky * p.dilation_h;
                const int64_t ix = xx * p.stride_w - p.pad_w + kx * p.dilation_w;
                if (iy < 0 || iy >= h || ix < 0 || ix >= wd) continue;
                s += static_cast<double>(x.data()[((in * c + g * cg + cc) * h + iy) * wd + ix]) *
                     w.data()[((f * cg + cc) * p.kernel_h + ky) * p.kernel_w + kx];
              }
          y.data()[((in * p.num_filter + f) * oh + yy) * ow + xx] = static_cast<float>(s);
        }
  return y;
}

struct ConvCase {
  int c, h, w, f, k, stride, pad, dilation, groups;
  bool bias;
};

TEST(CpuOpsTest, ConvolutionForwardAndGradients) {
  CpuContext ctx;
  const std::vector<ConvCase> cases = {
      {1, 6, 6, 2, 3, 1, 0, 1, 1, true},  {3, 7, 5, 4, 3, 2, 1, 1, 1, true},
      {2, 8, 8, 3, 3, 1, 2, 2, 1, false}, {4, 6, 6, 4, 3, 1, 1, 1, 2, true},
      {2, 5, 5, 2, 1, 1, 0, 1, 1, true},  {3, 9, 9, 2, 5, 2, 2, 1, 1, true}};
  uint32_t seed = 1;
  for (const auto& cc : cases) {
    SCOPED_TRACE(absl::StrCat("c", cc.c, " h", cc.h, " k", cc.k, " s", cc.stride, " p", cc.pad,
                              " d", cc.dilation, " g", cc.groups));
    Conv2dParams p;
    p.kernel_h = p.kernel_w = cc.k;
    p.stride_h = p.stride_w = cc.stride;
    p.pad_h = p.pad_w = cc.pad;
    p.dilation_h = p.dilation_w = cc.dilation;
    p.groups = cc.groups;
    p.num_filter = cc.f;
    Tensor x = Random({2, cc.c, cc.h, cc.w}, seed++);
    Tensor w = Random({cc.f, cc.c / cc.groups, cc.k, cc.k}, seed++, 0.5f);
    Tensor b = cc.bias ? Random({cc.f}, seed++) : Tensor();
    Tensor y;
    ASSERT_TRUE(Conv2dForward(&ctx, x, w, b, p, &y).ok());
    Tensor ref = RefConv(x, w, b, p);
    ASSERT_EQ(y.shape(), ref.shape());
    for (int64_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y.data()[i], ref.data()[i], 1e-4) << i;

    Tensor r = Random(y.shape(), seed++);  // L = sum(y * r): dL/dy = r.
    Tensor dx, dw, db;
    ASSERT_TRUE(Conv2dBackward(&ctx, x, w, r, p, &dx, &dw, cc.bias ? &db : nullptr).ok());
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
      SCOPED_TRACE(absl::StrCat("kind ", static_cast<int>(kind), " variant ", variant));
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
              ASSERT_NEAR(y.data()[((n * 3 + c) * y.dim(2) + oy) * y.dim(3) + ox], want, 1e-5);
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
      for (int k = 0; k < 12; ++k) s += static_cast<double>(x.data()[i * 12 + k]) * w.data()[o * 12 + k];
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
  for (Activation a : {Activation::kRelu, Activation::kTanh, Activation::kSigmoid}) {
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
    CheckGradient(absl::StrCat("activation ", static_cast<int>(a)), &x, dx, loss, 1e-3, 5e-3);
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
  EXPECT_FALSE(SoftmaxCrossEntropy(z, {0, 6, 1, 1}, &p, &loss).ok());  // Label 6 of 6 classes.
}

TEST(CpuOpsTest, BadShapesAreErrorsNamingThem) {
  CpuContext ctx;
  Conv2dParams p;
  p.kernel_h = p.kernel_w = 3;
  p.num_filter = 4;
  Tensor x({1, 3, 2, 2}), w({4, 3, 3, 3}), y;
  absl::Status s = Conv2dForward(&ctx, x, w, Tensor(), p, &y);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("does not fit input [1, 3, 2, 2]"));
  Tensor bad_w({4, 2, 3, 3});
  Tensor x2({1, 3, 8, 8});
  EXPECT_THAT(std::string(Conv2dForward(&ctx, x2, bad_w, Tensor(), p, &y).message()),
              ::testing::HasSubstr("want [4, 3, 3, 3]"));
  EXPECT_FALSE(FullyConnectedForward(Tensor({2, 5}), Tensor({3, 4}), Tensor(), &y).ok());
}

}  // namespace
}  // namespace kernels
}  // namespace pstrain
