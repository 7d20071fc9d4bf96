// Test helpers for the kernel tests: status assertions, random tensors and
// gradient checks by central finite differences (the loss is evaluated in
// double).
#ifndef PSTRAIN_KERNELS_GRAD_CHECK_H_
#define PSTRAIN_KERNELS_GRAD_CHECK_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "kernels/tensor.h"

namespace pstrain {
namespace kernels {
namespace test_util {

// For ASSERT_TRUE(Ok(status)): on failure, prints the status.
::testing::AssertionResult Ok(const absl::Status& status);

// A tensor of N(0, scale^2) values drawn from a generator seeded by `seed`.
Tensor Random(std::vector<int64_t> shape, uint32_t seed, float scale = 1.0f);

// sum_i a[i] * b[i] in double. REQUIRES: a.size() == b.size().
double Dot(const Tensor& a, const Tensor& b);

// Checks `analytic` (dL/dt) against central differences of loss() over at
// most `samples` elements of `t` (evenly spaced), with step `eps`, to within
// tol * (1 + |numeric|). Reports failures with gtest, naming `what` and the
// element. Restores *t.
void CheckGradient(const std::string& what, Tensor* t, const Tensor& analytic,
                   const std::function<double()>& loss, double eps = 1e-2,
                   double tol = 2e-3, int samples = 150);

}  // namespace test_util
}  // namespace kernels
}  // namespace pstrain

#endif  // PSTRAIN_KERNELS_GRAD_CHECK_H_
