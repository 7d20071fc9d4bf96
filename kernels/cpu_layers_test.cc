// Batch norm, LRN, dropout, concat and add on the CPU: forward results
// against reference loops in double, every gradient against central finite
// differences of a random linear functional of the output, and the errors.
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu_ops.h"
#include "kernels/grad_check.h"
#include "kernels/threads.h"

namespace pstrain {
namespace kernels {
namespace {

using test_util::CheckGradient;
using test_util::Dot;
using test_util::Ok;
using test_util::Random;
using ::testing::HasSubstr;

void ExpectNear(const std::string& what, const Tensor& got,
                const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), static_cast<int64_t>(want.size())) << what;
  for (int64_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got.data()[i], want[i], tol * (1 + std::fabs(want[i])))
        << what << " element " << i;
  }
}

std::vector<double> Values(const Tensor& t) {
  return {t.data(), t.data() + t.size()};
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

// ---------------------------------------------------------------- batch norm

// Elements of x [N, C, ...] seen as [N, C, S].
struct NcsView {
  int64_t n, c, s;
  explicit NcsView(const Tensor& x)
      : n(x.dim(0)),
        c(x.dim(1)),
        s(x.size() / std::max<int64_t>(1, x.dim(0) * x.dim(1))) {}
  int64_t At(int64_t in, int64_t ic, int64_t is) const {
    return (in * c + ic) * s + is;
  }
};

// Per-channel biased batch statistics in double.
void RefBatchStats(const Tensor& x, std::vector<double>* mean,
                   std::vector<double>* var) {
  const NcsView v(x);
  mean->assign(v.c, 0.0);
  var->assign(v.c, 0.0);
  const double count = static_cast<double>(v.n * v.s);
  for (int64_t c = 0; c < v.c; ++c) {
    for (int64_t n = 0; n < v.n; ++n)
      for (int64_t s = 0; s < v.s; ++s) (*mean)[c] += x.data()[v.At(n, c, s)];
    (*mean)[c] /= count;
    for (int64_t n = 0; n < v.n; ++n)
      for (int64_t s = 0; s < v.s; ++s) {
        const double d = x.data()[v.At(n, c, s)] - (*mean)[c];
        (*var)[c] += d * d;
      }
    (*var)[c] /= count;
  }
}

// y = gamma * (x - mean) / sqrt(var + eps) + beta, gamma = 1 if fix_gamma.
std::vector<double> RefNormalize(const Tensor& x, const Tensor& gamma,
                                 const Tensor& beta,
                                 const std::vector<double>& mean,
                                 const std::vector<double>& var,
                                 const BatchNormParams& p) {
  const NcsView v(x);
  std::vector<double> y(x.size());
  for (int64_t n = 0; n < v.n; ++n)
    for (int64_t c = 0; c < v.c; ++c) {
      const double g = p.fix_gamma ? 1.0 : gamma.data()[c];
      const double inv = 1.0 / std::sqrt(var[c] + p.eps);
      for (int64_t s = 0; s < v.s; ++s) {
        const int64_t i = v.At(n, c, s);
        y[i] = g * (x.data()[i] - mean[c]) * inv + beta.data()[c];
      }
    }
  return y;
}

// Random input whose channels have different means and spreads.
Tensor BnInput(const std::vector<int64_t>& shape, uint32_t seed) {
  Tensor x = Random(shape, seed);
  const NcsView v(x);
  for (int64_t n = 0; n < v.n; ++n)
    for (int64_t c = 0; c < v.c; ++c)
      for (int64_t s = 0; s < v.s; ++s) {
        float& e = x.data()[v.At(n, c, s)];
        e = e * (0.5f + c) + 0.7f * c - 1.0f;
      }
  return x;
}

// A batch norm case: input, parameters and moving statistics (variance
// positive), all random.
struct BnCase {
  std::string name;
  BatchNormParams p;
  int64_t c;
  Tensor x, gamma, beta, moving_mean, moving_var;
};

// NCHW and [N, C] shapes with odd sizes, N = 1 and C = 1, each with and
// without fix_gamma.
std::vector<BnCase> BnCases(uint32_t seed) {
  const std::vector<std::vector<int64_t>> shapes = {
      {2, 3, 5, 5},
      {1, 4, 3, 3},
      {5, 1, 2, 3},
      {3, 2, 1, 7},
      {4, 6},
      {7, 1},
      {1, 3},
      // Large enough for the kernels' threads to split the channels.
      {4, 20, 23, 19}};
  std::vector<BnCase> cases;
  for (const auto& shape : shapes) {
    for (bool fix_gamma : {false, true}) {
      BnCase bc;
      bc.name = absl::StrCat(ShapeToString(shape), " fix_gamma ", fix_gamma);
      bc.p.fix_gamma = fix_gamma;
      bc.c = shape[1];
      bc.x = BnInput(shape, seed++);
      bc.gamma = Random({bc.c}, seed++);
      bc.beta = Random({bc.c}, seed++);
      bc.moving_mean = Random({bc.c}, seed++);
      bc.moving_var = Random({bc.c}, seed++);
      for (auto& v : bc.moving_var.span()) v = 0.1f + std::fabs(v);
      cases.push_back(std::move(bc));
    }
  }
  return cases;
}

TEST(BatchNormTest, TrainingForwardMatchesReferenceAndUpdatesMovingStats) {
  SetCpuThreads(2);
  CpuContext ctx;
  for (BnCase& bc : BnCases(100)) {
    SCOPED_TRACE(bc.name);
    bc.p.momentum = 0.8f;
    const std::vector<double> mm0 = Values(bc.moving_mean),
                              mv0 = Values(bc.moving_var);
    Tensor y;
    BatchNormState st;
    ASSERT_TRUE(
        Ok(BatchNormForwardTraining(&ctx, bc.x, bc.gamma, bc.beta, bc.p, &y,
                                    &st, &bc.moving_mean, &bc.moving_var)));
    ASSERT_EQ(y.shape(), bc.x.shape());
    std::vector<double> mean, var;
    RefBatchStats(bc.x, &mean, &var);
    ExpectNear("y", y, RefNormalize(bc.x, bc.gamma, bc.beta, mean, var, bc.p),
               1e-4);
    ExpectNear("saved mean", st.mean, mean, 1e-5);
    std::vector<double> inv(bc.c), want_mm(bc.c), want_mv(bc.c);
    for (int64_t i = 0; i < bc.c; ++i) {
      inv[i] = 1 / std::sqrt(var[i] + bc.p.eps);
      want_mm[i] = mm0[i] * 0.8 + mean[i] * 0.2;
      want_mv[i] = mv0[i] * 0.8 + var[i] * 0.2;
    }
    ExpectNear("saved 1/std", st.inv_std, inv, 1e-4);
    ExpectNear("moving mean", bc.moving_mean, want_mm, 1e-5);
    ExpectNear("moving variance", bc.moving_var, want_mv, 1e-5);
  }
}

TEST(BatchNormTest, MovingStatsAfterTwoStepsFollowTheFormula) {
  CpuContext ctx;
  for (float momentum : {0.9f, 0.5f, 0.0f}) {
    SCOPED_TRACE(absl::StrCat("momentum ", momentum));
    BatchNormParams p;
    p.momentum = momentum;
    Tensor gamma({4}), beta({4}), mm({4}), mv({4});
    gamma.Fill(1.0f);
    mv.Fill(1.0f);  // MXNet's initial moving statistics: mean 0, variance 1.
    std::vector<double> want_mm(4, 0.0), want_mv(4, 1.0);
    for (int step = 0; step < 2; ++step) {
      Tensor x = BnInput({3, 4, 2, 3}, 200 + step);
      Tensor y;
      BatchNormState st;
      ASSERT_TRUE(Ok(BatchNormForwardTraining(&ctx, x, gamma, beta, p, &y, &st,
                                              &mm, &mv)));
      std::vector<double> mean, var;
      RefBatchStats(x, &mean, &var);
      for (int c = 0; c < 4; ++c) {
        want_mm[c] = want_mm[c] * momentum + mean[c] * (1 - momentum);
        want_mv[c] = want_mv[c] * momentum + var[c] * (1 - momentum);
      }
      ExpectNear(absl::StrCat("moving mean after step ", step + 1), mm, want_mm,
                 1e-5);
      ExpectNear(absl::StrCat("moving variance after step ", step + 1), mv,
                 want_mv, 1e-5);
    }
  }
}

TEST(BatchNormTest, InferenceUsesTheMovingStats) {
  CpuContext ctx;
  for (const BnCase& bc : BnCases(300)) {
    SCOPED_TRACE(bc.name);
    const Tensor &mm = bc.moving_mean, &mv = bc.moving_var;
    Tensor y;
    ASSERT_TRUE(Ok(BatchNormForwardInference(&ctx, bc.x, bc.gamma, bc.beta, mm,
                                             mv, bc.p, &y)));
    ExpectNear(
        "y", y,
        RefNormalize(bc.x, bc.gamma, bc.beta, Values(mm), Values(mv), bc.p),
        1e-4);
    // Each sample is normalized alone: the first sample by itself gives the
    // first row of the batch's output.
    std::vector<int64_t> one = bc.x.shape();
    one[0] = 1;
    Tensor x0(one), y0;
    std::copy(bc.x.data(), bc.x.data() + x0.size(), x0.data());
    ASSERT_TRUE(Ok(BatchNormForwardInference(&ctx, x0, bc.gamma, bc.beta, mm,
                                             mv, bc.p, &y0)));
    for (int64_t i = 0; i < y0.size(); ++i)
      ASSERT_EQ(y0.data()[i], y.data()[i]) << i;
  }
}

TEST(BatchNormTest, BackwardMatchesFiniteDifferences) {
  SetCpuThreads(2);
  CpuContext ctx;
  uint32_t seed = 1400;  // For r; the cases use 400 onwards.
  for (BnCase& bc : BnCases(400)) {
    SCOPED_TRACE(bc.name);
    Tensor &x = bc.x, &gamma = bc.gamma, &beta = bc.beta;
    const BatchNormParams& p = bc.p;
    Tensor y;
    BatchNormState st;
    ASSERT_TRUE(Ok(BatchNormForwardTraining(&ctx, x, gamma, beta, p, &y, &st,
                                            &bc.moving_mean, &bc.moving_var)));
    Tensor r = Random(y.shape(), seed++);  // L = sum(y * r).
    // Outputs of the right shape holding old values are overwritten.
    Tensor dx(x.shape()), dgamma({bc.c}), dbeta({bc.c});
    dx.Fill(7.0f);
    dgamma.Fill(7.0f);
    dbeta.Fill(7.0f);
    ASSERT_TRUE(
        Ok(BatchNormBackward(&ctx, x, gamma, r, p, st, &dx, &dgamma, &dbeta)));
    auto loss = [&] {
      Tensor out, m({bc.c}), v({bc.c});
      BatchNormState s;
      EXPECT_TRUE(Ok(
          BatchNormForwardTraining(&ctx, x, gamma, beta, p, &out, &s, &m, &v)));
      return Dot(out, r);
    };
    CheckGradient("dx", &x, dx, loss);
    CheckGradient("dgamma", &gamma, dgamma, loss);  // All zero with fix_gamma.
    CheckGradient("dbeta", &beta, dbeta, loss);
    if (p.fix_gamma) {
      for (float g : dgamma.span()) ASSERT_EQ(g, 0.0f);
    }
    // Without dx, the parameter gradients are the same.
    Tensor dgamma2, dbeta2;
    ASSERT_TRUE(Ok(BatchNormBackward(&ctx, x, gamma, r, p, st, nullptr,
                                     &dgamma2, &dbeta2)));
    ExpectNear("dgamma without dx", dgamma2, Values(dgamma), 0);
    ExpectNear("dbeta without dx", dbeta2, Values(dbeta), 0);
  }
}

TEST(BatchNormTest, BadShapesAreErrorsNamingThem) {
  CpuContext ctx;
  BatchNormParams p;
  Tensor x({2, 3, 4, 4}), c3({3}), c4({4}), y, dx, dg, db;
  Tensor mm({3}), mv({3});
  BatchNormState st;
  absl::Status s =
      BatchNormForwardTraining(&ctx, x, c4, c3, p, &y, &st, &mm, &mv);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s),
              HasSubstr("gamma is [4], want [3] for input [2, 3, 4, 4]"));
  s = BatchNormForwardInference(&ctx, x, c3, c3, c3, c4, p, &y);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("moving variance is [4], want [3]"));
  s = BatchNormForwardTraining(&ctx, Tensor({2, 3, 4}), c3, c3, p, &y, &st, &mm,
                               &mv);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("[N, C, H, W] or [N, C], got [2, 3, 4]"));
  p.eps = 0;
  s = BatchNormForwardInference(&ctx, x, c3, c3, c3, c3, p, &y);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("eps must be positive"));
  p.eps = 1e-3f;
  // Backward before any forward, then with a mismatched output gradient.
  s = BatchNormBackward(&ctx, x, c3, x, p, st, &dx, &dg, &db);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(
      Ok(BatchNormForwardTraining(&ctx, x, c3, c3, p, &y, &st, &mm, &mv)));
  s = BatchNormBackward(&ctx, x, c3, Tensor({2, 3, 4, 5}), p, st, &dx, &dg,
                        &db);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("[2, 3, 4, 4] and [2, 3, 4, 5]"));
}

