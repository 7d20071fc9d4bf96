// CPU kernels on oneDNN 2.6 (and dnnl_sgemm): forward and backward of the
// layers the networks use. Layouts are MXNet's: activations NCHW, weights
// OIHW (groups: O = G * O/G), fully connected weights [out, in].
//
// Every function checks shapes and returns InvalidArgument naming the
// mismatch; oneDNN errors become Internal. Primitives are built once per
// shape and reused (CpuContext's cache). Thread-compatible: one CpuContext
// per thread.
#ifndef PSTRAIN_KERNELS_CPU_OPS_H_
#define PSTRAIN_KERNELS_CPU_OPS_H_

#include <dnnl.hpp>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "kernels/tensor.h"

namespace pstrain {
namespace kernels {

// The CPU device: a oneDNN engine and stream, and the primitive cache.
// Passed explicitly to every kernel; never global.
class CpuContext {
 public:
  CpuContext();
  dnnl::engine& engine() { return engine_; }
  dnnl::stream& stream() { return stream_; }
  // Cached objects by key (primitives, primitive descriptors).
  std::map<std::string, std::shared_ptr<void>>& cache() { return cache_; }

 private:
  dnnl::engine engine_;
  dnnl::stream stream_;
  std::map<std::string, std::shared_ptr<void>> cache_;
};

struct Conv2dParams {
  int kernel_h = 1, kernel_w = 1;
  int stride_h = 1, stride_w = 1;
  int pad_h = 0, pad_w = 0;
  int dilation_h = 1, dilation_w = 1;
  int groups = 1;
  int num_filter = 1;
};

// Output spatial size of a convolution (MXNet/"valid" rounding), or -1 if
// the window does not fit.
int64_t ConvOutSize(int64_t in, int kernel, int stride, int pad, int dilation);
// Checks the shapes of a convolution's input x, weight w and bias b (empty
// for none) against p and computes the output size; InvalidArgument names
// the mismatch. Shared by the CPU and GPU kernels.
absl::Status CheckConv2dShapes(const std::vector<int64_t>& x,
                               const std::vector<int64_t>& w,
                               const std::vector<int64_t>& b,
                               const Conv2dParams& p, int64_t* oh, int64_t* ow);

// y = conv(x, w) + b. x [N,C,H,W], w [F, C/groups, KH, KW], b [F] or empty.
// Resizes *y to [N, F, OH, OW] when its shape differs.
absl::Status Conv2dForward(CpuContext* ctx, const Tensor& x, const Tensor& w,
                           const Tensor& b, const Conv2dParams& p, Tensor* y);
// Gradients: dx (may be null), dw, db (may be null or empty when no bias),
// all overwritten (not accumulated).
absl::Status Conv2dBackward(CpuContext* ctx, const Tensor& x, const Tensor& w,
                            const Tensor& dy, const Conv2dParams& p, Tensor* dx,
                            Tensor* dw, Tensor* db);

enum class PoolKind { kMax, kAvg };

struct Pool2dParams {
  PoolKind kind = PoolKind::kMax;
  int kernel_h = 2, kernel_w = 2;
  int stride_h = 2, stride_w = 2;
  int pad_h = 0, pad_w = 0;
  bool global = false;  // Kernel = the whole input.
};

// Resolves global pooling in *p (kernel = the input's H x W, stride 1, no
// padding) and computes the output size of pooling x [N, C, H, W];
// InvalidArgument when x is not 4-D or the window does not fit.
absl::Status Pool2dGeometry(const std::vector<int64_t>& x, Pool2dParams* p,
                            int64_t* oh, int64_t* ow);

// Pooling state between forward and backward (max: the argmax workspace).
struct PoolState {
  std::shared_ptr<void> workspace;
};

absl::Status Pool2dForward(CpuContext* ctx, const Tensor& x,
                           const Pool2dParams& p, Tensor* y, PoolState* state);
absl::Status Pool2dBackward(CpuContext* ctx, const Tensor& x, const Tensor& dy,
                            const Pool2dParams& p, const PoolState& state,
                            Tensor* dx);

// y = x w^T + b. x [N, K] (or any [N, ...] flattened), w [O, K], b [O] or
// empty.
absl::Status FullyConnectedForward(const Tensor& x, const Tensor& w,
                                   const Tensor& b, Tensor* y);
absl::Status FullyConnectedBackward(const Tensor& x, const Tensor& w,
                                    const Tensor& dy, Tensor* dx, Tensor* dw,
                                    Tensor* db);

enum class Activation { kRelu, kTanh, kSigmoid };
absl::Status ActivationForward(Activation a, const Tensor& x, Tensor* y);
// Uses the forward output y (all three derivatives are functions of y).
absl::Status ActivationBackward(Activation a, const Tensor& y, const Tensor& dy,
                                Tensor* dx);

// Softmax over the last axis of logits [N, C] and the mean cross-entropy
// against integer labels (as floats). Writes probabilities, returns the
// loss; the gradient with respect to the logits is (p - onehot) * scale.
absl::Status SoftmaxCrossEntropy(const Tensor& logits,
                                 absl::Span<const float> labels, Tensor* probs,
                                 double* loss);
absl::Status SoftmaxCrossEntropyBackward(const Tensor& probs,
                                         absl::Span<const float> labels,
                                         float scale, Tensor* dlogits);

// Batch normalization over the channel axis of x [N, C, H, W] or [N, C]
// (MXNet's BatchNorm). gamma, beta, moving_mean, moving_var are [C].
struct BatchNormParams {
  float eps = 1e-3f;  // MXNet's default. Must be positive.
  float momentum =
      0.9f;  // moving = moving * momentum + batch * (1 - momentum).
  bool fix_gamma = false;  // When true gamma is treated as 1 (and dgamma = 0).
};

// What training-mode forward saves for backward: the batch mean and
// 1 / sqrt(var + eps), each [C].
struct BatchNormState {
  Tensor mean;
  Tensor inv_std;
};

// Training mode: normalizes with the batch statistics (biased variance),
// saves them in *state and updates the moving statistics in place (the
// moving variance takes the biased batch variance, as MXNet does).
absl::Status BatchNormForwardTraining(CpuContext* ctx, const Tensor& x,
                                      const Tensor& gamma, const Tensor& beta,
                                      const BatchNormParams& p, Tensor* y,
                                      BatchNormState* state,
                                      Tensor* moving_mean, Tensor* moving_var);
// Inference mode: normalizes with the moving statistics.
absl::Status BatchNormForwardInference(CpuContext* ctx, const Tensor& x,
                                       const Tensor& gamma, const Tensor& beta,
                                       const Tensor& moving_mean,
                                       const Tensor& moving_var,
                                       const BatchNormParams& p, Tensor* y);
// Backward of the training-mode forward. dx (may be null), dgamma, dbeta
// overwritten.
absl::Status BatchNormBackward(CpuContext* ctx, const Tensor& x,
                               const Tensor& gamma, const Tensor& dy,
                               const BatchNormParams& p,
                               const BatchNormState& state, Tensor* dx,
                               Tensor* dgamma, Tensor* dbeta);

// Local response normalization across channels (MXNet's LRN, AlexNet):
// y = x / (knorm + alpha / nsize * sum over nsize neighbouring channels of
// x^2)^beta. nsize odd.
struct LrnParams {
  int nsize = 5;
  float alpha = 1e-4f;
  float beta = 0.75f;
  float knorm = 2.0f;
};
// What forward saves for backward. The CPU kernels save nothing (backward
// recomputes the normalizer from x).
struct LrnState {
  std::shared_ptr<void> workspace;
};
absl::Status LrnForward(CpuContext* ctx, const Tensor& x, const LrnParams& p,
                        Tensor* y, LrnState* state);
absl::Status LrnBackward(CpuContext* ctx, const Tensor& x, const Tensor& dy,
                         const LrnParams& p, const LrnState& state, Tensor* dx);

// Inverted dropout: in training y = x * mask / (1 - p) with mask drawn
// Bernoulli(1 - p) from *rng (seeded by the caller); *mask keeps
// mask / (1 - p) for backward. p in [0, 1). The mask depends only on *rng's
// state (two elements per 64-bit draw), so a seed gives the same mask on
// every platform; p = 0 draws nothing.
absl::Status DropoutForward(float p, std::mt19937_64* rng, const Tensor& x,
                            Tensor* y, Tensor* mask);
// dx = dy * mask.
absl::Status DropoutBackward(const Tensor& mask, const Tensor& dy, Tensor* dx);

// Concatenation of NCHW (or [N, C]) tensors along the channel axis 1; all
// other dimensions must agree. REQUIRES: y shares no storage with an input
// (nor, in backward, a dxs entry with dy).
absl::Status ConcatForward(absl::Span<const Tensor* const> xs, Tensor* y);
// Splits dy back into dxs; each *dxs[i] is resized to the shape of the
// corresponding forward input, given by `shapes`. Null entries are skipped.
absl::Status ConcatBackward(const Tensor& dy,
                            absl::Span<const std::vector<int64_t>> shapes,
                            absl::Span<Tensor* const> dxs);

// y = a + b, same shapes (residual connections).
absl::Status AddForward(const Tensor& a, const Tensor& b, Tensor* y);
// *acc += x, same shapes (gradient accumulation where a tensor feeds
// several layers).
absl::Status AddInPlace(const Tensor& x, Tensor* acc);

}  // namespace kernels
}  // namespace pstrain

#endif  // PSTRAIN_KERNELS_CPU_OPS_H_
