// scaling: measures data-parallel scaling by running the same synthetic
// benchmark job at 1, 2, 4, ... GPUs through `launch`, one job per point,
// and writes a table, CSV, JSON and a plot (see tools/scaling.h).
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <iostream>
#include <string>
#include <system_error>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "launcher/hostfile.h"
#include "launcher/launcher.h"
#include "tools/scaling.h"
#include "util/file.h"
#include "util/flags.h"

DEFINE_string(hostfile, "",
              "Hosts file (-H), one host[:ssh_port] a line; a point of P GPUs "
              "uses its first ceil(P / gpus_per_host) hosts.");
DEFINE_string(ssh_config, "", "ssh client config for launch (ssh -F).");
DEFINE_string(launcher, "",
              "ssh or local; default: ssh with a hosts file, else local (every "
              "process on this machine).");
DEFINE_int32(gpus_per_host, 16, "GPUs per host (one worker per host).");
DEFINE_string(network, "resnet", "Worker --network.");
DEFINE_int32(num_layers, 0, "Worker --num_layers; 0: not passed.");
DEFINE_string(image_shape, "3,224,224", "Worker --image_shape (C,H,W).");
DEFINE_int32(num_classes, 1000, "Worker --num_classes; 0: not passed.");
DEFINE_int32(batch_size, 32,
             "Batch size PER GPU (a worker of g GPUs gets g times this).");
DEFINE_string(kv_store, "dist_device_sync", "Worker --kv_store.");
DEFINE_string(points, "1,2,4,8,16,32,64,128,256",
              "GPU counts to measure, comma-separated; each a multiple of "
              "min(itself, gpus_per_host).");
DEFINE_string(mode, "pstrain",
              "Worker --kvstore_mode: mxnet (MXNet 1.x's KVStore behaviour) or "
              "pstrain.");
DEFINE_string(emulate_device, "",
              "Device profile (JSON) for worker --emulate_device; the workers "
              "then get --gpus 0..g-1 as emulated devices.");
DEFINE_double(time_dilation, 1, "Worker --time_dilation.");
DEFINE_int32(warmup_batches, 2, "Untimed batches per worker.");
DEFINE_int32(batches, 5, "Timed batches per worker.");
DEFINE_string(out_dir, "",
              "Results: scaling.csv, scaling.json, scaling.png, scaling.svg, "
              "scaling.gp + scaling.dat, one log per point.");
DEFINE_string(reference, "",
              "A CSV gpus,images_per_sec to compare with (e.g. "
              "configs/scaling/mxnet_resnet152.csv).");
DEFINE_bool(cpu_devices, false,
            "Workers run g real CPU devices (--cpu_devices g) instead of "
            "--gpus.");
DEFINE_int64(slice_bytes, -1,
             "Worker --slice_bytes (priority and slicing); -1: not passed.");
DEFINE_int64(send_credit_bytes, -1,
             "Worker --send_credit_bytes; -1: not passed.");
DEFINE_string(gradient_compression, "",
              "Worker --gradient_compression (e.g. type=2bit,threshold=0.5); "
              "empty: not passed.");
DEFINE_string(worker_args, "",
              "Extra flags for every worker, space-separated.");
DEFINE_string(launch_args, "",
              "Extra flags for launch, space-separated (e.g. '--env "
              "OMP_NUM_THREADS=1 --stop_grace_s 3').");
DEFINE_string(launch_binary, "",
              "The launch tool; default: tools/launch beside this one.");
DEFINE_string(worker_binary, "",
              "The worker binary (the same path on every host); default: "
              "worker/worker beside this tool's folder.");
DEFINE_int32(point_timeout_s, 3600,
             "Stop a point's job after this many seconds (the point fails).");
DEFINE_bool(dry_run, false,
            "Print each point's plan and launch command; run nothing.");
DEFINE_bool(keep_going, false,
            "Run the remaining points after one fails (default: stop).");
DEFINE_bool(plot, true, "Draw scaling.png and scaling.svg with gnuplot.");

