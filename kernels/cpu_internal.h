// Helpers shared by the CPU kernel sources (cpu_ops.cc, cpu_layers.cc).
// Private to //kernels (listed in its srcs): not part of its interface.
#ifndef PSTRAIN_KERNELS_CPU_INTERNAL_H_
#define PSTRAIN_KERNELS_CPU_INTERNAL_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <dnnl.hpp>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu_ops.h"
#include "kernels/tensor.h"

namespace pstrain {
namespace kernels {

// Short names for the oneDNN types the kernel sources use (this header is
// included only by them).
using dnnl::memory;
using tag = dnnl::memory::format_tag;
constexpr auto f32 = dnnl::memory::data_type::f32;

inline absl::Status Bad(const std::string& what) {
  return absl::InvalidArgumentError(what);
}

// Replaces *t with a zero-filled tensor of `shape` unless it already has it
// (then its storage, and any view of it, is reused).
inline void Resize(Tensor* t, const std::vector<int64_t>& shape) {
  if (t->shape() != shape) *t = Tensor(shape);
}

// Wraps oneDNN calls: its C++ API throws dnnl::error; we never let it out.
template <typename Fn>
absl::Status Guard(const char* what, Fn fn) {
  try {
    fn();
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat(what, ": oneDNN: ", e.what()));
  }
  return absl::OkStatus();
}

// Elements below which a loop runs on the calling thread alone: starting
// the OpenMP team costs more than the loop.
constexpr int64_t kParallelMinElements = 1 << 15;

// Calls fn(i) for every i in [0, n), vectorised (omp simd: fn must not
// carry state between iterations; each element may be read and written in
// place) and split statically across the kernels' OpenMP threads
// (SetCpuThreads) when n is large.
template <typename Fn>
void ParallelFor(int64_t n, Fn fn) {
#pragma omp parallel if (n >= kParallelMinElements)
  {
    // A private copy, so that the compiler keeps fn's captured pointers in
    // registers (through the shared one it reloads them every iteration and
    // does not vectorise).
    Fn local = fn;
#pragma omp for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) local(i);
  }
}

// Calls fn(i) for every i in [0, n) in parallel, without vectorisation:
// for outer loops (channels, rows) whose bodies are loops themselves.
template <typename Fn>
void ParallelForRows(int64_t n, int64_t work_per_row, Fn fn) {
#pragma omp parallel if (n > 1 && n * work_per_row >= kParallelMinElements)
  {
    Fn local = fn;  // As in ParallelFor.
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) local(i);
  }
}

