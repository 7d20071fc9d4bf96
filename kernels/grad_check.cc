#include "kernels/grad_check.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "gtest/gtest.h"

namespace pstrain {
namespace kernels {
namespace test_util {

::testing::AssertionResult Ok(const absl::Status& status) {
  if (status.ok()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << status;
}

Tensor Random(std::vector<int64_t> shape, uint32_t seed, float scale) {
  Tensor t(std::move(shape));
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  for (auto& v : t.span()) v = nd(rng);
  return t;
}

double Dot(const Tensor& a, const Tensor& b) {
  double s = 0;
  for (int64_t i = 0; i < a.size(); ++i)
    s += static_cast<double>(a.data()[i]) * b.data()[i];
  return s;
}

void CheckGradient(const std::string& what, Tensor* t, const Tensor& analytic,
                   const std::function<double()>& loss, double eps, double tol,
                   int samples) {
  ASSERT_EQ(t->shape(), analytic.shape()) << what;
  const int64_t n = t->size();
  const int64_t step = std::max<int64_t>(1, n / samples);
  for (int64_t i = 0; i < n; i += step) {
    const float keep = t->data()[i];
    t->data()[i] = keep + static_cast<float>(eps);
    const double up = loss();
    t->data()[i] = keep - static_cast<float>(eps);
    const double down = loss();
    t->data()[i] = keep;
    const double numeric = (up - down) / (2 * eps);
    ASSERT_NEAR(analytic.data()[i], numeric, tol * (1 + std::fabs(numeric)))
        << what << " element " << i;
  }
}

}  // namespace test_util
}  // namespace kernels
}  // namespace pstrain
