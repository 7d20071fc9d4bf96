#include "compression/codec.h"

#include <immintrin.h>
#include <omp.h>

#include <cstring>
#include <vector>

namespace pstrain {
namespace compression {
namespace {

// Elements per parallel block: a multiple of 64 (blocks never share an
// output word) and big enough (256 KiB of floats) to amortise a task.
constexpr size_t kBlock = size_t{1} << 16;
// Below this many elements everything runs on the calling thread.
constexpr size_t kParallelMin = size_t{1} << 18;

// fn(begin, end) over [0, n) in kBlock blocks, on the OpenMP team of the
// calling thread (kernels/threads.h) when n >= kParallelMin.
template <typename Fn>
void ForBlocks(size_t n, Fn fn) {
  const size_t blocks = (n + kBlock - 1) / kBlock;
  auto one = [&](size_t b) {
    const size_t begin = b * kBlock;
    fn(begin, begin + kBlock < n ? begin + kBlock : n);
  };
  if (n < kParallelMin || omp_get_max_threads() == 1) {
    for (size_t b = 0; b < blocks; ++b) one(b);
    return;
  }
#pragma omp parallel for schedule(static)
  for (size_t b = 0; b < blocks; ++b) one(b);
}

inline uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Bit position of the low bit of element j (0..15) of a 2bit word read as
// a little-endian uint32: byte j/4, bits 6-7 for j%4 == 0 down to 0-1.
constexpr int Shift2(int j) { return 8 * (j >> 2) + 6 - 2 * (j & 3); }

// 2bit, elements [begin, end) with begin % 16 == 0.
void Quantize2BitRange(const float* __restrict grad, float* __restrict residual,
                       size_t begin, size_t end, float t,
                       uint8_t* __restrict out) {
  const float nt = -t;
  const size_t full_end = begin + (end - begin) / 16 * 16;
  for (size_t i = begin; i < full_end; i += 16) {
    uint32_t word = 0;
    for (int j = 0; j < 16; ++j) {
      const float r = residual[i + j] + grad[i + j];
      const bool pos = r >= t;
      const bool neg = r <= nt;
      // MXNet subtracts the emitted value: r - t, or r - (-t).
      residual[i + j] = pos ? r - t : (neg ? r - nt : r);
      const uint32_t code = (pos | neg) << 1 | pos;  // 11, 10 or 00.
      word |= code << Shift2(j);
    }
    std::memcpy(out + i / 4, &word, 4);
  }
  if (full_end < end) {
    uint32_t word = 0;
    for (size_t i = full_end; i < end; ++i) {
      const int j = static_cast<int>(i - full_end);
      const float r = residual[i] + grad[i];
      const bool pos = r >= t;
      const bool neg = r <= nt;
      residual[i] = pos ? r - t : (neg ? r - nt : r);
      word |= ((pos | neg) << 1 | pos) << Shift2(j);
    }
    std::memcpy(out + full_end / 4, &word, 4);
  }
}

void Dequantize2BitRange(const uint8_t* __restrict in, size_t begin, size_t end,
                         float t, float* __restrict out) {
  const float nt = -t;
  const size_t full_end = begin + (end - begin) / 16 * 16;
  for (size_t i = begin; i < full_end; i += 16) {
    uint32_t word;
    std::memcpy(&word, in + i / 4, 4);
    for (int j = 0; j < 16; ++j) {
      const uint32_t code = (word >> Shift2(j)) & 3;
      out[i + j] = code == 3 ? t : (code == 2 ? nt : 0.0f);
    }
  }
  if (full_end < end) {
    uint32_t word;
    std::memcpy(&word, in + full_end / 4, 4);
    for (size_t i = full_end; i < end; ++i) {
      const uint32_t code =
          (word >> Shift2(static_cast<int>(i - full_end))) & 3;
      out[i] = code == 3 ? t : (code == 2 ? nt : 0.0f);
    }
  }
}

bool HasF16c() {
  static const bool has =
      __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
  return has;
}

__attribute__((target("avx,f16c"))) void FloatToHalfF16c(
    const float* __restrict in, size_t n, uint16_t* __restrict out) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(in + i);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  }
  for (; i < n; ++i) out[i] = FloatToHalf1(in[i]);
}

__attribute__((target("avx,f16c"))) void HalfToFloatF16c(
    const uint16_t* __restrict in, size_t n, float* __restrict out) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i));
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) out[i] = HalfToFloat1(in[i]);
}

// Lanes of the onebit magnitude sum: fixed, so the scale does not depend
// on the thread count or the vector width.
constexpr int kLanes = 8;

// sum |g + e| over [begin, end) in double, kLanes interleaved partial sums
// added in lane order.
double AbsSum(const float* __restrict grad, const float* __restrict error,
              size_t begin, size_t end) {
  double lane[kLanes] = {0};
  size_t i = begin;
  for (; i + kLanes <= end; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const float c = grad[i + j] + error[i + j];
      lane[j] += static_cast<double>(c < 0 ? -c : c);
    }
  }
  for (int j = 0; i < end; ++i, ++j) {
    const float c = grad[i] + error[i];
    lane[j] += static_cast<double>(c < 0 ? -c : c);
  }
  double sum = 0;
  for (int j = 0; j < kLanes; ++j) sum += lane[j];
  return sum;
}

