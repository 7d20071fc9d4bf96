#include "server/time_split.h"

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "proto/messages.pb.h"

namespace pstrain {
namespace server {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1000);

absl::Time At(double s) { return kT0 + absl::Seconds(s); }

TEST(ServerTimeSplit, NothingBeforeTheFirstMessage) {
  ServerTimeSplit split;
  const ServerTimes t = split.Totals(At(5));
  EXPECT_EQ(t.period_s, 0);
  EXPECT_EQ(ServerTimeSplitLine(0, t),
            "server 0: time split: sum 0% update 0% wait 0% send 0% idle 0% "
            "other 0% (over 0.0 s)");
}

TEST(ServerTimeSplit, GapsAreWaitWhileARoundIsOpenElseIdle) {
  ServerTimeSplit split;
  // Worker 0's push opens a round: 1 s handling (0.5 other), nothing summed.
  split.MessageBegins(At(0));
  split.MessageEnds(At(0.5), 0, 0, 0, /*round_open=*/true);
  // 2 s waiting for worker 1's push, which completes the round: sum 1,
  // update 3, send 0.5, other 0.5.
  split.MessageBegins(At(2.5));
  split.AddBytes(1000, 0);
  split.MessageEnds(At(7.5), 1, 3, 0.5, /*round_open=*/false);
  split.AddBytes(0, 4000);
  // 2.5 s idle (workers computing) until now.
  const ServerTimes t = split.Totals(At(10));
  EXPECT_DOUBLE_EQ(t.period_s, 10);
  EXPECT_DOUBLE_EQ(t.wait_s, 2);
  EXPECT_DOUBLE_EQ(t.idle_s, 2.5);
  EXPECT_DOUBLE_EQ(t.sum_s, 1);
  EXPECT_DOUBLE_EQ(t.update_s, 3);
  EXPECT_DOUBLE_EQ(t.send_s, 0.5);
  EXPECT_DOUBLE_EQ(t.other_s, 1);
  EXPECT_EQ(t.bytes_in, 1000);
  EXPECT_EQ(t.bytes_out, 4000);
  EXPECT_EQ(ServerTimeSplitLine(2, t),
            "server 2: time split: sum 10% update 30% wait 20% send 5% idle "
            "25% other 10% (over 10.0 s)");
  proto::NodeStats st;
  FillServerStats(t, &st);
  EXPECT_DOUBLE_EQ(st.sum_fraction(), 0.1);
  EXPECT_DOUBLE_EQ(st.update_fraction(), 0.3);
  EXPECT_DOUBLE_EQ(st.wait_fraction(), 0.2);
  EXPECT_DOUBLE_EQ(st.send_fraction(), 0.05);
  EXPECT_DOUBLE_EQ(st.idle_fraction(), 0.25);
  EXPECT_EQ(st.bytes_in(), 1000);
  EXPECT_EQ(st.bytes_out(), 4000);
  EXPECT_DOUBLE_EQ(st.period_s(), 10);
  EXPECT_FALSE(st.has_steps());  // A worker's field.
}

TEST(ServerTimeSplit, AnOpenRoundAtTheEndCountsAsWait) {
  ServerTimeSplit split;
  split.MessageBegins(At(0));
  split.MessageEnds(At(1), 0, 0, 0, /*round_open=*/true);
  const ServerTimes t = split.Totals(At(4));
  EXPECT_DOUBLE_EQ(t.wait_s, 3);
  EXPECT_DOUBLE_EQ(t.idle_s, 0);
  EXPECT_DOUBLE_EQ(t.other_s, 1);
}

}  // namespace
}  // namespace server
}  // namespace pstrain
