#include "compression/codec.h"

#include <immintrin.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "compression/codec_internal.h"

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

// Per nibble of element flags (bit k: element 4m+k), the byte with bit
// 6 - 2k set for each flag: the low bits of the 2bit pairs.
constexpr uint8_t kSpread[16] = {0x00, 0x40, 0x10, 0x50, 0x04, 0x44,
                                 0x14, 0x54, 0x01, 0x41, 0x11, 0x51,
                                 0x05, 0x45, 0x15, 0x55};

// Bit j of `x` to bit 63 - j.
inline uint64_t Reverse64(uint64_t x) {
  x = ((x >> 1) & 0x5555555555555555ull) | ((x & 0x5555555555555555ull) << 1);
  x = ((x >> 2) & 0x3333333333333333ull) | ((x & 0x3333333333333333ull) << 2);
  x = ((x >> 4) & 0x0F0F0F0F0F0F0F0Full) | ((x & 0x0F0F0F0F0F0F0F0Full) << 4);
  return __builtin_bswap64(x);
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

constexpr int kLanes = 8;

// Adds |g + e| over [i, end) to the kLanes partial sums (element k of
// each group of kLanes into lane k) and returns their sum in lane order.
double AbsSumTail(const float* __restrict grad, const float* __restrict error,
                  size_t i, size_t end, double* lane) {
  for (; i + kLanes <= end; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      lane[j] += static_cast<double>(std::fabs(grad[i + j] + error[i + j]));
    }
  }
  for (int j = 0; i < end; ++i, ++j) {
    lane[j] += static_cast<double>(std::fabs(grad[i] + error[i]));
  }
  double sum = 0;
  for (int j = 0; j < kLanes; ++j) sum += lane[j];
  return sum;
}

}  // namespace

namespace internal {

bool HasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}

// MXNet's rule per element: r = residual + grad; r >= t: 11 and r -= t;
// else r <= -t: 10 and r -= -t; else 00.
void Quantize2BitScalar(const float* __restrict grad,
                        float* __restrict residual, size_t begin, size_t end,
                        float t, uint8_t* __restrict out) {
  const float nt = -t;
  for (size_t w = begin; w < end; w += 16) {
    const int m = end - w < 16 ? static_cast<int>(end - w) : 16;
    uint32_t word = 0;
    for (int j = 0; j < m; ++j) {
      const float r = residual[w + j] + grad[w + j];
      const bool pos = r >= t;
      const bool neg = r <= nt;
      residual[w + j] = pos ? r - t : (neg ? r - nt : r);
      word |= static_cast<uint32_t>((pos | neg) << 1 | pos) << Shift2(j);
    }
    std::memcpy(out + w / 4, &word, 4);
  }
}

__attribute__((target("avx2"))) void Quantize2BitAvx2(
    const float* __restrict grad, float* __restrict residual, size_t begin,
    size_t end, float t, uint8_t* __restrict out) {
  const __m256 vt = _mm256_set1_ps(t), vnt = _mm256_set1_ps(-t);
  size_t w = begin;
  for (; w + 16 <= end; w += 16) {
    uint32_t pm = 0, nm = 0;
    for (int h = 0; h < 2; ++h) {
      float* rp = residual + w + 8 * h;
      const __m256 r =
          _mm256_add_ps(_mm256_loadu_ps(rp), _mm256_loadu_ps(grad + w + 8 * h));
      const __m256 p = _mm256_cmp_ps(r, vt, _CMP_GE_OQ);
      const __m256 n = _mm256_cmp_ps(r, vnt, _CMP_LE_OQ);
      __m256 res = _mm256_blendv_ps(r, _mm256_sub_ps(r, vt), p);
      res = _mm256_blendv_ps(res, _mm256_sub_ps(r, vnt), n);
      _mm256_storeu_ps(rp, res);
      pm |= static_cast<uint32_t>(_mm256_movemask_ps(p)) << (8 * h);
      nm |= static_cast<uint32_t>(_mm256_movemask_ps(n)) << (8 * h);
    }
    const uint32_t hm = pm | nm;
    uint32_t word = 0;
    for (int k = 0; k < 4; ++k) {
      const uint32_t byte = static_cast<uint32_t>(kSpread[(hm >> 4 * k) & 15])
                                << 1 |
                            kSpread[(pm >> 4 * k) & 15];
      word |= byte << (8 * k);
    }
    std::memcpy(out + w / 4, &word, 4);
  }
  if (w < end) Quantize2BitScalar(grad, residual, w, end, t, out);
}

