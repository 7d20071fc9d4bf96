// MembershipStatus: the status page's view of the membership, before and
// after the job starts, on a clock the test sets.
#include "scheduler/job_status.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/messages.pb.h"

namespace pstrain {
namespace scheduler {
namespace {

using ::testing::ElementsAre;

const absl::Time kT0 = absl::FromUnixSeconds(1000000);

proto::NodeInfo Node(proto::Role role, const std::string& host, int port) {
  proto::NodeInfo n;
  n.set_role(role);
  n.set_host(host);
  n.set_port(port);
  return n;
}

TEST(MembershipStatus, BeforeAndAfterStart) {
  MembershipOptions o;
  o.num_servers = 1;
  o.num_workers = 2;
  o.heartbeat_timeout = absl::Seconds(10);
  Membership m(o, kT0);
  const auto s = Node(proto::SERVER, "10.0.0.1", 9000);
  const auto w0 = Node(proto::WORKER, "10.0.0.2", 9000);
  const auto w1 = Node(proto::WORKER, "10.0.0.3", 9000);
  ASSERT_TRUE(m.Register(s, "10.0.0.1:9000").ok());
  ASSERT_TRUE(m.Register(w1, "10.0.0.3:9000").ok());

  std::vector<int> ids;
  status::JobStatus j = MembershipStatus(m, kT0, &ids);
  EXPECT_EQ(j.state, "starting");
  EXPECT_EQ(j.num_servers, 1);
  EXPECT_EQ(j.num_workers, 2);
  ASSERT_EQ(j.nodes.size(), 2u);
  EXPECT_EQ(j.nodes[0].role, "server");
  EXPECT_EQ(j.nodes[0].host, "10.0.0.1:9000");
  EXPECT_EQ(j.nodes[0].state, "registered");
  EXPECT_EQ(j.nodes[0].rank, -1);
  EXPECT_LT(j.nodes[0].heartbeat_age_s, 0);
  EXPECT_EQ(j.nodes[1].role, "worker");
  EXPECT_THAT(ids, ElementsAre(-1, -1));

  ASSERT_TRUE(m.Register(w0, "10.0.0.2:9000").ok());
  ASSERT_TRUE(
      m.Start(kT0, [](const Member&) { return absl::OkStatus(); }).ok());
  m.HeardFrom(2, kT0 + absl::Seconds(5));  // Worker rank 0.
  m.HeardFrom(3, kT0 + absl::Seconds(5));
  ASSERT_TRUE(m.WorkerFinished(3).ok());
  j = MembershipStatus(m, kT0 + absl::Seconds(12), &ids);
  EXPECT_EQ(j.state, "running");
  ASSERT_EQ(j.nodes.size(), 3u);
  EXPECT_THAT(ids, ElementsAre(1, 2, 3));
  // The server has been silent 12 s (> the 10 s timeout).
  EXPECT_EQ(j.nodes[0].state, "dead");
  EXPECT_EQ(j.nodes[0].rank, 0);
  EXPECT_DOUBLE_EQ(j.nodes[0].heartbeat_age_s, 12);
  EXPECT_EQ(j.nodes[1].state, "alive");
  EXPECT_EQ(j.nodes[1].host, "10.0.0.2:9000");
  EXPECT_EQ(j.nodes[1].rank, 0);
  EXPECT_DOUBLE_EQ(j.nodes[1].heartbeat_age_s, 7);
  EXPECT_EQ(j.nodes[2].state, "finished");
  EXPECT_EQ(j.nodes[2].rank, 1);
  for (const auto& n : j.nodes) EXPECT_FALSE(n.has_stats);
}

}  // namespace
}  // namespace scheduler
}  // namespace pstrain

namespace pstrain {
namespace scheduler {
namespace {

TEST(MergeNodeStatsTest, FillsRankedNodesByRoleAndRank) {
  status::JobStatus job;
  job.nodes.resize(3);
  job.nodes[0].role = "server";
  job.nodes[0].rank = 0;
  job.nodes[1].role = "worker";
  job.nodes[1].rank = 0;
  job.nodes[2].role = "worker";
  job.nodes[2].rank = 1;  // Reported nothing yet.
  std::vector<NodeStatsEntry> stats(3);
  stats[0].role = proto::SERVER;
  stats[0].rank = 0;
  stats[0].has_stats = true;
  stats[0].stats.set_bytes_in(1000);
  stats[0].stats.set_bytes_out(2000);
  stats[0].stats.set_sum_fraction(0.25);
  stats[0].stats.set_wait_fraction(0.5);
  stats[0].stats.set_queued_messages(7);
  stats[1].role = proto::WORKER;
  stats[1].rank = 0;
  stats[1].has_stats = true;
  stats[1].stats.set_images_per_sec(512.5);
  stats[1].stats.set_data_fraction(0.1);
  stats[1].stats.set_compute_fraction(0.7);
  stats[1].stats.set_wait_pull_fraction(0.15);
  stats[1].stats.set_wait_push_fraction(0.05);
  stats[1].stats.set_epoch(3);
  stats[1].stats.set_steps(420);
  stats[1].stats.set_network("resnet");
  stats[1].stats.set_kv_store("dist_sync");
  stats[1].stats.set_eta_s(61.5);
  stats[1].stats.set_refused(2);
  stats[1].stats.set_malformed(1);
  stats[1].stats.set_link_auth_failures(4);
  stats[2].role = proto::WORKER;
  stats[2].rank = 1;
  // Its heartbeats carry only the transport's counters so far.
  stats[2].has_stats = true;
  stats[2].stats.set_queued_messages(3);
  MergeNodeStats(stats, &job);
  EXPECT_TRUE(job.nodes[0].has_stats);
  EXPECT_EQ(job.nodes[0].bytes_pushed, 1000);
  EXPECT_EQ(job.nodes[0].bytes_pulled, 2000);
  EXPECT_DOUBLE_EQ(job.nodes[0].server_split.sum, 0.25);
  EXPECT_DOUBLE_EQ(job.nodes[0].server_split.wait, 0.5);
  EXPECT_EQ(job.nodes[0].queue_depth, 7);
  EXPECT_TRUE(job.nodes[1].has_stats);
  EXPECT_DOUBLE_EQ(job.nodes[1].images_per_s, 512.5);
  EXPECT_DOUBLE_EQ(job.nodes[1].split.compute, 0.7);
  EXPECT_DOUBLE_EQ(job.nodes[1].split.wait_pull, 0.15);
  EXPECT_EQ(job.nodes[1].refused, 2);
  EXPECT_EQ(job.nodes[1].malformed, 1);
  EXPECT_EQ(job.nodes[1].link_auth_failures, 4);
  EXPECT_FALSE(job.nodes[2].has_stats);
  EXPECT_EQ(job.nodes[2].queue_depth, 3);
  EXPECT_EQ(job.epoch, 3);
  EXPECT_EQ(job.step, 420);
  EXPECT_EQ(job.network, "resnet");
  EXPECT_EQ(job.kv_store, "dist_sync");
  EXPECT_DOUBLE_EQ(job.eta_s, 61.5);
}

}  // namespace
}  // namespace scheduler
}  // namespace pstrain
