// Networks: layers composed into a directed acyclic graph (sequential
// stacks, residual additions, Inception concatenations) with shape
// inference, forward, backward, a parameter registry with stable
// MXNet-style names ("conv0_weight", "bn0_gamma", "bn0_moving_mean";
// arguments vs auxiliary states) and per-parameter lr/wd multipliers.
//
// Memory: every layer's output buffer is allocated once and reused across
// iterations; activations that no backward pass needs are computed in place
// (ReLU and dropout over an input nobody else reads), and gradient buffers
// come from a pool and go back to it as soon as backward has consumed them.
// MemoryStats() reports what that saves. Thread-compatible.
#ifndef PSTRAIN_NN_NETWORK_H_
#define PSTRAIN_NN_NETWORK_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kernels/cpu_ops.h"
#include "kernels/tensor.h"
#include "nn/layers.h"

namespace pstrain {
namespace nn {

struct LayerSummary {
  std::string name;
  std::string op;                  // MXNet operator name.
  std::vector<int64_t> out_shape;  // Per sample.
  int64_t params = 0;
  int64_t flops = 0;
};

// Bytes of float32 buffers a training step keeps, for one batch.
struct MemoryStats {
  int64_t forward_bytes = 0;    // Layer outputs, as planned (in-place shared).
  int64_t gradient_bytes = 0;   // Peak of the pooled gradient buffers.
  int64_t unplanned_bytes = 0;  // One output and one gradient buffer per layer.
  int64_t param_bytes = 0;      // Values and gradients of the parameters.
};

enum class Mode { kTrain, kInference };

class Network {
 public:
  // The network input ("data") is node 0.
  static constexpr int kInput = 0;

  Network() = default;
  Network(const Network&) = delete;
  Network& operator=(const Network&) = delete;

  // Adds a layer reading the outputs of `inputs` (node ids returned by
  // earlier calls, or kInput) and returns its node id. The last node added
  // is the network's output (the logits).
  int Add(std::unique_ptr<Layer> layer, std::vector<int> inputs);
  // Adds a layer reading the last node added (or the input).
  int Add(std::unique_ptr<Layer> layer);
  // The id of the last node added (kInput when empty).
  int last() const { return static_cast<int>(nodes_.size()); }

  // MXNet attributes: (key, value) in the order written.
  using SymbolAttrs = std::vector<std::pair<std::string, std::string>>;
  // Makes SymbolJson() write node `id` as MXNet operator `op` with exactly
  // `attrs` (what an MXNet script passed, or what an imported symbol had)
  // instead of the layer's own MxnetOp(). REQUIRES: 1 <= id <= last().
  void SetSymbolNode(int id, std::string op, SymbolAttrs attrs);
  // Names node `id`'s parameters, in node_params order, instead of
  // LAYER_suffix (e.g. Gluon's "dense0_weight" for a layer "dense0_fwd").
  // Build() applies them and fails with InvalidArgument naming the layer
  // when the count does not match. REQUIRES: 1 <= id <= last().
  void SetParamNames(int id, std::vector<std::string> names);

  // Shape inference for inputs [batch, C, H, W]; creates the parameters and
  // plans buffers. InvalidArgument names the layer whose input does not fit.
  absl::Status Build(const std::vector<int64_t>& input_shape, int num_classes);

  // Called by Forward() before a layer with learned parameters runs, with
  // those parameters (e.g. to wait for their pull); an error stops Forward.
  using ParamsNeeded =
      std::function<absl::Status(const std::vector<Param*>& params)>;

  // Forward to the class probabilities; returns the mean cross-entropy.
  // kTrain uses batch statistics (and updates moving ones) and dropout;
  // kInference uses moving statistics and no dropout.
  absl::StatusOr<double> Forward(kernels::CpuContext* ctx,
                                 const kernels::Tensor& x,
                                 absl::Span<const float> labels,
                                 Mode mode = Mode::kTrain,
                                 const ParamsNeeded& needed = nullptr);

  // Called during Backward() as soon as the gradients of `params` (one
  // layer's learned parameters) are final, in reverse layer order.
  using GradsReady = std::function<void(const std::vector<Param*>& params)>;

  // Backward from the last kTrain Forward(): every learned Param::grad
  // becomes scale * d(sum of the batch's losses)/d(param) (MXNet's
  // rescale_grad is usually applied by the optimizer instead: pass 1).
  absl::Status Backward(kernels::CpuContext* ctx, float scale,
                        const GradsReady& ready = nullptr);

  const kernels::Tensor& probabilities() const { return probs_; }
  // Every parameter: learned arguments and auxiliary states (Param::aux),
  // in layer order.
  std::vector<Param*> params();
  Param* FindParam(const std::string& name);
  std::vector<LayerSummary> Summary() const;
  MemoryStats Memory() const;
  // Bytes of the layer outputs a Forward() allocates for the shapes given
  // to Build() (in-place layers and views share their input's buffer):
  // MemoryStats::forward_bytes, known before anything is allocated.
  // REQUIRES: Build() has succeeded.
  int64_t PlannedForwardBytes() const;
  // MXNet's symbol JSON for this network (nodes, arg_nodes, node_row_ptr,
  // heads), ending in SoftmaxOutput like fit.py's models, so MXNet can load
  // it with the matching .params. Nodes without attributes have no "attrs";
  // batch norm's moving statistics carry the "__init__" MXNet gives them.
  std::string SymbolJson() const;
  // Elements of all parameters (arguments and auxiliary states).
  int64_t NumParams() const;
  // Elements of the learned parameters only.
  int64_t NumLearnedParams() const;
  // Per-layer time of the last Forward and Backward, seconds, by layer.
  const std::vector<std::pair<double, double>>& LayerTimes() const {
    return times_;
  }
  // Whether Forward/Backward record LayerTimes (off by default).
  void set_profile(bool on) { profile_ = on; }
  // Called after each layer's Forward (backward false) or Backward (true)
  // with its node id and when it began and ended (e.g. for a timeline);
  // returns nothing and must not call back into the network. Called on the
  // thread that runs Forward/Backward. nullptr (the default): none, and no
  // clock is read for it.
  using LayerObserver = std::function<void(int id, bool backward,
                                           absl::Time begin, absl::Time end)>;
  void set_layer_observer(LayerObserver observer) {
    observer_ = std::move(observer);
  }

