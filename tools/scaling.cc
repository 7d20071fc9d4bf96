#include "tools/scaling.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "glog/logging.h"
#include "launcher/launcher.h"
#include "launcher/subprocess.h"
#include "util/flags.h"

namespace pstrain {
namespace scaling {
namespace {

using Json = nlohmann::ordered_json;

constexpr char kBenchmarkMarker[] = "benchmark: ";
// --disp_batches for the workers: no progress lines during a point.
constexpr int kQuietDispBatches = 1000000;

std::vector<absl::string_view> Lines(absl::string_view text) {
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  if (!lines.empty() && lines.back().empty()) lines.pop_back();
  return lines;
}

// Reads an integer field of a worker's object into *out.
absl::Status GetInt(const Json& obj, const char* name, int* out) {
  auto it = obj.find(name);
  if (it == obj.end())
    return absl::InvalidArgumentError(absl::StrCat("has no \"", name, "\""));
  if (!it->is_number_integer()) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", name, "\" is not an integer"));
  }
  const int64_t v = it->get<int64_t>();
  if (v < 0 || v > INT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", name, "\" is out of range"));
  }
  *out = static_cast<int>(v);
  return absl::OkStatus();
}

// Reads a finite, non-negative number field of a worker's object.
absl::Status GetNumber(const Json& obj, const char* name, double* out) {
  auto it = obj.find(name);
  if (it == obj.end())
    return absl::InvalidArgumentError(absl::StrCat("has no \"", name, "\""));
  if (!it->is_number()) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", name, "\" is not a number"));
  }
  const double v = it->get<double>();
  if (!std::isfinite(v) || v < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", name, "\" is ", v, ", not a finite value >= 0"));
  }
  *out = v;
  return absl::OkStatus();
}

absl::Status ParseWorkerObject(const Json& obj, WorkerResult* r) {
  if (!obj.is_object()) return absl::InvalidArgumentError("is not an object");
  for (auto [name, field] : std::vector<std::pair<const char*, int*>>{
           {"rank", &r->rank},
           {"devices", &r->devices},
           {"batch_size", &r->batch_size},
           {"batches", &r->batches},
           {"warmup_batches", &r->warmup_batches}}) {
    absl::Status s = GetInt(obj, name, field);
    if (!s.ok()) return s;
  }
  for (auto [name, field] : std::vector<std::pair<const char*, double*>>{
           {"time_dilation", &r->time_dilation},
           {"wall_seconds", &r->wall_seconds},
           {"images_per_sec", &r->images_per_sec},
           {"compute_s", &r->compute_s},
           {"push_wait_s", &r->push_wait_s},
           {"pull_wait_s", &r->pull_wait_s},
           {"other_s", &r->other_s}}) {
    absl::Status s = GetNumber(obj, name, field);
    if (!s.ok()) return s;
  }
  if (r->images_per_sec <= 0)
    return absl::InvalidArgumentError("\"images_per_sec\" is 0");
  r->raw = obj;
  return absl::OkStatus();
}

// "%.6g" without exponents for the magnitudes here.
std::string Num(double v) { return absl::StrFormat("%.6g", v); }

std::string GnuplotQuote(const std::string& s) {
  return absl::StrCat("'", absl::StrReplaceAll(s, {{"'", "''"}}), "'");
}

}  // namespace

absl::StatusOr<std::vector<int>> ParsePoints(absl::string_view text) {
  std::vector<int> points;
  for (absl::string_view word : absl::StrSplit(text, ',')) {
    word = absl::StripAsciiWhitespace(word);
    int p = 0;
    if (!absl::SimpleAtoi(word, &p) || p < 1) {
      return BadFlag("points", text,
                     absl::StrCat("'", word,
                                  "' is not a GPU count >= 1 (a list such as "
                                  "1,2,4,8)"));
    }
    points.push_back(p);
  }
  std::sort(points.begin(), points.end());
  for (size_t i = 1; i < points.size(); ++i) {
    if (points[i] == points[i - 1]) {
      return BadFlag("points", text,
                     absl::StrCat(points[i], " is listed twice"));
    }
  }
  return points;
}

