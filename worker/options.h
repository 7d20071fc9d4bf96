// From flag text to TrainerOptions: list parsing and validation, with
// errors that name the flag (MXNet fit.py's names, underscored), and the
// data augmentation the options ask for.
#ifndef PSTRAIN_WORKER_OPTIONS_H_
#define PSTRAIN_WORKER_OPTIONS_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "data/augment.h"
#include "worker/trainer.h"

namespace pstrain {
namespace worker {

// Comma-separated numbers: "1,2.5,3" -> {1, 2.5, 3} (ParseNumbers), "0,1,2"
// -> {0, 1, 2} (ParseInts, e.g. --gpus, --lr_step_epochs); empty text ->
// {}. InvalidArgument naming `flag` for a part that does not parse.
absl::StatusOr<std::vector<double>> ParseNumbers(absl::string_view flag,
                                                 absl::string_view text);
absl::StatusOr<std::vector<int>> ParseInts(absl::string_view flag,
                                           absl::string_view text);

// --test_slow_worker RANK:MS into options->slow_worker_rank and
// slow_worker_ms; empty text: off (untouched). InvalidArgument naming the
// flag otherwise.
absl::Status ParseSlowWorker(absl::string_view text, TrainerOptions* options);

// Per-channel values of --rgb_mean / --rgb_std into out[0..2] (R, G, B):
// one number for all three channels, R,G,B (extra numbers ignored, missing
// ones repeat the last), or empty text for `fallback`. InvalidArgument
// naming `flag` for a part that does not parse (ParseNumbers); `out` is
// then untouched.
absl::Status ParseChannelValues(absl::string_view flag, absl::string_view text,
                                float fallback, float out[3]);

// MXNet's aspect-ratio range for --random_resized_crop from
// --min_random_aspect_ratio and --max_random_aspect_ratio: [min, max], or
// [1 - max, 1 + max] when min is 0 (MXNet's None). InvalidArgument naming
// the flag when min < 0 or the range is not 0 < lo <= hi.
absl::StatusOr<std::pair<float, float>> AspectRatioRange(double min,
                                                         double max);

// The largest --batch_size a worker takes (a sanity bound; whether a batch
// fits in memory is CheckBatchMemory's question).
inline constexpr int kMaxBatchSize = 1 << 20;

// Checks every option against what the worker can run. InvalidArgument
// names the flag and the bad value (e.g. "--top_k 11: must be 0 (off) or
// in [2, --num_classes 10]"). Does not check that files exist, that the
// network name is built (see DryRun), or that --gpus has a CUDA build to
// run on (see CheckDevices).
absl::Status ValidateTrainerOptions(const TrainerOptions& options);

// Host memory one training step holds at least: `per_sample_bytes` for
// every sample of the batch (its input and, on CPU devices, the network's
// planned activations) and `fixed_bytes` besides (every replica's
// parameters and their gradients).
struct StepMemory {
  int64_t per_sample_bytes = 0;
  int64_t fixed_bytes = 0;
};

// ResourceExhausted naming --batch_size, what a step of that batch needs and
// `available_bytes` when the step cannot fit in them, before anything is
// allocated: "--batch_size 100000: a training step needs at least 1.2 TB
// of memory (12.3 MB per sample, plus 204.4 MB of parameters), more than
// the 23.4 GB this machine has".
absl::Status CheckBatchMemory(const TrainerOptions& options,
                              const StepMemory& memory,
                              int64_t available_bytes);

// Devices the worker will train on: --cpu_devices replicas, or --gpus.
int NumDevices(const TrainerOptions& options);

// FailedPrecondition when the options need devices this binary cannot
// drive: any --gpus in a build without CUDA (the message says so). A CUDA
// build accepts --gpus here; whether those GPUs exist is found out when the
// replicas are created (Replicas::Create: NotFound naming the device).
absl::Status CheckDevices(const TrainerOptions& options);

// options.augment with the output size of image_shape, for training
// (`train`: random crops, mirror, colour jitter, ... as asked) or for
// validation (deterministic: resize, center crop, normalization).
// REQUIRES: ValidateTrainerOptions(options).ok().
data::AugmentOptions AugmentFor(const TrainerOptions& options, bool train);

}  // namespace worker
}  // namespace pstrain

#endif  // PSTRAIN_WORKER_OPTIONS_H_