void Dequantize2BitScalar(const uint8_t* __restrict in, size_t begin,
                          size_t end, float t, float* __restrict out) {
  const float nt = -t;
  for (size_t w = begin; w < end; w += 16) {
    const int m = end - w < 16 ? static_cast<int>(end - w) : 16;
    uint32_t word;
    std::memcpy(&word, in + w / 4, 4);
    for (int j = 0; j < m; ++j) {
      const uint32_t code = (word >> Shift2(j)) & 3;
      out[w + j] = code == 3 ? t : (code == 2 ? nt : 0.0f);
    }
  }
}

__attribute__((target("avx2"))) void Dequantize2BitAvx2(
    const uint8_t* __restrict in, size_t begin, size_t end, float t,
    float* __restrict out) {
  const __m256 vt = _mm256_set1_ps(t), vnt = _mm256_set1_ps(-t);
  const __m256i shift[2] = {
      _mm256_setr_epi32(Shift2(0), Shift2(1), Shift2(2), Shift2(3), Shift2(4),
                        Shift2(5), Shift2(6), Shift2(7)),
      _mm256_setr_epi32(Shift2(8), Shift2(9), Shift2(10), Shift2(11),
                        Shift2(12), Shift2(13), Shift2(14), Shift2(15))};
  const __m256i three = _mm256_set1_epi32(3), two = _mm256_set1_epi32(2);
  size_t w = begin;
  for (; w + 16 <= end; w += 16) {
    uint32_t word;
    std::memcpy(&word, in + w / 4, 4);
    const __m256i v = _mm256_set1_epi32(static_cast<int>(word));
    for (int h = 0; h < 2; ++h) {
      const __m256i code =
          _mm256_and_si256(_mm256_srlv_epi32(v, shift[h]), three);
      const __m256 pos = _mm256_castsi256_ps(_mm256_cmpeq_epi32(code, three));
      const __m256 neg = _mm256_castsi256_ps(_mm256_cmpeq_epi32(code, two));
      __m256 x = _mm256_blendv_ps(_mm256_setzero_ps(), vnt, neg);
      x = _mm256_blendv_ps(x, vt, pos);
      _mm256_storeu_ps(out + w + 8 * h, x);
    }
  }
  if (w < end) Dequantize2BitScalar(in, w, end, t, out);
}

double AbsSumScalar(const float* grad, const float* error, size_t begin,
                    size_t end) {
  double lane[kLanes] = {0};
  return AbsSumTail(grad, error, begin, end, lane);
}

__attribute__((target("avx2"))) double AbsSumAvx2(const float* grad,
                                                  const float* error,
                                                  size_t begin, size_t end) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  size_t i = begin;
  for (; i + kLanes <= end; i += kLanes) {
    const __m256 c = _mm256_and_ps(
        abs_mask,
        _mm256_add_ps(_mm256_loadu_ps(grad + i), _mm256_loadu_ps(error + i)));
    lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(c)));
    hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(c, 1)));
  }
  double lane[kLanes];
  _mm256_storeu_pd(lane, lo);
  _mm256_storeu_pd(lane + 4, hi);
  return AbsSumTail(grad, error, i, end, lane);
}

// BytePS's rule per element: c = grad + error; bit set for c < 0;
// error = c - (c < 0 ? -scale : scale). Element j of a word at bit 63 - j.
void OnebitPackScalar(const float* __restrict grad, float* __restrict error,
                      size_t begin, size_t end, float scale,
                      uint8_t* __restrict out) {
  for (size_t w = begin; w < end; w += 64) {
    const int m = end - w < 64 ? static_cast<int>(end - w) : 64;
    uint64_t word = 0;
    for (int j = 0; j < m; ++j) {
      const float c = grad[w + j] + error[w + j];
      const bool neg = c < 0;
      error[w + j] = c - (neg ? -scale : scale);
      word |= static_cast<uint64_t>(neg) << (63 - j);
    }
    std::memcpy(out + w / 8, &word, 8);
  }
}

