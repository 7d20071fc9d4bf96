// The scaling driver behind tools/scaling_main.cc: runs the same synthetic
// benchmark job (`worker --benchmark`) at 1, 2, 4, ... GPUs through pstrain's
// own `launch`, one job per point, and reports images/s, speed-up and
// efficiency as a table, CSV, JSON and a gnuplot plot, optionally against a
// published reference table (MXNet's, configs/scaling/).
//
// A point of P GPUs runs on hosts = ceil(P / gpus_per_host) hosts (the first
// lines of the hosts file), one worker per host with g = min(P,
// gpus_per_host) GPUs, and as many servers as hosts, co-located as MXNet's
// launch.py places them (launch puts process i of servers-then-workers on
// hosts[i % N], and each point gets a hosts file of exactly its hosts).
//
// Each worker prints, once at the end of its run, one line containing
// `benchmark: {JSON}` (see ParseBenchmarkOutput for the fields).
#ifndef PSTRAIN_TOOLS_SCALING_H_
#define PSTRAIN_TOOLS_SCALING_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "launcher/hostfile.h"
#include "nlohmann/json.hpp"

namespace pstrain {
namespace scaling {

// What a run measures and how (the flags of tools/scaling_main.cc).
struct ScalingOptions {
  // ssh: hosts from `hostfile` (read into `hosts`); local: every process on
  // this machine, `hosts` empty.
  bool ssh = false;
  std::string hostfile;
  std::vector<launcher::Host> hosts;
  std::string ssh_config;  // launch --ssh_config (ssh only).

