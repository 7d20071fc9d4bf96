// Jobs across hosts: a test bed of 3 hosts (network namespaces with their
// own sshd, PID and mount namespaces; scripts/testbed) and the real launch,
// scheduler, server and worker binaries, launched over ssh from this (root)
// namespace:
// - dist_sync 2 servers x 2 workers across the hosts ends with the same
//   weights as a local run with twice the batch, and the tensors between
//   hosts go over TCP (shared memory only within a host);
// - the same with 2% loss on every link (and 5 ms delay where the kernel has
//   netem);
// - a host's link cut mid-job: the scheduler names the silent node and its
//   host, launch exits non-zero within 15 s, and no process of the job is
//   left on any host, the cut one included;
// - a host whose sshd is down and a host that is not there: the preflight
//   table names them and nothing starts;
// - kv_bench across the hosts, against raw TCP between the same hosts;
// - `scripts/testbed link all watch` shows which hosts' links carry traffic.
// Needs root; skips, saying why, where namespaces cannot be made.
#include <signal.h>

#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testbed_util.h"
#include "tests/worker_util.h"

namespace pstrain {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing_util::LinesWith;
using testing_util::Runfile;
using testing_util::TestBed;

constexpr int kBatch = 16, kSteps = 8, kPart = kBatch * kSteps;

class MultiHostTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!testing_util::HaveFashionMnist()) {
      skip_ = "Debian's dataset-fashion-mnist is not installed; skipped";
      return;
    }
    std::string error;
    bed_ = TestBed::Up(3, {}, &skip_, &error).release();
    if (bed_ == nullptr && skip_.empty()) setup_error_ = error;
  }
  static void TearDownTestSuite() {
    delete bed_;  // Removes the test bed.
    bed_ = nullptr;
  }
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
    ASSERT_NE(bed_, nullptr);
    tmp_ = testing_util::TestTmp();
  }

  // The flags every job here shares (deterministic data: no shuffling, no
  // random augmentation; one decode thread).
  static std::vector<std::string> Flags(const std::vector<std::string>& more) {
    std::vector<std::string> f = {"--network=lenet", "--rgb-mean=72.94",
                                  "--rgb-std=90.02", "--data_nthreads=1",
                                  "--lr=0.05",       "--wd=0.0001",
                                  "--mom=0.9",       "--shuffle=false"};
    f.insert(f.end(), more.begin(), more.end());
    return f;
  }

  // launch over ssh onto the test bed's hosts (the scheduler here, on the
  // bridge's address that launch finds by itself).
  std::vector<std::string> LaunchArgv(
      const std::string& hostfile, int workers, int servers,
      const std::vector<std::string>& launch_flags,
      const std::vector<std::string>& worker_flags) const {
    std::vector<std::string> argv = {Runfile("tools/launch"),
                                     "-n",
                                     absl::StrCat(workers),
                                     "-s",
                                     absl::StrCat(servers),
                                     "-H",
                                     hostfile,
                                     "--ssh_config",
                                     bed_->ssh_config(),
                                     "--scheduler_binary",
                                     Runfile("scheduler/scheduler"),
                                     "--server_binary",
                                     Runfile("server/server"),
                                     "--env",
                                     "OMP_NUM_THREADS=1",
                                     "--stop_grace_s",
                                     "3"};
    argv.insert(argv.end(), launch_flags.begin(), launch_flags.end());
    argv.push_back("--");
    argv.push_back(Runfile("worker/worker"));
    argv.insert(argv.end(), worker_flags.begin(), worker_flags.end());
    return argv;
  }

  // Runs a launch command line to its end; *rc is its exit code (-1 if it
  // did not end within `limit`).
  static std::string RunLaunch(const std::vector<std::string>& argv,
                               absl::Duration limit, int* rc) {
    return testing_util::RunCommand(argv, limit, rc);
  }

  // Packs the data once: train.rec (worker 0 reads [0, kPart), worker 1
  // [kPart, 2 kPart)) and local.rec with their batches interleaved, and
  // trains the local reference with batch 2 * kBatch.
  void PrepareReference() {
    if (!reference_.empty()) return;
    ASSERT_EQ(testing_util::PackFashion("train", 2 * kPart, tmp_ + "/train"),
              "");
    std::vector<std::string> all =
        testing_util::ReadPayloads(tmp_ + "/train.rec");
    ASSERT_EQ(all.size(), 2u * kPart);
    testing_util::WritePayloads(
        tmp_ + "/local.rec",
        testing_util::InterleaveBatches(all, 2, kBatch, kSteps));
    std::string out;
    ASSERT_EQ(
        testing_util::Shell(
            absl::StrCat(
                Runfile("worker/worker"), " ",
                absl::StrJoin(Flags({"--kv_store=local",
                                     absl::StrCat("--batch_size=", 2 * kBatch),
                                     "--data_train=" + tmp_ + "/local.rec",
                                     "--model_prefix=" + tmp_ + "/local"}),
                              " ")),
            &out),
        0)
        << out;
    reference_ = testing_util::ReadParams(tmp_ + "/local-0001.params");
    ASSERT_FALSE(reference_.empty());
  }

  // A 2 x 2 dist_sync job across the three hosts (servers on h0 and h1,
  // worker 0 on h2, worker 1 on h0); checks its weights against the local
  // reference and returns its output.
  std::string RunDistSyncAndCompare(const std::string& prefix) {
    PrepareReference();
    int rc = 0;
    const std::string out = RunLaunch(
        LaunchArgv(bed_->hostfile(), 2, 2, {},
                   Flags({"--kv_store=dist_sync", "--fusion_bytes=65536",
                          absl::StrCat("--batch_size=", kBatch),
                          "--data_train=" + tmp_ + "/train.rec",
                          "--model_prefix=" + prefix})),
        absl::Seconds(180), &rc);
    EXPECT_EQ(rc, 0) << out;
    EXPECT_EQ(LinesWith(out, absl::StrCat(kSteps, " batches of ", kBatch,
                                          " per epoch"))
                  .size(),
              2u)
        << out;
    const double diff = testing_util::MaxRelativeDiff(
        reference_, testing_util::ReadParams(prefix + "-0001.params"));
    std::cout << "dist_sync 2 x " << kBatch << " across 3 hosts vs local "
              << 2 * kBatch << " after " << kSteps
              << " steps: max relative difference " << diff << "\n";
    EXPECT_LT(diff, 1e-5);
    return out;
  }

  // The command lines of this test's job processes still alive anywhere:
  // the root namespace sees every host's processes.
  static std::string JobProcesses() {
    std::string out;
    testing_util::Shell(
        absl::StrCat(
            "pgrep -af -- ", launcher::ShellQuote(Runfile("worker/worker")),
            "; pgrep -af -- ", launcher::ShellQuote(Runfile("server/server")),
            "; pgrep -af -- ",
            launcher::ShellQuote(Runfile("scheduler/scheduler")), "; true"),
        &out);
    return out;
  }

  static TestBed* bed_;
  static std::string skip_, setup_error_;
  static testing_util::Params reference_;
  std::string tmp_;
};

