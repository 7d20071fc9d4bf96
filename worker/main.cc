// worker: trains a CNN data-parallel through the KVStore, with the options
// of MXNet's train_imagenet.py / fit.py (dashed spelling accepted).
#include <fstream>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cluster/cluster_flags.h"
#include "cluster/node_flags.h"
#include "compression/compression.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "kvstore/partition.h"
#include "nn/symbol_import.h"
#include "transport/transport.h"
#include "util/flags.h"
#include "worker/options.h"
#include "worker/trainer.h"

DEFINE_string(
    network, "lenet",
    "Network, built by name: mlp, lenet, alexnet, vgg (--num_layers 11, 16), "
    "resnet (MXNet's symbols/resnet.py, pre-activation: 18, 34, 50, 101, 152, "
    "200, 269 for 224x224; 20, 56, 110 for 32x32), resnet_v1 "
    "(post-activation: 18, 34, 50, 101, 152; 20, 56, 110), inception-v3 "
    "(299x299), minigooglenet (32x32).");
DEFINE_string(symbol, "",
              "Train the network of this MXNet symbol JSON (PREFIX-symbol.json "
              "from save_checkpoint or a Gluon export) instead of --network. "
              "Its operators and attributes must be ones pstrain computes "
              "exactly; anything else is an error naming the node.");
DEFINE_int32(num_layers, 0, "Depth, for networks that have variants.");
DEFINE_int32(num_classes, 10,
             "Classes. With --symbol, the default is the symbol's; a "
             "different number replaces its last FullyConnected layer with a "
             "freshly initialized one (fine-tuning).");
DEFINE_string(pretrained, "",
              "PREFIX,EPOCH: start a new job from PREFIX-EPOCH.params, "
              "loaded by name; the classifier's arrays are skipped when "
              "--num_classes differs (MXNet's fine-tune.py).");
DEFINE_string(fixed_params, "",
              "POSIX extended regex: parameters whose whole name matches are "
              "frozen (no gradient pushed, never updated), e.g. "
              "'conv.*|bn.*'.");
DEFINE_string(image_shape, "1,28,28", "Input C,H,W.");
DEFINE_int32(batch_size, 64, "Batch per worker.");
DEFINE_int32(num_epochs, 1, "Epochs.");
DEFINE_double(lr, 0.05, "Learning rate.");
DEFINE_double(lr_factor, 0.1,
              "Learning-rate factor at each --lr_step_epochs epoch.");
DEFINE_string(lr_step_epochs, "",
              "Epochs at which the learning rate drops, comma-separated.");
DEFINE_string(optimizer, "sgd", "sgd, nag or adam.");
DEFINE_double(mom, 0.9, "Momentum.");
DEFINE_double(wd, 0.0001, "Weight decay.");
DEFINE_string(kv_store, "local",
              "local, device, dist_sync, dist_async, dist_device_sync.");
DEFINE_string(data_train, "", "Training .rec file or folder of .rec files.");
DEFINE_string(data_val, "", "Validation .rec file or folder.");
DEFINE_int32(data_nthreads, 2, "Decode/augment threads.");
DEFINE_double(max_corrupt_fraction, 0.001,
              "Stop when more than this fraction of the records of this "
              "worker's part of --data_train (or --data_val) are corrupt "
              "(unreadable or undecodable; counted over the whole part, so "
              "checked after every batch); 0: none tolerated, 1: no limit. A "
              ".rec that ends inside a record lost an unknown number of "
              "records: only 1 (without --max_corrupt_records) reads on.");
DEFINE_int64(max_corrupt_records, -1,
             "Also stop when more than this many records of the part are "
             "corrupt; -1: no cap.");
DEFINE_bool(ignore_index, false,
            "Split .rec files by bytes (and scan them) even where .idx files "
            "exist; without it, an .idx that does not match its .rec stops "
            "the worker, naming both.");
