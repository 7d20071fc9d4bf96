// The scheduler's view of the job (DESIGN.md, Node lifecycle), without
// sockets: who registered, the ranks and node ids it assigned, barriers,
// when each node was last heard from, which workers finished, and when the
// job must be aborted. The scheduler (scheduler.cc) feeds it what arrives
// and does what it answers: connect, send the address book, release a
// barrier, broadcast ABORT or SHUTDOWN.
//
// Registration: a node registers itself (the address it claims is the
// connection's routing id) once; when num_servers servers and num_workers
// workers have registered, Start() assigns ranks deterministically (by
// role, then rank hint where given, then host, then port) and node ids
// (servers 1..S, workers S+1..S+W). Refused registrations (wrong role, another
// node's address, one more than the job expects) are errors; repeats are
// AlreadyExists.
//
// Thread-compatible: the scheduler's loop thread calls every method.
#ifndef PSTRAIN_SCHEDULER_MEMBERSHIP_H_
#define PSTRAIN_SCHEDULER_MEMBERSHIP_H_

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/messages.pb.h"

namespace pstrain {
namespace scheduler {

// Transport peer ids for the nodes told of an abort before the job started
// (AddUnrankedForAbort): they never got a rank, hence no id of 1..S+W.
// Only these are connected then, so any ids would do; starting far above
// the ranked ids keeps them apart in logs.
constexpr int kFirstUnrankedId = 1000;

struct MembershipOptions {
  int num_servers = 1;
  int num_workers = 1;
  // Every expected node must register within this time of construction.
  absl::Duration start_timeout = absl::Seconds(60);
  // A started node silent this long is dead.
  absl::Duration heartbeat_timeout = absl::Seconds(60);
  // --recovery=replace: a dead worker is marked dead (MarkWorkerDead)
  // instead of ending the job, and a replacement may take its rank
  // (Replace) within replace_timeout.
  bool replace_workers = false;
  absl::Duration replace_timeout = absl::Seconds(60);
};

// A node of the job as the scheduler knows it.
struct Member {
  proto::NodeInfo info;   // With its rank once the job has started.
  int id = -1;            // Its transport peer id.
  absl::Time last_seen;   // Last message from it (or when it was added).
  bool finished = false;  // A worker that sent SHUTDOWN.
  // --recovery=replace: when the worker was declared dead (InfinitePast:
  // alive), and how.
  absl::Time dead_since = absl::InfinitePast();
  std::string how_dead;
  int replacements = 0;  // Of this rank so far.
};

// "server rank 0 at host:port", the host escaped (it came from the network).
std::string Describe(const Member& m);

class Membership {
 public:
  // `now`: when the start timeout starts counting.
  Membership(const MembershipOptions& options, absl::Time now);
  Membership(const Membership&) = delete;
  Membership& operator=(const Membership&) = delete;

  // A REGISTER of `info` that came in on the connection whose routing id is
  // `from`. OK: registered (all_registered() tells whether it was the
  // last). Errors, nothing registered: AlreadyExists for an address already
  // registered or any REGISTER once started (repeats, not worth a log
  // line); InvalidArgument for a role other than SERVER or WORKER;
  // PermissionDenied when `info` names another address than `from`
  // (counted in wrong_registers()); ResourceExhausted for a node beyond the
  // job's num_servers / num_workers. Messages escape peer strings.
  absl::Status Register(const proto::NodeInfo& info, const std::string& from);

  // Ranks every registered node, then calls `connect` for each, servers
  // first, in rank order; a node joins members() when its connect
  // succeeds. Returns the address book to send to every member, or the
  // first connect error (the job cannot start; members() holds the nodes
  // connected before it). `now` is their first last_seen.
  // REQUIRES: all_registered() && !started().
  absl::StatusOr<proto::AddressBook> Start(
      absl::Time now,
      const std::function<absl::Status(const Member&)>& connect);

