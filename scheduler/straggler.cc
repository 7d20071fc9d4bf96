#include "scheduler/straggler.h"

#include <algorithm>
#include <array>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "glog/logging.h"
#include "util/escape.h"

namespace pstrain {
namespace scheduler {
namespace {

// The parts of a worker's own time, as the reason names them.
constexpr int kParts = 4;
constexpr std::array<const char*, kParts> kPartNames = {
    "data wait", "compute", "wait-push", "optimizer"};

// One worker's latest report, in the terms of straggler.h.
struct Sample {
  int rank = -1;
  std::string host;
  int64_t steps = 0;
  std::array<double, kParts> fraction{};  // Of its wall time.
  double own_s = 0;                       // Own seconds per image.
  bool has_split = false;
};

double Median(std::vector<double> v) {
  CHECK(!v.empty());
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 == 1 ? v[m] : (v[m - 1] + v[m]) / 2;
}

Sample Measure(const NodeStatsEntry& e) {
  const proto::NodeStats& s = e.stats;
  Sample x;
  x.rank = e.rank;
  x.host = EscapeForLog(e.host);
  x.steps = s.steps();
  x.fraction = {s.data_fraction(), s.compute_fraction(), s.wait_push_fraction(),
                s.optimizer_fraction()};
  double own = 0;
  for (double f : x.fraction) own += f;
  x.has_split = own > 0;
  if (!x.has_split) own = 1;  // The whole wall time.
  x.own_s = own / s.images_per_sec();
  return x;
}

}  // namespace

StragglerDetector::StragglerDetector(const StragglerOptions& options)
    : o_(options) {
  CHECK_GT(o_.ratio, 1);
  CHECK_GE(o_.intervals, 1);
}

std::vector<std::string> StragglerDetector::Update(
    const std::vector<NodeStatsEntry>& stats) {
  std::vector<Sample> samples;
  for (const NodeStatsEntry& e : stats) {
    if (e.role != proto::WORKER || !e.has_stats ||
        !(e.stats.images_per_sec() > 0)) {
      continue;
    }
    samples.push_back(Measure(e));
  }
  std::vector<std::string> lines;
  if (samples.size() < 2) return lines;
  std::vector<double> own;
  std::array<std::vector<double>, kParts> parts;
  for (const Sample& x : samples) {
    own.push_back(x.own_s);
    for (int i = 0; i < kParts; ++i) parts[i].push_back(x.fraction[i]);
  }
  const double median = Median(own);
  std::array<double, kParts> median_part;
  for (int i = 0; i < kParts; ++i) median_part[i] = Median(parts[i]);
  if (!(median > 0)) return lines;

  for (const Sample& x : samples) {
    Worker& w = workers_[x.rank];
    if (x.steps == w.last_steps) continue;  // No new report.
    w.last_steps = x.steps;
    const double ratio = x.own_s / median;
    const std::string who = absl::StrCat("worker ", x.rank, " on ", x.host);
    if (ratio <= o_.ratio) {
      w.slow = 0;
      if (w.reported && ++w.fast >= o_.intervals) {
        w.reported = false;
        w.reason.clear();
        lines.push_back(absl::StrFormat(
            "%s is no longer a straggler (%.2fx the median worker's own time "
            "per image)",
            who, ratio));
      }
      continue;
    }
    w.fast = 0;
    ++w.slow;
    // The part furthest above the median worker's.
    int worst = 0;
    for (int i = 1; i < kParts; ++i) {
      if (x.fraction[i] - median_part[i] >
          x.fraction[worst] - median_part[worst]) {
        worst = i;
      }
    }
    const std::string part =
        x.has_split
            ? absl::StrFormat("%s %.0f%% (median %.0f%%)", kPartNames[worst],
                              100 * x.fraction[worst], 100 * median_part[worst])
            : "no time split reported";
    const std::string reason = absl::StrFormat(
        "%s, %.1fx the median worker's own time per image (%.2f ms vs %.2f "
        "ms)",
        part, ratio, 1e3 * x.own_s, 1e3 * median);
    if (w.reported) w.reason = reason;
    if (!w.reported && w.slow >= o_.intervals) {
      w.reported = true;
      w.reported_ratio = ratio;
      w.reason = reason;
      lines.push_back(absl::StrCat("straggler: ", who, ": ", reason));
    } else if (w.reported && ratio >= 1.25 * w.reported_ratio) {
      w.reported_ratio = ratio;
      lines.push_back(absl::StrCat("straggler worse: ", who, ": ", reason));
    }
  }
  return lines;
}

void StragglerDetector::Mark(status::JobStatus* job) const {
  for (status::NodeStatus& n : job->nodes) {
    if (n.role != "worker") continue;
    auto it = workers_.find(n.rank);
    if (it == workers_.end() || !it->second.reported) continue;
    n.straggler = true;
    n.straggler_reason = it->second.reason;
  }
}

}  // namespace scheduler
}  // namespace pstrain
