// Membership in process, without sockets: simulated nodes register, enter
// barriers, beat and fall silent, on a clock the test sets.
#include "scheduler/membership.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/messages.pb.h"

namespace pstrain {
namespace scheduler {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

const absl::Time kT0 = absl::FromUnixSeconds(1000000);

proto::NodeInfo Node(proto::Role role, const std::string& host, int port) {
  proto::NodeInfo n;
  n.set_role(role);
  n.set_host(host);
  n.set_port(port);
  return n;
}

std::string Address(const proto::NodeInfo& n) {
  return absl::StrCat(n.host(), ":", n.port());
}

class MembershipTest : public ::testing::Test {
 protected:
  void Make(int servers, int workers, bool replace = false) {
    MembershipOptions o;
    o.replace_workers = replace;
    o.replace_timeout = absl::Seconds(5);
    o.num_servers = servers;
    o.num_workers = workers;
    o.start_timeout = absl::Seconds(30);
    o.heartbeat_timeout = absl::Seconds(10);
    m_ = std::make_unique<Membership>(o, kT0);
  }

  // Registers `n` from its own address.
  absl::Status Register(const proto::NodeInfo& n) {
    return m_->Register(n, Address(n));
  }

  // Starts the job, recording every connect.
  void Start(absl::Time now = kT0) {
    auto book = m_->Start(now, [&](const Member& n) {
      connected_.push_back(n.id);
      return absl::OkStatus();
    });
    ASSERT_TRUE(book.ok()) << book.status();
    book_ = *book;
  }

  // Registers 2 servers and 3 workers, out of order, and starts.
  void StartTwoByThree(bool replace = false) {
    Make(2, 3, replace);
    ASSERT_TRUE(Register(Node(proto::WORKER, "b", 1)).ok());
    ASSERT_TRUE(Register(Node(proto::SERVER, "b", 5)).ok());
    ASSERT_TRUE(Register(Node(proto::WORKER, "a", 9)).ok());
    ASSERT_TRUE(Register(Node(proto::SERVER, "a", 7)).ok());
    ASSERT_FALSE(m_->all_registered());
    ASSERT_TRUE(Register(Node(proto::WORKER, "a", 2)).ok());
    ASSERT_TRUE(m_->all_registered());
    Start();
  }

