// For the status tests that run Debian's tools (promtool, chromium).
#ifndef PSTRAIN_STATUS_TEST_SHELL_H_
#define PSTRAIN_STATUS_TEST_SHELL_H_

#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace pstrain {
namespace status {

// Runs `command` through the shell and appends its standard output to
// *output; returns its exit status, or -1 when it did not run or exit.
inline int Shell(const std::string& command, std::string* output) {
  FILE* f = popen(command.c_str(), "r");
  if (f == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) output->append(buf, n);
  const int rc = pclose(f);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

}  // namespace status
}  // namespace pstrain

#endif  // PSTRAIN_STATUS_TEST_SHELL_H_