// ----------------------------------------------------------------------- LRN

std::vector<double> RefLrn(const Tensor& x, const LrnParams& p) {
  const NcsView v(x);
  const int64_t half = p.nsize / 2;
  std::vector<double> y(x.size());
  for (int64_t n = 0; n < v.n; ++n)
    for (int64_t c = 0; c < v.c; ++c)
      for (int64_t s = 0; s < v.s; ++s) {
        double sum = 0;
        for (int64_t k = std::max<int64_t>(0, c - half);
             k <= std::min(v.c - 1, c + half); ++k) {
          const double e = x.data()[v.At(n, k, s)];
          sum += e * e;
        }
        const int64_t i = v.At(n, c, s);
        y[i] =
            x.data()[i] / std::pow(p.knorm + p.alpha / p.nsize * sum, p.beta);
      }
  return y;
}

struct LrnCase {
  std::string name;
  LrnParams p;
  Tensor x;
};

// MXNet's default parameters and stronger ones (where the normalization
// term matters), nsize 1, 3 and 5, C from 1 to 9, random inputs.
std::vector<LrnCase> LrnCases(uint32_t seed) {
  const LrnParams mxnet_default;  // nsize 5, alpha 1e-4, beta 0.75, knorm 2.
  const LrnParams strong3{3, 1.5f, 0.75f, 1.0f};
  const LrnParams strong5{5, 2.0f, 0.6f, 1.5f};
  const LrnParams one{1, 0.8f, 0.5f, 1.0f};
  const std::vector<std::pair<std::vector<int64_t>, LrnParams>> params = {
      {{2, 5, 4, 3}, mxnet_default}, {{2, 7, 3, 3}, strong3},
      {{1, 6, 5, 5}, strong5},       {{3, 1, 2, 2}, strong3},
      {{1, 3, 1, 1}, strong5},       {{2, 4, 3, 2}, one},
      {{1, 9, 2, 3}, strong5}};
  std::vector<LrnCase> cases;
  for (const auto& [shape, p] : params) {
    cases.push_back({absl::StrCat(ShapeToString(shape), " nsize ", p.nsize,
                                  " alpha ", p.alpha),
                     p, Random(shape, seed++)});
  }
  return cases;
}

