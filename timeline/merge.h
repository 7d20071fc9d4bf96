// Merging the part files of a job's nodes (timeline/timeline.h) into one
// Chrome trace, as `launch --timeline FILE` does after the job and
// `merge_timeline` does for parts collected by hand.
//
// Merged file format: one JSON object
//   {"traceEvents": [...], "displayTimeUnit": "ms",
//    "pstrain": {"version": 1, "job_start_unix_us": ...,
//                "parts": [{"file", "role", "rank", "host", "pid",
//                           "clock_offset_us", "events",
//                           "dropped_events"}, ...],
//                "skipped": ["why", ...]}}
// - one process per node ("pid" 1, 2, ...: servers by rank, then workers by
//   rank, then anything else), named by "process_name" metadata
//   ("server 0 (10.0.0.1:40001)", "worker 1 (10.0.0.2:40123)") and ordered
//   by "process_sort_index";
// - one thread per track of the node ("thread_name" metadata: "compute",
//   "data", "push", "pull", "sum", "update", "reply"); where events of one
//   track overlap (several fused groups in flight at once) the later ones
//   go to extra lanes "pull #2", "pull #3", ... so every thread's events
//   nest as the viewers expect;
// - complete events ("ph": "X") whose "ts" is microseconds since the job's
//   start: the earliest node start in the scheduler's clock (each part's
//   clock_origin_unix_us + clock_offset_us), or the earliest event if one
//   is earlier. "dur" and "args" as in the parts.
// A part that cannot be read, does not parse, or lacks the "pstrain"
// object is skipped with a warning naming the file: the merged file is
// valid JSON whatever the parts hold.
#ifndef PSTRAIN_TIMELINE_MERGE_H_
#define PSTRAIN_TIMELINE_MERGE_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace pstrain {
namespace timeline {

struct MergeResult {
  int parts = 0;        // Parts merged.
  int64_t events = 0;   // Complete events written.
  int64_t dropped = 0;  // Events the nodes dropped (over their cap).
  // One line per part skipped: "FILE: why".
  std::vector<std::string> warnings;
};

// A part file: its name (for messages) and text.
struct PartText {
  std::string file;
  std::string text;
};

// The merged trace of `parts` (format above); fills `result`.
std::string MergePartTexts(const std::vector<PartText>& parts,
                           MergeResult* result);

// Reads the part files `paths` (one that cannot be read is skipped with a
// warning) and writes their merge to `out_path` (WriteFileAtomically).
// The errno's Status naming out_path when it cannot be written.
absl::StatusOr<MergeResult> MergePartFiles(
    const std::vector<std::string>& paths, const std::string& out_path);

// The part files in `dir` (names ending in ".json"), sorted. The errno's
// Status naming the folder when it cannot be read.
absl::StatusOr<std::vector<std::string>> ListPartFiles(const std::string& dir);

// Where `launch --timeline FILE` has the nodes write their parts:
// FILE.parts/ROLE-INDEX.json (INDEX: the launch order within the role).
std::string PartsDir(const std::string& merged_path);
std::string PartPath(const std::string& merged_path, const std::string& role,
                     int index);

}  // namespace timeline
}  // namespace pstrain

#endif  // PSTRAIN_TIMELINE_MERGE_H_