absl::StatusOr<PointPlan> PlanPoint(int gpus, int gpus_per_host,
                                    int available_hosts,
                                    absl::string_view hostfile) {
  if (gpus_per_host < 1)
    return BadFlag("gpus_per_host", gpus_per_host, "must be >= 1");
  if (gpus < 1) return BadFlag("points", gpus, "a GPU count must be >= 1");
  PointPlan plan;
  plan.gpus = gpus;
  plan.gpus_per_worker = std::min(gpus, gpus_per_host);
  plan.hosts = (gpus + gpus_per_host - 1) / gpus_per_host;
  if (gpus % plan.gpus_per_worker != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--points: ", gpus, " GPUs is not a multiple of ",
                     plan.gpus_per_worker, " (--gpus_per_host ", gpus_per_host,
                     "): every worker runs on the same number of GPUs"));
  }
  if (available_hosts >= 0 && plan.hosts > available_hosts) {
    return absl::InvalidArgumentError(absl::StrCat(
        hostfile, ": ", gpus, " GPUs (--points) need ", plan.hosts,
        " hosts of ", gpus_per_host, " GPUs (--gpus_per_host), but it lists ",
        available_hosts));
  }
  return plan;
}

absl::Status ValidateOptions(const ScalingOptions& o) {
  if (o.gpus_per_host < 1)
    return BadFlag("gpus_per_host", o.gpus_per_host, "must be >= 1");
  if (o.network.empty()) return BadFlag("network", "", "must name a network");
  if (o.num_layers < 0)
    return BadFlag("num_layers", o.num_layers, "must be >= 0 (0: not passed)");
  if (o.num_classes < 0)
    return BadFlag("num_classes", o.num_classes,
                   "must be >= 0 (0: not passed)");
  if (o.image_shape.empty())
    return BadFlag("image_shape", "", "must be C,H,W such as 3,224,224");
  if (o.batch_size < 1)
    return BadFlag("batch_size", o.batch_size, "must be >= 1 (per GPU)");
  if (o.kv_store.empty()) return BadFlag("kv_store", "", "must not be empty");
  if (o.mode != "mxnet" && o.mode != "pstrain")
    return BadFlag("mode", o.mode, "must be mxnet or pstrain");
  if (!(o.time_dilation > 0) || !std::isfinite(o.time_dilation))
    return BadFlag("time_dilation", o.time_dilation, "must be > 0");
  if (o.warmup_batches < 0)
    return BadFlag("warmup_batches", o.warmup_batches, "must be >= 0");
  if (o.batches < 1) return BadFlag("batches", o.batches, "must be >= 1");
  if (o.cpu_devices && !o.emulate_device.empty()) {
    return absl::InvalidArgumentError(
        "--cpu_devices and --emulate_device exclude each other");
  }
  if (o.points.empty()) return BadFlag("points", "", "must list GPU counts");
  if (o.ssh && o.hosts.empty()) {
    return absl::InvalidArgumentError(
        "--launcher ssh needs a hosts file (-H HOSTFILE)");
  }
  if (!o.ssh && !o.hostfile.empty()) {
    return BadFlag("hostfile", o.hostfile, "is for --launcher ssh, not local");
  }
  if (!o.ssh && !o.ssh_config.empty()) {
    return BadFlag("ssh_config", o.ssh_config,
                   "is for --launcher ssh, not local");
  }
  if (o.launch_binary.empty())
    return BadFlag("launch_binary", "", "must not be empty");
  if (o.worker_binary.empty())
    return BadFlag("worker_binary", "", "must not be empty");
  if (o.point_timeout <= absl::ZeroDuration())
    return BadFlag("point_timeout_s", absl::FormatDuration(o.point_timeout),
                   "must be > 0");
  for (int p : o.points) {
    auto plan =
        PlanPoint(p, o.gpus_per_host,
                  o.ssh ? static_cast<int>(o.hosts.size()) : -1, o.hostfile);
    if (!plan.ok()) return plan.status();
  }
  return absl::OkStatus();
}

