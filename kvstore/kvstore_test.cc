// The local KVStore and KVStore::Create's checks (no cluster needed); the
// partition plan has partition_test.cc.
#include "kvstore/kvstore.h"

#include <vector>

#include "gtest/gtest.h"

namespace pstrain {
namespace kvstore {
namespace {

TEST(LocalKVStoreTest, PushStoresTheDeviceSumPullReadsIt) {
  auto kv = KVStore::Create("local", KVStoreOptions());
  ASSERT_TRUE(kv.ok()) << kv.status();
  std::vector<float> w(3, 0.0f), a = {1, 2, 3}, b = {10, 20, 30}, out(3);
  ASSERT_TRUE((*kv)->Init({1}, {w}, absl::InfiniteFuture()).ok());
  auto h = (*kv)->Push(1, {a, b}, 0);
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE((*kv)->Done(*h));  // Local operations end before returning.
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
