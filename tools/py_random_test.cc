#include "tools/py_random.h"

#include <numeric>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pstrain {
namespace tools {
namespace {

// Expected values printed by CPython 3.11:
//   random.seed(100); [random.getrandbits(32) for _ in range(3)]
//   random.seed(100); l = list(range(10)); random.shuffle(l)
TEST(PyRandomTest, MatchesCPython) {
  PyRandom r(100);
  EXPECT_EQ(r.GetRandBits(32), 625644691u);
  EXPECT_EQ(r.GetRandBits(32), 1973661107u);
  EXPECT_EQ(r.GetRandBits(32), 1953896601u);

  std::vector<int> v(10);
  std::iota(v.begin(), v.end(), 0);
  PyRandom(100).Shuffle(&v);
  EXPECT_THAT(v, ::testing::ElementsAre(4, 0, 5, 9, 3, 1, 6, 8, 7, 2));

  std::vector<int64_t> w(1000);
  std::iota(w.begin(), w.end(), 0);
  PyRandom(100).Shuffle(&w);
  EXPECT_THAT(
      std::vector<int64_t>(w.begin(), w.begin() + 10),
      ::testing::ElementsAre(342, 471, 929, 100, 543, 231, 154, 450, 721, 788));
  int64_t weighted = 0;
  for (size_t i = 0; i < w.size(); ++i)
    weighted += static_cast<int64_t>(i) * w[i];
  EXPECT_EQ(weighted, 248457308);
}

}  // namespace
}  // namespace tools
}  // namespace pstrain
