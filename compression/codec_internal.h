// The kernels of codec.h per instruction set, for tests (which check the
// portable loops and the AVX2 ones against the same references) and the
// dispatch in codec.cc. Each works on elements [begin, end) of the whole
// arrays, on the calling thread. REQUIRES: begin is a multiple of 64.
#ifndef PSTRAIN_COMPRESSION_CODEC_INTERNAL_H_
#define PSTRAIN_COMPRESSION_CODEC_INTERNAL_H_

#include <cstddef>
#include <cstdint>

namespace pstrain {
namespace compression {
namespace internal {

// Whether this CPU runs the *Avx2 kernels.
bool HasAvx2();

void Quantize2BitScalar(const float* grad, float* residual, size_t begin,
                        size_t end, float threshold, uint8_t* out);
void Quantize2BitAvx2(const float* grad, float* residual, size_t begin,
                      size_t end, float threshold, uint8_t* out);
void Dequantize2BitScalar(const uint8_t* in, size_t begin, size_t end,
                          float threshold, float* out);
void Dequantize2BitAvx2(const uint8_t* in, size_t begin, size_t end,
                        float threshold, float* out);

// sum |grad + error| in double: 8 interleaved partial sums (element k of
// each group of 8 into sum k) added in order; both versions agree bit for
// bit.
double AbsSumScalar(const float* grad, const float* error, size_t begin,
                    size_t end);
double AbsSumAvx2(const float* grad, const float* error, size_t begin,
                  size_t end);
void OnebitPackScalar(const float* grad, float* error, size_t begin, size_t end,
                      float scale, uint8_t* out);
void OnebitPackAvx2(const float* grad, float* error, size_t begin, size_t end,
                    float scale, uint8_t* out);
void OnebitUnpackScalar(const uint8_t* in, size_t begin, size_t end,
                        float scale, float* out);
void OnebitUnpackAvx2(const uint8_t* in, size_t begin, size_t end, float scale,
                      float* out);

}  // namespace internal
}  // namespace compression
}  // namespace pstrain

#endif  // PSTRAIN_COMPRESSION_CODEC_INTERNAL_H_
