#include "kernels/sgd_update.h"

#include <vector>

#include "gtest/gtest.h"

namespace pstrain {
namespace kernels {
namespace {

TEST(SgdUpdateCpuTest, MatchesFormula) {
  std::vector<float> w = {1.0f, -2.0f, 0.5f, 0.0f, 3.0f};
  const std::vector<float> g = {0.5f, 1.0f, -4.0f, 2.0f, 0.0f};
  ASSERT_TRUE(SgdUpdateCpu(absl::MakeSpan(w), g, 0.1f).ok());
  const std::vector<float> want = {1.0f - 0.05f, -2.0f - 0.1f, 0.5f + 0.4f,
                                   -0.2f, 3.0f};
  for (size_t i = 0; i < w.size(); ++i) EXPECT_FLOAT_EQ(w[i], want[i]) << i;
}

TEST(SgdUpdateCpuTest, SizeMismatchIsAnErrorAndChangesNothing) {
  std::vector<float> w = {1.0f, 2.0f};
  const std::vector<float> g = {1.0f};
  absl::Status s = SgdUpdateCpu(absl::MakeSpan(w), g, 1.0f);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("2 weights but 1 gradients"),
            absl::string_view::npos);
  EXPECT_EQ(w[0], 1.0f);
  EXPECT_EQ(w[1], 2.0f);
}

TEST(SgdUpdateCpuTest, EmptyIsFine) {
  std::vector<float> w;
  EXPECT_TRUE(SgdUpdateCpu(absl::MakeSpan(w), {}, 1.0f).ok());
}

}  // namespace
}  // namespace kernels
}  // namespace pstrain
