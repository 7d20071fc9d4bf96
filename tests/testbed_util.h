// Test helpers for the multi-host test bed (scripts/testbed): hosts that are
// network namespaces on this machine, each with its own sshd, PID and mount
// namespaces, reached over ssh from the root namespace. Tests that use it
// need root (CAP_NET_ADMIN); where namespaces cannot be made, Up() says why
// and the test skips.
#ifndef PSTRAIN_TESTS_TESTBED_UTIL_H_
#define PSTRAIN_TESTS_TESTBED_UTIL_H_

#include <unistd.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "launcher/launcher.h"
#include "tests/worker_util.h"

namespace pstrain {
namespace testing_util {

// One test bed, brought up by Up() and removed by Down() (or the
// destructor). Its id is picked by the script (`--id auto`), so tests can
// run beside a developer's own test bed.
class TestBed {
 public:
  ~TestBed() { Down(); }

  // Brings up `hosts` hosts with `options` (e.g. {"--rate", "1gbit"}).
  // Returns nullptr and sets *skip (the script's own line) when namespaces
  // cannot be made here, or *error on any other failure.
  static std::unique_ptr<TestBed> Up(int hosts,
                                     const std::vector<std::string>& options,
                                     std::string* skip, std::string* error) {
    if (geteuid() != 0) {
      *skip = "the test bed needs root (network namespaces); skipped";
      return nullptr;
    }
    auto bed = std::unique_ptr<TestBed>(new TestBed());
    std::vector<std::string> argv = {"up",
                                     "--id",
                                     "auto",
                                     "--state_dir",
                                     TestTmp(),
                                     "--hosts",
                                     absl::StrCat(hosts)};
    argv.insert(argv.end(), options.begin(), options.end());
    std::string out;
    const int rc = bed->Run(argv, &out);
    if (rc == 77) {
      *skip = LastLineOf(out);
      return nullptr;
    }
    // Parse "state: DIR" and read DIR/env whatever happened, so that a
    // half-made test bed is still removed.
    for (absl::string_view line : absl::StrSplit(out, '\n')) {
      if (absl::ConsumePrefix(&line, "state: "))
        bed->state_ = std::string(line);
    }
    if (!bed->state_.empty()) bed->ReadEnv();
    if (rc != 0 || bed->hosts_.empty()) {
      *error = absl::StrCat("scripts/testbed up failed (", rc, "):\n", out);
      return nullptr;
    }
    bed->up_ = true;
    return bed;
  }

  // Runs `scripts/testbed --id ID ARGS...`; returns its exit code.
  int Run(const std::vector<std::string>& args, std::string* out) const {
    std::vector<std::string> words = {Runfile("scripts/testbed")};
    if (!id_.empty()) words.insert(words.end(), {"--id", id_});
    for (const auto& a : args) words.push_back(launcher::ShellQuote(a));
    return Shell(absl::StrJoin(words, " "), out);
  }

  // Runs `command` (a shell command line) on host i through ssh; returns its
  // exit code.
  int Ssh(int i, const std::string& command, std::string* out) const {
    return Shell(absl::StrCat("ssh -F ", ssh_config_, " ", hosts_[i], " ",
                              launcher::ShellQuote(command)),
                 out);
  }

  // Removes the test bed (idempotent).
  void Down() {
    if (id_.empty() || !up_) return;
    std::string out;
    const int rc = Run({"down"}, &out);
    if (rc != 0)
      ADD_FAILURE() << "scripts/testbed down failed (" << rc << "):\n" << out;
    up_ = false;
  }

  const std::string& id() const { return id_; }
  const std::vector<std::string>& hosts() const { return hosts_; }
  const std::string& hostfile() const { return hostfile_; }
  const std::string& ssh_config() const { return ssh_config_; }
  // This (root) namespace's address on the test bed's bridge.
  const std::string& launcher_address() const { return launcher_address_; }
  // Host names as the test bed accepts them: "h0", "h1", ...
  static std::string Name(int i) { return absl::StrCat("h", i); }

 private:
  TestBed() = default;

  static std::string LastLineOf(const std::string& text) {
    std::vector<std::string> lines =
        absl::StrSplit(text, '\n', absl::SkipWhitespace());
    return lines.empty() ? "scripts/testbed exited 77" : lines.back();
  }

  // STATE/env: KEY=VALUE lines, values possibly in quotes.
  void ReadEnv() {
    std::ifstream in(state_ + "/env");
    std::string line;
    while (std::getline(in, line)) {
      const size_t eq = line.find('=');
      if (eq == std::string::npos) continue;
      std::string key = line.substr(0, eq);
      absl::string_view v =
          absl::StripAsciiWhitespace(absl::string_view(line).substr(eq + 1));
      if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'') &&
          v.back() == v.front()) {
        v = v.substr(1, v.size() - 2);
      }
      if (absl::StartsWith(key, "export ")) key = key.substr(7);
      if (key == "TESTBED_ID") id_ = std::string(v);
      if (key == "TESTBED_HOSTFILE") hostfile_ = std::string(v);
      if (key == "TESTBED_SSH_CONFIG") ssh_config_ = std::string(v);
      if (key == "TESTBED_LAUNCHER_ADDRESS") launcher_address_ = std::string(v);
      if (key == "TESTBED_HOSTS")
        hosts_ = absl::StrSplit(v, ' ', absl::SkipWhitespace());
    }
  }

  bool up_ = false;
  std::string id_, state_, hostfile_, ssh_config_, launcher_address_;
  std::vector<std::string> hosts_;
};

}  // namespace testing_util
}  // namespace pstrain

#endif  // PSTRAIN_TESTS_TESTBED_UTIL_H_
