#include "scheduler/scheduler.h"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "glog/logging.h"
#include "transport/cluster.h"
#include "transport/transport.h"
#include "util/escape.h"

namespace pstrain {
namespace scheduler {
namespace {

using transport::Message;

struct Node {
  proto::NodeInfo info;
  int id = -1;
  absl::Time last_seen;
  bool finished = false;
};

// The host comes from the node's REGISTER: escaped (it is logged).
std::string Describe(const Node& n) {
  return absl::StrCat(n.info.role() == proto::SERVER ? "server" : "worker",
                      " rank ", n.info.rank(), " at ",
                      EscapeForLog(n.info.host()), ":", n.info.port());
}

// The scheduler receives control messages only (REGISTER, BARRIER,
// HEARTBEAT, SHUTDOWN: a few hundred bytes), so no frame needs more than
// this; it is also what a connection can make it hold before it has
// authenticated (transport/gate.h).
constexpr int64_t kMaxFrameBytes = int64_t{1} << 20;

// The scheduler never waits for room in a node's send queue: a node whose
// queue stays full is not reading, and its silence is detected by the
// heartbeat check instead.
constexpr absl::Time kNoWait = absl::InfinitePast();

class Scheduler {
 public:
  explicit Scheduler(const SchedulerOptions& o) : o_(o) {}

  int Run() {
    std::string host;
    int port;
    absl::Status s = transport::ParseHostPort(o_.address, &host, &port);
    if (!s.ok()) {
      LOG(ERROR) << "--scheduler_address: " << s.message();
      return 1;
    }
    transport::TransportOptions t;
    t.bind_host = host;
    t.bind_port = port;
    t.token = o_.token;
    t.max_frame_bytes = kMaxFrameBytes;
    // Every node connects once; room for as many reconnecting.
    t.max_incoming_connections = 2 * (o_.num_servers + o_.num_workers) + 16;
    if (!o_.insecure_plaintext) {
      s = o_.curve_keys_dir.empty() ? transport::UseJobCurveKeys(&t)
                                    : transport::UseCurveKeysDir(o_.curve_keys_dir, &t);
      if (!s.ok()) {
        LOG(ERROR) << "scheduler: " << s.message();
        return 1;
      }
    }
    auto tr = transport::Transport::Create(t);
    if (!tr.ok()) {
      LOG(ERROR) << "scheduler: " << tr.status().message();
      return 1;
    }
    tr_ = std::move(*tr);
    LOG(INFO) << "scheduler listening on " << tr_->address() << ", expecting " << o_.num_servers
              << " server(s) and " << o_.num_workers << " worker(s)";
    if (o_.on_listening != nullptr) o_.on_listening(tr_->address());
    const int rc = Loop();
    const auto st = tr_->stats();
    LOG(INFO) << "scheduler: " << st.received << " messages received, "
              << st.dropped_bad_token << " refused (wrong token), "
              << st.dropped_malformed << " malformed, "
              << st.dropped_wrong_sender + wrong_register_ << " speaking for another node; "
              << st.connections_refused << " connections refused, "
              << st.connections_over_limit << " over the limit";
    // Let the last broadcast leave before the sockets close.
    absl::SleepFor(absl::Milliseconds(200));
    tr_->Stop();
    return rc;
  }

 private:
  void Broadcast(proto::MessageType type, const std::string& error = "",
                 const std::string& barrier = "", bool servers_only = false) {
    for (const auto& [id, n] : nodes_) {
      if (servers_only && n.info.role() != proto::SERVER) continue;
      Message m;
      m.header.set_type(type);
      m.header.set_sender(transport::kSchedulerId);
      m.header.set_error(error);
      m.header.set_barrier_name(barrier);
      m.header.set_priority(1 << 20);
      absl::Status s = tr_->Send(id, std::move(m), kNoWait);
      if (!s.ok()) LOG(WARNING) << "to " << Describe(n) << ": " << s;
    }
  }

  int Abort(const std::string& why) {
    LOG(ERROR) << "scheduler: aborting the job: " << why;
    Broadcast(proto::ABORT, why);
    return 1;
  }

