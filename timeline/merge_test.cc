#include "timeline/merge.h"

#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "timeline/timeline.h"

namespace pstrain {
namespace timeline {
namespace {

using Json = nlohmann::json;

// A part of `role` `rank` whose clock starts at `origin` (µs) and is
// `offset` behind the scheduler's, with `events` (name, tid, ts, dur).
struct E {
  std::string name;
  int tid;
  double ts, dur;
};
PartText MakePart(const std::string& file, const std::string& role, int rank,
                  int64_t origin, int64_t offset, const std::vector<E>& events,
                  const std::map<int, std::string>& tracks = {{1, "compute"},
                                                              {2, "pull"}}) {
  Json te = Json::array();
  for (const auto& [tid, name] : tracks) {
    te.push_back({{"name", "thread_name"},
                  {"ph", "M"},
                  {"pid", 0},
                  {"tid", tid},
                  {"args", {{"name", name}}}});
  }
  for (const E& e : events) {
    te.push_back({{"name", e.name},
                  {"ph", "X"},
                  {"pid", 0},
                  {"tid", e.tid},
                  {"ts", e.ts},
                  {"dur", e.dur},
                  {"args", {{"step", 3}}}});
  }
  Json root = {{"traceEvents", te},
               {"pstrain",
                {{"version", 1},
                 {"role", role},
                 {"rank", rank},
                 {"host", "127.0.0.1"},
                 {"port", 4000 + rank},
                 {"clock_origin_unix_us", origin},
                 {"clock_offset_us", offset},
                 {"clock_aligned", true},
                 {"events", events.size()},
                 {"dropped_events", 0}}}};
  return {file, root.dump()};
}

Json MergeOk(const std::vector<PartText>& parts, MergeResult* r) {
  Json j = Json::parse(MergePartTexts(parts, r), nullptr, false);
  EXPECT_FALSE(j.is_discarded());
  EXPECT_TRUE(j.is_object());
  EXPECT_TRUE(j["traceEvents"].is_array());
  return j;
}

std::vector<Json> Complete(const Json& j) {
  std::vector<Json> out;
  for (const Json& e : j["traceEvents"])
    if (e["ph"] == "X") out.push_back(e);
  return out;
}

std::map<int, std::string> ProcessNames(const Json& j) {
  std::map<int, std::string> out;
  for (const Json& e : j["traceEvents"])
    if (e["ph"] == "M" && e["name"] == "process_name")
      out[e["pid"]] = e["args"]["name"];
  return out;
}

TEST(MergeTest, AlignsClocksAndNamesProcesses) {
  // The worker's clock runs 1 s behind the scheduler's (offset +1e6), the
  // server's 500 µs ahead; both started at scheduler time 1e9 + 100.
  const std::vector<PartText> parts = {
      MakePart("w.json", "worker", 0, 1e9 + 100 - 1e6, 1e6,
               {{"conv0", 1, 10, 5}, {"conv0", 1, 30, 5}}),
      MakePart("s.json", "server", 0, 1e9 + 100 + 500, -500,
               {{"sum", 1, 20, 2}}, {{1, "sum"}})};
  MergeResult r;
  const Json j = MergeOk(parts, &r);
  EXPECT_EQ(r.parts, 2);
  EXPECT_EQ(r.events, 3);
  EXPECT_TRUE(r.warnings.empty());
  const auto names = ProcessNames(j);
  ASSERT_EQ(names.size(), 2u);
  EXPECT_EQ(names.at(1), "server 0 (127.0.0.1:4000)");  // Servers first.
  EXPECT_EQ(names.at(2), "worker 0 (127.0.0.1:4000)");
  std::map<std::string, std::vector<double>> ts;
  for (const Json& e : Complete(j)) ts[e["name"]].push_back(e["ts"]);
  EXPECT_EQ(ts["conv0"], (std::vector<double>{10, 30}));
  EXPECT_EQ(ts["sum"], (std::vector<double>{20}));
  EXPECT_EQ(j["pstrain"]["job_start_unix_us"], int64_t{1000000100});
  for (const Json& e : Complete(j)) EXPECT_EQ(e["args"]["step"], 3);
}

TEST(MergeTest, OverlappingEventsGetLanes) {
  const std::vector<PartText> parts = {MakePart(
      "w.json", "worker", 0, 0, 0,
      {{"pull", 2, 0, 100}, {"pull", 2, 10, 100}, {"pull", 2, 150, 10}})};
  MergeResult r;
  const Json j = MergeOk(parts, &r);
  std::map<double, int> tid_at;
  for (const Json& e : Complete(j)) tid_at[e["ts"]] = e["tid"];
  EXPECT_EQ(tid_at[0], 2);
  EXPECT_NE(tid_at[10], 2);
  EXPECT_EQ(tid_at[150], 2);
  bool named = false;
  for (const Json& e : j["traceEvents"]) {
    if (e["name"] == "thread_name" && e["tid"] == tid_at[10])
      named = e["args"]["name"] == "pull #2";
  }
  EXPECT_TRUE(named);
}

TEST(MergeTest, SkipsBrokenPartsWithAWarning) {
  PartText good = MakePart("good.json", "worker", 1, 0, 0, {{"fc1", 1, 5, 1}});
  PartText truncated =
      MakePart("cut.json", "worker", 0, 0, 0, {{"x", 1, 1, 1}});
  truncated.text.resize(truncated.text.size() / 2);
  const std::vector<PartText> parts = {
      good,
      truncated,
      {"empty.json", ""},
      {"array.json", "[1, 2]"},
      {"other.json", "{\"traceEvents\": []}"},
      {"badtypes.json",
       "{\"traceEvents\": [1, {\"ph\": 3}], \"pstrain\": {\"role\": 1}}"}};
  MergeResult r;
  const Json j = MergeOk(parts, &r);
  EXPECT_EQ(r.parts, 1);
  ASSERT_EQ(r.warnings.size(), 5u);
  EXPECT_NE(r.warnings[0].find("cut.json"), std::string::npos);
  EXPECT_NE(r.warnings[4].find("badtypes.json"), std::string::npos);
  EXPECT_EQ(Complete(j).size(), 1u);
  EXPECT_EQ(j["pstrain"]["skipped"].size(), 5u);
}

TEST(MergeTest, NoPartsStillGivesValidJson) {
  MergeResult r;
  const Json j = MergeOk({}, &r);
  EXPECT_EQ(r.parts, 0);
  EXPECT_TRUE(j["traceEvents"].empty());
}

TEST(MergeTest, MergesFilesFromAFolder) {
  const std::string base = std::string(std::getenv("TEST_TMPDIR")) + "/trace";
  const std::string dir = PartsDir(base);
  ASSERT_EQ(system(("mkdir -p " + dir).c_str()), 0);
  TimelineOptions o;
  o.path = PartPath(base, "worker", 0);
  Recorder rec(o);
  rec.Add(rec.Track("compute"), "conv0", absl::Now(), absl::Now());
  PartInfo info;
  info.role = "worker";
  info.rank = 0;
  ASSERT_TRUE(rec.WritePart(info).ok());
  FILE* f = std::fopen(PartPath(base, "server", 0).c_str(), "w");
  std::fputs("{\"traceEvents\": [", f);  // A node that died writing.
  std::fclose(f);
  auto files = ListPartFiles(dir);
  ASSERT_TRUE(files.ok());
  ASSERT_EQ(files->size(), 2u);
  files->push_back(dir + "/missing.json");
  auto r = MergePartFiles(*files, base);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->parts, 1);
  EXPECT_EQ(r->events, 1);
  EXPECT_EQ(r->warnings.size(), 2u);
  EXPECT_FALSE(ListPartFiles(dir + "/nope").ok());
  EXPECT_FALSE(MergePartFiles(*files, dir + "/nope/out.json").ok());
}

}  // namespace
}  // namespace timeline
}  // namespace pstrain