DEFINE_int64(num_examples, 0,
             "Training examples per epoch (0: the data's size).");
DEFINE_int32(disp_batches, 20, "Batches between progress lines.");
DEFINE_string(model_prefix, "", "Checkpoint prefix: PREFIX-%04d.params.");
DEFINE_int32(save_period, 1, "Epochs between checkpoints.");
DEFINE_string(checkpoint_dir, "",
              "Job checkpoints (servers' slices with their optimizer state, "
              "every worker's data position, random state and batch-norm "
              "statistics, under one MANIFEST) go to DIR/step-N; a "
              "filesystem every host reaches. Empty: none.");
DEFINE_int64(checkpoint_period_batches, 0,
             "A job checkpoint every this many steps (0: none), besides one "
             "at every epoch end.");
DEFINE_double(checkpoint_period_s, 0,
              "A job checkpoint at the first step at which worker 0 finds "
              "this many seconds passed since the last one (0: none).");
DEFINE_int32(checkpoint_keep, 0,
             "Keep only the newest this many complete checkpoints (0: all).");
DEFINE_string(resume_from, "",
              "A checkpoint folder (DIR/step-N) to continue from exactly "
              "where it was taken; launch --max_restarts passes it.");
DEFINE_int64(test_die_at_step, 0,
             "Tests only: the worker of rank --test_die_rank kills itself "
             "(SIGKILL) after this step unless it resumed (0: never).");
DEFINE_int32(test_die_rank, 1, "Tests only: see --test_die_at_step.");
DEFINE_int32(replace_rank, -1,
             "launch --recovery=replace passes it: this worker replaces dead "
             "worker rank N of the running job (dist_sync): it takes the "
             "rank, pulls the current weights and continues at the current "
             "step. -1: an ordinary worker.");
DEFINE_int64(replace_since_us, 0,
             "launch --recovery=replace passes it: when launch saw the "
             "replaced worker die (its clock, microseconds since the Unix "
             "epoch), for the log line of the time until training again.");
DEFINE_int64(test_die_mid_push_step, 0,
             "Tests only: the worker of rank --test_die_rank sends its "
             "pushes of this step to server rank 0 only, then kills itself "
             "(SIGKILL); never a replacement (0: never).");
DEFINE_bool(test_replacement_fails, false,
            "Tests only: a replacement (--replace_rank) exits 1 at once.");
DEFINE_int32(load_epoch, 0, "Resume from PREFIX-<load_epoch>.params.");
DEFINE_bool(test_io, false, "Measure the data pipeline only.");
DEFINE_bool(benchmark, false, "Train on synthetic data.");
DEFINE_string(rgb_mean, "0,0,0",
              "Per-channel mean (pixel units), R,G,B or one value.");
DEFINE_string(rgb_std, "1,1,1", "Per-channel std (pixel units).");
DEFINE_bool(rand_mirror, false, "Random horizontal flips.");
DEFINE_bool(rand_crop, false, "Random crops.");
DEFINE_int32(pad, 0, "Padding before cropping.");
DEFINE_int32(fill_value, 127, "Pixel value of the --pad border, 0-255.");
DEFINE_int32(resize, 0,
             "Resize the shorter edge to this many pixels first (<= 0: off).");
DEFINE_bool(random_resized_crop, false,
            "Inception-style crop: random area and aspect ratio.");
DEFINE_double(min_random_area, 1,
              "--random_resized_crop: minimum area fraction, (0, 1].");
DEFINE_double(max_random_area, 1,
              "--random_resized_crop: maximum area fraction, (0, 1].");
DEFINE_double(min_random_aspect_ratio, 0,
              "--random_resized_crop: minimum aspect ratio (0: MXNet's None, "
              "the range is "
              "[1 - max, 1 + max]).");
DEFINE_double(max_random_aspect_ratio, 0,
              "--random_resized_crop: maximum aspect ratio.");
