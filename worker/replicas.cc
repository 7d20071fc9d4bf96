#include "worker/replicas.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "glog/logging.h"
#include "util/status.h"

#ifdef PSTRAIN_WORKER_CUDA
#include "kernels/gpu_context.h"
#include "nn/gpu_network.h"
#endif

namespace pstrain {
namespace worker {

#ifdef PSTRAIN_WORKER_CUDA
struct Replicas::Gpu {
  // Declared first, destroyed last: the network's buffers and kernel state
  // belong to this context's device.
  std::unique_ptr<kernels::GpuContext> ctx;
  std::unique_ptr<nn::GpuNetwork> net;
};
#endif

absl::StatusOr<std::unique_ptr<Replicas>> Replicas::Create(
    const std::string& network, int num_layers, int num_classes,
    const std::vector<int64_t>& image_shape, int batch_size, int num_devices,
    const std::vector<int>& gpus) {
  return Create(
      [&](int batch) {
        return nn::BuildNetwork(network, num_layers, num_classes, image_shape,
                                batch);
      },
      batch_size, num_devices, gpus);
}

absl::StatusOr<std::unique_ptr<Replicas>> Replicas::Create(
    const nn::NetworkFactory& factory, int batch_size, int num_devices,
    const std::vector<int>& gpus) {
  if (num_devices < 1 || batch_size < 1 || batch_size % num_devices != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--batch_size ", batch_size,
                     " does not split evenly over ", num_devices, " devices"));
  }
  if (!gpus.empty() && static_cast<int>(gpus.size()) != num_devices) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--gpus ", absl::StrJoin(gpus, ","), " for ", num_devices, " devices"));
  }
  std::unique_ptr<Replicas> r(new Replicas());
  r->per_device_ = batch_size / num_devices;
  for (int d = 0; d < num_devices; ++d) {
    Replica rep;
    PSTRAIN_ASSIGN_OR_RETURN(rep.net, factory(r->per_device_));
    if (gpus.empty()) {
      rep.ctx = std::make_unique<kernels::CpuContext>();
    } else {
#ifdef PSTRAIN_WORKER_CUDA
      rep.gpu = std::make_shared<Gpu>();
      kernels::GpuContextOptions options;
      options.device = gpus[d];
      PSTRAIN_ASSIGN_OR_RETURN(rep.gpu->ctx,
                               kernels::GpuContext::Create(options));
      PSTRAIN_ASSIGN_OR_RETURN(
          rep.gpu->net,
          nn::GpuNetwork::Create(rep.net.get(), rep.gpu->ctx.get()));
#else
      return absl::FailedPreconditionError(
          absl::StrCat("--gpus ", absl::StrJoin(gpus, ","),
                       ": this worker was built without CUDA"));
#endif
    }
    rep.params = rep.net->params();
    rep.x = kernels::Tensor(rep.net->output_shape(nn::Network::kInput));
    rep.labels.resize(r->per_device_);
    r->replicas_.push_back(std::move(rep));
  }
  {
    MutexLock lock(&r->mu_);
    r->results_.resize(num_devices);
  }
  if (num_devices > 1) {
    for (int d = 0; d < num_devices; ++d) {
      r->threads_.emplace_back([p = r.get(), d] { p->ThreadLoop(d); });
    }
  }
  return r;
}

Replicas::~Replicas() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  work_cv_.SignalAll();
  for (auto& t : threads_) t.join();
}

void Replicas::ThreadLoop(int device) {
  uint64_t seen = 0;
  while (true) {
    std::function<absl::Status(int)> task;
    {
      MutexLock lock(&mu_);
      // Woken by RunOnEach (new generation) and the destructor; the only
      // exit is stop_.
      work_cv_.WaitUntil(&mu_, absl::InfiniteFuture(),
                         [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
                           return stop_ || generation_ != seen;
                         });
      if (stop_) return;
      seen = generation_;
      task = task_;
    }
    absl::Status s = task(device);
    MutexLock lock(&mu_);
    results_[device] = std::move(s);
    if (--pending_ == 0) done_cv_.SignalAll();
  }
}

