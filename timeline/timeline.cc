#include "timeline/timeline.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "util/file.h"
#include "util/status.h"

namespace pstrain {
namespace timeline {
namespace {

// Nanoseconds as microseconds with three decimals.
std::string Micros(int64_t ns) {
  return absl::StrFormat("%d.%03d", ns / 1000, ns % 1000);
}

}  // namespace

absl::Status ParseStepWindow(absl::string_view text, int64_t* first,
                             int64_t* last) {
  const size_t colon = text.find(':');
  int64_t a = 0, b = 0;
  if (colon == absl::string_view::npos ||
      !absl::SimpleAtoi(text.substr(0, colon), &a) ||
      !absl::SimpleAtoi(text.substr(colon + 1), &b) || a < 1 || b < a) {
    return absl::InvalidArgumentError(
        "must be A:B with 1 <= A <= B (steps count from 1)");
  }
  *first = a;
  *last = b;
  return absl::OkStatus();
}

std::string JsonEscape(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c >= 0x7f) {
          absl::StrAppendFormat(&out, "\\u%04x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out;
}

Recorder::Recorder(const TimelineOptions& options)
    : options_(options),
      enabled_(!options.path.empty()),
      origin_(absl::Now()) {}

int Recorder::Track(absl::string_view name) {
  MutexLock lock(&mu_);
  auto it = track_ids_.find(name);
  if (it != track_ids_.end()) return it->second;
  tracks_.emplace_back(name);
  const int id = static_cast<int>(tracks_.size());
  track_ids_.emplace(std::string(name), id);
  return id;
}

void Recorder::Add(int track, absl::string_view name, absl::Time begin,
                   absl::Time end, EventArgs args) {
  if (!enabled_) return;
  Event e;
  e.name = std::string(name);
  e.track = track;
  e.begin_ns = absl::ToInt64Nanoseconds(begin - origin_);
  e.dur_ns = std::max<int64_t>(0, absl::ToInt64Nanoseconds(end - begin));
  e.args = std::move(args);
  MutexLock lock(&mu_);
  if (static_cast<int64_t>(events_.size()) >= options_.max_events) {
    ++dropped_;
    return;
  }
  events_.push_back(std::move(e));
}

int64_t Recorder::num_events() const {
  MutexLock lock(&mu_);
  return static_cast<int64_t>(events_.size());
}

int64_t Recorder::dropped_events() const {
  MutexLock lock(&mu_);
  return dropped_;
}

std::string Recorder::PartJson(const PartInfo& info) const {
  MutexLock lock(&mu_);
  std::string out = "{\"traceEvents\": [\n";
  bool first = true;
  auto sep = [&] {
    if (!first) out += ",\n";
    first = false;
  };
  for (size_t i = 0; i < tracks_.size(); ++i) {
    sep();
    absl::StrAppend(&out,
                    "{\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": 0, "
                    "\"tid\": ",
                    i + 1, ", \"args\": {\"name\": \"", JsonEscape(tracks_[i]),
                    "\"}}");
  }
  for (const Event& e : events_) {
    sep();
    absl::StrAppend(&out, "{\"name\": \"", JsonEscape(e.name), "\", ");
    if (!e.args.category.empty()) {
      absl::StrAppend(&out, "\"cat\": \"", JsonEscape(e.args.category), "\", ");
    }
    absl::StrAppend(&out, "\"ph\": \"X\", \"pid\": 0, \"tid\": ", e.track,
                    ", \"ts\": ", Micros(e.begin_ns),
                    ", \"dur\": ", Micros(e.dur_ns), ", \"args\": {");
    bool first_arg = true;
    for (const auto& [k, v] : e.args.ints) {
      absl::StrAppend(&out, first_arg ? "" : ", ", "\"", JsonEscape(k),
                      "\": ", v);
      first_arg = false;
    }
    if (!e.args.keys.empty()) {
      absl::StrAppend(&out, first_arg ? "" : ", ", "\"keys\": [");
      for (size_t k = 0; k < e.args.keys.size(); ++k) {
        absl::StrAppend(&out, k ? ", " : "", e.args.keys[k]);
      }
      out += "]";
    }
    out += "}}";
  }
  absl::StrAppend(
      &out, "\n],\n\"pstrain\": {\"version\": 1, \"role\": \"",
      JsonEscape(info.role), "\", \"rank\": ", info.rank, ", \"host\": \"",
      JsonEscape(info.host), "\", \"port\": ", info.port,
      ", \"clock_origin_unix_us\": ", absl::ToUnixMicros(origin_),
      ", \"clock_offset_us\": ", info.clock_offset_us,
      ", \"clock_aligned\": ", info.clock_aligned ? "true" : "false",
      ", \"first_step\": ", options_.first_step,
      ", \"last_step\": ", options_.last_step, ", \"events\": ", events_.size(),
      ", \"dropped_events\": ", dropped_, "}}\n");
  return out;
}

absl::Status Recorder::WritePart(const PartInfo& info) const {
  if (!enabled_) return absl::OkStatus();
  absl::Status s = WriteFileAtomically(options_.path, PartJson(info));
  if (!s.ok()) {
    return absl::Status(s.code(), absl::StrCat("timeline part: ", s.message()));
  }
  return absl::OkStatus();
}

}  // namespace timeline
}  // namespace pstrain
