#include "nn/gpu_network.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "util/status.h"

namespace pstrain {
namespace nn {
namespace {

using kernels::GpuContext;
using kernels::GpuTensor;

// *dst = src's elements in `shape` (same element count), on ctx's stream.
absl::Status CopyOnDevice(GpuContext* ctx, const GpuTensor& src,
                          const std::vector<int64_t>& shape, GpuTensor* dst) {
  PSTRAIN_RETURN_IF_ERROR(kernels::ResizeGpuTensor(ctx, shape, dst));
  CHECK_EQ(dst->size(), src.size())
      << "copy between shapes " << src.ShapeString() << " and "
      << dst->ShapeString();
  if (src.empty()) return absl::OkStatus();
  kernels::CudaDeviceGuard guard(ctx->device());
  PSTRAIN_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(dst->data(), src.data(), src.size() * sizeof(float),
                      cudaMemcpyDeviceToDevice, ctx->stream()));
  return absl::OkStatus();
}

int64_t NumElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

}  // namespace

absl::StatusOr<std::unique_ptr<GpuNetwork>> GpuNetwork::Create(
    Network* net, GpuContext* ctx) {
  CHECK(net != nullptr && ctx != nullptr);
  CHECK_GT(net->last(), 0) << "GpuNetwork of an empty network";
  std::unique_ptr<GpuNetwork> g(new GpuNetwork(net, ctx));
  for (int id = 1; id <= net->last(); ++id) {
    Node n;
    n.spec = net->layer(id).spec();
    n.inputs = net->inputs(id);
    n.params = net->node_params(id);
    n.learned = net->node_learned(id);
    n.rng.seed(n.spec.seed);
    for (const Param* p : n.params) {
      PSTRAIN_ASSIGN_OR_RETURN(GpuTensor v,
                               GpuTensor::Create(ctx, p->value.shape()));
      n.values.push_back(std::move(v));
      GpuTensor d;
      if (!p->aux) {
        PSTRAIN_ASSIGN_OR_RETURN(d, GpuTensor::Create(ctx, p->value.shape()));
      }
      n.grads.push_back(std::move(d));
    }
    g->nodes_.push_back(std::move(n));
  }
  g->outs_.assign(net->last() + 1, GpuTensor());
  g->grads_.assign(net->last() + 1, GpuTensor());
  g->has_grad_.assign(net->last() + 1, false);
  return g;
}

std::string GpuNetwork::Where(int id) const {
  return id == Network::kInput ? absl::StrCat("GPU ", ctx_->device())
                               : absl::StrCat("GPU ", ctx_->device(), ": ",
                                              net_->layer(id).name());
}

absl::Status GpuNetwork::UploadParams(int id) {
  Node& n = nodes_[id - 1];
  for (size_t i = 0; i < n.params.size(); ++i) {
    PSTRAIN_RETURN_IF_ERROR(Annotate(
        n.values[i].Upload(ctx_, n.params[i]->value), n.params[i]->name));
  }
  return absl::OkStatus();
}

absl::StatusOr<double> GpuNetwork::Forward(
    const kernels::Tensor& x, absl::Span<const float> labels, Mode mode,
    const Network::ParamsNeeded& needed) {
  PSTRAIN_RETURN_IF_ERROR(net_->CheckBatch(x, labels));
  const bool training = mode == Mode::kTrain;
  trained_forward_ = false;
  PSTRAIN_RETURN_IF_ERROR(Annotate(outs_[Network::kInput].Upload(ctx_, x),
                                   Where(Network::kInput) + ": input"));
  for (int id = 1; id <= last(); ++id) {
    Node& n = nodes_[id - 1];
    // `needed`'s error is the caller's: returned as it is.
    if (needed && !n.learned.empty())
      PSTRAIN_RETURN_IF_ERROR(needed(n.learned));
    PSTRAIN_RETURN_IF_ERROR(Annotate(UploadParams(id), Where(id)));
    PSTRAIN_RETURN_IF_ERROR(Annotate(LayerForward(id, training), Where(id)));
  }
  labels_.assign(labels.begin(), labels.end());
  double loss = 0;
  const std::string softmax = Where(Network::kInput) + ": softmax";
  PSTRAIN_RETURN_IF_ERROR(Annotate(
      kernels::SoftmaxCrossEntropy(ctx_, outs_[last()], labels, &probs_, &loss),
      softmax));
  PSTRAIN_RETURN_IF_ERROR(
      Annotate(probs_.Download(ctx_, &probs_host_), softmax));
  if (training) {
    // The moving statistics changed on the device: the host keeps them.
    for (int id = 1; id <= last(); ++id) {
      Node& n = nodes_[id - 1];
      for (size_t i = 0; i < n.params.size(); ++i) {
        if (!n.params[i]->aux) continue;
        PSTRAIN_RETURN_IF_ERROR(
            Annotate(n.values[i].Download(ctx_, &n.params[i]->value),
                     absl::StrCat(Where(id), ": ", n.params[i]->name)));
      }
    }
  }
  trained_forward_ = training;
  return loss;
}

absl::Status GpuNetwork::LayerForward(int id, bool training) {
  Node& n = nodes_[id - 1];
  const LayerSpec& s = n.spec;
  const GpuTensor& x = outs_[n.inputs[0]];
  GpuTensor* y = &outs_[id];
  switch (s.kind) {
    case LayerSpec::kConv:
      return kernels::Conv2dForward(
          ctx_, x, n.values[0], s.bias ? n.values[1] : GpuTensor(), s.conv, y);
    case LayerSpec::kPool:
      return kernels::Pool2dForward(ctx_, x, s.pool, y, &n.pool);
    case LayerSpec::kFc:
      return kernels::FullyConnectedForward(ctx_, x, n.values[0], n.values[1],
                                            y);
    case LayerSpec::kAct:
      return kernels::ActivationForward(ctx_, s.act, x, y);
    case LayerSpec::kFlatten:
      *y = x.Reshaped({x.dim(0), x.size() / x.dim(0)});
      return absl::OkStatus();
    case LayerSpec::kIdentity:
      *y = x.Reshaped(x.shape());
      return absl::OkStatus();
    case LayerSpec::kBatchNorm:
      if (!training) {
        return kernels::BatchNormForwardInference(ctx_, x, n.values[0],
                                                  n.values[1], n.values[2],
                                                  n.values[3], s.bn, y);
      }
      return kernels::BatchNormForwardTraining(ctx_, x, n.values[0],
                                               n.values[1], s.bn, y, &n.bn,
                                               &n.values[2], &n.values[3]);
    case LayerSpec::kLrn:
      return kernels::LrnForward(ctx_, x, s.lrn, y, &n.lrn);
    case LayerSpec::kDropout:
      n.dropped = training && s.p > 0.0f;
      if (!n.dropped) return CopyOnDevice(ctx_, x, x.shape(), y);
      return kernels::DropoutForward(ctx_, s.p, &n.rng, x, y, &n.mask);
    case LayerSpec::kConcat: {
      std::vector<const GpuTensor*> xs;
      for (int j : n.inputs) xs.push_back(&outs_[j]);
      return kernels::ConcatForward(ctx_, xs, y);
    }
    case LayerSpec::kAdd:
      return kernels::AddForward(ctx_, x, outs_[n.inputs[1]], y);
  }
  LOG(FATAL) << "unknown layer kind " << s.kind;
  return absl::InternalError("unknown layer kind");
}

absl::StatusOr<GpuTensor> GpuNetwork::Scratch(const std::vector<int64_t>& shape,
                                              int slot) {
  std::vector<GpuTensor>& buffers = scratch_[NumElements(shape)];
  while (static_cast<int>(buffers.size()) <= slot) {
    PSTRAIN_ASSIGN_OR_RETURN(GpuTensor t,
                             GpuTensor::Create(ctx_, {NumElements(shape)}));
    buffers.push_back(std::move(t));
  }
  return buffers[slot].Reshaped(shape);
}

absl::Status GpuNetwork::Backward(float scale,
                                  const Network::GradsReady& ready) {
  if (!trained_forward_) {
    return absl::FailedPreconditionError(
        "Backward() needs a training-mode Forward() first");
  }
  std::fill(has_grad_.begin(), has_grad_.end(), false);
  PSTRAIN_RETURN_IF_ERROR(
      Annotate(kernels::SoftmaxCrossEntropyBackward(ctx_, probs_, labels_,
                                                    scale, &grads_[last()]),
               Where(Network::kInput) + ": softmax"));
  has_grad_[last()] = true;
  std::vector<GpuTensor*> din;
  std::vector<GpuTensor> temps;
  for (int id = last(); id >= 1; --id) {
    Node& n = nodes_[id - 1];
    if (!has_grad_[id]) {
      // Nothing downstream reads this node: its parameters' gradients are
      // zero, and still reported (as Network::Backward does).
      for (Param* p : n.learned) p->grad.Fill(0.0f);
      if (ready && !n.learned.empty()) ready(n.learned);
      continue;
    }
    din.clear();
    temps.assign(n.inputs.size(), GpuTensor());
    std::map<int64_t, int> slots;  // Scratch buffers taken, by element count.
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      const int j = n.inputs[k];
      const std::vector<int64_t>& shape = net_->output_shape(j);
      if (j == Network::kInput) {
        din.push_back(nullptr);
      } else if (!has_grad_[j]) {
        has_grad_[j] = true;
        din.push_back(&grads_[j]);
      } else {
        // Another reader already contributed: compute aside, then add.
        auto scratch = Scratch(shape, slots[NumElements(shape)]++);
        if (!scratch.ok()) return Annotate(scratch.status(), Where(id));
        temps[k] = std::move(*scratch);
        din.push_back(&temps[k]);
      }
    }
    PSTRAIN_RETURN_IF_ERROR(Annotate(LayerBackward(id, din), Where(id)));
    for (size_t k = 0; k < temps.size(); ++k) {
      if (din[k] != &temps[k]) continue;
      PSTRAIN_RETURN_IF_ERROR(
          Annotate(kernels::AddInPlace(ctx_, temps[k], &grads_[n.inputs[k]]),
                   Where(id)));
    }
    if (n.learned.empty()) continue;
    for (size_t i = 0; i < n.params.size(); ++i) {
      if (n.params[i]->aux) continue;
      PSTRAIN_RETURN_IF_ERROR(
          Annotate(n.grads[i].Download(ctx_, &n.params[i]->grad),
                   absl::StrCat(Where(id), ": ", n.params[i]->name)));
    }
    if (ready) ready(n.learned);
  }
  // Layers without learned parameters after the last download (and the
  // labels' upload from labels_, which the next Forward overwrites) may
  // still be queued: wait, so that this step's asynchronous errors are
  // reported here.
  return Annotate(ctx_->Synchronize(), Where(Network::kInput));
}

