#include "scheduler/scheduler.h"

#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "cluster/cluster.h"
#include "glog/logging.h"
#include "scheduler/job_status.h"
#include "scheduler/membership.h"
#include "status/http_status_server.h"
#include "transport/transport.h"
#include "util/escape.h"
#include "util/mutex.h"

namespace pstrain {
namespace scheduler {
namespace {

using transport::Message;

// The scheduler receives control messages only (REGISTER, BARRIER,
// HEARTBEAT, SHUTDOWN: a few hundred bytes), so no frame needs more than
// this; it is also what a connection can make it hold before it has
// authenticated (transport/gate.h).
constexpr int64_t kMaxFrameBytes = int64_t{1} << 20;

// The scheduler never waits for room in a node's send queue: a node whose
// queue stays full is not reading, and its silence is detected by the
// heartbeat check instead.
constexpr absl::Time kNoWait = absl::InfinitePast();

// How long the scheduler lets its last broadcast (SHUTDOWN or ABORT) leave
// before it closes its sockets, which drops whatever is still queued
// (Transport::Stop; ZeroMQ's linger is 0). Nothing tells it when a message
// has reached a node: the transport has no flush and the protocol no
// acknowledgement for these. The grace is safe, not a hidden dependency:
// a node that misses the message does not hang, it finds the scheduler
// silent for its heartbeat timeout and exits non-zero (ClusterNode), which
// for ABORT is the intended outcome anyway and for SHUTDOWN turns a clean
// exit into a timed-out one. A true synchronisation needs a transport flush
// with a deadline (or an acknowledgement, a protocol change).
constexpr absl::Duration kLastBroadcastGrace = absl::Milliseconds(200);

// How often the loop publishes the job's status for the status server.
constexpr absl::Duration kStatusPeriod = absl::Milliseconds(250);

class Scheduler {
 public:
  explicit Scheduler(const SchedulerOptions& o)
      : o_(o),
        stats_(o.node_stats != nullptr ? o.node_stats : &own_stats_),
        stragglers_(o.stragglers) {}

