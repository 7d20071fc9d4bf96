// Networks: layers composed into a sequential network with shape
// inference, forward, backward, and a parameter registry with stable
// MXNet-style names ("conv0_weight", "fc1_bias"; arguments vs auxiliary
// states) and per-parameter lr/wd multipliers.
//
// This first version covers sequential networks (MLP, LeNet); residual and
// Inception graphs come with their layers. Thread-compatible.
#ifndef PSTRAIN_NN_NETWORK_H_
#define PSTRAIN_NN_NETWORK_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cpu_ops.h"
#include "kernels/tensor.h"

namespace pstrain {
namespace nn {

struct Param {
  std::string name;      // e.g. "conv0_weight"
  kernels::Tensor value;
  kernels::Tensor grad;  // Same shape; written by Backward().
  bool aux = false;      // Auxiliary state (not learned by gradient).
  float lr_mult = 1.0f;
  float wd_mult = 1.0f;  // 0 for biases (MXNet convention for bias/BN).
  int64_t fan_in = 1;    // For initializers.
};

class Layer {
 public:
  virtual ~Layer() = default;
  virtual std::string name() const = 0;
  // Checks the input shape, sets the output shape and creates parameters.
  virtual absl::Status Setup(const std::vector<int64_t>& in, std::vector<int64_t>* out,
                             std::vector<Param*>* params) = 0;
  virtual absl::Status Forward(kernels::CpuContext* ctx, const kernels::Tensor& in,
                               kernels::Tensor* out) = 0;
  // Fills parameter gradients and, when `din` is not null, the input
  // gradient.
  virtual absl::Status Backward(kernels::CpuContext* ctx, const kernels::Tensor& in,
                                const kernels::Tensor& out, const kernels::Tensor& dout,
                                kernels::Tensor* din) = 0;
  // Multiply-accumulates of one forward pass for one sample.
  virtual int64_t Flops() const { return 0; }
  // The MXNet operator this layer is ("Convolution", ...) and its
  // attributes, for symbol.json.
  virtual std::string MxnetOp(std::vector<std::pair<std::string, std::string>>* attrs) const = 0;
};

struct LayerSummary {
  std::string name;
  std::vector<int64_t> out_shape;  // Per sample.
  int64_t params = 0;
  int64_t flops = 0;
};

class Network {
 public:
  Network() = default;
  Network(const Network&) = delete;
  Network& operator=(const Network&) = delete;

  void Add(std::unique_ptr<Layer> layer) { layers_.push_back(std::move(layer)); }

  // Shape inference for inputs [batch, C, H, W]; creates the parameters.
  // InvalidArgument names the layer whose input does not fit.
  absl::Status Build(const std::vector<int64_t>& input_shape, int num_classes);

  // Forward to the class probabilities; returns the mean cross-entropy.
  absl::StatusOr<double> Forward(kernels::CpuContext* ctx, const kernels::Tensor& x,
                                 absl::Span<const float> labels);
  // Backward from the last Forward(): every Param::grad becomes
  // scale * d(sum of the batch's losses)/d(param) (MXNet's rescale_grad is
  // usually applied by the optimizer instead: pass 1).
  absl::Status Backward(kernels::CpuContext* ctx, float scale);

  const kernels::Tensor& probabilities() const { return probs_; }
  std::vector<Param*> params();
  Param* FindParam(const std::string& name);
  std::vector<LayerSummary> Summary() const;
  // MXNet's symbol JSON for this network (nodes, arg_nodes, node_row_ptr,
  // heads), ending in SoftmaxOutput like fit.py's models, so MXNet can load
  // it with the matching .params.
  std::string SymbolJson() const;
  int64_t NumParams() const;

 private:
  std::vector<std::unique_ptr<Layer>> layers_;
  std::vector<std::vector<int64_t>> shapes_;  // Input of layer i; last = logits.
  std::vector<kernels::Tensor> acts_;          // acts_[0] = input.
  std::vector<Param*> params_;
  std::vector<std::vector<Param*>> layer_params_;
  kernels::Tensor probs_;
  std::vector<float> labels_;
  int num_classes_ = 0;
};

// Layer factories (names are given by the caller).
std::unique_ptr<Layer> MakeConvolution(std::string name, const kernels::Conv2dParams& p,
                                       bool bias = true);
std::unique_ptr<Layer> MakePooling(std::string name, const kernels::Pool2dParams& p);
std::unique_ptr<Layer> MakeFullyConnected(std::string name, int64_t num_hidden);
std::unique_ptr<Layer> MakeActivation(std::string name, kernels::Activation a);
std::unique_ptr<Layer> MakeFlatten(std::string name);

// Initializers, seeded: MXNet's default Xavier (gaussian, fan-in,
// magnitude 2: N(0, sqrt(2 / fan_in))) for weights, zeros for biases.
void InitializeXavier(Network* net, uint32_t seed);

// Builds a network by name: "mlp", "lenet". `image_shape` is {C, H, W}.
// InvalidArgument names an unknown network or a shape it cannot take.
absl::StatusOr<std::unique_ptr<Network>> BuildNetwork(const std::string& name, int num_layers,
                                                      int num_classes,
                                                      const std::vector<int64_t>& image_shape,
                                                      int batch_size);

}  // namespace nn
}  // namespace pstrain

#endif  // PSTRAIN_NN_NETWORK_H_