  std::unique_ptr<Membership> m_;
  std::vector<int> connected_;
  proto::AddressBook book_;
};

TEST_F(MembershipTest, RanksByRoleThenHostThenPort) {
  StartTwoByThree();
  EXPECT_TRUE(m_->started());
  // Servers get ids 1..2, workers 3..5, each in rank order.
  EXPECT_THAT(connected_, ElementsAre(1, 2, 3, 4, 5));
  ASSERT_EQ(book_.nodes_size(), 5);
  const std::vector<std::string> want = {"a:7", "b:5", "a:2", "a:9", "b:1"};
  const std::vector<int> ranks = {0, 1, 0, 1, 2};
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(Address(book_.nodes(i)), want[i]) << i;
    EXPECT_EQ(book_.nodes(i).rank(), ranks[i]) << i;
    const Member& member = m_->members().at(i + 1);
    EXPECT_EQ(member.id, i + 1);
    EXPECT_EQ(member.info.rank(), ranks[i]);
    EXPECT_EQ(member.last_seen, kT0);
  }
  EXPECT_EQ(Describe(m_->members().at(1)), "server rank 0 at a:7");
  EXPECT_EQ(Describe(m_->members().at(5)), "worker rank 2 at b:1");
}

TEST_F(MembershipTest, DuplicateLateExtraAndForeignRegistrationsAreRefused) {
  Make(1, 1);
  const proto::NodeInfo w = Node(proto::WORKER, "h", 1);
  ASSERT_TRUE(Register(w).ok());
  EXPECT_EQ(Register(w).code(), absl::StatusCode::kAlreadyExists);
  absl::Status s = Register(Node(proto::WORKER, "h", 2));
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("extra WORKER at h:2"));
  s = Register(Node(proto::SCHEDULER, "h", 3));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  // A node registers only itself.
  s = m_->Register(Node(proto::SERVER, "h", 4), "h:1");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(s.message(), HasSubstr("came from 'h:1'"));
  EXPECT_EQ(m_->wrong_registers(), 1);
  // Peer strings are escaped.
  s = m_->Register(Node(proto::SERVER, "h\n", 4), "x");
  EXPECT_THAT(s.message(), ::testing::Not(HasSubstr("\n")));
  EXPECT_EQ(m_->num_registered(), 1);
  ASSERT_TRUE(Register(Node(proto::SERVER, "h", 4)).ok());
  Start();
  // Once started, even a node of the job registering again is a repeat,
  // and so is a newcomer.
  EXPECT_EQ(Register(w).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(Register(Node(proto::WORKER, "late", 1)).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(m_->members().size(), 2u);
}

TEST_F(MembershipTest, StartStopsAtTheFirstNodeItCannotReach) {
  Make(1, 2);
  ASSERT_TRUE(Register(Node(proto::SERVER, "s", 1)).ok());
  ASSERT_TRUE(Register(Node(proto::WORKER, "w", 1)).ok());
  ASSERT_TRUE(Register(Node(proto::WORKER, "w", 2)).ok());
  auto book = m_->Start(kT0, [](const Member& n) {
    return n.id == 3 ? absl::UnavailableError("no route") : absl::OkStatus();
  });
  EXPECT_EQ(book.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(m_->started());
  // The abort goes to those it did reach.
  EXPECT_EQ(m_->members().size(), 2u);
  EXPECT_EQ(m_->members().count(3), 0u);
}

TEST_F(MembershipTest, BarrierCompletesWhenEveryGroupMemberArrives) {
  StartTwoByThree();
  // Workers are ids 3..5.
  auto r = m_->EnterBarrier(3, "workers:init");
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(*r, IsEmpty());
  r = m_->EnterBarrier(5, "workers:init");
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(*r, IsEmpty());
  // Entering twice counts once.
  EXPECT_THAT(*m_->EnterBarrier(5, "workers:init"), IsEmpty());
  // Another barrier is independent.
  EXPECT_THAT(*m_->EnterBarrier(1, "all:x"), IsEmpty());
  r = m_->EnterBarrier(4, "workers:init");
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(*r, ElementsAre(3, 4, 5));
  // The name can be used again.
  EXPECT_THAT(*m_->EnterBarrier(3, "workers:init"), IsEmpty());
  // Servers only.
  EXPECT_THAT(*m_->EnterBarrier(2, "servers:s"), IsEmpty());
  EXPECT_THAT(*m_->EnterBarrier(1, "servers:s"), ElementsAre(1, 2));
  // All five for "all".
  for (int id = 2; id <= 4; ++id)
    EXPECT_THAT(*m_->EnterBarrier(id, "all:x"), IsEmpty());
  EXPECT_THAT(*m_->EnterBarrier(5, "all:x"), ElementsAre(1, 2, 3, 4, 5));
}

TEST_F(MembershipTest, BarrierFromANonMemberOrBeforeStartIsRefused) {
  Make(1, 1);
  EXPECT_EQ(m_->EnterBarrier(2, "workers:a").status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(Register(Node(proto::SERVER, "s", 1)).ok());
  ASSERT_TRUE(Register(Node(proto::WORKER, "w", 1)).ok());
  Start();
  auto r = m_->EnterBarrier(1, "workers:a");  // A server.
  EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(r.status().message(), HasSubstr("from node 1, not a member"));
  EXPECT_EQ(m_->EnterBarrier(77, "all:a").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(m_->EnterBarrier(2, "nosuchgroup:a").status().code(),
            absl::StatusCode::kPermissionDenied);
  // The refusals left nothing behind: the worker alone completes it.
  EXPECT_THAT(*m_->EnterBarrier(2, "workers:a"), ElementsAre(2));
}

TEST_F(MembershipTest, ANodeMissingHeartbeatsIsDeclaredDeadByName) {
  StartTwoByThree();
  const absl::Time later = kT0 + absl::Seconds(9);
  for (int id = 1; id <= 5; ++id) {
    if (id != 2) m_->HeardFrom(id, later);
  }
  EXPECT_TRUE(m_->CheckLiveness(kT0 + absl::Seconds(10)).ok());
  absl::Status s = m_->CheckLiveness(kT0 + absl::Seconds(12));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(
      s.message(),
      HasSubstr("node dead: server rank 1 at b:5 has been silent for 12.0 s"));
  EXPECT_THAT(s.message(), HasSubstr("heartbeat timeout 10s"));
  // Unknown ids are ignored; a beat revives nothing that is not a member.
  m_->HeardFrom(99, kT0 + absl::Seconds(12));
  m_->HeardFrom(2, kT0 + absl::Seconds(12));
  EXPECT_TRUE(m_->CheckLiveness(kT0 + absl::Seconds(12)).ok());
}

TEST_F(MembershipTest, FinishedWorkersAreNotDeclaredDead) {
  StartTwoByThree();
  EXPECT_EQ(m_->WorkerFinished(1).code(),
            absl::StatusCode::kNotFound);  // A server.
  EXPECT_EQ(m_->WorkerFinished(42).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(m_->WorkerFinished(4).ok());
  ASSERT_TRUE(m_->WorkerFinished(4).ok());  // Repeats are harmless.
  EXPECT_EQ(m_->num_finished_workers(), 1);
  for (int id : {1, 2, 3, 5}) m_->HeardFrom(id, kT0 + absl::Seconds(20));
  EXPECT_TRUE(m_->CheckLiveness(kT0 + absl::Seconds(25)).ok());
  ASSERT_TRUE(m_->WorkerFinished(3).ok());
  EXPECT_FALSE(m_->all_workers_finished());
  ASSERT_TRUE(m_->WorkerFinished(5).ok());
  EXPECT_TRUE(m_->all_workers_finished());
}

TEST_F(MembershipTest, ReplaceModeMarksASilentWorkerDeadAndTakesAReplacement) {
  StartTwoByThree(/*replace=*/true);
  // Worker rank 1 (id 4, a:9) falls silent; the others beat.
  for (int id : {1, 2, 3, 5}) m_->HeardFrom(id, kT0 + absl::Seconds(11));
  EXPECT_THAT(m_->SilentWorkers(kT0 + absl::Seconds(10)), IsEmpty());
  EXPECT_THAT(m_->SilentWorkers(kT0 + absl::Seconds(11)), ElementsAre(4));
  m_->MarkWorkerDead(4, kT0 + absl::Seconds(11), "silent for 11.0 s");
  m_->MarkWorkerDead(1, kT0 + absl::Seconds(11), "a server");  // No-op.
  EXPECT_THAT(m_->SilentWorkers(kT0 + absl::Seconds(12)), IsEmpty());
  // A dead worker does not abort the job; only the replace deadline does.
  EXPECT_TRUE(m_->CheckLiveness(kT0 + absl::Seconds(12)).ok());
  EXPECT_TRUE(m_->CheckReplaceDeadline(kT0 + absl::Seconds(16)).ok());
  absl::Status late = m_->CheckReplaceDeadline(kT0 + absl::Seconds(17));
  EXPECT_EQ(late.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(late.message(),
              HasSubstr("worker rank 1 at a:9 died (silent for 11.0 s) and no "
                        "replacement registered within 5s"));
  // Refused: another role, a rank outside the job, a forged address.
  proto::NodeInfo next = Node(proto::WORKER, "c", 4);
  EXPECT_EQ(
      m_->Replace(Node(proto::SERVER, "c", 4), "c:4", 1, kT0).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m_->Replace(next, "c:4", 3, kT0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m_->Replace(next, "d:4", 1, kT0).status().code(),
            absl::StatusCode::kPermissionDenied);
  // The replacement takes rank 1 and id 4 at its own address.
  auto id = m_->Replace(next, "c:4", 1, kT0 + absl::Seconds(13));
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, 4);
  const Member& m = m_->members().at(4);
  EXPECT_EQ(m.info.rank(), 1);
  EXPECT_EQ(Address(m.info), "c:4");
  EXPECT_EQ(m.replacements, 1);
  EXPECT_TRUE(m_->CheckReplaceDeadline(kT0 + absl::Seconds(60)).ok());
  const proto::AddressBook book = m_->Book();
  ASSERT_EQ(book.nodes_size(), 5);
  EXPECT_EQ(Address(book.nodes(3)), "c:4");
  EXPECT_EQ(book.nodes(3).rank(), 1);
  // It beats like any member; silent again, it is found again.
  for (int id : {1, 2, 3, 5}) m_->HeardFrom(id, kT0 + absl::Seconds(24));
  EXPECT_THAT(m_->SilentWorkers(kT0 + absl::Seconds(24)), ElementsAre(4));
}

TEST_F(MembershipTest, WithoutReplaceModeAReplacementIsRefused) {
  StartTwoByThree();
  EXPECT_EQ(
      m_->Replace(Node(proto::WORKER, "c", 4), "c:4", 1, kT0).status().code(),
      absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(m_->SilentWorkers(kT0 + absl::Seconds(60)), IsEmpty());
}

TEST_F(MembershipTest, StartTimeoutNamesWhoIsMissingAndTellsWhoArrived) {
  Make(2, 2);
  ASSERT_TRUE(Register(Node(proto::SERVER, "s", 1)).ok());
  ASSERT_TRUE(Register(Node(proto::WORKER, "w", 1)).ok());
  EXPECT_TRUE(m_->CheckStartDeadline(kT0 + absl::Seconds(30)).ok());
  absl::Status s = m_->CheckStartDeadline(kT0 + absl::Seconds(31));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(
      s.message(),
      HasSubstr("start timeout after 30s: missing 1 of 2 server(s) and 1 of "
                "2 worker(s); arrived: SERVER@s:1, WORKER@w:1"));
  std::vector<int> ids;
  m_->AddUnrankedForAbort(kT0, [&](const Member& n) {
    ids.push_back(n.id);
    return n.id == kFirstUnrankedId ? absl::OkStatus()
                                    : absl::UnavailableError("gone");
  });
  EXPECT_THAT(ids, ElementsAre(kFirstUnrankedId, kFirstUnrankedId + 1));
  ASSERT_EQ(m_->members().size(), 1u);
  EXPECT_EQ(m_->members().begin()->first, kFirstUnrankedId);
}

TEST_F(MembershipTest, NoStartTimeoutOnceStarted) {
  StartTwoByThree();
  EXPECT_TRUE(m_->CheckStartDeadline(kT0 + absl::Hours(1)).ok());
}

}  // namespace
}  // namespace scheduler
}  // namespace pstrain