TestBed* MultiHostTest::bed_ = nullptr;
std::string MultiHostTest::skip_;
std::string MultiHostTest::setup_error_;
testing_util::Params MultiHostTest::reference_;

// glog's error lines ("E1205 10:00:00.123456 ...") after launch's prefix.
std::vector<std::string> ErrorLines(const std::string& out) {
  std::vector<std::string> errors;
  for (const auto& line : LinesWith(out, "] E")) {
    const size_t at = line.find("] E");
    if (line.size() > at + 7 && isdigit(line[at + 3]) && isdigit(line[at + 6]))
      errors.push_back(line);
  }
  return errors;
}

TEST_F(MultiHostTest, DistSyncAcrossHostsEqualsLocalWithDoubleBatch) {
  const std::string out = RunDistSyncAndCompare(tmp_ + "/dist");
  // The scheduler ran here, on the bridge's address, found by launch.
  EXPECT_THAT(out, HasSubstr(absl::StrCat("1 scheduler at ",
                                          bed_->launcher_address(), ":")));
  // Worker 0 is alone on h2: everything it sent and received went over TCP.
  // Worker 1 shares h0 with server 0: shared memory works within a host.
  const auto w0 =
      LinesWith(out, absl::StrCat("[worker 0 ", bed_->hosts()[2], "]"));
  const auto w1 =
      LinesWith(out, absl::StrCat("[worker 1 ", bed_->hosts()[0], "]"));
  std::string w0_travel, w1_travel;
  for (const auto& l : w0) {
    if (absl::StrContains(l, "tensors through shared memory")) w0_travel = l;
  }
  for (const auto& l : w1) {
    if (absl::StrContains(l, "tensors through shared memory")) w1_travel = l;
  }
  std::cout << w0_travel << "\n" << w1_travel << "\n";
  EXPECT_THAT(w0_travel,
              HasSubstr("tensors through shared memory: 0 sent, 0 received"))
      << out;
  EXPECT_THAT(w1_travel, HasSubstr("tensors through shared memory: ")) << out;
  EXPECT_THAT(w1_travel, Not(HasSubstr("shared memory: 0 sent, 0 received")))
      << out;
  // Falling back to TCP between hosts is normal: nothing is logged as an
  // error.
  EXPECT_THAT(ErrorLines(out), ::testing::IsEmpty()) << out;
  EXPECT_EQ(JobProcesses(), "");
}

