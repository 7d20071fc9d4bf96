// Helpers shared by the CPU kernel sources (cpu_ops.cc, cpu_layers.cc).
// Private to //kernels (listed in its srcs): not part of its interface.
#ifndef PSTRAIN_KERNELS_CPU_INTERNAL_H_
#define PSTRAIN_KERNELS_CPU_INTERNAL_H_

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

inline absl::Status Bad(const std::string& what) { return absl::InvalidArgumentError(what); }

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

// A oneDNN memory over caller-owned floats (oneDNN takes a non-const
// pointer even for inputs, which it only reads).
inline memory Mem(const memory::desc& md, CpuContext* ctx, const float* data) {
  return memory(md, ctx->engine(), const_cast<float*>(data));
}

}  // namespace kernels
}  // namespace pstrain

#endif  // PSTRAIN_KERNELS_CPU_INTERNAL_H_
