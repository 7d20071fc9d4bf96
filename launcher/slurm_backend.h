// Starts servers and workers as job steps of the Slurm allocation `launch`
// runs in (`--launcher slurm`, inside `salloc` or an `sbatch` script): no
// ssh, Slurm's own process control starts, signals and cancels them.
//
// Placement is ssh's over the allocation's nodes in Slurm's order (process
// i of servers-then-workers on node i % N); the scheduler runs where launch
// runs, which under sbatch is the allocation's first node. Each node binds
// and advertises its node's NodeAddr (scontrol).
#ifndef PSTRAIN_LAUNCHER_SLURM_BACKEND_H_
#define PSTRAIN_LAUNCHER_SLURM_BACKEND_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "launcher/backend.h"
#include "launcher/hostfile.h"

namespace pstrain {
namespace launcher {

// NodeName -> NodeAddr from `scontrol -o show node ...` (one node a line).
// InvalidArgument for a line without both.
absl::StatusOr<std::map<std::string, std::string>> ParseScontrolNodes(
    absl::string_view text);

// The allocation this process runs in.
struct SlurmAllocation {
  std::string job_id;       // SLURM_JOB_ID.
  std::vector<Host> nodes;  // In SLURM_JOB_NODELIST's order: node = its
                            // name, name = its NodeAddr.
};

// Reads SLURM_JOB_ID and SLURM_JOB_NODELIST, expands the list as Slurm does
// (`scontrol show hostnames`) and finds each node's address (`scontrol -o
// show node`). FailedPrecondition outside an allocation ("run it inside
// salloc or sbatch"); Unavailable when scontrol fails, with its message.
absl::StatusOr<SlurmAllocation> ReadSlurmAllocation();

// Runs `srun --jobid=ID --nodes=1 --ntasks=1 --nodelist=NODE --overlap
// --job-name=pstrain-ROLE-INDEX --chdir=WORKDIR --quiet env -i HOME=..
// USER=.. NODE-ENV... /bin/sh -c WRAPPER pstrain-node NODE-ARGV...`. srun
// carries the wrapper's stdin (the token, then EOF when launch goes away)
// and its output, and passes SIGTERM on to the step. Thread-compatible.
class SlurmBackend : public Backend {
 public:
  explicit SlurmBackend(const JobContext& context) : Backend(context) {}

  std::string name() const override { return "slurm"; }
  // The address this host sends from on its route to the first node not at
  // a loopback address; 127.0.0.1 when every node is.
  absl::StatusOr<std::string> DefaultSchedulerHost() const override;
  // One srun step on every node that runs a process, within 60 s: the work
  // directory exists and every binary the node runs is there. Writes a
  // table of the nodes, their roles and the result.
  absl::Status Preflight(const std::vector<ProcessSpec>& specs) override;
  NodeCommand Command(const ProcessSpec& spec) const override;
  // Cancels (scancel) every step of the allocation named pstrain-* that is
  // still there, waits up to 15 s for them to go and says what it did and
  // whether any is left; when `failed`, also removes the token files that
  // wrappers killed with SIGKILL left on their nodes.
  void CleanUp(const std::vector<StartedNode>& nodes, bool failed) override;

 private:
  // `srun --jobid=ID --overlap --quiet` and the node options for `nodes`
  // (comma-separated), one task on each.
  std::vector<std::string> Srun(const std::string& nodes, int count) const;
};

}  // namespace launcher
}  // namespace pstrain

#endif  // PSTRAIN_LAUNCHER_SLURM_BACKEND_H_
