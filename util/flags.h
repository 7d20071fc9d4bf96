// Command lines of every pstrain program, over gflags: MXNet's dashed
// spellings, flag files checked line by line, unknown flags refused, one-line
// errors, and a --help that lists the program's own flags only.
//
// gflags 2.2 alone refuses an unknown flag on the command line but silently
// skips one in a --flagfile (and a line such as "--lr 0.1", or a dashed
// name), so a typo in a job's flag file would change the job without a
// word. ParseFlags() therefore reads flag files itself and checks every name
// against gflags' registry, wherever it comes from.
#ifndef PSTRAIN_UTIL_FLAGS_H_
#define PSTRAIN_UTIL_FLAGS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace pstrain {

// The flags defined in one source file, listed together by --help.
struct FlagGroup {
  std::string file;   // __FILE__ of the DEFINE_* lines.
  std::string title;  // e.g. "Flags common to the scheduler, servers and
                      // workers"; empty: "Flags".
};

// What --help says about a program.
struct ProgramHelp {
  std::string name;   // Prefixes every error line: "worker: ...".
  std::string usage;  // Printed first.
  // The flags --help lists, group by group (usually the main's own __FILE__,
  // then shared groups such as cluster::ClusterFlagGroup()). Flags of
  // other files (glog's --v, --logtostderr, ...) are listed by --helpfull.
  std::vector<FlagGroup> groups;
  // Whether the program takes arguments besides its flags; when not,
  // ParseFlagsOrExit refuses any ("unexpected argument 'x'").
  bool takes_arguments = false;
};

struct ParsedFlags {
  // argv[0], then the positional arguments in order (also everything after
  // "--").
  std::vector<std::string> positional;
  bool help = false;  // --help, --helpshort or -h was given.
};

// Parses `args` (argv[0] first) and sets the flags through gflags' registry.
// Accepted: --name=value, --name value, -name, --bool, --bool 0|1|true|false
// (MXNet's `--benchmark 1`), --nobool (also --no-bool), MXNet's dashed names
// (--batch-size), and
// --flagfile=F[,G...] (also --flagfile F): each file holds one --name=value
// (or --bool) a line, # comments and blank lines, and may name further flag
// files; its flags take effect where the --flagfile stands, so later flags
// override them. Names listed in --undefok=a,b on the command line are
// skipped when unknown, as gflags does.
// Returns InvalidArgument, without setting any flag, naming where the
// problem is ("FILE:LINE: " for a flag file) and what is wrong:
//   "unknown flag --nmae (did you mean --name?)",
//   "--batch_size abc: must be an integer in [-2147483648, 2147483647]",
//   "--lr: missing its value", "'lr 0.1' is not a flag (...)",
//   a flag file that cannot be read or that includes itself.
// --help, --helpshort and -h are reported in ParsedFlags::help, not set;
// gflags' other built-in flags (--helpfull, --version, --fromenv, ...) are
// set like any other. Not thread-safe (gflags' registry is global).
absl::StatusOr<ParsedFlags> ParseFlags(const std::vector<std::string>& args);

// The --help text: help.usage, then each group's flags (name, type,
// default, description), then a note on flag files and --helpfull.
std::string FlagsHelp(const ProgramHelp& help);

// For main() only. Parses `args` (argv[0] first, already normalized where the
// program has its own spellings) with ParseFlags. --help: prints FlagsHelp
// to stdout and exits 0; an error: prints "NAME: error" to stderr and exits
// 2, as for an argument that is not a flag unless help.takes_arguments;
// gflags' --helpfull, --version, ... are then handled as gflags does.
// Returns ParsedFlags::positional.
std::vector<std::string> ParseFlagsOrExit(const ProgramHelp& help,
                                          const std::vector<std::string>& args);

// For main() only: prints "PROGRAM: MESSAGE" as one line to stderr and exits
// with `code`: 2 for usage errors (bad flags, bad input files named by
// flags), 1 for failures at run time.
[[noreturn]] void ExitWithError(absl::string_view program,
                                absl::string_view message, int code = 2);

// InvalidArgument "--FLAG VALUE: WHY" (an empty value shows as ''), the form
// of every error about a flag's value, e.g.
// BadFlag("heartbeat_timeout_s", -1, "must be > 0").
absl::Status BadFlag(absl::string_view flag, const absl::AlphaNum& value,
                     absl::string_view why);

}  // namespace pstrain

#endif  // PSTRAIN_UTIL_FLAGS_H_
