#include "worker/options.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "util/status.h"

namespace pstrain {
namespace worker {
namespace {

template <typename T>
absl::Status Bad(absl::string_view flag, const T& value,
                 absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("--", flag, " ", value, ": ", why));
}

// InvalidArgument naming `flag` unless lo <= value <= hi.
template <typename T>
absl::Status InRange(absl::string_view flag, T value, T lo, T hi) {
  if (value >= lo && value <= hi) return absl::OkStatus();
  return Bad(flag, value, absl::StrCat("must be in [", lo, ", ", hi, "]"));
}

template <typename T>
absl::Status AtLeast(absl::string_view flag, T value, T lo) {
  if (value >= lo) return absl::OkStatus();
  return Bad(flag, value, absl::StrCat("must be >= ", lo));
}

// The aspect-ratio range of --random_resized_crop (MXNet's rule: without a
// minimum, [1 - max, 1 + max]).
std::pair<float, float> AspectRange(const TrainerOptions& o) {
  if (o.min_random_aspect_ratio > 0) {
    return {o.min_random_aspect_ratio, o.max_random_aspect_ratio};
  }
  return {1.0f - o.max_random_aspect_ratio, 1.0f + o.max_random_aspect_ratio};
}

absl::Status ValidateAugmentation(const TrainerOptions& o) {
  PSTRAIN_RETURN_IF_ERROR(AtLeast("resize", o.resize, -1));
  PSTRAIN_RETURN_IF_ERROR(AtLeast("pad", o.pad, 0));
  PSTRAIN_RETURN_IF_ERROR(InRange("fill_value", o.fill_value, 0, 255));
  if (!(o.min_random_area > 0 && o.min_random_area <= 1)) {
    return Bad("min_random_area", o.min_random_area, "must be in (0, 1]");
  }
  PSTRAIN_RETURN_IF_ERROR(
      InRange("max_random_area", o.max_random_area, o.min_random_area, 1.0f));
  PSTRAIN_RETURN_IF_ERROR(
      AtLeast("min_random_aspect_ratio", o.min_random_aspect_ratio, 0.0f));
  const auto [lo, hi] = AspectRange(o);
  if (o.min_random_aspect_ratio > 0 && hi < lo) {
    return Bad("max_random_aspect_ratio", o.max_random_aspect_ratio,
               absl::StrCat("must be >= --min_random_aspect_ratio ",
                            o.min_random_aspect_ratio));
  }
  if (o.min_random_aspect_ratio == 0 && !(lo > 0)) {
    return Bad(
        "max_random_aspect_ratio", o.max_random_aspect_ratio,
        "must be in [0, 1) without --min_random_aspect_ratio (the range is "
        "[1 - max, 1 + max])");
  }
  PSTRAIN_RETURN_IF_ERROR(InRange("brightness", o.brightness, 0.0f, 1.0f));
  PSTRAIN_RETURN_IF_ERROR(InRange("contrast", o.contrast, 0.0f, 1.0f));
  PSTRAIN_RETURN_IF_ERROR(InRange("saturation", o.saturation, 0.0f, 1.0f));
  PSTRAIN_RETURN_IF_ERROR(InRange("max_random_h", o.max_random_h, 0, 180));
  PSTRAIN_RETURN_IF_ERROR(InRange("max_random_s", o.max_random_s, 0, 255));
  PSTRAIN_RETURN_IF_ERROR(InRange("max_random_l", o.max_random_l, 0, 255));
  for (int c = 0; c < 3; ++c) {
    if (!(o.rgb_std[c] != 0 && std::isfinite(o.rgb_std[c]))) {
      return Bad("rgb_std", o.rgb_std[c], "must be a non-zero number");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateDevices(const TrainerOptions& o) {
  PSTRAIN_RETURN_IF_ERROR(AtLeast("cpu_devices", o.cpu_devices, 1));
  const std::string gpus = absl::StrJoin(o.gpus, ",");
  if (!o.gpus.empty() && o.cpu_devices != 1) {
    return Bad("cpu_devices", o.cpu_devices,
               absl::StrCat("cannot be combined with --gpus ", gpus));
  }
  std::set<int> seen;
  for (int g : o.gpus) {
    if (g < 0 || !seen.insert(g).second) {
      return Bad("gpus", gpus, "must list distinct device numbers >= 0");
    }
  }
  const int devices = NumDevices(o);
  if (o.batch_size % devices != 0) {
    return Bad(
        "batch_size", o.batch_size,
        absl::StrCat("does not split evenly over ", devices, " devices (",
                     o.gpus.empty() ? "--cpu_devices" : "--gpus", ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<double>> ParseNumbers(absl::string_view flag,
                                                 absl::string_view text) {
  std::vector<double> out;
  for (absl::string_view p :
       absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    double v;
    if (!absl::SimpleAtod(p, &v))
      return Bad(flag, text, absl::StrCat("'", p, "' is not a number"));
    out.push_back(v);
  }
  return out;
}

absl::StatusOr<std::vector<int>> ParseInts(absl::string_view flag,
                                           absl::string_view text) {
  std::vector<int> out;
  for (absl::string_view p :
       absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int v;
    if (!absl::SimpleAtoi(p, &v))
      return Bad(flag, text, absl::StrCat("'", p, "' is not an integer"));
    out.push_back(v);
  }
  return out;
}

int NumDevices(const TrainerOptions& o) {
  return o.gpus.empty() ? std::max(1, o.cpu_devices)
                        : static_cast<int>(o.gpus.size());
}

absl::Status ValidateTrainerOptions(const TrainerOptions& o) {
  if (o.network.empty()) return Bad("network", "''", "names no network");
  PSTRAIN_RETURN_IF_ERROR(AtLeast("num_layers", o.num_layers, 0));
  PSTRAIN_RETURN_IF_ERROR(AtLeast("num_classes", o.num_classes, 2));
  const std::string shape = absl::StrJoin(o.image_shape, ",");
  if (o.image_shape.size() != 3 ||
      std::any_of(o.image_shape.begin(), o.image_shape.end(),
                  [](int64_t d) { return d <= 0; })) {
    return Bad("image_shape", shape, "must be three positive numbers C,H,W");
  }
  if (o.image_shape[0] != 1 && o.image_shape[0] != 3) {
    return Bad("image_shape", shape, "must have 1 or 3 channels");
  }
  PSTRAIN_RETURN_IF_ERROR(AtLeast("batch_size", o.batch_size, 1));
  PSTRAIN_RETURN_IF_ERROR(ValidateDevices(o));
  PSTRAIN_RETURN_IF_ERROR(AtLeast("num_epochs", o.num_epochs, 1));
  if (!(o.lr > 0)) return Bad("lr", o.lr, "must be > 0");
  if (!(o.lr_factor > 0)) return Bad("lr_factor", o.lr_factor, "must be > 0");
  for (int e : o.lr_step_epochs) {
    if (e <= 0)
      return Bad("lr_step_epochs", absl::StrJoin(o.lr_step_epochs, ","),
                 "must be > 0");
  }
  if (o.optimizer != "sgd" && o.optimizer != "nag" && o.optimizer != "adam") {
    return Bad("optimizer", o.optimizer, "must be sgd, nag or adam");
  }
  if (!(o.mom >= 0 && o.mom < 1)) return Bad("mom", o.mom, "must be in [0, 1)");
  if (!(o.wd >= 0)) return Bad("wd", o.wd, "must be >= 0");
  static const std::set<std::string> kKvStores = {
      "local", "device", "dist_sync", "dist_async", "dist_device_sync"};
  if (kKvStores.count(o.kv_store) == 0) {
    return Bad(
        "kv_store", o.kv_store,
        "must be local, device, dist_sync, dist_async or dist_device_sync");
  }
  PSTRAIN_RETURN_IF_ERROR(AtLeast("data_nthreads", o.data_nthreads, 1));
  PSTRAIN_RETURN_IF_ERROR(AtLeast<int64_t>("num_examples", o.num_examples, 0));
  PSTRAIN_RETURN_IF_ERROR(AtLeast("disp_batches", o.disp_batches, 1));
  PSTRAIN_RETURN_IF_ERROR(AtLeast("save_period", o.save_period, 1));
  PSTRAIN_RETURN_IF_ERROR(AtLeast("load_epoch", o.load_epoch, 0));
  if (o.load_epoch > 0 && o.model_prefix.empty()) {
    return Bad("load_epoch", o.load_epoch, "needs --model_prefix");
  }
  if (o.initializer != "xavier" && o.initializer != "default" &&
      o.initializer != "msra" && o.initializer != "normal") {
    return Bad("initializer", o.initializer,
               "unknown; use xavier (the default), msra or normal");
  }
  if (o.top_k != 0 && (o.top_k < 2 || o.top_k > o.num_classes)) {
    return Bad("top_k", o.top_k,
               absl::StrCat("must be 0 (off) or in [2, --num_classes ",
                            o.num_classes, "]"));
  }
  return ValidateAugmentation(o);
}

absl::Status CheckDevices(const TrainerOptions& o) {
  if (o.gpus.empty()) return absl::OkStatus();
#ifdef PSTRAIN_WORKER_CUDA
  return absl::FailedPreconditionError(
      absl::StrCat("--gpus ", absl::StrJoin(o.gpus, ","),
                   ": GPU training is not implemented yet (the layers run on "
                   "the CPU); leave --gpus "
                   "empty, and use --cpu_devices N for N CPU replicas"));
#else
  return absl::FailedPreconditionError(
      absl::StrCat("--gpus ", absl::StrJoin(o.gpus, ","),
                   ": this worker was built without CUDA (build with bazel "
                   "build --config=cuda); leave "
                   "--gpus empty to train on the CPU, and use --cpu_devices N "
                   "for N CPU replicas"));
#endif
}

data::AugmentOptions AugmentFor(const TrainerOptions& o, bool train) {
  data::AugmentOptions a;
  a.channels = static_cast<int>(o.image_shape[0]);
  a.height = static_cast<int>(o.image_shape[1]);
  a.width = static_cast<int>(o.image_shape[2]);
  a.resize = o.resize;
  a.scale = o.scale;
  for (int c = 0; c < 3; ++c) {
    a.mean[c] = o.rgb_mean[c];  // Pixel units, as MXNet's --rgb-mean.
    a.std[c] = o.rgb_std[c];
  }
  if (!train) return a;
  a.pad = o.pad;
  a.fill_value = o.fill_value;
  a.rand_mirror = o.rand_mirror;
  a.rand_crop = o.rand_crop;
  a.random_resized_crop = o.random_resized_crop;
  a.min_random_area = o.min_random_area;
  a.max_random_area = o.max_random_area;
  std::tie(a.min_aspect_ratio, a.max_aspect_ratio) = AspectRange(o);
  a.brightness = o.brightness;
  a.contrast = o.contrast;
  a.saturation = o.saturation;
  a.random_h = o.max_random_h;
  a.random_s = o.max_random_s;
  a.random_l = o.max_random_l;
  return a;
}

}  // namespace worker
}  // namespace pstrain