std::vector<std::string> WorkerCommand(const ScalingOptions& o,
                                       const PointPlan& plan) {
  const int g = plan.gpus_per_worker;
  const int64_t per_worker = static_cast<int64_t>(o.batch_size) * g;
  const int64_t examples =
      plan.hosts * per_worker * (o.warmup_batches + o.batches);
  std::vector<std::string> argv = {o.worker_binary, "--kv_store=" + o.kv_store,
                                   "--benchmark=true",
                                   "--network=" + o.network};
  if (o.num_layers > 0)
    argv.push_back(absl::StrCat("--num_layers=", o.num_layers));
  argv.push_back("--image_shape=" + o.image_shape);
  if (o.num_classes > 0)
    argv.push_back(absl::StrCat("--num_classes=", o.num_classes));
  argv.insert(argv.end(),
              {absl::StrCat("--batch_size=", per_worker), "--num_epochs=1",
               absl::StrCat("--num_examples=", examples),
               absl::StrCat("--disp_batches=", kQuietDispBatches),
               "--kvstore_mode=" + o.mode,
               absl::StrCat("--warmup_batches=", o.warmup_batches),
               absl::StrCat("--time_dilation=", o.time_dilation)});
  std::vector<std::string> gpus;
  for (int i = 0; i < g; ++i) gpus.push_back(absl::StrCat(i));
  if (o.cpu_devices) {
    argv.push_back(absl::StrCat("--cpu_devices=", g));
  } else {
    if (!o.emulate_device.empty())
      argv.push_back("--emulate_device=" + o.emulate_device);
    argv.push_back("--gpus=" + absl::StrJoin(gpus, ","));
  }
  if (o.slice_bytes >= 0)
    argv.push_back(absl::StrCat("--slice_bytes=", o.slice_bytes));
  if (o.send_credit_bytes >= 0)
    argv.push_back(absl::StrCat("--send_credit_bytes=", o.send_credit_bytes));
  if (!o.gradient_compression.empty())
    argv.push_back("--gradient_compression=" + o.gradient_compression);
  argv.insert(argv.end(), o.worker_args.begin(), o.worker_args.end());
  return argv;
}

std::string HostsFileText(const std::vector<launcher::Host>& hosts, int n) {
  CHECK_LE(n, static_cast<int>(hosts.size()));
  std::string text;
  for (int i = 0; i < n; ++i) absl::StrAppend(&text, hosts[i].ToString(), "\n");
  return text;
}

std::vector<std::string> LaunchCommand(const ScalingOptions& o,
                                       const PointPlan& plan,
                                       const std::string& point_hostfile) {
  std::vector<std::string> argv = {o.launch_binary,
                                   "-n",
                                   absl::StrCat(plan.workers()),
                                   "-s",
                                   absl::StrCat(plan.servers()),
                                   "--launcher",
                                   o.ssh ? "ssh" : "local"};
  if (o.ssh) {
    argv.insert(argv.end(), {"-H", point_hostfile});
    if (!o.ssh_config.empty())
      argv.insert(argv.end(), {"--ssh_config", o.ssh_config});
  }
  argv.insert(argv.end(), o.launch_args.begin(), o.launch_args.end());
  argv.push_back("--");
  std::vector<std::string> worker = WorkerCommand(o, plan);
  argv.insert(argv.end(), worker.begin(), worker.end());
  return argv;
}

absl::StatusOr<std::vector<WorkerResult>> ParseBenchmarkOutput(
    absl::string_view output, const ScalingOptions& o, const PointPlan& plan) {
  const int g = plan.gpus_per_worker;
  std::vector<WorkerResult> results;
  std::set<int> ranks;
  for (absl::string_view line : Lines(output)) {
    line = absl::StripTrailingAsciiWhitespace(line);
    size_t at = line.find(kBenchmarkMarker);
    while (at != absl::string_view::npos &&
           (at + strlen(kBenchmarkMarker) >= line.size() ||
            line[at + strlen(kBenchmarkMarker)] != '{')) {
      at = line.find(kBenchmarkMarker, at + 1);
    }
    if (at == absl::string_view::npos) continue;
    const absl::string_view text = line.substr(at + strlen(kBenchmarkMarker));
    const Json obj = Json::parse(text, nullptr, /*allow_exceptions=*/false);
    WorkerResult r;
    absl::Status s = obj.is_discarded()
                         ? absl::InvalidArgumentError("is not one JSON object")
                         : ParseWorkerObject(obj, &r);
    std::string why;
    if (!s.ok()) {
      why = std::string(s.message());
    } else if (r.rank >= plan.workers()) {
      why = absl::StrCat("has rank ", r.rank, " but the point has ",
                         plan.workers(), " workers");
    } else if (ranks.count(r.rank)) {
      why = absl::StrCat("repeats rank ", r.rank);
    } else if (r.devices != g) {
      why = absl::StrCat("says \"devices\":", r.devices, ", not ", g);
    } else if (r.batch_size != o.batch_size * g) {
      why = absl::StrCat("says \"batch_size\":", r.batch_size, ", not ",
                         o.batch_size * g, " (", o.batch_size, " per GPU x ", g,
                         ")");
    } else if (r.batches != o.batches) {
      why = absl::StrCat("says \"batches\":", r.batches, ", not ", o.batches);
    } else if (r.warmup_batches != o.warmup_batches) {
      why = absl::StrCat("says \"warmup_batches\":", r.warmup_batches, ", not ",
                         o.warmup_batches);
    } else if (std::fabs(r.time_dilation - o.time_dilation) >
               1e-6 * o.time_dilation) {
      why = absl::StrCat("says \"time_dilation\":", r.time_dilation, ", not ",
                         o.time_dilation);
    }
    if (!why.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("a worker's benchmark line ", why, ": ", line));
    }
    ranks.insert(r.rank);
    results.push_back(std::move(r));
  }
  if (static_cast<int>(results.size()) < plan.workers()) {
    std::vector<int> missing;
    for (int i = 0; i < plan.workers(); ++i) {
      if (!ranks.count(i)) missing.push_back(i);
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "no `benchmark: {...}` line from worker rank",
        missing.size() > 1 ? "s " : " ", absl::StrJoin(missing, ", "), " (",
        results.size(), " of ", plan.workers(), " workers printed one)"));
  }
  std::sort(results.begin(), results.end(),
            [](const WorkerResult& a, const WorkerResult& b) {
              return a.rank < b.rank;
            });
  return results;
}

