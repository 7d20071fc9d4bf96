// `launch --launcher mpi`: the whole job as one Open MPI `mpirun`. MPI rank
// 0 is the scheduler, ranks 1..S the servers, then the workers; each rank
// finds its role from OMPI_COMM_WORLD_RANK (or PMI_RANK) in a small
// dispatch script. Ranks go round-robin over the hosts (`--map-by node`:
// rank r on host r mod N; without hosts, all here), and each binds and
// advertises its host's address.
//
// mpirun itself runs here under the node wrapper (wrapper.h), so it gets
// the job token on its stdin, writes it to a mode-600 file and stops when
// launch goes away. The file's path reaches every rank as the last
// argument of its command line (the file name, never the token); the
// wrapper's TMPDIR is a job directory under the work directory, which every
// host must see (a shared filesystem, as MPI clusters have). mpirun stops
// every rank when one fails; launch names that rank from mpirun's report.
// Each rank runs under `setpriv --pdeathsig TERM` (util-linux), so it ends
// when mpirun or orted goes, however they go.
#ifndef PSTRAIN_LAUNCHER_MPI_H_
#define PSTRAIN_LAUNCHER_MPI_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "launcher/launcher.h"

namespace pstrain {
namespace launcher {

// Checks that `mpirun` runs and is Open MPI's (`mpirun --version`).
// FailedPrecondition naming the program and what it said otherwise (MPICH's
// Hydra is refused: its options differ).
absl::Status CheckOpenMpi(const std::string& mpirun);

// The mpirun command line (without the wrapper's --token_file, which the
// wrapper appends) that runs `ranks` (PlanProcesses' specs: rank i is
// ranks[i]) with exactly the node environment `env`, in `workdir`.
std::vector<std::string> MpirunCommand(const LaunchOptions& options,
                                       const std::vector<ProcessSpec>& ranks,
                                       const std::vector<std::string>& env,
                                       const std::string& workdir);

// A line of mpirun's --tag-output: "[JOB,RANK]<stdout>:TEXT".
struct TaggedLine {
  int rank = -1;
  std::string text;
};
std::optional<TaggedLine> ParseTaggedLine(absl::string_view line);

// What mpirun says about the rank that ended the job, read line by line:
// "Process name: [[J,1],R]" with "Exit code: C", or "process rank R with
// PID P on node H exited on signal S (NAME)".
struct MpiFailure {
  int rank = -1;
  std::string how;  // "exited with status 1", "was killed by signal 9 ..."
  void Scan(absl::string_view line);
};

}  // namespace launcher
}  // namespace pstrain

#endif  // PSTRAIN_LAUNCHER_MPI_H_
