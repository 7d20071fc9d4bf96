#include "util/blocking_queue.h"

#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace pstrain {
namespace {

absl::Time Soon() { return absl::Now() + absl::Milliseconds(20); }
absl::Time Later() { return absl::Now() + absl::Seconds(30); }

TEST(BlockingQueueTest, FifoOrder) {
  BlockingQueue<int> q(4);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(q.Push(i, Later()).ok());
  EXPECT_EQ(q.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    auto v = q.Pop(Later());
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(*v, i);
  }
}

TEST(BlockingQueueTest, PopOnEmptyHitsDeadline) {
  BlockingQueue<int> q(1);
  absl::Time start = absl::Now();
  auto v = q.Pop(Soon());
  EXPECT_EQ(v.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(15));
}

TEST(BlockingQueueTest, PushOnFullHitsDeadlineAndKeepsContents) {
  BlockingQueue<int> q(1);
  ASSERT_TRUE(q.Push(7, Later()).ok());
  EXPECT_EQ(q.Push(8, Soon()).code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(q.TryPush(9).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(q.size(), 1u);
  EXPECT_EQ(*q.Pop(Later()), 7);
}

TEST(BlockingQueueTest, CloseWakesWaitersAndDrains) {
  BlockingQueue<int> q(2);
  ASSERT_TRUE(q.Push(1, Later()).ok());
  q.Close();
  EXPECT_EQ(q.Push(2, Later()).code(), absl::StatusCode::kCancelled);
  // What was queued before Close() is still delivered.
  EXPECT_EQ(*q.Pop(Later()), 1);
  EXPECT_EQ(q.Pop(Later()).status().code(), absl::StatusCode::kCancelled);

  BlockingQueue<int> empty(1);
  std::thread waiter([&] {
    // Would wait 30 s if Close() did not wake it.
    EXPECT_EQ(empty.Pop(Later()).status().code(), absl::StatusCode::kCancelled);
  });
  empty.Close();
  waiter.join();
}

TEST(BlockingQueueTest, ManyProducersManyConsumersDeliverEverythingOnce) {
  constexpr int kProducers = 4;
  constexpr int kPerProducer = 2000;
  BlockingQueue<std::unique_ptr<int>> q(8);  // Small: exercises backpressure.
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&q, p] {
      for (int i = 0; i < kPerProducer; ++i) {
        ASSERT_TRUE(
            q.Push(std::make_unique<int>(p * kPerProducer + i), Later()).ok());
      }
    });
  }
  std::vector<int> seen(kProducers * kPerProducer, 0);
  std::vector<std::thread> consumers;
  std::mutex seen_mu;
  for (int c = 0; c < 3; ++c) {
    consumers.emplace_back([&] {
      while (true) {
        auto v = q.Pop(Later());
        if (!v.ok()) {
          EXPECT_EQ(v.status().code(), absl::StatusCode::kCancelled);
          return;
        }
        std::lock_guard<std::mutex> lock(seen_mu);
        ++seen[**v];
      }
    });
  }
  for (auto& t : producers) t.join();
  q.Close();
  for (auto& t : consumers) t.join();
  for (int count : seen) EXPECT_EQ(count, 1);
}

}  // namespace
}  // namespace pstrain
