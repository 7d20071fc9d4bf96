// The scaling driver across the hosts of a multi-host test bed, as CI runs
// it: scripts/scaling_testbed brings up 4 hosts (network namespaces with
// their own sshd, 1 Gbit/s links) and runs the real `scaling` binary over
// the real launch, scheduler, server and worker binaries, launched over
// ssh. ResNet-20 on emulated devices (configs/profiles/ci_resnet20.json, an
// illustrative rate, not a measurement), 2 per host, points 1, 2, 4 and 8
// GPUs (1, 1, 2 and 4 workers), in MXNet's KVStore mode and in pstrain's.
// Needs root; skips, saying why, where the test bed cannot be made (the
// script's exit code 77).
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "launcher/subprocess.h"
#include "nlohmann/json.hpp"
#include "tests/worker_util.h"

namespace pstrain {
namespace {

using ::testing::HasSubstr;
using testing_util::Runfile;

// The last non-empty line of `text`.
std::string LastLine(const std::string& text) {
  std::vector<std::string> lines =
      absl::StrSplit(text, '\n', absl::SkipWhitespace());
  return lines.empty() ? "" : lines.back();
}

// Runs scripts/scaling_testbed with `scaling_flags` after its `--`; *rc is
// its exit code (-1 if it did not end within `limit`: then it is stopped
// with SIGTERM, so that it still takes its test bed down).
std::string RunScalingTestbed(const std::vector<std::string>& scaling_flags,
                              absl::Duration limit, int* rc) {
  std::vector<std::string> argv = {
      Runfile("scripts/scaling_testbed"),
      "--hosts",
      "4",
      "--rate",
      "1gbit",
      "--scaling",
      Runfile("tools/scaling"),
      "--",
      "--launch_binary",
      Runfile("tools/launch"),
      "--worker_binary",
      Runfile("worker/worker"),
      "--launch_args",
      absl::StrCat("--scheduler_binary ", Runfile("scheduler/scheduler"),
                   " --server_binary ", Runfile("server/server"),
                   " --env OMP_NUM_THREADS=1 --stop_grace_s 3")};
  argv.insert(argv.end(), scaling_flags.begin(), scaling_flags.end());
  std::vector<std::string> env = testing_util::Env();
  // The test bed's state (ssh keys and config, hosts file) in this test's
  // own folder.
  env.push_back(absl::StrCat("PSTRAIN_TESTBED_DIR=", testing_util::TestTmp()));
  auto p = launcher::Subprocess::Start(argv, env);
  EXPECT_TRUE(p.ok()) << p.status();
  if (!p.ok()) return "";
  p->CloseStdin();
  bool exited = false;
  std::string out = testing_util::RunToEnd(&*p, limit, &exited);
  if (!exited) {
    p->SignalGroup(SIGTERM);
    out += testing_util::RunToEnd(&*p, absl::Seconds(60), &exited);
    *rc = -1;
    return out;
  }
  *rc = WEXITSTATUS(p->wait_status());
  return out;
}

class ScalingTestbedTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ScalingTestbedTest, ResNet20OnEmulatedGpusAcrossFourHosts) {
  const std::string mode = GetParam();
  if (geteuid() != 0)
    GTEST_SKIP() << "the test bed needs root (network namespaces); skipped";
  const std::string dir = absl::StrCat(testing_util::TestTmp(), "/", mode);
  int rc = 0;
  const absl::Time t0 = absl::Now();
  const std::string out =
      RunScalingTestbed({"--network",
                         "resnet",
                         "--num_layers",
                         "20",
                         "--image_shape",
                         "3,32,32",
                         "--num_classes",
                         "10",
                         "--emulate_device",
                         Runfile("configs/profiles/ci_resnet20.json"),
                         "--gpus_per_host",
                         "2",
                         "--points",
                         "1,2,4,8",
                         "--batch_size",
                         "32",
                         "--time_dilation",
                         "2",
                         "--warmup_batches",
                         "1",
                         "--batches",
                         "2",
                         "--mode",
                         mode,
                         "--kv_store",
                         "dist_device_sync",
                         "--plot",
                         "--point_timeout_s",
                         "60",
                         "--out_dir",
                         dir},
                        absl::Seconds(150), &rc);
  std::cout << "scaling_testbed --mode " << mode << ": "
            << absl::ToDoubleSeconds(absl::Now() - t0) << " s" << std::endl;
  if (rc == 77) GTEST_SKIP() << LastLine(out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_THAT(out, HasSubstr("point 4 of 4: 8 GPUs on 4 hosts"));

  // Every result file, the plots included (gnuplot is in scripts/setup).
  for (const char* name :
       {"scaling.csv", "scaling.json", "scaling.png", "scaling.svg"}) {
    EXPECT_FALSE(
        testing_util::ReadFileOrEmpty(absl::StrCat(dir, "/", name)).empty())
        << name;
  }
  EXPECT_THAT(testing_util::ReadFileOrEmpty(dir + "/scaling.svg"),
              HasSubstr("<svg"));
  std::vector<std::string> csv =
      absl::StrSplit(testing_util::ReadFileOrEmpty(dir + "/scaling.csv"), '\n',
                     absl::SkipEmpty());
  EXPECT_EQ(csv.size(), 5u) << absl::StrJoin(csv, "\n");
  std::cout << absl::StrJoin(csv, "\n") << std::endl;

  // The JSON: 4 points of 1, 1, 2 and 4 workers, each worker with 1 or 2
  // emulated GPUs of 32 images and a positive rate.
  const auto j = nlohmann::json::parse(
      testing_util::ReadFileOrEmpty(dir + "/scaling.json"), nullptr,
      /*allow_exceptions=*/false);
  ASSERT_TRUE(j.is_object())
      << testing_util::ReadFileOrEmpty(dir + "/scaling.json");
  EXPECT_EQ(j["flags"]["mode"], mode);
  ASSERT_TRUE(j["points"].is_array());
  ASSERT_EQ(j["points"].size(), 4u);
  const int gpus[] = {1, 2, 4, 8}, workers[] = {1, 1, 2, 4};
  for (int k = 0; k < 4; ++k) {
    const auto& point = j["points"][k];
    EXPECT_EQ(point["gpus"], gpus[k]) << point.dump();
    ASSERT_EQ(point["ok"], true) << point.dump();
    ASSERT_TRUE(point["images_per_sec"].is_number()) << point.dump();
    EXPECT_GT(point["images_per_sec"].get<double>(), 0) << point.dump();
    ASSERT_TRUE(point["workers"].is_array()) << point.dump();
    ASSERT_EQ(point["workers"].size(), static_cast<size_t>(workers[k]))
        << point.dump();
    const int per_worker = gpus[k] / workers[k];
    for (const auto& w : point["workers"]) {
      EXPECT_EQ(w["devices"], per_worker) << w.dump();
      EXPECT_EQ(w["batch_size"], 32 * per_worker) << w.dump();
      EXPECT_EQ(w["batches"], 2) << w.dump();
      EXPECT_EQ(w["time_dilation"], 2) << w.dump();
      ASSERT_TRUE(w["images_per_sec"].is_number()) << w.dump();
      EXPECT_GT(w["images_per_sec"].get<double>(), 0) << w.dump();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, ScalingTestbedTest,
                         ::testing::Values("mxnet", "pstrain"));

}  // namespace
}  // namespace pstrain
