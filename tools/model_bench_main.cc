// model_bench: single-process training speed of a network on synthetic
// data (forward + backward + SGD momentum update), with a per-layer time
// breakdown and the activation memory plan. Build optimized:
//   bazel run --config=opt //tools:model_bench -- --network resnet --num_layers
//   20
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "kernels/cpu_ops.h"
#include "kernels/threads.h"
#include "nlohmann/json.hpp"
#include "nn/network.h"
#include "nn/optimizer.h"
#include "util/flags.h"
#include "worker/emulation.h"

DEFINE_string(network, "lenet",
              "Network to build (see --help of the worker for the list).");
DEFINE_int32(num_layers, 0,
             "Depth for resnet and resnet_v1 (18..152, 20/56/110) and vgg "
             "(11, 16).");
DEFINE_string(image_shape, "",
              "Input C,H,W (default: 1,28,28 for mlp/lenet, 3,32,32 for CIFAR "
              "ResNets and "
              "minigooglenet, 3,299,299 for inception-v3, else 3,224,224).");
DEFINE_int32(num_classes, 0,
             "Classes (default: 10 for 28/32-pixel inputs, else 1000).");
DEFINE_int32(batch_size, 32, "Images per training step.");
DEFINE_int32(iters, 20, "Timed training steps.");
DEFINE_int32(warmup, 3,
             "Untimed steps first (primitive creation, page faults).");
DEFINE_int32(threads, 0, "CPU threads for the kernels (0: every core).");
DEFINE_bool(json, false, "Print one JSON object instead of the report.");
DEFINE_int32(top_layers, 15, "Layers listed in the time breakdown (0: none).");
DEFINE_string(write_profile, "",
              "Also write an emulated-device profile (worker --emulate_device) "
              "to this file: --profile_images_per_sec spread over the layers "
              "by FLOPs, with --profile_machine's PCIe model; and compare "
              "those shares with this CPU's per-layer times.");
DEFINE_double(profile_images_per_sec, 0,
              "--write_profile: the device's published training rate at "
              "--profile_batch images per device.");
DEFINE_int32(profile_batch, 0,
             "--write_profile: images per device of that rate (0: "
             "--batch_size).");
DEFINE_string(profile_device, "", "--write_profile: the device's name.");
DEFINE_string(profile_machine, "",
              "--write_profile: the machine model, a JSON file "
              "(configs/profiles/*.machine.json).");
DEFINE_string(profile_source, "",
              "--write_profile: where the rate comes from (a citation).");
DEFINE_string(predict_profile, "",
              "Instead of timing: a device profile (worker --emulate_device); "
              "print the images/s that the emulation predicts inside one "
              "machine for --predict_devices devices, for each local reduce "
              "and copy model, with pulls back as soon as the reduces are "
              "done (no network). Runs in virtual time: takes seconds.");
DEFINE_string(predict_devices, "1,2,4,8,16",
              "--predict_profile: the device counts.");

