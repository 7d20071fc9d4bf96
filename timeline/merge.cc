#include "timeline/merge.h"

#include <dirent.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <limits>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "util/file.h"
#include "util/status.h"

namespace pstrain {
namespace timeline {
namespace {

using Json = nlohmann::json;

struct Event {
  std::string name, cat;
  int tid = 0;
  double ts = 0, dur = 0;  // Microseconds; ts since the part's origin.
  Json args;
};

struct Part {
  std::string file;
  std::string role, host;
  int64_t rank = -1, port = 0;
  double base_us = 0;  // clock_origin_unix_us + clock_offset_us.
  int64_t offset_us = 0, dropped = 0;
  std::map<int, std::string> tracks;
  std::vector<Event> events;
};

bool GetNumber(const Json& obj, const char* key, double* out) {
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_number()) return false;
  *out = it->get<double>();
  return std::isfinite(*out);
}

bool GetString(const Json& obj, const char* key, std::string* out) {
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_string()) return false;
  *out = it->get<std::string>();
  return true;
}

// Parses one part; the reason when it is not one.
absl::StatusOr<Part> ParsePart(const PartText& p) {
  Json root = Json::parse(p.text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) {
    return absl::DataLossError("not valid JSON (truncated?)");
  }
  if (!root.is_object()) return absl::DataLossError("not a JSON object");
  auto te = root.find("traceEvents");
  auto ps = root.find("pstrain");
  if (te == root.end() || !te->is_array() || ps == root.end() ||
      !ps->is_object()) {
    return absl::DataLossError(
        "no \"traceEvents\" array or no \"pstrain\" object: not a pstrain "
        "timeline part");
  }
  Part part;
  part.file = p.file;
  double rank = 0, origin = 0, offset = 0, port = 0, dropped = 0;
  if (!GetString(*ps, "role", &part.role) || !GetNumber(*ps, "rank", &rank) ||
      !GetNumber(*ps, "clock_origin_unix_us", &origin) ||
      !GetNumber(*ps, "clock_offset_us", &offset)) {
    return absl::DataLossError(
        "its \"pstrain\" object lacks role, rank, clock_origin_unix_us or "
        "clock_offset_us");
  }
  GetString(*ps, "host", &part.host);
  GetNumber(*ps, "port", &port);
  GetNumber(*ps, "dropped_events", &dropped);
  part.rank = static_cast<int64_t>(rank);
  part.port = static_cast<int64_t>(port);
  part.offset_us = static_cast<int64_t>(offset);
  part.dropped = static_cast<int64_t>(dropped);
  part.base_us = origin + offset;
  for (const Json& e : *te) {
    if (!e.is_object()) continue;
    std::string ph, name;
    double tid = 0;
    if (!GetString(e, "ph", &ph) || !GetString(e, "name", &name) ||
        !GetNumber(e, "tid", &tid)) {
      continue;
    }
    if (ph == "M" && name == "thread_name") {
      auto a = e.find("args");
      std::string track;
      if (a != e.end() && a->is_object() && GetString(*a, "name", &track))
        part.tracks[static_cast<int>(tid)] = track;
      continue;
    }
    Event ev;
    if (ph != "X" || !GetNumber(e, "ts", &ev.ts) ||
        !GetNumber(e, "dur", &ev.dur)) {
      continue;
    }
    ev.name = std::move(name);
    GetString(e, "cat", &ev.cat);
    ev.tid = static_cast<int>(tid);
    auto a = e.find("args");
    ev.args = (a != e.end() && a->is_object()) ? *a : Json::object();
    part.events.push_back(std::move(ev));
  }
  return part;
}

int RoleOrder(const std::string& role) {
  if (role == "scheduler") return 0;
  if (role == "server") return 1;
  if (role == "worker") return 2;
  return 3;
}

Json Metadata(const char* name, int pid, int tid, Json args) {
  Json m = Json::object();
  m["name"] = name;
  m["ph"] = "M";
  m["pid"] = pid;
  m["tid"] = tid;
  m["args"] = std::move(args);
  return m;
}

// Rounds to nanoseconds (three decimals of a microsecond).
double Round3(double us) { return std::round(us * 1000) / 1000; }

}  // namespace