  // Read-only access to the graph, for executors other than Forward and
  // Backward (nn::GpuNetwork). Nodes are 1..last() in the order added, each
  // reading only lower ids; kInput is the network input. REQUIRES: 1 <=
  // id <= last() (kInput allowed for output_shape), and Build() has
  // succeeded for the shapes and parameters.
  const Layer& layer(int id) const { return *nodes_[id - 1].layer; }
  // The node ids `id` reads, in the layer's input order.
  const std::vector<int>& inputs(int id) const { return nodes_[id - 1].inputs; }
  // The output shape of node `id` with the batch dimension ([batch, C, H, W]
  // or [batch, K]); for kInput the input shape given to Build().
  const std::vector<int64_t>& output_shape(int id) const { return ShapeOf(id); }
  // Node `id`'s parameters in the order of its LayerSpec (arguments and
  // auxiliary states; owned by the layer), and the learned ones among them
  // (what ParamsNeeded and GradsReady receive).
  const std::vector<Param*>& node_params(int id) const {
    return nodes_[id - 1].params;
  }
  const std::vector<Param*>& node_learned(int id) const {
    return nodes_[id - 1].learned;
  }
  int num_classes() const { return num_classes_; }
  // OK when x has the shape the network was built for and there is one
  // label per sample; InvalidArgument saying which does not fit otherwise.
  absl::Status CheckBatch(const kernels::Tensor& x,
                          absl::Span<const float> labels) const;

 private:
  struct Node {
    std::unique_ptr<Layer> layer;
    std::vector<int> inputs;
    std::vector<Param*> params;
    std::vector<Param*> learned;  // params without the auxiliary states.
    std::vector<int64_t> shape;   // Output.
    bool in_place = false;        // Output shares its input's buffer.
    int consumers = 0;
    bool symbol_set = false;  // SetSymbolNode() was called.
    std::string symbol_op;
    SymbolAttrs symbol_attrs;
    std::vector<std::string> param_names;  // SetParamNames(), or empty.
  };
  // Node i + 1 is nodes_[i]; node 0 is the input.
  Node& node(int id) { return nodes_[id - 1]; }
  const std::vector<int64_t>& ShapeOf(int id) const;
  kernels::Tensor AcquireGrad(const std::vector<int64_t>& shape);
  void ReleaseGrad(kernels::Tensor* t);

  std::vector<Node> nodes_;
  std::vector<int64_t> input_shape_;
  std::vector<kernels::Tensor> outs_;   // outs_[0] = input.
  std::vector<kernels::Tensor> grads_;  // Gradient w.r.t. each node's output.
  std::map<int64_t, std::vector<kernels::Tensor>>
      free_grads_;  // By element count.
  int64_t grad_pool_bytes_ = 0;
  std::vector<Param*> params_;
  kernels::Tensor probs_;
  std::vector<float> labels_;
  int num_classes_ = 0;
  bool trained_forward_ = false;
  bool profile_ = false;
  std::vector<std::pair<double, double>> times_;
  LayerObserver observer_;
};

// Initializers by fit.py's --initializer names, seeded. Weights: "xavier"
// (or "default") is MXNet's default Xavier (gaussian, fan-in, magnitude 2:
// N(0, sqrt(2 / fan_in))), "msra" MXNet's MSRAPrelu (slope 0.25), "normal"
// N(0, 0.01); biases and beta 0, gamma 1, moving mean 0, moving variance 1.
// InvalidArgument naming --initializer for another name.
absl::Status Initialize(Network* net, const std::string& initializer,
                        uint32_t seed);
// Initialize(net, "xavier", seed).
void InitializeXavier(Network* net, uint32_t seed);

// Builds a network for a batch size (e.g. BuildNetwork or ImportSymbol
// with the rest of their arguments bound), for code that builds one per
// device.
using NetworkFactory =
    std::function<absl::StatusOr<std::unique_ptr<Network>>(int batch_size)>;

// Builds a network by name (see BuiltNetworks()). `image_shape` is
// {C, H, W}. InvalidArgument names an unknown network, depth or a shape it
// cannot take.
absl::StatusOr<std::unique_ptr<Network>> BuildNetwork(
    const std::string& name, int num_layers, int num_classes,
    const std::vector<int64_t>& image_shape, int batch_size);
// "mlp, lenet, alexnet, vgg (11, 16), ...", for help texts and errors.
std::string BuiltNetworks();

}  // namespace nn
}  // namespace pstrain

#endif  // PSTRAIN_NN_NETWORK_H_
