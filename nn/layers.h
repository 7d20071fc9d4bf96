// Layers of pstrain's networks: the interface a Network drives and
// factories for every layer kind (convolution, pooling, fully connected,
// activation, flatten, batch norm, LRN, dropout, concat, add), each on the
// CPU kernels in kernels/cpu_ops.h. Thread-compatible.
#ifndef PSTRAIN_NN_LAYERS_H_
#define PSTRAIN_NN_LAYERS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "kernels/cpu_ops.h"
#include "kernels/tensor.h"

namespace pstrain {
namespace nn {

struct Param {
  std::string name;  // e.g. "conv0_weight"
  kernels::Tensor value;
  kernels::Tensor grad;  // Same shape; written by Backward() (empty for aux).
  bool aux = false;      // Auxiliary state (not learned by gradient).
  // Frozen (worker --fixed_params): keeps its value; no gradient of it is
  // pushed, as MXNet's fixed_param_names.
  bool fixed = false;
  float lr_mult = 1.0f;
  float wd_mult = 1.0f;  // 0 for biases and beta (MXNet's Optimizer rule).
  int64_t fan_in = 1;    // For initializers.
};

// What a layer's backward reads besides the output gradient, so the network
// knows which buffers may be overwritten in place.
enum class Needs { kNothing, kInput, kOutput };

// What a layer computes, for executors other than the layer's own CPU
// Forward/Backward (nn::GpuNetwork switches on it). Only the fields of the
// layer's kind are meaningful. A layer's parameters (Network's per-node
// params, see Network::node_params) come in this order:
//   kConv:      weight [F, C/groups, KH, KW], then bias [F] when `bias`
//   kFc:        weight [num_hidden, K], bias [num_hidden]
//   kBatchNorm: gamma, beta, moving_mean (aux), moving_var (aux), each [C]
// and the other kinds have none.
struct LayerSpec {
  enum Kind {
    kConv,
    kPool,
    kFc,
    kAct,
    kFlatten,
    kBatchNorm,
    kLrn,
    kDropout,
    kConcat,
    kAdd,
    kIdentity
  };
  Kind kind = kAct;
  kernels::Conv2dParams conv;                            // kConv.
  bool bias = true;                                      // kConv: has a bias.
  kernels::Pool2dParams pool;                            // kPool.
  int64_t num_hidden = 0;                                // kFc.
  kernels::Activation act = kernels::Activation::kRelu;  // kAct.
  kernels::BatchNormParams bn;                           // kBatchNorm.
  kernels::LrnParams lrn;                                // kLrn.
  float p = 0.0f;      // kDropout: drop probability.
  uint64_t seed = 0;   // kDropout: the mask generator's seed.
  int num_inputs = 1;  // kConcat (kAdd: 2; the others: 1).
};

class Layer {
 public:
  using Shape = std::vector<int64_t>;
  virtual ~Layer() = default;
  virtual std::string name() const = 0;
  // What this layer computes (kind and hyperparameters).
  virtual const LayerSpec& spec() const = 0;
  // Checks the input shapes, sets the output shape and creates parameters.
  virtual absl::Status Setup(const std::vector<Shape>& in, Shape* out,
                             std::vector<Param*>* params) = 0;
  // `training`: batch statistics and dropout on.
  virtual absl::Status Forward(kernels::CpuContext* ctx,
                               const std::vector<const kernels::Tensor*>& in,
                               kernels::Tensor* out, bool training) = 0;
  // Fills parameter gradients and the input gradients din[i] that are not
  // null (resized as needed, overwritten).
  virtual absl::Status Backward(kernels::CpuContext* ctx,
                                const std::vector<const kernels::Tensor*>& in,
                                const kernels::Tensor& out,
                                const kernels::Tensor& dout,
                                const std::vector<kernels::Tensor*>& din) = 0;
  virtual Needs BackwardNeeds() const { return Needs::kInput; }
  // Elementwise: the output may share the input's buffer.
  virtual bool CanRunInPlace() const { return false; }
  // The output is a view of the input's buffer (flatten).
  virtual bool OutputIsView() const { return false; }
  // Multiply-accumulates of one forward pass for one sample.
  virtual int64_t Flops() const { return 0; }
  // The MXNet operator this layer is ("Convolution", ...) and its
  // attributes, for symbol.json.
  virtual std::string MxnetOp(
      std::vector<std::pair<std::string, std::string>>* attrs) const = 0;
};

std::unique_ptr<Layer> MakeConvolution(std::string name,
                                       const kernels::Conv2dParams& p,
                                       bool bias = true);
std::unique_ptr<Layer> MakePooling(std::string name,
                                   const kernels::Pool2dParams& p);
std::unique_ptr<Layer> MakeFullyConnected(std::string name, int64_t num_hidden);
std::unique_ptr<Layer> MakeActivation(std::string name, kernels::Activation a);
std::unique_ptr<Layer> MakeFlatten(std::string name);
// Parameters NAME_gamma (wd_mult 1, as MXNet decays *_gamma), NAME_beta
// (wd_mult 0) and auxiliary
// NAME_moving_mean, NAME_moving_var.
std::unique_ptr<Layer> MakeBatchNorm(std::string name,
                                     const kernels::BatchNormParams& p);
std::unique_ptr<Layer> MakeLrn(std::string name, const kernels::LrnParams& p);
// Dropout with probability p; the mask generator is seeded with `seed`.
std::unique_ptr<Layer> MakeDropout(std::string name, float p, uint64_t seed);
// Concatenation of any number of inputs along channels.
std::unique_ptr<Layer> MakeConcat(std::string name, int num_inputs);
// Elementwise sum of two inputs (residual connections).
std::unique_ptr<Layer> MakeAdd(std::string name);
// The input unchanged (MXNet's identity, "_copy"): a view of its buffer.
std::unique_ptr<Layer> MakeIdentity(std::string name);

}  // namespace nn
}  // namespace pstrain

#endif  // PSTRAIN_NN_LAYERS_H_
