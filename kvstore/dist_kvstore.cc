#include "kvstore/dist_kvstore.h"

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <set>
#include <thread>
#include <tuple>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "compression/compression.h"
#include "glog/logging.h"
#include "kvstore/kvstore_internal.h"
#include "kvstore/partition.h"
#include "kvstore/send_queue.h"
#include "nn/optimizer.h"
#include "util/escape.h"
#include "util/mutex.h"
#include "util/status.h"

namespace pstrain {
namespace kvstore {
namespace {

// How long Wait() polls for a reply before sleeping, for operations of at
// most kSpinMaxBytes (request and reply payloads together). A bigger one
// takes longer than the spin on any link, and polling would only take the
// core from the threads moving its bytes (1 MiB pulls between two test-bed
// hosts: 0.84-0.85 x raw TCP's 1 MiB round trips with the spin, 1.11-1.18 x
// without).
constexpr int kSpinMicros = 150;
constexpr int64_t kSpinMaxBytes = 64 << 10;

using internal::CheckDevices;
using internal::Sum;
using transport::Frame;
using transport::Message;

class DistKVStore : public KVStore {
 public:
  DistKVStore(std::string type, const KVStoreOptions& o,
              std::unique_ptr<cluster::ClusterNode> node)
      : type_(std::move(type)),
        options_(o),
        node_(std::move(node)),
        sync_(type_ != "dist_async"),
        max_chunk_elements_(std::max<int64_t>(
            1, (o.slice_bytes > 0 ? std::min(o.slice_bytes, o.max_message_bytes)
                                  : o.max_message_bytes) /
                   static_cast<int64_t>(sizeof(float)))),
        scheduled_(o.send_credit_bytes > 0),
        timeline_(node_->timeline()),
        push_track_(timeline_->Track("push")),
        pull_track_(timeline_->Track("pull")),
        codec_(o.compression),
        replacement_(o.cluster.replace_rank >= 0),
        catch_up_barriers_(node_->barriers_released()),
        load_(node_->num_servers(), 0),
        outstanding_(node_->num_servers()) {
    // A replacement's request ids start far from its predecessor's, so
    // that a late acknowledgement meant for the dead worker matches none.
    if (replacement_) next_request_ = uint64_t{1} << 40;
    for (int s = 0; s < node_->num_servers(); ++s)
      queues_.emplace_back(o.send_credit_bytes);
    // Responses are handled on the transport's I/O thread: one thread hop
    // less per request.
    node_->SetDataHandler([this](Message m) { OnResponse(std::move(m)); });
    watcher_ = std::thread([this] { Watch(); });
  }
  ~DistKVStore() override {
    node_->SetDataHandler(nullptr);
    stop_ = true;
    watcher_.join();
    // No reply may be read into a caller's buffer any more.
    MutexLock lock(&mu_);
    for (const auto& [rid, p] : requests_) node_->transport().CancelReply(rid);
  }

  const std::string& type() const override { return type_; }
  int rank() const override { return node_->rank(); }
  int num_workers() const override { return node_->num_workers(); }
  int num_servers() const override { return node_->num_servers(); }
  transport::TransportStats transport_stats() const override {
    return node_->transport().stats();
  }
  void SetNodeStats(const proto::NodeStats& stats) override {
    node_->SetHeartbeatStats(stats);
  }
  timeline::Recorder* timeline() const override { return timeline_; }
  int64_t replacement_round() const override {
    MutexLock lock(&mu_);
    return replacement_round_;
  }

  absl::Status Init(const std::vector<int64_t>& keys,
                    const std::vector<absl::Span<const float>>& values,
                    absl::Time deadline) override {
    if (keys.size() != values.size())
      return absl::InvalidArgumentError("keys/values mismatch");
    std::map<int, Message> per_server;
    // A replacement's keys that the servers held before it came (their
    // barrier is one its predecessor passed): their rounds are unknown.
    const bool known_before =
        replacement_ && barrier_count_.load() < catch_up_barriers_;
    {
      MutexLock lock(&mu_);
      std::set<int64_t> seen;
      std::vector<int64_t> lengths;
      for (size_t i = 0; i < keys.size(); ++i) {
        if (plans_.count(keys[i]) || !seen.insert(keys[i]).second) {
          return absl::AlreadyExistsError(
              absl::StrCat("key ", keys[i], " initialized twice"));
        }
        lengths.push_back(static_cast<int64_t>(values[i].size()));
      }
      std::vector<std::vector<SliceSpec>> plans =
          PlanKeys(keys, lengths, node_->num_servers(), options_.bigarray_bound,
                   &load_, options_.placement);
      for (size_t i = 0; i < keys.size(); ++i) {
        if (!sync_ || (known_before && replacement_round_ >= 0)) {
          no_identity_.insert(keys[i]);
        }
        auto plan = SplitIntoChunks(plans[i], max_chunk_elements_);
        for (const auto& s : plan) {
          Message& m = per_server[s.server];
          m.header.add_keys(s.key);
          m.header.add_offsets(s.offset);
          m.header.add_lengths(s.length);
          m.header.add_total_lengths(static_cast<int64_t>(values[i].size()));
          m.frames.push_back(Frame::Copy(values[i].data() + s.offset,
                                         s.length * sizeof(float)));
        }
        plans_[keys[i]] = std::move(plan);
      }
    }
    if (replacement_ && replacement_round() < 0) {
      // The servers hold the job's weights already: take them, and the
      // round they are at.
      PSTRAIN_RETURN_IF_ERROR(JoinAsReplacement(keys, deadline));
    } else if (rank() == 0 && !known_before) {
      std::vector<Request> batch;
      for (auto& [server, m] : per_server) {
        m.header.set_type(proto::INIT);
        m.header.set_sync_mode(sync_);
        if (codec_.enabled()) *m.header.mutable_compression() = codec_.config();
        batch.push_back({server, std::move(m)});
      }
      PSTRAIN_ASSIGN_OR_RETURN(Handle h, Submit(std::move(batch), {}, -1));
      PSTRAIN_RETURN_IF_ERROR(Wait(h, deadline));
    }
    return Barrier(deadline);
  }

