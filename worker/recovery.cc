#include "worker/recovery.h"

#include <signal.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <map>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "checkpoint/ndarray_list.h"
#include "glog/logging.h"
#include "util/file.h"
#include "util/status.h"

namespace pstrain {
namespace worker {
namespace {

// The slot of KVStore::AllReduceSum that agrees on time-based checkpoints
// (validation uses -1).
constexpr int64_t kAgreeSlot = -15;

checkpoint::NDArray BytesArray(std::string name, checkpoint::DType dtype,
                               std::vector<int64_t> shape, std::string data) {
  checkpoint::NDArray a;
  a.name = std::move(name);
  a.dtype = dtype;
  a.shape = std::move(shape);
  a.data = std::move(data);
  return a;
}

// Every parameter of `net` (aux states only with `aux_only`) as arrays
// named PREFIX + "arg:"/"aux:" + name. With `keys`, a learned parameter
// that is a key (key_of[param]) gets no data, only its shape, and its key
// in `keys` (-1 for the others): the servers' parts hold its values.
void AppendParams(nn::Network* net, const std::string& prefix, bool aux_only,
                  const std::map<const nn::Param*, int64_t>* key_of,
                  std::vector<checkpoint::NDArray>* out,
                  std::vector<int64_t>* keys = nullptr) {
  for (nn::Param* p : net->params()) {
    if (aux_only && !p->aux) continue;
    const std::string name =
        absl::StrCat(prefix, p->aux ? "aux:" : "arg:", p->name);
    if (key_of != nullptr) {
      auto it = key_of->find(p);
      if (it != key_of->end()) {
        out->push_back(BytesArray(name, checkpoint::DType::kFloat32,
                                  p->value.shape(), ""));
        keys->push_back(it->second);
        continue;
      }
    }
    // One copy, straight into the array's bytes.
    out->push_back(
        BytesArray(name, checkpoint::DType::kFloat32, p->value.shape(),
                   std::string(reinterpret_cast<const char*>(p->value.data()),
                               p->value.size() * sizeof(float))));
    if (keys != nullptr) keys->push_back(-1);
  }
}

std::string ParamsName(const std::string& prefix, int64_t step,
                       const char* ext) {
  return absl::StrFormat("%s-%04d.%s", prefix, step, ext);
}

// Reads every server part once: fills the learned arrays of `params`
// (keys[i] >= 0: key keys[i]'s values, from its slices "weight:KEY:OFFSET")
// and returns the optimizer arrays for PREFIX-NNNN.states (all but the
// weights, each name prefixed "server:RANK:"). DataLoss when the slices do
// not cover a key exactly.
absl::StatusOr<std::vector<checkpoint::NDArray>> GatherServerParts(
    const std::string& dir, int servers, const std::vector<int64_t>& keys,
    std::vector<checkpoint::NDArray>* params) {
  std::map<int64_t, checkpoint::NDArray*> by_key;
  std::map<int64_t, int64_t> filled;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (keys[i] < 0) continue;
    checkpoint::NDArray& a = (*params)[i];
    a.data.assign(a.num_elements() * sizeof(float), '\0');
    by_key[keys[i]] = &a;
  }
  std::vector<checkpoint::NDArray> states;
  for (int s = 0; s < servers; ++s) {
    const std::string path =
        absl::StrCat(dir, "/", checkpoint::ServerPartName(s));
    PSTRAIN_ASSIGN_OR_RETURN(std::vector<checkpoint::NDArray> arrays,
                             checkpoint::ReadNDArrayListFile(path));
    for (auto& a : arrays) {
      int64_t key, offset;
      if (std::sscanf(a.name.c_str(), "weight:%" SCNd64 ":%" SCNd64, &key,
                      &offset) != 2) {
        a.name = absl::StrCat("server:", s, ":", a.name);
        states.push_back(std::move(a));
        continue;
      }
      auto it = by_key.find(key);
      if (it == by_key.end()) continue;  // A key not in this network's list.
      checkpoint::NDArray& dst = *it->second;
      if (a.dtype != checkpoint::DType::kFloat32 || offset < 0 ||
          static_cast<size_t>(offset) * sizeof(float) + a.data.size() >
              dst.data.size()) {
        return absl::DataLossError(absl::StrCat(path, ": slice \"", a.name,
                                                "\" does not fit ", dst.name));
      }
      std::memcpy(&dst.data[offset * sizeof(float)], a.data.data(),
                  a.data.size());
      filled[key] += static_cast<int64_t>(a.data.size() / sizeof(float));
    }
  }
  for (const auto& [key, a] : by_key) {
    if (filled[key] != a->num_elements()) {
      return absl::DataLossError(
          absl::StrCat(dir, ": the servers' parts hold ", filled[key],
                       " of the ", a->num_elements(), " values of ", a->name));
    }
  }
  return states;
}

}  // namespace

absl::StatusOr<ResumePoint> ResumeWorker(const std::string& dir, int rank,
                                         Replicas* reps, std::mt19937* rng) {
  const std::string name = checkpoint::WorkerPartName(rank);
  const std::string path = absl::StrCat(dir, "/", name);
  PSTRAIN_ASSIGN_OR_RETURN(std::string bytes,
                           checkpoint::ReadVerifiedPart(dir, name));
  PSTRAIN_ASSIGN_OR_RETURN(std::vector<checkpoint::NDArray> arrays,
                           checkpoint::ParseNDArrayList(bytes, path));
  std::map<std::string, const checkpoint::NDArray*> by_name;
  for (const auto& a : arrays) by_name[a.name] = &a;
  auto missing = [&](const std::string& what) {
    return absl::DataLossError(
        absl::StrCat(path, ": no array \"", what, "\" fitting this worker"));
  };
  ResumePoint p;
  auto pos = by_name.find("position");
  if (pos == by_name.end() || pos->second->dtype != checkpoint::DType::kInt64 ||
      pos->second->data.size() != 3 * sizeof(int64_t)) {
    return missing("position");
  }
  int64_t v[3];
  std::memcpy(v, pos->second->data.data(), sizeof(v));
  p.step = v[0];
  p.epoch = static_cast<int>(v[1]);
  p.batch = v[2];
  if (p.step < 0 || p.epoch < 0 || p.batch < 0) return missing("position");
  auto r = by_name.find("rng");
  if (r == by_name.end()) return missing("rng");
  std::istringstream in(r->second->data);
  in >> *rng;
  if (!in) return missing("rng");
  for (int d = 0; d < reps->size(); ++d) {
    for (nn::Param* param : reps->net(d)->params()) {
      if (!param->aux) continue;
      const std::string aname = absl::StrCat("dev:", d, ":aux:", param->name);
      auto it = by_name.find(aname);
      if (it == by_name.end()) return missing(aname);
      auto values = it->second->ToFloats();
      if (!values.ok() ||
          values->size() != static_cast<size_t>(param->value.size())) {
        return missing(aname);
      }
      std::copy(values->begin(), values->end(), param->value.data());
    }
  }
  return p;
}

Checkpointer::Checkpointer(const RecoveryOptions& options, kvstore::KVStore* kv)
    : options_(options), kv_(kv), rank_(kv->rank()) {
  if (enabled()) writer_ = std::make_unique<checkpoint::BackgroundWriter>();
}

Checkpointer::~Checkpointer() = default;

absl::StatusOr<bool> Checkpointer::Due(int64_t step) {
  if (!enabled()) return false;
  if (options_.period_batches > 0 && step % options_.period_batches == 0) {
    return true;
  }
  if (options_.period_s <= 0) return false;
  const bool mine =
      absl::ToDoubleSeconds(absl::Now() - last_) >= options_.period_s;
  if (kv_->type() != "dist_sync" && kv_->type() != "dist_device_sync") {
    return mine;
  }
  // Worker 0's clock decides for everyone.
  const float vote = rank_ == 0 && mine ? 1.0f : 0.0f;
  float sum = 0;
  PSTRAIN_RETURN_IF_ERROR(kv_->AllReduceSum(
      kAgreeSlot, absl::MakeConstSpan(&vote, 1), absl::MakeSpan(&sum, 1),
      absl::Now() + absl::Minutes(10)));
  return sum > 0;
}

absl::Status Checkpointer::Save(const ResumePoint& next,
                                const std::mt19937& rng, Replicas* reps,
                                const std::vector<nn::Param*>& learned) {
  CHECK(enabled());
  const absl::Time t0 = absl::Now();
  last_ = t0;
  const int64_t step = next.step;
  const std::string dir = checkpoint::StepDir(options_.checkpoint_dir, step);
  // The copies: this worker's part, and rank 0's MXNet files.
  std::vector<checkpoint::NDArray> part;
  const int64_t pos[3] = {step, next.epoch, next.batch};
  part.push_back(
      BytesArray("position", checkpoint::DType::kInt64, {3},
                 std::string(reinterpret_cast<const char*>(pos), sizeof(pos))));
  std::ostringstream rs;
  rs << rng;
  const std::string rng_text = rs.str();
  part.push_back(BytesArray("rng", checkpoint::DType::kUint8,
                            {static_cast<int64_t>(rng_text.size())}, rng_text));
  for (int d = 0; d < reps->size(); ++d) {
    AppendParams(reps->net(d), absl::StrCat("dev:", d, ":"), true, nullptr,
                 &part);
  }
  // Rank 0's .params: the learned keys' values come from the servers'
  // parts in the background (they equal this worker's after WaitAll), so
  // only the other parameters (auxiliary, fixed) are copied now.
  auto params = std::make_shared<std::vector<checkpoint::NDArray>>();
  std::vector<int64_t> keys;
  std::string symbol;
  if (rank_ == 0) {
    std::map<const nn::Param*, int64_t> key_of;
    for (size_t k = 0; k < learned.size(); ++k) key_of[learned[k]] = k;
    AppendParams(reps->net(0), "", false,
                 kv_->num_servers() > 0 ? &key_of : nullptr, params.get(),
                 &keys);
    symbol = reps->net(0)->SymbolJson();
  }
  const absl::Time copied = absl::Now();
  if (rank_ == 0) {
    // The servers copy their slices and optimizer state.
    PSTRAIN_RETURN_IF_ERROR(
        Annotate(kv_->Checkpoint(step, absl::Now() + absl::Minutes(10)),
                 absl::StrCat("checkpoint of step ", step)));
  }
  const double pause_ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
  LOG(INFO) << "worker " << rank_ << ": checkpoint of step " << step
            << ": training paused " << absl::StrFormat("%.1f", pause_ms)
            << " ms to copy the state ("
            << absl::StrFormat("%.1f", absl::ToDoubleMilliseconds(copied - t0))
            << " ms this worker's copy, the rest the servers'); writing " << dir
            << " in the background";
  auto part_ptr =
      std::make_shared<std::vector<checkpoint::NDArray>>(std::move(part));
  const int rank = rank_;
  writer_->Submit([dir, rank, part_ptr]() {
    PSTRAIN_RETURN_IF_ERROR(checkpoint::MakeDirs(dir));
    return checkpoint::WriteNDArrayListFile(
        absl::StrCat(dir, "/", checkpoint::WorkerPartName(rank)), *part_ptr);
  });
  if (rank_ != 0) return absl::OkStatus();
  const std::string prefix = options_.prefix;
  const int workers = kv_->num_workers(), servers = kv_->num_servers();
  const int keep = options_.keep;
  const kvstore::Placement placement = options_.placement;
  const std::string root = options_.checkpoint_dir;
  const std::atomic<bool>* cancel = writer_->cancelled();
  writer_->Submit([=]() -> absl::Status {
    const absl::Time w0 = absl::Now();
    const std::string symbol_name = prefix + "-symbol.json";
    const std::string params_name = ParamsName(prefix, step, "params");
    const std::string states_name = ParamsName(prefix, step, "states");
    PSTRAIN_RETURN_IF_ERROR(
        WriteFileAtomically(absl::StrCat(dir, "/", symbol_name), symbol));
    std::vector<std::string> parts;
    for (int s = 0; s < servers; ++s) {
      parts.push_back(checkpoint::ServerPartName(s));
    }
    for (int w = 0; w < workers; ++w) {
      parts.push_back(checkpoint::WorkerPartName(w));
    }
    PSTRAIN_RETURN_IF_ERROR(checkpoint::WaitForParts(
        dir, parts, absl::Now() + absl::Minutes(10), cancel));
    PSTRAIN_ASSIGN_OR_RETURN(
        std::vector<checkpoint::NDArray> states,
        GatherServerParts(dir, servers, keys, params.get()));
    PSTRAIN_RETURN_IF_ERROR(checkpoint::WriteNDArrayListFile(
        absl::StrCat(dir, "/", params_name), *params));
    PSTRAIN_RETURN_IF_ERROR(checkpoint::WriteNDArrayListFile(
        absl::StrCat(dir, "/", states_name), states));
    parts.push_back(symbol_name);
    parts.push_back(params_name);
    parts.push_back(states_name);
    checkpoint::Manifest m;
    m.step = step;
    m.epoch = next.epoch;
    m.batch = next.batch;
    m.partition = kvstore::PlacementName(placement);
    PSTRAIN_RETURN_IF_ERROR(checkpoint::WriteManifest(dir, m, parts));
    LOG(INFO) << "worker 0: checkpoint of step " << step << " complete: " << dir
              << " (" << parts.size() << " parts, "
              << absl::StrFormat("%.2f",
                                 absl::ToDoubleSeconds(absl::Now() - w0))
              << " s in the background)";
    if (keep > 0) return checkpoint::PruneCheckpoints(root, keep);
    return absl::OkStatus();
  });
  return absl::OkStatus();
}

absl::Status Checkpointer::AfterStep(const ResumePoint& next,
                                     const std::mt19937& rng,
                                     GradientSync* sync, Replicas* reps) {
  PSTRAIN_ASSIGN_OR_RETURN(bool due, Due(next.step));
  if (!due) return absl::OkStatus();
  return AtEpochEnd(next, rng, sync, reps);
}

absl::Status Checkpointer::AtEpochEnd(const ResumePoint& next,
                                      const std::mt19937& rng,
                                      GradientSync* sync, Replicas* reps) {
  if (!enabled()) return absl::OkStatus();
  PSTRAIN_RETURN_IF_ERROR(sync->WaitAll());
  return Save(next, rng, reps, sync->learned());
}

absl::Status Checkpointer::Finish(absl::Time deadline) {
  if (!enabled()) return absl::OkStatus();
  return writer_->Flush(deadline);
}

void Checkpointer::MaybeDieForTest(int64_t step) const {
  if (options_.test_die_at_step > 0 && step == options_.test_die_at_step &&
      rank_ == options_.test_die_rank && options_.resume_from.empty() &&
      options_.replace_rank < 0) {
    LOG(WARNING) << "worker " << rank_ << ": --test_die_at_step " << step
                 << ": killing myself (SIGKILL)";
    raise(SIGKILL);
  }
}

}  // namespace worker
}  // namespace pstrain
