#include "launcher/hostfile.h"

#include <cerrno>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "util/file.h"
#include "util/status.h"

namespace pstrain {
namespace launcher {

std::string Host::ToString() const {
  if (!node.empty()) return node;
  if (ssh_port == 22) return name;
  return absl::StrCat(name, ":", ssh_port);
}

absl::StatusOr<std::vector<Host>> ParseHostfile(absl::string_view text,
                                                absl::string_view source) {
  std::vector<Host> hosts;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    size_t hash = line.find('#');
    if (hash != absl::string_view::npos) line = line.substr(0, hash);
    std::vector<absl::string_view> words =
        absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    if (words.empty()) continue;
    auto error = [&](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ":", line_no, ": ", what, " in hosts file line '",
          absl::StripAsciiWhitespace(line), "' (expected host[:port])"));
    };
    Host host;
    for (size_t i = 1; i < words.size(); ++i) {
      absl::string_view word = words[i];
      if (!absl::ConsumePrefix(&word, "slots=")) {
        return error(absl::StrCat("unexpected '", words[i], "'"));
      }
      if (!absl::SimpleAtoi(word, &host.slots) || host.slots < 1) {
        return error(absl::StrCat("bad slots '", word, "' (a number >= 1)"));
      }
    }
    absl::string_view word = words[0];
    size_t colon = word.rfind(':');
    if (colon != absl::string_view::npos &&
        word.find(':') == colon) {  // One colon: host:port (not IPv6).
      int port = 0;
      if (!absl::SimpleAtoi(word.substr(colon + 1), &port) || port < 1 ||
          port > 65535) {
        return error(absl::StrCat("bad port '", word.substr(colon + 1), "'"));
      }
      host.ssh_port = port;
      word = word.substr(0, colon);
    }
    if (word.empty()) return error("empty host name");
    host.name = std::string(word);
    hosts.push_back(std::move(host));
  }
  if (hosts.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": hosts file lists no host"));
  }
  return hosts;
}

absl::StatusOr<std::vector<Host>> ReadHostfile(const std::string& path) {
  PSTRAIN_ASSIGN_OR_RETURN(const std::string text,
                           ReadFileToString(path, "open hosts file"));
  return ParseHostfile(text, path);
}

}  // namespace launcher
}  // namespace pstrain