  absl::Status SetOptimizer(const proto::OptimizerConfig& config,
                            absl::Time deadline) override {
    PSTRAIN_RETURN_IF_ERROR(nn::Optimizer::Create(config).status());
    // A replacement leaves the servers' optimizer (and its state) alone.
    if (rank() == 0 && !replacement_) {
      std::vector<Request> batch;
      for (int s = 0; s < node_->num_servers(); ++s) {
        Message m;
        m.header.set_type(proto::SET_OPTIMIZER);
        *m.header.mutable_optimizer() = config;
        batch.push_back({s, std::move(m)});
      }
      PSTRAIN_ASSIGN_OR_RETURN(Handle h, Submit(std::move(batch), {}, -1));
      PSTRAIN_RETURN_IF_ERROR(Wait(h, deadline));
    }
    return Barrier(deadline);
  }

  absl::Status Checkpoint(int64_t step, absl::Time deadline) override {
    if (rank() != 0) return absl::OkStatus();
    std::vector<Request> batch;
    for (int s = 0; s < node_->num_servers(); ++s) {
      Message m;
      m.header.set_type(proto::CHECKPOINT);
      m.header.set_checkpoint_step(step);
      batch.push_back({s, std::move(m)});
    }
    PSTRAIN_ASSIGN_OR_RETURN(Handle h, Submit(std::move(batch), {}, -1));
    return Wait(h, deadline);
  }

  absl::StatusOr<Handle> Push(
      int64_t key, const std::vector<absl::Span<const float>>& values,
      int priority) override {
    return SendKey(proto::PUSH, key, values, absl::Span<float>(), priority);
  }
  absl::StatusOr<Handle> Pull(int64_t key, absl::Span<float> out,
                              int priority) override {
    return SendKey(proto::PULL, key, {}, out, priority);
  }
  absl::StatusOr<Handle> PushPull(
      int64_t key, const std::vector<absl::Span<const float>>& values,
      absl::Span<float> out, int priority) override {
    return SendKey(proto::PUSH_PULL, key, values, out, priority);
  }
  absl::StatusOr<Handle> PushPullGroup(const std::vector<KeyPushPull>& group,
                                       int priority) override {
    return SendGroup(proto::PUSH_PULL, group, priority);
  }

  absl::Status Wait(Handle h, absl::Time deadline) override {
    MutexLock lock(&mu_);
    if (ops_.find(h) == ops_.end()) {
      return absl::NotFoundError(absl::StrCat("no operation ", h));
    }
    // The operation is looked up again after every unlock: another thread
    // waiting for the same handle may have taken it meanwhile.
    auto pending = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      auto it = ops_.find(h);
      return it != ops_.end() && it->second.outstanding != 0;
    };
    // A small request's reply comes back within about a hundred
    // microseconds: poll briefly (yielding the core), with the I/O thread
    // polling too, before sleeping on the condition variable; that saves
    // the wake-ups on the reply's path. The poll watches changes_, not
    // the operation: the I/O thread that finishes it takes mu_, and would
    // find it held by this loop and wait (two futex calls and a wake-up).
    if (pending() && ops_.find(h)->second.spin) {
      const transport::Transport& t = node_->transport();
      t.BeginBusyPoll();
      const absl::Time spin_end = absl::Now() + absl::Microseconds(kSpinMicros);
      while (pending() && absl::Now() < spin_end) {
        const uint64_t seen = changes_.load(std::memory_order_acquire);
        mu_.Unlock();
        do {
          std::this_thread::yield();
        } while (changes_.load(std::memory_order_acquire) == seen &&
                 absl::Now() < spin_end);
        mu_.Lock();
      }
      t.EndBusyPoll();
    }
    const bool done = cv_.WaitUntil(
        &mu_, deadline,
        [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !pending(); });
    auto it = ops_.find(h);
    if (it == ops_.end()) {
      return absl::NotFoundError(absl::StrCat(
          "operation ", h, " was waited for by another thread meanwhile"));
    }
    if (!done) {
      return absl::DeadlineExceededError(
          absl::StrCat("operation ", h, " on key ", it->second.key,
                       " not complete in time"));
    }
    absl::Status s = it->second.status;
    ops_.erase(it);
    return s;
  }

  bool Done(Handle h) const override {
    MutexLock lock(&mu_);
    auto it = ops_.find(h);
    return it == ops_.end() || it->second.outstanding == 0;
  }