TEST(LrnTest, ForwardMatchesMxnetFormula) {
  CpuContext ctx;
  for (const LrnCase& lc : LrnCases(500)) {
    SCOPED_TRACE(lc.name);
    Tensor y;
    LrnState st;
    ASSERT_TRUE(Ok(LrnForward(&ctx, lc.x, lc.p, &y, &st)));
    ASSERT_EQ(y.shape(), lc.x.shape());
    ExpectNear("y", y, RefLrn(lc.x, lc.p), 1e-5);
  }
}

TEST(LrnTest, BackwardMatchesFiniteDifferences) {
  CpuContext ctx;
  uint32_t seed = 1600;  // For r; the cases use 600 onwards.
  for (LrnCase& lc : LrnCases(600)) {
    SCOPED_TRACE(lc.name);
    Tensor y, dx;
    LrnState st;
    ASSERT_TRUE(Ok(LrnForward(&ctx, lc.x, lc.p, &y, &st)));
    Tensor r = Random(y.shape(), seed++);
    ASSERT_TRUE(Ok(LrnBackward(&ctx, lc.x, r, lc.p, st, &dx)));
    auto loss = [&] {
      Tensor out;
      LrnState s;
      EXPECT_TRUE(Ok(LrnForward(&ctx, lc.x, lc.p, &out, &s)));
      return Dot(out, r);
    };
    CheckGradient("dx", &lc.x, dx, loss, 1e-2, 3e-3);
  }
}

