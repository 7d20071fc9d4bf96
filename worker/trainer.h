// The worker's training loop (MXNet's fit.py): data from RecordIO through
// the decode/augment pipeline, forward/backward on the CPU kernels, gradient
// push and weight pull through the KVStore (priority by layer: the first
// layers first), MXNet-style progress lines, validation, checkpoints.
#ifndef PSTRAIN_WORKER_TRAINER_H_
#define PSTRAIN_WORKER_TRAINER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "kvstore/kvstore.h"

namespace pstrain {
namespace worker {

struct TrainerOptions {
  std::string network = "lenet";
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
  int64_t num_examples = 0;  // 0: the training set's size.
  int disp_batches = 20;
  std::string model_prefix;
  int save_period = 1;
  int load_epoch = -1;
  bool test_io = false;
  bool benchmark = false;
  // out = (pixel - rgb_mean) * scale / rgb_std, pixel units (MXNet's).
  float rgb_mean[3] = {0, 0, 0};
  float rgb_std[3] = {1, 1, 1};
  float scale = 1.0f;
  bool rand_mirror = false;
  bool rand_crop = false;
  int pad = 0;
  uint32_t seed = 1;
};

// Trains; returns the process exit code (0 on success), errors logged.
int Train(const TrainerOptions& options);

}  // namespace worker
}  // namespace pstrain

#endif  // PSTRAIN_WORKER_TRAINER_H_
