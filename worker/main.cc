// worker: trains a CNN data-parallel through the KVStore, with the options
// of MXNet's train_imagenet.py / fit.py (dashed spelling accepted).
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "util/token.h"
#include "util/flags.h"
#include "worker/trainer.h"

DEFINE_string(network, "lenet", "Network: mlp, lenet.");
DEFINE_int32(num_layers, 0, "Depth, for networks that have variants.");
DEFINE_int32(num_classes, 10, "Classes.");
DEFINE_string(image_shape, "1,28,28", "Input C,H,W.");
DEFINE_int32(batch_size, 64, "Batch per worker.");
DEFINE_int32(num_epochs, 1, "Epochs.");
DEFINE_double(lr, 0.05, "Learning rate.");
DEFINE_double(lr_factor, 0.1, "Learning-rate factor at each --lr_step_epochs epoch.");
DEFINE_string(lr_step_epochs, "", "Epochs at which the learning rate drops, comma-separated.");
DEFINE_string(optimizer, "sgd", "sgd, nag or adam.");
DEFINE_double(mom, 0.9, "Momentum.");
DEFINE_double(wd, 0.0001, "Weight decay.");
DEFINE_string(kv_store, "local", "local, device, dist_sync, dist_async, dist_device_sync.");
DEFINE_string(data_train, "", "Training .rec file or folder of .rec files.");
DEFINE_string(data_val, "", "Validation .rec file or folder.");
DEFINE_int32(data_nthreads, 2, "Decode/augment threads.");
DEFINE_int64(num_examples, 0, "Training examples per epoch (0: the data's size).");
DEFINE_int32(disp_batches, 20, "Batches between progress lines.");
DEFINE_string(model_prefix, "", "Checkpoint prefix: PREFIX-%04d.params.");
DEFINE_int32(save_period, 1, "Epochs between checkpoints.");
DEFINE_int32(load_epoch, 0, "Resume from PREFIX-<load_epoch>.params.");
DEFINE_bool(test_io, false, "Measure the data pipeline only.");
DEFINE_bool(benchmark, false, "Train on synthetic data.");
DEFINE_string(rgb_mean, "0,0,0", "Per-channel mean (pixel units), R,G,B or one value.");
DEFINE_string(rgb_std, "1,1,1", "Per-channel std (pixel units).");
DEFINE_bool(rand_mirror, false, "Random horizontal flips.");
DEFINE_bool(rand_crop, false, "Random crops.");
DEFINE_int32(pad, 0, "Padding before cropping.");
DEFINE_int32(seed, 1, "Random seed.");
// Launch-time flags (added by launch).
DEFINE_string(scheduler_address, "", "dist_*: the scheduler's host:port.");
DEFINE_string(host, "127.0.0.1", "dist_*: address to bind and advertise.");
DEFINE_int32(num_workers, 1, "dist_*: workers in the job.");
DEFINE_int32(num_servers, 1, "dist_*: servers in the job.");
DEFINE_string(token_file, "", "dist_*: file with the job token.");
DEFINE_double(heartbeat_timeout_s, 10, "dist_*: scheduler silence that ends the job.");

namespace {

std::vector<double> Numbers(const std::string& flag, const std::string& text) {
  std::vector<double> out;
  for (absl::string_view p : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    double v;
    if (!absl::SimpleAtod(p, &v)) LOG(FATAL) << "--" << flag << ": '" << p << "' is not a number";
    out.push_back(v);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("worker --network=lenet --data_train=F.rec [--data_val=F.rec] [--kv_store=...]");
  std::vector<std::string> args = pstrain::UnderscoreFlagNames({argv, argv + argc});
  std::vector<char*> cargs;
  for (auto& a : args) cargs.push_back(a.data());
  int cargc = static_cast<int>(cargs.size());
  char** cargv = cargs.data();
  gflags::ParseCommandLineFlags(&cargc, &cargv, true);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  pstrain::worker::TrainerOptions o;
  o.network = FLAGS_network;
  o.num_layers = FLAGS_num_layers;
  o.num_classes = FLAGS_num_classes;
  o.image_shape.clear();
  for (double v : Numbers("image_shape", FLAGS_image_shape)) o.image_shape.push_back(static_cast<int64_t>(v));
  if (o.image_shape.size() != 3) LOG(FATAL) << "--image_shape must be C,H,W";
  o.batch_size = FLAGS_batch_size;
  o.num_epochs = FLAGS_num_epochs;
  o.lr = FLAGS_lr;
  o.lr_factor = FLAGS_lr_factor;
  for (double v : Numbers("lr_step_epochs", FLAGS_lr_step_epochs)) o.lr_step_epochs.push_back(static_cast<int>(v));
  o.optimizer = FLAGS_optimizer;
  if (o.optimizer != "sgd" && o.optimizer != "nag" && o.optimizer != "adam") {
    LOG(FATAL) << "--optimizer must be sgd, nag or adam";
  }
  o.mom = FLAGS_mom;
  o.wd = FLAGS_wd;
  o.kv_store = FLAGS_kv_store;
  o.data_train = FLAGS_data_train;
  o.data_val = FLAGS_data_val;
  if (o.data_train.empty() && !FLAGS_benchmark) LOG(FATAL) << "--data_train is required (or --benchmark)";
  o.data_nthreads = FLAGS_data_nthreads;
  o.num_examples = FLAGS_num_examples;
  if (FLAGS_benchmark && o.num_examples == 0) o.num_examples = 100 * o.batch_size;
  o.disp_batches = std::max(1, FLAGS_disp_batches);
  o.model_prefix = FLAGS_model_prefix;
  o.save_period = std::max(1, FLAGS_save_period);
  o.load_epoch = FLAGS_load_epoch;
  o.test_io = FLAGS_test_io;
  o.benchmark = FLAGS_benchmark;
  auto mean = Numbers("rgb_mean", FLAGS_rgb_mean), stdv = Numbers("rgb_std", FLAGS_rgb_std);
  for (int c = 0; c < 3; ++c) {
    o.rgb_mean[c] = static_cast<float>(mean.empty() ? 0 : mean[std::min<size_t>(c, mean.size() - 1)]);
    o.rgb_std[c] = static_cast<float>(stdv.empty() ? 1 : stdv[std::min<size_t>(c, stdv.size() - 1)]);
  }
  o.rand_mirror = FLAGS_rand_mirror;
  o.rand_crop = FLAGS_rand_crop;
  o.pad = FLAGS_pad;
  o.seed = static_cast<uint32_t>(FLAGS_seed);
  auto& c = o.kv.cluster;
  c.scheduler_address = FLAGS_scheduler_address;
  c.host = FLAGS_host;
  c.num_workers = FLAGS_num_workers;
  c.num_servers = FLAGS_num_servers;
  c.heartbeat_timeout = absl::Seconds(FLAGS_heartbeat_timeout_s);
  auto token = pstrain::ReadTokenFile(FLAGS_token_file);
  if (!token.ok()) LOG(FATAL) << token.status().message();
  c.token = *token;
  return pstrain::worker::Train(o);
}
