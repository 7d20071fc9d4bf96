// The real `scaling` binary end to end on this machine (--launcher local):
// points 1 and 2 (one CPU device per worker, gpus_per_host 1, so 1 and 2
// workers), LeNet on 1x28x28 synthetic data through the real launch,
// scheduler, server and worker binaries. Needs a worker that implements
// `--benchmark` with --kvstore_mode, --warmup_batches and --time_dilation
// and prints one `benchmark: {JSON}` line per worker (tools/scaling.h);
// tagged manual until it does.
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/worker_util.h"

namespace pstrain {
namespace {

using ::testing::HasSubstr;
using testing_util::Runfile;

// Runs the scaling tool with `flags` (after the binaries' paths); *rc is
// its exit code (-1 if it did not end within `limit`).
std::string RunScaling(const std::vector<std::string>& flags,
                       absl::Duration limit, int* rc) {
  std::vector<std::string> argv = {
      Runfile("tools/scaling"),
      "--launcher",
      "local",
      "--launch_binary",
      Runfile("tools/launch"),
      "--worker_binary",
      Runfile("worker/worker"),
      "--launch_args",
      absl::StrCat("--scheduler_binary ", Runfile("scheduler/scheduler"),
                   " --server_binary ", Runfile("server/server"),
                   " --env OMP_NUM_THREADS=1 --stop_grace_s 3")};
  argv.insert(argv.end(), flags.begin(), flags.end());
  return testing_util::RunCommand(argv, limit, rc);
}

TEST(ScalingSmokeTest, TwoPointsLocally) {
  const std::string dir = testing_util::TestTmp() + "/scaling";
  std::string which;
  const bool plot = testing_util::Shell("command -v gnuplot", &which) == 0;
  int rc = 0;
  const std::string out = RunScaling({plot ? "--plot" : "--noplot",
                                      "--network",
                                      "lenet",
                                      "--image_shape",
                                      "1,28,28",
                                      "--num_classes",
                                      "10",
                                      "--cpu_devices",
                                      "--batch_size",
                                      "8",
                                      "--warmup_batches",
                                      "1",
                                      "--batches",
                                      "2",
                                      "--points",
                                      "1,2",
                                      "--gpus_per_host",
                                      "1",
                                      "--kv_store",
                                      "dist_sync",
                                      "--point_timeout_s",
                                      "150",
                                      "--out_dir",
                                      dir},
                                     absl::Seconds(400), &rc);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_THAT(out, HasSubstr("point 1 of 2: 1 GPU on 1 host"));
  EXPECT_THAT(out, HasSubstr("point 2 of 2: 2 GPUs on 2 hosts"));
  EXPECT_THAT(out, HasSubstr("efficiency"));

  // The CSV: a header and two rows, both ok.
  std::vector<std::string> csv =
      absl::StrSplit(testing_util::ReadFileOrEmpty(dir + "/scaling.csv"), '\n',
                     absl::SkipEmpty());
  ASSERT_EQ(csv.size(), 3u) << absl::StrJoin(csv, "\n");
  EXPECT_THAT(csv[1], HasSubstr("1,1,1,1,1,ok,"));
  EXPECT_THAT(csv[2], HasSubstr("2,2,2,2,1,ok,"));

  // The JSON: every worker's line, with the batch and devices asked for.
  const auto j = nlohmann::json::parse(
      testing_util::ReadFileOrEmpty(dir + "/scaling.json"), nullptr,
      /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded());
  ASSERT_EQ(j["points"].size(), 2u);
  for (int k = 0; k < 2; ++k) {
    const auto& point = j["points"][k];
    EXPECT_EQ(point["ok"], true) << point.dump();
    EXPECT_GT(point["images_per_sec"].get<double>(), 0);
    ASSERT_EQ(point["workers"].size(), static_cast<size_t>(k + 1));
    for (const auto& w : point["workers"]) {
      EXPECT_EQ(w["devices"], 1) << w.dump();
      EXPECT_EQ(w["batch_size"], 8) << w.dump();
      EXPECT_EQ(w["batches"], 2) << w.dump();
      EXPECT_EQ(w["warmup_batches"], 1) << w.dump();
    }
  }
  EXPECT_DOUBLE_EQ(j["points"][0]["efficiency"].get<double>(), 1.0);
  EXPECT_GT(j["points"][0]["cpu_percent"].get<double>(), 0);
  // Each point's log and, where gnuplot is installed, the plot.
  EXPECT_THAT(testing_util::ReadFileOrEmpty(dir + "/point-2gpus.log"),
              HasSubstr("benchmark: {"));
  if (plot) {
    EXPECT_FALSE(testing_util::ReadFileOrEmpty(dir + "/scaling.png").empty());
    EXPECT_THAT(testing_util::ReadFileOrEmpty(dir + "/scaling.svg"),
                HasSubstr("<svg"));
  }
}

TEST(ScalingSmokeTest, BadFlagsExit2) {
  int rc = 0;
  std::string out = RunScaling({"--points", "1,3", "--gpus_per_host", "2",
                                "--out_dir", testing_util::TestTmp()},
                               absl::Seconds(30), &rc);
  EXPECT_EQ(rc, 2) << out;
  EXPECT_THAT(out, HasSubstr("--points"));
  out = RunScaling({"--batch-size", "0"}, absl::Seconds(30), &rc);
  EXPECT_EQ(rc, 2) << out;
  EXPECT_THAT(out, HasSubstr("--batch_size"));
}

}  // namespace
}  // namespace pstrain