namespace {

constexpr char kProgram[] = "scaling";
std::atomic<int> g_stop{0};

void OnStopSignal(int signal) { g_stop.store(signal); }

std::string Quoted(const std::vector<std::string>& argv) {
  return absl::StrJoin(argv, " ", [](std::string* out, const std::string& a) {
    out->append(pstrain::launcher::ShellQuote(a));
  });
}

std::string Plural(int n, const char* word) {
  return absl::StrCat(n, " ", word, n == 1 ? "" : "s");
}

void CheckExecutable(const char* flag, const std::string& path) {
  if (access(path.c_str(), X_OK) != 0) {
    pstrain::ExitWithError(
        kProgram,
        pstrain::BadFlag(flag, path, "is not an executable file").message());
  }
}

std::string Title(const pstrain::scaling::ScalingOptions& o) {
  std::string net = o.network;
  if (o.num_layers > 0) absl::StrAppend(&net, "-", o.num_layers);
  std::string title = absl::StrCat(net, ", batch ", o.batch_size, " per GPU, ",
                                   o.kv_store, ", ", o.mode, " mode");
  if (!o.emulate_device.empty()) {
    absl::StrAppend(&title, ", emulated devices, time dilation ",
                    o.time_dilation);
  }
  if (o.cpu_devices) absl::StrAppend(&title, ", CPU devices");
  return title;
}

// Writes scaling.csv and scaling.json; returns false (saying why) on error.
bool WriteResults(const pstrain::scaling::ScalingOptions& o,
                  const std::vector<std::string>& argv,
                  const pstrain::scaling::Reference* reference,
                  std::vector<pstrain::scaling::PointResult>* points) {
  pstrain::scaling::ComputeScaling(reference, points);
  absl::Status s = pstrain::scaling::WriteTextFile(
      o.out_dir + "/scaling.csv", pstrain::scaling::CsvText(*points));
  if (s.ok()) {
    s = pstrain::scaling::WriteTextFile(
        o.out_dir + "/scaling.json",
        pstrain::scaling::ResultsJson(o, argv, FLAGS_reference, reference,
                                      *points)
                .dump(2) +
            "\n");
  }
  if (!s.ok()) std::cerr << kProgram << ": " << s.message() << "\n";
  return s.ok();
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> command_line(argv, argv + argc);
  // -H HOSTFILE as launch (and MXNet's launch.py) spell it.
  std::vector<std::string> args;
  for (const auto& a : command_line) {
    if (a == "-H") {
      args.push_back("--hostfile");
    } else if (a.rfind("-H=", 0) == 0) {
      args.push_back("--hostfile=" + a.substr(3));
    } else {
      args.push_back(a);
    }
  }
  pstrain::ParseFlagsOrExit(
      {kProgram,
       "scaling [-H HOSTFILE [--ssh_config F]] [--launcher ssh|local]\n"
       "        --gpus_per_host G --network N [--num_layers L] "
       "--image_shape C,H,W\n"
       "        --batch_size B (per GPU) --points 1,2,4,... --out_dir DIR\n"
       "        [--mode mxnet|pstrain] [--emulate_device PROFILE.json "
       "--time_dilation K | --cpu_devices]\n"
       "        [--reference FILE.csv] [--dry_run] ...\n"
       "Measures data-parallel scaling: for each point of P GPUs it runs one\n"
       "job through `launch` on ceil(P/G) hosts (the first lines of the hosts\n"
       "file), one worker of min(P,G) GPUs per host and as many co-located\n"
       "servers, each worker running `worker --benchmark` for "
       "--warmup_batches\n"
       "+ --batches batches and printing one `benchmark: {JSON}` line. It\n"
       "prints a line per point and a table (GPUs, images/s, speed-up and\n"
       "efficiency against the smallest point's per-GPU rate, the reference\n"
       "and measured/reference, the machine's CPU use), and writes\n"
       "DIR/scaling.csv, scaling.json (flags, every worker's numbers),\n"
       "scaling.png and scaling.svg (gnuplot; DIR/scaling.gp redraws them)\n"
       "and DIR/point-PGPUS.log. MXNet's dashed spellings (--batch-size) "
       "work.\n"
       "Exit codes: 0 every point ran, 1 a point (or the plot) failed, 2 bad\n"
       "flags or input files, 128+N stopped by signal N.",
       {{__FILE__, ""}}},
      args);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);

