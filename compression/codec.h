// Pack and unpack kernels of gradient compression (issue #16): MXNet's
// 2-bit quantisation, IEEE half precision and BytePS's onebit, on plain
// arrays. The wire layouts are fixed here (they are the protocol's, see
// proto/messages.proto, Encoding):
//
// - 2bit (MXNet src/kvstore/gradient_compression-inl.h, quantize_2bit):
//   per element r += g; r >= t emits +t (bits 11) and r -= t; else r <= -t
//   emits -t (bits 10) and r += t; else 0 (bits 00) and r is kept. Element
//   i lives in byte i/4 of the payload, in bits 7-6, 5-4, 3-2, 1-0 for
//   i%4 = 0..3; 16 elements fill one 32-bit word; the payload has
//   ceil(n/16) words (unused trailing bits are 0). Dequantising maps 11 to
//   +t, 10 to -t and anything else (00, 01) to 0.
// - fp16: IEEE binary16, little-endian, round to nearest even (subnormals,
//   infinities and NaN (quiet, top payload bits kept) as F16C's
//   vcvtps2ph does).
// - onebit (BytePS byteps/common/compressor/impl/onebit.cc, with its
//   vanilla error feedback): c = g + e; scale = float(sum |c| in double /
//   n); bit set for c < 0; e = c - (c < 0 ? -scale : +scale). Elements go
//   64 to a little-endian int64 word, the first in the most significant
//   bit; ceil(n/64) words, then the float32 scale: 8*ceil(n/64) + 4 bytes.
//   Unpacking gives -scale for a set bit, +scale otherwise.
//
// The loops are written for the compiler to vectorise (fp16 uses F16C when
// the CPU has it) and run on an OpenMP team (kernels/threads.h) when the
// array is big enough for that to pay. All functions are thread-safe on
// distinct buffers; only OnebitCompress allocates (a few bytes). Buffers may be
// unaligned.
#ifndef PSTRAIN_COMPRESSION_CODEC_H_
#define PSTRAIN_COMPRESSION_CODEC_H_

#include <cstddef>
#include <cstdint>

#include "proto/messages.pb.h"

namespace pstrain {
namespace compression {

// Payload bytes of `n` elements.
inline size_t TwoBitBytes(size_t n) { return (n + 15) / 16 * 4; }
inline size_t HalfBytes(size_t n) { return 2 * n; }
inline size_t OnebitBytes(size_t n) { return (n + 63) / 64 * 8 + 4; }
// Bytes of `n` values in encoding `e`; 0 for an unknown encoding.
// REQUIRES: n <= 2^61 (a checked length).
uint64_t EncodedBytes(proto::Encoding e, uint64_t n);
// "2bit", "fp16", "onebit", "none": as --gradient_compression names it.
const char* EncodingName(proto::Encoding e);

// 2bit: adds `grad` to `residual` (error feedback) and writes
// TwoBitBytes(n) bytes to `out`. REQUIRES: threshold > 0; `out` does not
// overlap the arrays.
void Quantize2Bit(const float* grad, float* residual, size_t n, float threshold,
                  uint8_t* out);
// Writes the `n` values of a 2bit payload (TwoBitBytes(n) bytes at `in`).
void Dequantize2Bit(const uint8_t* in, size_t n, float threshold, float* out);

// fp16: `n` floats to halves and back.
void FloatToHalf(const float* in, size_t n, uint16_t* out);
void HalfToFloat(const uint16_t* in, size_t n, float* out);
// One value, the scalar fallback the vector paths must agree with.
uint16_t FloatToHalf1(float f);
float HalfToFloat1(uint16_t h);

// onebit with error feedback: reads `grad` and `error` (n each), writes
// OnebitBytes(n) bytes to `out` and the new error. n == 0 writes scale 0.
void OnebitCompress(const float* grad, float* error, size_t n, uint8_t* out);
// Writes the `n` values of a onebit payload (OnebitBytes(n) bytes).
void OnebitDecompress(const uint8_t* in, size_t n, float* out);

}  // namespace compression
}  // namespace pstrain

#endif  // PSTRAIN_COMPRESSION_CODEC_H_
