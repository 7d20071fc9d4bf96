#include "server/server.h"

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "glog/logging.h"
#include "server/shard.h"
#include "server/time_split.h"

namespace pstrain {
namespace server {
namespace {

using transport::Message;

// Receipts (Header.receipt) carry no data and return a worker's send
// credit: ahead of every reply but the cluster's control messages.
constexpr int kReceiptPriority = 1 << 18;

ShardOptions ShardOptionsFor(const cluster::ClusterNode& node,
                             bool keep_previous) {
  ShardOptions o;
  o.keep_previous = keep_previous;
  o.num_workers = node.num_workers();
  o.shared = &node.transport();
  o.timeline = node.timeline();
  return o;
}

// Serves data messages on the transport's I/O thread (no hand-off to
// another thread: a request is read, applied and answered in one go).
class Server {
 public:
  Server(std::unique_ptr<cluster::ClusterNode> node,
         ServerCheckpointOptions checkpoint, bool keep_previous)
      : node_(std::move(node)),
        shard_(ShardOptionsFor(*node_, keep_previous)),
        ckpt_(WithRank(std::move(checkpoint), node_->rank())),
        reply_track_(node_->timeline()->Track("reply")) {}

  int Serve() {
    node_->SetDataHandler([this](Message m) { Handle(std::move(m)); });
    int rc = 0;
    while (true) {
      absl::Status s = node_->WaitForShutdown(absl::Now() + absl::Seconds(1));
      if (s.code() == absl::StatusCode::kDeadlineExceeded) continue;
      if (s.ok()) {
        LOG(INFO) << "server rank " << node_->rank()
                  << ": job finished; exiting";
      } else {
        LOG(ERROR) << "server rank " << node_->rank() << ": " << s.message();
        rc = 1;
      }
      break;
    }
    node_->SetDataHandler(nullptr);  // No call of Handle() runs past here.
    LOG(INFO) << ServerTimeSplitLine(node_->rank(), split_.Totals(absl::Now()));
    // Push identity (--recovery=replace): with every step's round applied
    // once, the fewest rounds of a learned slice is the job's step count.
    LOG(INFO) << "server rank " << node_->rank() << ": "
              << shard_.min_learned_rounds()
              << " rounds applied to every learned slice; "
              << shard_.repeated_pushes()
              << " repeated push slices acknowledged without summing";
    LOG(INFO) << "server rank " << node_->rank() << ": " << refused_
              << " requests refused, " << refused_not_rank_zero_
              << " of them INIT or SET_OPTIMIZER from a node other than worker "
                 "rank 0";
    return rc;
  }

 private:
  void Send(Reply r) {
    // On the I/O thread: never waits (the request already counted).
    const absl::Time t0 = absl::Now();
    int64_t bytes = 0;
    for (const transport::Frame& f : r.msg.frames) bytes += f.size();
    split_.AddBytes(0, bytes);
    const int to = r.to;
    timeline::EventArgs args;
    if (r.step > 0) {
      args.ints = {{"bytes", bytes},
                   {"worker", node_->WorkerRank(to)},
                   {"step", r.step}};
      args.keys.assign(r.msg.header.keys().begin(), r.msg.header.keys().end());
    }
    absl::Status s = node_->Send(to, std::move(r.msg), absl::InfinitePast());
    if (!s.ok()) {
      LOG_EVERY_N(WARNING, 100) << "reply to node " << to << ": " << s;
    }
    const absl::Time t1 = absl::Now();
    send_s_ += absl::ToDoubleSeconds(t1 - t0);
    if (r.step > 0) {
      node_->timeline()->Add(reply_track_, "reply", t0, t1, std::move(args));
    }
  }

  // An empty (success) reply to `req`.
  void Ok(const proto::Header& req) {
    Send({req.sender(), MakeReply(req, "")});
  }

  void Refuse(const proto::Header& req, const std::string& why) {
    ++refused_;
    LOG_EVERY_N(WARNING, 100) << "server rank " << node_->rank() << ": refused "
                              << proto::MessageType_Name(req.type())
                              << " from node " << req.sender() << ": " << why;
    Send({req.sender(), MakeReply(req, why)});
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
    if (id == cluster::kSchedulerId) return "the scheduler";
    const int rank = node_->WorkerRank(id);
    if (rank >= 0) return absl::StrCat("worker rank ", rank);
    if (id >= 1 && id <= node_->num_servers())
      return absl::StrCat("server rank ", id - 1);
    return "not in the job";
  }

