#include "server/time_split.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace pstrain {
namespace server {

void ServerTimeSplit::MessageBegins(absl::Time now) {
  if (!started_) {
    started_ = true;
    start_ = now;
    last_end_ = now;
  }
  const double gap = std::max(0.0, absl::ToDoubleSeconds(now - last_end_));
  (round_open_ ? t_.wait_s : t_.idle_s) += gap;
  begin_ = now;
}

void ServerTimeSplit::MessageEnds(absl::Time now, double sum_s, double update_s,
                                  double send_s, bool round_open) {
  const double handled = std::max(0.0, absl::ToDoubleSeconds(now - begin_));
  t_.sum_s += sum_s;
  t_.update_s += update_s;
  t_.send_s += send_s;
  t_.other_s += std::max(0.0, handled - sum_s - update_s - send_s);
  last_end_ = std::max(now, begin_);
  round_open_ = round_open;
}

ServerTimes ServerTimeSplit::Totals(absl::Time now) const {
  if (!started_) return ServerTimes();
  ServerTimes t = t_;
  const double gap = std::max(0.0, absl::ToDoubleSeconds(now - last_end_));
  (round_open_ ? t.wait_s : t.idle_s) += gap;
  t.period_s = std::max(0.0, absl::ToDoubleSeconds(now - start_));
  t.bytes_in = bytes_in_;
  t.bytes_out = bytes_out_;
  return t;
}

std::string ServerTimeSplitLine(int rank, const ServerTimes& t) {
  const double parts =
      t.sum_s + t.update_s + t.send_s + t.other_s + t.wait_s + t.idle_s;
  const double d = std::max(t.period_s, parts);
  auto pct = [d](double s) { return d > 0 ? 100 * s / d : 0.0; };
  return absl::StrFormat(
      "server %d: time split: sum %.0f%% update %.0f%% wait %.0f%% send "
      "%.0f%% idle %.0f%% other %.0f%% (over %.1f s)",
      rank, pct(t.sum_s), pct(t.update_s), pct(t.wait_s), pct(t.send_s),
      pct(t.idle_s), pct(t.other_s), t.period_s);
}

void FillServerStats(const ServerTimes& t, proto::NodeStats* stats) {
  const double k = t.period_s > 0 ? 1 / t.period_s : 0;
  stats->set_sum_fraction(t.sum_s * k);
  stats->set_update_fraction(t.update_s * k);
  stats->set_wait_fraction(t.wait_s * k);
  stats->set_send_fraction(t.send_s * k);
  stats->set_idle_fraction(t.idle_s * k);
  stats->set_bytes_in(t.bytes_in);
  stats->set_bytes_out(t.bytes_out);
  stats->set_period_s(t.period_s);
}

}  // namespace server
}  // namespace pstrain
