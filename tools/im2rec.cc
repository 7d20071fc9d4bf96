#include "tools/im2rec.h"

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "opencv2/imgcodecs.hpp"
#include "opencv2/imgproc.hpp"
#include "recordio/image_record.h"
#include "recordio/index.h"
#include "recordio/recordio.h"
#include "tools/py_random.h"
#include "util/file.h"
#include "util/status.h"

namespace pstrain {
namespace tools {
namespace fs = std::filesystem;
namespace {

// os.path.splitext(name)[1].lower(): leading dots do not start a suffix.
std::string LowerSuffix(const std::string& name) {
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos) return "";
  if (name.find_first_not_of('.') >= dot) return "";
  return absl::AsciiStrToLower(name.substr(dot));
}

struct Entry {
  LstItem item;
};

absl::Status Walk(const fs::path& root, const fs::path& dir, bool recursive,
                  const std::vector<std::string>& exts, int depth,
                  std::vector<LstItem>* items,
                  std::vector<std::pair<std::string, int>>* cats) {
  if (depth > 64) {
    return absl::FailedPreconditionError(
        absl::StrCat("folder nesting deeper than 64 at ", dir.string(),
                     " (a symlink loop?)"));
  }
  std::error_code ec;
  std::vector<std::string> files, dirs;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    std::error_code ec2;
    if (fs::is_directory(it->path(), ec2)) {
      dirs.push_back(name);
    } else if (fs::is_regular_file(it->path(), ec2)) {
      files.push_back(name);
    }
  }
  if (ec)
    return absl::NotFoundError(
        absl::StrCat("cannot list ", dir.string(), ": ", ec.message()));
  std::sort(files.begin(), files.end());
  std::sort(dirs.begin(), dirs.end());
  int label = -1;
  for (const auto& f : files) {
    if (std::find(exts.begin(), exts.end(), LowerSuffix(f)) == exts.end())
      continue;
    if (recursive && label < 0) {
      label = static_cast<int>(cats->size());
      fs::path rel = fs::relative(dir, root, ec);
      cats->emplace_back(rel.empty() ? "." : rel.string(), label);
    }
    LstItem item;
    item.index = static_cast<int64_t>(items->size());
    item.labels = {static_cast<float>(recursive ? label : 0)};
    item.path = fs::relative(dir / f, root, ec).string();
    items->push_back(std::move(item));
  }
  if (!recursive) return absl::OkStatus();
  for (const auto& d : dirs) {
    PSTRAIN_RETURN_IF_ERROR(
        Walk(root, dir / d, recursive, exts, depth + 1, items, cats));
  }
  return absl::OkStatus();
}

absl::Status WriteList(const std::string& path,
                       const std::vector<LstItem>& items, size_t begin,
                       size_t end) {
  std::ofstream out(path, std::ios::trunc);
  if (!out) return ErrnoToStatus(errno, absl::StrCat("create ", path));
  for (size_t i = begin; i < end && i < items.size(); ++i) {
    std::string line = absl::StrCat(items[i].index, "\t");
    for (float l : items[i].labels) absl::StrAppendFormat(&line, "%f\t", l);
    absl::StrAppend(&line, items[i].path, "\n");
    out << line;
  }
  out.flush();
  if (!out) return ErrnoToStatus(errno, absl::StrCat("write ", path));
  return absl::OkStatus();
}

// Encodes one image record; empty result = skipped (reason in *why).
std::string EncodeItem(const LstItem& item, const PackOptions& o,
                       std::string* why) {
  const fs::path full = fs::path(o.root) / item.path;
  std::vector<float> packed;
  if (o.pack_label && item.labels.size() > 1) packed = item.labels;
  const float label = item.labels.empty() ? 0.0f : item.labels[0];
  auto header_and = [&](absl::string_view bytes) {
    return recordio::PackImageRecord(
        label, packed, static_cast<uint64_t>(item.index), 0, bytes);
  };
  if (o.pass_through) {
    auto bytes = ReadFileToString(full.string(), "cannot read");
    if (!bytes.ok()) {
      *why = std::string(bytes.status().message());
      return "";
    }
    return header_and(*bytes);
  }
  try {
    cv::Mat img = cv::imread(full.string(), o.color);
    if (img.empty()) {
      *why = absl::StrCat("image does not decode: ", full.string());
      return "";
    }
    if (o.center_crop) {
      if (img.rows > img.cols) {
        img = img(cv::Rect(0, (img.rows - img.cols) / 2, img.cols, img.cols));
      } else {
        img = img(cv::Rect((img.cols - img.rows) / 2, 0, img.rows, img.rows));
      }
    }
    if (o.resize > 0) {
      cv::Size size;
      if (img.rows > img.cols) {
        size = cv::Size(o.resize, static_cast<int>(int64_t{img.rows} *
                                                   o.resize / img.cols));
      } else {
        size =
            cv::Size(static_cast<int>(int64_t{img.cols} * o.resize / img.rows),
                     o.resize);
      }
      cv::Mat resized;
      cv::resize(img, resized, size);
      img = resized;
    }
    std::vector<int> params;
    const std::string enc = absl::AsciiStrToLower(o.encoding);
    if (enc == ".jpg" || enc == ".jpeg") {
      params = {cv::IMWRITE_JPEG_QUALITY, o.quality};
    } else if (enc == ".png") {
      params = {cv::IMWRITE_PNG_COMPRESSION, std::clamp(o.quality, 0, 9)};
    }
    std::vector<uchar> buf;
    if (!cv::imencode(o.encoding, img, buf, params)) {
      *why = absl::StrCat("cannot encode ", full.string(), " as ", o.encoding);
      return "";
    }
    return header_and(absl::string_view(
        reinterpret_cast<const char*>(buf.data()), buf.size()));
  } catch (const cv::Exception& e) {
    *why = absl::StrCat("OpenCV failed on ", full.string(), ": ", e.what());
    return "";
  }
}

std::string Eta(double seconds) {
  if (seconds < 0 || seconds > 1e7) return "?";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, (s / 60) % 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

}  // namespace

absl::StatusOr<std::vector<std::string>> MakeLists(const ListOptions& o,
                                                   std::ostream* out) {
  if (o.chunks < 1) return absl::InvalidArgumentError("--chunks must be >= 1");
  if (o.train_ratio < 0 || o.test_ratio < 0 ||
      o.train_ratio + o.test_ratio > 1.0 + 1e-12) {
    return absl::InvalidArgumentError(
        absl::StrCat("--train_ratio (", o.train_ratio, ") and --test_ratio (",
                     o.test_ratio, ") must be >= 0 and sum to at most 1"));
  }
  std::error_code ec;
  if (!fs::is_directory(o.root, ec)) {
    return absl::NotFoundError(
        absl::StrCat("image root ", o.root, " is not a folder"));
  }
  std::vector<LstItem> items;
  std::vector<std::pair<std::string, int>> cats;
  PSTRAIN_RETURN_IF_ERROR(
      Walk(o.root, o.root, o.recursive, o.exts, 0, &items, &cats));
  for (const auto& [rel, label] : cats) *out << rel << " " << label << "\n";
  if (o.shuffle) PyRandom(100).Shuffle(&items);
  const size_t n = items.size();
  const size_t chunk = (n + o.chunks - 1) / o.chunks;
  std::vector<std::string> written;
  for (int i = 0; i < o.chunks; ++i) {
    const size_t lo = std::min(n, chunk * i), hi = std::min(n, chunk * (i + 1));
    std::vector<LstItem> part(items.begin() + lo, items.begin() + hi);
    const std::string base =
        o.chunks > 1 ? absl::StrCat(o.prefix, "_", i) : o.prefix;
    const size_t sep = static_cast<size_t>(chunk * o.train_ratio);
    const size_t sep_test = static_cast<size_t>(chunk * o.test_ratio);
    auto emit = [&](const std::string& path, size_t b,
                    size_t e) -> absl::Status {
      PSTRAIN_RETURN_IF_ERROR(WriteList(path, part, b, e));
      written.push_back(path);
      return absl::OkStatus();
    };
    if (o.train_ratio == 1.0) {
      PSTRAIN_RETURN_IF_ERROR(emit(base + ".lst", 0, part.size()));
    } else {
      if (o.test_ratio > 0)
        PSTRAIN_RETURN_IF_ERROR(emit(base + "_test.lst", 0, sep_test));
      if (o.train_ratio + o.test_ratio < 1.0) {
        PSTRAIN_RETURN_IF_ERROR(
            emit(base + "_val.lst", sep_test + sep, part.size()));
      }
      PSTRAIN_RETURN_IF_ERROR(
          emit(base + "_train.lst", sep_test, sep_test + sep));
    }
  }
  return written;
}

absl::StatusOr<std::vector<LstItem>> ReadLst(const std::string& path,
                                             std::ostream* warnings) {
  std::ifstream in(path);
  if (!in) return ErrnoToStatus(errno, absl::StrCat("open ", path));
  std::vector<LstItem> items;
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    absl::string_view l = absl::StripAsciiWhitespace(line);
    if (l.empty()) continue;
    std::vector<std::string> f;
    for (absl::string_view part : absl::StrSplit(l, '\t')) {
      f.emplace_back(absl::StripAsciiWhitespace(part));
    }
    if (f.size() < 3) {
      *warnings << path << ":" << line_no
                << ": a .lst line needs index, label(s) "
                << "and path, this one has " << f.size()
                << " field(s); skipped\n";
      continue;
    }
    LstItem item;
    bool ok = absl::SimpleAtoi(f[0], &item.index);
    for (size_t i = 1; ok && i + 1 < f.size(); ++i) {
      float v;
      ok = absl::SimpleAtof(f[i], &v);
      item.labels.push_back(v);
    }
    if (!ok) {
      *warnings << path << ":" << line_no << ": cannot parse '" << l
                << "'; skipped\n";
      continue;
    }
    item.path = f.back();
    items.push_back(std::move(item));
  }
  return items;
}