std::string MergePartTexts(const std::vector<PartText>& texts,
                           MergeResult* result) {
  *result = MergeResult();
  std::vector<Part> parts;
  for (const PartText& t : texts) {
    auto p = ParsePart(t);
    if (!p.ok()) {
      result->warnings.push_back(
          absl::StrCat(t.file, ": ", p.status().message(), "; skipped"));
      continue;
    }
    parts.push_back(std::move(*p));
  }
  std::stable_sort(parts.begin(), parts.end(),
                   [](const Part& a, const Part& b) {
                     if (RoleOrder(a.role) != RoleOrder(b.role))
                       return RoleOrder(a.role) < RoleOrder(b.role);
                     return a.rank < b.rank;
                   });
  // The job's start in the scheduler's clock.
  double start = std::numeric_limits<double>::infinity();
  for (const Part& p : parts) {
    start = std::min(start, p.base_us);
    for (const Event& e : p.events) start = std::min(start, p.base_us + e.ts);
  }
  if (!std::isfinite(start)) start = 0;

  Json events = Json::array();
  Json infos = Json::array();
  for (size_t i = 0; i < parts.size(); ++i) {
    Part& p = parts[i];
    const int pid = static_cast<int>(i) + 1;
    std::string title = absl::StrCat(p.role, " ", p.rank);
    if (!p.host.empty())
      absl::StrAppend(&title, " (", p.host, ":", p.port, ")");
    if (p.role == "scheduler") title = "scheduler";
    events.push_back(
        Metadata("process_name", pid, 0, Json{{"name", std::move(title)}}));
    events.push_back(
        Metadata("process_sort_index", pid, 0, Json{{"sort_index", pid}}));
    // Lanes: per track, events sorted by start; each goes to the first lane
    // free by then.
    std::stable_sort(p.events.begin(), p.events.end(),
                     [](const Event& a, const Event& b) {
                       return a.tid != b.tid ? a.tid < b.tid : a.ts < b.ts;
                     });
    int next_tid = 1;
    for (const auto& [tid, name] : p.tracks)
      next_tid = std::max(next_tid, tid + 1);
    for (const Event& e : p.events) next_tid = std::max(next_tid, e.tid + 1);
    std::map<int, std::vector<std::pair<int, double>>> lanes;  // tid, end.
    std::vector<std::pair<int, std::string>> names(p.tracks.begin(),
                                                   p.tracks.end());
    for (Event& e : p.events) {
      std::vector<std::pair<int, double>>& ls = lanes[e.tid];
      size_t l = 0;
      while (l < ls.size() && ls[l].second > e.ts) ++l;
      if (l == ls.size()) {
        const int tid = l == 0 ? e.tid : next_tid++;
        ls.emplace_back(tid, e.ts);
        if (l > 0) {
          auto base = p.tracks.find(e.tid);
          names.emplace_back(tid,
                             absl::StrCat(base == p.tracks.end()
                                              ? absl::StrCat("track ", e.tid)
                                              : base->second,
                                          " #", l + 1));
        }
      }
      ls[l].second = e.ts + e.dur;
      Json x = Json::object();
      x["name"] = std::move(e.name);
      if (!e.cat.empty()) x["cat"] = std::move(e.cat);
      x["ph"] = "X";
      x["pid"] = pid;
      x["tid"] = ls[l].first;
      x["ts"] = Round3(p.base_us + e.ts - start);
      x["dur"] = Round3(e.dur);
      x["args"] = std::move(e.args);
      events.push_back(std::move(x));
    }
    for (const auto& [tid, name] : names) {
      events.push_back(Metadata("thread_name", pid, tid, Json{{"name", name}}));
      events.push_back(
          Metadata("thread_sort_index", pid, tid, Json{{"sort_index", tid}}));
    }
    result->events += static_cast<int64_t>(p.events.size());
    result->dropped += p.dropped;
    infos.push_back(Json{{"file", p.file},
                         {"role", p.role},
                         {"rank", p.rank},
                         {"host", p.host},
                         {"pid", pid},
                         {"clock_offset_us", p.offset_us},
                         {"events", p.events.size()},
                         {"dropped_events", p.dropped}});
  }
  result->parts = static_cast<int>(parts.size());
  Json root = Json::object();
  root["traceEvents"] = std::move(events);
  root["displayTimeUnit"] = "ms";
  root["pstrain"] = Json{{"version", 1},
                         {"job_start_unix_us", static_cast<int64_t>(start)},
                         {"parts", std::move(infos)},
                         {"skipped", result->warnings}};
  // Replaces bytes that are not UTF-8 instead of throwing.
  return root.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
}

absl::StatusOr<MergeResult> MergePartFiles(
    const std::vector<std::string>& paths, const std::string& out_path) {
  std::vector<PartText> texts;
  std::vector<std::string> unreadable;
  for (const std::string& path : paths) {
    auto text = ReadFileToString(path, "timeline part");
    if (!text.ok()) {
      unreadable.push_back(absl::StrCat(text.status().message(), "; skipped"));
      continue;
    }
    texts.push_back({path, std::move(*text)});
  }
  MergeResult result;
  const std::string merged = MergePartTexts(texts, &result);
  result.warnings.insert(result.warnings.begin(), unreadable.begin(),
                         unreadable.end());
  absl::Status s = WriteFileAtomically(out_path, merged);
  if (!s.ok()) {
    return absl::Status(s.code(), absl::StrCat("timeline: ", s.message()));
  }
  return result;
}

absl::StatusOr<std::vector<std::string>> ListPartFiles(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) {
    return ErrnoToStatus(errno, absl::StrCat("timeline parts folder ", dir));
  }
  std::vector<std::string> out;
  while (struct dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (absl::EndsWith(name, ".json"))
      out.push_back(absl::StrCat(dir, "/", name));
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

std::string PartsDir(const std::string& merged_path) {
  return absl::StrCat(merged_path, ".parts");
}

std::string PartPath(const std::string& merged_path, const std::string& role,
                     int index) {
  return absl::StrCat(PartsDir(merged_path), "/", role, "-", index, ".json");
}

}  // namespace timeline
}  // namespace pstrain