  absl::Status WaitAll(absl::Time deadline) override {
    std::vector<Handle> handles;
    {
      MutexLock lock(&mu_);
      for (const auto& [h, op] : ops_) handles.push_back(h);
    }
    absl::Status first;
    for (Handle h : handles) {
      absl::Status s = Wait(h, deadline);
      if (first.ok() && !s.ok()) first = s;
    }
    return first;
  }

  // Barriers are named by their order on this worker ("kv0", "kv1", ...),
  // so every worker must pass the same number of them (Init and
  // SetOptimizer pass one each).
  // A replacement passes the barriers its predecessor passed at once.
  absl::Status Barrier(absl::Time deadline) override {
    const int64_t n = barrier_count_++;
    if (replacement_ && n < catch_up_barriers_) return absl::OkStatus();
    return node_->Barrier("workers", absl::StrCat("kv", n), deadline);
  }

  absl::Status Finish() override { return node_->Finish(); }

  absl::Status AllReduceSum(int64_t slot, absl::Span<const float> values,
                            absl::Span<float> out,
                            absl::Time deadline) override {
    if (slot >= 0)
      return absl::InvalidArgumentError("AllReduceSum slots are negative keys");
    if (values.size() != out.size())
      return absl::InvalidArgumentError("AllReduceSum sizes");
    if (!sync_) {  // dist_async has no rounds to sum over.
      std::copy(values.begin(), values.end(), out.begin());
      return absl::OkStatus();
    }
    bool known;
    {
      MutexLock lock(&mu_);
      known = plans_.count(slot) > 0;
    }
    if (!known) {
      std::vector<float> zeros(values.size(), 0.0f);
      PSTRAIN_RETURN_IF_ERROR(Init({slot}, {zeros}, deadline));
    }
    PSTRAIN_ASSIGN_OR_RETURN(Handle h, PushPull(slot, {values}, out, 1 << 19));
    return Wait(h, deadline);
  }

  // A replacement's Init(): pulls every key of `keys` until each server
  // has answered (a server drops requests from this rank's new address
  // until it has moved the rank there, so a pull unanswered within
  // kJoinRetry is sent again) and takes the fewest rounds the replies
  // report as the round of every key.
  absl::Status JoinAsReplacement(const std::vector<int64_t>& keys,
                                 absl::Time deadline) {
    std::vector<std::vector<float>> scratch(keys.size());
    std::vector<KeyPushPull> group;
    {
      MutexLock lock(&mu_);
      for (size_t i = 0; i < keys.size(); ++i) {
        int64_t total = 0;
        for (const SliceSpec& sl : plans_.at(keys[i])) total += sl.length;
        scratch[i].resize(total);
        group.push_back(KeyPushPull{keys[i], {}, absl::MakeSpan(scratch[i])});
      }
      join_round_ = -1;
    }
    if (group.empty()) {
      MutexLock lock(&mu_);
      replacement_round_ = 0;
      return absl::OkStatus();
    }
    for (int attempt = 1;; ++attempt) {
      PSTRAIN_ASSIGN_OR_RETURN(Handle h,
                               SendGroup(proto::PULL, group, 1 << 18));
      const absl::Time wait = std::min(deadline, absl::Now() + kJoinRetry);
      absl::Status s = Wait(h, wait);
      if (s.ok()) break;
      if (s.code() != absl::StatusCode::kDeadlineExceeded) return s;
      Abandon(h);
      if (absl::Now() >= deadline) {
        return absl::DeadlineExceededError(
            absl::StrCat("replacement of worker rank ", rank(),
                         ": the servers did not "
                         "answer its pulls (",
                         attempt, " tries)"));
      }
      LOG(INFO) << "replacement of worker rank " << rank()
                << ": no answer to its pull yet (try " << attempt << "); again";
    }
    MutexLock lock(&mu_);
    replacement_round_ = std::max<int64_t>(join_round_, 0);
    for (int64_t k : keys) push_rounds_[k] = replacement_round_;
    LOG(INFO) << "replacement of worker rank " << rank()
              << ": the servers are at round " << replacement_round_;
    return absl::OkStatus();
  }

  // KVStoreOptions::test_die_mid_push_round: sends the round's pushes to
  // server rank 0 only, lets them leave, and SIGKILLs this process.
  void MaybeDieMidPushForTest(std::vector<std::pair<int, Message>>* batch) {
    const int64_t round = options_.test_die_mid_push_round;
    if (round <= 0 || replacement_ || rank() != options_.test_die_rank) return;
    bool hit = false;
    for (const auto& [id, m] : *batch) {
      const proto::MessageType t = m.header.type();
      hit |= (t == proto::PUSH || t == proto::PUSH_PULL) &&
             m.header.push_round() == round;
    }
    if (!hit) return;
    std::vector<std::pair<int, Message>> first;
    for (auto& [id, m] : *batch) {
      if (id == node_->ServerId(0)) first.emplace_back(id, std::move(m));
    }
    LOG(WARNING) << "worker " << rank() << ": --test_die_mid_push_step "
                 << round << ": " << first.size()
                 << " push message(s) to server rank 0 only, then SIGKILL";
    absl::Status s =
        node_->SendBatch(std::move(first), absl::Now() + absl::Seconds(10));
    if (!s.ok()) LOG(WARNING) << s;
    absl::SleepFor(absl::Milliseconds(500));  // Let them leave.
    raise(SIGKILL);
  }

