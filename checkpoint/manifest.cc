#include "checkpoint/manifest.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "glog/logging.h"
#include "util/file.h"
#include "util/status.h"

namespace pstrain {
namespace checkpoint {
namespace {

constexpr char kStepPrefix[] = "step-";
constexpr absl::Duration kPartPoll = absl::Milliseconds(20);

// The step of a folder named by StepDir, or -1.
int64_t StepOf(const std::string& name) {
  int64_t step;
  if (name.rfind(kStepPrefix, 0) != 0 ||
      name.size() != sizeof(kStepPrefix) - 1 + 10 ||
      !absl::SimpleAtoi(name.substr(sizeof(kStepPrefix) - 1), &step)) {
    return -1;
  }
  return step;
}

// The step folders under `root`, newest first.
std::vector<std::pair<int64_t, std::string>> StepDirs(const std::string& root) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(root, ec)) {
    const int64_t step = StepOf(e.path().filename().string());
    if (step >= 0 && e.is_directory(ec)) out.push_back({step, e.path()});
  }
  std::sort(out.rbegin(), out.rend());
  return out;
}

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

}  // namespace

std::string ServerPartName(int rank) {
  return absl::StrCat("server-", rank, ".params");
}
std::string WorkerPartName(int rank) {
  return absl::StrCat("worker-", rank, ".params");
}

std::string StepDir(const std::string& root, int64_t step) {
  return absl::StrFormat("%s/%s%010d", root, kStepPrefix, step);
}

absl::Status MakeDirs(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("create ", dir, ": ", ec.message()));
  }
  return absl::OkStatus();
}

uint32_t Crc32(absl::string_view bytes) {
  uLong crc = crc32(0L, Z_NULL, 0);
  // zlib takes uInt lengths: feed it in pieces below 4 GiB.
  constexpr size_t kPiece = size_t{1} << 30;
  for (size_t i = 0; i < bytes.size(); i += kPiece) {
    const size_t n = std::min(kPiece, bytes.size() - i);
    crc = crc32(crc, reinterpret_cast<const Bytef*>(bytes.data() + i),
                static_cast<uInt>(n));
  }
  return static_cast<uint32_t>(crc);
}

std::string SerializeManifest(const Manifest& m) {
  std::string out = "pstrain-checkpoint 1\n";
  absl::StrAppend(&out, "step ", m.step, "\nepoch ", m.epoch, "\nbatch ",
                  m.batch, "\n");
  if (!m.partition.empty()) {
    absl::StrAppend(&out, "partition ", m.partition, "\n");
  }
  for (const ManifestPart& p : m.parts) {
    absl::StrAppendFormat(&out, "part %s %d %08x\n", p.name, p.size, p.crc32);
  }
  return out;
}

absl::StatusOr<Manifest> ParseManifest(absl::string_view text,
                                       absl::string_view source) {
  Manifest m;
  std::vector<absl::string_view> lines =
      absl::StrSplit(text, '\n', absl::SkipEmpty());
  auto bad = [&](size_t i, absl::string_view why) {
    return absl::DataLossError(
        absl::StrCat(source, " line ", i + 1, ": ", why));
  };
  if (lines.empty() || lines[0] != "pstrain-checkpoint 1") {
    return bad(0, "not a pstrain checkpoint manifest (version 1)");
  }
  bool step = false, epoch = false, batch = false;
  for (size_t i = 1; i < lines.size(); ++i) {
    std::vector<absl::string_view> f = absl::StrSplit(lines[i], ' ');
    if (f[0] == "step" && f.size() == 2 && absl::SimpleAtoi(f[1], &m.step) &&
        m.step >= 0) {
      step = true;
    } else if (f[0] == "epoch" && f.size() == 2 &&
               absl::SimpleAtoi(f[1], &m.epoch) && m.epoch >= 0) {
      epoch = true;
    } else if (f[0] == "batch" && f.size() == 2 &&
               absl::SimpleAtoi(f[1], &m.batch) && m.batch >= 0) {
      batch = true;
    } else if (f[0] == "partition" && f.size() == 2 && !f[1].empty()) {
      m.partition = std::string(f[1]);
    } else if (f[0] == "part" && f.size() == 4) {
      ManifestPart p;
      p.name = std::string(f[1]);
      if (p.name.empty() || p.name.find('/') != std::string::npos ||
          p.name == "." || p.name == "..") {
        return bad(i, "a part name must be a plain file name");
      }
      if (!absl::SimpleAtoi(f[2], &p.size) || p.size < 0 ||
          !absl::SimpleHexAtoi(f[3], &p.crc32)) {
        return bad(i, "malformed part (NAME SIZE CRC32)");
      }
      m.parts.push_back(std::move(p));
    } else {
      return bad(i, "unexpected line");
    }
  }
  if (!step || !epoch || !batch) {
    return absl::DataLossError(
        absl::StrCat(source, ": step, epoch or batch missing (truncated?)"));
  }
  return m;
}

absl::Status WriteManifest(const std::string& dir, Manifest m,
                           const std::vector<std::string>& parts) {
  m.parts.clear();
  for (const std::string& name : parts) {
    const std::string path = absl::StrCat(dir, "/", name);
    PSTRAIN_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path));
    m.parts.push_back({name, static_cast<int64_t>(bytes.size()), Crc32(bytes)});
  }
  return WriteFileAtomically(absl::StrCat(dir, "/", kManifestName),
                             SerializeManifest(m));
}

