// The kernels against straightforward scalar transliterations of their
// originals (MXNet's quantize_2bit/dequantize_2bit, BytePS's onebit
// FusedCompressImpl/DecompressImpl), bit for bit on random data, and fp16
// against an exact rounding reference.
#include "compression/codec.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "compression/codec_internal.h"
#include "gtest/gtest.h"

namespace pstrain {
namespace compression {
namespace {

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// MXNet quantize_2bit::Map, one compressed byte per call, as written there
// (out_byte_id over 4 * number of compressed floats).
void RefQuantize2Bit(const std::vector<float>& grad, std::vector<float>* res,
                     float threshold, std::vector<uint8_t>* out) {
  const int original_size = static_cast<int>(grad.size());
  const int words =
      (original_size % 16 == 0) ? original_size / 16 : original_size / 16 + 1;
  out->assign(words * 4, 0xAB);  // Garbage: every byte must be written.
  const float neg_threshold = -1 * threshold, pos_threshold = threshold;
  float* residual = res->data();
  for (int out_byte_id = 0; out_byte_id < words * 4; ++out_byte_id) {
    char* compr_byte = reinterpret_cast<char*>(out->data()) + out_byte_id;
    *compr_byte = 0;
    const int start = out_byte_id << 2;
    const int end = (start + 4 <= original_size) ? start + 4 : original_size;
    const uint8_t posbits[] = {0xc0, 0x30, 0x0c, 0x03};
    const uint8_t negbits[] = {0x80, 0x20, 0x08, 0x02};
    for (int i = start; i < end; i++) {
      residual[i] += grad[i];
      if (residual[i] >= pos_threshold) {
        *compr_byte |= posbits[(i & 3)];
        residual[i] -= pos_threshold;
      } else if (residual[i] <= neg_threshold) {
        *compr_byte |= negbits[(i & 3)];
        residual[i] -= neg_threshold;
      }
    }
  }
}

// MXNet dequantize_2bit::Map for every i.
void RefDequantize2Bit(const uint8_t* in, int n, float threshold, float* out) {
  const float neg_threshold = -1 * threshold, pos_threshold = threshold;
  for (int i = 0; i < n; ++i) {
    float* outval = out + i;
    const uint8_t* ch_ptr = in + (i >> 4) * 4 + ((i & 15) >> 2);
    const uint8_t posbits[] = {0xc0, 0x30, 0x0c, 0x03};
    const uint8_t negbits[] = {0x80, 0x20, 0x08, 0x02};
    const int col = i & 3;
    const uint8_t mask = posbits[col];
    const uint8_t negmask = negbits[col];
    const uint8_t masked = *ch_ptr & mask;
    if (masked == mask) {
      *outval = pos_threshold;
    } else if (masked == negmask) {
      *outval = neg_threshold;
    } else {
      *outval = 0;
    }
  }
}

// BytePS's vanilla error feedback + OnebitCompressor::FusedCompressImpl
// (scaled, int64 words), sequentially: corrected = grad + error, then the
// compressor on `corrected` (padded with zeros to whole words).
void RefOnebitCompress(const std::vector<float>& grad,
                       std::vector<float>* error, std::vector<uint8_t>* out,
                       double* sum_out) {
  const size_t len = grad.size();
  constexpr size_t PACKING_SIZE = 64;
  const size_t padding_len =
      (PACKING_SIZE - (len % PACKING_SIZE)) % PACKING_SIZE;
  const size_t chunk_len = (len + padding_len) / PACKING_SIZE;
  std::vector<float> src(len + padding_len, 0.0f);
  for (size_t i = 0; i < len; ++i) src[i] = grad[i] + (*error)[i];
  double sum = 0.0f;
  for (size_t i = 0; i < len; ++i) sum += std::abs(src[i]);
  *sum_out = sum;
  const float scale = sum / len;
  std::vector<int64_t> dst(chunk_len);
  std::vector<float> err(len + padding_len);
  for (size_t i = 0; i < chunk_len; ++i) {
    size_t idx = i * PACKING_SIZE;
    int64_t x = src[idx] < 0;
    err[idx] = src[idx] - scale * (1 - x - x);
    for (size_t j = 1; j < PACKING_SIZE; ++j) {
      x <<= 1;
      int64_t sign = src[idx + j] < 0;
      err[idx + j] = src[idx + j] - scale * (1 - sign - sign);
      x |= sign;
    }
    dst[i] = x;
  }
  for (size_t i = 0; i < len; ++i) (*error)[i] = err[i];
  out->resize(chunk_len * 8 + 4);
  std::memcpy(out->data(), dst.data(), chunk_len * 8);
  std::memcpy(out->data() + chunk_len * 8, &scale, 4);
}

// BytePS's OnebitCompressor::DecompressImpl.
void RefOnebitDecompress(const std::vector<uint8_t>& in, size_t n,
                         std::vector<float>* out) {
  const size_t chunk_len = (in.size() - sizeof(float)) / sizeof(int64_t);
  std::vector<int64_t> src(chunk_len);
  std::memcpy(src.data(), in.data(), chunk_len * 8);
  float scale;
  std::memcpy(&scale, in.data() + chunk_len * 8, 4);
  std::vector<float> dst(chunk_len * 64);
  for (size_t i = 0; i < chunk_len; ++i) {
    int64_t x = src[i];
    size_t idx = i * 64;
    for (int j = 0; j < 64; ++j) {
      int sign = 1 - (x < 0) - (x < 0);
      dst[idx + j] = sign * scale;
      x = static_cast<int64_t>(static_cast<uint64_t>(x) << 1);
    }
  }
  out->assign(dst.begin(), dst.begin() + n);
}

std::vector<float> Random(size_t n, std::mt19937* rng, float scale) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(*rng);
  return v;
}

// Sizes around the word boundaries and the parallel threshold.
const size_t kSizes[] = {0,  1,  3,    15,    16,    17,         63,
                         64, 65, 1000, 65536, 65537, 262144 + 7, 1 << 20};

TEST(TwoBitTest, MatchesMxnetBitForBitOverSeveralRounds) {
  std::mt19937 rng(1);
  for (size_t n : kSizes) {
    for (float t : {0.5f, 0.05f, 1.7f}) {
      std::vector<float> res = Random(n, &rng, 0.3f), ref_res = res;
      for (int round = 0; round < 3; ++round) {
        const std::vector<float> grad = Random(n, &rng, 0.4f);
        std::vector<uint8_t> ref_out;
        RefQuantize2Bit(grad, &ref_res, t, &ref_out);
        std::vector<uint8_t> out(TwoBitBytes(n), 0xCD);
        Quantize2Bit(grad.data(), res.data(), n, t, out.data());
        ASSERT_EQ(out, ref_out) << "n=" << n << " t=" << t;
        for (size_t i = 0; i < n; ++i) {
          ASSERT_EQ(Bits(res[i]), Bits(ref_res[i])) << "n=" << n << " i=" << i;
        }
        std::vector<float> got(n, 9.0f), want(n, 7.0f);
        Dequantize2Bit(out.data(), n, t, got.data());
        RefDequantize2Bit(ref_out.data(), static_cast<int>(n), t, want.data());
        for (size_t i = 0; i < n; ++i) {
          ASSERT_EQ(Bits(got[i]), Bits(want[i])) << "n=" << n << " i=" << i;
        }
      }
    }
  }
}

// Both instruction-set versions, directly (the public functions use the
// best the CPU has; this also covers the portable loops on AVX2 machines).
TEST(TwoBitTest, ScalarAndAvx2KernelsMatchMxnet) {
  std::mt19937 rng(11);
  for (size_t n : {size_t{0}, size_t{5}, size_t{16}, size_t{31}, size_t{33},
                   size_t{1000}, size_t{4099}}) {
    const std::vector<float> grad = Random(n, &rng, 0.6f);
    const std::vector<float> res0 = Random(n, &rng, 0.3f);
    std::vector<float> ref_res = res0;
    std::vector<uint8_t> ref_out;
    RefQuantize2Bit(grad, &ref_res, 0.5f, &ref_out);
    for (bool avx2 : {false, true}) {
      if (avx2 && !internal::HasAvx2()) continue;
      std::vector<float> res = res0;
      std::vector<uint8_t> out(TwoBitBytes(n), 0x77);
      (avx2 ? internal::Quantize2BitAvx2 : internal::Quantize2BitScalar)(
          grad.data(), res.data(), 0, n, 0.5f, out.data());
      ASSERT_EQ(out, ref_out) << "n=" << n << " avx2=" << avx2;
      ASSERT_TRUE(n == 0 || std::memcmp(res.data(), ref_res.data(), n * 4) == 0)
          << "n=" << n << " avx2=" << avx2;
      std::vector<float> got(n), want(n);
      (avx2 ? internal::Dequantize2BitAvx2 : internal::Dequantize2BitScalar)(
          out.data(), 0, n, 0.5f, got.data());
      RefDequantize2Bit(ref_out.data(), static_cast<int>(n), 0.5f, want.data());
      ASSERT_TRUE(n == 0 || std::memcmp(got.data(), want.data(), n * 4) == 0)
          << n;
    }
  }
}

TEST(OnebitTest, ScalarAndAvx2KernelsAgree) {
  if (!internal::HasAvx2()) GTEST_SKIP() << "no AVX2 on this CPU";
  std::mt19937 rng(12);
  for (size_t n : {size_t{1}, size_t{8}, size_t{63}, size_t{64}, size_t{65},
                   size_t{1000}, size_t{4099}}) {
    const std::vector<float> grad = Random(n, &rng, 0.6f);
    const std::vector<float> err0 = Random(n, &rng, 0.3f);
    ASSERT_EQ(Bits(static_cast<float>(
                  internal::AbsSumScalar(grad.data(), err0.data(), 0, n))),
              Bits(static_cast<float>(
                  internal::AbsSumAvx2(grad.data(), err0.data(), 0, n))));
    ASSERT_EQ(internal::AbsSumScalar(grad.data(), err0.data(), 0, n),
              internal::AbsSumAvx2(grad.data(), err0.data(), 0, n))
        << n;
    std::vector<float> e1 = err0, e2 = err0;
    std::vector<uint8_t> o1(OnebitBytes(n), 1), o2(OnebitBytes(n), 2);
    internal::OnebitPackScalar(grad.data(), e1.data(), 0, n, 0.37f, o1.data());
    internal::OnebitPackAvx2(grad.data(), e2.data(), 0, n, 0.37f, o2.data());
    ASSERT_TRUE(std::equal(o1.begin(), o1.end() - 4, o2.begin())) << n;
    ASSERT_EQ(0, std::memcmp(e1.data(), e2.data(), n * 4)) << n;
    std::vector<float> u1(n), u2(n);
    internal::OnebitUnpackScalar(o1.data(), 0, n, 0.37f, u1.data());
    internal::OnebitUnpackAvx2(o1.data(), 0, n, 0.37f, u2.data());
    ASSERT_EQ(0, std::memcmp(u1.data(), u2.data(), n * 4)) << n;
  }
}

TEST(TwoBitTest, DequantizesEveryBytePatternAsMxnet) {
  // All 256 byte values (01 included, which MXNet reads as 0).
  std::vector<uint8_t> in(256);
  for (int i = 0; i < 256; ++i) in[i] = static_cast<uint8_t>(i);
  const size_t n = 1024;
  std::vector<float> got(n), want(n);
  Dequantize2Bit(in.data(), n, 0.25f, got.data());
  RefDequantize2Bit(in.data(), n, 0.25f, want.data());
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(Bits(got[i]), Bits(want[i])) << i;
}

TEST(OnebitTest, MatchesBytePsOverSeveralRounds) {
  std::mt19937 rng(3);
  for (size_t n : kSizes) {
    if (n == 0) continue;
    std::vector<float> err(n, 0.0f), ref_err(n, 0.0f);
    for (int round = 0; round < 3; ++round) {
      const std::vector<float> grad = Random(n, &rng, 0.2f);
      std::vector<uint8_t> ref_out;
      double ref_sum;
      RefOnebitCompress(grad, &ref_err, &ref_out, &ref_sum);
      std::vector<uint8_t> out(OnebitBytes(n), 0xEE);
      OnebitCompress(grad.data(), err.data(), n, out.data());
      ASSERT_EQ(out.size(), ref_out.size());
      // The signs are exact. The scale is the same double sum in a fixed
      // (lane-blocked) order instead of one sequential chain: equal after
      // rounding to float here, and never more than 1 ulp apart.
      ASSERT_TRUE(std::equal(out.begin(), out.end() - 4, ref_out.begin()))
          << "n=" << n;
      float scale, ref_scale;
      std::memcpy(&scale, out.data() + out.size() - 4, 4);
      std::memcpy(&ref_scale, ref_out.data() + ref_out.size() - 4, 4);
      ASSERT_LE(std::abs(static_cast<int64_t>(Bits(scale)) -
                         static_cast<int64_t>(Bits(ref_scale))),
                1)
          << "n=" << n;
      if (Bits(scale) == Bits(ref_scale)) {
        for (size_t i = 0; i < n; ++i) {
          ASSERT_EQ(Bits(err[i]), Bits(ref_err[i])) << "n=" << n << " " << i;
        }
      } else {
        ref_err = err;  // Continue both from the same state.
      }
      std::vector<float> got(n), want;
      OnebitDecompress(out.data(), n, got.data());
      RefOnebitDecompress(out, n, &want);
      for (size_t i = 0; i < n; ++i) {
        ASSERT_EQ(Bits(got[i]), Bits(want[i])) << "n=" << n << " " << i;
      }
    }
  }
}

// Runs `pack` (grad, state, n, out) on one array with the default OpenMP
// team and with one thread: the payload and the state must not differ.
template <typename Pack>
void ExpectSameWithOneThread(Pack pack, size_t out_bytes) {
  std::mt19937 rng(2);
  const size_t n = (1 << 20) + 77;  // Parallel, and a partial last block.
  const std::vector<float> grad = Random(n, &rng, 1.0f);
  std::vector<float> s1(n, 0.0f), s2(n, 0.0f);
  std::vector<uint8_t> o1(out_bytes), o2(out_bytes);
  pack(grad.data(), s1.data(), n, o1.data());
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  pack(grad.data(), s2.data(), n, o2.data());
  omp_set_num_threads(saved);
  EXPECT_EQ(o1, o2);
  EXPECT_EQ(0, std::memcmp(s1.data(), s2.data(), n * 4));
}

TEST(TwoBitTest, SameResultWithOneThread) {
  ExpectSameWithOneThread([](const float* g, float* r, size_t n,
                             uint8_t* o) { Quantize2Bit(g, r, n, 0.5f, o); },
                          TwoBitBytes((1 << 20) + 77));
}

TEST(OnebitTest, ScaleDoesNotDependOnThreads) {
  ExpectSameWithOneThread(OnebitCompress, OnebitBytes((1 << 20) + 77));
}

// Exact value of a half.
double HalfValue(uint16_t h) {
  const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
  const double v = e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
  return (h & 0x8000) ? -v : v;
}

// Round to nearest even by search over the finite halves (independent of
// the bit tricks under test). NaN: quiet, top 10 payload bits kept.
uint16_t RefFloatToHalf(float f) {
  const uint32_t x = Bits(f);
  const uint16_t sign = (x >> 16) & 0x8000;
  if (std::isnan(f)) return sign | 0x7e00 | ((x >> 13) & 0x3ff);
  const double a = std::fabs(static_cast<double>(f));
  if (a >= 65520.0) return sign | 0x7c00;
  // Largest finite half <= a.
  uint16_t lo = 0, hi = 0x7bff;
  while (lo < hi) {
    const uint16_t mid = (lo + hi + 1) / 2;
    if (HalfValue(mid) <= a)
      lo = mid;
    else
      hi = mid - 1;
  }
  if (HalfValue(lo) == a) return sign | lo;
  const uint16_t up = lo + 1;  // 0x7c00 (inf) above 65504.
  const double dl = a - HalfValue(lo);
  const double du = (up == 0x7c00 ? 65536.0 : HalfValue(up)) - a;
  if (dl < du) return sign | lo;
  if (du < dl) return sign | up;
  return sign | ((lo & 1) ? up : lo);
}

TEST(HalfTest, EveryHalfConvertsExactly) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = HalfToFloat1(static_cast<uint16_t>(h));
    const int e = (h >> 10) & 0x1f;
    if (e == 0x1f && (h & 0x3ff) != 0) {
      ASSERT_TRUE(std::isnan(f)) << h;
      ASSERT_EQ(Bits(f),
                ((h & 0x8000u) << 16) | 0x7f800000u | ((h & 0x3ffu) << 13))
          << h;
    } else if (e == 0x1f) {
      ASSERT_TRUE(std::isinf(f)) << h;
    } else {
      ASSERT_EQ(static_cast<double>(f), HalfValue(h)) << h;
      ASSERT_EQ(std::signbit(f), (h & 0x8000) != 0) << h;
    }
    // And back.
    ASSERT_EQ(FloatToHalf1(f), e == 0x1f && (h & 0x3ff) ? (h | 0x200) : h) << h;
  }
}