  // An operation finished, room opened or the job ended: wakes the
  // waiters, sleeping (cv_) or polling (changes_).
  void Changed() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    changes_.fetch_add(1, std::memory_order_release);
    cv_.SignalAll();
  }

  // Forgets operation `h` after a Wait() that timed out: its late replies
  // match nothing.
  void Abandon(Handle h) {
    MutexLock lock(&mu_);
    std::vector<uint64_t> rids;
    for (const auto& [rid, p] : requests_) {
      if (p.handle == h) rids.push_back(rid);
    }
    for (uint64_t rid : rids) Forget(rid);
    ops_.erase(h);
    Changed();
  }

 private:
  static constexpr absl::Duration kJoinRetry = absl::Seconds(1);

  struct Op {
    int64_t key = 0;
    int outstanding = 0;
    absl::Status status;
    // Sent during the timeline's window: when its requests were handed to
    // the transport, its keys and the bytes its replies carry (the "pull"
    // event ends with the last reply).
    bool traced = false;
    absl::Time sent;
    std::vector<int64_t> keys;
    int64_t reply_bytes = 0;
    int64_t step = 0;
    // Whether Wait() polls briefly before sleeping (small operations).
    bool spin = true;
    // Where each key's pulled values go.
    std::vector<std::pair<int64_t, absl::Span<float>>> outs;
  };
  // One message for a server (by rank).
  struct Request {
    int server;
    Message msg;
  };
  // A request sent and not yet answered.
  struct Pending {
    Handle handle;
    int server;
    int64_t bytes;
    // scheduled_: payload bytes it holds of its server's send credit (from
    // leaving the queue until its receipt or answer), and whether it holds
    // them now.
    int64_t payload = 0;
    bool in_credit = false;
  };
  // scheduled_: a request waiting in its server's queue.
  struct Queued {
    int server;
    Message msg;
  };
  using ToSend = std::vector<std::pair<int, Message>>;
  // Per server: what is sent and not yet answered.
  struct Outstanding {
    int requests = 0;
    int64_t bytes = 0;
  };

  absl::StatusOr<Handle> SendKey(
      proto::MessageType type, int64_t key,
      const std::vector<absl::Span<const float>>& values, absl::Span<float> out,
      int priority) {
    return SendGroup(type, {KeyPushPull{key, values, out}}, priority);
  }

  // Sends `group` (values ignored for PULL, outputs for PUSH): the slices
  // of all its keys, per server, packed into messages of at most
  // max_message_bytes (one slice that alone is bigger gets its own; a key's
  // chunks never share one, so a single key travels one message per chunk:
  // the server applies each as it arrives).
  absl::StatusOr<Handle> SendGroup(proto::MessageType type,
                                   const std::vector<KeyPushPull>& group,
                                   int priority) {
    if (group.empty())
      return absl::InvalidArgumentError("an empty group of keys");
    // The timeline's "push" event: from here until the requests are sent.
    const absl::Time begin =
        timeline_->active() ? absl::Now() : absl::InfinitePast();
    std::vector<std::vector<SliceSpec>> plans;
    {
      MutexLock lock(&mu_);
      for (const KeyPushPull& g : group) {
        auto it = plans_.find(g.key);
        if (it == plans_.end()) {
          return absl::NotFoundError(
              absl::StrCat("key ", g.key, " was not initialized"));
        }
        plans.push_back(it->second);
      }
    }
    std::vector<std::pair<int64_t, absl::Span<float>>> outs;
    std::vector<Request> batch;
    std::map<int, size_t>
        open;  // Server -> index in `batch` of its message being filled.
    std::map<int, int64_t> open_bytes;
    // Push identity: each key's round, and per message the round of its
    // keys (-1: they disagree, the message goes without one).
    std::vector<int64_t> rounds(group.size(), 0);
    if (type != proto::PULL && sync_) {
      MutexLock lock(&mu_);
      for (size_t i = 0; i < group.size(); ++i) {
        if (no_identity_.count(group[i].key)) continue;
        rounds[i] = ++push_rounds_[group[i].key];
      }
    }
    std::map<size_t, int64_t> message_round;
    for (size_t i = 0; i < group.size(); ++i) {
      const KeyPushPull& g = group[i];
      int64_t total = 0;
      for (const auto& sl : plans[i]) total += sl.length;
      if (type != proto::PULL)
        PSTRAIN_RETURN_IF_ERROR(CheckDevices(g.device_values, total));
      if (type != proto::PUSH) {
        if (static_cast<int64_t>(g.out.size()) != total) {
          return absl::InvalidArgumentError(
              absl::StrCat("pull of key ", g.key, " into ", g.out.size(),
                           " floats; it holds ", total));
        }
        for (const auto& [k, o] : outs) {
          if (k == g.key)
            return absl::InvalidArgumentError(
                absl::StrCat("key ", k, " twice"));
        }
        outs.emplace_back(g.key, g.out);
      }
      const float* data = nullptr;
      std::shared_ptr<const void> keep;
      if (type != proto::PULL) {
        std::tie(data, keep) = Sum(g.device_values);
        // Zero-copy: the caller keeps a single device's buffer valid until
        // Wait() (the ack comes after the server has the bytes); a
        // multi-device sum is kept alive by `keep`.
        if (keep == nullptr)
          keep = std::shared_ptr<const void>(data, [](const void*) {});
      }
      for (size_t c = 0; c < plans[i].size(); ++c) {
        const SliceSpec& sl = plans[i][c];
        const int64_t bytes = sl.length * static_cast<int64_t>(sizeof(float));
        auto it = open.find(sl.server);
        // A key's second chunk, or a slice that does not fit: a new message.
        if (it == open.end() || c > 0 ||
            open_bytes[sl.server] + bytes > options_.max_message_bytes) {
          Message m;
          m.header.set_type(type);
          m.header.set_priority(priority);
          batch.push_back({sl.server, std::move(m)});
          open[sl.server] = batch.size() - 1;
          open_bytes[sl.server] = 0;
        }
        const size_t mi = open[sl.server];
        auto [mr, first] = message_round.emplace(mi, rounds[i]);
        if (!first && mr->second != rounds[i]) mr->second = -1;
        Message& m = batch[mi].msg;
        m.header.add_keys(sl.key);
        m.header.add_offsets(sl.offset);
        m.header.add_lengths(sl.length);
        if (type != proto::PULL) {
          const proto::Encoding e =
              compression::PushEncoding(codec_.config(), g.key, total);
          if (codec_.enabled()) m.header.add_encodings(e);
          m.frames.push_back(codec_.EncodePush(
              g.key, total, sl.offset,
              absl::MakeConstSpan(data + sl.offset, sl.length), e, keep));
        }
        if (type != proto::PUSH && codec_.enabled()) {
          m.header.add_reply_encodings(
              compression::PullEncoding(codec_.config(), g.key, total));
        }
        open_bytes[sl.server] += bytes;
      }
    }
    for (const auto& [mi, r] : message_round) {
      if (r > 0) batch[mi].msg.header.set_push_round(r);
    }
    {
      // A replacement's pulls before its first push ask for the weights of
      // the step it continues with (the servers' round + 1): a server one
      // round ahead (its predecessor's push of that step reached it) gives
      // the previous ones.
      MutexLock lock(&mu_);
      if (type != proto::PULL) {
        pushed_ = true;
      } else if (replacement_ && !pushed_ && replacement_round_ >= 0) {
        for (Request& r : batch)
          r.msg.header.set_push_round(replacement_round_ + 1);
      }
    }
    std::vector<int64_t> keys;
    if (begin != absl::InfinitePast()) {
      for (const KeyPushPull& g : group) keys.push_back(g.key);
    }
    return Submit(std::move(batch), std::move(outs), group.front().key, begin,
                  std::move(keys));
  }

