#include "util/flags.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gflags/gflags.h"
#include "util/status.h"

namespace pstrain {
namespace {

// Deeper nesting of flag files than this is refused (a cycle through
// different spellings of one path ends here too).
constexpr int kMaxFlagfileDepth = 16;

// "--" and "-" prefixes stripped, dashes in the name made underscores.
struct FlagText {
  std::string name;
  std::string value;
  bool has_value = false;
};

FlagText SplitFlag(absl::string_view arg) {
  absl::ConsumePrefix(&arg, "-");
  absl::ConsumePrefix(&arg, "-");
  FlagText f;
  const size_t eq = arg.find('=');
  f.name = std::string(arg.substr(0, eq));
  std::replace(f.name.begin(), f.name.end(), '-', '_');
  if (eq != absl::string_view::npos) {
    f.has_value = true;
    f.value = std::string(arg.substr(eq + 1));
  }
  return f;
}

absl::Status ErrorAt(const std::string& where, absl::string_view message) {
  return absl::InvalidArgumentError(where.empty()
                                        ? std::string(message)
                                        : absl::StrCat(where, ": ", message));
}

size_t EditDistance(absl::string_view a, absl::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1,
                         diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// " (did you mean --NAME?)" for the closest known flag, if it is close.
std::string Suggestion(const std::string& name) {
  std::vector<gflags::CommandLineFlagInfo> all;
  gflags::GetAllFlags(&all);
  std::string best;
  size_t best_distance = std::min<size_t>(2, name.size() / 3);
  for (const auto& f : all) {
    const size_t d = EditDistance(name, f.name);
    if (d <= best_distance) {
      best = f.name;
      best_distance = d;
    }
  }
  return best.empty() ? "" : absl::StrCat(" (did you mean --", best, "?)");
}

// What a flag of gflags type `type` accepts.
std::string Allowed(const std::string& type) {
  if (type == "bool") return "must be true or false";
  if (type == "int32") return "must be an integer in [-2147483648, 2147483647]";
  if (type == "uint32") return "must be an integer in [0, 4294967295]";
  if (type == "int64") {
    return "must be an integer in [-9223372036854775808, 9223372036854775807]";
  }
  if (type == "uint64")
    return "must be an integer in [0, 18446744073709551615]";
  if (type == "double") return "must be a number";
  return absl::StrCat("is not a valid ", type);
}

struct Setting {
  std::string name;
  std::string value;
  std::string where;  // "" for the command line, "FILE:LINE" for a file.
};

class Parser {
 public:
  explicit Parser(std::set<std::string> undefok)
      : undefok_(std::move(undefok)) {}

  // One flag argument. `next` is the following command-line argument (null
  // in a flag file or at the end); *used_next says whether it was the value.
  absl::Status Flag(absl::string_view arg, const std::string* next,
                    bool* used_next, const std::string& where, int depth) {
    FlagText f = SplitFlag(arg);
    if (f.name.empty()) {
      return ErrorAt(where, absl::StrCat("'", arg, "' is not a flag"));
    }
    if (f.name == "help" || f.name == "helpshort" || f.name == "h") {
      help = true;
      return absl::OkStatus();
    }
    gflags::CommandLineFlagInfo info;
    const bool known = f.name == "flagfile" ||
                       gflags::GetCommandLineFlagInfo(f.name.c_str(), &info);
    if (!known) {
      // --nobool and --no-bool.
      absl::string_view base = f.name;
      if (absl::ConsumePrefix(&base, "no")) {
        absl::ConsumePrefix(&base, "_");
        if (gflags::GetCommandLineFlagInfo(std::string(base).c_str(), &info) &&
            info.type == "bool") {
          if (f.has_value) {
            return ErrorAt(
                where, absl::StrCat("--", f.name, "=", f.value, ": --no", base,
                                    " takes no value"));
          }
          settings.push_back({std::string(base), "false", where});
          return absl::OkStatus();
        }
      }
      if (undefok_.count(f.name)) return absl::OkStatus();
      return ErrorAt(
          where, absl::StrCat("unknown flag --", f.name, Suggestion(f.name)));
    }
    if (!f.has_value) {
      if (f.name != "flagfile" && info.type == "bool") {
        // MXNet's int switches: `--benchmark 1`, `--test-io 0`.
        const bool literal =
            next != nullptr && (*next == "0" || *next == "1" ||
                                *next == "true" || *next == "false");
        f.value = literal ? *next : "true";
        *used_next = literal;
      } else if (next != nullptr) {
        f.value = *next;
        *used_next = true;
      } else {
        return ErrorAt(where,
                       absl::StrCat("--", f.name, ": missing its value"));
      }
    }
    if (f.name != "flagfile") {
      settings.push_back({f.name, f.value, where});
      return absl::OkStatus();
    }
    if (f.value.empty()) {
      return ErrorAt(where, BadFlag("flagfile", "", "names no file").message());
    }
    for (absl::string_view path :
         absl::StrSplit(f.value, ',', absl::SkipEmpty())) {
      PSTRAIN_RETURN_IF_ERROR(File(std::string(path), where, depth + 1));
    }
    return absl::OkStatus();
  }

  // The flags of flag file `path`, named at `where`.
  absl::Status File(const std::string& path, const std::string& where,
                    int depth) {
    if (depth > kMaxFlagfileDepth ||
        std::find(open_.begin(), open_.end(), path) != open_.end()) {
      return ErrorAt(where, absl::StrCat("--flagfile ", path,
                                         ": flag files include each other"));
    }
    std::ifstream in(path);
    if (!in) {
      return ErrorAt(
          where,
          ErrnoToStatus(errno, absl::StrCat("--flagfile ", path)).message());
    }
    open_.push_back(path);
    std::string raw;
    int line_no = 0;
    while (std::getline(in, raw)) {
      ++line_no;
      const absl::string_view line = absl::StripAsciiWhitespace(raw);
      if (line.empty() || line[0] == '#') continue;
      const std::string at = absl::StrCat(path, ":", line_no);
      // gflags would take a line without a leading dash for a list of
      // program names, and skip "--name value" lines: neither is a flag.
      const absl::string_view name = line.substr(0, line.find('='));
      if (line[0] != '-' ||
          name.find_first_of(" \t") != absl::string_view::npos) {
        return ErrorAt(at,
                       absl::StrCat("'", line,
                                    "' is not a flag (a flag file holds "
                                    "one --name=value a line, # comments)"));
      }
      bool unused = false;
      PSTRAIN_RETURN_IF_ERROR(Flag(line, nullptr, &unused, at, depth));
    }
    open_.pop_back();
    return absl::OkStatus();
  }

  std::vector<Setting> settings;
  bool help = false;

 private:
  const std::set<std::string> undefok_;
  std::vector<std::string> open_;  // The flag files being read, outermost
                                   // first.
};

// The names of --undefok=a,b (or --undefok a,b) on the command line.
std::set<std::string> UndefOk(const std::vector<std::string>& args) {
  std::set<std::string> names;
  for (size_t i = 1; i < args.size() && args[i] != "--"; ++i) {
    if (!absl::StartsWith(args[i], "-")) continue;
    FlagText f = SplitFlag(args[i]);
    if (f.name != "undefok") continue;
    if (!f.has_value && i + 1 < args.size()) f.value = args[++i];
    for (absl::string_view n :
         absl::StrSplit(f.value, ',', absl::SkipEmpty())) {
      names.insert(std::string(n));
    }
  }
  return names;
}

}  // namespace

absl::StatusOr<ParsedFlags> ParseFlags(const std::vector<std::string>& args) {
  ParsedFlags out;
  out.positional.push_back(args.empty() ? std::string() : args[0]);
  Parser parser(UndefOk(args));
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      out.positional.insert(out.positional.end(), args.begin() + i + 1,
                            args.end());
      break;
    }
    if (a.size() < 2 || a[0] != '-') {
      out.positional.push_back(a);
      continue;
    }
    bool used_next = false;
    PSTRAIN_RETURN_IF_ERROR(parser.Flag(
        a, i + 1 < args.size() ? &args[i + 1] : nullptr, &used_next, "", 0));
    if (used_next) ++i;
  }
  for (const Setting& s : parser.settings) {
    if (gflags::SetCommandLineOption(s.name.c_str(), s.value.c_str()).empty()) {
      gflags::CommandLineFlagInfo info;
      gflags::GetCommandLineFlagInfo(s.name.c_str(), &info);
      return ErrorAt(s.where,
                     BadFlag(s.name, s.value, Allowed(info.type)).message());
    }
  }
  out.help = parser.help;
  return out;
}

