// Timelines of a running job (issue #17, "See inside a running job"): what
// each node did during a window of training steps, as a Chrome trace
// (chrome://tracing, https://ui.perfetto.dev: the JSON "traceEvents"
// format).
//
// Every server and worker with --timeline FILE keeps a Recorder. While it
// is active it buffers complete events ("ph": "X": a name, a track, a begin
// and a duration, integer arguments) in memory, at most
// TimelineOptions::max_events of them (later ones are counted as dropped,
// and the part says so); the node writes them once, when it leaves the
// job, as its *part file*. `launch --timeline FILE` then merges the parts
// into FILE (timeline/merge.h). Outside the window a recorder costs one
// relaxed atomic load per would-be event.
//
// The window: steps are a worker's training batches, counted 1, 2, 3, ...
// from the start of the worker process across epochs (the `steps` of its
// heartbeat stats; a job resumed with --load_epoch counts from 1 again).
// --timeline_steps A:B records steps A..B, both included. A worker's
// events belong to the step it is in (SetStep); pushes and pulls to the
// step that sent them, even when their replies land during the next one.
// A server knows no steps: it records the n-th dist_sync round of a key
// slice as step n (every worker pushes each key once a step, so the round
// is the step; dist_async: the slice's pushes divided by the workers).
//
// Part file format (one JSON object, itself a valid Chrome trace whose
// times count from the node's start):
//   {"traceEvents": [
//      {"name": "thread_name", "ph": "M", "pid": 0, "tid": 1,
//       "args": {"name": "compute"}},
//      {"name": "conv0", "cat": "forward", "ph": "X", "pid": 0, "tid": 1,
//       "ts": 1234.567, "dur": 89.012, "args": {"step": 3}},
//      {"name": "push", "ph": "X", ..., "args": {"bytes": 4096,
//       "keys": [0, 1]}}, ...],
//    "pstrain": {"version": 1, "role": "worker", "rank": 1,
//       "host": "10.0.0.2", "port": 40123,
//       "clock_origin_unix_us": 1765000000000000,
//       "clock_offset_us": -12, "clock_aligned": true,
//       "first_step": 3, "last_step": 5, "events": 812,
//       "dropped_events": 0}}
// "ts" and "dur" are microseconds (fractions allowed); "ts" counts from
// clock_origin_unix_us, the node's own clock (microseconds since the Unix
// epoch) when the recorder was made. clock_offset_us is what to add to the
// node's clock to read the scheduler's (cluster::ClusterNode::
// clock_offset_us(), estimated from the scheduler's heartbeats;
// clock_aligned false: no heartbeat came, offset 0). Strings are escaped
// for JSON; bytes outside ASCII are written as \u00XX (Latin-1), so a part
// is valid JSON whatever a name holds.
#ifndef PSTRAIN_TIMELINE_TIMELINE_H_
#define PSTRAIN_TIMELINE_TIMELINE_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "util/mutex.h"

namespace pstrain {
namespace timeline {

struct TimelineOptions {
  // Where the node writes its part file; empty: no timeline (the recorder
  // is never active).
  std::string path;
  // The window, steps first_step..last_step (see above). REQUIRES:
  // 1 <= first_step <= last_step.
  int64_t first_step = 10;
  int64_t last_step = 20;
  // Events kept at most; later ones are dropped and counted.
  int64_t max_events = int64_t{1} << 20;
};

// Parses --timeline_steps "A:B" (1 <= A <= B) into `first` and `last`.
// InvalidArgument, without the flag's name (the caller adds it), for
// anything else: "must be A:B with 1 <= A <= B (steps count from 1)".
absl::Status ParseStepWindow(absl::string_view text, int64_t* first,
                             int64_t* last);

// `text` as the body of a JSON string (without the quotes): ", \ and
// control characters escaped, bytes >= 0x80 as \u00XX.
std::string JsonEscape(absl::string_view text);

// Integer arguments of an event, optionally a list of keys (written as
// "keys": [...]), and its category (the trace's "cat", e.g. "forward";
// empty: none).
struct EventArgs {
  std::vector<std::pair<std::string, int64_t>> ints;
  std::vector<int64_t> keys;
  std::string category;
};

// Who wrote a part (its "pstrain" object).
struct PartInfo {
  std::string role;  // "worker", "server" or "scheduler".
  int rank = -1;
  std::string host;
  int port = 0;
  // Scheduler clock minus this node's clock, microseconds.
  int64_t clock_offset_us = 0;
  bool clock_aligned = false;
};

// Thread-safe: any thread may add events, set the step and write.
class Recorder {
 public:
  // The recorder's clock origin is absl::Now() at construction.
  explicit Recorder(const TimelineOptions& options);
  Recorder(const Recorder&) = delete;
  Recorder& operator=(const Recorder&) = delete;

  // Whether a part file will be written (options.path not empty).
  bool enabled() const { return enabled_; }
  const TimelineOptions& options() const { return options_; }
  // Whether `step` is in the window (false when not enabled).
  bool InWindow(int64_t step) const {
    return enabled_ && step >= options_.first_step &&
           step <= options_.last_step;
  }
  // Worker: it is now in `step`; active() is InWindow(step) from now on.
  void SetStep(int64_t step) {
    step_.store(step, std::memory_order_relaxed);
    active_.store(InWindow(step), std::memory_order_relaxed);
  }
  // The last SetStep() (0 before the first).
  int64_t step() const { return step_.load(std::memory_order_relaxed); }
  // Whether the current step (SetStep) is in the window: callers check it
  // before timing anything. One relaxed load.
  bool active() const { return active_.load(std::memory_order_relaxed); }

  // The track (the trace's "tid", 1, 2, ...) named `name`, made on first
  // use; tracks are listed in the order made.
  int Track(absl::string_view name) ABSL_LOCKS_EXCLUDED(mu_);

  // Buffers a complete event on `track` from `begin` to `end` (an end
  // before the begin counts as the begin). Whether it is in the window is
  // the caller's business (active(), InWindow()). Past max_events the
  // event is dropped and counted. A no-op when not enabled.
  void Add(int track, absl::string_view name, absl::Time begin, absl::Time end,
           EventArgs args = {}) ABSL_LOCKS_EXCLUDED(mu_);

  int64_t num_events() const ABSL_LOCKS_EXCLUDED(mu_);
  int64_t dropped_events() const ABSL_LOCKS_EXCLUDED(mu_);

  // The part file's text (format above) for the events so far.
  std::string PartJson(const PartInfo& info) const ABSL_LOCKS_EXCLUDED(mu_);
  // Writes PartJson(info) to options.path (WriteFileAtomically, util/
  // file.h: a part is complete or absent). The errno's
  // Status naming the path when it cannot; OK without doing anything when
  // not enabled.
  absl::Status WritePart(const PartInfo& info) const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Event {
    std::string name;
    int track = 0;
    int64_t begin_ns = 0;  // Since origin_.
    int64_t dur_ns = 0;
    EventArgs args;
  };

  const TimelineOptions options_;
  const bool enabled_;
  const absl::Time origin_;
  std::atomic<int64_t> step_{0};
  std::atomic<bool> active_{false};
  mutable Mutex mu_;
  std::vector<Event> events_ ABSL_GUARDED_BY(mu_);
  int64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> tracks_ ABSL_GUARDED_BY(mu_);  // tid - 1.
  std::map<std::string, int, std::less<>> track_ids_ ABSL_GUARDED_BY(mu_);
};

}  // namespace timeline
}  // namespace pstrain

#endif  // PSTRAIN_TIMELINE_TIMELINE_H_