std::string Tail(absl::string_view text, int lines) {
  std::vector<absl::string_view> all = Lines(text);
  const size_t from =
      all.size() > static_cast<size_t>(lines) ? all.size() - lines : 0;
  std::string out;
  for (size_t i = from; i < all.size(); ++i)
    absl::StrAppend(&out, all[i], "\n");
  return out;
}

absl::StatusOr<CpuTimes> ParseProcStat(absl::string_view text) {
  for (absl::string_view line : Lines(text)) {
    if (!absl::ConsumePrefix(&line, "cpu ")) continue;
    std::vector<uint64_t> v;
    for (absl::string_view w : absl::StrSplit(line, ' ', absl::SkipEmpty())) {
      uint64_t x = 0;
      if (!absl::SimpleAtoi(w, &x)) break;
      v.push_back(x);
    }
    if (v.size() < 4) break;
    CpuTimes t;
    // user nice system idle iowait irq softirq steal [guest guest_nice].
    for (size_t i = 0; i < std::min<size_t>(v.size(), 8); ++i) t.total += v[i];
    const uint64_t idle = v[3] + (v.size() > 4 ? v[4] : 0);
    t.busy = t.total - idle;
    return t;
  }
  return absl::InvalidArgumentError("/proc/stat: no `cpu` line with counters");
}

absl::StatusOr<CpuTimes> ReadCpuTimes() {
  std::ifstream in("/proc/stat");
  if (!in) return absl::NotFoundError("cannot read /proc/stat");
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseProcStat(ss.str());
}

double CpuPercent(const CpuTimes& before, const CpuTimes& after) {
  if (after.total <= before.total || after.busy < before.busy) return 0;
  return 100.0 * static_cast<double>(after.busy - before.busy) /
         static_cast<double>(after.total - before.total);
}

absl::StatusOr<Reference> ParseReference(absl::string_view text,
                                         absl::string_view source) {
  Reference ref;
  bool header = false;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line.front() == '#') continue;
    auto error = [&](absl::string_view why) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ":", line_no, ": ", why, ": '", line, "'"));
    };
    std::vector<absl::string_view> cells = absl::StrSplit(line, ',');
    for (auto& c : cells) c = absl::StripAsciiWhitespace(c);
    if (!header) {
      if (cells.size() != 2 || cells[0] != "gpus" ||
          cells[1] != "images_per_sec") {
        return error("the header must be gpus,images_per_sec");
      }
      header = true;
      continue;
    }
    int gpus = 0;
    double ips = 0;
    if (cells.size() != 2) return error("expected GPUS,IMAGES_PER_SEC");
    if (!absl::SimpleAtoi(cells[0], &gpus) || gpus < 1)
      return error("GPUs must be an integer >= 1");
    if (!absl::SimpleAtod(cells[1], &ips) || !std::isfinite(ips) || ips <= 0)
      return error("images/s must be a number > 0");
    if (ref.count(gpus)) return error(absl::StrCat(gpus, " GPUs again"));
    ref[gpus] = ips;
  }
  if (ref.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": no rows (expected a gpus,images_per_sec header and rows)"));
  }
  return ref;
}

