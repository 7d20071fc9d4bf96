// Runs a built nn::Network on one GPU: the same graph, layers and
// semantics as Network::Forward/Backward (mean cross-entropy, Backward's
// scale, kTrain/kInference, seeded dropout), computed by the GPU kernels of
// kernels/gpu_ops.h on one kernels::GpuContext. Only built with
// --config=cuda (//nn:gpu_network).
//
// The host Network stays the parameters' home, so code written for the CPU
// network (the trainer's KVStore pulls and pushes, checkpoints, replica
// copies) works unchanged on the host mirrors:
// - Forward uploads each layer's parameters (learned and auxiliary) from
//   the host Param::value right before the layer runs, after `needed`
//   returned OK for it (that is where a pull lands).
// - Backward downloads each layer's learned gradients into the host
//   Param::grad before calling `ready` for that layer.
// - A training-mode Forward downloads the updated moving statistics (batch
//   norm's auxiliary states) into the host Param::value before returning.
// - Forward downloads the class probabilities (probabilities()).
//
// Device memory: one copy of every parameter value and learned gradient,
// one output buffer per node (flatten's is a view of its input), one
// gradient buffer per node and scratch for nodes read by several layers.
// No in-place planning (unlike the CPU Network).
//
// Note on dropout: the GPU mask is a counter-based hash of a seed drawn
// from a generator seeded like the CPU layer's, so a GPU run repeats itself
// but does not drop the same elements as the CPU network.
//
// Thread-compatible, like its GpuContext: one thread drives one GpuNetwork.
#ifndef PSTRAIN_NN_GPU_NETWORK_H_
#define PSTRAIN_NN_GPU_NETWORK_H_

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/cpu_ops.h"
#include "kernels/gpu_context.h"
#include "kernels/gpu_ops.h"
#include "kernels/gpu_tensor.h"
#include "kernels/tensor.h"
#include "nn/layers.h"
#include "nn/network.h"

namespace pstrain {
namespace nn {

class GpuNetwork {
 public:
  // Allocates device buffers for every parameter of `net` on ctx's device
  // (values are uploaded by Forward). ResourceExhausted when the device is
  // out of memory; other CUDA errors as Internal. REQUIRES: net->Build()
  // succeeded; `net` and `ctx` outlive the GpuNetwork and `net` is not
  // rebuilt meanwhile.
  static absl::StatusOr<std::unique_ptr<GpuNetwork>> Create(
      Network* net, kernels::GpuContext* ctx);
  GpuNetwork(const GpuNetwork&) = delete;
  GpuNetwork& operator=(const GpuNetwork&) = delete;

  // Network::Forward on the GPU: x (host, the shape the network was built
  // for) and labels, the mean cross-entropy back. `needed` is called with
  // a layer's learned parameters before they are uploaded. Errors:
  // InvalidArgument for a wrong input shape or label count or a label
  // outside [0, num_classes), `needed`'s error (as it is), and the kernels'
  // and copies' errors prefixed with "GPU <device>: <layer>" (or ": input",
  // ": softmax"). CUDA reports a kernel's failure at the next
  // synchronization, which may name a later layer.
  absl::StatusOr<double> Forward(const kernels::Tensor& x,
                                 absl::Span<const float> labels,
                                 Mode mode = Mode::kTrain,
                                 const Network::ParamsNeeded& needed = nullptr);

  // Network::Backward on the GPU from the last kTrain Forward (otherwise
  // FailedPrecondition): every learned host Param::grad becomes scale *
  // d(sum of the batch's losses)/d(param); `ready` is called per layer, in
  // reverse layer order, once that layer's host gradients are written.
  // Waits for all of the step's work before returning. Errors are named
  // like Forward's.
  absl::Status Backward(float scale,
                        const Network::GradsReady& ready = nullptr);

  // The class probabilities of the last Forward, [batch, num_classes], on
  // the host (Network::probabilities()'s counterpart).
  const kernels::Tensor& probabilities() const { return probs_host_; }
  Network* net() const { return net_; }
  kernels::GpuContext* context() const { return ctx_; }

 private:
  // Per node: its device parameters and the state its kernels keep between
  // forward and backward.
  struct Node {
    LayerSpec spec;
    std::vector<int> inputs;
    std::vector<Param*> params;              // Host, the LayerSpec's order.
    std::vector<kernels::GpuTensor> values;  // Device copies of params.
    std::vector<kernels::GpuTensor> grads;  // Learned params only (else empty).
    std::vector<Param*> learned;
    kernels::PoolState pool;
    kernels::LrnState lrn;
    kernels::GpuBatchNormState bn;
    kernels::GpuTensor mask;  // Dropout.
    std::mt19937_64 rng;      // Dropout, seeded with spec.seed.
    bool dropped = false;     // Dropout ran in training mode (mask valid).
  };

  GpuNetwork(Network* net, kernels::GpuContext* ctx) : net_(net), ctx_(ctx) {}
  int last() const { return static_cast<int>(nodes_.size()); }
  // "GPU <device>: <layer name>" for error messages; "GPU <device>" for
  // kInput.
  std::string Where(int id) const;
  // Uploads node `id`'s parameters from their host values.
  absl::Status UploadParams(int id);
  absl::Status LayerForward(int id, bool training);
  absl::Status LayerBackward(int id,
                             const std::vector<kernels::GpuTensor*>& din);
  // A device buffer of `shape` for the `slot`-th input gradient of one
  // layer that must be added to a gradient already there; reused across
  // layers and steps.
  absl::StatusOr<kernels::GpuTensor> Scratch(const std::vector<int64_t>& shape,
                                             int slot);

  Network* net_;
  kernels::GpuContext* ctx_;
  std::vector<Node> nodes_;                // Node id is nodes_[id - 1].
  std::vector<kernels::GpuTensor> outs_;   // By node id; outs_[0] = input.
  std::vector<kernels::GpuTensor> grads_;  // Gradient w.r.t. each output.
  std::vector<bool> has_grad_;             // grads_[id] written this Backward.
  std::map<int64_t, std::vector<kernels::GpuTensor>>
      scratch_;  // By element count.
  kernels::GpuTensor probs_;
  kernels::Tensor probs_host_;
  std::vector<float> labels_;
  bool trained_forward_ = false;
};

}  // namespace nn
}  // namespace pstrain

#endif  // PSTRAIN_NN_GPU_NETWORK_H_