  int Run() {
    std::string host;
    int port;
    absl::Status s = cluster::ParseHostPort(o_.address, &host, &port);
    if (!s.ok()) {
      LOG(ERROR) << "--scheduler_address: " << s.message();
      return 1;
    }
    transport::TransportOptions t;
    t.bind_host = host;
    t.bind_port = port;
    t.token = o_.token;
    t.max_frame_bytes = kMaxFrameBytes;
    // The scheduler exchanges control messages only: no TCP data link (its
    // listener would never be used).
    t.data_link = false;
    // Every node connects once; room for as many reconnecting.
    t.max_incoming_connections = 2 * (o_.num_servers + o_.num_workers) + 16;
    if (!o_.insecure_plaintext) {
      s = o_.curve_keys_dir.empty()
              ? transport::UseJobCurveKeys(&t)
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
    LOG(INFO) << "scheduler listening on " << tr_->address() << ", expecting "
              << o_.num_servers << " server(s) and " << o_.num_workers
              << " worker(s)";
    if (o_.on_listening != nullptr) o_.on_listening(tr_->address());
    MembershipOptions m;
    m.num_servers = o_.num_servers;
    m.num_workers = o_.num_workers;
    m.start_timeout = o_.start_timeout;
    m.heartbeat_timeout = o_.heartbeat_timeout;
    m.replace_workers = o_.replace_workers;
    m.replace_timeout = o_.replace_timeout;
    membership_ = std::make_unique<Membership>(m, absl::Now());
    if (o_.status_port >= 0) {
      PublishStatus(absl::Now());
      status::HttpStatusServerOptions so;
      so.bind_address = o_.status_bind;
      so.port = o_.status_port;
      so.token = o_.token;
      so.provider = [this] { return StatusNow(); };
      status_server_ = std::make_unique<status::HttpStatusServer>(so);
      s = status_server_->Start();
      if (!s.ok()) {
        LOG(ERROR) << "scheduler: --status_port: " << s.message();
        tr_->Stop();
        return 1;
      }
      if (o_.on_status_listening != nullptr) {
        o_.on_status_listening(status_server_->url());
      }
    }
    const int rc = Loop();
    if (status_server_ != nullptr) {
      // Served until the sockets close: the job's final state.
      PublishStatus(absl::Now(), rc == 0 ? "finished" : "aborted");
    }
    const auto st = tr_->stats();
    LOG(INFO) << "scheduler: " << st.received << " messages received, "
              << st.dropped_bad_token << " refused (wrong token), "
              << st.dropped_malformed << " malformed, "
              << st.dropped_wrong_sender + membership_->wrong_registers()
              << " speaking for another node; " << st.connections_refused
              << " connections refused, " << st.connections_over_limit
              << " over the limit";
    // A grace period, not a synchronisation: see kLastBroadcastGrace.
    absl::SleepFor(kLastBroadcastGrace);
    if (status_server_ != nullptr) status_server_->Stop();
    tr_->Stop();
    return rc;
  }

 private:
  // Takes the status the status server serves from the membership (the
  // loop thread's), with `state` for the job's when not empty. Per-node
  // stats reported with heartbeats are merged here, through
  // MembershipStatus's node ids (scheduler/job_status.h), before the
  // stragglers are marked.
  void PublishStatus(absl::Time now, const std::string& state = "") {
    status::JobStatus job = MembershipStatus(*membership_, now);
    MergeNodeStats(stats_->Snapshot(), &job);
    stragglers_.Mark(&job);
    if (!state.empty()) job.state = state;
    MutexLock l(&status_mu_);
    status_ = std::move(job);
    status_time_ = now;
    status_final_ = !state.empty();
  }

  // For the status server's threads: the last published status, its
  // heartbeat ages brought up to now while the job runs.
  status::JobStatus StatusNow() {
    MutexLock l(&status_mu_);
    status::JobStatus job = status_;
    if (!status_final_) {
      const double dt = absl::ToDoubleSeconds(absl::Now() - status_time_);
      for (auto& n : job.nodes) {
        if (n.heartbeat_age_s >= 0 && dt > 0) n.heartbeat_age_s += dt;
      }
    }
    return job;
  }

  void Broadcast(proto::MessageType type, const std::string& error = "",
                 const std::string& barrier = "", bool servers_only = false) {
    for (const auto& [id, n] : membership_->members()) {
      if (servers_only && n.info.role() != proto::SERVER) continue;
      Message m;
      m.header.set_type(type);
      m.header.set_sender(cluster::kSchedulerId);
      m.header.set_error(error);
      m.header.set_barrier_name(barrier);
      m.header.set_priority(1 << 20);
      // For the nodes' clock offsets (timeline/timeline.h): now, and the
      // node's last heartbeat's clock and when it came.
      auto beat = beat_clock_.find(id);
      if (beat != beat_clock_.end()) {
        m.header.set_echo_clock_us(beat->second.first);
        m.header.set_echo_received_us(beat->second.second);
      }
      m.header.set_clock_us(absl::ToUnixMicros(absl::Now()));
      absl::Status s = tr_->Send(id, std::move(m), kNoWait);
      if (!s.ok()) LOG(WARNING) << "to " << Describe(n) << ": " << s;
    }
  }

  int Abort(const std::string& why) {
    LOG(ERROR) << "scheduler: aborting the job: " << why;
    Broadcast(proto::ABORT, why);
    return 1;
  }

  absl::Status ConnectTo(const Member& n) {
    return tr_->Connect(n.id, absl::StrCat(n.info.host(), ":", n.info.port()));
  }

  // Assigns ranks, connects to every node and sends the address book.
  absl::Status Start() {
    auto book = membership_->Start(
        absl::Now(), [this](const Member& n) { return ConnectTo(n); });
    if (!book.ok()) return book.status();
    for (const auto& [id, n] : membership_->members()) {
      Message m;
      m.header.set_type(proto::ADDRESS_BOOK);
      m.header.set_sender(cluster::kSchedulerId);
      *m.header.mutable_address_book() = *book;
      absl::Status s = tr_->Send(id, std::move(m), kNoWait);
      if (!s.ok()) return s;
    }
    for (const proto::NodeInfo& n : book->nodes()) stats_->AddNode(n);
    LOG(INFO) << "scheduler: all " << membership_->members().size()
              << " nodes registered; address book sent";
    return absl::OkStatus();
  }

  void HandleBarrier(int sender, const std::string& key) {
    auto release = membership_->EnterBarrier(sender, key);
    if (!release.ok()) {
      if (release.status().code() == absl::StatusCode::kPermissionDenied) {
        LOG_EVERY_N(WARNING, 100) << release.status().message();
      }
      return;
    }
    if (!release->empty() && key.rfind("workers:", 0) == 0) {
      ++workers_barriers_released_;
    }
    for (int id : *release) {
      Message m;
      m.header.set_type(proto::BARRIER);
      m.header.set_sender(cluster::kSchedulerId);
      m.header.set_barrier_name(key);
      m.header.set_priority(1 << 20);
      absl::Status s = tr_->Send(id, std::move(m), kNoWait);
      if (!s.ok()) LOG(WARNING) << "barrier reply: " << s;
    }
  }

  void HandleRegister(const proto::NodeInfo& info, const std::string& from) {
    absl::Status s = membership_->Register(info, from);
    switch (s.code()) {
      case absl::StatusCode::kOk:
        LOG(INFO) << "registered " << proto::Role_Name(info.role()) << " at "
                  << EscapeForLog(info.host()) << ":" << info.port() << " ("
                  << membership_->num_registered() << "/"
                  << o_.num_servers + o_.num_workers << ")";
        break;
      case absl::StatusCode::kAlreadyExists:
        break;  // A repeat.
      case absl::StatusCode::kPermissionDenied:
        LOG_EVERY_N(WARNING, 20)
            << s.message() << " (" << membership_->wrong_registers()
            << " so far)";
        break;
      default:
        LOG(WARNING) << s.message();
        break;
    }
  }

  int Loop() {
    absl::Time next_beat = absl::Now();
    absl::Time next_status = absl::Now();
    while (true) {
      const absl::Time now = absl::Now();
      if (status_server_ != nullptr && now >= next_status) {
        PublishStatus(now);
        next_status = now + kStatusPeriod;
      }
      absl::Status s = membership_->CheckStartDeadline(now);
      if (!s.ok()) return StartTimeout(std::string(s.message()));
      if (membership_->started() && now >= next_beat) {
        Broadcast(proto::HEARTBEAT);
        next_beat = now + o_.heartbeat_interval;
        for (const std::string& line : stragglers_.Update(stats_->Snapshot()))
          LOG(WARNING) << line;
        for (int id : membership_->SilentWorkers(now)) {
          const Member& m = membership_->members().at(id);
          const std::string how =
              absl::StrFormat("silent for %.1f s, heartbeat timeout %s",
                              absl::ToDoubleSeconds(now - m.last_seen),
                              absl::FormatDuration(o_.heartbeat_timeout));
          // launch reads this line (kDeadWorkerMarker) and replaces the
          // process.
          LOG(WARNING) << "scheduler: worker rank " << m.info.rank()
                       << " declared dead: " << Describe(m) << " " << how
                       << "; waiting up to "
                       << absl::FormatDuration(o_.replace_timeout)
                       << " for its replacement (--recovery=replace)";
          membership_->MarkWorkerDead(id, now, how);
        }
        s = membership_->CheckLiveness(now);
        if (!s.ok()) return Abort(std::string(s.message()));
        s = membership_->CheckReplaceDeadline(now);
        if (!s.ok()) return Abort(std::string(s.message()));
      }
      auto msg = tr_->Receive(now + absl::Milliseconds(50));
      if (!msg.ok()) continue;
      const proto::Header& h = msg->header;
      membership_->HeardFrom(h.sender(), absl::Now());
      switch (h.type()) {
        case proto::REGISTER: {
          if (membership_->started() && h.has_replace_rank()) {
            HandleReplacement(h.node(), msg->from, h.replace_rank());
            break;
          }
          if (membership_->started()) break;  // Duplicate.
          HandleRegister(h.node(), msg->from);
          if (membership_->all_registered()) {
            s = Start();
            if (!s.ok())
              return Abort(absl::StrCat("cannot reach a node: ", s.message()));
          }
          break;
        }
        case proto::BARRIER:
          HandleBarrier(h.sender(), h.barrier_name());
          break;
        case proto::SHUTDOWN: {
          if (!membership_->WorkerFinished(h.sender()).ok()) break;
          LOG(INFO) << Describe(membership_->members().at(h.sender()))
                    << " finished (" << membership_->num_finished_workers()
                    << "/" << o_.num_workers << ")";
          if (membership_->all_workers_finished()) {
            LOG(INFO)
                << "scheduler: every worker finished; shutting the job down";
            Broadcast(proto::SHUTDOWN);
            return 0;
          }
          break;
        }
        case proto::HEARTBEAT:
          if (h.clock_us() != 0 && membership_->members().count(h.sender())) {
            beat_clock_[h.sender()] = {h.clock_us(),
                                       absl::ToUnixMicros(absl::Now())};
          }
          RecordHeartbeat(h);
          break;
        default:
          break;
      }
    }
  }

  // A replacement worker's REGISTER (--recovery=replace): it takes the
  // rank, every node learns its new address.
  void HandleReplacement(const proto::NodeInfo& info, const std::string& from,
                         int rank) {
    const int id = 1 + o_.num_servers + rank;
    auto before = membership_->members().find(id);
    std::string was;
    if (before != membership_->members().end()) {
      const Member& m = before->second;
      if (absl::StrCat(m.info.host(), ":", m.info.port()) == from) return;
      was = absl::StrCat(
          EscapeForLog(m.info.host()), ":", m.info.port(),
          m.dead_since == absl::InfinitePast()
              ? absl::StrFormat(
                    ", last heard from %.1f s before",
                    absl::ToDoubleSeconds(absl::Now() - m.last_seen))
              : absl::StrFormat(
                    ", declared dead %.1f s before",
                    absl::ToDoubleSeconds(absl::Now() - m.dead_since)));
    }
    auto replaced = membership_->Replace(info, from, rank, absl::Now());
    if (!replaced.ok()) {
      LOG(WARNING) << "scheduler: " << replaced.status().message();
      return;
    }
    const Member& m = membership_->members().at(*replaced);
    absl::Status s =
        tr_->Reconnect(m.id, absl::StrCat(m.info.host(), ":", m.info.port()));
    if (!s.ok()) {
      LOG(WARNING) << "scheduler: replacement " << Describe(m) << ": " << s;
      return;
    }
    const proto::AddressBook book = membership_->Book();
    for (const auto& [nid, n] : membership_->members()) {
      Message msg;
      msg.header.set_type(proto::ADDRESS_BOOK);
      msg.header.set_sender(cluster::kSchedulerId);
      msg.header.set_priority(1 << 20);
      *msg.header.mutable_address_book() = book;
      if (nid == m.id) {
        msg.header.set_barriers_released(workers_barriers_released_);
      }
      s = tr_->Send(nid, std::move(msg), kNoWait);
      if (!s.ok())
        LOG(WARNING) << "address book to " << Describe(n) << ": " << s;
    }
    LOG(WARNING) << "scheduler: worker rank " << rank << " replaced: now "
                 << Describe(m) << " (was " << was << "; replacement "
                 << m.replacements << " of this rank); "
                 << workers_barriers_released_
                 << " worker barriers released so far";
  }

  // Keeps a started member's heartbeat time and stats (stats_).
  void RecordHeartbeat(const proto::Header& h) {
    if (!membership_->started()) return;
    auto it = membership_->members().find(h.sender());
    if (it == membership_->members().end()) return;
    const proto::NodeInfo& info = it->second.info;
    stats_->Heartbeat(info.role(), info.rank(), absl::Now(),
                      h.has_stats() ? &h.stats() : nullptr);
  }

  // Tells whoever did register, so they exit too.
  int StartTimeout(const std::string& why) {
    membership_->AddUnrankedForAbort(
        absl::Now(), [this](const Member& n) { return ConnectTo(n); });
    return Abort(why);
  }

  const SchedulerOptions o_;
  // The heartbeat stats: o_.node_stats, or own_stats_.
  NodeStatsTable own_stats_;
  NodeStatsTable* const stats_;
  // Loop thread only.
  StragglerDetector stragglers_;
  std::unique_ptr<transport::Transport> tr_;
  std::unique_ptr<Membership> membership_;  // Made when the loop starts.
  // By member id: the clock_us of its last heartbeat and this clock when
  // it came (echoed on the broadcasts for the nodes' clock offsets).
  std::map<int, std::pair<int64_t, int64_t>> beat_clock_;
  // "workers:" barriers released so far (told to replacements).
  int64_t workers_barriers_released_ = 0;
  Mutex status_mu_;
  status::JobStatus status_ ABSL_GUARDED_BY(status_mu_);
  absl::Time status_time_ ABSL_GUARDED_BY(status_mu_);
  bool status_final_ ABSL_GUARDED_BY(status_mu_) = false;
  // Started before the loop when o_.status_port >= 0; its threads call
  // StatusNow(). Last, so it is stopped before what it reads goes away.
  std::unique_ptr<status::HttpStatusServer> status_server_;
};

}  // namespace

int Run(const SchedulerOptions& options) { return Scheduler(options).Run(); }

}  // namespace scheduler
}  // namespace pstrain