absl::StatusOr<Reference> ReadReference(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("--reference ", path, ": cannot read it"));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseReference(ss.str(), path);
}

void ComputeScaling(const Reference* reference,
                    std::vector<PointResult>* points) {
  const PointResult* base = nullptr;
  for (const auto& p : *points) {
    if (p.ok && (base == nullptr || p.plan.gpus < base->plan.gpus)) base = &p;
  }
  const double rate =
      base == nullptr ? 0 : base->images_per_sec / base->plan.gpus;
  for (auto& p : *points) {
    p.speedup = p.efficiency = 0;
    if (p.ok && rate > 0) {
      p.speedup = p.images_per_sec / rate;
      p.efficiency = p.speedup / p.plan.gpus;
    }
    p.reference.reset();
    if (reference != nullptr) {
      auto it = reference->find(p.plan.gpus);
      if (it != reference->end()) p.reference = it->second;
    }
  }
}

std::string FormatTable(const std::vector<PointResult>& points,
                        bool with_reference) {
  std::string out = absl::StrFormat("%6s %12s %9s %10s", "GPUs", "images/s",
                                    "speed-up", "efficiency");
  if (with_reference)
    absl::StrAppend(&out, absl::StrFormat(" %10s %6s", "reference", "ratio"));
  absl::StrAppend(&out, absl::StrFormat(" %6s\n", "CPU %"));
  for (const auto& p : points) {
    absl::StrAppend(&out, absl::StrFormat("%6d", p.plan.gpus));
    if (p.ok) {
      absl::StrAppend(&out,
                      absl::StrFormat(" %12.2f %9.2f %10.3f", p.images_per_sec,
                                      p.speedup, p.efficiency));
    } else {
      absl::StrAppend(&out,
                      absl::StrFormat(" %12s %9s %10s", "failed", "-", "-"));
    }
    if (with_reference) {
      if (p.reference.has_value()) {
        absl::StrAppend(&out, absl::StrFormat(" %10.2f", *p.reference));
        if (p.ok) {
          absl::StrAppend(
              &out, absl::StrFormat(" %6.3f", p.images_per_sec / *p.reference));
        } else {
          absl::StrAppend(&out, absl::StrFormat(" %6s", "-"));
        }
      } else {
        absl::StrAppend(&out, absl::StrFormat(" %10s %6s", "-", "-"));
      }
    }
    absl::StrAppend(&out, p.ok ? absl::StrFormat(" %6.1f\n", p.cpu_percent)
                               : absl::StrFormat(" %6s\n", "-"));
  }
  return out;
}

std::string CsvText(const std::vector<PointResult>& points) {
  std::string out =
      "gpus,hosts,workers,servers,gpus_per_worker,status,images_per_sec,"
      "speedup,efficiency,reference_images_per_sec,ratio,cpu_percent,"
      "wall_seconds,compute_s,push_wait_s,pull_wait_s,other_s\n";
  for (const auto& p : points) {
    absl::StrAppend(&out, p.plan.gpus, ",", p.plan.hosts, ",", p.plan.workers(),
                    ",", p.plan.servers(), ",", p.plan.gpus_per_worker, ",",
                    p.ok ? "ok" : "failed", ",");
    const std::string ref = p.reference ? Num(*p.reference) : "";
    if (!p.ok) {
      absl::StrAppend(&out, ",,,", ref, ",,,", Num(p.wall_seconds), ",,,,\n");
      continue;
    }
    double split[4] = {0, 0, 0, 0};
    for (const auto& w : p.workers) {
      split[0] += w.compute_s;
      split[1] += w.push_wait_s;
      split[2] += w.pull_wait_s;
      split[3] += w.other_s;
    }
    const double n = std::max<size_t>(p.workers.size(), 1);
    absl::StrAppend(&out, Num(p.images_per_sec), ",", Num(p.speedup), ",",
                    Num(p.efficiency), ",", ref, ",",
                    p.reference ? Num(p.images_per_sec / *p.reference) : "",
                    ",", Num(p.cpu_percent), ",", Num(p.wall_seconds), ",",
                    Num(split[0] / n), ",", Num(split[1] / n), ",",
                    Num(split[2] / n), ",", Num(split[3] / n), "\n");
  }
  return out;
}