TEST(LrnTest, EmptyBatchIsFine) {
  CpuContext ctx;
  Tensor x({0, 3, 2, 2}), y, dx;
  LrnState st;
  ASSERT_TRUE(Ok(LrnForward(&ctx, x, LrnParams(), &y, &st)));
  ASSERT_TRUE(Ok(LrnBackward(&ctx, x, x, LrnParams(), st, &dx)));
  EXPECT_EQ(y.shape(), x.shape());
  EXPECT_EQ(dx.shape(), x.shape());
}

TEST(LrnTest, BadInputsAreErrors) {
  CpuContext ctx;
  LrnParams p;
  Tensor y, dx;
  LrnState st;
  absl::Status s = LrnForward(&ctx, Tensor({2, 5}), p, &y, &st);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("got [2, 5]"));
  p.nsize = 4;
  s = LrnForward(&ctx, Tensor({1, 5, 2, 2}), p, &y, &st);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("nsize must be odd"));
  p.nsize = 3;
  ASSERT_TRUE(Ok(LrnForward(&ctx, Tensor({1, 5, 2, 2}), p, &y, &st)));
  s = LrnBackward(&ctx, Tensor({1, 5, 2, 2}), Tensor({1, 5, 2, 3}), p, st, &dx);
  EXPECT_THAT(Message(s), HasSubstr("[1, 5, 2, 2] and [1, 5, 2, 3]"));
}