absl::Status Replicas::RunOnEach(std::function<absl::Status(int)> task,
                                 absl::Time deadline) {
  CHECK(!broken_) << "Replicas used after a step missed its deadline";
  if (threads_.empty()) return task(0);
  MutexLock lock(&mu_);
  task_ = std::move(task);
  pending_ = size();
  ++generation_;
  work_cv_.SignalAll();
  if (!done_cv_.WaitUntil(&mu_, deadline,
                          [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
                            return pending_ == 0;
                          })) {
    broken_ = true;
    return absl::DeadlineExceededError(absl::StrCat(
        pending_, " of ", size(), " device replicas did not finish in time"));
  }
  for (const absl::Status& s : results_) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status Replicas::Step(std::vector<float> data, std::vector<float> labels,
                            bool backward, absl::Time deadline,
                            const nn::Network::ParamsNeeded& needed,
                            const nn::Network::GradsReady& ready) {
  CHECK(size() == 1 || (!needed && !ready))
      << "per-layer callbacks need one device";
  const size_t sample =
      static_cast<size_t>(replicas_[0].x.size() / per_device_);
  if (data.size() != sample * batch_size() ||
      labels.size() != static_cast<size_t>(batch_size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a batch of ", data.size(), " floats and ", labels.size(),
        " labels for ", batch_size(), " samples of ", sample, " floats"));
  }
  input_ = std::move(data);
  input_labels_ = std::move(labels);
  return RunOnEach(
      [this, sample, backward, &needed, &ready](int d) -> absl::Status {
        Replica& r = replicas_[d];
        const size_t first = static_cast<size_t>(d) * per_device_;
        std::copy(input_.begin() + first * sample,
                  input_.begin() + (first + per_device_) * sample, r.x.data());
        std::copy(input_labels_.begin() + first,
                  input_labels_.begin() + first + per_device_,
                  r.labels.begin());
        // Forward-only steps are evaluation: moving statistics, no dropout.
        const nn::Mode mode =
            backward ? nn::Mode::kTrain : nn::Mode::kInference;
#ifdef PSTRAIN_WORKER_CUDA
        if (r.gpu) {
          absl::Status s =
              r.gpu->net->Forward(r.x, r.labels, mode, needed).status();
          if (s.ok() && backward) s = r.gpu->net->Backward(1.0f, ready);
          return s;
        }
#endif
        absl::Status s =
            r.net->Forward(r.ctx.get(), r.x, r.labels, mode, needed).status();
        if (s.ok() && backward) s = r.net->Backward(r.ctx.get(), 1.0f, ready);
        return s;
      },
      deadline);
}

const kernels::Tensor& Replicas::probabilities(int device) const {
  const Replica& r = replicas_[device];
#ifdef PSTRAIN_WORKER_CUDA
  if (r.gpu) return r.gpu->net->probabilities();
#endif
  return r.net->probabilities();
}

std::vector<absl::Span<const float>> Replicas::Grads(size_t index) const {
  std::vector<absl::Span<const float>> out;
  for (const Replica& r : replicas_)
    out.push_back(r.params[index]->grad.span());
  return out;
}

absl::Status Replicas::CopyWeightsFromFirst(absl::Time deadline) {
  if (size() == 1) return absl::OkStatus();
  return RunOnEach(
      [this](int d) {
        if (d == 0) return absl::OkStatus();
        const std::vector<nn::Param*>& from = replicas_[0].params;
        const std::vector<nn::Param*>& to = replicas_[d].params;
        for (size_t i = 0; i < from.size(); ++i) {
          std::copy(from[i]->value.data(),
                    from[i]->value.data() + from[i]->value.size(),
                    to[i]->value.data());
        }
        return absl::OkStatus();
      },
      deadline);
}

}  // namespace worker
}  // namespace pstrain
