#include "worker/time_split.h"

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "proto/messages.pb.h"

namespace pstrain {
namespace worker {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1000);

TimeParts Parts(double data, double compute, double pull, double push,
                double opt = 0) {
  TimeParts p;
  p.data_s = data;
  p.compute_s = compute;
  p.wait_pull_s = pull;
  p.wait_push_s = push;
  p.optimizer_s = opt;
  return p;
}

TEST(TimeSplitLine, PercentagesOfTheWallTimeWithOtherTheRest) {
  EXPECT_EQ(TimeSplitLine(3, Parts(0.2, 8.1, 1.2, 0.4), 10),
            "Epoch[3] Time split: data 2% compute 81% wait-pull 12% "
            "wait-push 4% other 1%");
}

TEST(TimeSplitLine, OptimizerOnlyWhenItRan) {
  EXPECT_EQ(TimeSplitLine(0, Parts(1, 2, 0, 0, 1), 4),
            "Epoch[0] Time split: data 25% compute 50% wait-pull 0% "
            "wait-push 0% optimizer 25% other 0%");
  EXPECT_EQ(TimeSplitLine(0, Parts(1, 3, 0, 0, 0), 4),
            "Epoch[0] Time split: data 25% compute 75% wait-pull 0% "
            "wait-push 0% other 0%");
}

TEST(TimeSplitLine, PartsBeyondTheWallTimeAreScaledNotOver100) {
  // Emulated devices' clocks may add up to a little more than the wall.
  EXPECT_EQ(TimeSplitLine(1, Parts(0, 3, 1, 0), 2),
            "Epoch[1] Time split: data 0% compute 75% wait-pull 25% "
            "wait-push 0% other 0%");
}

TEST(TimeSplitLine, EmptyPeriod) {
  EXPECT_EQ(TimeSplitLine(2, TimeParts(), 0),
            "Epoch[2] Time split: data 0% compute 0% wait-pull 0% "
            "wait-push 0% other 0%");
}

TEST(TimeParts, Arithmetic) {
  TimeParts a = Parts(1, 2, 3, 4, 5);
  a += Parts(1, 1, 1, 1, 1);
  EXPECT_DOUBLE_EQ(a.sum(), 20);
  const TimeParts d = a - Parts(2, 3, 4, 5, 6);
  EXPECT_DOUBLE_EQ(d.sum(), 0);
  const TimeParts h = a * 0.5;
  EXPECT_DOUBLE_EQ(h.data_s, 1);
  EXPECT_DOUBLE_EQ(h.optimizer_s, 3);
  EXPECT_DOUBLE_EQ(h.sum(), 10);
}

TEST(TimeSplit, SumsStepsOverThePeriodFromStart) {
  TimeSplit split;
  split.Add(Parts(5, 5, 5, 5));  // Before Start: forgotten.
  split.Start(kT0);
  for (int step = 0; step < 4; ++step) split.Add(Parts(0.1, 1.5, 0.26, 0.1));
  const absl::Time end = kT0 + absl::Seconds(8);
  EXPECT_DOUBLE_EQ(split.parts().compute_s, 6);
  EXPECT_DOUBLE_EQ(split.WallSeconds(end), 8);
  EXPECT_NEAR(split.OtherSeconds(end), 8 - 7.84, 1e-12);
  EXPECT_EQ(split.Line(4, end),
            "Epoch[4] Time split: data 5% compute 75% wait-pull 13% "
            "wait-push 5% other 2%");
}

TEST(TimeSplit, FillsHeartbeatFractions) {
  TimeSplit split;
  split.Start(kT0);
  split.Add(Parts(1, 2, 0.5, 0.25, 0.25));
  proto::NodeStats st;
  split.FillStats(kT0 + absl::Seconds(5), &st);
  EXPECT_DOUBLE_EQ(st.data_fraction(), 0.2);
  EXPECT_DOUBLE_EQ(st.compute_fraction(), 0.4);
  EXPECT_DOUBLE_EQ(st.wait_pull_fraction(), 0.1);
  EXPECT_DOUBLE_EQ(st.wait_push_fraction(), 0.05);
  EXPECT_DOUBLE_EQ(st.optimizer_fraction(), 0.05);
  EXPECT_DOUBLE_EQ(st.period_s(), 5);
  EXPECT_FALSE(st.has_sum_fraction());  // A server's field.
}

}  // namespace
}  // namespace worker
}  // namespace pstrain
