// GPU kernels on cuDNN 9, cuBLAS and custom CUDA: the same operations,
// layouts and semantics as the CPU kernels of cpu_ops.h (the reference
// they are tested against), with CpuContext* -> GpuContext* and Tensor ->
// GpuTensor. Only built with --config=cuda.
//
// Layouts are MXNet's: activations NCHW, weights OIHW (groups: O = G *
// O/G), fully connected weights [out, in].
//
// What runs where: convolution (forward, backward data, backward filter,
// bias), pooling, activations and LRN on cuDNN's legacy API (still declared
// by cuDNN 9.x's cudnn_cnn.h / cudnn_ops.h); fully connected on cuBLAS
// sgemm; batch norm (MXNet's biased batch variance in the moving average,
// which cuDNN's batch norm does not do), softmax + cross-entropy, dropout,
// concat, add and buffer sums on custom kernels (gpu_ops.cu).
//
// Common contract of every function below:
// - Every tensor must be on ctx->device(); inputs and outputs are checked
//   like the CPU twins and a mismatch returns InvalidArgument naming it.
//   CUDA/cuDNN/cuBLAS failures return Internal (ResourceExhausted when out
//   of memory) naming the call.
// - Outputs are resized (reallocated, zero-filled) on ctx's device when
//   their shape differs, as on the CPU; outputs are overwritten, not
//   accumulated, unless the function says otherwise.
// - The work is enqueued on ctx's stream and completes asynchronously
//   (only SoftmaxCrossEntropy with a loss waits, to return the loss). Work
//   of the same context runs in order, so results may be used by the next
//   call on the same context right away; other streams must synchronize.
// - Outputs must not alias inputs unless the function says so.
// - Descriptors and chosen convolution algorithms are cached per shape in
//   ctx->cache().
// Thread-compatible, like GpuContext.
#ifndef PSTRAIN_KERNELS_GPU_OPS_H_
#define PSTRAIN_KERNELS_GPU_OPS_H_

#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/cpu_ops.h"
#include "kernels/gpu_context.h"
#include "kernels/gpu_tensor.h"
#include "kernels/sgd_update_gpu.h"