TEST(HalfTest, RoundsToNearestEven) {
  std::vector<float> cases = {0.0f,
                              -0.0f,
                              1.0f,
                              65504.0f,
                              65519.99f,
                              65520.0f,
                              65536.0f,
                              1e10f,
                              std::numeric_limits<float>::infinity(),
                              -std::numeric_limits<float>::infinity(),
                              std::numeric_limits<float>::quiet_NaN(),
                              FromBits(0x7f800001u),
                              FromBits(0xffbfffffu),
                              FromBits(0x7fc00123u),
                              std::ldexp(1.0f, -24),
                              std::ldexp(1.0f, -25),
                              std::ldexp(3.0f, -26),
                              std::ldexp(1.0f, -14),
                              std::ldexp(1023.5f, -24),
                              std::ldexp(1.5f, -24),
                              std::ldexp(2.5f, -24),
                              1.0f + std::ldexp(1.0f, -11),
                              1.0f + std::ldexp(3.0f, -11),
                              2049.0f,
                              2051.0f,
                              std::numeric_limits<float>::denorm_min(),
                              std::numeric_limits<float>::min()};
  std::mt19937 rng(5);
  for (int i = 0; i < 500000; ++i) cases.push_back(FromBits(rng()));
  // Near the half range, where the interesting roundings are.
  std::uniform_real_distribution<float> exp(-27.0f, 17.0f);
  for (int i = 0; i < 300000; ++i) {
    cases.push_back(std::ldexp(1.0f + (rng() & 0xffffff) / 16777216.0f,
                               static_cast<int>(exp(rng))) *
                    ((rng() & 1) ? 1.0f : -1.0f));
    // Exact ties: a half plus half its ulp.
    const uint16_t h = rng() & 0x7bfe;
    const double tie = (HalfValue(h) + HalfValue(h + 1)) / 2;
    cases.push_back(static_cast<float>((rng() & 1) ? tie : -tie));
  }
  for (float f : cases) {
    ASSERT_EQ(FloatToHalf1(f), RefFloatToHalf(f)) << std::hexfloat << f;
  }
  // The vector path (F16C where the CPU has it) agrees, for every length
  // mod 8 and across the parallel threshold.
  std::vector<uint16_t> got(cases.size());
  FloatToHalf(cases.data(), cases.size(), got.data());
  for (size_t i = 0; i < cases.size(); ++i) {
    ASSERT_EQ(got[i], RefFloatToHalf(cases[i])) << std::hexfloat << cases[i];
  }
  std::vector<float> back(cases.size()), want(cases.size());
  HalfToFloat(got.data(), got.size(), back.data());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(Bits(back[i]), Bits(HalfToFloat1(got[i]))) << i;
  }
  for (size_t n : {size_t{1}, size_t{7}, size_t{9}, size_t{17}}) {
    std::vector<uint16_t> part(n);
    FloatToHalf(cases.data() + 3, n, part.data());
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(part[i], got[3 + i]);
  }
}

TEST(SizesTest, AsMxnetAndBytePs) {
  EXPECT_EQ(TwoBitBytes(0), 0u);
  EXPECT_EQ(TwoBitBytes(1), 4u);
  EXPECT_EQ(TwoBitBytes(16), 4u);
  EXPECT_EQ(TwoBitBytes(17), 8u);
  EXPECT_EQ(OnebitBytes(1), 12u);
  EXPECT_EQ(OnebitBytes(64), 12u);
  EXPECT_EQ(OnebitBytes(65), 20u);
  EXPECT_EQ(EncodedBytes(proto::FP16, 3), 6u);
  EXPECT_EQ(EncodedBytes(proto::RAW_FLOAT32, 3), 12u);
  EXPECT_EQ(EncodedBytes(static_cast<proto::Encoding>(99), 3), 0u);
}

}  // namespace
}  // namespace compression
}  // namespace pstrain
