// kv_bench --codec_bench: the gradient-compression pack and unpack kernels
// (compression/codec.h) timed in process against memcpy, per value size.
#ifndef PSTRAIN_TOOLS_CODEC_BENCH_H_
#define PSTRAIN_TOOLS_CODEC_BENCH_H_

#include <cstdint>
#include <functional>
#include <ostream>
#include <vector>

namespace pstrain {
namespace tools {

struct CodecBenchOptions {
  // Float32 bytes per array (rounded down to whole floats).
  std::vector<int64_t> value_bytes;
  // Timed runs per (size, kernel); the median is reported. Each run
  // repeats the kernel until it has taken at least min_run_ms.
  int runs = 7;
  int min_run_ms = 50;
  // One JSON object per line instead of a table.
  bool json = false;
};

// Prints, per size and kernel (memcpy; 2bit, fp16, onebit pack and
// unpack), the median GB/s of float32 data (the uncompressed bytes the
// kernel turns into or from its payload), and the ratio to memcpy of the
// same bytes, to `out`. Runs on the calling thread's OpenMP team.
void RunCodecBench(const CodecBenchOptions& o, std::ostream& out);

// The median over `runs` timed runs of the GB/s of `fn` on `bytes` bytes,
// each run repeating `fn` until it has taken at least `min_run_ms`, after
// one untimed call (page faults, caches). Also used by
// tools/link_crypto_bench.
double MedianGbps(const std::function<void()>& fn, int64_t bytes, int runs,
                  int min_run_ms);

}  // namespace tools
}  // namespace pstrain

#endif  // PSTRAIN_TOOLS_CODEC_BENCH_H_
