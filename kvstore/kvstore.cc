#include "kvstore/kvstore.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "glog/logging.h"
#include "nn/optimizer.h"
#include "util/status.h"
#include "util/wait.h"

namespace pstrain {
namespace kvstore {
namespace {

using transport::Frame;
using transport::Message;

absl::Status CheckDevices(const std::vector<absl::Span<const float>>& values, size_t want) {
  if (values.empty()) return absl::InvalidArgumentError("push needs at least one device value");
  for (const auto& v : values) {
    if (v.size() != want) {
      return absl::InvalidArgumentError(
          absl::StrCat("device value of ", v.size(), " floats for a key of ", want));
    }
  }
  return absl::OkStatus();
}

// Sums the devices' values (in device order) into a new buffer, or shares
// the single device's memory.
std::pair<const float*, std::shared_ptr<const void>> Sum(
    const std::vector<absl::Span<const float>>& values) {
  if (values.size() == 1) return {values[0].data(), nullptr};
  auto buf = std::make_shared<std::vector<float>>(values[0].begin(), values[0].end());
  for (size_t d = 1; d < values.size(); ++d) {
    for (size_t i = 0; i < buf->size(); ++i) (*buf)[i] += values[d][i];
  }
  return {buf->data(), buf};
}

// ------------------------------------------------------------------ local

class LocalKVStore : public KVStore {
 public:
  explicit LocalKVStore(std::string type) : type_(std::move(type)) {}
  const std::string& type() const override { return type_; }
  int rank() const override { return 0; }
  int num_workers() const override { return 1; }

  absl::Status Init(const std::vector<int64_t>& keys,
                    const std::vector<absl::Span<const float>>& values, absl::Time) override {
    if (keys.size() != values.size()) return absl::InvalidArgumentError("keys/values mismatch");
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < keys.size(); ++i) {
      store_[keys[i]].assign(values[i].begin(), values[i].end());
    }
    return absl::OkStatus();
  }
  absl::Status SetOptimizer(const proto::OptimizerConfig& config, absl::Time) override {
    PSTRAIN_ASSIGN_OR_RETURN(auto opt, nn::Optimizer::Create(config));
    std::lock_guard<std::mutex> lock(mu_);
    optimizer_ = std::move(opt);
    return absl::OkStatus();
  }
  absl::StatusOr<Handle> Push(int64_t key, const std::vector<absl::Span<const float>>& values,
                              int) override {
    std::lock_guard<std::mutex> lock(mu_);
    return Done(PushLocked(key, values));
  }
  absl::StatusOr<Handle> Pull(int64_t key, absl::Span<float> out, int) override {
    std::lock_guard<std::mutex> lock(mu_);
    return Done(PullLocked(key, out));
  }
  absl::StatusOr<Handle> PushPull(int64_t key, const std::vector<absl::Span<const float>>& values,
                                  absl::Span<float> out, int) override {
    std::lock_guard<std::mutex> lock(mu_);
    absl::Status s = PushLocked(key, values);
    if (s.ok()) s = PullLocked(key, out);
    return Done(s);
  }
  absl::Status Wait(Handle h, absl::Time) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = results_.find(h);
    if (it == results_.end()) return absl::NotFoundError(absl::StrCat("no operation ", h));
    absl::Status s = it->second;
    results_.erase(it);
    return s;
  }
  absl::Status WaitAll(absl::Time) override {
    std::lock_guard<std::mutex> lock(mu_);
    absl::Status first;
    for (const auto& [h, s] : results_) {
      if (first.ok()) first = s;
    }
    results_.clear();
    return first;
  }
  absl::Status Barrier(absl::Time) override { return absl::OkStatus(); }
  absl::Status Finish() override { return absl::OkStatus(); }
  absl::Status AllReduceSum(int64_t, absl::Span<const float> values, absl::Span<float> out,
                            absl::Time) override {
    if (values.size() != out.size()) return absl::InvalidArgumentError("AllReduceSum sizes");
    std::copy(values.begin(), values.end(), out.begin());
    return absl::OkStatus();
  }

