// launch with the real scheduler and server binaries and kv_bench or the
// real worker as the workers (local mode): a whole job runs and exits 0;
// killing one worker with SIGKILL (kv_bench, or a training worker
// mid-epoch) stops the job within 20 s, names the worker, and leaves nothing
// running.
#include <signal.h>

#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "glog/logging.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "launcher/subprocess.h"
#include "tests/cluster_util.h"

namespace pstrain {
namespace {

using ::testing::HasSubstr;
using testing_util::Env;
using testing_util::Runfile;
using testing_util::RunToEnd;

// `command`: the workers' command line.
std::vector<std::string> LaunchArgv(int workers, int servers,
                                    std::vector<std::string> command) {
  std::vector<std::string> argv = {
      Runfile("tools/launch"), "-n", absl::StrCat(workers), "-s",
      absl::StrCat(servers), "--launcher", "local", "--scheduler_binary",
      Runfile("scheduler/scheduler"), "--server_binary",
      Runfile("server/server"),
      // 120.0123: a marker to find exactly this test's processes.
      "--scheduler_args=--heartbeat_interval_s=0.3 --heartbeat_timeout_s=3 "
      "--start_timeout_s=120.0123",
      "--server_args=--heartbeat_interval_s=0.3 --heartbeat_timeout_s=3 "
      "--start_timeout_s=120.0123",
      "--stop_grace_s", "3", "--"};
  argv.insert(argv.end(), command.begin(), command.end());
  return argv;
}

std::vector<std::string> KvBench(const std::string& iters) {
  return {Runfile("tools/kv_bench"), "--value_bytes=4096,262144",
          "--mode=push,pull", "--iters=" + iters,
          "--heartbeat_timeout_s=3.0123"};
}

// The pids of the running processes whose command line matches `pattern`.
std::vector<int> Pgrep(const std::string& pattern) {
  auto pg = launcher::Subprocess::Start({"pgrep", "-f", pattern}, Env());
  CHECK(pg.ok()) << pg.status();
  pg->CloseStdin();
  std::string list;
  while (pg->ReadOutput(&list) || !pg->Poll())
    absl::SleepFor(absl::Milliseconds(5));
  std::vector<int> pids;
  for (absl::string_view w : absl::StrSplit(list, '\n', absl::SkipEmpty())) {
    int pid;
    if (absl::SimpleAtoi(w, &pid)) pids.push_back(pid);
  }
  return pids;
}

// Starts a job of 2 workers running `command`, kill -9s the first worker
// (found by `worker_pattern`) once `running` appears in the output, and
// checks that the launcher stops everything within 20 s naming it.
void KillOneWorker(const std::vector<std::string>& command,
                   const std::string& worker_pattern,
                   const std::string& running) {
  auto p = launcher::Subprocess::Start(LaunchArgv(2, 1, command), Env());
  ASSERT_TRUE(p.ok()) << p.status();
  p->CloseStdin();
  std::string out;
  std::vector<int> workers;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while ((workers.size() < 2 || out.find(running) == std::string::npos) &&
         absl::Now() < deadline) {
    p->ReadOutput(&out);
    workers = Pgrep(worker_pattern);
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_EQ(workers.size(), 2u) << out;
  ASSERT_THAT(out, HasSubstr(running));
  ASSERT_EQ(kill(workers[0], SIGKILL), 0);
  const absl::Time killed = absl::Now();
  bool exited = false;
  out += RunToEnd(&*p, absl::Seconds(30), &exited);
  ASSERT_TRUE(exited) << out;
  EXPECT_FALSE(p->succeeded());
  EXPECT_LT(absl::Now() - killed, absl::Seconds(20));
  EXPECT_THAT(out, HasSubstr("job failed: [worker "));
  EXPECT_THAT(out, HasSubstr("killed by signal 9"));
  // Nothing of the job remains.
  for (const std::string& name :
       {worker_pattern,
        std::string("^[^ ]*scheduler/scheduler .*start_timeout_s=120.0123"),
        std::string("^[^ ]*server/server .*start_timeout_s=120.0123")}) {
    EXPECT_THAT(Pgrep(name), ::testing::IsEmpty()) << name << " still running";
  }
}

TEST(LaunchClusterTest, JobWithRealBinariesFinishes) {
  auto p = launcher::Subprocess::Start(LaunchArgv(2, 2, KvBench("20")), Env());
  ASSERT_TRUE(p.ok()) << p.status();
  p->CloseStdin();
  bool exited = false;
  std::string out = RunToEnd(&*p, absl::Seconds(60), &exited);
  ASSERT_TRUE(exited) << out;
  EXPECT_TRUE(p->succeeded()) << out;
  EXPECT_THAT(out, HasSubstr("[worker 0 127.0.0.1] push"));
  EXPECT_THAT(out, HasSubstr("[worker 1 127.0.0.1] pull"));
  EXPECT_THAT(out, HasSubstr("every worker finished"));
  EXPECT_THAT(out, HasSubstr("job finished: every process exited 0"));
}

// launch --status_port 0: the scheduler serves its status page and launch
// prints where.
TEST(LaunchClusterTest, PrintsTheStatusPage) {
  std::vector<std::string> argv = LaunchArgv(1, 1, KvBench("20"));
  argv.insert(argv.begin() + 1, {"--status_port", "0"});
  auto p = launcher::Subprocess::Start(argv, Env());
  ASSERT_TRUE(p.ok()) << p.status();
  p->CloseStdin();
  bool exited = false;
  std::string out = RunToEnd(&*p, absl::Seconds(60), &exited);
  ASSERT_TRUE(exited) << out;
  EXPECT_TRUE(p->succeeded()) << out;
  EXPECT_THAT(out, HasSubstr("[scheduler 0 127.0.0.1] status page: "
                             "http://127.0.0.1:"));
  EXPECT_THAT(out, HasSubstr("\nlaunch: status page: http://127.0.0.1:"));
}

TEST(LaunchClusterTest, KilledWorkerStopsTheJobAndNothingRemains) {
  KillOneWorker(KvBench("100000000"),
                "^[^ ]*kv_bench .*heartbeat_timeout_s=3.0123",
                "address book sent");
}

TEST(LaunchClusterTest, KilledTrainingWorkerMidEpochStopsTheJob) {
  // Synthetic data, an epoch far longer than the test.
  KillOneWorker(
      {Runfile("worker/worker"), "--benchmark", "--network=mlp",
       "--batch_size=16", "--num_examples=100000000", "--disp_batches=5",
       "--kv_store=dist_sync", "--heartbeat_timeout_s=3.0123"},
      "^[^ ]*worker/worker .*heartbeat_timeout_s=3.0123",
      "Epoch[0] Batch [5-10]");
}

}  // namespace
}  // namespace pstrain
