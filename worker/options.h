// From flag text to TrainerOptions: list parsing and validation, with
// errors that name the flag (MXNet fit.py's names, underscored), and the
// data augmentation the options ask for.
#ifndef PSTRAIN_WORKER_OPTIONS_H_
#define PSTRAIN_WORKER_OPTIONS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "data/augment.h"
#include "worker/trainer.h"

namespace pstrain {
namespace worker {

// "1,2.5,3" -> {1, 2.5, 3}; empty text -> {}. InvalidArgument naming
// `flag` for a part that is not a number.
absl::StatusOr<std::vector<double>> ParseNumbers(absl::string_view flag,
                                                 absl::string_view text);

// As ParseNumbers, for integers (e.g. --gpus 0,1,2, --lr_step_epochs
// 30,60). InvalidArgument naming `flag` for a part that is not an integer.
absl::StatusOr<std::vector<int>> ParseInts(absl::string_view flag,
                                           absl::string_view text);

// Checks every option against what the worker can run. InvalidArgument
// names the flag and the bad value (e.g. "--top_k 11: must be 0 (off) or
// in [2, --num_classes 10]"). Does not check that files exist, that the
// network name is built (see DryRun), or that --gpus has a CUDA build to
// run on (see CheckDevices).
absl::Status ValidateTrainerOptions(const TrainerOptions& options);

// Devices the worker will train on: --cpu_devices replicas, or --gpus.
int NumDevices(const TrainerOptions& options);

// FailedPrecondition when the options need devices this binary cannot
// drive: any --gpus in a build without CUDA (the message says so), and, for
// now, in a CUDA build too (the layers run on the CPU only).
absl::Status CheckDevices(const TrainerOptions& options);

// The augmentation for training (`train`: random crop, mirror, colour
// jitter, ... as asked) or for validation (deterministic: resize and
// center crop only).
// REQUIRES: ValidateTrainerOptions(options).ok().
data::AugmentOptions AugmentFor(const TrainerOptions& options, bool train);

}  // namespace worker
}  // namespace pstrain

#endif  // PSTRAIN_WORKER_OPTIONS_H_