  // The abort decision before the job started: DeadlineExceeded, naming who
  // is missing and who arrived, once `now` is past the start timeout
  // (never after Start()).
  absl::Status CheckStartDeadline(absl::Time now) const;
  // Before Start(), to tell the registered nodes of an abort: adds each,
  // with ids from kFirstUnrankedId up, whose `connect` succeeds.
  void AddUnrankedForAbort(
      absl::Time now,
      const std::function<absl::Status(const Member&)>& connect);

  // A message from node `id` (any type): it is alive. Unknown ids are
  // ignored.
  void HeardFrom(int id, absl::Time now);
  // The abort decision once started: Unavailable naming the first node
  // (by id) that has been silent longer than heartbeat_timeout at `now`
  // and for how long; finished workers are exempt.
  // Workers marked dead are exempt (replace_workers).
  absl::Status CheckLiveness(absl::Time now) const;

  // replace_workers: the started, unfinished, not yet dead workers silent
  // longer than heartbeat_timeout at `now` (to MarkWorkerDead).
  std::vector<int> SilentWorkers(absl::Time now) const;
  // Marks worker `id` dead at `now` (`how`: for the messages). No-op for
  // an id that is not a worker or is already dead.
  void MarkWorkerDead(int id, absl::Time now, const std::string& how);
  // The abort decision for replacements: DeadlineExceeded naming the rank,
  // its address, how it died and the wait, once a worker has been dead
  // longer than replace_timeout at `now`.
  absl::Status CheckReplaceDeadline(absl::Time now) const;
  // A REGISTER with Header.replace_rank after the start: the node `info`,
  // at `from`, takes worker rank `rank` (its id, finished flag cleared,
  // last_seen `now`, no longer dead). Returns the member's id.
  // FailedPrecondition before the start or without replace_workers;
  // InvalidArgument for a role other than WORKER or a rank outside the
  // job; PermissionDenied when `info` names another address than `from`.
  // The caller connects to the new address.
  absl::StatusOr<int> Replace(const proto::NodeInfo& info,
                              const std::string& from, int rank,
                              absl::Time now);
  // The address book of the started job (every member's info).
  proto::AddressBook Book() const;

  // Node `sender` entered barrier `key` ("group:name"; group is all,
  // servers or workers). Returns the ids to release when every member of
  // the group has entered it (the barrier is then forgotten, so its name
  // can be used again), else an empty list. FailedPrecondition before the
  // job started; PermissionDenied when `sender` is not in the group.
  absl::StatusOr<std::vector<int>> EnterBarrier(int sender,
                                                const std::string& key);

  // SHUTDOWN from node `id`: that worker is done. NotFound when `id` is
  // not a worker of the job (nothing changes). Repeats are harmless.
  absl::Status WorkerFinished(int id);
  int num_finished_workers() const;
  bool all_workers_finished() const {
    return num_finished_workers() == options_.num_workers;
  }

  bool started() const { return started_; }
  int num_registered() const { return static_cast<int>(registered_.size()); }
  bool all_registered() const {
    return num_registered() == options_.num_servers + options_.num_workers;
  }
  // The nodes registered so far, by their "host:port" (before Start(), the
  // only record of who arrived).
  const std::map<std::string, proto::NodeInfo>& registered() const {
    return registered_;
  }
  // REGISTERs refused because they named another node than their sender.
  int64_t wrong_registers() const { return wrong_registers_; }
  // The nodes to talk to, by id: the job's nodes once started (or the
  // unranked ones added for an abort).
  const std::map<int, Member>& members() const { return members_; }
  const MembershipOptions& options() const { return options_; }

 private:
  const MembershipOptions options_;
  const absl::Time start_deadline_;
  bool started_ = false;
  // Registered nodes by their "host:port".
  std::map<std::string, proto::NodeInfo> registered_;
  int64_t wrong_registers_ = 0;
  std::map<int, Member> members_;
  // Barriers in progress: who has entered each.
  std::map<std::string, std::set<int>> barriers_;
};

}  // namespace scheduler
}  // namespace pstrain

#endif  // PSTRAIN_SCHEDULER_MEMBERSHIP_H_