// ------------------------------------------------------------------- dropout

TEST(DropoutTest, KeepsAboutOneMinusPAndScalesTheKept) {
  Tensor x = Random({4, 25, 31, 33}, 700);  // 102300 elements, odd count.
  for (float p : {0.1f, 0.5f, 0.9f}) {
    SCOPED_TRACE(absl::StrCat("p ", p));
    std::mt19937_64 rng(7);
    Tensor y, mask;
    ASSERT_TRUE(Ok(DropoutForward(p, &rng, x, &y, &mask)));
    ASSERT_EQ(y.shape(), x.shape());
    ASSERT_EQ(mask.shape(), x.shape());
    const float scale = 1.0f / (1.0f - p);
    int64_t kept = 0, pairs_kept = 0;
    for (int64_t i = 0; i < x.size(); ++i) {
      const float m = mask.data()[i];
      ASSERT_TRUE(m == 0.0f || m == scale) << i << ": " << m;
      kept += m != 0.0f;
      if (i % 2 == 1) pairs_kept += m != 0.0f && mask.data()[i - 1] != 0.0f;
      ASSERT_EQ(y.data()[i], x.data()[i] * m) << i;
    }
    // The standard deviations of these fractions are below 0.003 here.
    EXPECT_NEAR(static_cast<double>(kept) / x.size(), 1.0 - p, 0.015);
    // Neighbours are independent.
    EXPECT_NEAR(static_cast<double>(pairs_kept) / (x.size() / 2),
                (1.0 - p) * (1.0 - p), 0.015);
  }
}

