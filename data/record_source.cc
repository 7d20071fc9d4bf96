#include "data/record_source.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "recordio/image_record.h"
#include "recordio/index.h"
#include "recordio/split.h"
#include "util/status.h"

namespace pstrain {
namespace data {

absl::StatusOr<std::unique_ptr<RecordSource>> RecordSource::Open(
    const std::string& path, int part_index, int num_parts,
    const RecordSourceOptions& options) {
  std::unique_ptr<RecordSource> s(new RecordSource());
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    for (const auto& e : std::filesystem::directory_iterator(path, ec)) {
      if (absl::EndsWith(e.path().string(), ".rec"))
        s->files_.push_back(e.path().string());
    }
    std::sort(s->files_.begin(), s->files_.end());
    if (s->files_.empty())
      return absl::NotFoundError(absl::StrCat("no .rec file in ", path));
  } else {
    struct stat st;
    if (stat(path.c_str(), &st) != 0)
      return ErrnoToStatus(errno, absl::StrCat("open ", path));
    s->files_.push_back(path);
  }
  // Indexed split when every file has its .idx.
  bool all_idx = !options.ignore_index;
  for (const auto& f : s->files_) {
    all_idx = all_idx &&
              std::filesystem::exists(f.substr(0, f.size() - 4) + ".idx", ec);
  }
  if (all_idx) {
    for (size_t f = 0; f < s->files_.size(); ++f) {
      const std::string idx =
          s->files_[f].substr(0, s->files_[f].size() - 4) + ".idx";
      // Checked against the .rec: offsets increase, so entry i is record i
      // (when the index lists every record).
      PSTRAIN_ASSIGN_OR_RETURN(
          auto indexed, recordio::IndexedReader::Open(s->files_[f], idx));
      const auto& entries = indexed->entries();
      for (size_t i = 0; i < entries.size(); ++i) {
        s->records_.push_back(
            {static_cast<int>(f), entries[i].offset, static_cast<int64_t>(i)});
      }
    }
    const int64_t n = static_cast<int64_t>(s->records_.size());
    if (num_parts < 1 || part_index < 0 || part_index >= num_parts) {
      return absl::InvalidArgumentError("bad part");
    }
    const int64_t per = (n + num_parts - 1) / num_parts;
    const int64_t lo = std::min(n, per * part_index),
                  hi = std::min(n, per * (part_index + 1));
    s->records_ =
        std::vector<Rec>(s->records_.begin() + lo, s->records_.begin() + hi);
    s->indexed_ = true;
  } else {
    recordio::ReaderOptions skip;
    skip.policy = recordio::CorruptionPolicy::kSkip;
    PSTRAIN_ASSIGN_OR_RETURN(
        auto reader,
        recordio::PartReader::Open(s->files_, part_index, num_parts, skip));
    absl::string_view v;
    while (true) {
      PSTRAIN_ASSIGN_OR_RETURN(bool more, reader->Next(&v));
      if (!more) break;
      const int f = static_cast<int>(
          std::find(s->files_.begin(), s->files_.end(), reader->path()) -
          s->files_.begin());
      s->records_.push_back(
          {f, reader->record_offset(), reader->file_record_index()});
    }
    s->loss_ = reader->skip_stats();
  }
  {
    MutexLock lock(&s->mu_);  // No other thread sees `s` yet.
    s->pool_.resize(s->files_.size());
  }
  return s;
}

absl::Status RecordSource::Read(int64_t index, Sample* out) {
  const Rec& r = records_[index];
  std::unique_ptr<recordio::RecordReader> reader;
  {
    MutexLock lock(&mu_);
    if (!pool_[r.file].empty()) {
      reader = std::move(pool_[r.file].back());
      pool_[r.file].pop_back();
    }
  }
  if (reader == nullptr) {
    recordio::ReaderOptions o;
    o.buffer_bytes = 64 << 10;  // Random access: small reads.
    PSTRAIN_ASSIGN_OR_RETURN(reader,
                             recordio::RecordReader::Open(files_[r.file], o));
  }
  std::string payload;
  absl::Status s = reader->ReadAt(r.offset, &payload, r.index_in_file);
  {
    MutexLock lock(&mu_);
    pool_[r.file].push_back(std::move(reader));
  }
  PSTRAIN_RETURN_IF_ERROR(s);
  auto rec = recordio::ParseImageRecord(payload);
  if (!rec.ok()) return Annotate(rec.status(), Describe(index));
  out->labels = rec->AllLabels();
  out->id = rec->id;
  out->image.assign(rec->image.data(), rec->image.size());
  return absl::OkStatus();
}

std::string RecordSource::Describe(int64_t index) const {
  const Rec& r = records_[index];
  return recordio::RecordLocation(files_[r.file], r.index_in_file, r.offset);
}

}  // namespace data
}  // namespace pstrain
