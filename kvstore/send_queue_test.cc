// The per-server send queue on its own: priority order, FIFO within a
// priority, the credit, and a high-priority item overtaking the parts of a
// big low-priority array that have not left.
#include "kvstore/send_queue.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace pstrain {
namespace kvstore {
namespace {

using Ids = std::vector<uint64_t>;

TEST(SendQueueTest, HigherPriorityFirstFifoWithinAPriority) {
  SendQueue q(/*credit_bytes=*/0);
  q.Add(1, 0, 10);
  q.Add(2, 5, 10);
  q.Add(3, 0, 10);
  q.Add(4, 5, 10);
  q.Add(5, -3, 10);
  q.Add(6, 7, 10);
  EXPECT_EQ(q.TakeReady(), (Ids{6, 2, 4, 1, 3, 5}));
  EXPECT_EQ(q.queued(), 0u);
  EXPECT_EQ(q.in_flight_bytes(), 60);
}

TEST(SendQueueTest, CreditBoundsThePayloadInFlight) {
  SendQueue q(/*credit_bytes=*/100);
  for (uint64_t id = 1; id <= 5; ++id) q.Add(id, 0, 40);
  EXPECT_EQ(q.TakeReady(), (Ids{1, 2}));  // 80; a third would be 120.
  EXPECT_EQ(q.in_flight_bytes(), 80);
  EXPECT_EQ(q.TakeReady(), Ids{});
  q.Release(40);
  EXPECT_EQ(q.TakeReady(), (Ids{3}));
  q.Release(40);
  q.Release(40);
  EXPECT_EQ(q.TakeReady(), (Ids{4, 5}));
  EXPECT_EQ(q.in_flight_bytes(), 80);
}

TEST(SendQueueTest, AnItemLargerThanTheCreditLeavesAlone) {
  SendQueue q(/*credit_bytes=*/100);
  q.Add(1, 0, 500);
  q.Add(2, 0, 1);
  EXPECT_EQ(q.TakeReady(), (Ids{1}));
  EXPECT_EQ(q.TakeReady(), Ids{});  // Nothing joins it.
  q.Release(500);
  EXPECT_EQ(q.TakeReady(), (Ids{2}));
}

TEST(SendQueueTest, StrictOrderASmallItemDoesNotPassABigHead) {
  SendQueue q(/*credit_bytes=*/100);
  q.Add(1, 9, 60);
  EXPECT_EQ(q.TakeReady(), (Ids{1}));
  q.Add(2, 5, 60);  // Does not fit beside item 1.
  q.Add(3, 1, 1);   // Would fit, but goes after item 2.
  EXPECT_EQ(q.TakeReady(), Ids{});
  q.Release(60);
  EXPECT_EQ(q.TakeReady(), (Ids{2, 3}));
}

// The case: a 100 MB array of priority -10 sliced into 4 MB parts,
// then the first layer's small array of priority 0. Only the parts inside
// the credit have left; the small one goes next, before the rest.
TEST(SendQueueTest, HighPriorityOvertakesTheUnsentSlicesOfABigArray) {
  constexpr int64_t kPart = 4 << 20;
  SendQueue q(/*credit_bytes=*/2 * kPart);
  for (uint64_t part = 0; part < 25; ++part) q.Add(100 + part, -10, kPart);
  EXPECT_EQ(q.TakeReady(), (Ids{100, 101}));
  q.Add(7, 0, 4096);
  q.Release(kPart);                    // Part 100 has arrived.
  EXPECT_EQ(q.TakeReady(), (Ids{7}));  // Before part 102.
  q.Release(4096);
  q.Release(kPart);
  EXPECT_EQ(q.TakeReady(), (Ids{102, 103}));
  EXPECT_EQ(q.queued(), 21u);
}

TEST(SendQueueTest, ZeroCreditSendsEverythingAtOnce) {
  SendQueue q(0);
  for (uint64_t id = 1; id <= 3; ++id) q.Add(id, 0, int64_t{1} << 40);
  EXPECT_EQ(q.TakeReady().size(), 3u);
}

TEST(SendQueueTest, ClearDropsWhatIsQueued) {
  SendQueue q(10);
  q.Add(1, 0, 10);
  q.Add(2, 3, 10);
  q.Add(3, 0, 10);
  EXPECT_EQ(q.TakeReady(), (Ids{2}));
  EXPECT_EQ(q.Clear(), (Ids{1, 3}));
  EXPECT_EQ(q.queued(), 0u);
  EXPECT_EQ(q.in_flight_bytes(), 10);
}

}  // namespace
}  // namespace kvstore
}  // namespace pstrain