 private:
  Handle Done(absl::Status s) {
    results_[next_] = s;
    return next_++;
  }
  absl::Status PushLocked(int64_t key, const std::vector<absl::Span<const float>>& values) {
    auto it = store_.find(key);
    if (it == store_.end()) return absl::NotFoundError(absl::StrCat("key ", key, " not initialized"));
    PSTRAIN_RETURN_IF_ERROR(CheckDevices(values, it->second.size()));
    auto [sum, keep] = Sum(values);
    absl::Span<const float> g(sum, it->second.size());
    if (optimizer_) {
      optimizer_->Update(key, 0, absl::MakeSpan(it->second), g);
    } else {
      std::copy(g.begin(), g.end(), it->second.begin());
    }
    return absl::OkStatus();
  }
  absl::Status PullLocked(int64_t key, absl::Span<float> out) {
    auto it = store_.find(key);
    if (it == store_.end()) return absl::NotFoundError(absl::StrCat("key ", key, " not initialized"));
    if (out.size() != it->second.size()) {
      return absl::InvalidArgumentError(absl::StrCat("pull of key ", key, " into ", out.size(),
                                                     " floats; it holds ", it->second.size()));
    }
    std::copy(it->second.begin(), it->second.end(), out.begin());
    return absl::OkStatus();
  }

  const std::string type_;
  std::mutex mu_;
  std::map<int64_t, std::vector<float>> store_;
  std::unique_ptr<nn::Optimizer> optimizer_;
  std::map<Handle, absl::Status> results_;
  Handle next_ = 1;
};

// ------------------------------------------------------------------ dist

class DistKVStore : public KVStore {
 public:
  DistKVStore(std::string type, const KVStoreOptions& o, std::unique_ptr<transport::ClusterNode> node)
      : type_(std::move(type)),
        options_(o),
        node_(std::move(node)),
        sync_(type_ != "dist_async"),
        load_(node_->num_servers(), 0) {
    receiver_ = std::thread([this] { Receive(); });
  }
  ~DistKVStore() override {
    stop_ = true;
    receiver_.join();
  }

  const std::string& type() const override { return type_; }
  int rank() const override { return node_->rank(); }
  int num_workers() const override { return node_->num_workers(); }

  absl::Status Init(const std::vector<int64_t>& keys,
                    const std::vector<absl::Span<const float>>& values,
                    absl::Time deadline) override {
    if (keys.size() != values.size()) return absl::InvalidArgumentError("keys/values mismatch");
    std::map<int, Message> per_server;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (size_t i = 0; i < keys.size(); ++i) {
        if (plans_.count(keys[i])) {
          return absl::AlreadyExistsError(absl::StrCat("key ", keys[i], " initialized twice"));
        }
        auto plan = PlanKey(keys[i], static_cast<int64_t>(values[i].size()), node_->num_servers(),
                            options_.bigarray_bound, &load_);
        for (const auto& s : plan) {
          Message& m = per_server[s.server];
          m.header.add_keys(s.key);
          m.header.add_offsets(s.offset);
          m.header.add_lengths(s.length);
          m.header.add_total_lengths(static_cast<int64_t>(values[i].size()));
          m.frames.push_back(Frame::Copy(values[i].data() + s.offset, s.length * sizeof(float)));
        }
        plans_[keys[i]] = std::move(plan);
      }
    }
    if (rank() == 0) {
      std::vector<std::pair<int, Message>> batch;
      for (auto& [server, m] : per_server) {
        m.header.set_type(proto::INIT);
        m.header.set_sync_mode(sync_);
        batch.emplace_back(node_->ServerId(server), std::move(m));
      }
      PSTRAIN_ASSIGN_OR_RETURN(Handle h, Submit(std::move(batch), absl::Span<float>(), -1));
      PSTRAIN_RETURN_IF_ERROR(Wait(h, deadline));
    }
    return Barrier(deadline);
  }

  absl::Status SetOptimizer(const proto::OptimizerConfig& config, absl::Time deadline) override {
    PSTRAIN_RETURN_IF_ERROR(nn::Optimizer::Create(config).status());
    if (rank() == 0) {
      std::vector<std::pair<int, Message>> batch;
      for (int s = 0; s < node_->num_servers(); ++s) {
        Message m;
        m.header.set_type(proto::SET_OPTIMIZER);
        *m.header.mutable_optimizer() = config;
        batch.emplace_back(node_->ServerId(s), std::move(m));
      }
      PSTRAIN_ASSIGN_OR_RETURN(Handle h, Submit(std::move(batch), absl::Span<float>(), -1));
      PSTRAIN_RETURN_IF_ERROR(Wait(h, deadline));
    }
    return Barrier(deadline);
  }

  absl::StatusOr<Handle> Push(int64_t key, const std::vector<absl::Span<const float>>& values,
                              int priority) override {
    return SendKey(proto::PUSH, key, values, absl::Span<float>(), priority);
  }
  absl::StatusOr<Handle> Pull(int64_t key, absl::Span<float> out, int priority) override {
    return SendKey(proto::PULL, key, {}, out, priority);
  }
  absl::StatusOr<Handle> PushPull(int64_t key, const std::vector<absl::Span<const float>>& values,
                                  absl::Span<float> out, int priority) override {
    return SendKey(proto::PUSH_PULL, key, values, out, priority);
  }

