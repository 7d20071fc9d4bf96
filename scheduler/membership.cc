#include "scheduler/membership.h"

#include <algorithm>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "glog/logging.h"
#include "util/escape.h"

namespace pstrain {
namespace scheduler {

std::string Describe(const Member& m) {
  return absl::StrCat(m.info.role() == proto::SERVER ? "server" : "worker",
                      " rank ", m.info.rank(), " at ",
                      EscapeForLog(m.info.host()), ":", m.info.port());
}

Membership::Membership(const MembershipOptions& options, absl::Time now)
    : options_(options), start_deadline_(now + options.start_timeout) {}

absl::Status Membership::Register(const proto::NodeInfo& info,
                                  const std::string& from) {
  if (started_) return absl::AlreadyExistsError("the job has started");
  if (info.role() != proto::SERVER && info.role() != proto::WORKER) {
    return absl::InvalidArgumentError(
        absl::StrCat("REGISTER with role ", info.role(), " ignored"));
  }
  const std::string key = absl::StrCat(info.host(), ":", info.port());
  const std::string where =
      absl::StrCat(EscapeForLog(info.host()), ":", info.port());
  if (registered_.count(key))
    return absl::AlreadyExistsError(absl::StrCat(where, " registered"));
  if (from != key) {
    // A node registers only itself: the address it claims is the one its
    // connection carries (its routing id).
    ++wrong_registers_;
    return absl::PermissionDeniedError(absl::StrCat("refused a REGISTER for ",
                                                    where, " that came from '",
                                                    EscapeForLog(from), "'"));
  }
  int servers = 0, workers = 0;
  for (const auto& [k, i] : registered_)
    ++(i.role() == proto::SERVER ? servers : workers);
  if ((info.role() == proto::SERVER && servers >= options_.num_servers) ||
      (info.role() == proto::WORKER && workers >= options_.num_workers)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("extra ", proto::Role_Name(info.role()), " at ", where,
                     " refused: the job expects ", options_.num_servers,
                     " server(s) and ", options_.num_workers, " worker(s)"));
  }
  registered_[key] = info;
  return absl::OkStatus();
}

absl::StatusOr<proto::AddressBook> Membership::Start(
    absl::Time now, const std::function<absl::Status(const Member&)>& connect) {
  CHECK(all_registered() && !started_);
  std::vector<proto::NodeInfo> servers, workers;
  for (const auto& [key, info] : registered_) {
    (info.role() == proto::SERVER ? servers : workers).push_back(info);
  }
  // Hinted nodes first, in hint order (ties and the rest by address).
  auto order = [](const proto::NodeInfo& a, const proto::NodeInfo& b) {
    auto hint = [](const proto::NodeInfo& n) {
      return n.has_rank_hint() ? int64_t{n.rank_hint()} : int64_t{1} << 40;
    };
    return std::make_tuple(hint(a), a.host(), a.port()) <
           std::make_tuple(hint(b), b.host(), b.port());
  };
  std::sort(servers.begin(), servers.end(), order);
  std::sort(workers.begin(), workers.end(), order);
  proto::AddressBook book;
  auto add = [&](std::vector<proto::NodeInfo>& list,
                 int first_id) -> absl::Status {
    for (size_t r = 0; r < list.size(); ++r) {
      list[r].set_rank(static_cast<int>(r));
      *book.add_nodes() = list[r];
      Member m;
      m.info = list[r];
      m.id = first_id + static_cast<int>(r);
      m.last_seen = now;
      absl::Status s = connect(m);
      if (!s.ok()) return s;
      members_[m.id] = m;
    }
    return absl::OkStatus();
  };
  absl::Status s = add(servers, 1);
  if (s.ok()) s = add(workers, 1 + options_.num_servers);
  if (!s.ok()) return s;
  started_ = true;
  return book;
}

absl::Status Membership::CheckStartDeadline(absl::Time now) const {
  if (started_ || now <= start_deadline_) return absl::OkStatus();
  int servers = 0, workers = 0;
  std::vector<std::string> arrived;
  for (const auto& [key, info] : registered_) {
    ++(info.role() == proto::SERVER ? servers : workers);
    arrived.push_back(
        absl::StrCat(proto::Role_Name(info.role()), "@", EscapeForLog(key)));
  }
  return absl::DeadlineExceededError(absl::StrCat(
      "start timeout after ", absl::FormatDuration(options_.start_timeout),
      ": missing ", options_.num_servers - servers, " of ",
      options_.num_servers, " server(s) and ", options_.num_workers - workers,
      " of ", options_.num_workers, " worker(s); arrived: ",
      arrived.empty() ? "none" : absl::StrJoin(arrived, ", ")));
}

void Membership::AddUnrankedForAbort(
    absl::Time now, const std::function<absl::Status(const Member&)>& connect) {
  int id = kFirstUnrankedId;
  for (const auto& [key, info] : registered_) {
    Member m;
    m.info = info;
    m.id = id++;
    m.last_seen = now;
    if (connect(m).ok()) members_[m.id] = m;
  }
}

void Membership::HeardFrom(int id, absl::Time now) {
  auto it = members_.find(id);
  if (it != members_.end()) it->second.last_seen = now;
}

absl::Status Membership::CheckLiveness(absl::Time now) const {
  for (const auto& [id, m] : members_) {
    if (m.finished || m.dead_since != absl::InfinitePast()) continue;
    const absl::Duration silent = now - m.last_seen;
    if (silent > options_.heartbeat_timeout) {
      return absl::UnavailableError(
          absl::StrCat("node dead: ", Describe(m), " has been silent for ",
                       absl::StrFormat("%.1f", absl::ToDoubleSeconds(silent)),
                       " s (heartbeat timeout ",
                       absl::FormatDuration(options_.heartbeat_timeout), ")"));
    }
  }
  return absl::OkStatus();
}

std::vector<int> Membership::SilentWorkers(absl::Time now) const {
  std::vector<int> silent;
  if (!started_ || !options_.replace_workers) return silent;
  for (const auto& [id, m] : members_) {
    if (m.info.role() != proto::WORKER || m.finished ||
        m.dead_since != absl::InfinitePast()) {
      continue;
    }
    if (now - m.last_seen > options_.heartbeat_timeout) silent.push_back(id);
  }
  return silent;
}

void Membership::MarkWorkerDead(int id, absl::Time now,
                                const std::string& how) {
  auto it = members_.find(id);
  if (it == members_.end() || it->second.info.role() != proto::WORKER ||
      it->second.dead_since != absl::InfinitePast()) {
    return;
  }
  it->second.dead_since = now;
  it->second.how_dead = how;
}

absl::Status Membership::CheckReplaceDeadline(absl::Time now) const {
  for (const auto& [id, m] : members_) {
    if (m.dead_since == absl::InfinitePast()) continue;
    const absl::Duration dead = now - m.dead_since;
    if (dead > options_.replace_timeout) {
      return absl::DeadlineExceededError(absl::StrCat(
          Describe(m), " died (", m.how_dead,
          ") and no replacement registered within ",
          absl::FormatDuration(options_.replace_timeout),
          " (--replace_timeout_s; dead for ",
          absl::StrFormat("%.1f", absl::ToDoubleSeconds(dead)), " s)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int> Membership::Replace(const proto::NodeInfo& info,
                                        const std::string& from, int rank,
                                        absl::Time now) {
  if (!started_ || !options_.replace_workers) {
    return absl::FailedPreconditionError(absl::StrCat(
        "a replacement for worker rank ", rank, " from ", EscapeForLog(from),
        started_ ? ", but the job does not run with --recovery=replace"
                 : " before the job started"));
  }
  if (info.role() != proto::WORKER) {
    return absl::InvalidArgumentError(
        absl::StrCat("a replacement that is not a worker, from ",
                     EscapeForLog(from), "; only workers are replaced"));
  }
  if (rank < 0 || rank >= options_.num_workers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a replacement for worker rank ", rank, " from ", EscapeForLog(from),
        "; the job has ranks 0..", options_.num_workers - 1));
  }
  const std::string claimed = absl::StrCat(info.host(), ":", info.port());
  if (claimed != from) {
    ++wrong_registers_;
    return absl::PermissionDeniedError(
        absl::StrCat("a replacement claiming ", EscapeForLog(claimed),
                     " came from ", EscapeForLog(from), "; refused"));
  }
  const int id = 1 + options_.num_servers + rank;
  Member& m = members_.at(id);
  m.info = info;
  m.info.set_rank(rank);
  m.last_seen = now;
  m.finished = false;
  m.dead_since = absl::InfinitePast();
  m.how_dead.clear();
  ++m.replacements;
  return id;
}

proto::AddressBook Membership::Book() const {
  proto::AddressBook book;
  for (const auto& [id, m] : members_) *book.add_nodes() = m.info;
  return book;
}

absl::StatusOr<std::vector<int>> Membership::EnterBarrier(
    int sender, const std::string& key) {
  if (!started_)
    return absl::FailedPreconditionError("the job has not started");
  const std::string group = key.substr(0, key.find(':'));
  std::vector<int> group_members;
  for (const auto& [id, m] : members_) {
    const bool is_server = m.info.role() == proto::SERVER;
    if (group == "all" || (group == "servers" && is_server) ||
        (group == "workers" && !is_server)) {
      group_members.push_back(id);
    }
  }
  if (!std::binary_search(group_members.begin(), group_members.end(), sender)) {
    return absl::PermissionDeniedError(
        absl::StrCat("barrier ", EscapeForLog(key), " from node ", sender,
                     ", not a member; ignored"));
  }
  auto& entered = barriers_[key];
  entered.insert(sender);
  if (entered.size() < group_members.size()) return std::vector<int>();
  barriers_.erase(key);
  return group_members;
}

absl::Status Membership::WorkerFinished(int id) {
  auto it = members_.find(id);
  if (it == members_.end() || it->second.info.role() != proto::WORKER) {
    return absl::NotFoundError(
        absl::StrCat("node ", id, " is not a worker of the job"));
  }
  it->second.finished = true;
  return absl::OkStatus();
}

int Membership::num_finished_workers() const {
  int done = 0;
  for (const auto& [id, m] : members_)
    done += m.finished && m.info.role() == proto::WORKER;
  return done;
}

}  // namespace scheduler
}  // namespace pstrain
