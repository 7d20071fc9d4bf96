// Names the workers that hold the job back (issue #17, "Stragglers"), from
// the stats workers report with their heartbeats (NodeStatsTable).
//
// What "slower" means. In dist_sync every worker trains at the pace of the
// slowest, so images/s alone cannot tell which one it is; what differs is
// where the time goes: the straggler spends it on its own work while the
// others wait for weights. So each worker's own time per image is
//
//   own = (data + compute + wait-push + optimizer fractions) / images/s
//
// i.e. everything but waiting for weights (which is where the others' pace
// shows up), and a worker whose own time is more than `ratio` times the
// median worker's is slow. In dist_async the same measure works (images/s
// differ there, and so does own time). A worker that reports no split
// (all fractions 0) is measured by 1 / images/s.
//
// A worker is reported as a straggler once it has been slow in `intervals`
// consecutive reports of its own (a report counts when its step count
// moved since the previous Update, so a worker that stalls is not counted
// again on stale numbers); the report names it, its host, and the reason:
// the part of its time furthest above the median worker's, e.g.
//
//   straggler: worker 3 on 10.0.0.5: data wait 40% (median 2%), 2.6x the
//   median worker's own time per image (5.1 ms vs 1.9 ms)
//
// It is reported again when it gets worse (its own time's ratio to the
// median grew by a quarter since the last report), and once more when it
// has been fast again for `intervals` reports ("... is no longer a
// straggler"). Needs at least 2 workers with stats.
//
// Not thread-safe: the scheduler's loop thread owns it.
#ifndef PSTRAIN_SCHEDULER_STRAGGLER_H_
#define PSTRAIN_SCHEDULER_STRAGGLER_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "scheduler/node_stats.h"
#include "status/status.h"

namespace pstrain {
namespace scheduler {

struct StragglerOptions {
  // Slow: own time per image above ratio x the median worker's (> 1).
  double ratio = 1.2;
  // Consecutive reports a worker must be slow (or fast again) before it is
  // reported (>= 1).
  int intervals = 3;
};

class StragglerDetector {
 public:
  explicit StragglerDetector(const StragglerOptions& options);

  // Takes the workers' latest stats (servers in `stats` are ignored);
  // returns the lines to log: new stragglers, ones that got worse, ones
  // that recovered (see above). Each line starts with "straggler: " or
  // "straggler worse: ", or ends with "is no longer a straggler".
  std::vector<std::string> Update(const std::vector<NodeStatsEntry>& stats);

  // Marks the reported stragglers among `job`'s workers (matched by rank)
  // with their latest reason, for the status page.
  void Mark(status::JobStatus* job) const;

 private:
  struct Worker {
    int64_t last_steps = -1;  // Steps of the last report counted.
    int slow = 0;             // Consecutive slow reports.
    int fast = 0;             // Consecutive fast reports while reported.
    bool reported = false;
    double reported_ratio = 0;  // Own time / median at the last report.
    std::string reason;         // The latest one, while reported.
  };
  const StragglerOptions o_;
  std::map<int, Worker> workers_;  // By rank.
};

}  // namespace scheduler
}  // namespace pstrain

#endif  // PSTRAIN_SCHEDULER_STRAGGLER_H_
