#include "worker/options.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "util/flags.h"
#include "util/status.h"
#include "worker/finetune.h"

namespace pstrain {
namespace worker {
namespace {

// InvalidArgument naming `flag` unless lo <= value <= hi.
template <typename T>
absl::Status InRange(absl::string_view flag, T value, T lo, T hi) {
  if (value >= lo && value <= hi) return absl::OkStatus();
  return BadFlag(flag, value, absl::StrCat("must be in [", lo, ", ", hi, "]"));
}

template <typename T>
absl::Status AtLeast(absl::string_view flag, T value, T lo) {
  if (value >= lo) return absl::OkStatus();
  return BadFlag(flag, value, absl::StrCat("must be >= ", lo));
}

absl::Status ValidateAugmentation(const data::AugmentOptions& a) {
  PSTRAIN_RETURN_IF_ERROR(AtLeast("resize", a.resize, -1));
  PSTRAIN_RETURN_IF_ERROR(AtLeast("pad", a.pad, 0));
  PSTRAIN_RETURN_IF_ERROR(InRange("fill_value", a.fill_value, 0, 255));
  if (!(a.min_random_area > 0 && a.min_random_area <= 1)) {
    return BadFlag("min_random_area", a.min_random_area, "must be in (0, 1]");
  }
  PSTRAIN_RETURN_IF_ERROR(
      InRange("max_random_area", a.max_random_area, a.min_random_area, 1.0f));
  if (!(a.min_aspect_ratio > 0 && a.min_aspect_ratio <= a.max_aspect_ratio)) {
    return BadFlag("min_random_aspect_ratio",
                   absl::StrCat(a.min_aspect_ratio, " (range up to ",
                                a.max_aspect_ratio, ")"),
                   "need 0 < min <= max");
  }
  PSTRAIN_RETURN_IF_ERROR(InRange("brightness", a.brightness, 0.0f, 1.0f));
  PSTRAIN_RETURN_IF_ERROR(InRange("contrast", a.contrast, 0.0f, 1.0f));
  PSTRAIN_RETURN_IF_ERROR(InRange("saturation", a.saturation, 0.0f, 1.0f));
  PSTRAIN_RETURN_IF_ERROR(InRange("max_random_h", a.random_h, 0, 180));
  PSTRAIN_RETURN_IF_ERROR(InRange("max_random_s", a.random_s, 0, 255));
  PSTRAIN_RETURN_IF_ERROR(InRange("max_random_l", a.random_l, 0, 255));
  for (int c = 0; c < 3; ++c) {
    if (!(a.std[c] != 0 && std::isfinite(a.std[c]))) {
      return BadFlag("rgb_std", a.std[c], "must be a non-zero number");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateDevices(const TrainerOptions& o) {
  PSTRAIN_RETURN_IF_ERROR(AtLeast("cpu_devices", o.cpu_devices, 1));
  const std::string gpus = absl::StrJoin(o.gpus, ",");
  if (!o.gpus.empty() && o.cpu_devices != 1) {
    return BadFlag("cpu_devices", o.cpu_devices,
                   absl::StrCat("cannot be combined with --gpus ", gpus));
  }
  std::set<int> seen;
  for (int g : o.gpus) {
    if (g < 0 || !seen.insert(g).second) {
      return BadFlag("gpus", gpus, "must list distinct device numbers >= 0");
    }
  }
  const int devices = NumDevices(o);
  if (o.batch_size % devices != 0) {
    return BadFlag(
        "batch_size", o.batch_size,
        absl::StrCat("does not split evenly over ", devices, " devices (",
                     o.gpus.empty() ? "--cpu_devices" : "--gpus", ")"));
  }
  return absl::OkStatus();
}

// Splits `text` at commas and parses each part with `parse`.
template <typename T, typename Parse>
absl::StatusOr<std::vector<T>> ParseList(absl::string_view flag,
                                         absl::string_view text,
                                         absl::string_view what, Parse parse) {
  std::vector<T> out;
  for (absl::string_view p :
       absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    T v;
    if (!parse(p, &v)) {
      return BadFlag(flag, text, absl::StrCat("'", p, "' is not ", what));
    }
    out.push_back(v);
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<double>> ParseNumbers(absl::string_view flag,
                                                 absl::string_view text) {
  return ParseList<double>(
      flag, text, "a number",
      [](absl::string_view p, double* v) { return absl::SimpleAtod(p, v); });
}

absl::StatusOr<std::vector<int>> ParseInts(absl::string_view flag,
                                           absl::string_view text) {
  return ParseList<int>(
      flag, text, "an integer",
      [](absl::string_view p, int* v) { return absl::SimpleAtoi(p, v); });
}

absl::Status ParseSlowWorker(absl::string_view text, TrainerOptions* options) {
  if (text.empty()) return absl::OkStatus();
  const std::vector<absl::string_view> parts = absl::StrSplit(text, ':');
  int rank = -1, ms = -1;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &rank) ||
      !absl::SimpleAtoi(parts[1], &ms) || rank < 0 || ms < 0) {
    return BadFlag("test_slow_worker", text,
                   "expected RANK:MS, two integers >= 0");
  }
  options->slow_worker_rank = rank;
  options->slow_worker_ms = ms;
  return absl::OkStatus();
}

absl::StatusOr<std::pair<float, float>> AspectRatioRange(double min,
                                                         double max) {
  if (!(min >= 0))
    return BadFlag("min_random_aspect_ratio", min, "must be >= 0 (0: none)");
  if (min == 0) {
    if (!(max >= 0 && max < 1)) {
      return BadFlag(
          "max_random_aspect_ratio", max,
          "must be in [0, 1) without --min_random_aspect_ratio (the range is "
          "[1 - max, 1 + max])");
    }
    return std::make_pair(static_cast<float>(1 - max),
                          static_cast<float>(1 + max));
  }
  if (!(max >= min)) {
    return BadFlag("max_random_aspect_ratio", max,
                   absl::StrCat("must be >= --min_random_aspect_ratio ", min));
  }
  return std::make_pair(static_cast<float>(min), static_cast<float>(max));
}

namespace {

std::string Bytes(double b) {
  const char* units[] = {"bytes", "KB", "MB", "GB", "TB", "PB"};
  int u = 0;
  while (b >= 1000 && u < 5) {
    b /= 1000;
    ++u;
  }
  return u == 0 ? absl::StrCat(b, " bytes")
                : absl::StrFormat("%.1f %s", b, units[u]);
}

}  // namespace

absl::Status CheckBatchMemory(const TrainerOptions& o, const StepMemory& m,
                              int64_t available_bytes) {
  // In double: a batch of a million large images overflows no int64 here.
  const double need = static_cast<double>(m.per_sample_bytes) * o.batch_size +
                      static_cast<double>(m.fixed_bytes);
  if (need <= static_cast<double>(available_bytes)) return absl::OkStatus();
  return absl::ResourceExhaustedError(
      BadFlag("batch_size", o.batch_size,
              absl::StrCat("a training step needs at least ", Bytes(need),
                           " of memory (", Bytes(m.per_sample_bytes),
                           " per sample, plus ", Bytes(m.fixed_bytes),
                           " of parameters), more than the ",
                           Bytes(available_bytes), " this machine has"))
          .message());
}

int NumDevices(const TrainerOptions& o) {
  return o.gpus.empty() ? std::max(1, o.cpu_devices)
                        : static_cast<int>(o.gpus.size());
}

absl::Status ValidateTrainerOptions(const TrainerOptions& o) {
  if (o.network.empty()) return BadFlag("network", "", "names no network");
  PSTRAIN_RETURN_IF_ERROR(AtLeast("num_layers", o.num_layers, 0));
  PSTRAIN_RETURN_IF_ERROR(AtLeast("num_classes", o.num_classes, 2));
  const std::string shape = absl::StrJoin(o.image_shape, ",");
  if (o.image_shape.size() != 3 ||
      std::any_of(o.image_shape.begin(), o.image_shape.end(),
                  [](int64_t d) { return d <= 0; })) {
    return BadFlag("image_shape", shape,
                   "must be three positive numbers C,H,W");
  }
  if (o.image_shape[0] != 1 && o.image_shape[0] != 3) {
    return BadFlag("image_shape", shape, "must have 1 or 3 channels");
  }
  PSTRAIN_RETURN_IF_ERROR(
      InRange("batch_size", o.batch_size, 1, kMaxBatchSize));
  PSTRAIN_RETURN_IF_ERROR(ValidateDevices(o));
  PSTRAIN_RETURN_IF_ERROR(AtLeast("num_epochs", o.num_epochs, 1));
  if (!(o.lr > 0)) return BadFlag("lr", o.lr, "must be > 0");
  if (!(o.lr_factor > 0))
    return BadFlag("lr_factor", o.lr_factor, "must be > 0");
  for (int e : o.lr_step_epochs) {
    if (e <= 0)
      return BadFlag("lr_step_epochs", absl::StrJoin(o.lr_step_epochs, ","),
                     "must be > 0");
  }
  if (o.optimizer != "sgd" && o.optimizer != "nag" && o.optimizer != "adam") {
    return BadFlag("optimizer", o.optimizer, "must be sgd, nag or adam");
  }
  if (!(o.mom >= 0 && o.mom < 1))
    return BadFlag("mom", o.mom, "must be in [0, 1)");
  if (!(o.wd >= 0)) return BadFlag("wd", o.wd, "must be >= 0");
  static const std::set<std::string> kKvStores = {
      "local", "device", "dist_sync", "dist_async", "dist_device_sync"};
  if (kKvStores.count(o.kv_store) == 0) {
    return BadFlag(
        "kv_store", o.kv_store,
        "must be local, device, dist_sync, dist_async or dist_device_sync");
  }
  PSTRAIN_RETURN_IF_ERROR(AtLeast("data_nthreads", o.data_nthreads, 1));
  PSTRAIN_RETURN_IF_ERROR(
      InRange("max_corrupt_fraction", o.max_corrupt_fraction, 0.0, 1.0));
  PSTRAIN_RETURN_IF_ERROR(
      AtLeast<int64_t>("max_corrupt_records", o.max_corrupt_records, -1));
  PSTRAIN_RETURN_IF_ERROR(AtLeast<int64_t>("num_examples", o.num_examples, 0));
  PSTRAIN_RETURN_IF_ERROR(AtLeast("disp_batches", o.disp_batches, 1));
  PSTRAIN_RETURN_IF_ERROR(AtLeast("fusion_bytes", o.fusion_bytes, int64_t{0}));
  PSTRAIN_RETURN_IF_ERROR(
      AtLeast("fusion_max_array_bytes", o.fusion_max_array_bytes, int64_t{0}));
  if (o.kv.slice_bytes != 0 &&
      (o.kv.slice_bytes < 4096 || o.kv.slice_bytes > (int64_t{1} << 30))) {
    return BadFlag("slice_bytes", o.kv.slice_bytes,
                   "must be 0 (off) or in [4096, 1073741824]");
  }
  PSTRAIN_RETURN_IF_ERROR(
      AtLeast("send_credit_bytes", o.kv.send_credit_bytes, int64_t{0}));
  PSTRAIN_RETURN_IF_ERROR(
      AtLeast("bigarray_bound", o.kv.bigarray_bound, int64_t{1}));
  PSTRAIN_RETURN_IF_ERROR(AtLeast("save_period", o.save_period, 1));
  PSTRAIN_RETURN_IF_ERROR(AtLeast("load_epoch", o.load_epoch, 0));
  if (o.load_epoch > 0 && o.model_prefix.empty()) {
    return BadFlag("load_epoch", o.load_epoch, "needs --model_prefix");
  }
  const RecoveryOptions& r = o.recovery;
  PSTRAIN_RETURN_IF_ERROR(
      AtLeast<int64_t>("checkpoint_period_batches", r.period_batches, 0));
  PSTRAIN_RETURN_IF_ERROR(AtLeast("checkpoint_period_s", r.period_s, 0.0));
  PSTRAIN_RETURN_IF_ERROR(AtLeast("checkpoint_keep", r.keep, 0));
  PSTRAIN_RETURN_IF_ERROR(
      AtLeast<int64_t>("test_die_at_step", r.test_die_at_step, 0));
  if (r.checkpoint_dir.empty() &&
      (r.period_batches > 0 || r.period_s > 0 || r.keep > 0)) {
    return BadFlag(r.period_batches > 0 ? "checkpoint_period_batches"
                   : r.period_s > 0     ? "checkpoint_period_s"
                                        : "checkpoint_keep",
                   "set", "needs --checkpoint_dir");
  }
  if ((!r.checkpoint_dir.empty() || !r.resume_from.empty()) &&
      o.kv_store.rfind("dist", 0) != 0) {
    return BadFlag(
        r.checkpoint_dir.empty() ? "resume_from" : "checkpoint_dir",
        r.checkpoint_dir.empty() ? r.resume_from : r.checkpoint_dir,
        absl::StrCat("needs a dist_* --kv_store (with --kv_store ", o.kv_store,
                     " the optimizer state is in the worker, "
                     "which job checkpoints do not save yet)"));
  }
  if (r.prefix.empty()) {
    return BadFlag("model_prefix", o.model_prefix,
                   "must not end with '/' (its file name prefixes the "
                   "checkpoint's MXNet files)");
  }
  if (!o.pretrained.empty()) {
    PSTRAIN_RETURN_IF_ERROR(ParsePretrained(o.pretrained).status());
    if (o.load_epoch > 0) {
      return BadFlag("pretrained", o.pretrained,
                     "and --load_epoch both give the starting weights: "
                     "--load_epoch resumes a job, --pretrained starts a new "
                     "one from a checkpoint's weights; give one");
    }
  }
  if (o.initializer != "xavier" && o.initializer != "default" &&
      o.initializer != "msra" && o.initializer != "normal") {
    return BadFlag("initializer", o.initializer,
                   "unknown; use xavier (the default), msra or normal");
  }
  if (o.top_k != 0 && (o.top_k < 2 || o.top_k > o.num_classes)) {
    return BadFlag("top_k", o.top_k,
                   absl::StrCat("must be 0 (off) or in [2, --num_classes ",
                                o.num_classes, "]"));
  }
  if (o.kvstore_mode != "pstrain" && o.kvstore_mode != "mxnet") {
    return BadFlag("kvstore_mode", o.kvstore_mode, "use pstrain or mxnet");
  }
  if (!o.local_reduce.empty() && o.local_reduce != "one_device" &&
      o.local_reduce != "partitioned") {
    return BadFlag("local_reduce", o.local_reduce,
                   "use one_device or partitioned");
  }
  if (!o.emulate_copies.empty() && o.emulate_copies != "overlap" &&
      o.emulate_copies != "per_device" && o.emulate_copies != "stall_all") {
    return BadFlag("emulate_copies", o.emulate_copies,
                   "use overlap, per_device or stall_all");
  }
  if (!o.emulate_device.empty() && !o.benchmark) {
    return BadFlag("emulate_device", o.emulate_device,
                   "emulated devices run --benchmark only");
  }
  if (!(o.time_dilation >= 1) ||
      (o.time_dilation != 1 && o.emulate_device.empty())) {
    return BadFlag("time_dilation", o.time_dilation,
                   "must be >= 1, and 1 without --emulate_device (only "
                   "emulated times can be dilated)");
  }
  PSTRAIN_RETURN_IF_ERROR(AtLeast("warmup_batches", o.warmup_batches, 0));
  return ValidateAugmentation(o.augment);
}

absl::Status CheckDevices(const TrainerOptions& o) {
  if (o.gpus.empty()) return absl::OkStatus();
#ifdef PSTRAIN_WORKER_CUDA
  // Whether the GPUs exist is known when their contexts are created
  // (Replicas::Create reports NotFound naming the device).
  return absl::OkStatus();
#else
  return absl::FailedPreconditionError(
      absl::StrCat("--gpus ", absl::StrJoin(o.gpus, ","),
                   ": this worker was built without CUDA (build with bazel "
                   "build --config=cuda); leave "
                   "--gpus empty to train on the CPU, and use --cpu_devices N "
                   "for N CPU replicas"));
#endif
}

absl::Status ParseChannelValues(absl::string_view flag, absl::string_view text,
                                float fallback, float out[3]) {
  PSTRAIN_ASSIGN_OR_RETURN(std::vector<double> v, ParseNumbers(flag, text));
  for (int c = 0; c < 3; ++c) {
    out[c] = static_cast<float>(
        v.empty() ? fallback : v[std::min<size_t>(c, v.size() - 1)]);
  }
  return absl::OkStatus();
}

data::AugmentOptions AugmentFor(const TrainerOptions& o, bool train) {
  data::AugmentOptions a = o.augment;
  a.channels = static_cast<int>(o.image_shape[0]);
  a.height = static_cast<int>(o.image_shape[1]);
  a.width = static_cast<int>(o.image_shape[2]);
  if (train) return a;
  // Validation: resize, center crop and normalization only.
  data::AugmentOptions v = DefaultAugment();
  v.channels = a.channels;
  v.height = a.height;
  v.width = a.width;
  v.resize = a.resize;
  v.inter_method = a.inter_method;
  v.scale = a.scale;
  std::copy(a.mean, a.mean + 3, v.mean);
  std::copy(a.std, a.std + 3, v.std);
  return v;
}

}  // namespace worker
}  // namespace pstrain
