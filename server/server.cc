#include "server/server.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "glog/logging.h"
#include "nn/optimizer.h"

namespace pstrain {
namespace server {
namespace {

using transport::Frame;
using transport::Message;

struct Request {
  Message msg;
  int outstanding = 0;  // Slices not yet applied (dist_sync pushes).
};

// One version of a slice's weights: in memory of its own, in the
// transport's shared-memory arena (replies to workers on this host then
// pass it by reference), or in a received push adopted as the weights; and
// how many replies being sent still read it (they release it on ZeroMQ's
// thread, or, when passed by reference, in the arena).
struct Version {
  explicit Version(std::vector<float> v) : owned(std::move(v)), values(absl::MakeSpan(owned)) {}
  // REQUIRES: `f` owns its bytes (a received frame, or a
  // Transport::NewSharedFrame of `shared`). `shared`: the transport that
  // knows whether replies sent by reference still read it.
  explicit Version(Frame f, const transport::Transport* shared = nullptr)
      : frame(std::move(f)),
        values(reinterpret_cast<float*>(frame.mutable_data()), frame.size() / sizeof(float)),
        shared(shared) {
    CHECK(frame.mutable_data() != nullptr || frame.size() == 0);
  }
  std::vector<float> owned;
  Frame frame;
  absl::Span<float> values;
  const transport::Transport* shared = nullptr;
  std::atomic<int> readers{0};
  bool free() const {
    return readers.load(std::memory_order_acquire) == 0 &&
           (shared == nullptr || !shared->SharedFrameInUse(frame));
  }
};
using Buffer = std::shared_ptr<Version>;

// A version of `n` floats (unset), in the shared-memory arena when it has
// room.
Buffer NewVersion(const transport::Transport& t, size_t n) {
  Frame f = t.NewSharedFrame(n * sizeof(float));
  if (f.size() > 0) return std::make_shared<Version>(std::move(f), &t);
  return std::make_shared<Version>(std::vector<float>(n));
}

// dst = a + b, elementwise (restrict: the compiler vectorizes freely).
void Add2(float* __restrict dst, const float* __restrict a, const float* __restrict b,
          size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = a[i] + b[i];
}

// dst += src.
void AddTo(float* __restrict dst, const float* __restrict src, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] += src[i];
}

// dst = ((g[0] + g[1]) + g[2]) + ..., straight from the received frames, in
// this (worker rank) order: bitwise reproducible. REQUIRES: !g.empty().
void SumInto(float* dst, const std::vector<absl::Span<const float>>& g) {
  const size_t n = g[0].size();
  if (g.size() == 1) {
    std::memcpy(dst, g[0].data(), n * sizeof(float));
    return;
  }
  Add2(dst, g[0].data(), g[1].data(), n);
  for (size_t r = 2; r < g.size(); ++r) AddTo(dst, g[r].data(), n);
}

struct Slice {
  const transport::Transport* transport = nullptr;
  // The current weights, sent zero-copy by pull replies. An update while a
  // reply still reads the current version moves to a spare version no
  // reply reads any more (allocating one only when every spare is still
  // read), so the steady state allocates nothing.
  Buffer weights_ptr;
  std::vector<Buffer> spares;
  absl::Span<const float> weights() const { return weights_ptr->values; }
  // The weights to modify in place; `keep`: with their current values
  // (false when the caller overwrites every value).
  absl::Span<float> Writable(bool keep = true) {
    if (!weights_ptr->free()) {
      Buffer* spare = nullptr;
      for (Buffer& b : spares) {
        if (b->free()) {
          spare = &b;
          break;
        }
      }
      if (spare == nullptr) {
        spares.push_back(NewVersion(*transport, weights().size()));
        spare = &spares.back();
      }
      std::swap(*spare, weights_ptr);
      if (keep) {
        std::memcpy(weights_ptr->values.data(), (*spare)->values.data(),
                    weights_ptr->values.size() * sizeof(float));
      }
    }
    return weights_ptr->values;
  }
  // A frame over the current weights for a reply (zero-copy).
  Frame Share() {
    Buffer b = weights_ptr;
    b->readers.fetch_add(1, std::memory_order_relaxed);
    const absl::Span<const float> v = b->values;
    return Frame::Borrow(v.data(), v.size() * sizeof(float),
                         std::shared_ptr<const void>(v.data(), [b](const void*) {
                           b->readers.fetch_sub(1, std::memory_order_release);
                         }));
  }
  // dist_sync: this round's push of each worker rank (request + frame index).
  std::vector<std::shared_ptr<Request>> pending;
  std::vector<int> frame_of;
  int received = 0;
  // dist_sync with an optimizer and several workers: the round's sum.
  // Allocated on first use, then reused.
  std::vector<float> merged;
};

// Serves data messages on the transport's I/O thread (no hand-off to
// another thread: a request is read, applied and answered in one go).
class Server {
 public:
  explicit Server(std::unique_ptr<transport::ClusterNode> node) : node_(std::move(node)) {}

