#include "kvstore/local_kvstore.h"

#include <algorithm>
#include <map>
#include <set>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "kvstore/kvstore_internal.h"
#include "nn/optimizer.h"
#include "util/mutex.h"
#include "util/status.h"

namespace pstrain {
namespace kvstore {
namespace {

using internal::CheckDevices;
using internal::Sum;

class LocalKVStore : public KVStore {
 public:
  explicit LocalKVStore(std::string type) : type_(std::move(type)) {}
  const std::string& type() const override { return type_; }
  int rank() const override { return 0; }
  int num_workers() const override { return 1; }

  absl::Status Init(const std::vector<int64_t>& keys,
                    const std::vector<absl::Span<const float>>& values,
                    absl::Time) override {
    if (keys.size() != values.size())
      return absl::InvalidArgumentError("keys/values mismatch");
    MutexLock lock(&mu_);
    for (size_t i = 0; i < keys.size(); ++i) {
      store_[keys[i]].assign(values[i].begin(), values[i].end());
    }
    return absl::OkStatus();
  }
  absl::Status SetOptimizer(const proto::OptimizerConfig& config,
                            absl::Time) override {
    PSTRAIN_ASSIGN_OR_RETURN(auto opt, nn::Optimizer::Create(config));
    MutexLock lock(&mu_);
    optimizer_ = std::move(opt);
    return absl::OkStatus();
  }
  absl::StatusOr<Handle> Push(
      int64_t key, const std::vector<absl::Span<const float>>& values,
      int) override {
    MutexLock lock(&mu_);
    return Done(PushLocked(key, values));
  }
  absl::StatusOr<Handle> Pull(int64_t key, absl::Span<float> out,
                              int) override {
    MutexLock lock(&mu_);
    return Done(PullLocked(key, out));
  }
  absl::StatusOr<Handle> PushPull(
      int64_t key, const std::vector<absl::Span<const float>>& values,
      absl::Span<float> out, int) override {
    MutexLock lock(&mu_);
    absl::Status s = PushLocked(key, values);
    if (s.ok()) s = PullLocked(key, out);
    return Done(s);
  }
  absl::StatusOr<Handle> PushPullGroup(const std::vector<KeyPushPull>& group,
                                       int) override {
    if (group.empty())
      return absl::InvalidArgumentError("an empty group of keys");
    std::set<int64_t> seen;
    for (const KeyPushPull& g : group) {
      if (!seen.insert(g.key).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("key ", g.key, " twice"));
      }
    }
    MutexLock lock(&mu_);
    absl::Status s;
    for (const KeyPushPull& g : group) {
      s = PushLocked(g.key, g.device_values);
      if (s.ok()) s = PullLocked(g.key, g.out);
      if (!s.ok()) break;
    }
    return Done(s);
  }
  absl::Status Wait(Handle h, absl::Time) override {
    MutexLock lock(&mu_);
    auto it = results_.find(h);
    if (it == results_.end())
      return absl::NotFoundError(absl::StrCat("no operation ", h));
    absl::Status s = it->second;
    results_.erase(it);
    return s;
  }
  // Operations end before they return their handle.
  bool Done(Handle) const override { return true; }
  absl::Status WaitAll(absl::Time) override {
    MutexLock lock(&mu_);
    absl::Status first;
    for (const auto& [h, s] : results_) {
      if (first.ok()) first = s;
    }
    results_.clear();
    return first;
  }
  double optimizer_seconds() const override {
    MutexLock lock(&mu_);
    return optimizer_s_;
  }
  absl::Status Barrier(absl::Time) override { return absl::OkStatus(); }
  absl::Status Finish() override { return absl::OkStatus(); }
  absl::Status AllReduceSum(int64_t, absl::Span<const float> values,
                            absl::Span<float> out, absl::Time) override {
    if (values.size() != out.size())
      return absl::InvalidArgumentError("AllReduceSum sizes");
    std::copy(values.begin(), values.end(), out.begin());
    return absl::OkStatus();
  }

 private:
  // Keeps `s` for Wait() under a new handle. REQUIRES: mu_ held.
  Handle Done(absl::Status s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    results_[next_] = s;
    return next_++;
  }
  // REQUIRES: mu_ held.
  absl::Status PushLocked(int64_t key,
                          const std::vector<absl::Span<const float>>& values)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = store_.find(key);
    if (it == store_.end())
      return absl::NotFoundError(absl::StrCat("key ", key, " not initialized"));
    PSTRAIN_RETURN_IF_ERROR(CheckDevices(values, it->second.size()));
    auto [sum, keep] = Sum(values);
    absl::Span<const float> g(sum, it->second.size());
    if (optimizer_) {
      const absl::Time t0 = absl::Now();
      optimizer_->Update(key, 0, absl::MakeSpan(it->second), g);
      optimizer_s_ += absl::ToDoubleSeconds(absl::Now() - t0);
    } else {
      std::copy(g.begin(), g.end(), it->second.begin());
    }
    return absl::OkStatus();
  }
  // REQUIRES: mu_ held.
  absl::Status PullLocked(int64_t key, absl::Span<float> out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = store_.find(key);
    if (it == store_.end())
      return absl::NotFoundError(absl::StrCat("key ", key, " not initialized"));
    if (out.size() != it->second.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("pull of key ", key, " into ", out.size(),
                       " floats; it holds ", it->second.size()));
    }
    std::copy(it->second.begin(), it->second.end(), out.begin());
    return absl::OkStatus();
  }

  const std::string type_;  // Only read: no lock.
  // mu_ guards everything below; every operation holds it throughout.
  mutable Mutex mu_;
  std::map<int64_t, std::vector<float>> store_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<nn::Optimizer> optimizer_ ABSL_GUARDED_BY(mu_);
  double optimizer_s_ ABSL_GUARDED_BY(mu_) = 0;  // In optimizer_->Update.
  // Each operation's result, until Wait().
  std::map<Handle, absl::Status> results_ ABSL_GUARDED_BY(mu_);
  Handle next_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace

std::unique_ptr<KVStore> NewLocalKVStore(std::string type) {
  return std::unique_ptr<KVStore>(new LocalKVStore(std::move(type)));
}

}  // namespace kvstore
}  // namespace pstrain