  // Data bytes a request moves both ways.
  static int64_t RequestBytes(const Message& m) {
    int64_t bytes = 0;
    for (const Frame& f : m.frames) bytes += static_cast<int64_t>(f.size());
    const proto::MessageType t = m.header.type();
    if (t == proto::PULL || t == proto::PUSH_PULL) {
      for (int64_t len : m.header.lengths())
        bytes += len * static_cast<int64_t>(sizeof(float));
    }
    return bytes;
  }

  // `key` names the operation in errors. `trace_begin` (InfinitePast: not
  // traced) is when the operation began, for its timeline events, and
  // `keys` its keys.
  absl::StatusOr<Handle> Submit(
      std::vector<Request> batch,
      std::vector<std::pair<int64_t, absl::Span<float>>> outs, int64_t key,
      absl::Time trace_begin = absl::InfinitePast(),
      std::vector<int64_t> keys = {}) {
    const bool traced = trace_begin != absl::InfinitePast();
    int64_t push_bytes = 0, reply_bytes = 0;
    if (traced) {
      for (const Request& r : batch) {
        for (const Frame& f : r.msg.frames) push_bytes += f.size();
        if (r.msg.header.type() != proto::PUSH) {
          for (int64_t len : r.msg.header.lengths())
            reply_bytes += len * static_cast<int64_t>(sizeof(float));
        }
      }
    }
    const absl::Time deadline = absl::Now() + options_.send_timeout;
    std::vector<Outstanding> need(node_->num_servers());
    std::vector<int64_t> bytes;
    int64_t op_bytes = 0;
    for (const Request& r : batch) {
      bytes.push_back(RequestBytes(r.msg));
      need[r.server].requests += 1;
      need[r.server].bytes += bytes.back();
      op_bytes += bytes.back();
    }
    for (const auto& out : outs) {
      op_bytes += static_cast<int64_t>(out.second.size() * sizeof(float));
    }
    Handle h;
    std::vector<std::pair<int, Message>> to_send;
    {
      MutexLock lock(&mu_);
      // Wait for room at every server involved (anything fits when nothing
      // is outstanding there).
      auto fits = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        for (size_t s = 0; s < need.size(); ++s) {
          const Outstanding& o = outstanding_[s];
          if (need[s].requests == 0 || o.requests == 0) continue;
          if (o.requests + need[s].requests >
                  options_.max_outstanding_requests_per_server ||
              o.bytes + need[s].bytes >
                  options_.max_outstanding_bytes_per_server) {
            return false;
          }
        }
        return true;
      };
      if (!cv_.WaitUntil(&mu_, deadline,
                         [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
                           return !dead_.ok() || fits();
                         })) {
        return absl::DeadlineExceededError(absl::StrCat(
            "requests for key ", key,
            " found no room under the outstanding-request bounds within ",
            absl::FormatDuration(options_.send_timeout)));
      }
      if (!dead_.ok()) return dead_;
      h = next_handle_++;
      Op& op = ops_[h];
      op.key = key;
      op.outstanding = static_cast<int>(batch.size());
      op.outs = std::move(outs);
      op.spin = op_bytes <= kSpinMaxBytes;
      op.traced = traced;
      op.reply_bytes = reply_bytes;
      if (traced) {
        // Set before any reply can land (OnResponse reads them).
        op.sent = absl::Now();
        op.keys = keys;
        op.step = timeline_->step();
      }
      std::vector<bool> involved(node_->num_servers(), false);
      for (size_t i = 0; i < batch.size(); ++i) {
        const uint64_t rid = next_request_++;
        Message& m = batch[i].msg;
        m.header.set_request_id(rid);
        ExpectReply(rid, m.header, op.outs);
        int64_t payload = 0;
        for (const Frame& f : m.frames)
          payload += static_cast<int64_t>(f.size());
        requests_[rid] = {h, batch[i].server, bytes[i], payload, false};
        outstanding_[batch[i].server].requests += 1;
        outstanding_[batch[i].server].bytes += bytes[i];
        if (scheduled_) {
          const proto::MessageType t = m.header.type();
          if (t == proto::PUSH || t == proto::PUSH_PULL)
            m.header.set_want_receipt(true);
          queues_[batch[i].server].Add(rid, m.header.priority(), payload);
          involved[batch[i].server] = true;
          queued_.emplace(rid, Queued{batch[i].server, std::move(m)});
        } else {
          to_send.emplace_back(node_->ServerId(batch[i].server), std::move(m));
        }
      }
      for (int server = 0; server < node_->num_servers(); ++server) {
        if (involved[server]) TakeReady(server, &to_send);
      }
    }
    MaybeDieMidPushForTest(&to_send);
    std::vector<uint64_t> rids;
    for (const auto& [id, m] : to_send) rids.push_back(m.header.request_id());
    absl::Status s = node_->SendBatch(std::move(to_send), deadline);
    if (traced && push_bytes > 0) {
      timeline::EventArgs args;
      args.ints = {{"bytes", push_bytes},
                   {"messages", static_cast<int64_t>(rids.size())},
                   {"step", timeline_->step()}};
      args.keys = std::move(keys);
      timeline_->Add(push_track_, "push", trace_begin, absl::Now(),
                     std::move(args));
    }
    if (!s.ok()) {
      if (scheduled_) {
        // Requests of other operations may have left with this batch.
        SendFailed(rids, s);
      } else {
        MutexLock lock(&mu_);
        for (uint64_t rid : rids) Forget(rid);
        auto it = ops_.find(h);
        if (it != ops_.end()) {
          it->second.status = s;
          it->second.outstanding = 0;
        }
        Changed();
      }
    }
    return h;
  }

