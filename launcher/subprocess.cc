#include "launcher/subprocess.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "util/status.h"

namespace pstrain {
namespace launcher {

absl::StatusOr<Subprocess> Subprocess::Start(
    const std::vector<std::string>& argv, const std::vector<std::string>& env) {
  CHECK(!argv.empty());
  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) != 0) return ErrnoToStatus(errno, "pipe");
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    int e = errno;
    close(in_pipe[0]);
    close(in_pipe[1]);
    return ErrnoToStatus(e, "pipe");
  }
  // Reports an exec failure back to the parent (closed on a successful exec).
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    int e = errno;
    for (int fd : {in_pipe[0], in_pipe[1], out_pipe[0], out_pipe[1]}) close(fd);
    return ErrnoToStatus(e, "pipe");
  }
  // Build the C arrays before fork: the child must not allocate.
  std::vector<char*> c_argv, c_env;
  for (const auto& a : argv) c_argv.push_back(const_cast<char*>(a.c_str()));
  c_argv.push_back(nullptr);
  for (const auto& e : env) c_env.push_back(const_cast<char*>(e.c_str()));
  c_env.push_back(nullptr);

  pid_t pid = fork();
  if (pid < 0) {
    int e = errno;
    for (int fd : {in_pipe[0], in_pipe[1], out_pipe[0], out_pipe[1],
                   err_pipe[0], err_pipe[1]}) {
      close(fd);
    }
    return ErrnoToStatus(e, "fork");
  }
  if (pid == 0) {
    setpgid(0, 0);
    dup2(in_pipe[0], STDIN_FILENO);
    dup2(out_pipe[1], STDOUT_FILENO);
    dup2(out_pipe[1], STDERR_FILENO);
    // Default signal dispositions for the child.
    signal(SIGPIPE, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execvpe(c_argv[0], c_argv.data(), c_env.data());
    int e = errno;
    ssize_t ignored = write(err_pipe[1], &e, sizeof(e));
    (void)ignored;
    _exit(127);
  }
  // Also set the group from the parent, so it exists before we signal it.
  setpgid(pid, pid);
  close(in_pipe[0]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  int child_errno = 0;
  ssize_t n;
  do {
    n = read(err_pipe[0], &child_errno, sizeof(child_errno));
  } while (n < 0 && errno == EINTR);
  close(err_pipe[0]);
  if (n == sizeof(child_errno)) {
    close(in_pipe[1]);
    close(out_pipe[0]);
    int status;
    waitpid(pid, &status, 0);
    return ErrnoToStatus(child_errno, absl::StrCat("exec ", argv[0]));
  }
  fcntl(out_pipe[0], F_SETFL, fcntl(out_pipe[0], F_GETFL) | O_NONBLOCK);
  Subprocess p;
  p.pid_ = pid;
  p.in_fd_ = in_pipe[1];
  p.out_fd_ = out_pipe[0];
  return p;
}

Subprocess::Subprocess(Subprocess&& o) noexcept { *this = std::move(o); }

Subprocess& Subprocess::operator=(Subprocess&& o) noexcept {
  if (this != &o) {
    Reset();
    pid_ = o.pid_;
    in_fd_ = o.in_fd_;
    out_fd_ = o.out_fd_;
    exited_ = o.exited_;
    wait_status_ = o.wait_status_;
    o.pid_ = -1;
    o.in_fd_ = -1;
    o.out_fd_ = -1;
  }
  return *this;
}

Subprocess::~Subprocess() { Reset(); }

void Subprocess::Reset() {
  if (pid_ > 0) {
    if (GroupAlive()) kill(-pid_, SIGKILL);
    if (!exited_) {
      int status;
      while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
    }
  }
  CloseStdin();
  if (out_fd_ >= 0) close(out_fd_);
  pid_ = -1;
  out_fd_ = -1;
}

absl::Status Subprocess::WriteStdin(const std::string& data) {
  if (in_fd_ < 0) return absl::UnavailableError("stdin already closed");
  size_t done = 0;
  while (done < data.size()) {
    // SIGPIPE is ignored by the launcher; a closed pipe gives EPIPE.
    ssize_t n = write(in_fd_, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoToStatus(errno, absl::StrCat("write to stdin of pid ", pid_));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

void Subprocess::CloseStdin() {
  if (in_fd_ >= 0) close(in_fd_);
  in_fd_ = -1;
}

bool Subprocess::ReadOutput(std::string* out) {
  if (out_fd_ < 0) return false;
  char buf[65536];
  while (true) {
    ssize_t n = read(out_fd_, buf, sizeof(buf));
    if (n > 0) {
      out->append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    close(out_fd_);  // EOF or a hard error.
    out_fd_ = -1;
    return false;
  }
}

bool Subprocess::Poll() {
  if (exited_ || pid_ <= 0) return exited_;
  int status;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    exited_ = true;
    wait_status_ = status;
  }
  return exited_;
}

std::string Subprocess::DescribeExit() const {
  CHECK(exited_);
  if (WIFEXITED(wait_status_)) {
    return absl::StrCat("exit status ", WEXITSTATUS(wait_status_));
  }
  if (WIFSIGNALED(wait_status_)) {
    int sig = WTERMSIG(wait_status_);
    const char* name = sigabbrev_np(sig);
    return absl::StrCat("killed by signal ", sig, " (SIG", name ? name : "?",
                        ")");
  }
  return absl::StrCat("wait status ", wait_status_);
}

bool Subprocess::succeeded() const {
  CHECK(exited_);
  return WIFEXITED(wait_status_) && WEXITSTATUS(wait_status_) == 0;
}

void Subprocess::SignalGroup(int signal) {
  if (pid_ > 0) kill(-pid_, signal);
}

namespace {

// Whether a process of group `pgid` other than a zombie is in /proc.
bool GroupHasLiveMember(pid_t pgid) {
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return true;  // Cannot tell: assume so.
  bool found = false;
  while (dirent* e = readdir(proc)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::ifstream in(absl::StrCat("/proc/", e->d_name, "/stat"));
    std::string stat;
    std::getline(in, stat);
    // "PID (COMM) STATE PPID PGRP ...": COMM may hold spaces and parens.
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 1));
    char state = 0;
    long ppid = 0, pgrp = 0;
    if (rest >> state >> ppid >> pgrp && pgrp == pgid && state != 'Z') {
      found = true;
      break;
    }
  }
  closedir(proc);
  return found;
}

}  // namespace

bool Subprocess::GroupAlive() const {
  if (pid_ <= 0) return false;
  if (kill(-pid_, 0) != 0 && errno == ESRCH) return false;
  // An exited but unreaped leader still counts: callers reap via Poll().
  if (!exited_) return true;
  // Zombies left in the group (children of a reaped leader, such as srun's
  // helper, that init has not reaped yet) are gone for every purpose.
  return GroupHasLiveMember(pid_);
}

}  // namespace launcher
}  // namespace pstrain