// onebit, elements [begin, end) with begin % 64 == 0.
void OnebitPackRange(const float* __restrict grad, float* __restrict error,
                     size_t begin, size_t end, float scale,
                     uint8_t* __restrict out) {
  for (size_t w = begin; w < end; w += 64) {
    const size_t m = end - w < 64 ? end - w : 64;
    uint64_t word = 0;
    if (m == 64) {
      for (int j = 0; j < 64; ++j) {
        const float c = grad[w + j] + error[w + j];
        const bool neg = c < 0;
        error[w + j] = c - (neg ? -scale : scale);
        word |= static_cast<uint64_t>(neg) << (63 - j);
      }
    } else {
      for (size_t j = 0; j < m; ++j) {
        const float c = grad[w + j] + error[w + j];
        const bool neg = c < 0;
        error[w + j] = c - (neg ? -scale : scale);
        word |= static_cast<uint64_t>(neg) << (63 - j);
      }
    }
    std::memcpy(out + w / 8, &word, 8);
  }
}

void OnebitUnpackRange(const uint8_t* __restrict in, size_t begin, size_t end,
                       float scale, float* __restrict out) {
  const float neg = -scale;
  for (size_t w = begin; w < end; w += 64) {
    uint64_t word;
    std::memcpy(&word, in + w / 8, 8);
    const size_t m = end - w < 64 ? end - w : 64;
    if (m == 64) {
      for (int j = 0; j < 64; ++j) {
        out[w + j] = (word >> (63 - j)) & 1 ? neg : scale;
      }
    } else {
      for (size_t j = 0; j < m; ++j) {
        out[w + j] = (word >> (63 - j)) & 1 ? neg : scale;
      }
    }
  }
}

}  // namespace

uint64_t EncodedBytes(proto::Encoding e, uint64_t n) {
  switch (e) {
    case proto::RAW_FLOAT32:
      return n * 4;
    case proto::TWO_BIT:
      return TwoBitBytes(n);
    case proto::FP16:
      return HalfBytes(n);
    case proto::ONEBIT:
      return OnebitBytes(n);
    default:
      return 0;
  }
}

const char* EncodingName(proto::Encoding e) {
  switch (e) {
    case proto::RAW_FLOAT32:
      return "none";
    case proto::TWO_BIT:
      return "2bit";
    case proto::FP16:
      return "fp16";
    case proto::ONEBIT:
      return "onebit";
    default:
      return "unknown";
  }
}

void Quantize2Bit(const float* grad, float* residual, size_t n, float threshold,
                  uint8_t* out) {
  ForBlocks(n, [&](size_t b, size_t e) {
    Quantize2BitRange(grad, residual, b, e, threshold, out);
  });
}

void Dequantize2Bit(const uint8_t* in, size_t n, float threshold, float* out) {
  ForBlocks(n, [&](size_t b, size_t e) {
    Dequantize2BitRange(in, b, e, threshold, out);
  });
}

uint16_t FloatToHalf1(float f) {
  const uint32_t x = Bits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  uint32_t a = x & 0x7fffffffu;
  if (a > 0x7f800000u) {  // NaN: quiet, top payload bits kept.
    return sign | 0x7e00 | static_cast<uint16_t>((a >> 13) & 0x3ff);
  }
  if (a >= 0x477ff000u) return sign | 0x7c00;  // >= 65520: infinity.
  if (a < 0x38800000u) {
    // Below 2^-14: a subnormal half (or zero). Adding 0.5, whose ulp is
    // 2^-24 (the subnormal step), rounds to nearest even in hardware.
    const float r = FromBits(a) + 0.5f;
    return sign | static_cast<uint16_t>(Bits(r) - 0x3f000000u);
  }
  // Normal: rebias the exponent (127 -> 15) and round the 13 dropped bits
  // to nearest even; a carry moves into the exponent as it should.
  const uint32_t odd = (a >> 13) & 1;
  a += 0xc8000fffu + odd;
  return sign | static_cast<uint16_t>(a >> 13);
}

float HalfToFloat1(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ff;
  if (exp == 0x1f) return FromBits(sign | 0x7f800000u | mant << 13);
  if (exp != 0) return FromBits(sign | (exp + 112) << 23 | mant << 13);
  // Zero or subnormal: mant * 2^-24, exact in float.
  const float v = static_cast<float>(mant) * FromBits(0x33800000u);
  return FromBits(sign | Bits(v));
}

void FloatToHalf(const float* in, size_t n, uint16_t* out) {
  ForBlocks(n, [&](size_t b, size_t e) {
    if (HasF16c()) {
      FloatToHalfF16c(in + b, e - b, out + b);
    } else {
      for (size_t i = b; i < e; ++i) out[i] = FloatToHalf1(in[i]);
    }
  });
}

void HalfToFloat(const uint16_t* in, size_t n, float* out) {
  ForBlocks(n, [&](size_t b, size_t e) {
    if (HasF16c()) {
      HalfToFloatF16c(in + b, e - b, out + b);
    } else {
      for (size_t i = b; i < e; ++i) out[i] = HalfToFloat1(in[i]);
    }
  });
}

void OnebitCompress(const float* grad, float* error, size_t n, uint8_t* out) {
  // The scale first: per-block sums (fixed blocks, whatever the team
  // size), added in block order, so it is the same on every run.
  const size_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(blocks, 0.0);
  ForBlocks(n, [&](size_t b, size_t e) {
    partial[b / kBlock] = AbsSum(grad, error, b, e);
  });
  double sum = 0;
  for (double p : partial) sum += p;
  const float scale = n == 0 ? 0.0f : static_cast<float>(sum / n);
  ForBlocks(n, [&](size_t b, size_t e) {
    OnebitPackRange(grad, error, b, e, scale, out);
  });
  std::memcpy(out + OnebitBytes(n) - 4, &scale, 4);
}

void OnebitDecompress(const uint8_t* in, size_t n, float* out) {
  float scale;
  std::memcpy(&scale, in + OnebitBytes(n) - 4, 4);
  ForBlocks(
      n, [&](size_t b, size_t e) { OnebitUnpackRange(in, b, e, scale, out); });
}

}  // namespace compression
}  // namespace pstrain