// Branch-free float exp, tanh and sigmoid that the compiler vectorises
// inside ParallelFor (std::exp and std::tanh are library calls, one element
// at a time). Cephes' single-precision algorithms: exp within 2 ulp over
// [-87, 88] (clamped outside: exp(88) ~ 1.7e38, exp(-87) ~ 1.6e-38); tanh
// within 3 ulp. NaN in, NaN out.
inline float ExpApprox(float x) {
  x = x > 88.0f ? 88.0f : (x < -87.0f ? -87.0f : x);  // NaN stays NaN.
  // n = round(x / ln 2) by truncation toward zero and a correction, which
  // vectorises without SSE4.1's round instruction (from 0 for NaN, which
  // the polynomial carries through).
  const float t = (x == x ? x : 0.0f) * 1.44269504088896341f + 0.5f;
  int32_t n = static_cast<int32_t>(t);
  n -= static_cast<float>(n) > t ? 1 : 0;
  const float fn = static_cast<float>(n);
  float r = x - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  const float z = r * r;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * z + r + 1.0f;
  // y * 2^n, n in [-126, 127]: build the power of two from its exponent bits.
  const uint32_t bits = static_cast<uint32_t>(n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

inline float TanhApprox(float x) {
  const float a = std::fabs(x);
  // |x| >= 0.625: 1 - 2 / (e^2|x| + 1), with the sign of x.
  const float e = ExpApprox(2.0f * std::min(a, 44.0f));
  const float big = std::copysign(1.0f - 2.0f / (e + 1.0f), x);
  // |x| < 0.625 (and NaN): an odd polynomial.
  const float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const float small = p * z * x + x;
  return a >= 0.625f ? big : small;
}

inline float SigmoidApprox(float x) { return 1.0f / (1.0f + ExpApprox(-x)); }

// A oneDNN memory over caller-owned floats (oneDNN takes a non-const
// pointer even for inputs, which it only reads).
inline memory Mem(const memory::desc& md, CpuContext* ctx, const float* data) {
  return memory(md, ctx->engine(), const_cast<float*>(data));
}

// Float buffers that grow on demand and are kept between calls, one per
// role (a primitive argument kind), shared by every primitive of one
// CpuContext that keeps it in its cache. Calls on a context are sequential
// and each waits for its stream, so a role's buffer is free again when a
// kernel returns. Growing invalidates earlier pointers.
class ScratchBuffers {
 public:
  // At least `bytes` bytes for `role` (64-byte aligned), contents undefined.
  float* Get(int role, size_t bytes) {
    if (role >= static_cast<int>(buffers_.size())) buffers_.resize(role + 1);
    Tensor& t = buffers_[role];
    const int64_t floats =
        static_cast<int64_t>((bytes + sizeof(float) - 1) / sizeof(float));
    if (t.size() < floats) t = Tensor({floats});
    return t.data();
  }

 private:
  std::vector<Tensor> buffers_;
};

// One argument of a oneDNN primitive whose layout the primitive chose
// (format_tag::any), between the caller's plain tensor and the primitive:
// a memory over the caller's data, a memory in the primitive's layout (the
// same object when the layouts agree) and the reorder between them
// (caller -> primitive for inputs, primitive -> caller for outputs). Built
// once with the primitive and reused; the data pointers are set per call.
class StagedArg {
 public:
  StagedArg() = default;
  StagedArg(CpuContext* ctx, const memory::desc& user_md,
            const memory::desc& prim_md, bool input)
      : user_(user_md, ctx->engine(), nullptr), same_(user_md == prim_md) {
    if (same_) {
      prim_ = user_;
      return;
    }
    prim_ = memory(prim_md, ctx->engine(), nullptr);
    reorder_ =
        input ? dnnl::reorder(user_, prim_) : dnnl::reorder(prim_, user_);
  }
  // Bytes of scratch the primitive's layout needs (0 when no reorder).
  size_t scratch_bytes() const {
    return same_ ? 0 : prim_.get_desc().get_size();
  }

  // Input: points the memories at `data` and at scratch role `role` of
  // *scratch and reorders the caller's data into the primitive's layout.
  // Returns the memory to pass to the primitive.
  const memory& In(CpuContext* ctx, ScratchBuffers* scratch, int role,
                   const float* data) {
    Point(scratch, role, const_cast<float*>(data));
    if (!same_) reorder_.execute(ctx->stream(), user_, prim_);
    return prim_;
  }
  // Output: the memory the primitive writes; Finish() copies it to `data`.
  const memory& Out(ScratchBuffers* scratch, int role, float* data) {
    Point(scratch, role, data);
    return prim_;
  }
  void Finish(CpuContext* ctx) {
    if (!same_) reorder_.execute(ctx->stream(), prim_, user_);
  }
  // The primitive-side memory as last pointed (for sharing one staged
  // input between two primitives that want the same layout).
  const memory& prim() const { return prim_; }

 private:
  void Point(ScratchBuffers* scratch, int role, float* data) {
    user_.set_data_handle(data);
    // Setting the handle also zeroes the padding of blocked layouts
    // (channels rounded up to the block), which the primitives rely on.
    if (!same_) prim_.set_data_handle(scratch->Get(role, scratch_bytes()));
  }

  memory user_, prim_;
  dnnl::reorder reorder_;
  bool same_ = true;
};

}  // namespace kernels
}  // namespace pstrain

#endif  // PSTRAIN_KERNELS_CPU_INTERNAL_H_
