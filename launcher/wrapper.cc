#include "launcher/wrapper.h"

#include <cstdint>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace pstrain {
namespace launcher {

// `started PID` reads field 22 of /proc/PID/stat, after the command name,
// which may hold spaces and parentheses: with the PID it names one process,
// never a later one that reuses the number.
const char kSameProcessFunctions[] = R"sh(started() {
  v=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  v=${v##*) }
  set -- $v
  shift 19
  echo "$1"
}
same() { [ -n "$2" ] && [ "$(started "$1")" = "$2" ]; }
)sh";

namespace {

// The wrapper every node runs under (see launcher.h), after
// kSameProcessFunctions. Arguments: the node's argv. It prints one line
// "pstrain-node-pid PID START TOKEN_FILE" so the launcher can check that the
// node is gone at the end, and remove the token file when the wrapper could not
// (killed with SIGKILL). The token file goes on every other way out (the EXIT
// trap; HUP, INT and TERM are passed on to the node, whose end ends the
// wrapper). Once the node runs, the wrapper's own stderr is /dev/null and
// SIGPIPE is caught: when the launcher is gone, dash's "Terminated" notice
// would otherwise end the wrapper by SIGPIPE before it removed the file.
constexpr char kWrapper[] = R"sh(t= p= s= w= ws=
stop() { [ -n "$p" ] || exit "$1"; if same "$p" "$s"; then kill -TERM "$p"; fi; }
trap '[ -z "$t" ] || rm -f "$t"' EXIT
trap 'stop 129' HUP
trap 'stop 130' INT
trap 'stop 143' TERM
trap : PIPE
t=$(mktemp "${TMPDIR:-/tmp}/pstrain-token.XXXXXX") || exit 97
if ! IFS= read -r tok; then echo "launch wrapper: no job token on stdin" >&2; exit 98; fi
printf '%s\n' "$tok" > "$t"
unset tok
exec 3<&0
"$@" --token_file="$t" </dev/null &
p=$!
s=$(started "$p")
echo "pstrain-node-pid $p $s $t"
exec 2>/dev/null
(while IFS= read -r _ <&3; do :; done; if same "$p" "$s"; then kill -TERM "$p"; fi; sleep 5; if same "$p" "$s"; then kill -KILL "$p"; fi) >/dev/null 2>&1 &
w=$!
ws=$(started "$w")
exec 3<&-
rc=0
wait "$p" || rc=$?
while same "$p" "$s"; do wait "$p"; rc=$?; done
if same "$w" "$ws"; then kill "$w"; fi
exit "$rc")sh";

constexpr char kPidMarker[] = "pstrain-node-pid ";
// The wrapper's token files: FOLDER/pstrain-token.XXXXXX (mktemp).
constexpr char kTokenFilePrefix[] = "pstrain-token.";

}  // namespace

std::string WrapperScript() {
  return absl::StrCat(kSameProcessFunctions, kWrapper);
}

bool IsTokenFile(absl::string_view path) {
  const size_t slash = path.rfind('/');
  const absl::string_view base =
      slash == absl::string_view::npos ? path : path.substr(slash + 1);
  return absl::StartsWith(base, kTokenFilePrefix) &&
         base.size() == sizeof(kTokenFilePrefix) - 1 + 6 &&
         base.find_first_not_of(
             "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
             sizeof(kTokenFilePrefix) - 1) == absl::string_view::npos;
}

std::optional<NodeReport> ParseWrapperReport(absl::string_view line) {
  if (!absl::ConsumePrefix(&line, kPidMarker)) return std::nullopt;
  const std::vector<absl::string_view> words = absl::StrSplit(line, ' ');
  NodeReport report;
  int pid = -1;
  uint64_t started = 0;
  if (absl::SimpleAtoi(words[0], &pid) && pid > 0) report.pid = pid;
  if (words.size() == 3 && absl::SimpleAtoi(words[1], &started)) {
    report.started = std::string(words[1]);
  }
  if (words.size() == 3 && IsTokenFile(words[2])) {
    report.token_file = std::string(words[2]);
  }
  return report;
}

}  // namespace launcher
}  // namespace pstrain