DEFINE_double(brightness, 0,
              "Brightness jitter: factor in [1 - x, 1 + x], x in [0, 1].");
DEFINE_double(contrast, 0, "Contrast jitter, x in [0, 1].");
DEFINE_double(saturation, 0, "Saturation jitter, x in [0, 1].");
DEFINE_int32(max_random_h, 0,
             "HLS hue jitter in [-x, x] (OpenCV units, 0-180).");
DEFINE_int32(max_random_s, 0, "HLS saturation jitter in [-x, x] (0-255).");
DEFINE_int32(max_random_l, 0, "HLS lightness jitter in [-x, x] (0-255).");
DEFINE_bool(shuffle, true, "Shuffle the training part every epoch.");
DEFINE_string(
    initializer, "xavier",
    "xavier (fit.py's default), msra or normal (N(0, 0.01) weights).");
DEFINE_int32(top_k, 0, "Also report top-k accuracy (0: off).");
DEFINE_string(gpus, "",
              "GPUs, e.g. 0,1,2,3 (empty: CPU). Needs a --config=cuda build.");
DEFINE_int32(cpu_devices, 1,
             "CPU replicas in this worker; --batch_size is split across them.");
DEFINE_bool(
    overlap, true,
    "Push each layer's gradients during backward and wait for its weights only "
    "when the "
    "next forward reaches it (one device); false: push after backward.");
DEFINE_int64(fusion_bytes, 4 << 20,
             "Tensor fusion: push gradients ready together as one request once "
             "they add up to "
             "this many bytes (the rest when backward ends); 0: one request "
             "per parameter.");
DEFINE_int64(fusion_max_array_bytes, 0,
             "Tensor fusion: a gradient larger than this many bytes is never "
             "fused but pushed alone as soon as it is ready (the KVStore "
             "slices it), after the smaller ones ready before it; 0: no "
             "limit. 1048576 where the links between hosts are the "
             "bottleneck.");
DEFINE_string(kvstore_mode, "pstrain",
              "pstrain, or mxnet: behave as MXNet 1.x's KVStore with ps-lite's "
              "ZeroMQ van (small arrays on server (key * 9973) % servers, one "
              "request per key, no priorities, local reduce on one device).");
DEFINE_string(emulate_device, "",
              "With --benchmark: a device profile (JSON, configs/profiles/); "
              "the devices (--gpus or --cpu_devices) are emulated: their "
              "forward, backward and copies sleep for the profile's times.");
DEFINE_string(local_reduce, "",
              "Emulated devices' local reduce: one_device or partitioned "
              "(default: one_device in mxnet mode, else partitioned).");
DEFINE_string(emulate_copies, "",
              "Emulated devices' copies: per_device (a copy queue per device "
              "sharing the links, the input copied when the forward starts), "
              "overlap (one copy engine beside compute, the input prefetched "
              "as uint8) or stall_all (every device waits for every copy); "
              "default: per_device in mxnet mode, else overlap.");
DEFINE_double(time_dilation, 1,
              "Multiply every emulated time by this (>= 1) and the reported "
              "images/s back, so the real network and CPUs keep pace.");
DEFINE_int32(warmup_batches, 2,
             "--benchmark: batches before the timed ones of the final "
             "'benchmark:' line.");
DEFINE_string(gradient_compression, "",
              "Gradient compression of pushes, MXNet's syntax: "
              "type=2bit,threshold=0.5 (MXNet's 2-bit quantisation with "
              "error feedback), type=fp16 (pushes and pulls in half "
              "precision), type=onebit (BytePS's sign and mean magnitude, "
              "error feedback); empty or type=none: off. dist_* stores only; "
              "every worker of a job must pass the same.");
DEFINE_int64(gc_min_bytes, 64 << 10,
             "Arrays smaller than this many bytes (as float32) travel "
             "uncompressed under --gradient_compression.");
