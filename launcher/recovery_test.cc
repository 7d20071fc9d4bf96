// launch --max_restarts with small shell programs standing in for the
// scheduler, server and worker, and real checkpoint folders: a failed job
// restarts from the newest checkpoint that verifies (a corrupt newer one is
// skipped), the nodes get --checkpoint_dir and --resume_from, and the
// number of restarts is bounded.
#include "launcher/recovery.h"

#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "checkpoint/manifest.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "util/file.h"

namespace pstrain {
namespace launcher {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Tmp(const std::string& name) {
  const std::string d = absl::StrCat(std::getenv("TEST_TMPDIR"), "/", name);
  EXPECT_TRUE(checkpoint::MakeDirs(d).ok());
  return d;
}

std::string Script(const std::string& dir, const std::string& name,
                   const std::string& body) {
  const std::string path = absl::StrCat(dir, "/", name);
  std::ofstream(path) << "#!/bin/sh\n" << body;
  chmod(path.c_str(), 0755);
  return path;
}

void Checkpoint(const std::string& root, int64_t step) {
  const std::string dir = checkpoint::StepDir(root, step);
  ASSERT_TRUE(checkpoint::MakeDirs(dir).ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/server-0.params", "state").ok());
  checkpoint::Manifest m;
  m.step = step;
  ASSERT_TRUE(checkpoint::WriteManifest(dir, m, {"server-0.params"}).ok());
}

// A job whose worker fails (exit 3) unless it was given --resume_from,
// and prints its arguments; the scheduler and server print theirs.
LaunchOptions Job(const std::string& dir, bool always_fail) {
  LaunchOptions o;
  o.mode = Mode::kLocal;
  o.num_workers = 1;
  o.num_servers = 1;
  o.stop_grace = absl::Seconds(2);
  o.scheduler_binary = Script(dir, "sched.sh", "sleep 0.2\n");
  o.server_binary = Script(dir, "server.sh", "echo \"server args=$*\"\n");
  o.command = {Script(dir, "worker.sh",
                      std::string("echo \"worker args=$*\"\n") +
                          (always_fail ? "exit 3\n"
                                       : "case \"$*\" in *--resume_from=*) "
                                         "exit 0;; esac\nexit 3\n"))};
  return o;
}

TEST(RestartTest, FailedJobResumesFromTheNewestCheckpointThatVerifies) {
  const std::string dir = Tmp("resume");
  const std::string root = dir + "/ck";
  Checkpoint(root, 5);
  Checkpoint(root, 9);
  // Step 9's part is corrupted after its manifest was written.
  const std::string bad = checkpoint::StepDir(root, 9) + "/server-0.params";
  ASSERT_TRUE(WriteFileAtomically(bad, "stats").ok());
  std::ostringstream out;
  RestartOptions r;
  r.max_restarts = 2;
  r.checkpoint_dir = root;
  EXPECT_EQ(RunWithRestarts(Job(dir, false), r, &out), 0);
  const std::string text = out.str();
  EXPECT_THAT(text, HasSubstr("launch: restart 1 of 2 after [worker 0 "));
  EXPECT_THAT(text, HasSubstr("exited with status 3"));
  const std::string five = checkpoint::StepDir(root, 5);
  EXPECT_THAT(text, HasSubstr(absl::StrCat("resuming from ", five,
                                           " (step 5, written ")));
  EXPECT_THAT(text, Not(HasSubstr("restart 2 of 2")));
  // First run: only --checkpoint_dir; the restart adds --resume_from, to
  // the servers too.
  EXPECT_THAT(text, HasSubstr(absl::StrCat("worker args=--checkpoint_dir=",
                                           root, " --scheduler_address")));
  EXPECT_THAT(text, HasSubstr(absl::StrCat("worker args=--checkpoint_dir=",
                                           root, " --resume_from=", five)));
  EXPECT_THAT(text, HasSubstr(absl::StrCat("--checkpoint_dir=", root,
                                           " --resume_from=", five)));
  EXPECT_THAT(text, HasSubstr("job finished: every process exited 0"));
}

TEST(RestartTest, RestartsAreBoundedAndStartOverWithoutACheckpoint) {
  const std::string dir = Tmp("bounded");
  std::ostringstream out;
  RestartOptions r;
  r.max_restarts = 1;
  r.checkpoint_dir = dir + "/empty";
  EXPECT_EQ(RunWithRestarts(Job(dir, true), r, &out), 1);
  const std::string text = out.str();
  EXPECT_THAT(text, HasSubstr("resuming from the beginning (no complete "
                              "checkpoint under "));
  EXPECT_THAT(text, Not(HasSubstr("restart 2 of")));
  EXPECT_THAT(text, HasSubstr("no restart left (--max_restarts 1)"));
  // Without --max_restarts a failure is final, as before.
  std::ostringstream once;
  EXPECT_EQ(RunWithRestarts(Job(dir, true), RestartOptions(), &once), 1);
  EXPECT_THAT(once.str(), Not(HasSubstr("restart")));
}

// Puts a stand-in `ssh` first in PATH: it runs the remote command here,
// unless DIR/down-HOST exists (then it fails as ssh does when it cannot
// connect: exit 255).
void FakeSsh(const std::string& dir) {
  const std::string bin = Tmp(dir.substr(dir.rfind('/') + 1) + "/bin");
  Script(bin, "ssh",
         "while [ $# -gt 1 ]; do case \"$1\" in -F|-o|-p) shift 2;; *) "
         "break;; esac; done\n"
         "host=$1; shift\n"
         "if [ -e " +
             dir +
             "/down-$host ]; then\n"
             "  echo \"ssh: connect to host $host port 22: No route to host\" "
             ">&2\n"
             "  exit 255\n"
             "fi\n"
             "exec /bin/sh -c \"$*\"\n");
  const std::string path = absl::StrCat(bin, ":", std::getenv("PATH"));
  setenv("PATH", path.c_str(), 1);
}

LaunchOptions SshJob(const std::string& dir) {
  LaunchOptions o;
  o.mode = Mode::kSsh;
  o.num_servers = 1;
  o.num_workers = 2;
  o.hosts = {Host("127.0.0.1"), Host("127.0.0.2"), Host("127.0.0.3")};
  o.scheduler_host = "127.0.0.1";
  o.stop_grace = absl::Seconds(2);
  o.ssh_connect_timeout = absl::Seconds(2);
  o.scheduler_binary = Script(dir, "sched.sh", "sleep 0.2\n");
  o.server_binary = Script(dir, "server.sh", "echo \"server args=$*\"\n");
  o.command = {Script(dir, "worker.sh", "exit 0\n")};
  return o;
}

// The scheduler's account of a silent node names the host to blame, also
// when another node's exit is what launch saw first.
TEST(RestartTest, TheHostTheSchedulerNamedIsBlamed) {
  const std::string dir = Tmp("blame");
  FakeSsh(dir);
  LaunchOptions o = SshJob(dir);
  o.scheduler_binary = Script(
      dir, "sched.sh",
      "echo 'E1206 scheduler.cc:192] scheduler: aborting the job: node dead: "
      "worker rank 1 at 127.0.0.3:4567 has been silent for 4.0 s'\n"
      "sleep 0.5; exit 1\n");
  o.command = {Script(dir, "worker.sh", "sleep 0.2; exit 1\n")};
  std::ostringstream out;
  Launcher launcher(o, &out);
  EXPECT_EQ(launcher.Run(), 1);
  EXPECT_THAT(launcher.failure(),
              HasSubstr("(the scheduler aborted the job: node dead: worker "
                        "rank 1 at 127.0.0.3:4567"));
  ASSERT_EQ(launcher.host_failures().size(), 1u) << out.str();
  EXPECT_EQ(launcher.host_failures()[0].first, "127.0.0.3");
  EXPECT_FALSE(launcher.check_failed());
}

// ssh mode (FakeSsh), a host that is "down" (ssh exits 255, as when it cannot
// connect) while DIR/down-HOST exists. The worker on 127.0.0.2 exits 3 and
// takes its host down: the restart's host check cannot reach it (its
// second failure), and the next restart leaves it out.
TEST(RestartTest, SshHostThatFailedTwiceIsLeftOut) {
  const std::string dir = Tmp("exclude");
  FakeSsh(dir);
  LaunchOptions o = SshJob(dir);
  o.command = {Script(dir, "worker.sh",
                      "case \"$*\" in *--host=127.0.0.2*) touch " + dir +
                          "/down-127.0.0.2; exit 3;; esac\n")};
  std::ostringstream out;
  RestartOptions r;
  r.max_restarts = 3;
  r.check_retry_pause = absl::Milliseconds(100);
  EXPECT_EQ(RunWithRestarts(o, r, &out), 0);
  const std::string text = out.str();
  EXPECT_THAT(text, HasSubstr("launch: restart 1 of 3 after [worker 0 "
                              "127.0.0.2] exited with status 3"));
  EXPECT_THAT(text, HasSubstr("launch: restart 2 of 3 after the host check "
                              "could not reach 127.0.0.2"));
  EXPECT_THAT(text, HasSubstr("launch: leaving out host 127.0.0.2, which "
                              "failed 2 times ([worker 0 127.0.0.2] exited "
                              "with status 3; check: unreachable: ssh exit "
                              "status 255"));
  EXPECT_THAT(text, HasSubstr("the job's 1 server(s) and 2 worker(s) fit on "
                              "the other 2 host(s)"));
  EXPECT_THAT(text, Not(HasSubstr("restart 3 of 3")));
  // The last run: the worker that was on 127.0.0.2 is on 127.0.0.3.
  EXPECT_THAT(text, HasSubstr("launch: [worker 0 127.0.0.3] finished"));
  EXPECT_THAT(text, HasSubstr("job finished: every process exited 0"));
}

TEST(RestartTest, FlagsGoToServersAndWorkers) {
  LaunchOptions o;
  o.command = {"worker", "--x"};
  o.server_args = {"--y"};
  LaunchOptions w = WithCheckpointFlags(o, "/ck", "/ck/step-0000000003");
  EXPECT_EQ(w.command,
            (std::vector<std::string>{"worker", "--x", "--checkpoint_dir=/ck",
                                      "--resume_from=/ck/step-0000000003"}));
  EXPECT_EQ(w.server_args,
            (std::vector<std::string>{"--y", "--checkpoint_dir=/ck",
                                      "--resume_from=/ck/step-0000000003"}));
  EXPECT_EQ(WithCheckpointFlags(o, "", "").command, o.command);
}

}  // namespace
}  // namespace launcher
}  // namespace pstrain
