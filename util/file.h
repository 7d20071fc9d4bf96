// Whole-file reads, the one place pstrain slurps a file into memory, and
// whole-file atomic writes.
#ifndef PSTRAIN_UTIL_FILE_H_
#define PSTRAIN_UTIL_FILE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pstrain {

// Returns the bytes of the file at `path`. Errors follow ErrnoToStatus
// (NotFound, PermissionDenied, ...) and read "<what> <path>: <reason>", where
// `what` names the file's role ("hosts file", "index"); an empty `what`
// gives "open <path>: ...". Reading a directory is an error, not an empty
// file. Files are binary-safe (no newline translation).
absl::StatusOr<std::string> ReadFileToString(const std::string& path,
                                             absl::string_view what = "");

// Writes `bytes` to `path` atomically: a temporary file in the same folder
// (PATH.tmp.PID), synced, then renamed over `path` and the folder synced,
// so readers see the old file or the whole new one, also after a crash.
// Errors follow ErrnoToStatus and name the
// step and file ("create P.tmp.1: ...", "rename ... to P: ..."); the
// temporary file is removed on failure.
absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view bytes);

// The path `rel` (like "scheduler/scheduler") relative to the folder above
// this program's own folder: how the tools in bazel-bin/tools find the
// other binaries of bazel-bin. `rel` itself when /proc/self/exe is
// unreadable.
std::string PathBesideThisProgram(const std::string& rel);

}  // namespace pstrain

#endif  // PSTRAIN_UTIL_FILE_H_
