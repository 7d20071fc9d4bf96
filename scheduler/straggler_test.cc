#include "scheduler/straggler.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pstrain {
namespace scheduler {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

// A worker's report: images/s and the split (data, compute, wait-pull,
// wait-push), at `steps`.
NodeStatsEntry Worker(int rank, int64_t steps, double rate, double data,
                      double compute, double wait_pull, double wait_push = 0) {
  NodeStatsEntry e;
  e.role = proto::WORKER;
  e.rank = rank;
  e.host = "10.0.0." + std::to_string(rank + 2);
  e.port = 9000;
  e.has_stats = true;
  e.stats.set_steps(steps);
  e.stats.set_images_per_sec(rate);
  e.stats.set_data_fraction(data);
  e.stats.set_compute_fraction(compute);
  e.stats.set_wait_pull_fraction(wait_pull);
  e.stats.set_wait_push_fraction(wait_push);
  return e;
}

// dist_sync: every worker at 100 images/s; worker 2 spends 80% on data
// while the others wait for weights most of the time.
std::vector<NodeStatsEntry> SyncJob(int64_t steps, double slow_data = 0.8) {
  return {Worker(0, steps, 100, 0.05, 0.15, 0.8),
          Worker(1, steps, 100, 0.05, 0.15, 0.8),
          Worker(2, steps, 100, slow_data, 0.15, 0.05)};
}

TEST(StragglerDetector, NamesTheSlowWorkerInDistSyncAfterIntervals) {
  StragglerDetector d({1.2, 3});
  EXPECT_THAT(d.Update(SyncJob(10)), IsEmpty());
  EXPECT_THAT(d.Update(SyncJob(20)), IsEmpty());
  const std::vector<std::string> lines = d.Update(SyncJob(30));
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0],
            "straggler: worker 2 on 10.0.0.4: data wait 80% (median 5%), "
            "4.8x the median worker's own time per image (9.50 ms vs 2.00 "
            "ms)");
  // Once: the same numbers again say nothing.
  EXPECT_THAT(d.Update(SyncJob(40)), IsEmpty());
  status::JobStatus job;
  for (int r = 0; r < 3; ++r) {
    status::NodeStatus n;
    n.role = "worker";
    n.rank = r;
    job.nodes.push_back(n);
  }
  d.Mark(&job);
  EXPECT_FALSE(job.nodes[0].straggler);
  EXPECT_TRUE(job.nodes[2].straggler);
  EXPECT_THAT(job.nodes[2].straggler_reason, StartsWith("data wait 80%"));
}

TEST(StragglerDetector, StaleReportsDoNotCount) {
  StragglerDetector d({1.2, 3});
  // The same report (steps unchanged) seen three times is one interval.
  for (int i = 0; i < 5; ++i) EXPECT_THAT(d.Update(SyncJob(10)), IsEmpty());
  EXPECT_THAT(d.Update(SyncJob(20)), IsEmpty());
  EXPECT_THAT(d.Update(SyncJob(30)), ElementsAre(StartsWith("straggler: ")));
}

TEST(StragglerDetector, ReportsAgainWhenWorseAndWhenRecovered) {
  StragglerDetector d({1.2, 2});
  d.Update(SyncJob(10, 0.3));
  ASSERT_THAT(d.Update(SyncJob(20, 0.3)),
              ElementsAre(HasSubstr("2.2x the median")));
  // A little worse: not again.
  EXPECT_THAT(d.Update(SyncJob(30, 0.35)), IsEmpty());
  // A quarter worse than reported: again.
  EXPECT_THAT(d.Update(SyncJob(40, 0.8)),
              ElementsAre(StartsWith("straggler worse: worker 2 on 10.0.0.4: "
                                     "data wait 80%")));
  // Fast again for two reports: said once.
  EXPECT_THAT(d.Update(SyncJob(50, 0.05)), IsEmpty());
  EXPECT_THAT(d.Update(SyncJob(60, 0.05)),
              ElementsAre("worker 2 on 10.0.0.4 is no longer a straggler "
                          "(1.00x the median worker's own time per image)"));
  status::JobStatus job;
  status::NodeStatus n;
  n.role = "worker";
  n.rank = 2;
  job.nodes.push_back(n);
  d.Mark(&job);
  EXPECT_FALSE(job.nodes[0].straggler);
}

TEST(StragglerDetector, AsyncSlowRateAndTheReasonIsCompute) {
  // dist_async: nobody waits; worker 1 computes 3x slower.
  StragglerDetector d({1.2, 1});
  std::vector<NodeStatsEntry> job = {Worker(0, 5, 300, 0.05, 0.9, 0.05),
                                     Worker(1, 5, 100, 0.02, 0.95, 0.03),
                                     Worker(2, 5, 290, 0.05, 0.9, 0.05)};
  EXPECT_THAT(d.Update(job),
              ElementsAre(HasSubstr("worker 1 on 10.0.0.3: compute 95% "
                                    "(median 90%)")));
}

TEST(StragglerDetector, WithinTheRatioNothingIsSaid) {
  StragglerDetector d({1.5, 1});
  // Worker 1's own time is 1.4x the median: below 1.5.
  std::vector<NodeStatsEntry> job = {Worker(0, 1, 100, 0, 0.5, 0.5),
                                     Worker(1, 1, 100, 0.2, 0.5, 0.3),
                                     Worker(2, 1, 100, 0, 0.5, 0.5)};
  EXPECT_THAT(d.Update(job), IsEmpty());
}

TEST(StragglerDetector, NeedsTwoWorkersWithRatesAndIgnoresServers) {
  StragglerDetector d({1.2, 1});
  NodeStatsEntry server;
  server.role = proto::SERVER;
  server.rank = 0;
  server.has_stats = true;
  std::vector<NodeStatsEntry> job = {server, Worker(0, 1, 100, 0.9, 0.1, 0),
                                     Worker(1, 1, 0, 0, 0, 0)};
  job[2].stats.clear_images_per_sec();  // Transport counters only.
  EXPECT_THAT(d.Update(job), IsEmpty());
  NodeStatsEntry silent = Worker(2, 1, 0, 0, 0, 0);
  silent.has_stats = false;
  job.push_back(silent);
  EXPECT_THAT(d.Update(job), IsEmpty());
}

TEST(StragglerDetector, WithoutASplitTheRateDecides) {
  StragglerDetector d({1.2, 1});
  std::vector<NodeStatsEntry> job = {Worker(0, 1, 100, 0, 0, 0),
                                     Worker(1, 1, 40, 0, 0, 0),
                                     Worker(2, 1, 100, 0, 0, 0)};
  EXPECT_THAT(d.Update(job),
              ElementsAre("straggler: worker 1 on 10.0.0.3: no time split "
                          "reported, 2.5x the median worker's own time per "
                          "image (25.00 ms vs 10.00 ms)"));
}

}  // namespace
}  // namespace scheduler
}  // namespace pstrain
