// Gradient compression through the real servers (issue #16): KVStore
// workers in this process, scheduler and servers as processes, dist_sync
// without an optimizer (the servers store each round's sum). What a pull
// returns must be exactly the sum of what the codec makes of each
// worker's push, computed here with the same kernels (and residuals).
#include <random>
#include <thread>
#include <vector>

#include "compression/codec.h"
#include "compression/compression.h"
#include "gtest/gtest.h"
#include "kvstore/kvstore.h"
#include "tests/cluster_util.h"
#include "util/test_util.h"

namespace pstrain {
namespace {

using testing_util::Cluster;
using testing_util::ClusterSpec;
using testing_util::Deadline;

constexpr int kWorkers = 2;
constexpr int64_t kBig = 300001;  // >= 64 KiB: compressed; one server.
constexpr int64_t kSmall = 100;   // Raw.

std::vector<float> Grad(int rank, int round, int64_t n) {
  std::mt19937 rng(rank * 100 + round);
  std::normal_distribution<float> d(0, 0.5f);
  std::vector<float> g(n);
  for (float& x : g) x = d(rng);
  return g;
}

// What the servers make of worker pushes of `g` with `c` (state: the
// worker's residual, updated).
std::vector<float> Received(const proto::GradientCompression& c,
                            const std::vector<float>& g,
                            std::vector<float>* state) {
  const size_t n = g.size();
  std::vector<float> out(n);
  if (c.type() == proto::TWO_BIT) {
    std::vector<uint8_t> p(compression::TwoBitBytes(n));
    compression::Quantize2Bit(g.data(), state->data(), n, c.threshold(),
                              p.data());
    compression::Dequantize2Bit(p.data(), n, c.threshold(), out.data());
  } else if (c.type() == proto::ONEBIT) {
    std::vector<uint8_t> p(compression::OnebitBytes(n));
    compression::OnebitCompress(g.data(), state->data(), n, p.data());
    compression::OnebitDecompress(p.data(), n, out.data());
  } else {
    std::vector<uint16_t> h(n);
    compression::FloatToHalf(g.data(), n, h.data());
    compression::HalfToFloat(h.data(), n, out.data());
  }
  return out;
}

void PushAndPull(const char* spec) {
  const auto c = compression::Parse(spec, compression::kDefaultMinBytes);
  ASSERT_TRUE(c.ok()) << c.status();
  ClusterSpec cs;
  cs.workers = kWorkers;
  cs.servers = 2;
  Cluster cluster(cs);
  ASSERT_TRUE(cluster.Start());
  std::vector<std::unique_ptr<kvstore::KVStore>> kv(kWorkers);
  {
    std::vector<std::thread> threads;
    std::vector<std::unique_ptr<kvstore::KVStore>> made(kWorkers);
    for (int i = 0; i < kWorkers; ++i) {
      threads.emplace_back([&, i] {
        kvstore::KVStoreOptions o = cluster.WorkerOptions();
        o.compression = *c;
        auto s = kvstore::KVStore::Create("dist_sync", o);
        ASSERT_TRUE(s.ok()) << s.status();
        made[i] = std::move(*s);
      });
    }
    for (auto& t : threads) t.join();
    for (auto& k : made) {
      ASSERT_NE(k, nullptr) << cluster.AllOutput();
      kv[k->rank()] = std::move(k);
    }
  }
  // The expected weights after each round, computed as the servers should.
  std::vector<std::vector<float>> residual(kWorkers,
                                           std::vector<float>(kBig, 0.0f));
  std::vector<std::thread> threads;
  std::vector<std::vector<float>> want_big(2), want_small(2);
  for (int round = 0; round < 2; ++round) {
    std::vector<float> sum(kBig, 0.0f), small(kSmall, 0.0f);
    for (int r = 0; r < kWorkers; ++r) {
      const std::vector<float> got =
          Received(*c, Grad(r, round, kBig), &residual[r]);
      for (int64_t i = 0; i < kBig; ++i) sum[i] += got[i];
      const std::vector<float> g = Grad(r, round, kSmall);
      for (int64_t i = 0; i < kSmall; ++i) small[i] += g[i];
    }
    if (c->type() == proto::FP16) {  // Pulls come back in half precision.
      std::vector<float> dummy(kBig);
      sum = Received(*c, sum, &dummy);
    }
    want_big[round] = sum;
    want_small[round] = small;
  }
  for (int r = 0; r < kWorkers; ++r) {
    threads.emplace_back([&, r] {
      std::vector<float> zb(kBig, 0.0f), zs(kSmall, 0.0f);
      ASSERT_TRUE(kv[r]->Init({0, 1}, {zb, zs}, Deadline()).ok());
      for (int round = 0; round < 2; ++round) {
        const std::vector<float> gb = Grad(r, round, kBig);
        const std::vector<float> gs = Grad(r, round, kSmall);
        std::vector<float> ob(kBig), os(kSmall);
        auto h1 = kv[r]->PushPull(0, {gb}, absl::MakeSpan(ob), 0);
        auto h2 = kv[r]->PushPull(1, {gs}, absl::MakeSpan(os), 0);
        ASSERT_TRUE(h1.ok() && h2.ok());
        ASSERT_TRUE(kv[r]->Wait(*h1, Deadline()).ok());
        ASSERT_TRUE(kv[r]->Wait(*h2, Deadline()).ok());
        for (int64_t i = 0; i < kBig; ++i) {
          ASSERT_EQ(ob[i], want_big[round][i])
              << spec << " rank " << r << " round " << round << " i " << i;
        }
        for (int64_t i = 0; i < kSmall; ++i) {
          ASSERT_EQ(os[i], want_small[round][i]) << spec << " i " << i;
        }
        ASSERT_TRUE(kv[r]->Barrier(Deadline()).ok());
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& k : kv) ASSERT_TRUE(k->Finish().ok());
  ASSERT_TRUE(cluster.scheduler.WaitExit(Deadline(20))) << cluster.AllOutput();
}

TEST(CompressionKVStoreTest, TwoBit) { PushAndPull("type=2bit,threshold=0.5"); }
TEST(CompressionKVStoreTest, Fp16) { PushAndPull("type=fp16"); }
TEST(CompressionKVStoreTest, Onebit) { PushAndPull("type=onebit"); }

}  // namespace
}  // namespace pstrain
