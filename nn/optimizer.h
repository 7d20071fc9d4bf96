// Optimizers with MXNet's update rules, used by the servers and by the
// single-process ("local"/"device") KVStore: SGD (with momentum), NAG and
// Adam; weight decay, rescale_grad, clip_gradient, per-key lr/wd
// multipliers, and learning-rate schedules with MXNet's update-count
// semantics (formats.md §5).
#ifndef PSTRAIN_NN_OPTIMIZER_H_
#define PSTRAIN_NN_OPTIMIZER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "proto/messages.pb.h"

namespace pstrain {
namespace nn {

// The learning rate after `num_update` updates under `config`'s schedule:
//   FACTOR: lr *= factor every `step` updates (floor stop_factor_lr, 1e-8
//           by default);
//   MULTI_FACTOR: lr *= factor once num_update > steps[i], for each i.
double ScheduledLearningRate(const proto::OptimizerConfig& config,
                             int64_t num_update);

// Everything an Optimizer's next update depends on besides its config:
// per-slot update counts and moments, per-key counts, and the update count
// the schedule sees. A value type (checkpoints: server/checkpoint.h).
struct OptimizerState {
  struct Slot {
    int64_t key = 0;
    int64_t slot = 0;
    int64_t count = 0;
    std::vector<float> m, v;  // Empty until the slot's rule needs them.
  };
  std::vector<Slot> slots;
  std::map<int64_t, int64_t> key_count;
  int64_t num_update = 0;
};

// One optimizer for many keys (or key slices). Not thread-safe: callers
// serialize updates (the server does per key).
class Optimizer {
 public:
  // InvalidArgument for an impossible configuration (negative lr, momentum
  // outside [0, 1), Adam betas outside [0, 1), schedule without steps).
  static absl::StatusOr<std::unique_ptr<Optimizer>> Create(
      const proto::OptimizerConfig& config);

  // Applies one update of `key` (the state is kept per key; `slot`
  // distinguishes slices of the same key, e.g. its offset). `grad` is the
  // raw (summed) gradient; rescale_grad and clipping are applied here.
  // REQUIRES: weights.size() == grad.size(), same for every call of a slot;
  // weights and grad do not overlap.
  void Update(int64_t key, int64_t slot, absl::Span<float> weights,
              absl::Span<const float> grad);

  // The update count MXNet's schedules see: the largest number of updates
  // applied to any key.
  int64_t num_update() const { return num_update_; }
  const proto::OptimizerConfig& config() const { return config_; }

  // A copy of the state (checkpoints). The second form reuses the memory
  // `out` already holds (a previous export's), sparing fresh pages.
  OptimizerState ExportState() const;
  void ExportState(OptimizerState* out) const;
  // Replaces the state with `state` (from ExportState of an optimizer of
  // the same config): the next Update continues exactly where that one
  // stopped. InvalidArgument (state unchanged) for a slot listed twice or
  // moments of different sizes.
  absl::Status ImportState(const OptimizerState& state);

 private:
  explicit Optimizer(const proto::OptimizerConfig& config) : config_(config) {}
  struct State {
    int64_t count = 0;
    std::vector<float> m, v;
  };
  proto::OptimizerConfig config_;
  std::map<std::pair<int64_t, int64_t>, State> state_;
  std::map<int64_t, int64_t> key_count_;
  int64_t num_update_ = 0;
};

}  // namespace nn
}  // namespace pstrain

#endif  // PSTRAIN_NN_OPTIMIZER_H_
