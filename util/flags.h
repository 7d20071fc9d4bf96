// MXNet's dashed option spelling for gflags programs.
#ifndef PSTRAIN_UTIL_FLAGS_H_
#define PSTRAIN_UTIL_FLAGS_H_

#include <string>
#include <vector>

namespace pstrain {

// Returns argv with every "--dashed-name[=value]" renamed to
// "--dashed_name[=value]" (values and positional arguments untouched), so
// `--num-epochs 3` works as `--num_epochs 3`.
inline std::vector<std::string> UnderscoreFlagNames(const std::vector<std::string>& argv) {
  std::vector<std::string> out;
  for (size_t i = 0; i < argv.size(); ++i) {
    std::string a = argv[i];
    if (i > 0 && a.size() > 2 && a[0] == '-' && a[1] == '-') {
      const size_t end = a.find('=');
      for (size_t j = 2; j < std::min(end, a.size()); ++j) {
        if (a[j] == '-') a[j] = '_';
      }
    }
    out.push_back(a);
  }
  return out;
}

// Parses `args` (argv[0] first, flag names already normalized, e.g. by
// UnderscoreFlagNames) with gflags and returns what is left: argv[0] and the
// positional arguments. Bad flags end the program as gflags does.
std::vector<std::string> ParseGflags(std::vector<std::string> args);

}  // namespace pstrain

#endif  // PSTRAIN_UTIL_FLAGS_H_