  int Serve() {
    node_->SetDataHandler([this](Message m) { Handle(std::move(m)); });
    int rc = 0;
    while (true) {
      absl::Status s = node_->WaitForShutdown(absl::Now() + absl::Seconds(1));
      if (s.code() == absl::StatusCode::kDeadlineExceeded) continue;
      if (s.ok()) {
        LOG(INFO) << "server rank " << node_->rank() << ": job finished; exiting";
      } else {
        LOG(ERROR) << "server rank " << node_->rank() << ": " << s.message();
        rc = 1;
      }
      break;
    }
    node_->SetDataHandler(nullptr);  // No call of Handle() runs past here.
    LOG(INFO) << "server rank " << node_->rank() << ": " << refused_
              << " requests refused, " << refused_not_rank_zero_
              << " of them INIT or SET_OPTIMIZER from a node other than worker "
                 "rank 0";
    return rc;
  }

 private:
  void Reply(const proto::Header& req, const std::string& error, std::vector<Frame> frames = {},
             const proto::Header* slices = nullptr) {
    Message r;
    r.header.set_type(proto::RESPONSE);
    r.header.set_request_id(req.request_id());
    r.header.set_priority(req.priority());
    r.header.set_error(error);
    if (slices != nullptr) {
      for (int i = 0; i < slices->keys_size(); ++i) {
        r.header.add_keys(slices->keys(i));
        r.header.add_offsets(slices->offsets(i));
        r.header.add_lengths(slices->lengths(i));
      }
    }
    r.frames = std::move(frames);
    // On the I/O thread: never waits (the request already counted).
    absl::Status s = node_->Send(req.sender(), std::move(r), absl::InfinitePast());
    if (!s.ok()) {
      LOG_EVERY_N(WARNING, 100) << "reply to node " << req.sender() << ": " << s;
    }
  }

  void Refuse(const proto::Header& req, const std::string& why) {
    ++refused_;
    LOG_EVERY_N(WARNING, 100) << "server rank " << node_->rank() << ": refused "
                              << proto::MessageType_Name(req.type()) << " from node "
                              << req.sender() << ": " << why;
    Reply(req, why);
  }

  // INIT and SET_OPTIMIZER replace the weights and the update rule of the
  // whole job: only worker rank 0 sends them (DESIGN.md, KVStore semantics).
  void RefuseNotRankZero(const proto::Header& req) {
    ++refused_not_rank_zero_;
    Refuse(req, absl::StrCat(proto::MessageType_Name(req.type()),
                             " is only for worker rank 0; node ", req.sender(),
                             " is ", DescribeNode(req.sender())));
  }

  std::string DescribeNode(int id) const {
    if (id == transport::kSchedulerId) return "the scheduler";
    const int rank = node_->WorkerRank(id);
    if (rank >= 0) return absl::StrCat("worker rank ", rank);
    if (id >= 1 && id <= node_->num_servers())
      return absl::StrCat("server rank ", id - 1);
    return "not in the job";
  }