nlohmann::ordered_json ResultsJson(const ScalingOptions& o,
                                   const std::vector<std::string>& argv,
                                   const std::string& reference_path,
                                   const Reference* reference,
                                   const std::vector<PointResult>& points) {
  Json flags;
  flags["launcher"] = o.ssh ? "ssh" : "local";
  flags["hostfile"] = o.hostfile;
  Json hosts = Json::array();
  for (const auto& h : o.hosts) hosts.push_back(h.ToString());
  flags["hosts"] = hosts;
  flags["ssh_config"] = o.ssh_config;
  flags["gpus_per_host"] = o.gpus_per_host;
  flags["network"] = o.network;
  flags["num_layers"] = o.num_layers;
  flags["image_shape"] = o.image_shape;
  flags["num_classes"] = o.num_classes;
  flags["batch_size"] = o.batch_size;
  flags["kv_store"] = o.kv_store;
  flags["points"] = o.points;
  flags["mode"] = o.mode;
  flags["emulate_device"] = o.emulate_device;
  flags["time_dilation"] = o.time_dilation;
  flags["warmup_batches"] = o.warmup_batches;
  flags["batches"] = o.batches;
  flags["cpu_devices"] = o.cpu_devices;
  flags["slice_bytes"] = o.slice_bytes;
  flags["send_credit_bytes"] = o.send_credit_bytes;
  flags["gradient_compression"] = o.gradient_compression;
  flags["worker_args"] = o.worker_args;
  flags["launch_args"] = o.launch_args;
  flags["launch_binary"] = o.launch_binary;
  flags["worker_binary"] = o.worker_binary;
  flags["out_dir"] = o.out_dir;
  if (o.point_timeout != absl::InfiniteDuration())
    flags["point_timeout_s"] = absl::ToDoubleSeconds(o.point_timeout);
  Json out;
  out["tool"] = "scaling";
  out["command_line"] = argv;
  out["flags"] = flags;
  if (reference != nullptr) {
    Json ref;
    ref["file"] = reference_path;
    Json rows = Json::array();
    for (const auto& [gpus, ips] : *reference)
      rows.push_back({{"gpus", gpus}, {"images_per_sec", ips}});
    ref["rows"] = rows;
    out["reference"] = ref;
  } else {
    out["reference"] = nullptr;
  }
  Json list = Json::array();
  for (const auto& p : points) {
    Json j;
    j["gpus"] = p.plan.gpus;
    j["hosts"] = p.plan.hosts;
    j["workers"] = p.plan.workers();
    j["servers"] = p.plan.servers();
    j["gpus_per_worker"] = p.plan.gpus_per_worker;
    j["ok"] = p.ok;
    if (!p.ok) j["error"] = p.error;
    j["images_per_sec"] = p.ok ? Json(p.images_per_sec) : Json(nullptr);
    j["speedup"] = p.ok ? Json(p.speedup) : Json(nullptr);
    j["efficiency"] = p.ok ? Json(p.efficiency) : Json(nullptr);
    j["reference_images_per_sec"] =
        p.reference ? Json(*p.reference) : Json(nullptr);
    j["ratio"] = p.ok && p.reference ? Json(p.images_per_sec / *p.reference)
                                     : Json(nullptr);
    j["cpu_percent"] = p.cpu_percent;
    j["wall_seconds"] = p.wall_seconds;
    j["launch_command"] = p.launch_command;
    Json workers = Json::array();
    for (const auto& w : p.workers) workers.push_back(w.raw);
    j["workers"] = workers;
    list.push_back(j);
  }
  out["points"] = list;
  return out;
}

std::string PlotData(const std::vector<PointResult>& points,
                     const Reference* reference) {
  std::string out = "# gpus images_per_sec ideal efficiency\n";
  const PointResult* base = nullptr;
  for (const auto& p : points) {
    if (p.ok && (base == nullptr || p.plan.gpus < base->plan.gpus)) base = &p;
  }
  for (const auto& p : points) {
    if (!p.ok) continue;
    const double ideal = base->images_per_sec / base->plan.gpus * p.plan.gpus;
    absl::StrAppend(&out, p.plan.gpus, " ", Num(p.images_per_sec), " ",
                    Num(ideal), " ", Num(p.efficiency), "\n");
  }
  absl::StrAppend(&out, "\n\n# reference: gpus images_per_sec efficiency\n");
  if (reference != nullptr && !reference->empty()) {
    const auto& [g0, ips0] = *reference->begin();
    for (const auto& [gpus, ips] : *reference) {
      absl::StrAppend(&out, gpus, " ", Num(ips), " ",
                      Num(ips / (ips0 / g0 * gpus)), "\n");
    }
  }
  return out;
}

