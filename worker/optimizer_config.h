// The optimizer the servers (or the local KVStore) run, from the trainer's
// options (fit.py's --optimizer, --lr, --lr_factor, --lr_step_epochs,
// --mom, --wd) and the learned parameters' multipliers.
#ifndef PSTRAIN_WORKER_OPTIMIZER_CONFIG_H_
#define PSTRAIN_WORKER_OPTIMIZER_CONFIG_H_

#include <cstdint>
#include <vector>

#include "nn/network.h"
#include "proto/messages.pb.h"
#include "worker/trainer.h"

namespace pstrain {
namespace worker {

// The OptimizerConfig of a run that starts at epoch `begin_epoch` (after
// --load_epoch) with `epoch_size` batches per epoch on each of `workers`
// workers: SGD, NAG or Adam; the learning rate already shrunk by every
// --lr_step_epochs step at or before `begin_epoch`, and the later steps as
// a multi-factor schedule counted in updates from `begin_epoch`; gradients
// rescaled by 1 / batch_size, times the workers for synchronous KVStores;
// key k's lr_mult and wd_mult from learned[k]. Pure function.
proto::OptimizerConfig MakeOptimizerConfig(
    const TrainerOptions& options, int workers, int begin_epoch,
    int64_t epoch_size, const std::vector<nn::Param*>& learned);

}  // namespace worker
}  // namespace pstrain

#endif  // PSTRAIN_WORKER_OPTIMIZER_CONFIG_H_