__attribute__((target("avx2"))) void OnebitPackAvx2(
    const float* __restrict grad, float* __restrict error, size_t begin,
    size_t end, float scale, uint8_t* __restrict out) {
  const __m256 vs = _mm256_set1_ps(scale), vns = _mm256_set1_ps(-scale);
  const __m256 zero = _mm256_setzero_ps();
  size_t w = begin;
  for (; w + 64 <= end; w += 64) {
    uint64_t m = 0;
    for (int g = 0; g < 8; ++g) {
      float* ep = error + w + 8 * g;
      const __m256 c =
          _mm256_add_ps(_mm256_loadu_ps(grad + w + 8 * g), _mm256_loadu_ps(ep));
      const __m256 neg = _mm256_cmp_ps(c, zero, _CMP_LT_OQ);
      _mm256_storeu_ps(ep, _mm256_sub_ps(c, _mm256_blendv_ps(vs, vns, neg)));
      m |= static_cast<uint64_t>(_mm256_movemask_ps(neg)) << (8 * g);
    }
    const uint64_t word = Reverse64(m);
    std::memcpy(out + w / 8, &word, 8);
  }
  if (w < end) OnebitPackScalar(grad, error, w, end, scale, out);
}

void OnebitUnpackScalar(const uint8_t* __restrict in, size_t begin, size_t end,
                        float scale, float* __restrict out) {
  const float neg = -scale;
  for (size_t w = begin; w < end; w += 64) {
    const int m = end - w < 64 ? static_cast<int>(end - w) : 64;
    uint64_t word;
    std::memcpy(&word, in + w / 8, 8);
    for (int j = 0; j < m; ++j) {
      out[w + j] = (word >> (63 - j)) & 1 ? neg : scale;
    }
  }
}

__attribute__((target("avx2"))) void OnebitUnpackAvx2(
    const uint8_t* __restrict in, size_t begin, size_t end, float scale,
    float* __restrict out) {
  const __m256 vs = _mm256_set1_ps(scale), vns = _mm256_set1_ps(-scale);
  const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  size_t w = begin;
  for (; w + 64 <= end; w += 64) {
    uint64_t word;
    std::memcpy(&word, in + w / 8, 8);
    const uint64_t m = Reverse64(word);  // Bit j: element j.
    for (int g = 0; g < 8; ++g) {
      const __m256i b =
          _mm256_set1_epi32(static_cast<int>((m >> (8 * g)) & 0xff));
      const __m256 neg = _mm256_castsi256_ps(
          _mm256_cmpeq_epi32(_mm256_and_si256(b, bit), bit));
      _mm256_storeu_ps(out + w + 8 * g, _mm256_blendv_ps(vs, vns, neg));
    }
  }
  if (w < end) OnebitUnpackScalar(in, w, end, scale, out);
}

}  // namespace internal

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
  const bool avx2 = internal::HasAvx2();
  ForBlocks(n, [&](size_t b, size_t e) {
    (avx2 ? internal::Quantize2BitAvx2 : internal::Quantize2BitScalar)(
        grad, residual, b, e, threshold, out);
  });
}

void Dequantize2Bit(const uint8_t* in, size_t n, float threshold, float* out) {
  const bool avx2 = internal::HasAvx2();
  ForBlocks(n, [&](size_t b, size_t e) {
    (avx2 ? internal::Dequantize2BitAvx2 : internal::Dequantize2BitScalar)(
        in, b, e, threshold, out);
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
  const bool avx2 = internal::HasAvx2();
  // The scale first: per-block sums (fixed blocks, whatever the team
  // size), added in block order, so it is the same on every run.
  const size_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(blocks, 0.0);
  ForBlocks(n, [&](size_t b, size_t e) {
    partial[b / kBlock] = (avx2 ? internal::AbsSumAvx2
                                : internal::AbsSumScalar)(grad, error, b, e);
  });
  double sum = 0;
  for (double p : partial) sum += p;
  const float scale = n == 0 ? 0.0f : static_cast<float>(sum / n);
  ForBlocks(n, [&](size_t b, size_t e) {
    (avx2 ? internal::OnebitPackAvx2 : internal::OnebitPackScalar)(
        grad, error, b, e, scale, out);
  });
  std::memcpy(out + OnebitBytes(n) - 4, &scale, 4);
}

void OnebitDecompress(const uint8_t* in, size_t n, float* out) {
  const bool avx2 = internal::HasAvx2();
  float scale;
  std::memcpy(&scale, in + OnebitBytes(n) - 4, 4);
  ForBlocks(n, [&](size_t b, size_t e) {
    (avx2 ? internal::OnebitUnpackAvx2 : internal::OnebitUnpackScalar)(
        in, b, e, scale, out);
  });
}

}  // namespace compression
}  // namespace pstrain