  // Handles `msg` and measures it (split_); publishes the split to the
  // heartbeats once a second.
  void Handle(Message msg) {
    const absl::Time t0 = absl::Now();
    split_.MessageBegins(t0);
    int64_t bytes = 0;
    for (const transport::Frame& f : msg.frames) bytes += f.size();
    split_.AddBytes(bytes, 0);
    const Shard::Times before = shard_.times();
    send_s_ = 0;
    Apply(std::move(msg));
    const absl::Time t1 = absl::Now();
    const Shard::Times& after = shard_.times();
    split_.MessageEnds(t1, after.sum_s - before.sum_s,
                       after.update_s - before.update_s, send_s_,
                       shard_.open_rounds() > 0);
    if (t1 - last_published_ >= kPublishEvery) {
      last_published_ = t1;
      const ServerTimes t = split_.Totals(t1);
      proto::NodeStats st;
      FillServerStats(t, &st);
      st.set_rounds_applied(shard_.min_learned_rounds());
      node_->SetHeartbeatStats(st);
      VLOG(1) << ServerTimeSplitLine(node_->rank(), t);
    }
  }

  void Apply(Message msg) {
    const proto::Header& h = msg.header;
    switch (h.type()) {
      case proto::INIT: {
        if (node_->WorkerRank(h.sender()) != 0) return RefuseNotRankZero(h);
        absl::Status s = shard_.Init(msg);
        if (!s.ok()) return Refuse(h, std::string(s.message()));
        return Ok(h);
      }
      case proto::SET_OPTIMIZER: {
        if (node_->WorkerRank(h.sender()) != 0) return RefuseNotRankZero(h);
        absl::Status s = shard_.SetOptimizer(h.optimizer());
        if (s.ok()) s = ckpt_.MaybeRestore(&shard_);
        if (!s.ok()) return Refuse(h, std::string(s.message()));
        return Ok(h);
      }
      case proto::CHECKPOINT: {
        if (node_->WorkerRank(h.sender()) != 0) return RefuseNotRankZero(h);
        absl::Status s = ckpt_.Save(h.checkpoint_step(), shard_);
        if (!s.ok()) return Refuse(h, std::string(s.message()));
        return Ok(h);
      }
      case proto::PULL: {
        auto r = shard_.Pull(h);
        if (!r.ok()) return Refuse(h, std::string(r.status().message()));
        return Send({h.sender(), std::move(*r)});
      }
      case proto::PUSH:
      case proto::PUSH_PULL: {
        replies_.clear();
        // A worker with a send credit wants to know at once that the
        // payload is here (made now: the shard takes `msg`).
        const int sender = h.sender();
        const uint64_t rid = h.request_id();
        Message receipt;
        if (h.want_receipt()) {
          receipt = MakeReply(h, "");
          receipt.header.set_receipt(true);
          receipt.header.set_priority(kReceiptPriority);
        }
        const bool want_receipt = h.want_receipt();
        // `msg` (and `h`) stay intact when the shard refuses the push.
        absl::Status s =
            shard_.Push(node_->WorkerRank(sender), std::move(msg), &replies_);
        if (!s.ok()) return Refuse(h, std::string(s.message()));
        if (want_receipt) {
          // Not needed when the answer is an empty ack sent right now.
          bool acked = false;
          for (const Reply& r : replies_) {
            acked |= r.to == sender && r.msg.header.request_id() == rid &&
                     r.msg.frames.empty();
          }
          if (!acked) Send({sender, std::move(receipt)});
        }
        // Several answers at once (a dist_sync round closed): highest
        // priority first; the transport keeps that order beyond its window.
        std::stable_sort(replies_.begin(), replies_.end(),
                         [](const Reply& a, const Reply& b) {
                           return a.msg.header.priority() >
                                  b.msg.header.priority();
                         });
        for (Reply& r : replies_) Send(std::move(r));
        replies_.clear();
        return;
      }
      default:
        return Refuse(h, absl::StrCat("unexpected message type ", h.type()));
    }
  }

  static ServerCheckpointOptions WithRank(ServerCheckpointOptions o, int rank) {
    o.rank = rank;
    return o;
  }

  std::unique_ptr<cluster::ClusterNode> node_;
  Shard shard_;
  ServerCheckpointer ckpt_;
  // Push acknowledgements to send; kept to reuse its memory.
  std::vector<Reply> replies_;
  int64_t refused_ = 0;
  int64_t refused_not_rank_zero_ = 0;
  // The time split (I/O thread; read by Serve() once no handler runs).
  static constexpr absl::Duration kPublishEvery = absl::Seconds(1);
  ServerTimeSplit split_;
  double send_s_ = 0;  // Of the message being handled.
  absl::Time last_published_ = absl::InfinitePast();
  const int reply_track_;  // On node_->timeline().
};

}  // namespace

int Run(const ServerOptions& options) {
  cluster::ClusterOptions c = options.cluster;
  c.role = proto::SERVER;
  auto node = cluster::ClusterNode::Start(c);
  if (!node.ok()) {
    LOG(ERROR) << "server: " << node.status().message();
    return 1;
  }
  return Server(std::move(*node), options.checkpoint, options.keep_previous)
      .Serve();
}

}  // namespace server
}  // namespace pstrain