DEFINE_int64(slice_bytes, 4 << 20,
             "dist_*: a server's slice of an array travels in parts of at most "
             "this many bytes, each its own request, so a small high-priority "
             "array (the first layers) goes between the parts of a big one; "
             "0: parts of max_message_bytes (4 MiB). Every worker of a job "
             "must pass the same.");
DEFINE_int64(bigarray_bound, 1000000,
             "dist_*: arrays of more than this many elements are split over "
             "the servers (see --partition), smaller ones go whole to the "
             "least loaded server (MXNet's MXNET_KVSTORE_BIGARRAY_BOUND, same "
             "default). Lower it when a few big arrays would load one "
             "server's link more than the others'. Every worker of a job "
             "must pass the same.");
DEFINE_string(partition, "levelled",
              "dist_*, --kvstore_mode=pstrain: how keys are split over the "
              "servers. levelled: small arrays to the least loaded server, "
              "largest first, then big ones (--bigarray_bound) split so that "
              "the servers end even; even: big arrays split evenly over all "
              "servers, keys in order (pstrain before 2026-12-07). A job "
              "resumed with --resume_from keeps its checkpoint's partition "
              "(even where the checkpoint records none), whatever this says. "
              "Every worker of a job must pass the same.");
DEFINE_int64(send_credit_bytes, 0,
             "dist_*: at most this many bytes of pushes per server not yet "
             "received there; the rest waits in priority order (first layers "
             "first) in the worker. 0: off (everything goes to the transport "
             "at once).");
DEFINE_bool(dry_run, false,
            "Check the flags and build the network, then exit.");
DEFINE_int32(seed, 1, "Random seed.");
DEFINE_string(test_slow_worker, "",
              "For tests of straggler detection: RANK:MS makes the worker of "
              "rank RANK sleep MS milliseconds in every batch's data wait. "
              "Empty: off.");
namespace {

constexpr char kProgram[] = "worker";

// A bad flag value ends the worker with one line and exit code 2.
template <typename T>
T OrExit(absl::StatusOr<T> v) {
  if (!v.ok()) pstrain::ExitWithError(kProgram, v.status().message());
  return *std::move(v);
}

// Per-channel values: one number for all three channels, or R,G,B.
void ChannelValues(const char* flag, const std::string& text, float fallback,
                   float* out) {
  absl::Status s =
      pstrain::worker::ParseChannelValues(flag, text, fallback, out);
  if (!s.ok()) pstrain::ExitWithError(kProgram, s.message());
}

}  // namespace

