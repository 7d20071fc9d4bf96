// Placement by slots and the hosts a restarted ssh job leaves out
// (`launch --max_restarts`, issue #15).
//
// - Placement: process i of servers-then-workers goes to the next host in
//   round-robin order (hosts[i % N], as MXNet's launcher) that still has a
//   free slot (Host::slots; 0 = no limit). Without any `slots=` this is
//   exactly hosts[i % N].
// - Failures are counted per host (Host::ToString()) across the runs of one
//   `launch`: a node on the host died or was lost (the scheduler named it
//   silent), or ssh to it failed (the host check). On a restart a host that
//   failed `threshold` (2) times or more is left out when the job's servers
//   and workers still fit on the remaining hosts by their slots; otherwise
//   it is kept, and the decision says why.
#ifndef PSTRAIN_LAUNCHER_HOST_HEALTH_H_
#define PSTRAIN_LAUNCHER_HOST_HEALTH_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "launcher/hostfile.h"

namespace pstrain {
namespace launcher {

// Per host (Host::ToString()): why it failed, one entry per failure.
using HostFailures = std::map<std::string, std::vector<std::string>>;

// The host index (into `hosts`) of each of `processes` processes, placed
// as above. InvalidArgument, naming the slots there are, when every host
// has a slot limit and together they hold fewer than `processes`; also
// when `hosts` is empty.
absl::StatusOr<std::vector<int>> PlaceProcesses(const std::vector<Host>& hosts,
                                                int processes);

struct HostExclusion {
  // The hosts the next run uses, in their hosts-file order.
  std::vector<Host> hosts;
  // One line per host that failed `threshold` times or more: left out (its
  // failures and where the job goes instead) or kept (why it cannot be left
  // out). Meant for "launch: " lines.
  std::vector<std::string> messages;
  // The host (Host::ToString()) each of `messages` is about.
  std::vector<std::string> message_hosts;
};

// Decides which of `hosts` the next run of a job of `servers` + `workers`
// uses. Hosts with the most failures are considered first; each is left
// out only when PlaceProcesses() still succeeds on the hosts that remain
// (at least one). Pure.
HostExclusion LeaveOutFailedHosts(const std::vector<Host>& hosts,
                                  const HostFailures& failures, int servers,
                                  int workers, int threshold = 2);

}  // namespace launcher
}  // namespace pstrain

#endif  // PSTRAIN_LAUNCHER_HOST_HEALTH_H_
