#include "launcher/local_backend.h"

#include <unistd.h>

#include <cstdlib>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "glog/logging.h"

namespace pstrain {
namespace launcher {

absl::StatusOr<std::string> LocalBackend::DefaultSchedulerHost() const {
  return std::string("127.0.0.1");
}

absl::Status LocalBackend::Preflight(const std::vector<ProcessSpec>& specs) {
  std::set<std::string> checked;
  for (const ProcessSpec& spec : specs) {
    const std::string& bin = spec.argv[0];
    if (!checked.insert(bin).second) continue;
    CommandResult r = RunCommand(
        {"/bin/sh", "-c", "command -v \"$1\" >/dev/null", "check", bin},
        absl::Seconds(10));
    if (!r.ok) {
      return absl::FailedPreconditionError(
          absl::StrCat("binary '", bin,
                       "' is not an executable here (build it first: bazel "
                       "build //scheduler //server //worker)"));
    }
  }
  return absl::OkStatus();
}

NodeCommand LocalBackend::Command(const ProcessSpec& spec) const {
  NodeCommand c;
  c.argv = {"/bin/sh", "-c", WrapperScript(), "pstrain-node"};
  c.argv.insert(c.argv.end(), spec.argv.begin(), spec.argv.end());
  c.env = context().node_env;
  if (const char* home = getenv("HOME"))
    c.env.push_back(absl::StrCat("HOME=", home));
  if (const char* user = getenv("USER"))
    c.env.push_back(absl::StrCat("USER=", user));
  return c;
}

void LocalBackend::CleanUp(const std::vector<StartedNode>& nodes,
                           bool /*failed*/) {
  // A wrapper removes its token file however it ends, except when it is
  // killed with SIGKILL (a node that outlived --stop_grace_s): then here.
  for (const StartedNode& n : nodes) {
    if (!n.report.token_file.empty() &&
        unlink(n.report.token_file.c_str()) == 0) {
      LOG(INFO) << n.spec.Prefix()
                << " removed the token file its wrapper left";
    }
  }
}

}  // namespace launcher
}  // namespace pstrain