TEST_F(MultiHostTest, DistSyncWithLossOnEveryLinkGivesTheSameWeights) {
  std::string caps;
  bed_->Run({"caps"}, &caps);
  const bool netem = absl::StrContains(caps, "netem: yes");
  std::vector<std::string> shape = {"--loss", "2"};
  if (netem) {
    shape.insert(shape.end(), {"--delay", "5ms"});
  } else {
    std::cout
        << "this kernel has no netem: 2% loss on every link, no added delay\n";
  }
  for (int i = 0; i < 3; ++i) {
    std::vector<std::string> args = {"link", TestBed::Name(i), "shape"};
    args.insert(args.end(), shape.begin(), shape.end());
    std::string out;
    ASSERT_EQ(bed_->Run(args, &out), 0) << out;
  }
  RunDistSyncAndCompare(tmp_ + "/lossy");
  for (int i = 0; i < 3; ++i) {
    std::string out;
    EXPECT_EQ(bed_->Run({"link", TestBed::Name(i), "shape", "--loss", "0",
                         "--rate", "0"},
                        &out),
              0)
        << out;
  }
}

TEST_F(MultiHostTest, CutLinkStopsTheJobWithin15sAndLeavesNothing) {
  ASSERT_EQ(testing_util::PackFashion("train", 1024, tmp_ + "/long"), "");
  // A long job (it is cut long before its end), default heartbeat timeout
  // (10 s).
  auto p = launcher::Subprocess::Start(
      LaunchArgv(
          bed_->hostfile(), 2, 2, {},
          Flags({"--kv_store=dist_sync", "--batch_size=16", "--num_epochs=1000",
                 "--disp_batches=2", "--data_train=" + tmp_ + "/long.rec"})),
      testing_util::Env());
  ASSERT_TRUE(p.ok()) << p.status();
  p->CloseStdin();
  std::string out;
  // Worker 0 runs alone on h2. Wait until both workers train.
  const absl::Time start_deadline = absl::Now() + absl::Seconds(90);
  while (absl::Now() < start_deadline && LinesWith(out, "Batch [").size() < 4 &&
         !p->Poll()) {
    p->ReadOutput(&out);
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_GE(LinesWith(out, "Batch [").size(), 4u) << out;
  std::string cut_out;
  ASSERT_EQ(bed_->Run({"link", TestBed::Name(2), "down"}, &cut_out), 0)
      << cut_out;
  const absl::Time cut = absl::Now();
  bool exited = false;
  out += testing_util::RunToEnd(&*p, absl::Seconds(30), &exited);
  const absl::Duration took = absl::Now() - cut;
  std::cout << "launch exited " << absl::FormatDuration(took)
            << " after the cut\n";
  ASSERT_TRUE(exited) << out;
  EXPECT_LT(took, absl::Seconds(15)) << out;
  EXPECT_NE(WEXITSTATUS(p->wait_status()), 0) << out;
  // The scheduler names the silent node and its host, and so does launch's
  // last line.
  const std::string h2 = bed_->hosts()[2];
  EXPECT_THAT(out, HasSubstr(absl::StrCat("node dead: worker rank")));
  const auto failed = LinesWith(out, "launch: job failed:");
  ASSERT_EQ(failed.size(), 1u) << out;
  EXPECT_THAT(failed[0], HasSubstr(absl::StrCat(" at ", h2, ":"))) << out;
  EXPECT_THAT(failed[0], HasSubstr("has been silent")) << out;
  // launch did not wait for the unreachable host, and said why.
  EXPECT_THAT(out, HasSubstr(absl::StrCat("host ", h2, " is unreachable")))
      << out;
  // The cut host's processes stop by themselves within the same bound; the
  // others are gone already.
  std::string left = JobProcesses();
  while (!left.empty() && absl::Now() < cut + absl::Seconds(15)) {
    absl::SleepFor(absl::Milliseconds(200));
    left = JobProcesses();
  }
  std::cout << "no job process left " << absl::FormatDuration(absl::Now() - cut)
            << " after the cut\n";
  EXPECT_EQ(left, "") << "still alive "
                      << absl::FormatDuration(absl::Now() - cut)
                      << " after the cut";
  std::string up_out;
  EXPECT_EQ(bed_->Run({"link", TestBed::Name(2), "up"}, &up_out), 0) << up_out;
}

TEST_F(MultiHostTest, PreflightNamesADeadSshdAndAMissingHostAndStartsNothing) {
  std::string out;
  ASSERT_EQ(bed_->Run({"sshd", TestBed::Name(1), "stop"}, &out), 0) << out;
  // A fourth address on the test bed's subnet that no host has.
  const std::string& h0 = bed_->hosts()[0];
  const std::string missing = h0.substr(0, h0.rfind('.')) + ".99";
  const std::string hostfile = tmp_ + "/hosts_with_missing";
  {
    std::ofstream f(hostfile);
    for (const auto& h : bed_->hosts()) f << h << "\n";
    f << missing << "\n";
  }
  int rc = 0;
  const absl::Time start = absl::Now();
  out = RunLaunch(LaunchArgv(hostfile, 2, 2, {"--ssh_connect_timeout_s", "3"},
                             Flags({"--kv_store=dist_sync"})),
                  absl::Seconds(60), &rc);
  std::cout << "preflight took " << absl::FormatDuration(absl::Now() - start)
            << "\n";
  EXPECT_EQ(rc, 1) << out;
  EXPECT_THAT(out, HasSubstr("host check failed; nothing was started")) << out;
  const auto dead =
      LinesWith(out, absl::StrCat("launch: ", bed_->hosts()[1], " "));
  ASSERT_EQ(dead.size(), 1u) << out;
  EXPECT_THAT(dead[0], HasSubstr("unreachable")) << out;
  const auto gone = LinesWith(out, absl::StrCat("launch: ", missing, " "));
  ASSERT_EQ(gone.size(), 1u) << out;
  EXPECT_THAT(gone[0], HasSubstr("unreachable")) << out;
  const auto ok =
      LinesWith(out, absl::StrCat("launch: ", bed_->hosts()[2], " "));
  ASSERT_EQ(ok.size(), 1u) << out;
  EXPECT_THAT(ok[0], HasSubstr(" ok")) << out;
  EXPECT_THAT(out, Not(HasSubstr("launch: job:"))) << out;
  EXPECT_EQ(JobProcesses(), "");
  ASSERT_EQ(bed_->Run({"sshd", TestBed::Name(1), "start"}, &out), 0) << out;
}

TEST_F(MultiHostTest, KvBenchAcrossHostsReportsAgainstRawTcp) {
  std::string out;
  const int rc = testing_util::Shell(
      absl::StrCat(Runfile("tools/kv_bench"), " --hostfile=", bed_->hostfile(),
                   " --ssh_config=", bed_->ssh_config(),
                   " --workers=2 --servers=2 --value_bytes=4096,1048576 "
                   "--mode=push,pull --iters=20"),
      &out);
  std::cout << out;
  ASSERT_EQ(rc, 0) << out;
  EXPECT_THAT(out, HasSubstr(absl::StrCat("raw TCP ", bed_->hosts()[2], " -> ",
                                          bed_->hosts()[0])));
  EXPECT_THAT(out, HasSubstr("1 MiB round trips (1 MiB out, 1 byte back)"));
  // Each worker measured only once its requests and replies were all on
  // data links.
  EXPECT_EQ(
      LinesWith(out, "data links carry every request and reply after").size(),
      2u)
      << out;
  // 1 MiB values against 1 MiB round trips (a request and its answer, as a
  // push or pull), the rest against the stream.
  for (const char* mode : {"push", "pull"}) {
    for (const char* size : {" 4096 B", " 1048576 B"}) {
      const char* reference = absl::string_view(size) == " 1048576 B"
                                  ? "x raw 1 MiB round trip)"
                                  : "x raw TCP)";
      bool found = false;
      for (const auto& line : LinesWith(out, reference)) {
        found |= absl::StartsWith(line, mode) &&
                 absl::StrContains(line, size) &&
                 absl::StrContains(line, "2w x 2s on 3 hosts");
      }
      EXPECT_TRUE(found) << mode << size << "\n" << out;
    }
  }
  // Each worker's own account of how its tensors travelled.
  EXPECT_EQ(LinesWith(out, "frames through shared memory").size(), 2u) << out;
}

// scripts/testbed link all watch (scripts/link_watch on the hosts' veths)
// while `testbed check` runs iperf3 from h0 to h1: h0's link shows it going
// out, h1's coming in, h2's nothing to speak of.
TEST_F(MultiHostTest, LinkWatchShowsWhichLinksCarryTraffic) {
  std::string watch_out;
  int watch_rc = -1;
  std::thread watch([&] {
    watch_rc = bed_->Run(
        {"link", "all", "watch", "--duration", "7", "--interval", "3"},
        &watch_out);
  });
  absl::SleepFor(absl::Seconds(1));  // The watch reads its first sample.
  std::string check_out;
  const int check_rc = bed_->Run({"check"}, &check_out);
  watch.join();
  ASSERT_EQ(check_rc, 0) << check_out;
  ASSERT_EQ(watch_rc, 0) << watch_out;
  // The summary: "all  hI  OUT busy idle  IN busy idle  (N samples, S s)",
  // the busy and idle columns "-" on these unshaped links.
  std::map<std::string, std::pair<double, double>> mbit;
  for (const std::string& line : LinesWith(watch_out, "samples,")) {
    std::vector<std::string> f =
        absl::StrSplit(line, ' ', absl::SkipWhitespace());
    ASSERT_GE(f.size(), 8u) << line;
    if (f[0] != "all") continue;
    EXPECT_EQ(f[3], "-") << line;
    mbit[f[1]] = {std::stod(f[2]), std::stod(f[5])};
  }
  ASSERT_EQ(mbit.size(), 3u) << watch_out;
  // iperf3 moves gigabits a second between unshaped veths for 3 of the
  // 7 s watched.
  EXPECT_GT(mbit["h0"].first, 100) << watch_out;
  EXPECT_GT(mbit["h1"].second, 100) << watch_out;
  EXPECT_LT(mbit["h2"].first, 10) << watch_out;
  EXPECT_LT(mbit["h2"].second, 10) << watch_out;
  EXPECT_LT(mbit["h0"].second, mbit["h0"].first) << watch_out;
}

}  // namespace
}  // namespace pstrain
