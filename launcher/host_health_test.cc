#include "launcher/host_health.h"

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "launcher/launcher.h"

namespace pstrain {
namespace launcher {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<Host> Hosts(const std::vector<int>& slots) {
  std::vector<Host> hosts;
  for (size_t i = 0; i < slots.size(); ++i) {
    hosts.push_back(Host(absl::StrCat("h", i), 22, "", slots[i]));
  }
  return hosts;
}

std::vector<std::string> Names(const std::vector<Host>& hosts) {
  std::vector<std::string> names;
  for (const Host& h : hosts) names.push_back(h.name);
  return names;
}

TEST(PlaceProcessesTest, WithoutSlotsIsRoundRobin) {
  auto placed = PlaceProcesses(Hosts({0, 0, 0}), 5);
  ASSERT_TRUE(placed.ok()) << placed.status();
  EXPECT_THAT(*placed, ElementsAre(0, 1, 2, 0, 1));
}

TEST(PlaceProcessesTest, FullHostsAreSkipped) {
  // h0 holds 1, h1 no limit, h2 holds 2.
  auto placed = PlaceProcesses(Hosts({1, 0, 2}), 6);
  ASSERT_TRUE(placed.ok()) << placed.status();
  EXPECT_THAT(*placed, ElementsAre(0, 1, 2, 1, 2, 1));
}

TEST(PlaceProcessesTest, TooFewSlotsIsAnError) {
  auto placed = PlaceProcesses(Hosts({2, 2}), 5);
  ASSERT_FALSE(placed.ok());
  EXPECT_THAT(std::string(placed.status().message()),
              HasSubstr("slots (4 on 2 host(s)) cannot hold the job's 5"));
  EXPECT_FALSE(PlaceProcesses({}, 1).ok());
}

TEST(LeaveOutFailedHostsTest, AHostThatFailedTwiceIsLeftOutWhenTheJobFits) {
  HostFailures failures = {{"h1", {"[worker 0 h1] was killed", "lost"}},
                           {"h2", {"once"}}};
  HostExclusion next = LeaveOutFailedHosts(Hosts({2, 2, 2, 2}), failures,
                                           /*servers=*/2, /*workers=*/3);
  EXPECT_THAT(Names(next.hosts), ElementsAre("h0", "h2", "h3"));
  ASSERT_EQ(next.messages.size(), 1u);
  EXPECT_EQ(next.messages[0],
            "leaving out host h1, which failed 2 times ([worker 0 h1] was "
            "killed; lost): the job's 2 server(s) and 3 worker(s) fit on the "
            "other 3 host(s)");
}

TEST(LeaveOutFailedHostsTest, AHostIsKeptWhenTheOthersCannotHoldTheJob) {
  HostFailures failures = {{"h0", {"a", "b", "c"}}, {"h2", {"a", "b"}}};
  // 4 hosts of 2 slots, 5 processes: one may go (6 slots left), not two.
  HostExclusion next = LeaveOutFailedHosts(Hosts({2, 2, 2, 2}), failures, 2, 3);
  EXPECT_THAT(Names(next.hosts), ElementsAre("h1", "h2", "h3"));
  ASSERT_EQ(next.messages.size(), 2u);
  EXPECT_THAT(next.message_hosts, ElementsAre("h0", "h2"));
  // The one with the most failures goes first.
  EXPECT_THAT(next.messages[0], HasSubstr("leaving out host h0, which failed "
                                          "3 times"));
  EXPECT_EQ(next.messages[1],
            "host h2 failed 2 times (a; b); kept: without it the hosts' slots "
            "(4 on 2 host(s)) cannot hold the job's 5 servers and workers");
}

TEST(LeaveOutFailedHostsTest, TheLastHostIsKeptAndHostsWithoutSlotsHoldAll) {
  HostFailures failures = {{"h0", {"a", "b"}}, {"h1", {"a", "b"}}};
  // No slots: one host holds any job, so only the last one stays.
  HostExclusion next = LeaveOutFailedHosts(Hosts({0, 0}), failures, 2, 3);
  EXPECT_THAT(Names(next.hosts), ElementsAre("h1"));
  ASSERT_EQ(next.messages.size(), 2u);
  EXPECT_THAT(next.messages[1],
              HasSubstr("host h1 failed 2 times (a; b); kept: it is the only "
                        "host left"));
  // Once is not enough; hosts are named by Host::ToString() (with a port).
  std::vector<Host> ported = {Host("a", 2222), Host("b")};
  next =
      LeaveOutFailedHosts(ported, {{"a:2222", {"x", "y"}}, {"b", {"z"}}}, 1, 1);
  EXPECT_THAT(Names(next.hosts), ElementsAre("b"));
  next = LeaveOutFailedHosts(ported, {{"a", {"x", "y"}}, {"b", {"z"}}}, 1, 1);
  EXPECT_EQ(next.hosts.size(), 2u);
  EXPECT_TRUE(next.messages.empty());
}

TEST(PlanProcessesTest, SshPlacementFollowsSlots) {
  LaunchOptions o;
  o.mode = Mode::kSsh;
  o.num_servers = 2;
  o.num_workers = 3;
  o.command = {"worker"};
  o.hosts = Hosts({1, 0, 1});
  ASSERT_TRUE(ValidateLaunchOptions(o).ok());
  std::vector<ProcessSpec> plan = PlanProcesses(o, "10.0.0.1:9000");
  ASSERT_EQ(plan.size(), 6u);
  std::vector<std::string> where;
  for (size_t i = 1; i < plan.size(); ++i) where.push_back(plan[i].host.name);
  EXPECT_THAT(where, ElementsAre("h0", "h1", "h2", "h1", "h1"));
  o.hosts = Hosts({1, 1});
  absl::Status s = ValidateLaunchOptions(o);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("--hostfile: the hosts' slots (2 on 2 host(s)) cannot "
                        "hold the job's 5 servers and workers"));
}

}  // namespace
}  // namespace launcher
}  // namespace pstrain
