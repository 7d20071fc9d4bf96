#include "worker/optimizer_config.h"

namespace pstrain {
namespace worker {

proto::OptimizerConfig MakeOptimizerConfig(
    const TrainerOptions& o, int workers, int begin_epoch, int64_t epoch_size,
    const std::vector<nn::Param*>& learned) {
  proto::OptimizerConfig cfg;
  cfg.set_kind(o.optimizer == "adam"  ? proto::OptimizerConfig::ADAM
               : o.optimizer == "nag" ? proto::OptimizerConfig::NAG
                                      : proto::OptimizerConfig::SGD);
  double lr = o.lr;
  auto* sched = cfg.mutable_schedule();
  for (int e : o.lr_step_epochs) {
    if (e <= begin_epoch) {
      lr *= o.lr_factor;  // fit.py: steps already passed shrink the start lr.
    } else {
      sched->add_steps(epoch_size * (e - begin_epoch));
    }
  }
  if (sched->steps_size() > 0) {
    sched->set_kind(proto::LearningRateSchedule::MULTI_FACTOR);
    sched->set_factor(o.lr_factor);
  }
  cfg.set_learning_rate(lr);
  cfg.set_momentum(o.optimizer == "adam" ? 0 : o.mom);
  cfg.set_beta1(0.9);
  cfg.set_beta2(0.999);
  cfg.set_epsilon(1e-8);
  cfg.set_weight_decay(o.wd);
  const bool sync =
      o.kv_store == "dist_sync" || o.kv_store == "dist_device_sync";
  cfg.set_rescale_grad(1.0 / (o.batch_size * (sync ? workers : 1)));
  for (size_t k = 0; k < learned.size(); ++k) {
    (*cfg.mutable_wd_mult())[static_cast<int64_t>(k)] = learned[k]->wd_mult;
    (*cfg.mutable_lr_mult())[static_cast<int64_t>(k)] = learned[k]->lr_mult;
  }
  return cfg;
}

}  // namespace worker
}  // namespace pstrain
