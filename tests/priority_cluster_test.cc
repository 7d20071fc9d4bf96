// Priority and slicing on the wire (issue #16), end to end: a real
// scheduler and server process on 127.0.0.1 (TCP only, as between hosts),
// a KVStore worker in this process. A small high-priority request issued
// right after a big low-priority one completes first when the big array
// is sliced and the send credit is on, and last when both are off. The
// tests assert the order in which the operations complete, not times.
#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/cluster_util.h"
#include "util/test_util.h"

namespace pstrain {
namespace {

using testing_util::Cluster;
using testing_util::ClusterSpec;
using testing_util::Deadline;

constexpr int64_t kMiB = int64_t{1} << 20;
// The big array: 128 MiB of float32 (one server: one slice).
constexpr int64_t kBig = 32 * kMiB;
constexpr int64_t kSmall = 1024;

float BigValue(int64_t i) { return static_cast<float>(i % 13) - 6.0f; }

struct Order {
  bool big_done_when_small_done = false;
};

// 1 worker x 1 server. Pushes (or push-pulls) key 0 (kBig floats) with
// `big_priority`, then at once pulls (or push-pulls) key 1 with
// `small_priority`; returns whether the big operation had completed when
// the small one had. Checks the values too.
Order RunBigThenSmall(const ClusterSpec& spec, bool pushpull, int big_priority,
                      int small_priority) {
  Order order;
  Cluster c(spec);
  EXPECT_TRUE(c.Start());
  auto kv = c.Workers("dist_sync");
  EXPECT_EQ(kv.size(), 1u);
  if (kv.size() != 1 || kv[0] == nullptr) {
    ADD_FAILURE() << c.AllOutput();
    return order;
  }
  kvstore::KVStore& k = *kv[0];
  std::vector<float> big(kBig, 0.0f), small(kSmall, 0.0f);
  EXPECT_TRUE(k.Init({0, 1}, {big, small}, Deadline()).ok());
  for (int64_t i = 0; i < kBig; ++i) big[i] = BigValue(i);
  for (int64_t i = 0; i < kSmall; ++i) small[i] = 0.5f * i;
  std::vector<float> big_out(kBig, -1.0f), small_out(kSmall, -1.0f);
  absl::StatusOr<kvstore::Handle> hb =
      pushpull ? k.PushPull(0, {big}, absl::MakeSpan(big_out), big_priority)
               : k.Push(0, {big}, big_priority);
  EXPECT_TRUE(hb.ok()) << hb.status();
  absl::StatusOr<kvstore::Handle> hs =
      pushpull
          ? k.PushPull(1, {small}, absl::MakeSpan(small_out), small_priority)
          : k.Pull(1, absl::MakeSpan(small_out), small_priority);
  EXPECT_TRUE(hs.ok()) << hs.status();
  if (!hb.ok() || !hs.ok()) return order;
  EXPECT_TRUE(k.Wait(*hs, Deadline()).ok());
  order.big_done_when_small_done = k.Done(*hb);
  EXPECT_TRUE(k.Wait(*hb, Deadline()).ok());
  // The small values: its push (push-pull) or its initial zeros (pull,
  // which may see the weights before the big push: a different key).
  int64_t bad = -1;
  for (int64_t i = 0; i < kSmall && bad < 0; ++i) {
    if (small_out[i] != (pushpull ? 0.5f * i : 0.0f)) bad = i;
  }
  EXPECT_EQ(bad, -1) << "small value " << bad;
  if (!pushpull) {
    auto hp = k.Pull(0, absl::MakeSpan(big_out), 0);
    EXPECT_TRUE(hp.ok());
    if (hp.ok()) {
      EXPECT_TRUE(k.Wait(*hp, Deadline()).ok());
    }
  }
  for (int64_t i = 0; i < kBig && bad < 0; ++i) {
    if (big_out[i] != BigValue(i)) bad = i;
  }
  EXPECT_EQ(bad, -1) << "big value " << bad;
  EXPECT_TRUE(k.Finish().ok());
  EXPECT_TRUE(c.scheduler.WaitExit(Deadline(20))) << c.AllOutput();
  for (auto& s : c.servers) {
    EXPECT_TRUE(s.WaitExit(Deadline(20)));
    EXPECT_TRUE(s.p->succeeded()) << c.AllOutput();
  }
  return order;
}

ClusterSpec Base() {
  ClusterSpec spec;
  spec.workers = 1;
  spec.servers = 1;
  spec.shm_bytes = 0;
  spec.heartbeat_timeout_s = 10;
  spec.server_flags = {absl::StrCat("--max_frame_bytes=", 4 * kBig + kMiB)};
  return spec;
}

// Sliced into 1 MiB parts, 2 MiB of credit, replies handed to the socket
// 1 MiB at a time.
ClusterSpec Prioritized() {
  ClusterSpec spec = Base();
  spec.slice_bytes = kMiB;
  spec.send_credit_bytes = 2 * kMiB;
  spec.server_flags.push_back(absl::StrCat("--send_window_bytes=", kMiB));
  return spec;
}

// The big array in one message, no credit, no priorities: first come,
// first served.
ClusterSpec Unprioritized() {
  ClusterSpec spec = Base();
  spec.max_message_bytes = 4 * kBig;
  spec.slice_bytes = 0;
  spec.send_credit_bytes = 0;
  return spec;
}

TEST(PriorityClusterTest, SmallHighPriorityPullOvertakesABigPush) {
  const Order o = RunBigThenSmall(Prioritized(), /*pushpull=*/false, -10, 0);
  EXPECT_FALSE(o.big_done_when_small_done);
}

TEST(PriorityClusterTest, SmallHighPriorityPushPullOvertakesABigOne) {
  // The big one's replies (its weights, 1 MiB per part) fill the server's
  // send queue; the small reply goes between them.
  const Order o = RunBigThenSmall(Prioritized(), /*pushpull=*/true, -10, 0);
  EXPECT_FALSE(o.big_done_when_small_done);
}

TEST(PriorityClusterTest, WithoutSlicingCreditOrPriorityTheBigOneIsFirst) {
  const Order o = RunBigThenSmall(Unprioritized(), /*pushpull=*/false, 0, 0);
  EXPECT_TRUE(o.big_done_when_small_done);
}

}  // namespace
}  // namespace pstrain