  // Weights of the slices `h` names, as frames.
  std::vector<Frame> WeightsOf(const proto::Header& h) {
    std::vector<Frame> out;
    for (int i = 0; i < h.keys_size(); ++i) {
      out.push_back(slices_[{h.keys(i), h.offsets(i)}].Share());
    }
    return out;
  }

  // Every slice `h` names exists with the stated length.
  std::string CheckSlices(const proto::Header& h) {
    for (int i = 0; i < h.keys_size(); ++i) {
      auto it = slices_.find({h.keys(i), h.offsets(i)});
      if (it == slices_.end()) {
        return absl::StrCat("unknown key ", h.keys(i), " (offset ", h.offsets(i), ")");
      }
      if (static_cast<int64_t>(it->second.weights().size()) != h.lengths(i)) {
        return absl::StrCat("key ", h.keys(i), " offset ", h.offsets(i), " holds ",
                            it->second.weights().size(), " values, not ", h.lengths(i));
      }
    }
    return "";
  }

  // dist_async: applies one worker's push.
  void ApplyAsync(int64_t key, int64_t offset, Slice& s, absl::Span<const float> grad) {
    // Negative keys are plain sums (e.g. metrics), never optimized.
    if (optimizer_ != nullptr && key >= 0) {
      optimizer_->Update(key, offset, s.Writable(), grad);
    } else {
      AddTo(s.Writable().data(), grad.data(), grad.size());
    }
  }

  void Handle(Message msg) {
    const proto::Header& h = msg.header;
    switch (h.type()) {
      case proto::INIT: {
        if (node_->WorkerRank(h.sender()) != 0) return RefuseNotRankZero(h);
        if (msg.frames.size() != static_cast<size_t>(h.keys_size())) {
          return Refuse(h, "INIT without values");
        }
        sync_ = h.sync_mode();
        for (int i = 0; i < h.keys_size(); ++i) {
          Slice& s = slices_[{h.keys(i), h.offsets(i)}];
          auto v = msg.frames[i].As<float>();
          s.transport = &node_->transport();
          s.weights_ptr = NewVersion(*s.transport, v.size());
          std::copy(v.begin(), v.end(), s.weights_ptr->values.begin());
          s.spares.clear();
          s.pending.assign(node_->num_workers(), nullptr);
          s.frame_of.assign(node_->num_workers(), -1);
          s.received = 0;
          s.merged.clear();
        }
        return Reply(h, "");
      }
      case proto::SET_OPTIMIZER: {
        if (node_->WorkerRank(h.sender()) != 0) return RefuseNotRankZero(h);
        auto opt = nn::Optimizer::Create(h.optimizer());
        if (!opt.ok()) return Refuse(h, std::string(opt.status().message()));
        optimizer_ = std::move(*opt);
        return Reply(h, "");
      }
      case proto::PULL: {
        const std::string bad = CheckSlices(h);
        if (!bad.empty()) return Refuse(h, bad);
        return Reply(h, "", WeightsOf(h), &h);
      }
      case proto::PUSH:
      case proto::PUSH_PULL: {
        const std::string bad = CheckSlices(h);
        if (!bad.empty()) return Refuse(h, bad);
        if (msg.frames.size() != static_cast<size_t>(h.keys_size())) {
          return Refuse(h, "push without values");
        }
        const int rank = node_->WorkerRank(h.sender());
        if (rank < 0) return Refuse(h, absl::StrCat("node ", h.sender(), " is not a worker"));
        if (!sync_) {
          for (int i = 0; i < h.keys_size(); ++i) {
            ApplyAsync(h.keys(i), h.offsets(i), slices_[{h.keys(i), h.offsets(i)}],
                     msg.frames[i].As<float>());
          }
          if (h.type() == proto::PUSH_PULL) return Reply(h, "", WeightsOf(h), &h);
          return Reply(h, "");
        }
        std::set<std::pair<int64_t, int64_t>> listed;
        for (int i = 0; i < h.keys_size(); ++i) {
          // A slice listed twice in one message would count as two workers'
          // pushes (and complete the round with another rank's still null).
          if (!listed.insert({h.keys(i), h.offsets(i)}).second ||
              slices_[{h.keys(i), h.offsets(i)}].pending[rank] != nullptr) {
            return Refuse(h, absl::StrCat("worker rank ", rank, " pushed key ", h.keys(i),
                                          " (offset ", h.offsets(i), ") twice in one round"));
          }
        }
        auto req = std::make_shared<Request>();
        req->outstanding = h.keys_size();
        req->msg = std::move(msg);
        const proto::Header& rh = req->msg.header;
        for (int i = 0; i < rh.keys_size(); ++i) {
          const std::pair<int64_t, int64_t> id{rh.keys(i), rh.offsets(i)};
          Slice& s = slices_[id];
          s.pending[rank] = req;
          s.frame_of[rank] = i;
          if (++s.received == node_->num_workers()) Complete(id, s);
        }
        return;
      }
      default:
        return Refuse(h, absl::StrCat("unexpected message type ", h.type()));
    }
  }

