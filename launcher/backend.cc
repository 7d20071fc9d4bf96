#include "launcher/backend.h"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "glog/logging.h"
#include "launcher/local_backend.h"
#include "launcher/slurm_backend.h"
#include "launcher/ssh_backend.h"

namespace pstrain {
namespace launcher {

absl::StatusOr<Subprocess> Backend::Start(const ProcessSpec& spec,
                                          const std::string& token) const {
  NodeCommand command = Command(spec);
  auto proc = Subprocess::Start(command.argv, command.env);
  if (!proc.ok()) return proc.status();
  absl::Status w = proc->WriteStdin(token + "\n");
  if (!w.ok()) LOG(WARNING) << spec.Prefix() << " token not delivered: " << w;
  return proc;
}

void Backend::Stop(Subprocess* process, bool exited) const {
  process->CloseStdin();
  if (!exited) process->SignalGroup(SIGTERM);
}

void Backend::Say(const std::string& line) const {
  *context_.out << "launch: " << line << "\n" << std::flush;
}

std::unique_ptr<Backend> MakeNodeBackend(const JobContext& context) {
  switch (context.options->mode) {
    case Mode::kLocal:
      return std::make_unique<LocalBackend>(context);
    case Mode::kSsh:
      return std::make_unique<SshBackend>(context);
    case Mode::kSlurm:
      return std::make_unique<SlurmBackend>(context);
    case Mode::kMpi:  // mpirun runs here; see mpi.h.
      return std::make_unique<LocalBackend>(context);
  }
  LOG(FATAL) << "unknown launcher mode "
             << static_cast<int>(context.options->mode);
}

std::vector<std::string> OwnEnvironment() {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) env.push_back(*e);
  return env;
}

CommandResult RunCommand(const std::vector<std::string>& argv,
                         absl::Duration timeout) {
  CommandResult r;
  auto proc = Subprocess::Start(argv, OwnEnvironment());
  if (!proc.ok()) {
    r.description = std::string(proc.status().message());
    return r;
  }
  proc->CloseStdin();
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    bool open = proc->ReadOutput(&r.output);
    if (proc->Poll() && !open) break;
    if (absl::Now() > deadline) {
      proc->SignalGroup(SIGKILL);
      while (!proc->Poll()) absl::SleepFor(absl::Milliseconds(10));
      r.description =
          absl::StrCat("timed out after ", absl::FormatDuration(timeout));
      return r;
    }
    pollfd pfd{proc->output_fd(), POLLIN, 0};
    if (pfd.fd >= 0) {
      poll(&pfd, 1, 50);
    } else {
      absl::SleepFor(absl::Milliseconds(10));
    }
  }
  r.ok = proc->succeeded();
  r.description = proc->DescribeExit();
  return r;
}

std::string LastLine(const std::string& text) {
  std::vector<absl::string_view> lines =
      absl::StrSplit(text, '\n', absl::SkipWhitespace());
  return lines.empty() ? std::string()
                       : std::string(absl::StripAsciiWhitespace(lines.back()));
}

}  // namespace launcher
}  // namespace pstrain
