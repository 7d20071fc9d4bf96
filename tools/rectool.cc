#include "tools/rectool.h"

#include <cmath>
#include <fstream>
#include <map>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "opencv2/imgcodecs.hpp"
#include "recordio/image_record.h"
#include "recordio/index.h"
#include "recordio/recordio.h"

namespace pstrain {
namespace tools {
namespace {

constexpr char kUsage[] =
    "usage: rectool count F.rec | headers [--json] F.rec | verify F.rec "
    "[F.idx] | "
    "extract F.rec INDEX OUT";

// Iterates the records of `path`, calling fn(index, offset, payload); stops
// at the first corruption, reporting it. Returns the exit code.
template <typename Fn>
int ForEach(const std::string& path, std::ostream& err, Fn fn) {
  auto r = recordio::RecordReader::Open(path);
  if (!r.ok()) {
    err << "rectool: " << r.status().message() << "\n";
    return 1;
  }
  absl::string_view v;
  int64_t index = 0;
  while (true) {
    auto more = (*r)->Next(&v);
    if (!more.ok()) {
      err << "rectool: " << more.status().message() << "\n";
      return 1;
    }
    if (!*more) return 0;
    if (!fn(index, (*r)->record_offset(), v)) return 1;
    ++index;
  }
}

// Parses record `i` (at byte `offset`) of `path`; nullopt, reported on
// `err`, when it is not an image record.
std::optional<recordio::ImageRecord> ParseReporting(const std::string& path,
                                                    int64_t i, int64_t offset,
                                                    absl::string_view payload,
                                                    std::ostream& err) {
  auto rec = recordio::ParseImageRecord(payload);
  if (!rec.ok()) {
    err << "rectool: " << path << ": record " << i << " at byte offset "
        << offset << ": " << rec.status().message() << "\n";
    return std::nullopt;
  }
  return *std::move(rec);
}

}  // namespace

int RunRectool(const std::vector<std::string>& args, bool json,
               std::ostream& out, std::ostream& err) {
  if (args.empty()) {
    err << kUsage << "\n";
    return 2;
  }
  const std::string& cmd = args[0];
  if (cmd == "count" && args.size() == 2) {
    int64_t n = 0;
    int rc = ForEach(args[1], err, [&](int64_t, int64_t, absl::string_view) {
      ++n;
      return true;
    });
    if (rc == 0) out << n << "\n";
    return rc;
  }
  if (cmd == "headers" && args.size() == 2) {
    return ForEach(
        args[1], err, [&](int64_t i, int64_t off, absl::string_view p) {
          auto rec = ParseReporting(args[1], i, off, p, err);
          if (!rec) return false;
          if (json) {
            // Labels that are not finite become null.
            const nlohmann::ordered_json line = {{"index", i},
                                                 {"offset", off},
                                                 {"flag", rec->flag},
                                                 {"labels", rec->AllLabels()},
                                                 {"id", rec->id},
                                                 {"id2", rec->id2},
                                                 {"bytes", rec->image.size()}};
            out << line.dump() << "\n";
          } else {
            std::vector<std::string> labels;
            for (float l : rec->AllLabels())
              labels.push_back(absl::StrFormat("%g", l));
            out << absl::StrFormat(
                "%d\toffset=%d\tflag=%d\tlabels=%s\tid=%d\tid2=%d\tbytes=%d\n",
                i, off, rec->flag, absl::StrJoin(labels, ","), rec->id,
                rec->id2, rec->image.size());
          }
          return true;
        });
  }
  if (cmd == "verify" && (args.size() == 2 || args.size() == 3)) {
    std::map<int64_t, uint64_t> id_at;  // offset -> header id
    int64_t images = 0;
    int rc =
        ForEach(args[1], err, [&](int64_t i, int64_t off, absl::string_view p) {
          auto rec = ParseReporting(args[1], i, off, p, err);
          if (!rec) return false;
          cv::Mat img;
          try {
            img = cv::imdecode(
                cv::Mat(1, static_cast<int>(rec->image.size()), CV_8U,
                        const_cast<char*>(rec->image.data())),
                cv::IMREAD_UNCHANGED);
          } catch (const cv::Exception&) {
          }
          if (img.empty()) {
            err << "rectool: " << args[1] << ": record " << i
                << " at byte offset " << off << ": image (" << rec->image.size()
                << " bytes) does not decode\n";
            return false;
          }
          id_at[off] = rec->id;
          ++images;
          return true;
        });
    if (rc != 0) return rc;
    if (args.size() == 3) {
      auto idx = recordio::ReadIndexFile(args[2]);
      if (!idx.ok()) {
        err << "rectool: " << idx.status().message() << "\n";
        return 1;
      }
      if (static_cast<int64_t>(idx->size()) != images) {
        err << "rectool: " << args[2] << " lists " << idx->size()
            << " records, " << args[1] << " holds " << images << "\n";
        return 1;
      }
      for (size_t line = 0; line < idx->size(); ++line) {
        const auto& e = (*idx)[line];
        auto it = id_at.find(e.offset);
        if (it == id_at.end()) {
          err << "rectool: " << args[2] << ":" << line + 1 << ": offset "
              << e.offset << " (key " << e.key << ") is not a record head in "
              << args[1] << "\n";
          return 1;
        }
        if (it->second != static_cast<uint64_t>(e.key)) {
          err << "rectool: " << args[2] << ":" << line + 1 << ": key " << e.key
              << " but the record at byte offset " << e.offset << " has id "
              << it->second << "\n";
          return 1;
        }
      }
    }
    out << "rectool: " << args[1] << ": OK, " << images
        << " records, every image decodes"
        << (args.size() == 3 ? ", index agrees" : "") << "\n";
    return 0;
  }
  if (cmd == "extract" && args.size() == 4) {
    int64_t want;
    if (!absl::SimpleAtoi(args[2], &want) || want < 0) {
      err << "rectool: INDEX must be a record index >= 0, not '" << args[2]
          << "'\n";
      return 2;
    }
    bool found = false;
    int rc =
        ForEach(args[1], err, [&](int64_t i, int64_t off, absl::string_view p) {
          if (i != want) return true;
          auto rec = ParseReporting(args[1], i, off, p, err);
          if (!rec) return false;
          std::ofstream f(args[3], std::ios::binary | std::ios::trunc);
          f.write(rec->image.data(),
                  static_cast<std::streamsize>(rec->image.size()));
          f.close();
          if (!f) {
            err << "rectool: cannot write " << args[3] << "\n";
            return false;
          }
          out << "rectool: wrote record " << i << " (id " << rec->id << ", "
              << rec->image.size() << " bytes) to " << args[3] << "\n";
          found = true;
          return false;  // Stop reading.
        });
    if (found) return 0;
    if (rc == 0)
      err << "rectool: " << args[1] << " has no record " << want << "\n";
    return 1;
  }
  err << kUsage << "\n";
  return 2;
}

}  // namespace tools
}  // namespace pstrain