  // scheduled_: moves the requests that may leave now from `server`'s queue
  // to `to_send` (they hold its credit from now on). Requests of operations
  // that failed meanwhile are dropped, their credit returned.
  void TakeReady(int server, ToSend* to_send)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!dead_.ok()) return;
    SendQueue& q = queues_[server];
    while (true) {
      std::vector<uint64_t> ready = q.TakeReady();
      if (ready.empty()) return;
      bool dropped = false;
      for (uint64_t rid : ready) {
        auto qit = queued_.find(rid);
        CHECK(qit != queued_.end());
        auto rit = requests_.find(rid);
        if (rit == requests_.end()) {  // Its operation failed.
          q.Release(PayloadOf(qit->second.msg));
          queued_.erase(qit);
          dropped = true;
          continue;
        }
        rit->second.in_credit = true;
        to_send->emplace_back(node_->ServerId(server),
                              std::move(qit->second.msg));
        queued_.erase(qit);
      }
      if (!dropped) return;  // Else credit came back: look again.
    }
  }

  static int64_t PayloadOf(const Message& m) {
    int64_t bytes = 0;
    for (const Frame& f : m.frames) bytes += static_cast<int64_t>(f.size());
    return bytes;
  }

  // Sends what TakeReady() released (from a caller's thread or the I/O
  // thread; never holding mu_).
  void SendReady(ToSend to_send) ABSL_LOCKS_EXCLUDED(mu_) {
    if (to_send.empty()) return;
    std::vector<uint64_t> rids;
    for (const auto& [id, m] : to_send) rids.push_back(m.header.request_id());
    absl::Status s = node_->SendBatch(std::move(to_send),
                                      absl::Now() + options_.send_timeout);
    if (!s.ok()) SendFailed(rids, s);
  }

  // The requests `rids` could not be handed to the transport: their
  // operations fail with `s`, and their requests still queued are dropped
  // (TakeReady skips them), so no caller buffer is read after its Wait.
  void SendFailed(const std::vector<uint64_t>& rids, const absl::Status& s)
      ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    std::vector<Handle> failed;
    for (uint64_t rid : rids) {
      Handle h;
      if (Forget(rid, &h)) failed.push_back(h);
    }
    for (Handle h : failed) {
      auto it = ops_.find(h);
      if (it != ops_.end() && it->second.outstanding > 0) {
        it->second.status = s;
        it->second.outstanding = 0;
      }
    }
    for (auto it = requests_.begin(); it != requests_.end();) {
      const bool of_failed = std::find(failed.begin(), failed.end(),
                                       it->second.handle) != failed.end();
      if (of_failed && queued_.count(it->first)) {
        const uint64_t rid = (it++)->first;
        Forget(rid);
      } else {
        ++it;
      }
    }
    Changed();
  }

  // Tells the transport where the raw weights of the reply to request
  // `rid` (`h`) go, so that a data link reads them straight into the
  // caller's buffers (Transport::ExpectReply); Forget() cancels it.
  void ExpectReply(
      uint64_t rid, const proto::Header& h,
      const std::vector<std::pair<int64_t, absl::Span<float>>>& outs) {
    if (node_->transport().data_port() == 0) return;
    if (h.type() != proto::PULL && h.type() != proto::PUSH_PULL) return;
    for (int e : h.reply_encodings()) {
      if (e != proto::RAW_FLOAT32) return;
    }
    std::vector<absl::Span<char>> frames;
    for (int i = 0; i < h.keys_size(); ++i) {
      absl::Span<char> dest;
      for (const auto& [k, o] : outs) {
        if (k != h.keys(i)) continue;
        const int64_t off = h.offsets(i), len = h.lengths(i);
        if (off >= 0 && len >= 0 && off + len <= static_cast<int64_t>(o.size()))
          dest = absl::MakeSpan(reinterpret_cast<char*>(o.data() + off),
                                len * sizeof(float));
        break;
      }
      frames.push_back(dest);
    }
    node_->transport().ExpectReply(rid, std::move(frames));
  }

  // Drops request `rid` and returns its room. REQUIRES: mu_ held.
  bool Forget(uint64_t rid, Handle* handle = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = requests_.find(rid);
    if (it == requests_.end()) return false;
    node_->transport().CancelReply(rid);
    Outstanding& o = outstanding_[it->second.server];
    o.requests -= 1;
    o.bytes -= it->second.bytes;
    if (it->second.in_credit)
      queues_[it->second.server].Release(it->second.payload);
    if (handle != nullptr) *handle = it->second.handle;
    requests_.erase(it);
    return true;
  }

  // A receipt for request `rid`: its payload arrived, its credit returns.
  void ReturnCredit(uint64_t rid, ToSend* to_send)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = requests_.find(rid);
    if (it == requests_.end() || !it->second.in_credit) return;
    it->second.in_credit = false;
    queues_[it->second.server].Release(it->second.payload);
    TakeReady(it->second.server, to_send);
  }

  // On the transport's I/O thread: applies the response, then sends what
  // its returned credit lets leave.
  void OnResponse(Message msg) {
    ToSend to_send;
    ApplyResponse(std::move(msg), &to_send);
    SendReady(std::move(to_send));
  }

  void ApplyResponse(Message msg, ToSend* to_send) ABSL_LOCKS_EXCLUDED(mu_) {
    const proto::Header& hd = msg.header;
    if (hd.type() != proto::RESPONSE) return;
    MutexLock lock(&mu_);
    if (hd.receipt()) return ReturnCredit(hd.request_id(), to_send);
    Handle h;
    int server = -1;
    {
      auto rit = requests_.find(hd.request_id());
      if (rit != requests_.end()) server = rit->second.server;
    }
    if (!Forget(hd.request_id(), &h)) return;
    if (scheduled_) TakeReady(server, to_send);
    Changed();  // Room for waiting senders, maybe a finished op.
    auto oit = ops_.find(h);
    if (oit == ops_.end()) return;
    Op& op = oit->second;
    if (op.outstanding == 0) return;  // Already failed (the job ended).
    if (replacement_ && replacement_round_ < 0 && hd.error().empty() &&
        hd.keys_size() > 0 && !msg.frames.empty()) {
      // A pull reply during JoinAsReplacement(): the rounds done.
      if (join_round_ < 0 || hd.push_round() < join_round_)
        join_round_ = hd.push_round();
    }
    if (!hd.error().empty()) {
      if (op.status.ok()) {
        op.status = absl::FailedPreconditionError(
            absl::StrCat("server node ", hd.sender(),
                         " refused: ", EscapeForLog(hd.error())));
      }
    } else {
      for (size_t i = 0; i < msg.frames.size(); ++i) {
        const int64_t key = hd.keys(static_cast<int>(i));
        const int64_t off = hd.offsets(static_cast<int>(i));
        // The transport checked that the frame holds `len` values in its
        // encoding.
        const int64_t len = hd.lengths(static_cast<int>(i));
        absl::Span<float> out;
        bool found = false;
        for (const auto& [k, o] : op.outs) {
          if (k == key) {
            out = o;
            found = true;
            break;
          }
        }
        if (!found || off < 0 || len < 0 ||
            off + len > static_cast<int64_t>(out.size())) {
          if (op.status.ok()) {
            op.status = absl::DataLossError(
                absl::StrCat("response slice of key ", key, " at ", off,
                             " outside the request"));
          }
          continue;
        }
        const proto::Encoding enc = static_cast<int>(i) < hd.encodings_size()
                                        ? hd.encodings(static_cast<int>(i))
                                        : proto::RAW_FLOAT32;
        if (enc == proto::RAW_FLOAT32 &&
            msg.frames[i].data() ==
                reinterpret_cast<const char*>(out.data() + off) &&
            msg.frames[i].size() == static_cast<size_t>(len) * sizeof(float)) {
          continue;  // The data link read it into place already.
        }
        absl::Status ds = compression::DecodeReply(enc, msg.frames[i], key, off,
                                                   out.subspan(off, len));
        if (!ds.ok() && op.status.ok()) op.status = ds;
      }
    }
    if (--op.outstanding == 0 && op.traced && op.status.ok() &&
        op.reply_bytes > 0) {
      timeline::EventArgs args;
      args.ints = {{"bytes", op.reply_bytes}, {"step", op.step}};
      args.keys = op.keys;
      timeline_->Add(pull_track_, "pull", op.sent, absl::Now(),
                     std::move(args));
    }
  }

  // Fails every pending operation once the job is over (aborted or shut
  // down).
  void Watch() {
    while (!stop_) {
      absl::Status s =
          node_->WaitForShutdown(absl::Now() + absl::Milliseconds(100));
      if (s.code() == absl::StatusCode::kDeadlineExceeded) continue;
      if (s.ok()) s = absl::CancelledError("the job has shut down");
      MutexLock lock(&mu_);
      dead_ = s;
      // The callers may free their buffers once their operations failed.
      for (const auto& [rid, p] : requests_)
        node_->transport().CancelReply(rid);
      for (SendQueue& q : queues_) q.Clear();
      queued_.clear();
      for (auto& [h, op] : ops_) {
        if (op.outstanding > 0) {
          op.status = s;
          op.outstanding = 0;
        }
      }
      Changed();
      return;
    }
  }

  // Set by the constructor and then only read: no lock. `node_` is
  // thread-safe itself.
  const std::string type_;
  const KVStoreOptions options_;
  const std::unique_ptr<cluster::ClusterNode> node_;
  const bool sync_;
  const int64_t max_chunk_elements_;
  // options_.send_credit_bytes > 0: requests go through queues_.
  const bool scheduled_;
  // The node's (owned by node_), and its tracks.
  timeline::Recorder* const timeline_;
  const int push_track_;
  const int pull_track_;
  // Encodes pushes, keeps the residuals (thread-safe itself).
  compression::WorkerCodec codec_;
  // --recovery=replace: this worker replaces a dead one; the "workers"
  // barriers released before it came.
  const bool replacement_;
  const int64_t catch_up_barriers_;

  // mu_ guards the members marked ABSL_GUARDED_BY(mu_) below: the plan,
  // the operations and requests in flight and the room they take, and the
  // job's end. It is taken by the callers' threads, by OnResponse() on the
  // transport's I/O thread and by the watcher thread. cv_ is waited on with
  // mu_ held: an op finished, room opened, or the job ended.
  mutable Mutex mu_;
  CondVar cv_;
  // Bumped with every cv_ signal (Changed()), so that a Wait() that polls
  // for a small operation can watch it without taking mu_ from the I/O
  // thread that finishes the operation.
  std::atomic<uint64_t> changes_{0};
  std::vector<int64_t> load_ ABSL_GUARDED_BY(mu_);  // Elements, per server.
  // Per key: its chunks.
  std::map<int64_t, std::vector<SliceSpec>> plans_ ABSL_GUARDED_BY(mu_);
  std::map<Handle, Op> ops_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, Pending> requests_ ABSL_GUARDED_BY(mu_);  // By request id.
  std::vector<Outstanding> outstanding_ ABSL_GUARDED_BY(mu_);  // Per server.
  // scheduled_: per server, the requests not yet handed to the transport
  // and the credit; the messages themselves by request id.
  std::vector<SendQueue> queues_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, Queued> queued_ ABSL_GUARDED_BY(mu_);
  absl::Status dead_ ABSL_GUARDED_BY(mu_);  // Not OK once the job has ended.
  // Push identity: per key, the round of its last push (dist_sync), and
  // the keys pushed without one (a replacement's keys of unknown round).
  std::map<int64_t, int64_t> push_rounds_ ABSL_GUARDED_BY(mu_);
  std::set<int64_t> no_identity_ ABSL_GUARDED_BY(mu_);
  // A replacement: the servers' round when it joined (-1 before), and the
  // fewest rounds the join's pull replies reported so far.
  int64_t replacement_round_ ABSL_GUARDED_BY(mu_) = -1;
  int64_t join_round_ ABSL_GUARDED_BY(mu_) = -1;
  bool pushed_ ABSL_GUARDED_BY(mu_) = false;  // Any push sent yet.
  Handle next_handle_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_request_ ABSL_GUARDED_BY(mu_) = 1;

  // Lock-free: Barrier() may run on several threads at once (Init,
  // SetOptimizer, AllReduceSum and Barrier itself all pass one).
  std::atomic<int64_t> barrier_count_{0};
  std::atomic<bool> stop_{false};  // Tells the watcher to return.
  // Started by the constructor, joined by the destructor.
  std::thread watcher_;
};

}  // namespace

std::unique_ptr<KVStore> NewDistKVStore(
    std::string type, const KVStoreOptions& options,
    std::unique_ptr<cluster::ClusterNode> node) {
  return std::unique_ptr<KVStore>(
      new DistKVStore(std::move(type), options, std::move(node)));
}

}  // namespace kvstore
}  // namespace pstrain