namespace pstrain {
namespace {

std::vector<int64_t> DefaultShape() {
  if (FLAGS_network == "mlp" || FLAGS_network == "lenet") return {1, 28, 28};
  // The CIFAR ResNets (6n + 2 layers, and resnet's 9n + 2 from 164) that
  // are not also ImageNet depths (50, 152 and 200 are both: 224x224 here, as
  // in tools/torch_bench.py).
  const int n = FLAGS_num_layers;
  const bool imagenet_depth = n == 18 || n == 34 || n == 50 || n == 101 ||
                              n == 152 || n == 200 || n == 269;
  const bool cifar_resnet =
      (FLAGS_network == "resnet" || FLAGS_network == "resnet_v1") &&
      !imagenet_depth && ((n - 2) % 6 == 0 || (n - 2) % 9 == 0);
  if (FLAGS_network == "minigooglenet" || cifar_resnet) return {3, 32, 32};
  if (FLAGS_network == "inception-v3") return {3, 299, 299};
  return {3, 224, 224};
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// --write_profile: the profile from FLOPs, and how far its per-layer
// shares of a step are from this CPU's (half the sum of the absolute
// differences: 0 same, 1 disjoint). Returns an exit code.
int WriteProfile(const std::vector<nn::LayerSummary>& summary,
                 const std::vector<std::pair<double, double>>& cpu_times,
                 const std::vector<int64_t>& shape) {
  if (FLAGS_profile_machine.empty() || !(FLAGS_profile_images_per_sec > 0)) {
    std::cerr << "--write_profile needs --profile_machine and "
                 "--profile_images_per_sec > 0\n";
    return 2;
  }
  auto machine = worker::ReadMachineModel(FLAGS_profile_machine);
  if (!machine.ok()) {
    std::cerr << "--profile_machine " << machine.status().message() << "\n";
    return 2;
  }
  const int batch =
      FLAGS_profile_batch > 0 ? FLAGS_profile_batch : FLAGS_batch_size;
  auto profile =
      worker::ProfileFromFlops(summary, batch, FLAGS_profile_images_per_sec);
  if (!profile.ok()) {
    std::cerr << "--write_profile: " << profile.status().message() << "\n";
    return 2;
  }
  profile->device = FLAGS_profile_device;
  profile->network = FLAGS_network;
  profile->num_layers = FLAGS_num_layers;
  profile->machine = *machine;
  double flops_total = 0, cpu_total = 0;
  for (const auto& l : profile->layers)
    flops_total += l.forward_s + l.backward_s;
  for (const auto& t : cpu_times) cpu_total += t.first + t.second;
  double distance = 0;
  std::vector<std::pair<double, size_t>> apart;
  for (size_t i = 0; i < profile->layers.size() && i < cpu_times.size(); ++i) {
    const auto& l = profile->layers[i];
    const double a = (l.forward_s + l.backward_s) / flops_total;
    const double b = (cpu_times[i].first + cpu_times[i].second) / cpu_total;
    distance += std::abs(a - b) / 2;
    apart.push_back({std::abs(a - b), i});
  }
  profile->source =
      absl::StrCat(FLAGS_profile_source, "; ", FLAGS_profile_images_per_sec,
                   " images/s at batch ", batch,
                   " spread over layers by FLOPs "
                   "(model_bench --write_profile, image_shape ",
                   absl::StrJoin(shape, ","),
                   "); per-layer shares differ from this CPU's by ",
                   absl::StrFormat("%.3f", distance), " (total variation)");
  std::ofstream out(FLAGS_write_profile);
  out << worker::DeviceProfileJson(*profile);
  out.close();
  if (!out) {
    std::cerr << "--write_profile " << FLAGS_write_profile
              << ": cannot write\n";
    return 1;
  }
  std::sort(apart.rbegin(), apart.rend());
  std::cerr << absl::StrFormat(
      "profile: wrote %s (%d layers); FLOP shares vs this CPU's per-layer "
      "shares (batch %d): total variation %.3f; most apart:",
      FLAGS_write_profile, profile->layers.size(), FLAGS_batch_size, distance);
  for (size_t k = 0; k < apart.size() && k < 5; ++k) {
    const size_t i = apart[k].second;
    const auto& l = profile->layers[i];
    std::cerr << absl::StrFormat(
        " %s %.1f%% vs %.1f%%;", l.name,
        100 * (l.forward_s + l.backward_s) / flops_total,
        100 * (cpu_times[i].first + cpu_times[i].second) / cpu_total);
  }
  std::cerr << "\n";
  return 0;
}

// --predict_profile: the emulation's rates inside one machine, in virtual
// time. Returns an exit code.
int Predict(const std::vector<int64_t>& shape, int classes) {
  auto profile = worker::ReadDeviceProfile(FLAGS_predict_profile);
  if (!profile.ok()) {
    std::cerr << "--predict_profile " << profile.status().message() << "\n";
    return 2;
  }
  std::vector<int> counts;
  for (absl::string_view d : absl::StrSplit(FLAGS_predict_devices, ',')) {
    int v = 0;
    if (!absl::SimpleAtoi(d, &v) || v < 1) {
      std::cerr << "--predict_devices '" << FLAGS_predict_devices
                << "': a list of counts >= 1\n";
      return 2;
    }
    counts.push_back(v);
  }
  auto net =
      nn::BuildNetwork(FLAGS_network, FLAGS_num_layers, classes, shape, 1);
  if (!net.ok()) {
    std::cerr << net.status().message() << "\n";
    return 2;
  }
  const int batch = profile->batch_per_device;
  std::cout << absl::StrFormat(
      "%s on %s (%s), batch %d per device: predicted images/s inside one "
      "machine (efficiency)\n",
      FLAGS_network, profile->device, profile->machine.name, batch);
  const std::vector<std::pair<const char*, const char*>> models = {
      {"one_device", "stall_all"},
      {"one_device", "per_device"},
      {"one_device", "overlap"},
      {"partitioned", "overlap"}};
  std::cout << absl::StrFormat("%-8s", "devices");
  for (const auto& [reduce, copies] : models)
    std::cout << absl::StrFormat(" %24s", absl::StrCat(reduce, "/", copies));
  std::cout << "\n";
  // Each model's rate at one device, the base of its efficiency.
  std::vector<double> one(models.size(), 0);
  for (int devices : counts) {
    std::cout << absl::StrFormat("%-8d", devices);
    for (size_t m = 0; m < models.size(); ++m) {
      const auto& [reduce, copies] = models[m];
      const worker::LocalReduce r = *worker::ParseLocalReduce(reduce);
      const worker::CopyModel c = *worker::ParseCopyModel(copies);
      auto e = worker::EmulatedDevices::Create(*profile, net->get(), devices,
                                               batch, 1, r, c, true);
      if (!e.ok()) {
        std::cerr << "--predict_profile " << FLAGS_predict_profile << ": "
                  << e.status().message() << "\n";
        return 2;
      }
      auto arrived = [](const std::vector<nn::Param*>&) { return true; };
      // One step to reach the steady state, then three timed.
      CHECK((*e)->Step(nullptr, nullptr, arrived).ok());
      const absl::Time t0 = (*e)->Now();
      constexpr int kSteps = 3;
      for (int i = 0; i < kSteps; ++i)
        CHECK((*e)->Step(nullptr, nullptr, arrived).ok());
      const double rate =
          kSteps * devices * batch / absl::ToDoubleSeconds((*e)->Now() - t0);
      if (devices == 1 && one[m] == 0) one[m] = rate;
      const double linear = one[m] > 0 ? one[m] * devices : rate;
      std::cout << absl::StrFormat(" %15.1f (%5.3f)", rate, rate / linear);
    }
    std::cout << "\n";
  }
  return 0;
}

int Run() {
  std::vector<int64_t> shape = DefaultShape();
  if (!FLAGS_image_shape.empty()) {
    shape.clear();
    for (absl::string_view d : absl::StrSplit(FLAGS_image_shape, ',')) {
      int64_t v;
      if (!absl::SimpleAtoi(d, &v)) {
        std::cerr << "--image_shape '" << FLAGS_image_shape
                  << "' is not C,H,W\n";
        return 2;
      }
      shape.push_back(v);
    }
  }
  const int classes = FLAGS_num_classes > 0
                          ? FLAGS_num_classes
                          : (shape.size() == 3 && shape[1] <= 32 ? 10 : 1000);
  if (!FLAGS_predict_profile.empty()) return Predict(shape, classes);
  if (FLAGS_iters < 1 || FLAGS_warmup < 0 || FLAGS_threads < 0) {
    std::cerr << "--iters must be >= 1, --warmup and --threads >= 0\n";
    return 2;
  }
  const int threads =
      FLAGS_threads > 0 ? FLAGS_threads
                        : static_cast<int>(std::thread::hardware_concurrency());
  kernels::SetCpuThreads(threads);
  auto net_or = nn::BuildNetwork(FLAGS_network, FLAGS_num_layers, classes,
                                 shape, FLAGS_batch_size);
  if (!net_or.ok()) {
    std::cerr << net_or.status().message() << "\n";
    return 2;
  }
  nn::Network& net = **net_or;
  nn::InitializeXavier(&net, 1);
  proto::OptimizerConfig cfg;
  cfg.set_kind(proto::OptimizerConfig::SGD);
  cfg.set_learning_rate(0.01);
  cfg.set_momentum(0.9);
  cfg.set_weight_decay(1e-4);
  cfg.set_rescale_grad(1.0 / FLAGS_batch_size);
  auto opt = nn::Optimizer::Create(cfg);
  CHECK(opt.ok()) << opt.status();
  std::vector<nn::Param*> learned;
  for (nn::Param* p : net.params()) {
    if (!p->aux) learned.push_back(p);
  }

  kernels::CpuContext ctx;
  kernels::Tensor x({FLAGS_batch_size, shape[0], shape[1], shape[2]});
  std::vector<float> labels(FLAGS_batch_size);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  for (auto& v : x.span()) v = nd(rng);
  for (auto& l : labels) l = static_cast<float>(rng() % classes);
  auto step = [&] {
    auto loss = net.Forward(&ctx, x, labels);
    CHECK(loss.ok()) << loss.status();
    CHECK(net.Backward(&ctx, 1.0f).ok());
    for (size_t k = 0; k < learned.size(); ++k) {
      (*opt)->Update(static_cast<int64_t>(k), 0, learned[k]->value.span(),
                     learned[k]->grad.span());
    }
  };
  if (!FLAGS_json) {
    std::cout
        << absl::StrFormat(
               "%s%s %s batch %d, %d threads: %.2fM parameters, warming up\n",
               FLAGS_network,
               FLAGS_num_layers ? absl::StrCat("-", FLAGS_num_layers) : "",
               absl::StrJoin(shape, "x"), FLAGS_batch_size, threads,
               net.NumLearnedParams() / 1e6)
        << std::flush;
  }
  for (int i = 0; i < FLAGS_warmup; ++i) step();
  std::vector<double> secs;
  for (int i = 0; i < FLAGS_iters; ++i) {
    const absl::Time t0 = absl::Now();
    step();
    secs.push_back(absl::ToDoubleSeconds(absl::Now() - t0));
  }
  const double median = Median(secs);
  const double images_per_sec = FLAGS_batch_size / median;
  int64_t flops = 0;
  const auto summary = net.Summary();
  for (const auto& s : summary) flops += s.flops;
  const nn::MemoryStats mem = net.Memory();

  // One profiled step for the breakdown.
  net.set_profile(true);
  step();
  net.set_profile(false);
  const auto& times = net.LayerTimes();
  double layer_total = 0;
  std::map<std::string, double> by_op;
  for (size_t i = 0; i < times.size(); ++i) {
    layer_total += times[i].first + times[i].second;
    by_op[summary[i].op] += times[i].first + times[i].second;
  }

  if (!FLAGS_write_profile.empty()) {
    const int rc = WriteProfile(summary, times, shape);
    if (rc != 0) return rc;
  }
  if (FLAGS_json) {
    auto round = [](double v, int digits) {
      const double scale = std::pow(10.0, digits);
      return std::round(v * scale) / scale;
    };
    const nlohmann::ordered_json out = {
        {"network", FLAGS_network},
        {"num_layers", FLAGS_num_layers},
        {"image_shape", absl::StrJoin(shape, ",")},
        {"batch_size", FLAGS_batch_size},
        {"threads", threads},
        {"images_per_sec", round(images_per_sec, 2)},
        {"ms_per_step_median", round(median * 1e3, 3)},
        {"params", net.NumLearnedParams()},
        {"gflops_per_image", round(flops / 1e9, 4)},
        {"activation_mb",
         round((mem.forward_bytes + mem.gradient_bytes) / 1e6, 1)},
        {"unplanned_activation_mb", round(mem.unplanned_bytes / 1e6, 1)}};
    std::cout << out.dump() << "\n";
    return 0;
  }
  std::cout << absl::StrFormat(
      "training: %.1f images/s (median of %d steps: %.1f ms; min %.1f, max "
      "%.1f)\n"
      "forward: %.3f GFLOP (multiply-adds) per image\n"
      "memory: activations %.1f MB + gradients %.1f MB = %.1f MB (one buffer "
      "per layer and "
      "gradient: %.1f MB); parameters and their gradients %.1f MB\n",
      images_per_sec, FLAGS_iters, median * 1e3,
      *std::min_element(secs.begin(), secs.end()) * 1e3,
      *std::max_element(secs.begin(), secs.end()) * 1e3, flops / 1e9,
      mem.forward_bytes / 1e6, mem.gradient_bytes / 1e6,
      (mem.forward_bytes + mem.gradient_bytes) / 1e6, mem.unplanned_bytes / 1e6,
      mem.param_bytes / 1e6);
  std::vector<std::pair<double, std::string>> ops;
  for (const auto& [op, t] : by_op) ops.push_back({t, op});
  std::sort(ops.rbegin(), ops.rend());
  std::cout << "time by operator (one profiled step, layers only; the rest is "
               "loss and update):\n";
  for (const auto& [t, op] : ops) {
    std::cout << absl::StrFormat("  %-16s %8.2f ms %5.1f%%\n", op, t * 1e3,
                                 100 * t / layer_total);
  }
  if (FLAGS_top_layers > 0) {
    std::vector<size_t> order(times.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return times[a].first + times[a].second >
             times[b].first + times[b].second;
    });
    std::cout << absl::StrFormat("slowest layers:  %-28s %-16s %9s %9s %s\n",
                                 "layer", "output", "fwd ms", "bwd ms",
                                 "GFLOP");
    for (size_t k = 0;
         k < order.size() && k < static_cast<size_t>(FLAGS_top_layers); ++k) {
      const size_t i = order[k];
      std::cout << absl::StrFormat(
          "  %-28s %-16s %9.2f %9.2f %.3f\n", summary[i].name,
          absl::StrJoin(summary[i].out_shape, "x"), times[i].first * 1e3,
          times[i].second * 1e3, summary[i].flops * FLAGS_batch_size / 1e9);
    }
  }
  std::cout << absl::StrFormat(
      "layers total %.1f ms of the %.1f ms median step\n", layer_total * 1e3,
      median * 1e3);
  return 0;
}

}  // namespace
}  // namespace pstrain

int main(int argc, char** argv) {
  pstrain::ParseFlagsOrExit(
      {"model_bench",
       "model_bench --network NAME [--num_layers N] [--image_shape C,H,W] "
       "[--batch_size B] [--iters I] [--threads T] [--json]\n"
       "Trains a network on synthetic data in one process and prints "
       "images/s, a per-layer\ntime breakdown and the activation memory plan.",
       {{__FILE__, ""}}},
      {argv, argv + argc});
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  return pstrain::Run();
}