std::string GnuplotScript(const std::string& title, bool with_reference,
                          const std::vector<int>& gpus,
                          const std::string& data_file,
                          const std::string& png_file,
                          const std::string& svg_file) {
  int lo = 1, hi = 2;
  if (!gpus.empty()) {
    lo = *std::min_element(gpus.begin(), gpus.end());
    hi = *std::max_element(gpus.begin(), gpus.end());
  }
  std::vector<std::string> tics;
  for (int g : gpus) tics.push_back(absl::StrCat(g));
  const std::string data = GnuplotQuote(data_file);
  std::string plot = absl::StrCat(
      "plot ", data,
      " index 0 using 1:2 with linespoints lw 2 pt 7 lc rgb '#1f77b4' "
      "title 'measured', \\\n"
      "     '' index 0 using 1:3 with lines dt 2 lc rgb '#7f7f7f' "
      "title 'ideal', \\\n"
      "     '' index 0 using 1:4 axes x1y2 with linespoints dt 3 pt 6 "
      "lc rgb '#d62728' title 'efficiency'");
  if (with_reference) {
    absl::StrAppend(
        &plot,
        ", \\\n     '' index 1 using 1:2 with linespoints lw 2 pt 5 "
        "lc rgb '#2ca02c' title 'reference', \\\n"
        "     '' index 1 using 1:3 axes x1y2 with linespoints dt 3 pt 4 "
        "lc rgb '#2ca02c' title 'reference efficiency'");
  }
  return absl::StrCat(
      "# Written by tools/scaling: images/s against GPUs. Restyle it and run\n"
      "# `gnuplot scaling.gp` in this folder to redraw the plots.\n"
      "set title ",
      GnuplotQuote(title), " noenhanced\n", "set xlabel 'GPUs'\n",
      "set ylabel 'images/s'\n", "set y2label 'efficiency'\n",
      "set logscale x 2\n",
      absl::StrFormat("set xrange [%g:%g]\n", lo / 1.25, hi * 1.25),
      tics.empty()
          ? ""
          : absl::StrCat("set xtics (", absl::StrJoin(tics, ", "), ")\n"),
      "set yrange [0:*]\n", "set y2range [0:1.2<*]\n", "set ytics nomirror\n",
      "set y2tics\n", "set grid\n", "set key outside below center horizontal\n",
      "# For a log-log view (the ideal line straight): set logscale y 2\n",
      "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n",
      "  set terminal pngcairo size 1000,650 noenhanced\n", "} else {\n",
      "  set terminal png size 1000,650 noenhanced\n", "}\n", "set output ",
      GnuplotQuote(png_file), "\n", plot, "\n",
      "set terminal svg size 1000,650 dynamic noenhanced\n", "set output ",
      GnuplotQuote(svg_file), "\n", "replot\n", "unset output\n");
}

std::string FindInPath(const std::string& program) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return "";
  for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty())) {
    std::string candidate = absl::StrCat(dir, "/", program);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

absl::Status WriteTextFile(const std::string& path, absl::string_view text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

namespace {

std::vector<std::string> Environment() {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) env.push_back(*e);
  return env;
}

// Runs `argv` to its end (at most `limit`); *out gets its output. Returns
// its subprocess, exited, or an error when it could not start or ran over.
absl::StatusOr<launcher::Subprocess> RunToEnd(
    const std::vector<std::string>& argv, absl::Duration limit,
    std::string* out) {
  auto p = launcher::Subprocess::Start(argv, Environment());
  if (!p.ok()) return p.status();
  p->CloseStdin();
  const absl::Time deadline = absl::Now() + limit;
  while (true) {
    const bool open = p->ReadOutput(out);
    if (p->Poll() && !open) break;
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          argv[0], " did not finish within ", absl::FormatDuration(limit)));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return std::move(*p);
}

}  // namespace

