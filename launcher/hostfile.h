// Hosts files for `launch`: one host a line, as MXNet's ssh launcher reads
// them.
#ifndef PSTRAIN_LAUNCHER_HOSTFILE_H_
#define PSTRAIN_LAUNCHER_HOSTFILE_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pstrain {
namespace launcher {

struct Host {
  Host() = default;
  Host(std::string name, int ssh_port = 22, std::string node = "",
       int slots = 0)
      : name(std::move(name)),
        ssh_port(ssh_port),
        node(std::move(node)),
        slots(slots) {}

  std::string name;  // Host name or address, as written.
  int ssh_port = 22;
  // Slurm: the node's name (srun --nodelist); `name` is then its NodeAddr.
  std::string node;
  // The hosts file's `slots=N`: at most N of the job's servers and workers
  // go to this host (launch, PlaceProcesses() in host_health.h); 0: no
  // limit (none given).
  int slots = 0;

  // "node" (Slurm), else "name" or "name:port" when not 22.
  std::string ToString() const;
  bool operator==(const Host& o) const {
    return name == o.name && ssh_port == o.ssh_port && node == o.node;
  }
};

// Parses the text of a hosts file. Each non-empty line is `host[:port]`,
// optionally followed by whitespace and `slots=N` (N >= 1: at most N
// servers and workers there; MXNet's launcher ignores it, and so does
// placement where no host gives one); `#` starts a comment. Returns
// InvalidArgument naming `source` and the line number for a malformed line
// (empty host, port not in 1..65535, slots not a number >= 1, extra words)
// and when no host is listed.
absl::StatusOr<std::vector<Host>> ParseHostfile(absl::string_view text,
                                                absl::string_view source);

// Reads and parses the hosts file at `path`. NotFound etc. name the path.
absl::StatusOr<std::vector<Host>> ReadHostfile(const std::string& path);

}  // namespace launcher
}  // namespace pstrain

#endif  // PSTRAIN_LAUNCHER_HOSTFILE_H_
