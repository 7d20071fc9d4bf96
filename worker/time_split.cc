#include "worker/time_split.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace pstrain {
namespace worker {

TimeParts& TimeParts::operator+=(const TimeParts& o) {
  data_s += o.data_s;
  compute_s += o.compute_s;
  wait_pull_s += o.wait_pull_s;
  wait_push_s += o.wait_push_s;
  optimizer_s += o.optimizer_s;
  return *this;
}

TimeParts TimeParts::operator-(const TimeParts& o) const {
  TimeParts d;
  d.data_s = data_s - o.data_s;
  d.compute_s = compute_s - o.compute_s;
  d.wait_pull_s = wait_pull_s - o.wait_pull_s;
  d.wait_push_s = wait_push_s - o.wait_push_s;
  d.optimizer_s = optimizer_s - o.optimizer_s;
  return d;
}

TimeParts TimeParts::operator*(double k) const {
  TimeParts p;
  p.data_s = data_s * k;
  p.compute_s = compute_s * k;
  p.wait_pull_s = wait_pull_s * k;
  p.wait_push_s = wait_push_s * k;
  p.optimizer_s = optimizer_s * k;
  return p;
}

void TimeSplit::Start(absl::Time now) {
  start_ = now;
  parts_ = TimeParts();
}

double TimeSplit::WallSeconds(absl::Time now) const {
  return std::max(0.0, absl::ToDoubleSeconds(now - start_));
}

double TimeSplit::Denominator(absl::Time now) const {
  return std::max(WallSeconds(now), parts_.sum());
}

double TimeSplit::OtherSeconds(absl::Time now) const {
  return std::max(0.0, Denominator(now) - parts_.sum());
}

std::string TimeSplit::Line(int epoch, absl::Time now) const {
  return TimeSplitLine(epoch, parts_, WallSeconds(now));
}

void TimeSplit::FillStats(absl::Time now, proto::NodeStats* stats) const {
  const double d = Denominator(now);
  const double k = d > 0 ? 1 / d : 0;
  stats->set_data_fraction(parts_.data_s * k);
  stats->set_compute_fraction(parts_.compute_s * k);
  stats->set_wait_pull_fraction(parts_.wait_pull_s * k);
  stats->set_wait_push_fraction(parts_.wait_push_s * k);
  stats->set_optimizer_fraction(parts_.optimizer_s * k);
  stats->set_period_s(WallSeconds(now));
}

std::string TimeSplitLine(int epoch, const TimeParts& parts, double wall_s) {
  const double d = std::max(wall_s, parts.sum());
  auto pct = [d](double s) { return d > 0 ? 100 * s / d : 0.0; };
  std::string line = absl::StrFormat(
      "Epoch[%d] Time split: data %.0f%% compute %.0f%% wait-pull %.0f%% "
      "wait-push %.0f%%",
      epoch, pct(parts.data_s), pct(parts.compute_s), pct(parts.wait_pull_s),
      pct(parts.wait_push_s));
  if (parts.optimizer_s > 0) {
    absl::StrAppendFormat(&line, " optimizer %.0f%%", pct(parts.optimizer_s));
  }
  absl::StrAppendFormat(&line, " other %.0f%%",
                        pct(std::max(0.0, d - parts.sum())));
  return line;
}

}  // namespace worker
}  // namespace pstrain
