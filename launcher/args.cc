#include "launcher/args.h"

#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace pstrain {
namespace launcher {
namespace {

// Options of the launcher whose value may come as the next argument. gflags
// accepts `--flag value` itself; this list only lets the splitter know that
// the next word is not the start of the command.
bool TakesValue(const std::string& name) {
  return name != "help" && name != "helpfull" && name != "version" &&
         !absl::StartsWith(name, "no");
}

}  // namespace

absl::StatusOr<LaunchArgs> SplitLaunchArgs(
    const std::vector<std::string>& argv) {
  static const std::map<std::string, std::string> kShort = {
      {"-n", "num_workers"}, {"-s", "num_servers"}, {"-H", "hostfile"}};
  LaunchArgs out;
  if (!argv.empty()) out.flags.push_back(argv[0]);
  size_t i = 1;
  for (; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (a == "-h") {
      out.flags.push_back("--help");
      continue;
    }
    if (a.size() >= 2 && a[0] == '-' && a[1] != '-') {
      std::string opt = a.substr(0, 2);
      auto it = kShort.find(opt);
      if (it == kShort.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("unknown option '", a, "' (see --help)"));
      }
      std::string value;
      if (a.size() > 2) {
        value = a.substr(a[2] == '=' ? 3 : 2);
      } else if (i + 1 < argv.size()) {
        value = argv[++i];
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("option ", a, " needs a value"));
      }
      out.flags.push_back(absl::StrCat("--", it->second, "=", value));
      continue;
    }
    if (absl::StartsWith(a, "--")) {
      std::string body = a.substr(2);
      std::string name = body, value;
      bool has_value = false;
      size_t eq = body.find('=');
      if (eq != std::string::npos) {
        name = body.substr(0, eq);
        value = body.substr(eq + 1);
        has_value = true;
      }
      for (char& c : name) {
        if (c == '-') c = '_';
      }
      if (name == "env") {
        if (!has_value) {
          if (i + 1 >= argv.size()) {
            return absl::InvalidArgumentError("--env needs K=V");
          }
          value = argv[++i];
        }
        if (value.find('=') == std::string::npos || value[0] == '=') {
          return absl::InvalidArgumentError(
              absl::StrCat("--env needs K=V, got '", value, "'"));
        }
        out.env.push_back(value);
        continue;
      }
      if (has_value) {
        out.flags.push_back(absl::StrCat("--", name, "=", value));
      } else if (TakesValue(name) && i + 1 < argv.size() &&
                 !absl::StartsWith(argv[i + 1], "-")) {
        out.flags.push_back(absl::StrCat("--", name, "=", argv[++i]));
      } else {
        out.flags.push_back(absl::StrCat("--", name));
      }
      continue;
    }
    break;  // First positional argument: the command starts here.
  }
  for (; i < argv.size(); ++i) out.command.push_back(argv[i]);
  return out;
}

}  // namespace launcher
}  // namespace pstrain