namespace pstrain {
namespace kernels {

// y = conv(x, w) + b. x [N,C,H,W], w [F, C/groups, KH, KW], b [F] or empty.
// The algorithm is chosen on the first call for a shape (heuristic or
// benchmark, per ctx->options()) and cached.
absl::Status Conv2dForward(GpuContext* ctx, const GpuTensor& x,
                           const GpuTensor& w, const GpuTensor& b,
                           const Conv2dParams& p, GpuTensor* y);
// Gradients: dx (may be null), dw, db (may be null when no bias), all
// overwritten.
absl::Status Conv2dBackward(GpuContext* ctx, const GpuTensor& x,
                            const GpuTensor& w, const GpuTensor& dy,
                            const Conv2dParams& p, GpuTensor* dx, GpuTensor* dw,
                            GpuTensor* db);

// Max (deterministic cuDNN mode) or average (padding counted, as MXNet)
// pooling, or global pooling. *state keeps a view of y for backward.
// REQUIRES: y is not modified between forward and backward.
absl::Status Pool2dForward(GpuContext* ctx, const GpuTensor& x,
                           const Pool2dParams& p, GpuTensor* y,
                           PoolState* state);
absl::Status Pool2dBackward(GpuContext* ctx, const GpuTensor& x,
                            const GpuTensor& dy, const Pool2dParams& p,
                            const PoolState& state, GpuTensor* dx);

// y = x w^T + b (cuBLAS sgemm on row-major data). x [N, K] (or any [N,
// ...] flattened), w [O, K], b [O] or empty.
absl::Status FullyConnectedForward(GpuContext* ctx, const GpuTensor& x,
                                   const GpuTensor& w, const GpuTensor& b,
                                   GpuTensor* y);
// dx (may be null) gets x's shape; db may be null.
absl::Status FullyConnectedBackward(GpuContext* ctx, const GpuTensor& x,
                                    const GpuTensor& w, const GpuTensor& dy,
                                    GpuTensor* dx, GpuTensor* dw,
                                    GpuTensor* db);

// y may alias x (in place).
absl::Status ActivationForward(GpuContext* ctx, Activation a,
                               const GpuTensor& x, GpuTensor* y);
// Uses the forward output y. dx may alias dy.
absl::Status ActivationBackward(GpuContext* ctx, Activation a,
                                const GpuTensor& y, const GpuTensor& dy,
                                GpuTensor* dx);

// Softmax over the last axis of logits [N, C] and the mean cross-entropy
// against integer labels (as floats, in host memory, checked before any
// work: InvalidArgument names the first label outside [0, C)). Writes
// probabilities; when `loss` is not null, waits for the stream and stores
// the loss there.
absl::Status SoftmaxCrossEntropy(GpuContext* ctx, const GpuTensor& logits,
                                 absl::Span<const float> labels,
                                 GpuTensor* probs, double* loss);
// dlogits = (probs - onehot(labels)) * scale.
absl::Status SoftmaxCrossEntropyBackward(GpuContext* ctx,
                                         const GpuTensor& probs,
                                         absl::Span<const float> labels,
                                         float scale, GpuTensor* dlogits);

// What training-mode batch norm saves for backward: the batch mean and
// 1 / sqrt(var + eps), each [C].
struct GpuBatchNormState {
  GpuTensor mean;
  GpuTensor inv_std;
};

// Batch normalization over the channel axis of x [N, C, H, W] or [N, C]
// (MXNet's BatchNorm; see cpu_ops.h). gamma, beta, moving_mean and
// moving_var are [C]. Training mode normalizes with the batch statistics
// (biased variance), saves them in *state and updates the moving
// statistics in place: moving = moving * momentum + batch * (1 -
// momentum), the variance being the biased batch variance.
absl::Status BatchNormForwardTraining(
    GpuContext* ctx, const GpuTensor& x, const GpuTensor& gamma,
    const GpuTensor& beta, const BatchNormParams& p, GpuTensor* y,
    GpuBatchNormState* state, GpuTensor* moving_mean, GpuTensor* moving_var);
// Inference mode: normalizes with the moving statistics.
absl::Status BatchNormForwardInference(GpuContext* ctx, const GpuTensor& x,
                                       const GpuTensor& gamma,
                                       const GpuTensor& beta,
                                       const GpuTensor& moving_mean,
                                       const GpuTensor& moving_var,
                                       const BatchNormParams& p, GpuTensor* y);
// Backward of the training-mode forward. dx (may be null), dgamma (0 with
// fix_gamma), dbeta overwritten.
absl::Status BatchNormBackward(GpuContext* ctx, const GpuTensor& x,
                               const GpuTensor& gamma, const GpuTensor& dy,
                               const BatchNormParams& p,
                               const GpuBatchNormState& state, GpuTensor* dx,
                               GpuTensor* dgamma, GpuTensor* dbeta);

// Local response normalization across channels (MXNet's LRN; cuDNN's
// cross-channel LRN, which divides alpha by nsize the same way): y = x /
// (knorm + alpha / nsize * sum over nsize neighbouring channels of
// x^2)^beta. x is NCHW. cuDNN's limits apply: nsize odd in [1, 16], knorm
// >= 1e-5, beta >= 0.01 (InvalidArgument otherwise). *state keeps a view
// of y. REQUIRES: y is not modified between forward and backward.
absl::Status LrnForward(GpuContext* ctx, const GpuTensor& x, const LrnParams& p,
                        GpuTensor* y, LrnState* state);
absl::Status LrnBackward(GpuContext* ctx, const GpuTensor& x,
                         const GpuTensor& dy, const LrnParams& p,
                         const LrnState& state, GpuTensor* dx);

// Inverted dropout: y = x * mask / (1 - p) with mask drawn Bernoulli(1 -
// p). One 64-bit seed is drawn from *rng per call (seeded by the caller, so
// runs repeat); the mask is a counter-based hash of (seed, element index).
// *mask keeps mask / (1 - p) for backward. p in [0, 1).
absl::Status DropoutForward(GpuContext* ctx, float p, std::mt19937_64* rng,
                            const GpuTensor& x, GpuTensor* y, GpuTensor* mask);
// dx = dy * mask. dx may alias dy.
absl::Status DropoutBackward(GpuContext* ctx, const GpuTensor& mask,
                             const GpuTensor& dy, GpuTensor* dx);

// Concatenation of NCHW (or [N, C]) tensors along the channel axis 1; all
// other dimensions must agree.
absl::Status ConcatForward(GpuContext* ctx,
                           absl::Span<const GpuTensor* const> xs, GpuTensor* y);
// Splits dy back into dxs; each *dxs[i] is resized to shapes[i], the shape
// of the corresponding forward input. Null entries are skipped.
absl::Status ConcatBackward(GpuContext* ctx, const GpuTensor& dy,
                            absl::Span<const std::vector<int64_t>> shapes,
                            absl::Span<GpuTensor* const> dxs);

// y = a + b, same shapes. y may alias a or b.
absl::Status AddForward(GpuContext* ctx, const GpuTensor& a, const GpuTensor& b,
                        GpuTensor* y);
// *acc += x, same shapes.
absl::Status AddInPlace(GpuContext* ctx, const GpuTensor& x, GpuTensor* acc);

// SGD with momentum (MXNet's rule; see sgd_update_gpu.h) on `weights`
// with `grad`; `mom` (the momentum state, same shape, zero-initialized by
// the caller) may be null when p.momentum == 0.
absl::Status SgdMomentumUpdate(GpuContext* ctx, const SgdMomentumParams& p,
                               const GpuTensor& grad, GpuTensor* weights,
                               GpuTensor* mom);

// *dst = the elementwise sum of `srcs` (at least one, all of the same
// element count), e.g. the gradients of the replicas of one parameter.
// Sources may live on other devices: they are copied to ctx's device first
// (peer copies, staged through the host when peer access is off). *dst,
// on ctx's device, may be one of the sources. REQUIRES: work producing a
// source on another device's stream has completed (synchronize that
// context or wait for an event first).
absl::Status SumBuffers(GpuContext* ctx,
                        absl::Span<const GpuTensor* const> srcs,
                        GpuTensor* dst);

}  // namespace kernels
}  // namespace pstrain

#endif  // PSTRAIN_KERNELS_GPU_OPS_H_