int main(int argc, char** argv) {
  pstrain::ParseFlagsOrExit(
      {kProgram,
       "worker --network=lenet --data_train=F.rec [--data_val=F.rec] "
       "[--kv_store=...]\n"
       "Trains a CNN data-parallel with the options of MXNet's "
       "train_imagenet.py / fit.py\n(dashed spellings too), usually from a "
       "job's flag file: --flagfile=configs/JOB.flags.\nlaunch adds the "
       "cluster flags, or MXNet's DMLC_* variables give them (see "
       "scheduler --help).",
       {{__FILE__, "Flags"},
        pstrain::cluster::ClusterFlagGroup(),
        pstrain::cluster::NodeFlagGroup()}},
      {argv, argv + argc});
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  pstrain::cluster::ApplyEnvironmentOrExit(kProgram, pstrain::proto::WORKER);
  if (!pstrain::transport::TuneMallocForMessages()) {
    LOG(WARNING) << "could not tune malloc for message buffers (not glibc?)";
  }
  using pstrain::worker::ParseInts;
  pstrain::worker::TrainerOptions o;
  o.network = FLAGS_network;
  o.symbol = FLAGS_symbol;
  o.pretrained = FLAGS_pretrained;
  o.fixed_params = FLAGS_fixed_params;
  o.num_layers = FLAGS_num_layers;
  o.num_classes = FLAGS_num_classes;
  std::vector<int> shape = OrExit(ParseInts("image_shape", FLAGS_image_shape));
  o.image_shape.assign(shape.begin(), shape.end());
  if (!o.symbol.empty() &&
      gflags::GetCommandLineFlagInfoOrDie("num_classes").is_default) {
    // The symbol's own class count.
    auto net =
        OrExit(pstrain::nn::ImportSymbolFile(o.symbol, o.image_shape, 1));
    o.num_classes = net->num_classes();
  }
  o.batch_size = FLAGS_batch_size;
  o.num_epochs = FLAGS_num_epochs;
  o.lr = FLAGS_lr;
  o.lr_factor = FLAGS_lr_factor;
  o.lr_step_epochs = OrExit(ParseInts("lr_step_epochs", FLAGS_lr_step_epochs));
  o.optimizer = FLAGS_optimizer;
  o.mom = FLAGS_mom;
  o.wd = FLAGS_wd;
  o.kv_store = FLAGS_kv_store;
  o.data_train = FLAGS_data_train;
  o.data_val = FLAGS_data_val;
  if (o.data_train.empty() && !FLAGS_benchmark && !FLAGS_dry_run) {
    pstrain::ExitWithError(kProgram,
                           "--data_train '': required (or --benchmark)");
  }
  o.data_nthreads = FLAGS_data_nthreads;
  o.max_corrupt_fraction = FLAGS_max_corrupt_fraction;
  o.max_corrupt_records = FLAGS_max_corrupt_records;
  o.ignore_index = FLAGS_ignore_index;
  o.num_examples = FLAGS_num_examples;
  if (FLAGS_benchmark && o.num_examples == 0) {
    o.num_examples = 100 * int64_t{o.batch_size};
  }
  o.disp_batches = FLAGS_disp_batches;
  o.model_prefix = FLAGS_model_prefix;
  o.save_period = FLAGS_save_period;
  o.load_epoch = FLAGS_load_epoch;
  pstrain::worker::RecoveryOptions& r = o.recovery;
  r.checkpoint_dir = FLAGS_checkpoint_dir;
  r.period_batches = FLAGS_checkpoint_period_batches;
  r.period_s = FLAGS_checkpoint_period_s;
  r.keep = FLAGS_checkpoint_keep;
  r.resume_from = FLAGS_resume_from;
  r.test_die_at_step = FLAGS_test_die_at_step;
  r.test_die_rank = FLAGS_test_die_rank;
  r.replace_rank = FLAGS_replace_rank;
  r.replace_since_us = FLAGS_replace_since_us;
  if (FLAGS_replace_rank < -1) {
    pstrain::ExitWithError(kProgram,
                           pstrain::BadFlag("replace_rank", FLAGS_replace_rank,
                                            "must be >= 0 (-1: none)")
                               .message());
  }
  if (FLAGS_replace_rank >= 0 && FLAGS_test_replacement_fails) {
    LOG(ERROR) << "--test_replacement_fails: replacement of worker rank "
               << FLAGS_replace_rank << " exits 1";
    return 1;
  }
  if (!o.model_prefix.empty()) {
    r.prefix = o.model_prefix.substr(o.model_prefix.find_last_of('/') + 1);
  }
  o.test_io = FLAGS_test_io;
  o.benchmark = FLAGS_benchmark;
  pstrain::data::AugmentOptions& a = o.augment;
  ChannelValues("rgb_mean", FLAGS_rgb_mean, 0, a.mean);
  ChannelValues("rgb_std", FLAGS_rgb_std, 1, a.std);
  a.rand_mirror = FLAGS_rand_mirror;
  a.rand_crop = FLAGS_rand_crop;
  a.pad = FLAGS_pad;
  a.fill_value = FLAGS_fill_value;
  a.resize = FLAGS_resize;
  a.random_resized_crop = FLAGS_random_resized_crop;
  a.min_random_area = static_cast<float>(FLAGS_min_random_area);
  a.max_random_area = static_cast<float>(FLAGS_max_random_area);
  std::tie(a.min_aspect_ratio, a.max_aspect_ratio) =
      OrExit(pstrain::worker::AspectRatioRange(FLAGS_min_random_aspect_ratio,
                                               FLAGS_max_random_aspect_ratio));
  a.brightness = static_cast<float>(FLAGS_brightness);
  a.contrast = static_cast<float>(FLAGS_contrast);
  a.saturation = static_cast<float>(FLAGS_saturation);
  a.random_h = FLAGS_max_random_h;
  a.random_s = FLAGS_max_random_s;
  a.random_l = FLAGS_max_random_l;
  o.shuffle = FLAGS_shuffle;
  o.initializer = FLAGS_initializer;
  o.top_k = FLAGS_top_k;
  o.gpus = OrExit(ParseInts("gpus", FLAGS_gpus));
  o.cpu_devices = FLAGS_cpu_devices;
  o.overlap = FLAGS_overlap;
  o.fusion_bytes = FLAGS_fusion_bytes;
  o.fusion_max_array_bytes = FLAGS_fusion_max_array_bytes;
  o.kvstore_mode = FLAGS_kvstore_mode;
  o.kv.slice_bytes = FLAGS_slice_bytes;
  o.kv.send_credit_bytes = FLAGS_send_credit_bytes;
  o.kv.bigarray_bound = FLAGS_bigarray_bound;
  if (FLAGS_partition != "levelled" && FLAGS_partition != "even") {
    pstrain::ExitWithError(
        kProgram, pstrain::BadFlag("partition", FLAGS_partition,
                                   "use levelled or even (MXNet's placement: "
                                   "--kvstore_mode=mxnet)")
                      .message());
  }
  o.kv.placement = OrExit(pstrain::kvstore::PlacementFromName(FLAGS_partition));
  o.kv.compression = OrExit(pstrain::compression::Parse(
      FLAGS_gradient_compression, FLAGS_gc_min_bytes));
  if (o.kv.compression.type() != pstrain::proto::RAW_FLOAT32 &&
      !absl::StartsWith(o.kv_store, "dist")) {
    pstrain::ExitWithError(kProgram,
                           absl::StrCat("--gradient_compression needs a dist_* "
                                        "--kv_store; --kv_store is ",
                                        o.kv_store));
  }
  o.emulate_device = FLAGS_emulate_device;
  o.local_reduce = FLAGS_local_reduce;
  o.emulate_copies = FLAGS_emulate_copies;
  o.time_dilation = FLAGS_time_dilation;
  o.warmup_batches = FLAGS_warmup_batches;
  o.seed = static_cast<uint32_t>(FLAGS_seed);
  absl::Status slow =
      pstrain::worker::ParseSlowWorker(FLAGS_test_slow_worker, &o);
  if (!slow.ok()) pstrain::ExitWithError(kProgram, slow.message());
  absl::Status valid = pstrain::worker::ValidateTrainerOptions(o);
  if (!valid.ok()) pstrain::ExitWithError(kProgram, valid.message());
  if (FLAGS_dry_run) return pstrain::worker::DryRun(o);
  absl::Status fits = pstrain::worker::CheckBatchFits(o);
  if (!fits.ok()) pstrain::ExitWithError(kProgram, fits.message());
  if (absl::StartsWith(o.kv_store, "dist")) {
    o.kv.cluster =
        OrExit(pstrain::cluster::NodeOptionsFromFlags(pstrain::proto::WORKER));
    o.kv.cluster.replace_rank = FLAGS_replace_rank;
    o.kv.test_die_mid_push_round = FLAGS_test_die_mid_push_step;
    o.kv.test_die_rank = FLAGS_test_die_rank;
  }
  return pstrain::worker::Train(o);
}