std::string FlagsHelp(const ProgramHelp& help) {
  std::vector<gflags::CommandLineFlagInfo> all;
  gflags::GetAllFlags(&all);
  std::string out = help.usage;
  if (!absl::EndsWith(out, "\n")) out += "\n";
  for (const FlagGroup& group : help.groups) {
    std::string lines;
    for (const auto& f : all) {
      if (f.filename != group.file) continue;
      const std::string def = f.default_value.empty() ? "''" : f.default_value;
      absl::StrAppend(&lines, "  --", f.name, " (", f.type, ", default ", def,
                      ")\n      ", f.description, "\n");
    }
    if (lines.empty()) continue;
    absl::StrAppend(&out, "\n", group.title.empty() ? "Flags" : group.title,
                    ":\n", lines);
  }
  absl::StrAppend(
      &out,
      "\nFlag files: --flagfile=FILE[,FILE...] holds one --name=value a line "
      "(# comments);\nunknown flags are refused there as on the command "
      "line. Dashed names\n(--batch-size) work as underscored ones. Logging "
      "flags (--v, --vmodule,\n--logtostderr, ...): --helpfull.\n");
  return out;
}

std::vector<std::string> ParseFlagsOrExit(
    const ProgramHelp& help, const std::vector<std::string>& args) {
  gflags::SetUsageMessage(help.usage);
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  gflags::SetArgv(static_cast<int>(argv.size()), argv.data());
  absl::StatusOr<ParsedFlags> parsed = ParseFlags(args);
  if (!parsed.ok()) ExitWithError(help.name, parsed.status().message(), 2);
  if (parsed->help) {
    std::cout << FlagsHelp(help) << std::flush;
    std::exit(0);
  }
  if (!help.takes_arguments && parsed->positional.size() > 1) {
    ExitWithError(help.name,
                  absl::StrCat("unexpected argument '", parsed->positional[1],
                               "' (flags are --name=value)"));
  }
  gflags::HandleCommandLineHelpFlags();  // --helpfull, --version, ...
  return parsed->positional;
}

void ExitWithError(absl::string_view program, absl::string_view message,
                   int code) {
  std::cerr << program << ": " << message << std::endl;
  std::exit(code);
}

absl::Status BadFlag(absl::string_view flag, const absl::AlphaNum& value,
                     absl::string_view why) {
  const absl::string_view v = value.Piece();
  return absl::InvalidArgumentError(
      absl::StrCat("--", flag, " ", v.empty() ? "''" : v, ": ", why));
}

}  // namespace pstrain
