#include "nn/optimizer.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace pstrain {
namespace nn {
namespace {

// The scalars of one update.
struct Rule {
  float lr, wd, rescale, clip, mom;
};

enum class Sgd { kPlain, kMomentum, kNag };

// One element of MXNet's sgd_update, sgd_mom_update or nag_mom_update,
// with the gradient g = clip(rescale * grad) + wd * w.
template <Sgd kKind, bool kClip>
inline void SgdElement(const Rule& r, float* __restrict w,
                       const float* __restrict grad, float* __restrict m,
                       size_t i) {
  float g = r.rescale * grad[i];
  if (kClip) g = std::min(r.clip, std::max(-r.clip, g));
  g += r.wd * w[i];
  if (kKind == Sgd::kPlain) {
    w[i] -= r.lr * g;
  } else if (kKind == Sgd::kMomentum) {
    m[i] = r.mom * m[i] - r.lr * g;
    w[i] += m[i];
  } else {
    m[i] = r.mom * m[i] + g;
    w[i] -= r.lr * (g + r.mom * m[i]);
  }
}

// The update over n elements: first the largest multiple of 16, a loop GCC
// vectorises at -O2 (its "very cheap" cost model takes only loops that need
// no scalar remainder), then the rest. The arrays do not overlap (the
// weights, the caller's gradient and our momentum state). Not inlined: in
// Update's body GCC does not vectorise it.
template <Sgd kKind, bool kClip>
__attribute__((noinline)) void SgdLoop(const Rule r, float* __restrict w,
                                       const float* __restrict grad,
                                       float* __restrict m, size_t n) {
  const size_t head = n & ~size_t{15};
  for (size_t i = 0; i < head; ++i) SgdElement<kKind, kClip>(r, w, grad, m, i);
  for (size_t i = head; i < n; ++i) SgdElement<kKind, kClip>(r, w, grad, m, i);
}

template <Sgd kKind>
void SgdUpdate(const Rule& r, float* w, const float* grad, float* m, size_t n) {
  if (r.clip > 0) {
    SgdLoop<kKind, true>(r, w, grad, m, n);
  } else {
    SgdLoop<kKind, false>(r, w, grad, m, n);
  }
}

}  // namespace

double ScheduledLearningRate(const proto::OptimizerConfig& c,
                             int64_t num_update) {
  double lr = c.learning_rate();
  const proto::LearningRateSchedule& s = c.schedule();
  switch (s.kind()) {
    case proto::LearningRateSchedule::FACTOR: {
      const double floor = s.stop_factor_lr() > 0 ? s.stop_factor_lr() : 1e-8;
      // MXNet: while num_update > count + step: count += step; lr *= factor.
      if (s.step() > 0) {
        for (int64_t count = 0; num_update > count + s.step();
             count += s.step()) {
          lr *= s.factor();
          if (lr < floor) {
            lr = floor;
            break;
          }
        }
      }
      return lr;
    }
    case proto::LearningRateSchedule::MULTI_FACTOR:
      for (int64_t step : s.steps()) {
        if (num_update > step) lr *= s.factor();
      }
      return lr;
    default:
      return lr;
  }
}

absl::StatusOr<std::unique_ptr<Optimizer>> Optimizer::Create(
    const proto::OptimizerConfig& c) {
  auto bad = [](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("optimizer: ", what));
  };
  if (c.learning_rate() < 0) return bad("learning rate must be >= 0");
  if (c.momentum() < 0 || c.momentum() >= 1)
    return bad("momentum must be in [0, 1)");
  if (c.weight_decay() < 0) return bad("weight decay must be >= 0");
  if (c.kind() == proto::OptimizerConfig::ADAM &&
      (c.beta1() < 0 || c.beta1() >= 1 || c.beta2() < 0 || c.beta2() >= 1 ||
       c.epsilon() <= 0)) {
    return bad("Adam needs 0 <= beta1, beta2 < 1 and epsilon > 0");
  }
  const auto& s = c.schedule();
  if (s.kind() == proto::LearningRateSchedule::FACTOR &&
      (s.step() < 1 || s.factor() <= 0)) {
    return bad("the factor schedule needs step >= 1 and factor > 0");
  }
  if (s.kind() == proto::LearningRateSchedule::MULTI_FACTOR) {
    if (s.steps().empty() || s.factor() <= 0)
      return bad("the multi-factor schedule needs steps and factor > 0");
    for (int i = 1; i < s.steps_size(); ++i) {
      if (s.steps(i) <= s.steps(i - 1))
        return bad("multi-factor steps must increase");
    }
  }
  return std::unique_ptr<Optimizer>(new Optimizer(c));
}