absl::Status WaitForParts(const std::string& dir,
                          const std::vector<std::string>& parts,
                          absl::Time deadline,
                          const std::atomic<bool>* cancel) {
  for (const std::string& name : parts) {
    const std::string path = absl::StrCat(dir, "/", name);
    while (!Exists(path)) {
      if (cancel != nullptr && cancel->load()) {
        return absl::CancelledError(absl::StrCat("waiting for ", path));
      }
      if (absl::Now() >= deadline) {
        return absl::DeadlineExceededError(
            absl::StrCat("checkpoint part ", path, " not written in time"));
      }
      absl::SleepFor(kPartPoll);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Manifest> ReadManifest(const std::string& dir) {
  const std::string mpath = absl::StrCat(dir, "/", kManifestName);
  if (!Exists(mpath)) {
    return absl::NotFoundError(absl::StrCat(mpath, " does not exist"));
  }
  PSTRAIN_ASSIGN_OR_RETURN(std::string text, ReadFileToString(mpath));
  return ParseManifest(text, mpath);
}

namespace {

// The bytes of `p` in `dir`, checked.
absl::StatusOr<std::string> ReadPart(const std::string& dir,
                                     const ManifestPart& p) {
  const std::string path = absl::StrCat(dir, "/", p.name);
  auto bytes = ReadFileToString(path);
  if (!bytes.ok()) {
    return absl::DataLossError(absl::StrCat(
        "checkpoint part ", path, " unreadable: ", bytes.status().message()));
  }
  if (static_cast<int64_t>(bytes->size()) != p.size) {
    return absl::DataLossError(
        absl::StrCat("checkpoint part ", path, ": ", bytes->size(),
                     " bytes, its manifest says ", p.size));
  }
  const uint32_t crc = Crc32(*bytes);
  if (crc != p.crc32) {
    return absl::DataLossError(absl::StrFormat(
        "checkpoint part %s: CRC-32 %08x, its manifest says %08x", path, crc,
        p.crc32));
  }
  return bytes;
}

}  // namespace

absl::StatusOr<Manifest> VerifyCheckpoint(const std::string& dir) {
  PSTRAIN_ASSIGN_OR_RETURN(Manifest m, ReadManifest(dir));
  for (const ManifestPart& p : m.parts) {
    PSTRAIN_RETURN_IF_ERROR(ReadPart(dir, p).status());
  }
  return m;
}

absl::StatusOr<std::string> ReadVerifiedPart(const std::string& dir,
                                             const std::string& name) {
  PSTRAIN_ASSIGN_OR_RETURN(Manifest m, ReadManifest(dir));
  for (const ManifestPart& p : m.parts) {
    if (p.name == name) return ReadPart(dir, p);
  }
  return absl::DataLossError(
      absl::StrCat(dir, "/", kManifestName, " lists no part ", name));
}

absl::StatusOr<std::string> FindLatestCheckpoint(const std::string& root) {
  for (const auto& [step, dir] : StepDirs(root)) {
    auto m = VerifyCheckpoint(dir);
    if (m.ok()) return dir;
    LOG(WARNING) << "skipping checkpoint " << dir << ": "
                 << m.status().message();
  }
  return absl::NotFoundError(
      absl::StrCat("no complete checkpoint under ", root));
}

absl::Status PruneCheckpoints(const std::string& root, int keep) {
  CHECK_GE(keep, 1);
  int complete = 0;
  for (const auto& [step, dir] : StepDirs(root)) {
    if (complete < keep) {
      if (Exists(absl::StrCat(dir, "/", kManifestName))) ++complete;
      continue;
    }
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    if (ec) {
      return absl::InternalError(
          absl::StrCat("remove old checkpoint ", dir, ": ", ec.message()));
    }
  }
  return absl::OkStatus();
}

BackgroundWriter::BackgroundWriter() : thread_([this] { Loop(); }) {}

BackgroundWriter::~BackgroundWriter() {
  cancel_ = true;
  {
    MutexLock lock(&mu_);
    tasks_.clear();
  }
  cv_.SignalAll();
  thread_.join();
}

void BackgroundWriter::Submit(Task task) {
  {
    MutexLock lock(&mu_);
    tasks_.push_back(std::move(task));
  }
  cv_.SignalAll();
}

absl::Status BackgroundWriter::Flush(absl::Time deadline) {
  MutexLock lock(&mu_);
  if (!cv_.WaitUntil(&mu_, deadline,
                     [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
                       return tasks_.empty() && !busy_;
                     })) {
    return absl::DeadlineExceededError("checkpoint writes not done in time");
  }
  absl::Status s = first_error_;
  first_error_ = absl::OkStatus();
  return s;
}

void BackgroundWriter::Loop() {
  MutexLock lock(&mu_);
  while (true) {
    // Woken by Submit and the destructor, which is the only way out.
    cv_.WaitUntil(&mu_, absl::InfiniteFuture(),
                  [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
                    return cancel_.load() || !tasks_.empty();
                  });
    if (tasks_.empty()) return;  // Cancelled.
    Task task = std::move(tasks_.front());
    tasks_.pop_front();
    busy_ = true;
    mu_.Unlock();
    absl::Status s = task();
    mu_.Lock();
    busy_ = false;
    if (!s.ok()) {
      LOG(ERROR) << "checkpoint: " << s.message();
      if (first_error_.ok()) first_error_ = s;
    }
    cv_.SignalAll();
  }
}

}  // namespace checkpoint
}  // namespace pstrain