TEST(DropoutTest, SameSeedSameMaskOtherSeedOtherMask) {
  Tensor x = Random({3, 5, 7}, 710);
  Tensor y1, m1, y2, m2, y3, m3;
  std::mt19937_64 a(42), b(42), c(43);
  ASSERT_TRUE(Ok(DropoutForward(0.5f, &a, x, &y1, &m1)));
  ASSERT_TRUE(Ok(DropoutForward(0.5f, &b, x, &y2, &m2)));
  ASSERT_TRUE(Ok(DropoutForward(0.5f, &c, x, &y3, &m3)));
  EXPECT_EQ(Values(m1), Values(m2));
  EXPECT_EQ(Values(y1), Values(y2));
  EXPECT_NE(Values(m1), Values(m3));
  // The generator advances: the next call on it draws another mask.
  ASSERT_TRUE(Ok(DropoutForward(0.5f, &a, x, &y2, &m2)));
  EXPECT_NE(Values(m1), Values(m2));
}

TEST(DropoutTest, ZeroProbabilityIsIdentity) {
  Tensor x = Random({2, 3, 5}, 720);
  Tensor y, mask, dx;
  std::mt19937_64 rng(1);
  ASSERT_TRUE(Ok(DropoutForward(0.0f, &rng, x, &y, &mask)));
  EXPECT_EQ(Values(y), Values(x));
  for (float m : mask.span()) ASSERT_EQ(m, 1.0f);
  Tensor dy = Random(x.shape(), 721);
  ASSERT_TRUE(Ok(DropoutBackward(mask, dy, &dx)));
  EXPECT_EQ(Values(dx), Values(dy));
}

TEST(DropoutTest, BackwardUsesTheMask) {
  for (const std::vector<int64_t>& shape :
       std::vector<std::vector<int64_t>>{{1, 1}, {3, 7}, {2, 3, 5, 5}}) {
    SCOPED_TRACE(ShapeToString(shape));
    Tensor x = Random(shape, 730);
    Tensor y, mask, dx;
    std::mt19937_64 rng(99);
    ASSERT_TRUE(Ok(DropoutForward(0.4f, &rng, x, &y, &mask)));
    Tensor r = Random(shape, 731);
    ASSERT_TRUE(Ok(DropoutBackward(mask, r, &dx)));
    for (int64_t i = 0; i < x.size(); ++i)
      ASSERT_EQ(dx.data()[i], r.data()[i] * mask.data()[i]);
    // The same seed redraws the same mask, so the loss is a fixed linear
    // function of x.
    auto loss = [&] {
      std::mt19937_64 again(99);
      Tensor out, m;
      EXPECT_TRUE(Ok(DropoutForward(0.4f, &again, x, &out, &m)));
      return Dot(out, r);
    };
    CheckGradient("dx", &x, dx, loss);
  }
}

TEST(DropoutTest, BadArgumentsAreErrors) {
  Tensor x({2, 2}), y, mask, dx;
  std::mt19937_64 rng(1);
  for (float p : {-0.1f, 1.0f, 1.5f, std::nanf("")}) {
    absl::Status s = DropoutForward(p, &rng, x, &y, &mask);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << p;
    EXPECT_THAT(Message(s), HasSubstr("is not in [0, 1)"));
  }
  absl::Status s = DropoutBackward(Tensor({2, 2}), Tensor({2, 3}), &dx);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("[2, 2] and [2, 3]"));
}