  // Assigns ranks (by role, then host, then port), connects to every node
  // and sends the address book.
  absl::Status Start() {
    std::vector<proto::NodeInfo> servers, workers;
    for (const auto& [key, info] : registered_) {
      (info.role() == proto::SERVER ? servers : workers).push_back(info);
    }
    auto order = [](const proto::NodeInfo& a, const proto::NodeInfo& b) {
      return std::make_tuple(a.host(), a.port()) < std::make_tuple(b.host(), b.port());
    };
    std::sort(servers.begin(), servers.end(), order);
    std::sort(workers.begin(), workers.end(), order);
    proto::AddressBook book;
    auto add = [&](std::vector<proto::NodeInfo>& list, int first_id) -> absl::Status {
      for (size_t r = 0; r < list.size(); ++r) {
        list[r].set_rank(static_cast<int>(r));
        *book.add_nodes() = list[r];
        Node n;
        n.info = list[r];
        n.id = first_id + static_cast<int>(r);
        n.last_seen = absl::Now();
        absl::Status s =
            tr_->Connect(n.id, absl::StrCat(list[r].host(), ":", list[r].port()));
        if (!s.ok()) return s;
        nodes_[n.id] = n;
      }
      return absl::OkStatus();
    };
    absl::Status s = add(servers, 1);
    if (s.ok()) s = add(workers, 1 + o_.num_servers);
    if (!s.ok()) return s;
    for (const auto& [id, n] : nodes_) {
      Message m;
      m.header.set_type(proto::ADDRESS_BOOK);
      m.header.set_sender(transport::kSchedulerId);
      *m.header.mutable_address_book() = book;
      s = tr_->Send(id, std::move(m), kNoWait);
      if (!s.ok()) return s;
    }
    LOG(INFO) << "scheduler: all " << nodes_.size() << " nodes registered; address book sent";
    return absl::OkStatus();
  }

  void HandleBarrier(int sender, const std::string& key) {
    const std::string group = key.substr(0, key.find(':'));
    std::set<int> members;
    for (const auto& [id, n] : nodes_) {
      const bool is_server = n.info.role() == proto::SERVER;
      if (group == "all" || (group == "servers" && is_server) || (group == "workers" && !is_server)) {
        members.insert(id);
      }
    }
    if (!members.count(sender)) {
      LOG_EVERY_N(WARNING, 100)
          << "barrier " << EscapeForLog(key) << " from node " << sender
          << ", not a member; ignored";
      return;
    }
    auto& entered = barriers_[key];
    entered.insert(sender);
    if (entered.size() < members.size()) return;
    for (int id : members) {
      Message m;
      m.header.set_type(proto::BARRIER);
      m.header.set_sender(transport::kSchedulerId);
      m.header.set_barrier_name(key);
      m.header.set_priority(1 << 20);
      absl::Status s = tr_->Send(id, std::move(m), kNoWait);
      if (!s.ok()) LOG(WARNING) << "barrier reply: " << s;
    }
    barriers_.erase(key);
  }

