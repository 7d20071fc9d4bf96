// The worker's training loop (MXNet's fit.py): data from RecordIO through
// the decode/augment pipeline, forward/backward on the CPU kernels, gradient
// push and weight pull through the KVStore (priority by layer: the first
// layers first), MXNet-style progress lines, validation, checkpoints.
#ifndef PSTRAIN_WORKER_TRAINER_H_
#define PSTRAIN_WORKER_TRAINER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "data/augment.h"
#include "kvstore/kvstore.h"
#include "nn/network.h"
#include "worker/recovery.h"

namespace pstrain {
namespace worker {

// data::AugmentOptions with fit.py's defaults (no resize, border 127).
inline data::AugmentOptions DefaultAugment() {
  data::AugmentOptions a;
  a.resize = 0;
  a.fill_value = 127;
  return a;
}

struct TrainerOptions {
  std::string network = "lenet";
  // An MXNet symbol JSON file (nn::ImportSymbol) to train instead of
  // `network`; num_classes different from the symbol's replaces its last
  // FullyConnected layer (fine-tuning).
  std::string symbol;
  // "PREFIX,EPOCH": start from PREFIX-%04d.params by name
  // (worker/finetune.h: LoadPretrained), then train from epoch 0.
  std::string pretrained;
  // POSIX extended regex over parameter names: those parameters are fixed
  // (no gradient pushed, never updated; MXNet's fixed_param_names).
  std::string fixed_params;
  int num_layers = 0;
  int num_classes = 10;
  std::vector<int64_t> image_shape = {1, 28, 28};
  int batch_size = 64;
  int num_epochs = 1;
  double lr = 0.05;
  double lr_factor = 0.1;
  std::vector<int> lr_step_epochs;
  std::string optimizer = "sgd";
  double mom = 0.9;
  double wd = 0.0001;
  std::string kv_store = "local";
  kvstore::KVStoreOptions kv;
  std::string data_train, data_val;
  int data_nthreads = 2;
  // Corrupt data (data::PipelineOptions): the worker stops once more than
  // this fraction of the records of its part of data_train (or data_val),
  // or more than max_corrupt_records of them (-1: no cap), are corrupt.
  double max_corrupt_fraction = 0.001;
  int64_t max_corrupt_records = -1;
  // Split .rec files by bytes even where .idx files exist (an .idx that
  // does not match its .rec is otherwise an error naming both).
  bool ignore_index = false;
  int64_t num_examples = 0;  // 0: the training set's size.
  int disp_batches = 20;
  std::string model_prefix;
  int save_period = 1;
  int load_epoch = 0;  // > 0: resume from PREFIX-%04d.params.
  bool test_io = false;
  bool benchmark = false;
  // Training-time augmentation and normalization (MXNet's ImageRecordIter
  // semantics: data::AugmentOptions; mean/std from --rgb_mean/--rgb_std in
  // pixel units, the aspect-ratio range resolved by AspectRatioRange()).
  // The output size comes from image_shape; validation uses only resize
  // and the normalization (see AugmentFor()).
  data::AugmentOptions augment = DefaultAugment();
  // Shuffle the training part every epoch (validation is never shuffled).
  bool shuffle = true;
  // "xavier" (fit.py's default), "msra" or "normal"; nn::Initialize.
  std::string initializer = "xavier";
  // Top-k accuracy metric: 0 off, else k in [2, num_classes].
  int top_k = 0;
  // Devices: --gpus (empty: CPU) or cpu_devices replicas on the CPU; the
  // per-worker batch_size is split evenly across them.
  std::vector<int> gpus;
  int cpu_devices = 1;
  // Push each layer's gradients as soon as backward produces them and wait
  // for a layer's new weights only when the next forward reaches it (one
  // device only; with several, the gradients are pushed after backward).
  bool overlap = true;
  // Tensor fusion: gradients ready together are pushed as one
  // KVStore::PushPullGroup once they add up to this many bytes (and the
  // rest when backward ends), instead of one PushPull per parameter. 0: one
  // per parameter. The default, 4 MiB, is BytePS's partition size and our
  // message size (KVStoreOptions::max_message_bytes).
  int64_t fusion_bytes = int64_t{4} << 20;
  // The largest gradient fused, in bytes (0: no limit): a bigger one is
  // pushed alone as soon as backward produces it (and sliced by the
  // KVStore), so that it neither waits for later arrays to fill a group
  // nor holds a group's small arrays back. Where links are the bottleneck
  // 1 MiB beats both fusing everything and --fusion_bytes 0; on one 2-core
  // machine, where the server computes beside the worker, it costs (README,
  // "Priority and slicing").
  int64_t fusion_max_array_bytes = 0;
  // "pstrain", or "mxnet": behave as MXNet 1.x's KVStore with ps-lite's
  // ZeroMQ van (small arrays on server (key * 9973) % servers, no fusion,
  // no priorities on the wire, local reduce of a key on one device).
  std::string kvstore_mode = "pstrain";
  // --benchmark with emulated devices (worker/emulation.h): a device
  // profile; the devices (--gpus, or --cpu_devices) only sleep for its
  // times. Empty: real devices.
  std::string emulate_device;
  // Emulated devices' local reduce: "one_device" or "partitioned"; empty:
  // one_device in mxnet mode, else partitioned.
  std::string local_reduce;
  // Emulated devices' copies: "overlap", "stall_all" or "per_device"
  // (worker/emulation.h); empty: per_device in mxnet mode, else overlap.
  std::string emulate_copies;
  // Every emulated time is multiplied by this (>= 1; only with
  // emulate_device), and the reported images/s multiplied back.
  double time_dilation = 1;
  // --benchmark: batches before the timed ones of the "benchmark:" line.
  int warmup_batches = 2;
  uint32_t seed = 1;
  // For tests of straggler detection: the worker of rank slow_worker_rank
  // (-1: none) sleeps slow_worker_ms in every batch's data wait.
  int slow_worker_rank = -1;
  int slow_worker_ms = 0;
  // Job checkpoints and resuming from one (worker/recovery.h); its prefix
  // is set from model_prefix's file name when that is given.
  RecoveryOptions recovery;
};

// Builds the network `options` ask for (--symbol, else --network) for a
// batch size: nn::ImportSymbolFile's or nn::BuildNetwork's errors.
nn::NetworkFactory NetworkFactoryFor(const TrainerOptions& options);

// Trains; returns the process exit code (0 on success), errors logged.
int Train(const TrainerOptions& options);

// Whether a training step of --batch_size fits in this machine's memory
// (CheckBatchMemory, from a network built for one sample, before anything
// of the batch's size is allocated): ResourceExhausted naming --batch_size
// and the sizes when not; BuildNetwork's errors. Call before Train().
absl::Status CheckBatchFits(const TrainerOptions& options);

// --dry_run: the options were validated; builds the network (batch 1, one
// device) to check its name and shape and that the batch fits in memory
// (as CheckBatchFits), and prints a summary. Returns 0, 3 (error printed)
// when the network cannot be built, or 2 when the batch does not fit.
// Starts no threads and joins no job.
int DryRun(const TrainerOptions& options);

}  // namespace worker
}  // namespace pstrain

#endif  // PSTRAIN_WORKER_TRAINER_H_
