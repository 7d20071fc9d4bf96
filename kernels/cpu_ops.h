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
#include <string>

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

// y = conv(x, w) + b. x [N,C,H,W], w [F, C/groups, KH, KW], b [F] or empty.
// Resizes *y to [N, F, OH, OW] when its shape differs.
absl::Status Conv2dForward(CpuContext* ctx, const Tensor& x, const Tensor& w, const Tensor& b,
                           const Conv2dParams& p, Tensor* y);
// Gradients: dx (may be null), dw, db (may be null or empty when no bias),
// all overwritten (not accumulated).
absl::Status Conv2dBackward(CpuContext* ctx, const Tensor& x, const Tensor& w, const Tensor& dy,
                            const Conv2dParams& p, Tensor* dx, Tensor* dw, Tensor* db);

enum class PoolKind { kMax, kAvg };

struct Pool2dParams {
  PoolKind kind = PoolKind::kMax;
  int kernel_h = 2, kernel_w = 2;
  int stride_h = 2, stride_w = 2;
  int pad_h = 0, pad_w = 0;
  bool global = false;  // Kernel = the whole input.
};

// Pooling state between forward and backward (max: the argmax workspace).
struct PoolState {
  std::shared_ptr<void> workspace;
};

absl::Status Pool2dForward(CpuContext* ctx, const Tensor& x, const Pool2dParams& p, Tensor* y,
                           PoolState* state);
absl::Status Pool2dBackward(CpuContext* ctx, const Tensor& x, const Tensor& dy,
                            const Pool2dParams& p, const PoolState& state, Tensor* dx);

// y = x w^T + b. x [N, K] (or any [N, ...] flattened), w [O, K], b [O] or
// empty.
absl::Status FullyConnectedForward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor* y);
absl::Status FullyConnectedBackward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx,
                                    Tensor* dw, Tensor* db);

enum class Activation { kRelu, kTanh, kSigmoid };
absl::Status ActivationForward(Activation a, const Tensor& x, Tensor* y);
// Uses the forward output y (all three derivatives are functions of y).
absl::Status ActivationBackward(Activation a, const Tensor& y, const Tensor& dy, Tensor* dx);

// Softmax over the last axis of logits [N, C] and the mean cross-entropy
// against integer labels (as floats). Writes probabilities, returns the
// loss; the gradient with respect to the logits is (p - onehot) * scale.
absl::Status SoftmaxCrossEntropy(const Tensor& logits, absl::Span<const float> labels,
                                 Tensor* probs, double* loss);
absl::Status SoftmaxCrossEntropyBackward(const Tensor& probs, absl::Span<const float> labels,
                                         float scale, Tensor* dlogits);

}  // namespace kernels
}  // namespace pstrain

#endif  // PSTRAIN_KERNELS_CPU_OPS_H_
