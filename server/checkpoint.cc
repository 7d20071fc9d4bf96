#include "server/checkpoint.h"

#include <cstring>
#include <map>
#include <memory>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "glog/logging.h"
#include "util/status.h"

namespace pstrain {
namespace server {
namespace {

// How long the destructor waits for queued writes.
constexpr absl::Duration kFlushTimeout = absl::Minutes(5);

checkpoint::NDArray Int64Array(std::string name, int64_t v) {
  checkpoint::NDArray a;
  a.name = std::move(name);
  a.shape = {1};
  a.dtype = checkpoint::DType::kInt64;
  a.data.assign(reinterpret_cast<const char*>(&v), sizeof(v));
  return a;
}

checkpoint::NDArray FloatArray(std::string name, const std::vector<float>& v) {
  return checkpoint::NDArray::FromFloats(std::move(name),
                                         {static_cast<int64_t>(v.size())}, v);
}

}  // namespace

std::vector<checkpoint::NDArray> SnapshotToArrays(const ShardSnapshot& s) {
  std::vector<checkpoint::NDArray> out;
  for (const auto& w : s.slices) {
    out.push_back(
        FloatArray(absl::StrCat("weight:", w.key, ":", w.offset), w.values));
  }
  out.push_back(Int64Array("has_optimizer", s.has_optimizer ? 1 : 0));
  const nn::OptimizerState& o = s.optimizer;
  out.push_back(Int64Array("num_update", o.num_update));
  for (const auto& [key, count] : o.key_count) {
    out.push_back(Int64Array(absl::StrCat("key_count:", key), count));
  }
  for (const auto& slot : o.slots) {
    const std::string id = absl::StrCat(slot.key, ":", slot.slot);
    out.push_back(Int64Array(absl::StrCat("count:", id), slot.count));
    if (!slot.m.empty()) out.push_back(FloatArray("mom:" + id, slot.m));
    if (!slot.v.empty()) out.push_back(FloatArray("var:" + id, slot.v));
  }
  return out;
}

absl::StatusOr<ShardSnapshot> SnapshotFromArrays(
    const std::vector<checkpoint::NDArray>& arrays, const std::string& source) {
  ShardSnapshot out;
  std::map<std::pair<int64_t, int64_t>, nn::OptimizerState::Slot> slots;
  for (const checkpoint::NDArray& a : arrays) {
    auto bad = [&](absl::string_view why) {
      return absl::DataLossError(
          absl::StrCat(source, ": array \"", a.name, "\" ", why));
    };
    std::vector<std::string> f = absl::StrSplit(a.name, ':');
    int64_t ids[2] = {0, 0};
    for (size_t i = 1; i < f.size() && i <= 2; ++i) {
      if (!absl::SimpleAtoi(f[i], &ids[i - 1])) return bad("has a bad id");
    }
    const bool int64 = a.dtype == checkpoint::DType::kInt64 &&
                       a.num_elements() == 1 && a.data.size() == 8;
    int64_t iv = 0;
    if (int64) std::memcpy(&iv, a.data.data(), 8);
    if ((f[0] == "has_optimizer" || f[0] == "num_update") && f.size() == 1) {
      if (!int64) return bad("is not one int64");
      if (f[0] == "has_optimizer") out.has_optimizer = iv != 0;
      if (f[0] == "num_update") out.optimizer.num_update = iv;
    } else if (f[0] == "key_count" && f.size() == 2) {
      if (!int64) return bad("is not one int64");
      out.optimizer.key_count[ids[0]] = iv;
    } else if (f[0] == "count" && f.size() == 3) {
      if (!int64) return bad("is not one int64");
      slots[{ids[0], ids[1]}].count = iv;
    } else if ((f[0] == "weight" || f[0] == "mom" || f[0] == "var") &&
               f.size() == 3) {
      auto v = a.ToFloats();
      if (!v.ok()) return bad("is not float32");
      if (f[0] == "weight") {
        out.slices.push_back({ids[0], ids[1], std::move(*v)});
      } else {
        auto& slot = slots[{ids[0], ids[1]}];
        (f[0] == "mom" ? slot.m : slot.v) = std::move(*v);
      }
    } else {
      return bad("is not part of a server checkpoint");
    }
  }
  for (auto& [id, slot] : slots) {
    slot.key = id.first;
    slot.slot = id.second;
    out.optimizer.slots.push_back(std::move(slot));
  }
  return out;
}

ServerCheckpointer::~ServerCheckpointer() {
  absl::Status s = writer_.Flush(absl::Now() + kFlushTimeout);
  // Already logged by the writer; the server exits after this anyway.
  if (!s.ok()) LOG(ERROR) << "server rank " << options_.rank << ": " << s;
}

absl::Status ServerCheckpointer::Save(int64_t step, const Shard& shard) {
  if (options_.checkpoint_dir.empty()) {
    return absl::FailedPreconditionError(
        "CHECKPOINT: this server has no --checkpoint_dir");
  }
  const absl::Time t0 = absl::Now();
  std::shared_ptr<ShardSnapshot> snap;
  {
    MutexLock lock(&mu_);
    snap = std::move(spare_);
  }
  if (snap == nullptr) snap = std::make_shared<ShardSnapshot>();
  shard.Snapshot(snap.get());
  const double pause_ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
  LOG(INFO) << "server rank " << options_.rank << ": checkpoint of step "
            << step << ": state copied in " << pause_ms
            << " ms; writing in the background";
  const std::string dir = checkpoint::StepDir(options_.checkpoint_dir, step);
  const std::string path =
      absl::StrCat(dir, "/", checkpoint::ServerPartName(options_.rank));
  const int rank = options_.rank;
  writer_.Submit([this, snap, dir, path, rank, step]() -> absl::Status {
    const absl::Time t0 = absl::Now();
    PSTRAIN_RETURN_IF_ERROR(checkpoint::MakeDirs(dir));
    absl::Status written =
        checkpoint::WriteNDArrayListFile(path, SnapshotToArrays(*snap));
    {
      MutexLock lock(&mu_);
      spare_ = snap;  // For the next Save.
    }
    PSTRAIN_RETURN_IF_ERROR(written);
    LOG(INFO) << "server rank " << rank << ": checkpoint of step " << step
              << " written to " << path << " in "
              << absl::ToDoubleSeconds(absl::Now() - t0) << " s";
    return absl::OkStatus();
  });
  return absl::OkStatus();
}

absl::Status ServerCheckpointer::MaybeRestore(Shard* shard) {
  if (options_.resume_from.empty() || restored_) return absl::OkStatus();
  const std::string name = checkpoint::ServerPartName(options_.rank);
  const std::string path = absl::StrCat(options_.resume_from, "/", name);
  PSTRAIN_ASSIGN_OR_RETURN(std::string bytes, checkpoint::ReadVerifiedPart(
                                                  options_.resume_from, name));
  PSTRAIN_ASSIGN_OR_RETURN(std::vector<checkpoint::NDArray> arrays,
                           checkpoint::ParseNDArrayList(bytes, path));
  PSTRAIN_ASSIGN_OR_RETURN(ShardSnapshot snap,
                           SnapshotFromArrays(arrays, path));
  absl::Status s = shard->Restore(snap);
  if (!s.ok()) return Annotate(s, path);
  restored_ = true;
  LOG(INFO) << "server rank " << options_.rank << ": restored "
            << snap.slices.size() << " slices and the optimizer state (update "
            << snap.optimizer.num_update << ") from " << path;
  return absl::OkStatus();
}

}  // namespace server
}  // namespace pstrain
