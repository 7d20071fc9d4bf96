// Python's `random.seed(int)` + `random.shuffle`, bit for bit, so that
// `im2rec --list` shuffles exactly as MXNet's im2rec.py (random.seed(100)).
#ifndef PSTRAIN_TOOLS_PY_RANDOM_H_
#define PSTRAIN_TOOLS_PY_RANDOM_H_

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace pstrain {
namespace tools {

// CPython's Mersenne Twister with its integer seeding (init_by_array over
// the 32-bit words of |seed|). Not thread-safe.
class PyRandom {
 public:
  explicit PyRandom(uint64_t seed);
  uint32_t GenRandUint32();
  // random.getrandbits(k) for 0 < k <= 32.
  uint32_t GetRandBits(int k);
  // random._randbelow(n) for 0 < n < 2^32 (rejection sampling).
  uint32_t RandBelow(uint32_t n);

  // random.shuffle(v).
  template <typename T>
  void Shuffle(std::vector<T>* v) {
    for (size_t i = v->size(); i-- > 1;) {
      const size_t j = RandBelow(static_cast<uint32_t>(i + 1));
      std::swap((*v)[i], (*v)[j]);
    }
  }

 private:
  void InitGenrand(uint32_t s);
  void InitByArray(const std::vector<uint32_t>& key);
  uint32_t mt_[624];
  int mti_ = 625;
};

}  // namespace tools
}  // namespace pstrain

#endif  // PSTRAIN_TOOLS_PY_RANDOM_H_
