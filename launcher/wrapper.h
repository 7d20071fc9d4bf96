// The POSIX-sh wrapper every node of a job runs under (see launcher.h for
// what it does), and the line it reports when the node starts. Every backend
// starts nodes through it; the launcher parses its report.
#ifndef PSTRAIN_LAUNCHER_WRAPPER_H_
#define PSTRAIN_LAUNCHER_WRAPPER_H_

#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace pstrain {
namespace launcher {

// Shell functions for killing by PID safely. `started PID` prints the start
// time of process PID; `same PID START` is true while PID is still the
// process that started at START. Every kill of a node checks it first.
extern const char kSameProcessFunctions[];

// The wrapper script (kSameProcessFunctions included), for `/bin/sh -c
// SCRIPT pstrain-node NODE-ARGV...`. It reads the job token from the first
// line of its stdin and prints one line "pstrain-node-pid PID START
// TOKEN_FILE" once the node runs.
std::string WrapperScript();

// What a wrapper reported about the node it started.
struct NodeReport {
  int pid = -1;            // The node's pid on its host; -1: not reported.
  std::string started;     // Its start time there ("" when malformed).
  std::string token_file;  // The wrapper's token file ("" when malformed).
};

// Parses a line of a wrapper's output. Returns nullopt when the line is not
// the wrapper's report. Fields that do not have the expected form stay at
// their defaults, so that no output can name an arbitrary pid or file.
std::optional<NodeReport> ParseWrapperReport(absl::string_view line);

// Whether `path` has the form of a wrapper's token file
// (DIR/pstrain-token.XXXXXX), so that no other file is ever removed on the
// word of a line of output.
bool IsTokenFile(absl::string_view path);

}  // namespace launcher
}  // namespace pstrain

#endif  // PSTRAIN_LAUNCHER_WRAPPER_H_