OptimizerState Optimizer::ExportState() const {
  OptimizerState out;
  ExportState(&out);
  return out;
}

void Optimizer::ExportState(OptimizerState* out) const {
  out->slots.resize(state_.size());
  size_t i = 0;
  for (const auto& [id, st] : state_) {
    OptimizerState::Slot& s = out->slots[i++];
    s.key = id.first;
    s.slot = id.second;
    s.count = st.count;
    s.m.assign(st.m.begin(), st.m.end());
    s.v.assign(st.v.begin(), st.v.end());
  }
  out->key_count = key_count_;
  out->num_update = num_update_;
}

absl::Status Optimizer::ImportState(const OptimizerState& in) {
  std::map<std::pair<int64_t, int64_t>, State> state;
  for (const OptimizerState::Slot& s : in.slots) {
    if (!s.v.empty() && s.v.size() != s.m.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "optimizer state of key ", s.key, " slot ", s.slot, ": moments of ",
          s.m.size(), " and ", s.v.size(), " elements"));
    }
    State& st = state[{s.key, s.slot}];
    if (st.count != 0 || !st.m.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "optimizer state: key ", s.key, " slot ", s.slot, " twice"));
    }
    st.count = s.count;
    st.m = s.m;
    st.v = s.v;
  }
  state_ = std::move(state);
  key_count_ = in.key_count;
  num_update_ = in.num_update;
  return absl::OkStatus();
}

void Optimizer::Update(int64_t key, int64_t slot, absl::Span<float> w,
                       absl::Span<const float> g) {
  CHECK_EQ(w.size(), g.size());
  const proto::OptimizerConfig& c = config_;
  State& st = state_[{key, slot}];
  ++st.count;
  // MXNet counts updates per key; a key's slices advance together.
  int64_t& kc = key_count_[key];
  kc = std::max(kc, st.count);
  num_update_ = std::max(num_update_, kc);
  const double lr_mult = c.lr_mult().count(key) ? c.lr_mult().at(key) : 1.0;
  const double wd_mult = c.wd_mult().count(key) ? c.wd_mult().at(key) : 1.0;
  const float lr =
      static_cast<float>(ScheduledLearningRate(c, num_update_) * lr_mult);
  const float wd = static_cast<float>(c.weight_decay() * wd_mult);
  const float rescale =
      c.rescale_grad() != 0 ? static_cast<float>(c.rescale_grad()) : 1.0f;
  const float clip = static_cast<float>(c.clip_gradient());
  const float mom = static_cast<float>(c.momentum());
  const size_t n = w.size();
  const Rule rule{lr, wd, rescale, clip, mom};
  switch (c.kind()) {
    case proto::OptimizerConfig::SGD:
      if (mom == 0) {
        SgdUpdate<Sgd::kPlain>(rule, w.data(), g.data(), nullptr, n);
      } else {
        if (st.m.empty()) st.m.assign(n, 0.0f);
        SgdUpdate<Sgd::kMomentum>(rule, w.data(), g.data(), st.m.data(), n);
      }
      break;
    case proto::OptimizerConfig::NAG:
      if (st.m.empty()) st.m.assign(n, 0.0f);
      SgdUpdate<Sgd::kNag>(rule, w.data(), g.data(), st.m.data(), n);
      break;
    case proto::OptimizerConfig::ADAM: {
      if (st.m.empty()) {
        st.m.assign(n, 0.0f);
        st.v.assign(n, 0.0f);
      }
      const double t = static_cast<double>(st.count);
      const float b1 = static_cast<float>(c.beta1()),
                  b2 = static_cast<float>(c.beta2());
      const float eps = static_cast<float>(c.epsilon());
      const float lr_t =
          static_cast<float>(lr * std::sqrt(1 - std::pow(c.beta2(), t)) /
                             (1 - std::pow(c.beta1(), t)));
      for (size_t i = 0; i < n; ++i) {
        float gi = rescale * g[i] + wd * w[i];
        if (clip > 0) gi = std::min(clip, std::max(-clip, gi));
        st.m[i] = b1 * st.m[i] + (1 - b1) * gi;
        st.v[i] = b2 * st.v[i] + (1 - b2) * gi * gi;
        w[i] -= lr_t * st.m[i] / (std::sqrt(st.v[i]) + eps);
      }
      break;
    }
    default:
      // NONE: the servers store the (summed) gradient themselves.
      std::copy(g.begin(), g.end(), w.begin());
  }
}

}  // namespace nn
}  // namespace pstrain
