// For the tests that run Debian's tools (promtool, chromium).
#ifndef PSTRAIN_STATUS_TEST_SHELL_H_
#define PSTRAIN_STATUS_TEST_SHELL_H_

#include <sys/wait.h>

#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"

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

// Headless Chromium (Debian's chromium) on `url` with `args` before it
// (e.g. "--dump-dom", "--screenshot=F"), its profile and home in `tmp`
// and its log in tmp/chromium.log, bounded by two minutes. Appends its
// standard output to *output; returns its exit status as Shell does.
inline int Chromium(const std::string& tmp, const std::string& args,
                    const std::string& url, std::string* output) {
  return Shell(absl::StrCat("HOME=", tmp,
                            " timeout 120 chromium --headless=new "
                            "--no-sandbox --disable-gpu --no-first-run "
                            "--disable-dev-shm-usage --hide-scrollbars "
                            "--user-data-dir=",
                            tmp, "/chrome ", args, " ", url, " 2>", tmp,
                            "/chromium.log"),
               output);
}

// Whether chromium is installed (scripts/setup installs it).
inline bool HaveChromium() {
  std::string out;
  return Shell("command -v chromium", &out) == 0;
}

}  // namespace status
}  // namespace pstrain

#endif  // PSTRAIN_STATUS_TEST_SHELL_H_
