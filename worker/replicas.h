// Local device replicas of a network (--cpu_devices N, MXNet's several
// contexts in one worker): each replica has its own network, its own
// kernels::CpuContext and its own slice of every batch, and runs on its own
// thread of a small persistent pool (owned, started at creation, joined at
// destruction). With one device the work runs on the caller's thread.
//
// The trainer sums the replicas' gradients of each parameter into one push
// (Grads()), pulls the new weights into replica 0 and copies them to the
// others (CopyWeightsFromFirst()), so N replicas of batch b / N train
// exactly as one of batch b, up to float rounding.
//
// GPUs (--gpus, CUDA builds): replica d then runs its network on GPU
// gpus[d] (nn::GpuNetwork on its own kernels::GpuContext), and its host
// Network keeps the parameters as on the CPU: each step uploads every
// layer's weights from the host before the layer runs and downloads the
// gradients to the host Param::grad, so Grads(), CopyWeightsFromFirst(),
// the KVStore and checkpoints work on the host mirrors unchanged. The
// replicas' gradients are therefore summed on the host (the KVStore sums
// Grads() into one push), which is MXNet's dist_sync behaviour; for now
// dist_device_sync also sums on the host, not on the GPUs.
//
// Thread-compatible: one thread (the trainer's) calls every method.
#ifndef PSTRAIN_WORKER_REPLICAS_H_
#define PSTRAIN_WORKER_REPLICAS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "kernels/cpu_ops.h"
#include "kernels/tensor.h"
#include "nn/network.h"
#include "util/mutex.h"

namespace pstrain {
namespace worker {

class Replicas {
 public:
  // Builds `num_devices` copies of network `network` (nn::BuildNetwork),
  // each for batch_size / num_devices samples, on the CPU when `gpus` is
  // empty and otherwise replica d on GPU gpus[d]. Parameters are left as
  // built: initialize replica 0 and call CopyWeightsFromFirst(). Errors are
  // BuildNetwork's; InvalidArgument naming --batch_size when it does not
  // split evenly, or naming --gpus when it does not list num_devices GPUs;
  // with GPUs, FailedPrecondition in a build without CUDA, and
  // kernels::GpuContext::Create's errors (NotFound naming the GPU when it
  // does not exist) or device memory errors.
  static absl::StatusOr<std::unique_ptr<Replicas>> Create(
      const std::string& network, int num_layers, int num_classes,
      const std::vector<int64_t>& image_shape, int batch_size, int num_devices,
      const std::vector<int>& gpus = {});
  // The same with each replica's network from `factory` (called with the
  // per-device batch); its errors are returned as they are.
  static absl::StatusOr<std::unique_ptr<Replicas>> Create(
      const nn::NetworkFactory& factory, int batch_size, int num_devices,
      const std::vector<int>& gpus = {});
  ~Replicas();  // Joins the threads (after any step still running).
  Replicas(const Replicas&) = delete;
  Replicas& operator=(const Replicas&) = delete;

  int size() const { return static_cast<int>(replicas_.size()); }
  int batch_size() const { return per_device_ * size(); }
  int per_device_batch() const { return per_device_; }
  // Replica `device`'s host network (for a GPU replica the parameters'
  // home; it computes on the GPU, so read probabilities() rather than its
  // Network::probabilities()).
  nn::Network* net(int device) { return replicas_[device].net.get(); }
  // Replica `device`'s parameters, in Network::params() order (the same
  // names and shapes on every replica).
  const std::vector<nn::Param*>& params(int device) const {
    return replicas_[device].params;
  }
  // Replica `device`'s labels in the last Step().
  absl::Span<const float> labels(int device) const {
    return replicas_[device].labels;
  }
  // Replica `device`'s class probabilities in the last Step(),
  // [per_device_batch(), num_classes] (on the host also for GPU replicas).
  const kernels::Tensor& probabilities(int device) const;

  // Splits a batch (batch_size() x C x H x W floats, batch_size() labels)
  // over the replicas, sample range [d * b, (d + 1) * b) to replica d, and
  // runs Forward (and Backward with scale 1 when `backward`) on every
  // replica concurrently. Returns the first failing replica's error (lowest
  // device); InvalidArgument for wrong sizes; DeadlineExceeded when the
  // replicas are not done by `deadline`, after which the object must only
  // be destroyed.
  // Forward-only steps (`backward` false) run in inference mode (moving
  // batch-norm statistics, no dropout). With one device, `needed` and
  // `ready` are passed to the network's Forward and Backward (to overlap
  // communication with computation); with several they must be null.
  absl::Status Step(std::vector<float> data, std::vector<float> labels,
                    bool backward, absl::Time deadline,
                    const nn::Network::ParamsNeeded& needed = nullptr,
                    const nn::Network::GradsReady& ready = nullptr);

  // The gradient of parameter `index` on every replica, in device order:
  // what KVStore::Push sums into one push for the key.
  std::vector<absl::Span<const float>> Grads(size_t index) const;

  // Copies every parameter value of replica 0 to the other replicas (after
  // a pull into replica 0, or initialization). Same errors as Step().
  absl::Status CopyWeightsFromFirst(absl::Time deadline);

 private:
  // A replica's GPU and the network running on it (defined in
  // replicas.cc, CUDA builds only).
  struct Gpu;
  struct Replica {
    std::unique_ptr<nn::Network> net;
    std::unique_ptr<kernels::CpuContext> ctx;  // CPU replicas.
    std::shared_ptr<Gpu> gpu;                  // GPU replicas.
    std::vector<nn::Param*> params;
    kernels::Tensor x;
    std::vector<float> labels;
  };

  Replicas() = default;
  // Runs task(d) for every replica d (on its thread, or inline for one
  // replica) and waits for all until `deadline`.
  absl::Status RunOnEach(std::function<absl::Status(int)> task,
                         absl::Time deadline);
  void ThreadLoop(int device);

  std::vector<Replica> replicas_;
  int per_device_ = 0;
  // Step()'s batch, kept here so that the replica threads never read the
  // caller's memory.
  std::vector<float> input_, input_labels_;

  // pstrain::Mutex (std::mutex underneath, so that --config=tsan sees the
  // waits; annotated, so that --config=tsa checks the members below).
  Mutex mu_;
  CondVar work_cv_, done_cv_;
  std::function<absl::Status(int)> task_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  int pending_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<absl::Status> results_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ = false;  // A deadline passed with tasks still running.
  std::vector<std::thread> threads_;
};

}  // namespace worker
}  // namespace pstrain

#endif  // PSTRAIN_WORKER_REPLICAS_H_