  int Loop() {
    const absl::Time start_deadline = absl::Now() + o_.start_timeout;
    absl::Time next_beat = absl::Now();
    bool started = false;
    while (true) {
      const absl::Time now = absl::Now();
      if (!started && now > start_deadline) {
        return StartTimeout();
      }
      if (started && now >= next_beat) {
        Broadcast(proto::HEARTBEAT);
        next_beat = now + o_.heartbeat_interval;
        for (const auto& [id, n] : nodes_) {
          if (n.finished) continue;
          const absl::Duration silent = now - n.last_seen;
          if (silent > o_.heartbeat_timeout) {
            return Abort(absl::StrCat("node dead: ", Describe(n), " has been silent for ",
                                      absl::StrFormat("%.1f", absl::ToDoubleSeconds(silent)),
                                      " s (heartbeat timeout ",
                                      absl::FormatDuration(o_.heartbeat_timeout), ")"));
          }
        }
      }
      auto msg = tr_->Receive(now + absl::Milliseconds(50));
      if (!msg.ok()) continue;
      const proto::Header& h = msg->header;
      auto it = nodes_.find(h.sender());
      if (it != nodes_.end()) it->second.last_seen = absl::Now();
      switch (h.type()) {
        case proto::REGISTER: {
          if (started) break;  // Duplicate.
          const proto::NodeInfo& info = h.node();
          if (info.role() != proto::SERVER && info.role() != proto::WORKER) {
            LOG(WARNING) << "REGISTER with role " << info.role() << " ignored";
            break;
          }
          const std::string key = absl::StrCat(info.host(), ":", info.port());
          if (registered_.count(key)) break;
          const std::string where =
              absl::StrCat(EscapeForLog(info.host()), ":", info.port());
          if (msg->from != key) {
            // A node registers only itself: the address it claims is the
            // one its connection carries (its routing id).
            ++wrong_register_;
            LOG_EVERY_N(WARNING, 20)
                << "refused a REGISTER for " << where << " that came from '"
                << EscapeForLog(msg->from) << "' (" << wrong_register_ << " so far)";
            break;
          }
          int servers = 0, workers = 0;
          for (const auto& [k, i] : registered_) ++(i.role() == proto::SERVER ? servers : workers);
          if ((info.role() == proto::SERVER && servers >= o_.num_servers) ||
              (info.role() == proto::WORKER && workers >= o_.num_workers)) {
            LOG(WARNING) << "extra " << proto::Role_Name(info.role()) << " at "
                         << where << " refused: the job expects "
                         << o_.num_servers << " server(s) and "
                         << o_.num_workers << " worker(s)";
            break;
          }
          registered_[key] = info;
          LOG(INFO) << "registered " << proto::Role_Name(info.role()) << " at "
                    << where << " (" << registered_.size() << "/"
                    << o_.num_servers + o_.num_workers << ")";
          if (static_cast<int>(registered_.size()) == o_.num_servers + o_.num_workers) {
            absl::Status s = Start();
            if (!s.ok()) return Abort(absl::StrCat("cannot reach a node: ", s.message()));
            started = true;
          }
          break;
        }
        case proto::BARRIER:
          if (started) HandleBarrier(h.sender(), h.barrier_name());
          break;
        case proto::SHUTDOWN: {
          if (it == nodes_.end() || it->second.info.role() != proto::WORKER) break;
          it->second.finished = true;
          int done = 0;
          for (const auto& [id, n] : nodes_) done += n.finished && n.info.role() == proto::WORKER;
          LOG(INFO) << Describe(it->second) << " finished (" << done << "/" << o_.num_workers << ")";
          if (done == o_.num_workers) {
            LOG(INFO) << "scheduler: every worker finished; shutting the job down";
            Broadcast(proto::SHUTDOWN);
            return 0;
          }
          break;
        }
        default:
          break;  // Heartbeats only refresh last_seen.
      }
    }
  }

  int StartTimeout() {
    int servers = 0, workers = 0;
    std::vector<std::string> arrived;
    for (const auto& [key, info] : registered_) {
      ++(info.role() == proto::SERVER ? servers : workers);
      arrived.push_back(
          absl::StrCat(proto::Role_Name(info.role()), "@", EscapeForLog(key)));
    }
    const std::string why = absl::StrCat(
        "start timeout after ", absl::FormatDuration(o_.start_timeout), ": missing ",
        o_.num_servers - servers, " of ", o_.num_servers, " server(s) and ", o_.num_workers - workers,
        " of ", o_.num_workers, " worker(s); arrived: ",
        arrived.empty() ? "none" : absl::StrJoin(arrived, ", "));
    // Tell whoever did register, so they exit too.
    int id = 1000;
    for (const auto& [key, info] : registered_) {
      Node n;
      n.info = info;
      n.id = id++;
      if (tr_->Connect(n.id, key).ok()) nodes_[n.id] = n;
    }
    return Abort(why);
  }

  const SchedulerOptions o_;
  std::unique_ptr<transport::Transport> tr_;
  std::map<std::string, proto::NodeInfo> registered_;
  // REGISTERs refused because they named another node than their sender.
  int64_t wrong_register_ = 0;
  std::map<int, Node> nodes_;
  std::map<std::string, std::set<int>> barriers_;
};

}  // namespace

int Run(const SchedulerOptions& options) { return Scheduler(options).Run(); }

}  // namespace scheduler
}  // namespace pstrain
