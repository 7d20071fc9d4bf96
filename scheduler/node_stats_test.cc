#include "scheduler/node_stats.h"

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cluster/cluster.h"
#include "gtest/gtest.h"
#include "proto/messages.pb.h"
#include "scheduler/scheduler.h"

namespace pstrain {
namespace scheduler {
namespace {

TEST(NodeStatsTable, KeepsTheLatestStatsOfListedNodes) {
  NodeStatsTable t;
  proto::NodeInfo w;
  w.set_role(proto::WORKER);
  w.set_rank(1);
  w.set_host("10.0.0.2");
  w.set_port(9000);
  proto::NodeInfo s = w;
  s.set_role(proto::SERVER);
  s.set_rank(0);
  t.AddNode(w);
  t.AddNode(s);
  const absl::Time now = absl::FromUnixSeconds(100);
  proto::NodeStats st;
  st.set_steps(7);
  t.Heartbeat(proto::WORKER, 1, now, &st);
  t.Heartbeat(proto::WORKER, 1, now + absl::Seconds(1), nullptr);
  t.Heartbeat(proto::WORKER, 5, now, &st);  // Not listed: ignored.
  const std::vector<NodeStatsEntry> snap = t.Snapshot();
  ASSERT_EQ(snap.size(), 2u);
  EXPECT_EQ(snap[0].role, proto::SERVER);  // Servers first.
  EXPECT_FALSE(snap[0].has_stats);
  EXPECT_EQ(snap[0].last_heartbeat, absl::InfinitePast());
  EXPECT_EQ(snap[1].role, proto::WORKER);
  EXPECT_EQ(snap[1].rank, 1);
  EXPECT_EQ(snap[1].host, "10.0.0.2");
  EXPECT_EQ(snap[1].port, 9000);
  EXPECT_EQ(snap[1].last_heartbeat, now + absl::Seconds(1));
  ASSERT_TRUE(snap[1].has_stats);  // A beat without stats keeps them.
  EXPECT_EQ(snap[1].stats.steps(), 7);
}

// on_listening is a plain function pointer.
std::string* listening_address = nullptr;
absl::Notification* listening = nullptr;

TEST(NodeStatsTable, RealSchedulerReceivesNodesStatsWithHeartbeats) {
  std::string address;
  absl::Notification up;
  listening_address = &address;
  listening = &up;
  NodeStatsTable table;
  SchedulerOptions so;
  so.address = "127.0.0.1:0";
  so.num_workers = 1;
  so.num_servers = 1;
  so.token = "node-stats-test";
  so.insecure_plaintext = true;
  so.heartbeat_interval = absl::Milliseconds(50);
  so.heartbeat_timeout = absl::Seconds(20);
  so.start_timeout = absl::Seconds(30);
  so.node_stats = &table;
  so.on_listening = [](const std::string& a) {
    *listening_address = a;
    listening->Notify();
  };
  int rc = -1;
  std::thread sched([&] { rc = scheduler::Run(so); });
  ASSERT_TRUE(up.WaitForNotificationWithTimeout(absl::Seconds(30)));

  auto options = [&](proto::Role role) {
    cluster::ClusterOptions o;
    o.role = role;
    o.scheduler_address = address;
    o.token = so.token;
    o.insecure_plaintext = true;
    o.shm_bytes = 0;
    o.heartbeat_interval = absl::Milliseconds(50);
    o.heartbeat_timeout = so.heartbeat_timeout;
    o.start_timeout = so.start_timeout;
    return o;
  };
  absl::StatusOr<std::unique_ptr<cluster::ClusterNode>> server, worker;
  std::thread s(
      [&] { server = cluster::ClusterNode::Start(options(proto::SERVER)); });
  std::thread w(
      [&] { worker = cluster::ClusterNode::Start(options(proto::WORKER)); });
  s.join();
  w.join();
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE(worker.ok()) << worker.status();

  proto::NodeStats ws;
  ws.set_steps(42);
  ws.set_epoch(3);
  ws.set_images_per_sec(1234.5);
  ws.set_compute_fraction(0.81);
  ws.set_wait_pull_fraction(0.12);
  (*worker)->SetHeartbeatStats(ws);
  proto::NodeStats ss;
  ss.set_sum_fraction(0.25);
  ss.set_bytes_in(1000);
  (*server)->SetHeartbeatStats(ss);

  // Polls the table (the scheduler's loop writes it) until both arrive.
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  std::vector<NodeStatsEntry> snap;
  while (absl::Now() < deadline) {
    snap = table.Snapshot();
    if (snap.size() == 2 && snap[0].has_stats && snap[1].has_stats &&
        snap[1].stats.steps() == 42 && snap[0].stats.bytes_in() == 1000)
      break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_EQ(snap.size(), 2u);
  EXPECT_EQ(snap[0].role, proto::SERVER);
  EXPECT_EQ(snap[0].rank, 0);
  EXPECT_EQ(snap[0].host, "127.0.0.1");
  EXPECT_EQ(snap[0].port, (*server)->transport().port());
  ASSERT_TRUE(snap[0].has_stats);
  EXPECT_DOUBLE_EQ(snap[0].stats.sum_fraction(), 0.25);
  EXPECT_EQ(snap[0].stats.bytes_in(), 1000);
  EXPECT_FALSE(snap[0].stats.has_steps());
  EXPECT_EQ(snap[1].role, proto::WORKER);
  EXPECT_EQ(snap[1].rank, 0);
  EXPECT_EQ(snap[1].port, (*worker)->transport().port());
  ASSERT_TRUE(snap[1].has_stats);
  EXPECT_EQ(snap[1].stats.steps(), 42);
  EXPECT_EQ(snap[1].stats.epoch(), 3);
  EXPECT_DOUBLE_EQ(snap[1].stats.images_per_sec(), 1234.5);
  EXPECT_DOUBLE_EQ(snap[1].stats.compute_fraction(), 0.81);
  EXPECT_GT(snap[1].last_heartbeat, absl::Now() - absl::Seconds(20));

  // The job ends as usual.
  ASSERT_TRUE((*worker)->Finish().ok());
  EXPECT_TRUE((*server)->WaitForShutdown(absl::Now() + absl::Seconds(20)).ok());
  sched.join();
  EXPECT_EQ(rc, 0);
}

}  // namespace
}  // namespace scheduler
}  // namespace pstrain
