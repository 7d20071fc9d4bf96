#include "timeline/timeline.h"

#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace pstrain {
namespace timeline {
namespace {

using Json = nlohmann::json;

TimelineOptions On(int64_t first = 3, int64_t last = 5) {
  TimelineOptions o;
  o.path = std::string(std::getenv("TEST_TMPDIR")) + "/part.json";
  o.first_step = first;
  o.last_step = last;
  return o;
}

Json Parse(const std::string& text) {
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(j.is_discarded()) << text;
  return j;
}

int CountX(const Json& part) {
  int n = 0;
  for (const Json& e : part["traceEvents"]) n += e["ph"] == "X";
  return n;
}

TEST(ParseStepWindowTest, AcceptsAndRefuses) {
  int64_t a = 0, b = 0;
  ASSERT_TRUE(ParseStepWindow("3:5", &a, &b).ok());
  EXPECT_EQ(a, 3);
  EXPECT_EQ(b, 5);
  ASSERT_TRUE(ParseStepWindow("7:7", &a, &b).ok());
  for (const char* bad : {"5:2", "0:3", "3", "a:b", ":4", "3:", "-1:2", ""}) {
    absl::Status s = ParseStepWindow(bad, &a, &b);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_NE(ParseStepWindow("5:2", &a, &b).message().find("A:B"),
            std::string::npos);
}

TEST(RecorderTest, OffWhenNoPath) {
  Recorder r(TimelineOptions{});
  EXPECT_FALSE(r.enabled());
  r.SetStep(15);
  EXPECT_FALSE(r.active());
  EXPECT_FALSE(r.InWindow(15));
  r.Add(r.Track("compute"), "x", absl::Now(), absl::Now());
  EXPECT_EQ(r.num_events(), 0);
  EXPECT_TRUE(r.WritePart(PartInfo{}).ok());
}

TEST(RecorderTest, WindowFollowsTheStep) {
  Recorder r(On(3, 5));
  EXPECT_FALSE(r.active());
  for (int64_t s : {1, 2, 6, 100}) {
    r.SetStep(s);
    EXPECT_FALSE(r.active()) << s;
  }
  for (int64_t s : {3, 4, 5}) {
    r.SetStep(s);
    EXPECT_TRUE(r.active()) << s;
    EXPECT_EQ(r.step(), s);
  }
  EXPECT_FALSE(r.InWindow(2));
  EXPECT_TRUE(r.InWindow(5));
}

TEST(RecorderTest, TracksAreNumberedInOrder) {
  Recorder r(On());
  EXPECT_EQ(r.Track("compute"), 1);
  EXPECT_EQ(r.Track("push"), 2);
  EXPECT_EQ(r.Track("compute"), 1);
}

TEST(RecorderTest, PartIsValidJsonWithEscapedNames) {
  Recorder r(On());
  const int t = r.Track("we\"ird\ttrack");
  const absl::Time t0 = absl::Now();
  EventArgs args;
  args.ints = {{"bytes", 4096}, {"st\\ep", 3}};
  args.keys = {0, 7};
  args.category = "forward";
  r.Add(t, "conv\"0\\\n\x01\xff", t0, t0 + absl::Microseconds(12), args);
  r.Add(t, "later", t0 + absl::Microseconds(20), t0);  // End before begin.
  PartInfo info;
  info.role = "worker";
  info.rank = 1;
  info.host = "host\"1";
  info.port = 4000;
  info.clock_offset_us = -42;
  info.clock_aligned = true;
  const Json j = Parse(r.PartJson(info));
  ASSERT_TRUE(j.is_object());
  ASSERT_TRUE(j["traceEvents"].is_array());
  EXPECT_EQ(CountX(j), 2);
  const Json& meta = j["traceEvents"][0];
  EXPECT_EQ(meta["ph"], "M");
  EXPECT_EQ(meta["args"]["name"], "we\"ird\ttrack");
  const Json& e = j["traceEvents"][1];
  EXPECT_EQ(e["name"], std::string("conv\"0\\\n\x01") + "\xc3\xbf");
  EXPECT_EQ(e["tid"], t);
  EXPECT_EQ(e["cat"], "forward");
  EXPECT_EQ(j["traceEvents"][2].count("cat"), 0u);
  EXPECT_NEAR(e["dur"].get<double>(), 12, 1e-3);
  EXPECT_GE(e["ts"].get<double>(), 0);
  EXPECT_EQ(e["args"]["bytes"], 4096);
  EXPECT_EQ(e["args"]["st\\ep"], 3);
  EXPECT_EQ(e["args"]["keys"], Json({0, 7}));
  EXPECT_EQ(j["traceEvents"][2]["dur"].get<double>(), 0);
  const Json& ps = j["pstrain"];
  EXPECT_EQ(ps["role"], "worker");
  EXPECT_EQ(ps["rank"], 1);
  EXPECT_EQ(ps["host"], "host\"1");
  EXPECT_EQ(ps["clock_offset_us"], -42);
  EXPECT_EQ(ps["clock_aligned"], true);
  EXPECT_EQ(ps["first_step"], 3);
  EXPECT_EQ(ps["last_step"], 5);
  EXPECT_EQ(ps["events"], 2);
  EXPECT_EQ(ps["dropped_events"], 0);
  EXPECT_NEAR(ps["clock_origin_unix_us"].get<double>(),
              static_cast<double>(absl::ToUnixMicros(absl::Now())), 60e6);
}

TEST(RecorderTest, CapsEventsAndSaysSo) {
  TimelineOptions o = On();
  o.max_events = 10;
  Recorder r(o);
  const int t = r.Track("compute");
  for (int i = 0; i < 25; ++i) r.Add(t, "x", absl::Now(), absl::Now());
  EXPECT_EQ(r.num_events(), 10);
  EXPECT_EQ(r.dropped_events(), 15);
  const Json j = Parse(r.PartJson(PartInfo{}));
  EXPECT_EQ(CountX(j), 10);
  EXPECT_EQ(j["pstrain"]["dropped_events"], 15);
}

TEST(RecorderTest, ThreadSafe) {
  Recorder r(On());
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&r, i] {
      const int t = r.Track(i % 2 ? "push" : "pull");
      for (int k = 0; k < 1000; ++k) {
        r.SetStep(k % 7);
        r.Add(t, "e", absl::Now(), absl::Now());
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(r.num_events(), 4000);
  const Json j = Parse(r.PartJson(PartInfo{}));
  EXPECT_EQ(CountX(j), 4000);
}

TEST(RecorderTest, WritesThePartFile) {
  Recorder r(On());
  r.Add(r.Track("data"), "data wait", absl::Now(), absl::Now());
  ASSERT_TRUE(r.WritePart(PartInfo{}).ok());
  FILE* f = std::fopen(r.options().path.c_str(), "r");
  ASSERT_NE(f, nullptr);
  std::string text(1 << 16, '\0');
  text.resize(std::fread(&text[0], 1, text.size(), f));
  std::fclose(f);
  EXPECT_EQ(CountX(Parse(text)), 1);

  TimelineOptions bad = On();
  bad.path = "/nonexistent-dir/part.json";
  absl::Status s = Recorder(bad).WritePart(PartInfo{});
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("/nonexistent-dir/part.json"), std::string::npos);
}

}  // namespace
}  // namespace timeline
}  // namespace pstrain