absl::StatusOr<PackStats> PackList(const std::string& lst_path,
                                   const std::string& rec_path,
                                   const std::string& idx_path,
                                   const PackOptions& o, std::ostream* out) {
  if (o.num_thread < 1)
    return absl::InvalidArgumentError("--num_thread must be >= 1");
  PSTRAIN_ASSIGN_OR_RETURN(std::vector<LstItem> items, ReadLst(lst_path, out));
  PSTRAIN_ASSIGN_OR_RETURN(auto writer,
                           recordio::RecordWriter::Create(rec_path));
  std::ofstream idx(idx_path, std::ios::trunc);
  if (!idx) return ErrnoToStatus(errno, absl::StrCat("create ", idx_path));

  const absl::Time start = absl::Now();
  const size_t n = items.size();
  const size_t window = 4 * static_cast<size_t>(o.num_thread);
  std::mutex mu;
  std::condition_variable cv;
  size_t next_claim = 0, next_write = 0;
  bool abort = false;
  std::map<size_t, std::pair<std::string, std::string>> done;  // payload, why

  auto work = [&] {
    while (true) {
      size_t i;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] {
          return abort || next_claim >= n || next_claim < next_write + window;
        });
        if (abort || next_claim >= n) return;
        i = next_claim++;
      }
      std::string why;
      std::string payload = EncodeItem(items[i], o, &why);
      {
        std::lock_guard<std::mutex> lock(mu);
        done.emplace(i, std::make_pair(std::move(payload), std::move(why)));
      }
      cv.notify_all();
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < o.num_thread; ++t) threads.emplace_back(work);

  PackStats stats;
  absl::Status status;
  absl::Time last_progress = start;
  *out << "im2rec: packing " << n << " images from " << lst_path << " into "
       << rec_path << " with " << o.num_thread << " thread(s)\n";
  for (size_t i = 0; i < n; ++i) {
    std::pair<std::string, std::string> result;
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return done.count(i) > 0; });
      result = std::move(done[i]);
      done.erase(i);
    }
    if (result.first.empty()) {
      ++stats.skipped;
      *out << "im2rec: warning: skipping " << items[i].path << ": "
           << result.second << "\n";
    } else {
      const int64_t offset = writer->Tell();
      status = writer->Write(result.first);
      if (!status.ok()) break;
      idx << recordio::FormatIndexLine({items[i].index, offset});
      ++stats.packed;
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      next_write = i + 1;
    }
    cv.notify_all();
    const absl::Time now = absl::Now();
    if (o.progress_seconds > 0 &&
        now - last_progress >= absl::Seconds(o.progress_seconds)) {
      last_progress = now;
      const double secs = absl::ToDoubleSeconds(now - start);
      const double rate = (i + 1) / secs;
      *out << absl::StrFormat("im2rec: %d/%d images, %.1f images/s, ETA %s\n",
                              i + 1, n, rate, Eta((n - i - 1) / rate))
           << std::flush;
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    abort = true;
  }
  cv.notify_all();
  for (auto& t : threads) t.join();
  PSTRAIN_RETURN_IF_ERROR(status);
  PSTRAIN_RETURN_IF_ERROR(writer->Close());
  idx.flush();
  if (!idx) return ErrnoToStatus(errno, absl::StrCat("write ", idx_path));
  stats.bytes = writer->Tell();
  stats.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  *out << absl::StrFormat(
      "im2rec: done %s: %d packed, %d skipped, %d bytes, %.2f s (%.1f "
      "images/s)\n",
      rec_path, stats.packed, stats.skipped, stats.bytes, stats.seconds,
      stats.seconds > 0 ? stats.packed / stats.seconds : 0.0);
  return stats;
}

