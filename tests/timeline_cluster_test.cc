// `launch --timeline` end to end (issue #17): a small dist_sync job (LeNet
// on Fashion-MNIST, 1 server, 2 workers) records steps 3..5, launch merges
// the parts, and the merged file is a valid Chrome trace with every node's
// events of those steps only.
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/worker_util.h"

namespace pstrain {
namespace {

using Json = nlohmann::json;

constexpr int kFirst = 3, kLast = 5, kWindow = kLast - kFirst + 1;

TEST(TimelineClusterTest, MergedTraceHoldsEveryNodesWindow) {
  if (!testing_util::HaveFashionMnist()) {
    GTEST_SKIP() << "Debian's dataset-fashion-mnist is not installed";
  }
  const std::string tmp = testing_util::TestTmp();
  constexpr int kBatch = 16, kSteps = 24;
  ASSERT_EQ(
      testing_util::PackFashion("train", 2 * kBatch * kSteps, tmp + "/train"),
      "");
  const std::string trace = tmp + "/trace.json";
  bool ok = false;
  const absl::Time t0 = absl::Now();
  const std::string out = testing_util::LaunchWorkers(
      2, 1,
      {"--network=lenet", "--kv_store=dist_sync", "--data_nthreads=1",
       absl::StrCat("--batch_size=", kBatch), "--num_epochs=1",
       // Three fused groups a step: pushes and pulls in flight together.
       "--fusion_bytes=65536", "--data_train=" + tmp + "/train.rec"},
      absl::Seconds(90), &ok,
      {"--timeline", trace,
       absl::StrCat("--timeline_steps=", kFirst, ":", kLast)});
  const double job_us = absl::ToDoubleMicroseconds(absl::Now() - t0);
  ASSERT_TRUE(ok) << out;
  EXPECT_TRUE(absl::StrContains(out, "launch: timeline: " + trace)) << out;
  EXPECT_FALSE(absl::StrContains(out, "timeline: warning")) << out;

  const std::string text = testing_util::ReadFileOrEmpty(trace);
  EXPECT_LT(text.size(), 4u << 20);
  const Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded()) << text.substr(0, 2000);
  ASSERT_TRUE(j.is_object());
  ASSERT_TRUE(j.contains("traceEvents") && j["traceEvents"].is_array());

  // Processes and tracks by pid.
  std::map<int, std::string> process;
  std::map<std::pair<int, int>, std::string> track;
  for (const Json& e : j["traceEvents"]) {
    ASSERT_TRUE(e.is_object());
    if (e["ph"] != "M") continue;
    if (e["name"] == "process_name") process[e["pid"]] = e["args"]["name"];
    if (e["name"] == "thread_name")
      track[{e["pid"], e["tid"]}] = e["args"]["name"];
  }
  ASSERT_EQ(process.size(), 3u) << text.substr(0, 2000);
  std::map<std::string, int> pid_of;  // "server 0", "worker 0", "worker 1".
  for (const auto& [pid, name] : process) {
    pid_of[name.substr(0, name.find(" ("))] = pid;
    EXPECT_TRUE(absl::StrContains(name, "(127.0.0.1:")) << name;
  }
  ASSERT_EQ(pid_of.count("server 0"), 1u);
  ASSERT_EQ(pid_of.count("worker 0"), 1u);
  ASSERT_EQ(pid_of.count("worker 1"), 1u);

  // Per pid: events by "track/name" (forward and backward by category).
  std::map<int, std::map<std::string, int>> count;
  for (const Json& e : j["traceEvents"]) {
    if (e["ph"] != "X") continue;
    const int pid = e["pid"];
    ASSERT_TRUE(e["ts"].is_number() && e["dur"].is_number()) << e;
    const double ts = e["ts"], dur = e["dur"];
    EXPECT_GE(ts, 0) << e;
    EXPECT_GE(dur, 0) << e;
    EXPECT_LE(ts + dur, job_us) << e;
    std::string t = track[{pid, e["tid"]}];
    t = t.substr(0, t.find(" #"));  // Lanes of one track.
    std::string key = absl::StrCat(t, "/", e["name"].get<std::string>());
    if (e.contains("cat"))
      absl::StrAppend(&key, "/", e["cat"].get<std::string>());
    ++count[pid][key];
    const Json& args = e["args"];
    if (args.contains("step")) {
      EXPECT_GE(args["step"], kFirst) << e;
      EXPECT_LE(args["step"], kLast) << e;
    } else {
      ADD_FAILURE() << "no step: " << e;
    }
    if (t == "push" || t == "pull") {
      EXPECT_TRUE(args["keys"].is_array() && !args["keys"].empty()) << e;
      EXPECT_GT(args["bytes"], 0) << e;
    }
    if (t == "sum" || t == "update") {
      EXPECT_TRUE(args["key"].is_number()) << e;
      EXPECT_GT(args["bytes"], 0) << e;
    }
  }
  for (const char* w : {"worker 0", "worker 1"}) {
    const auto& c = count[pid_of[w]];
    SCOPED_TRACE(w);
    // Exactly the window's steps: one forward and backward of each layer,
    // one data wait, a step.
    for (const char* layer : {"conv0", "conv1", "fc0", "fc1"}) {
      EXPECT_EQ(c.count(absl::StrCat("compute/", layer, "/forward"))
                    ? c.at(absl::StrCat("compute/", layer, "/forward"))
                    : 0,
                kWindow)
          << layer;
      EXPECT_EQ(c.count(absl::StrCat("compute/", layer, "/backward"))
                    ? c.at(absl::StrCat("compute/", layer, "/backward"))
                    : 0,
                kWindow)
          << layer;
    }
    EXPECT_EQ(c.count("data/data wait") ? c.at("data/data wait") : 0, kWindow);
    EXPECT_GE(c.count("push/push") ? c.at("push/push") : 0, kWindow);
    EXPECT_GE(c.count("pull/pull") ? c.at("pull/pull") : 0, kWindow);
  }
  const auto& s = count[pid_of["server 0"]];
  // LeNet's 8 keys, each summed and updated once a step, its reply sent to
  // both workers.
  EXPECT_EQ(s.count("sum/sum") ? s.at("sum/sum") : 0, 8 * kWindow);
  EXPECT_EQ(s.count("update/update") ? s.at("update/update") : 0, 8 * kWindow);
  EXPECT_GE(s.count("reply/reply") ? s.at("reply/reply") : 0, 2 * kWindow);
  EXPECT_EQ(j["pstrain"]["parts"].size(), 3u);
}

}  // namespace
}  // namespace pstrain
