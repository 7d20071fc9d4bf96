// `launch --launcher mpi`: the whole job as one `mpirun` (Open MPI's, or
// MPICH's Hydra `mpiexec`). MPI rank 0 is the scheduler, ranks 1..S the
// servers, then the workers; each rank finds its role from
// OMPI_COMM_WORLD_RANK (Open MPI) or PMI_RANK (MPICH) in a small dispatch
// script. Ranks go round-robin over the hosts (rank r on host r mod N;
// without hosts, all here), and each binds and advertises its host's
// address.
//
// mpirun itself runs here under the node wrapper (wrapper.h), so it gets
// the job token on its stdin, writes it to a mode-600 file and stops when
// launch goes away. The file's path reaches every rank as the last
// argument of its command line (the file name, never the token); the
// wrapper's TMPDIR is a job directory under the work directory, which every
// host must see (a shared filesystem, as MPI clusters have).
//
// The dispatch script and its node run under `setpriv --pdeathsig TERM`
// (util-linux), so they end when mpirun (or the remote daemon, Open MPI's
// orted or Hydra's proxy) goes, however it goes. When the node ends, the
// script prints "pstrain-mpi-exit RANK STATUS"; launch stops the job at the
// first rank that fails and names it (MPICH does not end the other ranks
// by itself), falling back to mpirun's own report.
#ifndef PSTRAIN_LAUNCHER_MPI_H_
#define PSTRAIN_LAUNCHER_MPI_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "launcher/launcher.h"

namespace pstrain {
namespace launcher {

enum class MpiFlavor { kOpenMpi, kHydra };

// Which MPI `mpirun` is (`mpirun --version`). FailedPrecondition naming the
// program and what it said when it is neither Open MPI nor MPICH's Hydra.
absl::StatusOr<MpiFlavor> DetectMpi(const std::string& mpirun);

// The mpirun command line (without the wrapper's --token_file, which the
// wrapper appends) that runs `ranks` (PlanProcesses' specs: rank i is
// ranks[i]) with exactly the node environment `env`, in `workdir`.
std::vector<std::string> MpirunCommand(const LaunchOptions& options,
                                       MpiFlavor flavor,
                                       const std::vector<ProcessSpec>& ranks,
                                       const std::vector<std::string>& env,
                                       const std::string& workdir);

// A line of a rank's output as mpirun tags it: Open MPI's --tag-output
// "[JOB,RANK]<stdout>:TEXT", or Hydra's -prepend-rank "[RANK] TEXT".
struct TaggedLine {
  int rank = -1;
  std::string text;
};
std::optional<TaggedLine> ParseTaggedLine(absl::string_view line);

// The dispatch script's "pstrain-mpi-exit RANK STATUS" (the text of a
// tagged line): the rank and how its node ended ("exited with status 1",
// "was killed by signal 9 (SIGKILL)"), with `failed` false for status 0.
struct RankExit {
  int rank = -1;
  bool failed = false;
  std::string how;
};
std::optional<RankExit> ParseRankExit(absl::string_view text);

// What Open MPI's mpirun says about the rank that ended the job, read line
// by line: "Process name: [[J,1],R]" with "Exit code: C", or "process rank
// R with PID P on node H exited on signal S (NAME)". The fallback when no
// rank reported its exit (its dispatch script was killed too).
struct MpiFailure {
  int rank = -1;
  std::string how;  // "exited with status 1", "was killed by signal 9 ..."
  void Scan(absl::string_view line);
};

}  // namespace launcher
}  // namespace pstrain

#endif  // PSTRAIN_LAUNCHER_MPI_H_