// -------------------------------------------------------------------- concat

// Reference: element (n, c, rest) of the output comes from the input whose
// channel range holds c.
std::vector<double> RefConcat(const std::vector<Tensor>& xs) {
  const NcsView first(xs[0]);
  int64_t channels = 0;
  for (const Tensor& x : xs) channels += x.dim(1);
  std::vector<double> y(first.n * channels * first.s);
  for (int64_t n = 0; n < first.n; ++n) {
    int64_t base = 0;
    for (const Tensor& x : xs) {
      const NcsView v(x);
      for (int64_t c = 0; c < v.c; ++c)
        for (int64_t s = 0; s < v.s; ++s)
          y[(n * channels + base + c) * v.s + s] = x.data()[v.At(n, c, s)];
      base += v.c;
    }
  }
  return y;
}

struct ConcatCase {
  std::vector<int64_t> rest;  // Dimensions after the channel axis.
  int64_t n;
  std::vector<int64_t> channels;  // One entry per input.
};

TEST(ConcatTest, ForwardMatchesReferenceAndBackwardRoundTrips) {
  const std::vector<ConcatCase> cases = {
      {{3, 5}, 2, {4}},   {{3, 5}, 2, {1, 3}},   {{2, 3}, 1, {2, 1, 5, 3}},
      {{}, 3, {2, 5}},    {{}, 1, {1, 1, 1, 1}}, {{7, 1}, 4, {3, 2, 1, 6}},
      {{1, 1}, 5, {1, 2}}};
  uint32_t seed = 800;
  for (const auto& cc : cases) {
    std::vector<Tensor> xs;
    std::vector<std::vector<int64_t>> shapes;
    std::vector<const Tensor*> ptrs;
    for (int64_t c : cc.channels) {
      std::vector<int64_t> shape{cc.n, c};
      shape.insert(shape.end(), cc.rest.begin(), cc.rest.end());
      xs.push_back(Random(shape, seed++));
      shapes.push_back(shape);
    }
    for (const Tensor& x : xs) ptrs.push_back(&x);
    SCOPED_TRACE(
        absl::StrCat(xs.size(), " inputs, first ", xs[0].ShapeString()));
    Tensor y;
    ASSERT_TRUE(Ok(ConcatForward(ptrs, &y)));
    ExpectNear("y", y, RefConcat(xs), 0);
    // Round trip: splitting y gives back the inputs exactly.
    std::vector<Tensor> dxs(xs.size());
    std::vector<Tensor*> dx_ptrs;
    for (Tensor& dx : dxs) dx_ptrs.push_back(&dx);
    ASSERT_TRUE(Ok(ConcatBackward(y, shapes, dx_ptrs)));
    for (size_t i = 0; i < xs.size(); ++i) {
      ASSERT_EQ(dxs[i].shape(), xs[i].shape()) << i;
      EXPECT_EQ(Values(dxs[i]), Values(xs[i])) << i;
    }
    // Gradients of L = sum(y * r) by finite differences, and null entries
    // skipped.
    Tensor r = Random(y.shape(), seed++);
    ASSERT_TRUE(Ok(ConcatBackward(r, shapes, dx_ptrs)));
    auto loss = [&] {
      Tensor out;
      EXPECT_TRUE(Ok(ConcatForward(ptrs, &out)));
      return Dot(out, r);
    };
    for (size_t i = 0; i < xs.size(); ++i) {
      CheckGradient(absl::StrCat("dx", i), &xs[i], dxs[i], loss);
    }
    Tensor only_last;
    std::vector<Tensor*> sparse(xs.size(), nullptr);
    sparse.back() = &only_last;
    ASSERT_TRUE(Ok(ConcatBackward(r, shapes, sparse)));
    EXPECT_EQ(Values(only_last), Values(dxs.back()));
  }
}

