// A child process with a pipe to its standard input and one pipe carrying
// its standard output and error, in its own process group.
#ifndef PSTRAIN_LAUNCHER_SUBPROCESS_H_
#define PSTRAIN_LAUNCHER_SUBPROCESS_H_

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace pstrain {
namespace launcher {

// Thread-compatible: one thread drives a Subprocess. The destructor kills
// the whole process group (SIGKILL) if it is still running and reaps it, so
// no child outlives its owner.
class Subprocess {
 public:
  // Starts `argv` (argv[0] is looked up in PATH when it has no '/') with
  // exactly the environment `env` ("K=V" entries). The child gets its own
  // process group. Returns an error naming argv[0] when the program cannot be
  // started.
  static absl::StatusOr<Subprocess> Start(const std::vector<std::string>& argv,
                                          const std::vector<std::string>& env);

  Subprocess(Subprocess&& other) noexcept;
  Subprocess& operator=(Subprocess&& other) noexcept;
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  ~Subprocess();

  pid_t pid() const { return pid_; }
  // Non-blocking read end of stdout+stderr; -1 once closed.
  int output_fd() const { return out_fd_; }

  // Writes all of `data` to the child's stdin. Returns Unavailable if the
  // child closed it.
  absl::Status WriteStdin(const std::string& data);
  // Closes the child's stdin (it reads EOF). Idempotent.
  void CloseStdin();

  // Reads what is available on the output pipe (never blocks) and appends
  // it to `*out`. Returns false once the pipe is at EOF (and closes it).
  bool ReadOutput(std::string* out);

  // Reaps the child if it has exited; returns true once it has.
  bool Poll();
  // True once Poll()/Wait() saw the exit.
  bool exited() const { return exited_; }
  // The wait status (as from waitpid). REQUIRES: exited().
  int wait_status() const { return wait_status_; }
  // "exit status N" or "killed by signal S (NAME)". REQUIRES: exited().
  std::string DescribeExit() const;
  // True when the child exited with status 0. REQUIRES: exited().
  bool succeeded() const;

  // Sends `signal` to the child's whole process group (no-op when the group
  // is gone).
  void SignalGroup(int signal);
  // True while any process of the child's group is alive (including
  // grandchildren that stayed in it), or the child itself is unreaped;
  // zombies of a reaped child's group do not count.
  bool GroupAlive() const;

 private:
  Subprocess() = default;
  void Reset();

  pid_t pid_ = -1;
  int in_fd_ = -1;
  int out_fd_ = -1;
  bool exited_ = false;
  int wait_status_ = 0;
};

}  // namespace launcher
}  // namespace pstrain

#endif  // PSTRAIN_LAUNCHER_SUBPROCESS_H_