  int gpus_per_host = 16;
  std::string network = "resnet";
  int num_layers = 0;  // 0: not passed to the worker.
  std::string image_shape = "3,224,224";
  int num_classes = 1000;  // 0: not passed to the worker.
  int batch_size = 32;     // Per GPU.
  std::string kv_store = "dist_device_sync";
  std::vector<int> points;       // GPUs per point, ascending, distinct.
  std::string mode = "pstrain";  // worker --kvstore_mode: mxnet or pstrain.
  std::string emulate_device;    // Device profile (JSON); "": none.
  double time_dilation = 1;      // worker --time_dilation.
  int warmup_batches = 2;
  int batches = 5;           // Timed batches per worker.
  bool cpu_devices = false;  // g real CPU devices instead of --gpus.
  // Worker --slice_bytes, --send_credit_bytes (-1: not passed) and
  // --gradient_compression ("": not passed).
  int64_t slice_bytes = -1;
  int64_t send_credit_bytes = -1;
  std::string gradient_compression;
  std::vector<std::string> worker_args;  // Appended to every worker.
  std::vector<std::string> launch_args;  // Appended to launch's own flags.
  std::string launch_binary;
  std::string worker_binary;
  std::string out_dir;
  absl::Duration point_timeout = absl::InfiniteDuration();
};

// One point of the run.
struct PointPlan {
  int gpus = 0;             // P.
  int hosts = 0;            // ceil(P / gpus_per_host); also workers, servers.
  int gpus_per_worker = 0;  // g = min(P, gpus_per_host).
  int workers() const { return hosts; }
  int servers() const { return hosts; }
};

// Parses --points ("1,2,4,8"): positive integers, returned ascending.
// InvalidArgument naming --points for an empty list, a non-integer, a value
// < 1 or a repeated value.
absl::StatusOr<std::vector<int>> ParsePoints(absl::string_view text);

// Plans a point of `gpus` GPUs. `available_hosts` < 0 means no limit (local
// launcher). InvalidArgument when gpus < 1 or gpus_per_host < 1, when `gpus`
// is not a multiple of g (naming --points and --gpus_per_host), or when the
// point needs more hosts than `available_hosts` (naming `hostfile`).
absl::StatusOr<PointPlan> PlanPoint(int gpus, int gpus_per_host,
                                    int available_hosts,
                                    absl::string_view hostfile);

// Checks every option and plans every point. InvalidArgument names the flag
// and value that are wrong. Does not touch the file system.
absl::Status ValidateOptions(const ScalingOptions& options);

// The worker command line (binary first) for `plan`.
std::vector<std::string> WorkerCommand(const ScalingOptions& options,
                                       const PointPlan& plan);

// The text of a hosts file with the first `n` of `hosts`.
// REQUIRES: n <= hosts.size().
std::string HostsFileText(const std::vector<launcher::Host>& hosts, int n);

// The launch command line for `plan`; `point_hostfile` (ssh only) is a hosts
// file of exactly the point's hosts (HostsFileText).
std::vector<std::string> LaunchCommand(const ScalingOptions& options,
                                       const PointPlan& plan,
                                       const std::string& point_hostfile);

// One worker's `benchmark: ` line.
struct WorkerResult {
  int rank = 0;
  int devices = 0;
  int batch_size = 0;
  int batches = 0;
  int warmup_batches = 0;
  double time_dilation = 1;
  double wall_seconds = 0;
  double images_per_sec = 0;
  double compute_s = 0;
  double push_wait_s = 0;
  double pull_wait_s = 0;
  double other_s = 0;
  nlohmann::ordered_json raw;  // The whole object, extra fields included.
};

// Finds the workers' results in launch's output: every line in which
// `benchmark: ` is directly followed by `{` holds one JSON object (to the
// end of the line) with at least the integer fields rank, devices,
// batch_size, batches, warmup_batches and the number fields time_dilation,
// wall_seconds, images_per_sec (finite, > 0), compute_s, push_wait_s,
// pull_wait_s, other_s; other fields are kept in `raw`. Returns them by rank.
// InvalidArgument quoting the offending line when a line is not such an
// object, when a field disagrees with `plan`/`options` (devices != g,
// batch_size != batch_size * g, batches, warmup_batches), when a rank is out
// of range or repeated, or (naming the missing ranks) when fewer than
// plan.workers() lines are found.
absl::StatusOr<std::vector<WorkerResult>> ParseBenchmarkOutput(
    absl::string_view output, const ScalingOptions& options,
    const PointPlan& plan);

// The last `lines` lines of `text` (all of it when shorter).
std::string Tail(absl::string_view text, int lines);

// CPU time counters of the machine (the `cpu` line of /proc/stat), jiffies.
struct CpuTimes {
  uint64_t busy = 0;   // Everything but idle and iowait.
  uint64_t total = 0;  // All fields but guest/guest_nice (counted in user).
};
// Parses /proc/stat's text. InvalidArgument when there is no `cpu ` line
// with at least 4 numbers.
absl::StatusOr<CpuTimes> ParseProcStat(absl::string_view text);
// Reads /proc/stat.
absl::StatusOr<CpuTimes> ReadCpuTimes();
// The busy share of all CPUs between two readings, in percent (0..100); 0
// when no time passed.
double CpuPercent(const CpuTimes& before, const CpuTimes& after);

// A published table: GPUs -> images/s.
using Reference = std::map<int, double>;

// Parses a reference CSV: `#` comments and blank lines anywhere, a header
// line `gpus,images_per_sec`, then `GPUS,IMAGES_PER_SEC` rows (GPUs >= 1,
// images/s > 0, each GPU count once). InvalidArgument "SOURCE:LINE: why",
// or "SOURCE: ..." when it has no rows.
absl::StatusOr<Reference> ParseReference(absl::string_view text,
                                         absl::string_view source);
// Reads and parses the reference CSV at `path`; errors name the path.
absl::StatusOr<Reference> ReadReference(const std::string& path);

// One measured point and what follows from it.
struct PointResult {
  PointPlan plan;
  std::vector<std::string> launch_command;
  bool ok = false;
  std::string error;  // When !ok.
  std::vector<WorkerResult> workers;
  double images_per_sec = 0;  // Sum over the workers.
  double wall_seconds = 0;
  double cpu_percent = 0;
  // From ComputeScaling.
  double speedup = 0;     // images/s / per-GPU rate of the base point.
  double efficiency = 0;  // speedup / GPUs.
  std::optional<double> reference;  // Reference images/s at these GPUs.
};

// Fills speedup and efficiency of the successful points against the
// per-GPU rate of the successful point with the fewest GPUs, and each
// point's reference value when `reference` has its GPU count.
void ComputeScaling(const Reference* reference,
                    std::vector<PointResult>* points);

// The human table: GPUs | images/s | speed-up | efficiency [| reference |
// ratio] | CPU %; a failed point shows "failed".
std::string FormatTable(const std::vector<PointResult>& points,
                        bool with_reference);

// scaling.csv: a header, then one row per point (failed ones with status
// "failed" and empty measurements). Means over the workers of each time
// split column.
std::string CsvText(const std::vector<PointResult>& points);

// scaling.json: {"tool", "command_line", "flags", "reference", "points":
// [{..., "workers": [the workers' objects]}]}.
nlohmann::ordered_json ResultsJson(const ScalingOptions& options,
                                   const std::vector<std::string>& argv,
                                   const std::string& reference_path,
                                   const Reference* reference,
                                   const std::vector<PointResult>& points);

// scaling.dat for gnuplot: block 0 (index 0) the successful points as
// `gpus images_per_sec ideal efficiency`; block 1 (index 1) the reference
// as `gpus images_per_sec efficiency` (efficiency against its smallest
// entry), empty without one.
std::string PlotData(const std::vector<PointResult>& points,
                     const Reference* reference);

// scaling.gp: reads `data_file`, writes `png_file` (pngcairo if the
// gnuplot has it, else png) and `svg_file`, all relative to the folder it
// runs in. Images/s against GPUs on a log2 x axis, the ideal line and
// efficiency on the second y axis; the reference when `with_reference`.
std::string GnuplotScript(const std::string& title, bool with_reference,
                          const std::vector<int>& gpus,
                          const std::string& data_file,
                          const std::string& png_file,
                          const std::string& svg_file);

// The path of `program` found in $PATH, or "" when it is not there.
std::string FindInPath(const std::string& program);

// Writes `text` to `path`; errors name the path.
absl::Status WriteTextFile(const std::string& path, absl::string_view text);

// Writes DIR/scaling.dat and DIR/scaling.gp and runs `gnuplot` (a path) in
// DIR on the script, producing DIR/scaling.png and DIR/scaling.svg.
// FailedPrecondition saying to run scripts/setup when `gnuplot` is empty;
// Internal with gnuplot's output when it fails.
absl::Status WritePlot(const std::string& dir, const std::string& gnuplot,
                       const std::string& title,
                       const std::vector<PointResult>& points,
                       const Reference* reference);

// Runs one point: `launch_command` to its end, its output appended to
// `log_path`, CPU use measured around it, the workers' lines parsed. Stops
// the job (SIGTERM to launch, SIGKILL 20 s later) after
// options.point_timeout or once *stop becomes non-zero. Never fails
// otherwise: a failure is a result with ok = false and an error naming the
// point (`point_name`) and quoting the tail of launch's output.
PointResult RunPoint(const ScalingOptions& options, const PointPlan& plan,
                     const std::vector<std::string>& launch_command,
                     const std::string& point_name, const std::string& log_path,
                     const std::atomic<int>* stop);

}  // namespace scaling
}  // namespace pstrain

#endif  // PSTRAIN_TOOLS_SCALING_H_
