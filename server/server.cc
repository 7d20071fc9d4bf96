#include "server/server.h"

#include <map>
#include <memory>
#include <queue>
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

struct Slice {
  // Shared with replies being sent (zero-copy pulls); Writable() copies
  // before an update when a reply still holds the old values.
  std::shared_ptr<std::vector<float>> weights_ptr = std::make_shared<std::vector<float>>();
  const std::vector<float>& weights() const { return *weights_ptr; }
  std::vector<float>& Writable() {
    if (weights_ptr.use_count() > 1) {
      weights_ptr = std::make_shared<std::vector<float>>(*weights_ptr);
    }
    return *weights_ptr;
  }
  // dist_sync: this round's push of each worker rank (request + frame index).
  std::vector<std::shared_ptr<Request>> pending;
  std::vector<int> frame_of;
  int received = 0;
  std::vector<float> merged;  // Allocated once.
};

class Server {
 public:
  explicit Server(std::unique_ptr<transport::ClusterNode> node) : node_(std::move(node)) {}

  int Serve() {
    std::priority_queue<Queued> queue;
    uint64_t seq = 0;
    while (true) {
      // Take what has arrived, then serve the highest priority first.
      auto first = node_->ReceiveData(absl::Now() + absl::Milliseconds(200));
      if (!first.ok()) {
        if (first.status().code() == absl::StatusCode::kDeadlineExceeded) continue;
        if (first.status().code() == absl::StatusCode::kCancelled) {
          LOG(INFO) << "server rank " << node_->rank() << ": job finished; exiting";
          return 0;
        }
        LOG(ERROR) << "server rank " << node_->rank() << ": " << first.status().message();
        return 1;
      }
      queue.push({first->header.priority(), seq++, std::make_shared<Message>(std::move(*first))});
      while (true) {
        auto more = node_->ReceiveData(absl::Now());
        if (!more.ok()) break;
        queue.push({more->header.priority(), seq++, std::make_shared<Message>(std::move(*more))});
      }
      while (!queue.empty()) {
        auto m = queue.top().msg;
        queue.pop();
        Handle(std::move(*m));
      }
    }
  }

 private:
  struct Queued {
    int priority;
    uint64_t seq;
    std::shared_ptr<Message> msg;
    bool operator<(const Queued& o) const {
      if (priority != o.priority) return priority < o.priority;
      return seq > o.seq;
    }
  };

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
    absl::Status s = node_->Send(req.sender(), std::move(r));
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

  // Weights of the slices `h` names, as frames.
  std::vector<Frame> WeightsOf(const proto::Header& h) {
    std::vector<Frame> out;
    for (int i = 0; i < h.keys_size(); ++i) {
      // Zero-copy: the frame keeps this version of the weights alive; a
      // later update writes to a fresh copy instead (Slice::Writable).
      const auto& ptr = slices_[{h.keys(i), h.offsets(i)}].weights_ptr;
      out.push_back(Frame::Borrow(ptr->data(), ptr->size() * sizeof(float), ptr));
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

  void Apply(int64_t key, int64_t offset, Slice& s, absl::Span<const float> grad) {
    // Negative keys are plain sums (e.g. metrics), never optimized.
    if (optimizer_ != nullptr && key >= 0) {
      optimizer_->Update(key, offset, absl::MakeSpan(s.Writable()), grad);
    } else if (sync_) {
      std::copy(grad.begin(), grad.end(), s.Writable().begin());  // Store the sum.
    } else {
      std::vector<float>& w = s.Writable();
      for (size_t i = 0; i < grad.size(); ++i) w[i] += grad[i];
    }
  }

  void Handle(Message msg) {
    const proto::Header& h = msg.header;
    switch (h.type()) {
      case proto::INIT: {
        if (msg.frames.size() != static_cast<size_t>(h.keys_size())) {
          return Refuse(h, "INIT without values");
        }
        sync_ = h.sync_mode();
        for (int i = 0; i < h.keys_size(); ++i) {
          Slice& s = slices_[{h.keys(i), h.offsets(i)}];
          auto v = msg.frames[i].As<float>();
          s.weights_ptr = std::make_shared<std::vector<float>>(v.begin(), v.end());
          s.pending.assign(node_->num_workers(), nullptr);
          s.frame_of.assign(node_->num_workers(), -1);
          s.received = 0;
          s.merged.assign(v.size(), 0.0f);
        }
        return Reply(h, "");
      }
      case proto::SET_OPTIMIZER: {
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
            Apply(h.keys(i), h.offsets(i), slices_[{h.keys(i), h.offsets(i)}],
                  msg.frames[i].As<float>());
          }
          if (h.type() == proto::PUSH_PULL) return Reply(h, "", WeightsOf(h), &h);
          return Reply(h, "");
        }
        for (int i = 0; i < h.keys_size(); ++i) {
          if (slices_[{h.keys(i), h.offsets(i)}].pending[rank] != nullptr) {
            return Refuse(h, absl::StrCat("worker rank ", rank, " pushed key ", h.keys(i),
                                          " twice in one round"));
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
    const size_t n = s.weights().size();
    std::fill(s.merged.begin(), s.merged.end(), 0.0f);
    for (size_t r = 0; r < s.pending.size(); ++r) {
      auto g = s.pending[r]->msg.frames[s.frame_of[r]].As<float>();
      for (size_t i = 0; i < n; ++i) s.merged[i] += g[i];
    }
    Apply(id.first, id.second, s, s.merged);
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