  namespace sc = pstrain::scaling;
  auto bad = [](const absl::Status& s) {
    pstrain::ExitWithError(kProgram, s.message());
  };
  sc::ScalingOptions o;
  std::string mode = FLAGS_launcher;
  if (mode.empty()) mode = FLAGS_hostfile.empty() ? "local" : "ssh";
  if (mode != "ssh" && mode != "local")
    bad(pstrain::BadFlag("launcher", mode, "must be ssh or local"));
  o.ssh = mode == "ssh";
  o.hostfile = FLAGS_hostfile;
  if (o.ssh && !o.hostfile.empty()) {
    auto hosts = pstrain::launcher::ReadHostfile(o.hostfile);
    if (!hosts.ok()) bad(hosts.status());
    o.hosts = *hosts;
  }
  o.ssh_config = FLAGS_ssh_config;
  o.gpus_per_host = FLAGS_gpus_per_host;
  o.network = FLAGS_network;
  o.num_layers = FLAGS_num_layers;
  o.image_shape = FLAGS_image_shape;
  o.num_classes = FLAGS_num_classes;
  o.batch_size = FLAGS_batch_size;
  o.kv_store = FLAGS_kv_store;
  auto points = sc::ParsePoints(FLAGS_points);
  if (!points.ok()) bad(points.status());
  o.points = *points;
  o.mode = FLAGS_mode;
  o.emulate_device = FLAGS_emulate_device;
  o.time_dilation = FLAGS_time_dilation;
  o.warmup_batches = FLAGS_warmup_batches;
  o.batches = FLAGS_batches;
  o.cpu_devices = FLAGS_cpu_devices;
  o.slice_bytes = FLAGS_slice_bytes;
  o.send_credit_bytes = FLAGS_send_credit_bytes;
  o.gradient_compression = FLAGS_gradient_compression;
  o.worker_args = absl::StrSplit(FLAGS_worker_args, ' ', absl::SkipEmpty());
  o.launch_args = absl::StrSplit(FLAGS_launch_args, ' ', absl::SkipEmpty());
  o.launch_binary = FLAGS_launch_binary.empty()
                        ? pstrain::PathBesideThisProgram("tools/launch")
                        : FLAGS_launch_binary;
  o.worker_binary = FLAGS_worker_binary.empty()
                        ? pstrain::PathBesideThisProgram("worker/worker")
                        : FLAGS_worker_binary;
  o.out_dir = FLAGS_out_dir;
  if (FLAGS_point_timeout_s < 1)
    bad(pstrain::BadFlag("point_timeout_s", FLAGS_point_timeout_s,
                         "must be >= 1"));
  o.point_timeout = absl::Seconds(FLAGS_point_timeout_s);
  absl::Status valid = sc::ValidateOptions(o);
  if (!valid.ok()) bad(valid);
  if (!o.emulate_device.empty() && access(o.emulate_device.c_str(), R_OK) != 0)
    bad(pstrain::BadFlag("emulate_device", o.emulate_device, "cannot be read"));
  sc::Reference reference;
  const sc::Reference* ref = nullptr;
  if (!FLAGS_reference.empty()) {
    auto r = sc::ReadReference(FLAGS_reference);
    if (!r.ok()) bad(r.status());
    reference = *r;
    ref = &reference;
  }

  std::vector<sc::PointPlan> plans;
  for (int p : o.points) {
    auto plan = sc::PlanPoint(p, o.gpus_per_host,
                              o.ssh ? static_cast<int>(o.hosts.size()) : -1,
                              o.hostfile);
    CHECK(plan.ok()) << plan.status();  // ValidateOptions planned them.
    plans.push_back(*plan);
  }
  const int n = static_cast<int>(plans.size());
  const std::string dir = o.out_dir.empty() ? "OUT_DIR" : o.out_dir;
  auto hostfile_of = [&](const sc::PointPlan& plan) {
    return o.ssh ? absl::StrCat(dir, "/hosts-", plan.hosts) : "";
  };
  auto describe = [&](int k, const sc::PointPlan& plan) {
    return absl::StrCat(
        "point ", k + 1, " of ", n, ": ", Plural(plan.gpus, "GPU"), " on ",
        Plural(plan.hosts, "host"), " (", Plural(plan.workers(), "worker"),
        " x ", Plural(plan.gpus_per_worker, "GPU"), ", ",
        Plural(plan.servers(), "server"), ")");
  };

  if (FLAGS_dry_run) {
    for (int k = 0; k < n; ++k) {
      const sc::PointPlan& plan = plans[k];
      std::cout << describe(k, plan) << "\n";
      if (o.ssh) {
        std::cout << "  hosts: "
                  << absl::StrJoin(
                         std::vector<pstrain::launcher::Host>(
                             o.hosts.begin(), o.hosts.begin() + plan.hosts),
                         " ",
                         [](std::string* out,
                            const pstrain::launcher::Host& h) {
                           out->append(h.ToString());
                         })
                  << " (written to " << hostfile_of(plan) << ")\n";
      }
      std::cout << "  " << Quoted(sc::LaunchCommand(o, plan, hostfile_of(plan)))
                << "\n";
    }
    return 0;
  }