TEST(ConcatTest, MismatchedShapesAreErrorsNamingThem) {
  Tensor a({2, 3, 4, 4}), y;
  struct Bad {
    std::vector<int64_t> shape;
    std::string what;
  };
  for (const Bad& bad : std::vector<Bad>{{{3, 2, 4, 4}, "N"},
                                         {{2, 2, 5, 4}, "H"},
                                         {{2, 2, 4, 3}, "W"},
                                         {{2, 2, 4}, "rank"}}) {
    SCOPED_TRACE(bad.what);
    Tensor b(bad.shape);
    const Tensor* xs[] = {&a, &a, &b};
    absl::Status s = ConcatForward(xs, &y);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Message(s), HasSubstr(absl::StrCat(
                                "input 2 is ", ShapeToString(bad.shape),
                                ", which differs from input 0 [2, 3, 4, 4]")));
  }
  EXPECT_EQ(ConcatForward({}, &y).code(), absl::StatusCode::kInvalidArgument);
  Tensor flat({5});
  const Tensor* one[] = {&flat};
  EXPECT_THAT(Message(ConcatForward(one, &y)), HasSubstr("input 0 is [5]"));

  Tensor dx0, dx1;
  std::vector<std::vector<int64_t>> shapes = {{2, 3, 4, 4}, {2, 1, 4, 4}};
  Tensor* dxs[] = {&dx0, &dx1};
  absl::Status s = ConcatBackward(Tensor({2, 5, 4, 4}), shapes, dxs);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s),
              HasSubstr("output gradient is [2, 5, 4, 4], but the inputs "
                        "concatenate to [2, 4, 4, 4]"));
  Tensor* too_few[] = {&dx0};
  EXPECT_EQ(ConcatBackward(Tensor({2, 4, 4, 4}), shapes, too_few).code(),
            absl::StatusCode::kInvalidArgument);
}

// ----------------------------------------------------------------------- add

TEST(AddTest, ForwardInPlaceAndGradients) {
  SetCpuThreads(2);
  for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{
           {1},
           {3, 7},
           {2, 3, 5, 5},
           {1, 1, 1, 17},
           {3, 37, 29, 13}}) {  // Threads split the last.
    SCOPED_TRACE(ShapeToString(shape));
    Tensor a = Random(shape, 900), b = Random(shape, 901);
    Tensor y;
    ASSERT_TRUE(Ok(AddForward(a, b, &y)));
    std::vector<double> want(a.size());
    for (int64_t i = 0; i < a.size(); ++i)
      want[i] = static_cast<double>(a.data()[i]) + b.data()[i];
    ExpectNear("a + b", y, want, 1e-7);

    Tensor acc = a.Clone();
    ASSERT_TRUE(Ok(AddInPlace(b, &acc)));
    EXPECT_EQ(Values(acc), Values(y));
    ASSERT_TRUE(Ok(AddInPlace(b, &acc)));
    for (int64_t i = 0; i < a.size(); ++i) want[i] += b.data()[i];
    ExpectNear("a + b + b", acc, want, 1e-6);

    // The output may be one of the inputs.
    Tensor in_place = a.Clone();
    ASSERT_TRUE(Ok(AddForward(in_place, b, &in_place)));
    EXPECT_EQ(Values(in_place), Values(y));

    // The gradient of sum((a + b) * r) with respect to either input is r.
    Tensor r = Random(shape, 902);
    auto loss = [&] {
      Tensor out;
      EXPECT_TRUE(Ok(AddForward(a, b, &out)));
      return Dot(out, r);
    };
    CheckGradient("da", &a, r, loss);
    CheckGradient("db", &b, r, loss);
  }
}

TEST(AddTest, MismatchedShapesAreErrorsNamingThem) {
  Tensor a({2, 3}), b({3, 2}), y;
  absl::Status s = AddForward(a, b, &y);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("[2, 3] and [3, 2]"));
  s = AddInPlace(Tensor({6}), &a);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("[6] and [2, 3]"));
}

}  // namespace
}  // namespace kernels
}  // namespace pstrain