absl::Status GpuNetwork::LayerBackward(int id,
                                       const std::vector<GpuTensor*>& din) {
  Node& n = nodes_[id - 1];
  const LayerSpec& s = n.spec;
  const GpuTensor& x = outs_[n.inputs[0]];
  const GpuTensor& dy = grads_[id];
  GpuTensor* dx = din[0];
  switch (s.kind) {
    case LayerSpec::kConv:
      return kernels::Conv2dBackward(ctx_, x, n.values[0], dy, s.conv, dx,
                                     &n.grads[0],
                                     s.bias ? &n.grads[1] : nullptr);
    case LayerSpec::kFc:
      return kernels::FullyConnectedBackward(ctx_, x, n.values[0], dy, dx,
                                             &n.grads[0], &n.grads[1]);
    case LayerSpec::kBatchNorm:
      return kernels::BatchNormBackward(ctx_, x, n.values[0], dy, s.bn, n.bn,
                                        dx, &n.grads[0], &n.grads[1]);
    case LayerSpec::kConcat: {
      std::vector<std::vector<int64_t>> shapes;
      for (int j : n.inputs) shapes.push_back(net_->output_shape(j));
      return kernels::ConcatBackward(ctx_, dy, shapes, din);
    }
    case LayerSpec::kAdd:
      for (GpuTensor* d : din) {
        if (d != nullptr)
          PSTRAIN_RETURN_IF_ERROR(CopyOnDevice(ctx_, dy, dy.shape(), d));
      }
      return absl::OkStatus();
    default:
      break;
  }
  // The remaining kinds have no parameters: nothing to do without dx.
  if (dx == nullptr) return absl::OkStatus();
  switch (s.kind) {
    case LayerSpec::kPool:
      return kernels::Pool2dBackward(ctx_, x, dy, s.pool, n.pool, dx);
    case LayerSpec::kAct:
      return kernels::ActivationBackward(ctx_, s.act, outs_[id], dy, dx);
    case LayerSpec::kFlatten:
    case LayerSpec::kIdentity:
      return CopyOnDevice(ctx_, dy, x.shape(), dx);
    case LayerSpec::kLrn:
      return kernels::LrnBackward(ctx_, x, dy, s.lrn, n.lrn, dx);
    case LayerSpec::kDropout:
      if (!n.dropped) return CopyOnDevice(ctx_, dy, dy.shape(), dx);
      return kernels::DropoutBackward(ctx_, n.mask, dy, dx);
    default:
      LOG(FATAL) << "unknown layer kind " << s.kind;
      return absl::InternalError("unknown layer kind");
  }
}

}  // namespace nn
}  // namespace pstrain
