// Command-line normalization for `launch`, so MXNet's spelling works as
// written: `launch.py -n 2 -s 2 -H hosts --launcher ssh --sync-dst-dir D
// --env K=V python train.py ...`.
#ifndef PSTRAIN_LAUNCHER_ARGS_H_
#define PSTRAIN_LAUNCHER_ARGS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace pstrain {
namespace launcher {

struct LaunchArgs {
  // argv for gflags: argv[0] then the launcher's own flags, renamed to
  // gflags' underscore spelling.
  std::vector<std::string> flags;
  // Values of every `--env K=V` (repeatable; MXNet allows several).
  std::vector<std::string> env;
  // The worker command: everything after `--`, or from the first argument
  // that is not an option.
  std::vector<std::string> command;
};

// Splits and renames the launcher's arguments:
//   -n N -> --num_workers=N, -s N -> --num_servers=N, -H F -> --hostfile=F,
//   -h -> --help, --dashed-name[=v] -> --dashed_name[=v],
//   --env K=V / --env=K=V -> env.
// Returns InvalidArgument for a short option without its value, an `--env`
// without K=V, or a short option it does not know (naming it).
absl::StatusOr<LaunchArgs> SplitLaunchArgs(
    const std::vector<std::string>& argv);

}  // namespace launcher
}  // namespace pstrain

#endif  // PSTRAIN_LAUNCHER_ARGS_H_