absl::StatusOr<PackStats> PackAll(const std::string& prefix,
                                  const PackOptions& o, std::ostream* out) {
  std::error_code ec;
  const fs::path dir = fs::is_directory(prefix, ec)
                           ? fs::path(prefix)
                           : fs::path(prefix).parent_path();
  std::vector<std::string> lists;
  for (fs::directory_iterator it(dir.empty() ? fs::path(".") : dir, ec), end;
       !ec && it != end; it.increment(ec)) {
    std::error_code ec2;
    if (!fs::is_regular_file(it->path(), ec2)) continue;
    std::string p =
        dir.empty() ? it->path().filename().string() : it->path().string();
    if (absl::StartsWith(p, prefix) && absl::EndsWith(p, ".lst"))
      lists.push_back(p);
  }
  if (ec)
    return absl::NotFoundError(
        absl::StrCat("cannot list ", dir.string(), ": ", ec.message()));
  std::sort(lists.begin(), lists.end());
  if (lists.empty()) {
    return absl::NotFoundError(absl::StrCat("no .lst file with prefix ", prefix,
                                            " (make one with --list)"));
  }
  PackStats total;
  for (const auto& lst : lists) {
    const std::string base = lst.substr(0, lst.size() - 4);
    PSTRAIN_ASSIGN_OR_RETURN(
        PackStats s, PackList(lst, base + ".rec", base + ".idx", o, out));
    total.packed += s.packed;
    total.skipped += s.skipped;
    total.bytes += s.bytes;
    total.seconds += s.seconds;
  }
  return total;
}

}  // namespace tools
}  // namespace pstrain

namespace pstrain {
namespace tools {

std::vector<std::string> NormalizeIm2recArgs(
    const std::vector<std::string>& argv) {
  std::vector<std::string> out;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (i == 0 || !absl::StartsWith(a, "--") || a == "--") {
      out.push_back(a);
      continue;
    }
    std::string name = a.substr(2), value;
    const size_t eq = name.find('=');
    const bool has_value = eq != std::string::npos;
    if (has_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    std::replace(name.begin(), name.end(), '-', '_');
    if (name == "no_shuffle") name = "noshuffle";
    if (name == "exts" && !has_value) {
      std::vector<std::string> exts;
      while (i + 1 < argv.size() && absl::StartsWith(argv[i + 1], ".")) {
        exts.push_back(argv[++i]);
      }
      out.push_back(absl::StrCat("--exts=", absl::StrJoin(exts, ",")));
      continue;
    }
    out.push_back(has_value ? absl::StrCat("--", name, "=", value)
                            : "--" + name);
  }
  return out;
}

}  // namespace tools
}  // namespace pstrain
