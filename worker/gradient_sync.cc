#include "worker/gradient_sync.h"

#include <algorithm>
#include <utility>

#include "util/status.h"

namespace pstrain {
namespace worker {

GradientSync::GradientSync(kvstore::KVStore* kv, Replicas* replicas,
                           const Options& options)
    : kv_(kv),
      replicas_(replicas),
      options_(options),
      overlap_(options.overlap && replicas->size() == 1) {
  // Arguments and auxiliary states: the KVStore trains the arguments,
  // auxiliary states (batch norm's moving statistics) stay local to each
  // worker and device, as in MXNet. Fixed parameters (--fixed_params) are
  // not keys: nothing of them is pushed or pulled.
  const std::vector<nn::Param*>& params = replicas_->params(0);
  for (size_t i = 0; i < params.size(); ++i) {
    if (params[i]->aux || params[i]->fixed) continue;
    key_of_[params[i]] = learned_.size();
    learned_.push_back(params[i]);
    param_index_.push_back(i);
  }
  pending_.resize(learned_.size());
  if (options_.timeline != nullptr)
    compute_track_ = options_.timeline->Track("compute");
  needed_ = [this](const std::vector<nn::Param*>& ps) {
    for (const nn::Param* p : ps) {
      if (p->fixed) continue;
      PSTRAIN_RETURN_IF_ERROR(WaitKey(key_of_.at(p)));
    }
    return absl::OkStatus();
  };
  ready_ = [this](const std::vector<nn::Param*>& ps) {
    for (nn::Param* p : ps) {
      if (!p->fixed) Push(key_of_.at(p));
    }
  };
  arrived_ = [this](const std::vector<nn::Param*>& ps) {
    for (const nn::Param* p : ps) {
      if (p->fixed) continue;
      const size_t k = key_of_.at(p);
      // Queued for a fused push: not even sent yet.
      if (std::find(unsent_.begin(), unsent_.end(), k) != unsent_.end())
        return false;
      const std::shared_ptr<Pushed>& pushed = pending_[k];
      if (pushed && !pushed->waited && !kv_->Done(pushed->handle)) return false;
    }
    return true;
  };
}

absl::Status GradientSync::Init(const proto::OptimizerConfig& optimizer) {
  std::vector<int64_t> keys;
  std::vector<absl::Span<const float>> values;
  for (size_t k = 0; k < learned_.size(); ++k) {
    keys.push_back(static_cast<int64_t>(k));
    values.push_back(learned_[k]->value.span());
  }
  PSTRAIN_RETURN_IF_ERROR(kv_->Init(keys, values, Deadline()));
  PSTRAIN_RETURN_IF_ERROR(kv_->SetOptimizer(optimizer, Deadline()));
  for (size_t k = 0; k < learned_.size(); ++k) {
    PSTRAIN_ASSIGN_OR_RETURN(kvstore::Handle h,
                             kv_->Pull(keys[k], learned_[k]->value.span(), 0));
    PSTRAIN_RETURN_IF_ERROR(kv_->Wait(h, Deadline()));
  }
  return replicas_->CopyWeightsFromFirst(Deadline());
}

absl::Status GradientSync::Step(std::vector<float> data,
                                std::vector<float> labels) {
  const nn::Network::ParamsNeeded& needed = overlap_ ? needed_ : nullptr;
  const nn::Network::GradsReady& ready = overlap_ ? ready_ : nullptr;
  absl::Status s;
  if (options_.emulated != nullptr) {
    // Pushes made during the emulated backward run while the devices
    // compute: they delay nothing unless they outlast it (then the step
    // runs late, which the benchmark counts as other time).
    const double before = times_.push_s;
    s = options_.emulated->Step(needed, ready, overlap_ ? arrived_ : nullptr);
    times_.push_s = before;
  } else {
    s = replicas_->Step(std::move(data), std::move(labels),
                        /*backward=*/true, Deadline(), needed, ready);
  }
  if (s.ok()) s = comm_;
  if (!s.ok()) return s;
  // Without overlap, push every gradient now (summed over the devices: one
  // push per key, fused by fusion_bytes), last layers first; with overlap
  // only what backward left unsent goes now (the first layers).
  for (size_t k = learned_.size(); !overlap_ && k-- > 0;) Push(k);
  Flush();
  return comm_;
}

absl::Status GradientSync::FinishStep() {
  if (!comm_.ok() || overlap_) return comm_;
  PSTRAIN_RETURN_IF_ERROR(WaitAll());
  return replicas_->CopyWeightsFromFirst(Deadline());
}

absl::Status GradientSync::WaitAll() {
  absl::Status all = comm_;
  for (size_t k = 0; k < pending_.size(); ++k) {
    absl::Status w = WaitKey(k);
    if (all.ok()) all = w;
  }
  return all;
}

void GradientSync::Push(size_t k) {
  const int64_t bytes =
      static_cast<int64_t>(learned_[k]->grad.size() * sizeof(float));
  if (options_.fusion_max_array_bytes > 0 &&
      bytes > options_.fusion_max_array_bytes) {
    // Alone and at once: fused, a big array would hold its group's smaller
    // arrays back (the next forward waits for the whole group), and it
    // would wait for later ones to fill the group. The small ones ready
    // before it leave first, as they would have without fusion.
    Flush();
    PushGroup({k});
    return;
  }
  unsent_.push_back(k);
  unsent_bytes_ += bytes;
  if (unsent_bytes_ >= options_.fusion_bytes) Flush();
}

void GradientSync::Flush() {
  if (unsent_.empty()) return;
  PushGroup(unsent_);
  unsent_.clear();
  unsent_bytes_ = 0;
}

void GradientSync::PushGroup(const std::vector<size_t>& keys) {
  if (!comm_.ok()) return;
  std::vector<kvstore::KeyPushPull> group;
  size_t first = keys.front();
  for (size_t k : keys) {
    group.push_back({static_cast<int64_t>(k), replicas_->Grads(param_index_[k]),
                     learned_[k]->value.span()});
    first = std::min(first, k);
  }
  // The first layers (lowest keys) at the highest priority.
  const absl::Time t0 = absl::Now();
  auto h = kv_->PushPullGroup(
      group, options_.priorities ? -static_cast<int>(first) : 0);
  times_.push_s += absl::ToDoubleSeconds(absl::Now() - t0);
  if (h.ok()) {
    auto p = std::make_shared<Pushed>();
    p->handle = *h;
    for (size_t k : keys) pending_[k] = p;
  } else {
    comm_ = h.status();
  }
}

absl::Status GradientSync::WaitKey(size_t k) {
  if (!pending_[k]) return absl::OkStatus();
  std::shared_ptr<Pushed> p = std::move(pending_[k]);
  if (!p->waited) {
    const absl::Time t0 = absl::Now();
    p->status = kv_->Wait(p->handle, Deadline());
    const absl::Time t1 = absl::Now();
    times_.pull_s += absl::ToDoubleSeconds(t1 - t0);
    p->waited = true;
    timeline::Recorder* tl = options_.timeline;
    if (tl != nullptr && tl->active()) {
      timeline::EventArgs args;
      args.ints = {{"key", static_cast<int64_t>(k)}, {"step", tl->step()}};
      tl->Add(compute_track_, "wait for weights", t0, t1, std::move(args));
    }
  }
  return p->status;
}

}  // namespace worker
}  // namespace pstrain