absl::Status WritePlot(const std::string& dir, const std::string& gnuplot,
                       const std::string& title,
                       const std::vector<PointResult>& points,
                       const Reference* reference) {
  std::vector<int> gpus;
  for (const auto& p : points) {
    if (p.ok) gpus.push_back(p.plan.gpus);
  }
  if (gpus.empty())
    return absl::FailedPreconditionError("no point succeeded: nothing to plot");
  absl::Status s =
      WriteTextFile(dir + "/scaling.dat", PlotData(points, reference));
  if (s.ok()) {
    s = WriteTextFile(
        dir + "/scaling.gp",
        GnuplotScript(title, reference != nullptr, gpus, "scaling.dat",
                      "scaling.png", "scaling.svg"));
  }
  if (!s.ok()) return s;
  if (gnuplot.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("gnuplot is not installed: run scripts/setup (it installs "
                     "gnuplot-nox), then `gnuplot scaling.gp` in ",
                     dir));
  }
  std::string out;
  auto p =
      RunToEnd({"/bin/sh", "-c",
                absl::StrCat("cd ", launcher::ShellQuote(dir), " && exec ",
                             launcher::ShellQuote(gnuplot), " scaling.gp")},
               absl::Seconds(120), &out);
  if (!p.ok()) return p.status();
  if (!p->succeeded()) {
    return absl::InternalError(absl::StrCat("gnuplot on ", dir, "/scaling.gp ",
                                            p->DescribeExit(), ":\n",
                                            Tail(out, 20)));
  }
  for (const char* f : {"/scaling.png", "/scaling.svg"}) {
    if (access((dir + f).c_str(), R_OK) != 0) {
      return absl::InternalError(
          absl::StrCat("gnuplot did not write ", dir, f, ":\n", Tail(out, 20)));
    }
  }
  return absl::OkStatus();
}

PointResult RunPoint(const ScalingOptions& o, const PointPlan& plan,
                     const std::vector<std::string>& launch_command,
                     const std::string& point_name, const std::string& log_path,
                     const std::atomic<int>* stop) {
  PointResult r;
  r.plan = plan;
  r.launch_command = launch_command;
  std::ofstream log(log_path, std::ios::app);
  log << "$ "
      << absl::StrJoin(launch_command, " ",
                       [](std::string* o, const std::string& a) {
                         o->append(launcher::ShellQuote(a));
                       })
      << "\n";
  auto fail = [&](const std::string& why, const std::string& output) {
    r.ok = false;
    r.error = absl::StrCat(point_name, ": ", why);
    if (!output.empty()) {
      absl::StrAppend(&r.error,
                      "\nlast lines of launch's output (all of it in ",
                      log_path, "):\n", Tail(output, 25));
    }
    return r;
  };
  const absl::StatusOr<CpuTimes> cpu_before = ReadCpuTimes();
  const absl::Time start = absl::Now();
  auto p = launcher::Subprocess::Start(launch_command, Environment());
  if (!p.ok()) return fail(std::string(p.status().message()), "");
  p->CloseStdin();
  std::string output;
  std::string stopped;  // Why the job was stopped, if it was.
  absl::Time kill_at = absl::InfiniteFuture();
  while (true) {
    const size_t before = output.size();
    const bool open = p->ReadOutput(&output);
    if (output.size() > before) log << output.substr(before) << std::flush;
    if (p->Poll() && !open) break;
    const absl::Time now = absl::Now();
    if (stopped.empty()) {
      if (stop != nullptr && stop->load() != 0) {
        stopped = absl::StrCat("stopped by signal ", stop->load());
      } else if (now - start > o.point_timeout) {
        stopped = absl::StrCat("timed out after ",
                               absl::FormatDuration(o.point_timeout),
                               " (--point_timeout_s)");
      }
      if (!stopped.empty()) {
        p->SignalGroup(SIGTERM);  // launch stops the job's processes.
        kill_at = now + absl::Seconds(20);
      }
    } else if (now > kill_at) {
      p->SignalGroup(SIGKILL);
      kill_at = absl::InfiniteFuture();
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  r.wall_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  const absl::StatusOr<CpuTimes> cpu_after = ReadCpuTimes();
  if (cpu_before.ok() && cpu_after.ok())
    r.cpu_percent = CpuPercent(*cpu_before, *cpu_after);
  if (!stopped.empty()) return fail(stopped, output);
  if (!p->succeeded())
    return fail(absl::StrCat("launch ", p->DescribeExit()), output);
  auto workers = ParseBenchmarkOutput(output, o, plan);
  if (!workers.ok())
    return fail(std::string(workers.status().message()), output);
  r.workers = std::move(*workers);
  r.images_per_sec = 0;
  for (const auto& w : r.workers) r.images_per_sec += w.images_per_sec;
  r.ok = true;
  return r;
}

}  // namespace scaling
}  // namespace pstrain