  absl::Status Wait(Handle h, absl::Time deadline) override {
    std::unique_lock<std::mutex> lock(mu_);
    auto it = ops_.find(h);
    if (it == ops_.end()) return absl::NotFoundError(absl::StrCat("no operation ", h));
    const bool done = WaitUntil(cv_, lock, deadline, [&] { return it->second.outstanding == 0; });
    if (!done) {
      return absl::DeadlineExceededError(absl::StrCat("operation ", h, " on key ", it->second.key,
                                                      " not complete in time"));
    }
    absl::Status s = it->second.status;
    ops_.erase(it);
    return s;
  }

  absl::Status WaitAll(absl::Time deadline) override {
    std::vector<Handle> handles;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [h, op] : ops_) handles.push_back(h);
    }
    absl::Status first;
    for (Handle h : handles) {
      absl::Status s = Wait(h, deadline);
      if (first.ok() && !s.ok()) first = s;
    }
    return first;
  }

  absl::Status Barrier(absl::Time deadline) override {
    return node_->Barrier("workers", absl::StrCat("kv", barrier_count_++), deadline);
  }

  absl::Status Finish() override { return node_->Finish(); }

  absl::Status AllReduceSum(int64_t slot, absl::Span<const float> values, absl::Span<float> out,
                            absl::Time deadline) override {
    if (slot >= 0) return absl::InvalidArgumentError("AllReduceSum slots are negative keys");
    if (values.size() != out.size()) return absl::InvalidArgumentError("AllReduceSum sizes");
    if (!sync_) {  // dist_async has no rounds to sum over.
      std::copy(values.begin(), values.end(), out.begin());
      return absl::OkStatus();
    }
    bool known;
    {
      std::lock_guard<std::mutex> lock(mu_);
      known = plans_.count(slot) > 0;
    }
    if (!known) {
      std::vector<float> zeros(values.size(), 0.0f);
      PSTRAIN_RETURN_IF_ERROR(Init({slot}, {zeros}, deadline));
    }
    PSTRAIN_ASSIGN_OR_RETURN(Handle h, PushPull(slot, {values}, out, 1 << 19));
    return Wait(h, deadline);
  }

 private:
  struct Op {
    int64_t key = 0;
    int outstanding = 0;
    absl::Status status;
    absl::Span<float> out;
  };

  absl::StatusOr<Handle> SendKey(proto::MessageType type, int64_t key,
                                 const std::vector<absl::Span<const float>>& values,
                                 absl::Span<float> out, int priority) {
    std::vector<SliceSpec> plan;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = plans_.find(key);
      if (it == plans_.end()) {
        return absl::NotFoundError(absl::StrCat("key ", key, " was not initialized"));
      }
      plan = it->second;
    }
    int64_t total = 0;
    for (const auto& s : plan) total += s.length;
    if (type != proto::PULL) PSTRAIN_RETURN_IF_ERROR(CheckDevices(values, total));
    if (type != proto::PUSH && static_cast<int64_t>(out.size()) != total) {
      return absl::InvalidArgumentError(absl::StrCat("pull of key ", key, " into ", out.size(),
                                                     " floats; it holds ", total));
    }
    const float* data = nullptr;
    std::shared_ptr<const void> keep;
    if (type != proto::PULL) std::tie(data, keep) = Sum(values);
    std::map<int, Message> per_server;
    for (const auto& s : plan) {
      Message& m = per_server[s.server];
      m.header.set_type(type);
      m.header.set_priority(priority);
      m.header.add_keys(s.key);
      m.header.add_offsets(s.offset);
      m.header.add_lengths(s.length);
      if (type != proto::PULL) {
        // Zero-copy: the caller keeps a single device's buffer valid until
        // Wait() (the ack comes after the server has the bytes); a
        // multi-device sum is kept alive by `keep`.
        m.frames.push_back(Frame::Borrow(
            data + s.offset, s.length * sizeof(float),
            keep ? keep : std::shared_ptr<const void>(data, [](const void*) {})));
      }
    }
    std::vector<std::pair<int, Message>> batch;
    for (auto& [server, m] : per_server) batch.emplace_back(node_->ServerId(server), std::move(m));
    return Submit(std::move(batch), out, key);
  }

  absl::StatusOr<Handle> Submit(std::vector<std::pair<int, Message>> batch, absl::Span<float> out,
                                int64_t key) {
    Handle h;
    {
      std::lock_guard<std::mutex> lock(mu_);
      h = next_handle_++;
      Op& op = ops_[h];
      op.key = key;
      op.outstanding = static_cast<int>(batch.size());
      op.out = out;
      if (!dead_.ok()) {
        op.status = dead_;
        op.outstanding = 0;
        return h;
      }
      for (auto& [id, m] : batch) {
        const uint64_t rid = next_request_++;
        m.header.set_request_id(rid);
        requests_[rid] = h;
      }
    }
    absl::Status s = node_->SendBatch(std::move(batch));
    if (!s.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      ops_[h].status = s;
      ops_[h].outstanding = 0;
    }
    return h;
  }

  void Receive() {
    while (!stop_) {
      auto msg = node_->ReceiveData(absl::Now() + absl::Milliseconds(100));
      if (!msg.ok()) {
        if (msg.status().code() == absl::StatusCode::kDeadlineExceeded) continue;
        // The job is over (aborted or shut down): fail what is pending.
        std::lock_guard<std::mutex> lock(mu_);
        dead_ = msg.status();
        for (auto& [h, op] : ops_) {
          if (op.outstanding > 0) {
            op.status = msg.status();
            op.outstanding = 0;
          }
        }
        cv_.notify_all();
        return;
      }
      const proto::Header& hd = msg->header;
      if (hd.type() != proto::RESPONSE) continue;
      std::lock_guard<std::mutex> lock(mu_);
      auto rit = requests_.find(hd.request_id());
      if (rit == requests_.end()) continue;
      auto oit = ops_.find(rit->second);
      requests_.erase(rit);
      if (oit == ops_.end()) continue;
      Op& op = oit->second;
      if (!hd.error().empty()) {
        if (op.status.ok()) {
          op.status = absl::FailedPreconditionError(
              absl::StrCat("server node ", hd.sender(), " refused: ", hd.error()));
        }
      } else {
        for (size_t i = 0; i < msg->frames.size(); ++i) {
          const int64_t off = hd.offsets(static_cast<int>(i));
          auto v = msg->frames[i].As<float>();
          if (off < 0 || off + static_cast<int64_t>(v.size()) > static_cast<int64_t>(op.out.size())) {
            if (op.status.ok()) op.status = absl::DataLossError("response slice outside the key");
            continue;
          }
          std::memcpy(op.out.data() + off, v.data(), v.size() * sizeof(float));
        }
      }
      if (--op.outstanding == 0) cv_.notify_all();
    }
  }

  const std::string type_;
  const KVStoreOptions options_;
  std::unique_ptr<transport::ClusterNode> node_;
  const bool sync_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int64_t> load_;                        // Guarded by mu_.
  std::map<int64_t, std::vector<SliceSpec>> plans_;  // Guarded by mu_.
  std::map<Handle, Op> ops_;                         // Guarded by mu_.
  std::map<uint64_t, Handle> requests_;              // Guarded by mu_.
  absl::Status dead_;                                // Guarded by mu_.
  Handle next_handle_ = 1;
  uint64_t next_request_ = 1;
  int64_t barrier_count_ = 0;
  std::atomic<bool> stop_{false};
  std::thread receiver_;
};

}  // namespace

