// The SGD weight update, w <- w - lr * g, on the CPU. This is the reference
// that the CUDA twin (sgd_update_gpu.h) is tested against, and the update
// the optimizers of nn/ build on.
#ifndef PSTRAIN_KERNELS_SGD_UPDATE_H_
#define PSTRAIN_KERNELS_SGD_UPDATE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace pstrain {
namespace kernels {

// Applies `weights[i] -= lr * grads[i]` for every i. Returns
// InvalidArgument (and leaves `weights` unchanged) if the sizes differ.
// Thread-compatible: callers must not update the same weights concurrently.
absl::Status SgdUpdateCpu(absl::Span<float> weights,
                          absl::Span<const float> grads, float lr);

}  // namespace kernels
}  // namespace pstrain

#endif  // PSTRAIN_KERNELS_SGD_UPDATE_H_