  if (o.out_dir.empty()) bad(pstrain::BadFlag("out_dir", "", "is required"));
  CheckExecutable("launch_binary", o.launch_binary);
  CheckExecutable("worker_binary", o.worker_binary);
  std::string gnuplot;
  if (FLAGS_plot) {
    gnuplot = sc::FindInPath("gnuplot");
    if (gnuplot.empty()) {
      pstrain::ExitWithError(
          kProgram,
          "gnuplot is not installed: run scripts/setup (it installs "
          "gnuplot-nox), or pass --noplot");
    }
  }
  std::error_code ec;
  std::filesystem::create_directories(o.out_dir, ec);
  if (ec) {
    bad(pstrain::BadFlag("out_dir", o.out_dir,
                         absl::StrCat("cannot be made: ", ec.message())));
  }
  if (o.ssh) {
    for (const auto& plan : plans) {
      absl::Status s = sc::WriteTextFile(
          hostfile_of(plan), sc::HostsFileText(o.hosts, plan.hosts));
      if (!s.ok()) bad(s);
    }
  }

  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);

  std::vector<sc::PointResult> results;
  double done_seconds = 0;
  bool failed = false;
  for (int k = 0; k < n && g_stop.load() == 0; ++k) {
    const sc::PointPlan& plan = plans[k];
    std::string eta = "ETA unknown";
    if (k > 0) {
      const absl::Duration left = absl::Seconds(done_seconds / k * (n - k));
      eta = absl::StrCat(
          "ETA ",
          left < absl::Seconds(1)
              ? "<1s"
              : absl::FormatDuration(absl::Trunc(left, absl::Seconds(1))),
          " (",
          absl::FormatTime("%H:%M", absl::Now() + left, absl::LocalTimeZone()),
          ")");
    }
    std::cout << describe(k, plan) << " ... " << eta << std::endl;
    const std::string name =
        absl::StrCat("point ", k + 1, " of ", n, " (", Plural(plan.gpus, "GPU"),
                     " on ", Plural(plan.hosts, "host"), ")");
    sc::PointResult r = sc::RunPoint(
        o, plan, sc::LaunchCommand(o, plan, hostfile_of(plan)), name,
        absl::StrCat(o.out_dir, "/point-", plan.gpus, "gpus.log"), &g_stop);
    done_seconds += r.wall_seconds;
    if (r.ok) {
      double lo = r.workers.front().images_per_sec, hi = lo;
      for (const auto& w : r.workers) {
        lo = std::min(lo, w.images_per_sec);
        hi = std::max(hi, w.images_per_sec);
      }
      std::cout << absl::StrFormat(
                       "  %.2f images/s (%d workers, %.2f to %.2f each), "
                       "machine CPU %.0f%%, %.1f s",
                       r.images_per_sec, r.workers.size(), lo, hi,
                       r.cpu_percent, r.wall_seconds)
                << std::endl;
    } else {
      failed = true;
      std::cerr << kProgram << ": " << r.error << std::endl;
    }
    results.push_back(std::move(r));
    if (!WriteResults(o, command_line, ref, &results)) return 1;
    if (failed && !FLAGS_keep_going) break;
  }

  sc::ComputeScaling(ref, &results);
  if (!results.empty()) {
    std::cout << "\n" << sc::FormatTable(results, ref != nullptr);
  }
  std::cout << "results: " << o.out_dir << "/scaling.csv, " << o.out_dir
            << "/scaling.json" << std::endl;
  if (FLAGS_plot && !results.empty()) {
    absl::Status s = sc::WritePlot(o.out_dir, gnuplot, Title(o), results, ref);
    if (s.ok()) {
      std::cout << "plot: " << o.out_dir << "/scaling.png, " << o.out_dir
                << "/scaling.svg (" << o.out_dir << "/scaling.gp redraws them)"
                << std::endl;
    } else {
      std::cerr << kProgram << ": plot: " << s.message() << std::endl;
      failed = true;
    }
  }
  if (g_stop.load() != 0) {
    std::cerr << kProgram << ": stopped by signal " << g_stop.load()
              << std::endl;
    return 128 + g_stop.load();
  }
  if (failed) {
    std::cerr << kProgram << ": a point failed (see above and " << o.out_dir
              << "/scaling.json)" << std::endl;
    return 1;
  }
  return 0;
}