  // dist_sync: every worker has pushed this slice: sum in rank order, apply
  // once, acknowledge the requests that are now complete.
  void Complete(const std::pair<int64_t, int64_t>& id, Slice& s) {
    std::vector<absl::Span<const float>> grads;
    for (size_t r = 0; r < s.pending.size(); ++r) {
      grads.push_back(s.pending[r]->msg.frames[s.frame_of[r]].As<float>());
    }
    if (optimizer_ == nullptr || id.first < 0) {
      // Store the sum. With one worker that is its push: the received
      // buffer becomes the weights (no copy; the old version goes when no
      // reply reads it any more). Otherwise summed straight into the
      // weights.
      Frame& only = s.pending[0]->msg.frames[s.frame_of[0]];
      if (grads.size() == 1 && only.mutable_data() != nullptr) {
        // (A push through shared memory may go back to the worker by
        // reference: `shared` tells when a reply still reads it.)
        s.weights_ptr = std::make_shared<Version>(std::move(only), &node_->transport());
      } else {
        SumInto(s.Writable(/*keep=*/false).data(), grads);
      }
    } else {
      absl::Span<const float> g = grads[0];
      if (grads.size() > 1) {
        s.merged.resize(s.weights().size());
        SumInto(s.merged.data(), grads);
        g = s.merged;
      }
      optimizer_->Update(id.first, id.second, s.Writable(), g);
    }
    std::vector<std::shared_ptr<Request>> pending;
    pending.swap(s.pending);
    s.pending.assign(pending.size(), nullptr);
    s.received = 0;
    for (auto& req : pending) {
      if (--req->outstanding > 0) continue;
      const proto::Header& h = req->msg.header;
      if (h.type() == proto::PUSH_PULL) {
        Reply(h, "", WeightsOf(h), &h);
      } else {
        Reply(h, "");
      }
    }
  }

  std::unique_ptr<transport::ClusterNode> node_;
  std::map<std::pair<int64_t, int64_t>, Slice> slices_;
  std::unique_ptr<nn::Optimizer> optimizer_;
  bool sync_ = true;
  int64_t refused_ = 0;
  int64_t refused_not_rank_zero_ = 0;
};

}  // namespace

int Run(const ServerOptions& options) {
  transport::ClusterOptions c = options.cluster;
  c.role = proto::SERVER;
  auto node = transport::ClusterNode::Start(c);
  if (!node.ok()) {
    LOG(ERROR) << "server: " << node.status().message();
    return 1;
  }
  return Server(std::move(*node)).Serve();
}

}  // namespace server
}  // namespace pstrain