std::vector<SliceSpec> PlanKey(int64_t key, int64_t length, int num_servers,
                               int64_t bigarray_bound, std::vector<int64_t>* load) {
  std::vector<SliceSpec> out;
  if (length > bigarray_bound && num_servers > 1) {
    int64_t offset = 0;
    for (int s = 0; s < num_servers; ++s) {
      const int64_t len = length / num_servers + (s < length % num_servers ? 1 : 0);
      out.push_back({key, s, offset, len});
      (*load)[s] += len;
      offset += len;
    }
    return out;
  }
  const int s = static_cast<int>(std::min_element(load->begin(), load->end()) - load->begin());
  (*load)[s] += length;
  out.push_back({key, s, 0, length});
  return out;
}

absl::StatusOr<std::unique_ptr<KVStore>> KVStore::Create(const std::string& type,
                                                         const KVStoreOptions& options) {
  if (type == "local" || type == "device") return std::unique_ptr<KVStore>(new LocalKVStore(type));
  if (type == "dist_sync" || type == "dist_async" || type == "dist_device_sync") {
    transport::ClusterOptions c = options.cluster;
    c.role = proto::WORKER;
    PSTRAIN_ASSIGN_OR_RETURN(auto node, transport::ClusterNode::Start(c));
    return std::unique_ptr<KVStore>(new DistKVStore(type, options, std::move(node)));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--kv_store '", type, "': use local, device, dist_sync, dist_async or dist_device_sync"));
}

}  // namespace kvstore
}  // namespace pstrain
