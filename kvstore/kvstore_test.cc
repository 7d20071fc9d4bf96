// The partition plan and its chunks (no cluster needed), and the local
// KVStore.
#include "kvstore/kvstore.h"

#include <vector>

#include "gtest/gtest.h"
#include "kvstore/partition.h"

namespace pstrain {
namespace kvstore {
namespace {

TEST(PlanKeyTest, BigArraysSplitOverServersSmallOnesBalanceBytes) {
  std::vector<int64_t> load(3, 0);
  auto big = PlanKey(7, 10, 3, /*bigarray_bound=*/5, &load);
  ASSERT_EQ(big.size(), 3u);
  EXPECT_EQ(big[0].offset, 0);
  EXPECT_EQ(big[0].length, 4);
  EXPECT_EQ(big[1].offset, 4);
  EXPECT_EQ(big[1].length, 3);
  EXPECT_EQ(big[2].offset, 7);
  EXPECT_EQ(big[2].length, 3);
  EXPECT_EQ(load, (std::vector<int64_t>{4, 3, 3}));
  auto small = PlanKey(8, 2, 3, 5, &load);
  ASSERT_EQ(small.size(), 1u);
  EXPECT_EQ(small[0].server, 1);  // The first of the least loaded.
}

TEST(SplitIntoChunksTest, ChunksCoverEachSliceInOrderWithinTheBound) {
  const std::vector<SliceSpec> slices = {
      {3, 0, 0, 10}, {3, 1, 10, 4}, {3, 2, 14, 0}};
  auto chunks = SplitIntoChunks(slices, 4);
  // 10 -> 4 + 3 + 3; 4 -> 4; 0 -> one empty chunk.
  ASSERT_EQ(chunks.size(), 5u);
  int64_t next = 0;
  for (const SliceSpec& c : chunks) {
    EXPECT_EQ(c.key, 3);
    EXPECT_EQ(c.offset, next);
    EXPECT_LE(c.length, 4);
    next += c.length;
  }
  EXPECT_EQ(next, 14);
  EXPECT_EQ(chunks[0].server, 0);
  EXPECT_EQ(chunks[2].server, 0);
  EXPECT_EQ(chunks[3].server, 1);
  EXPECT_EQ(chunks[4].server, 2);
  // A bound at least the slice size keeps it whole.
  EXPECT_EQ(SplitIntoChunks(slices, 100).size(), 3u);
}

TEST(LocalKVStoreTest, PushStoresTheDeviceSumPullReadsIt) {
  auto kv = KVStore::Create("local", KVStoreOptions());
  ASSERT_TRUE(kv.ok()) << kv.status();
  std::vector<float> w(3, 0.0f), a = {1, 2, 3}, b = {10, 20, 30}, out(3);
  ASSERT_TRUE((*kv)->Init({1}, {w}, absl::InfiniteFuture()).ok());
  auto h = (*kv)->Push(1, {a, b}, 0);
  ASSERT_TRUE(h.ok());
  ASSERT_TRUE((*kv)->Wait(*h, absl::InfiniteFuture()).ok());
  auto p = (*kv)->Pull(1, absl::MakeSpan(out), 0);
  ASSERT_TRUE(p.ok());
  ASSERT_TRUE((*kv)->Wait(*p, absl::InfiniteFuture()).ok());
  EXPECT_EQ(out, (std::vector<float>{11, 22, 33}));
  auto unknown = (*kv)->Pull(2, absl::MakeSpan(out), 0);
  ASSERT_TRUE(unknown.ok());
  EXPECT_EQ((*kv)->Wait(*unknown, absl::InfiniteFuture()).code(),
            absl::StatusCode::kNotFound);
}

TEST(LocalKVStoreTest, PushPullGroupUpdatesEveryKey) {
  auto kv = KVStore::Create("local", KVStoreOptions());
  ASSERT_TRUE(kv.ok()) << kv.status();
  std::vector<float> w1(3, 0.0f), w2(2, 0.0f), a = {1, 2, 3}, b = {10, 20, 30},
                                               c = {5, 6};
  std::vector<float> out1(3), out2(2);
  ASSERT_TRUE((*kv)->Init({1, 2}, {w1, w2}, absl::InfiniteFuture()).ok());
  auto h = (*kv)->PushPullGroup(
      {{1, {a, b}, absl::MakeSpan(out1)}, {2, {c}, absl::MakeSpan(out2)}}, 0);
  ASSERT_TRUE(h.ok());
  ASSERT_TRUE((*kv)->Wait(*h, absl::InfiniteFuture()).ok());
  EXPECT_EQ(out1, (std::vector<float>{11, 22, 33}));
  EXPECT_EQ(out2, (std::vector<float>{5, 6}));
  auto bad = (*kv)->PushPullGroup({{3, {c}, absl::MakeSpan(out2)}}, 0);
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ((*kv)->Wait(*bad, absl::InfiniteFuture()).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ((*kv)
                ->PushPullGroup({{1, {a}, absl::MakeSpan(out1)},
                                 {1, {a}, absl::MakeSpan(out1)}},
                                0)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*kv)->PushPullGroup({}, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(KVStoreTest, DistRefusesAnUnusableMessageSize) {
  KVStoreOptions o;
  o.max_message_bytes = int64_t{4} << 30;
  auto kv = KVStore::Create("dist_sync", o);
  ASSERT_FALSE(kv.ok());
  EXPECT_EQ(kv.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(kv.status().message()).find("max_message_bytes"),
            std::string::npos);
}

}  // namespace
}  // namespace kvstore
}  // namespace pstrain
