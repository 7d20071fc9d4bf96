// launch with the real scheduler and server binaries and kv_bench as the
// workers (local mode): a whole job runs and exits 0; killing one worker
// with SIGKILL stops the job, names the worker, and leaves nothing running.
#include <signal.h>

#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
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

std::vector<std::string> LaunchArgv(int workers, int servers, const std::string& iters) {
  return {Runfile("tools/launch"),
          "-n", absl::StrCat(workers), "-s", absl::StrCat(servers), "--launcher", "local",
          "--scheduler_binary", Runfile("scheduler/scheduler"),
          "--server_binary", Runfile("server/server"),
          // 120.0123: a marker to find exactly this test's processes.
          "--scheduler_args=--heartbeat_interval_s=0.3 --heartbeat_timeout_s=3 --start_timeout_s=120.0123",
          "--server_args=--heartbeat_interval_s=0.3 --heartbeat_timeout_s=3 --start_timeout_s=120.0123",
          "--stop_grace_s", "3", "--",
          Runfile("tools/kv_bench"), "--value_bytes=4096,262144", "--mode=push,pull",
          "--iters=" + iters, "--heartbeat_timeout_s=3.0123"};
}

TEST(LaunchClusterTest, JobWithRealBinariesFinishes) {
  auto p = launcher::Subprocess::Start(LaunchArgv(2, 2, "20"), Env());
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

TEST(LaunchClusterTest, KilledWorkerStopsTheJobAndNothingRemains) {
  auto p = launcher::Subprocess::Start(LaunchArgv(2, 1, "100000000"), Env());
  ASSERT_TRUE(p.ok()) << p.status();
  p->CloseStdin();
  // Wait until the job runs (the workers' pids appear in the output of the
  // launcher's wrapper only internally; use pgrep on kv_bench instead).
  std::string out;
  std::vector<int> workers;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (workers.size() < 2 && absl::Now() < deadline) {
    p->ReadOutput(&out);
    auto pg = launcher::Subprocess::Start({"pgrep", "-f", "^[^ ]*kv_bench .*heartbeat_timeout_s=3.0123"}, Env());
    ASSERT_TRUE(pg.ok());
    pg->CloseStdin();
    std::string list;
    while (pg->ReadOutput(&list) || !pg->Poll()) absl::SleepFor(absl::Milliseconds(5));
    workers.clear();
    for (absl::string_view w : absl::StrSplit(list, '\n', absl::SkipEmpty())) {
      int pid;
      if (absl::SimpleAtoi(w, &pid)) workers.push_back(pid);
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_EQ(workers.size(), 2u) << out;
  absl::SleepFor(absl::Milliseconds(500));  // Let it get going.
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
  for (const char* name : {"^[^ ]*kv_bench .*heartbeat_timeout_s=3.0123",
                           "^[^ ]*scheduler/scheduler .*start_timeout_s=120.0123",
                           "^[^ ]*server/server .*start_timeout_s=120.0123"}) {
    auto pg = launcher::Subprocess::Start({"pgrep", "-f", name}, Env());
    ASSERT_TRUE(pg.ok());
    pg->CloseStdin();
    std::string list;
    while (pg->ReadOutput(&list) || !pg->Poll()) absl::SleepFor(absl::Milliseconds(5));
    EXPECT_EQ(list, "") << name << " still running";
  }
}

}  // namespace
}  // namespace pstrain
