#include "tools/codec_bench.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "compression/codec.h"

namespace pstrain {
namespace tools {

double MedianGbps(const std::function<void()>& fn, int64_t bytes, int runs,
                  int min_run_ms) {
  fn();  // Warm-up: page faults, caches.
  std::vector<double> gbps;
  for (int r = 0; r < runs; ++r) {
    int64_t reps = 0;
    const absl::Time t0 = absl::Now();
    absl::Duration took;
    do {
      fn();
      ++reps;
      took = absl::Now() - t0;
    } while (took < absl::Milliseconds(min_run_ms));
    gbps.push_back(static_cast<double>(bytes) * reps /
                   absl::ToDoubleSeconds(took) / 1e9);
  }
  std::sort(gbps.begin(), gbps.end());
  return gbps[gbps.size() / 2];
}

void RunCodecBench(const CodecBenchOptions& o, std::ostream& out) {
  using namespace compression;  // NOLINT: the kernels under test.
  if (!o.json) {
    out << absl::StrFormat(
        "codec kernels, median of %d runs, %d OpenMP threads; GB/s of "
        "float32 data (x memcpy of the same bytes)\n",
        o.runs, omp_get_max_threads());
  }
  for (int64_t bytes : o.value_bytes) {
    const size_t n = static_cast<size_t>(bytes / 4);
    std::mt19937 rng(1);
    std::normal_distribution<float> d(0, 0.5f);
    std::vector<float> grad(n), residual(n, 0.0f), copy(n), back(n);
    for (float& x : grad) x = d(rng);
    std::vector<uint8_t> two(TwoBitBytes(n)), one(OnebitBytes(n));
    std::vector<uint16_t> half(n);
    struct Kernel {
      const char* name;
      std::function<void()> fn;
    };
    const std::vector<Kernel> kernels = {
        {"memcpy",
         [&] { std::memcpy(copy.data(), grad.data(), n * sizeof(float)); }},
        {"2bit_pack",
         [&] {
           Quantize2Bit(grad.data(), residual.data(), n, 0.5f, two.data());
         }},
        {"2bit_unpack",
         [&] { Dequantize2Bit(two.data(), n, 0.5f, back.data()); }},
        {"fp16_pack", [&] { FloatToHalf(grad.data(), n, half.data()); }},
        {"fp16_unpack", [&] { HalfToFloat(half.data(), n, back.data()); }},
        {"onebit_pack",
         [&] { OnebitCompress(grad.data(), residual.data(), n, one.data()); }},
        {"onebit_unpack",
         [&] { OnebitDecompress(one.data(), n, back.data()); }},
    };
    double memcpy_gbps = 0;
    for (const Kernel& k : kernels) {
      const double g =
          MedianGbps(k.fn, static_cast<int64_t>(n * 4), o.runs, o.min_run_ms);
      if (memcpy_gbps == 0) memcpy_gbps = g;
      if (o.json) {
        out << absl::StrFormat(
            "{\"kernel\": \"%s\", \"value_bytes\": %d, \"gbps\": %.3f, "
            "\"x_memcpy\": %.3f, \"threads\": %d, \"runs\": %d}\n",
            k.name, bytes, g, g / memcpy_gbps, omp_get_max_threads(), o.runs);
      } else {
        out << absl::StrFormat("%-14s %11d B  %8.2f GB/s  (%.2f x memcpy)\n",
                               k.name, bytes, g, g / memcpy_gbps);
      }
    }
  }
  out.flush();
}

}  // namespace tools
}  // namespace pstrain
