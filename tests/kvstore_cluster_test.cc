// The parameter server end to end: real scheduler and server processes on
// 127.0.0.1, KVStore workers in this process.
#include <signal.h>
#include <zmq.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvstore/partition.h"
#include "tests/cluster_util.h"
#include "transport/curve.h"
#include "transport/raw_peer.h"
#include "util/test_util.h"

namespace pstrain {
namespace {

using ::testing::HasSubstr;
using testing_util::Cluster;
using testing_util::ClusterSpec;
using testing_util::Deadline;

// Values whose float sum depends on the order: rank r holds
// {1e8, 1, -1e8, 3.5}[r % 4] * (1 + i % 7).
float Value(int rank, int64_t i) {
  static const float base[4] = {1e8f, 1.0f, -1e8f, 3.5f};
  return base[rank % 4] * static_cast<float>(1 + i % 7);
}

// Over shared memory (the nodes share this host) or TCP only; with `links`
// (implied by `plaintext`) TCP goes through the data links
// (transport/data_link.h; encrypted unless `plaintext`), else through
// ZeroMQ only; `slice_bytes` and `send_credit_bytes` (-1: the defaults).
void SyncSumsInRankOrderBitForBit(int64_t shm_bytes, bool plaintext = false,
                                  int64_t slice_bytes = -1,
                                  int64_t send_credit_bytes = -1,
                                  bool links = false) {
  links = links || plaintext;
  ClusterSpec spec;
  spec.tcp_data_link = links;
  spec.workers = 3;
  spec.servers = 2;
  spec.shm_bytes = shm_bytes;
  spec.insecure_plaintext = plaintext;
  spec.slice_bytes = slice_bytes;
  spec.send_credit_bytes = send_credit_bytes;
  Cluster c(spec);
  ASSERT_TRUE(c.Start());
  auto kv = c.Workers("dist_sync");
  ASSERT_EQ(kv.size(), 3u);
  for (auto& k : kv) ASSERT_NE(k, nullptr) << c.AllOutput();
  // Key 0 is big (split over both servers), keys 1-4 small.
  const std::vector<int64_t> keys = {0, 1, 2, 3, 4};
  const std::vector<int64_t> sizes = {1500001, 10, 1000, 7, 250000};
  std::vector<std::vector<float>> init;
  for (int64_t s : sizes) init.emplace_back(s, 0.0f);
  std::vector<std::thread> threads;
  for (int r = 0; r < 3; ++r) {
    threads.emplace_back([&, r] {
      std::vector<absl::Span<const float>> spans(init.begin(), init.end());
      ASSERT_TRUE(kv[r]->Init(keys, spans, Deadline()).ok());
      if (links) {
        // A link comes up in the background after the first reply offers
        // it; small pulls until this worker's messages both ways went
        // through its links, so that the rounds below use them.
        const absl::Time give_up = Deadline(20);
        std::vector<float> warm(sizes[1]);
        while (absl::Now() < give_up) {
          const transport::TransportStats st = kv[r]->transport_stats();
          if (st.link_messages_sent > 0 && st.link_messages_received > 0) {
            break;
          }
          auto h = kv[r]->Pull(1, absl::MakeSpan(warm), 0);
          ASSERT_TRUE(h.ok());
          ASSERT_TRUE(kv[r]->Wait(*h, Deadline()).ok());
          absl::SleepFor(absl::Milliseconds(5));
        }
      }
      for (int round = 0; round < 2; ++round) {
        // Every worker pushes the keys in its own order.
        std::vector<int64_t> order = keys;
        std::shuffle(order.begin(), order.end(), std::mt19937(r * 10 + round));
        std::vector<std::vector<float>> vals(keys.size());
        std::vector<kvstore::Handle> handles;
        for (int64_t k : order) {
          vals[k].resize(sizes[k]);
          for (int64_t i = 0; i < sizes[k]; ++i)
            vals[k][i] = Value(r + round, i);
          auto h = kv[r]->Push(k, {vals[k]}, static_cast<int>(-k));
          ASSERT_TRUE(h.ok()) << h.status();
          handles.push_back(*h);
        }
        // Done() polls without consuming: once it says so, Wait returns
        // at once.
        for (auto h : handles) {
          const absl::Time give_up = Deadline();
          while (!kv[r]->Done(h) && absl::Now() < give_up)
            absl::SleepFor(absl::Milliseconds(1));
          ASSERT_TRUE(kv[r]->Done(h));
          ASSERT_TRUE(kv[r]->Wait(h, absl::InfinitePast()).ok());
        }
        for (int64_t k : keys) {
          std::vector<float> out(sizes[k]);
          auto h = kv[r]->Pull(k, absl::MakeSpan(out), 0);
          ASSERT_TRUE(h.ok());
          ASSERT_TRUE(kv[r]->Wait(*h, Deadline()).ok());
          for (int64_t i = 0; i < sizes[k]; ++i) {
            // Rank order: ((v0 + v1) + v2), in float.
            float want = 0.0f;
            for (int w = 0; w < 3; ++w) want += Value(w + round, i);
            ASSERT_EQ(out[i], want)
                << "key " << k << " i " << i << " round " << round;
          }
        }
        ASSERT_TRUE(kv[r]->Barrier(Deadline()).ok());
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& k : kv) {
    // Key 0's pushes (1.5 M floats) and the pull replies are big enough for
    // shared memory; nothing else may drop a message.
    const transport::TransportStats st = k->transport_stats();
    EXPECT_EQ(st.dropped_malformed, 0);
    if (shm_bytes > 0) {
      EXPECT_GT(st.shm_frames_sent, 0);
      EXPECT_GT(st.shm_frames_received, 0);
    } else {
      EXPECT_EQ(st.shm_frames_sent + st.shm_frames_received, 0);
    }
    if (links) {
      // Pushes out and replies back went through the links.
      EXPECT_GT(st.link_messages_sent, 0) << c.AllOutput();
      EXPECT_GT(st.link_messages_received, 0);
    } else {
      EXPECT_EQ(st.link_messages_sent + st.link_messages_received, 0);
    }
    EXPECT_EQ(st.link_errors, 0);
    EXPECT_EQ(st.link_auth_failures, 0);
  }
  for (auto& k : kv) ASSERT_TRUE(k->Finish().ok());
  ASSERT_TRUE(c.scheduler.WaitExit(Deadline(20))) << c.AllOutput();
  EXPECT_TRUE(c.scheduler.p->succeeded()) << c.AllOutput();
  for (auto& s : c.servers) {
    ASSERT_TRUE(s.WaitExit(Deadline(20)));
    EXPECT_TRUE(s.p->succeeded()) << c.AllOutput();
  }
}

TEST(KVStoreClusterTest, SyncSumsInRankOrderBitForBit) {
  SyncSumsInRankOrderBitForBit(cluster::kDefaultShmBytes);
}

TEST(KVStoreClusterTest, SyncSumsInRankOrderBitForBitOverTcpOnly) {
  SyncSumsInRankOrderBitForBit(0);
}

TEST(KVStoreClusterTest, SyncSumsInRankOrderBitForBitOverTheTcpDataLink) {
  SyncSumsInRankOrderBitForBit(0, /*plaintext=*/true);
}

// The default wire: CURVE, with the data links encrypted.
TEST(KVStoreClusterTest,
     SyncSumsInRankOrderBitForBitOverTheEncryptedTcpDataLink) {
  SyncSumsInRankOrderBitForBit(0, /*plaintext=*/false, -1, -1,
                               /*links=*/true);
}

// Small slices and a send credit of two of them (issue #16): the workers
// push in different orders, so a credit returned only when a dist_sync
// round closes would deadlock them; the servers' receipts return it as
// soon as a push is read.
TEST(KVStoreClusterTest, SyncSumsInRankOrderWithSlicesAndSendCredit) {
  SyncSumsInRankOrderBitForBit(0, /*plaintext=*/false,
                               /*slice_bytes=*/256 << 10,
                               /*send_credit_bytes=*/512 << 10);
}

// Least squares y = X w*: W workers with batch b each under dist_sync give
// the same weights as one worker with batch W*b (rescale_grad 1/(W*b)).
TEST(KVStoreClusterTest, DistSyncEqualsOneWorkerWithTheWholeBatch) {
  constexpr int kW = 2, kB = 8, kDim = 5, kSteps = 6;
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  std::vector<float> X(kW * kB * kDim), y(kW * kB);
  for (auto& v : X) v = nd(rng);
  for (int n = 0; n < kW * kB; ++n) {
    y[n] = 0;
    for (int d = 0; d < kDim; ++d) y[n] += X[n * kDim + d] * (d + 1);
  }
  proto::OptimizerConfig opt;
  opt.set_kind(proto::OptimizerConfig::SGD);
  opt.set_learning_rate(0.05);
  opt.set_momentum(0.9);
  opt.set_weight_decay(0.001);
  opt.set_rescale_grad(1.0 / (kW * kB));
  // Gradient of 0.5 * sum (x.w - y)^2 over rows [lo, hi).
  auto grad = [&](const std::vector<float>& w, int lo, int hi) {
    std::vector<float> g(kDim, 0.0f);
    for (int n = lo; n < hi; ++n) {
      float e = -y[n];
      for (int d = 0; d < kDim; ++d) e += X[n * kDim + d] * w[d];
      for (int d = 0; d < kDim; ++d) g[d] += e * X[n * kDim + d];
    }
    return g;
  };
  auto train = [&](kvstore::KVStore* kv, int lo, int hi) {
    std::vector<float> w(kDim, 0.0f);
    EXPECT_TRUE(kv->Init({7}, {w}, Deadline()).ok());
    EXPECT_TRUE(kv->SetOptimizer(opt, Deadline()).ok());
    for (int step = 0; step < kSteps; ++step) {
      auto h = kv->Pull(7, absl::MakeSpan(w), 0);
      EXPECT_TRUE(h.ok() && kv->Wait(*h, Deadline()).ok());
      std::vector<float> g = grad(w, lo, hi);
      auto p = kv->Push(7, {g}, 0);
      EXPECT_TRUE(p.ok() && kv->Wait(*p, Deadline()).ok());
    }
    auto h = kv->Pull(7, absl::MakeSpan(w), 0);
    EXPECT_TRUE(h.ok() && kv->Wait(*h, Deadline()).ok());
    return w;
  };
  auto local = kvstore::KVStore::Create("local", {});
  ASSERT_TRUE(local.ok());
  std::vector<float> want = train(local->get(), 0, kW * kB);

  ClusterSpec spec;
  spec.workers = kW;
  spec.servers = 1;
  Cluster c(spec);
  ASSERT_TRUE(c.Start());
  auto kv = c.Workers("dist_sync");
  std::vector<std::vector<float>> got(kW);
  std::vector<std::thread> threads;
  for (int r = 0; r < kW; ++r) {
    threads.emplace_back(
        [&, r] { got[r] = train(kv[r].get(), r * kB, (r + 1) * kB); });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < kW; ++r) {
    for (int d = 0; d < kDim; ++d) {
      EXPECT_NEAR(got[r][d], want[d], 1e-5 * std::max(1.0f, std::fabs(want[d])))
          << r << " " << d;
    }
  }
  EXPECT_NE(want, std::vector<float>(kDim, 0.0f));  // It did train.
  for (auto& k : kv) ASSERT_TRUE(k->Finish().ok());
}

TEST(KVStoreClusterTest, AsyncAppliesEveryPushExactlyOnce) {
  ClusterSpec spec;
  spec.workers = 2;
  spec.servers = 2;
  Cluster c(spec);
  ASSERT_TRUE(c.Start());
  auto kv = c.Workers("dist_async");
  constexpr int kPushes = 40;
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      std::vector<float> zero(1100000, 0.0f);  // Split over both servers.
      absl::Status init = kv[r]->Init({3}, {zero}, Deadline());
      ASSERT_TRUE(init.ok()) << init << c.AllOutput();
      std::vector<float> ones(zero.size(), static_cast<float>(r + 1));
      for (int i = 0; i < kPushes; ++i) {
        auto h = kv[r]->Push(3, {ones}, 0);
        ASSERT_TRUE(h.ok());
        ASSERT_TRUE(kv[r]->Wait(*h, Deadline()).ok());
      }
      ASSERT_TRUE(kv[r]->Barrier(Deadline()).ok());
      std::vector<float> out(zero.size());
      auto h = kv[r]->Pull(3, absl::MakeSpan(out), 0);
      ASSERT_TRUE(h.ok() && kv[r]->Wait(*h, Deadline()).ok());
      // Worker 0 adds 1, worker 1 adds 2, each kPushes times: 3 * kPushes.
      EXPECT_EQ(out.front(), 3.0f * kPushes);
      EXPECT_EQ(out.back(), 3.0f * kPushes);
    });
  }
  for (auto& t : threads) t.join();
  for (auto& k : kv) ASSERT_TRUE(k->Finish().ok());
}

// PushPullGroup packs many keys into few messages (a key split over both
// servers, one in two chunks per server, small ones packed together); with
// an optimizer it gives bit for bit what one PushPull per key gives.
TEST(KVStoreClusterTest, PushPullGroupEqualsOnePushPullPerKey) {
  ClusterSpec spec;
  spec.workers = 2;
  spec.servers = 2;
  spec.heartbeat_timeout_s = 10;  // Big values under the sanitizers are slow.
  Cluster c(spec);
  ASSERT_TRUE(c.Start());
  auto kv = c.Workers("dist_sync");
  ASSERT_EQ(kv.size(), 2u);
  for (auto& k : kv) ASSERT_NE(k, nullptr) << c.AllOutput();
  // Keys 0-5 go through PushPullGroup, keys 10-15 (same sizes) one by one.
  const std::vector<int64_t> sizes = {2500000, 10, 1200000, 7, 250000, 1000};
  std::vector<int64_t> keys;
  std::vector<std::vector<float>> init;
  for (int64_t base : {0, 10}) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      keys.push_back(base + static_cast<int64_t>(i));
      init.emplace_back(sizes[i], 0.5f);
    }
  }
  proto::OptimizerConfig opt;
  opt.set_kind(proto::OptimizerConfig::SGD);
  opt.set_learning_rate(0.05);
  opt.set_momentum(0.9);
  opt.set_weight_decay(0.001);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      std::vector<absl::Span<const float>> spans(init.begin(), init.end());
      ASSERT_TRUE(kv[r]->Init(keys, spans, Deadline()).ok()) << c.AllOutput();
      ASSERT_TRUE(kv[r]->SetOptimizer(opt, Deadline()).ok());
      for (int round = 0; round < 3; ++round) {
        std::vector<std::vector<float>> grad(sizes.size()),
            grouped(sizes.size()), single(sizes.size());
        std::vector<kvstore::KeyPushPull> group;
        std::vector<kvstore::Handle> singles;
        for (size_t i = 0; i < sizes.size(); ++i) {
          grad[i].resize(sizes[i]);
          for (int64_t j = 0; j < sizes[i]; ++j)
            grad[i][j] = Value(r + round, j) * 1e-9f;
          grouped[i].resize(sizes[i]);
          single[i].resize(sizes[i]);
          group.push_back(
              {static_cast<int64_t>(i), {grad[i]}, absl::MakeSpan(grouped[i])});
          auto h = kv[r]->PushPull(10 + static_cast<int64_t>(i), {grad[i]},
                                   absl::MakeSpan(single[i]), 0);
          ASSERT_TRUE(h.ok()) << h.status();
          singles.push_back(*h);
        }
        // Every worker lists the keys in its own order.
        std::shuffle(group.begin(), group.end(), std::mt19937(r * 10 + round));
        auto g = kv[r]->PushPullGroup(group, 0);
        ASSERT_TRUE(g.ok()) << g.status();
        absl::Status gs = kv[r]->Wait(*g, Deadline());
        ASSERT_TRUE(gs.ok()) << gs << c.AllOutput();
        for (auto h : singles) ASSERT_TRUE(kv[r]->Wait(h, Deadline()).ok());
        for (size_t i = 0; i < sizes.size(); ++i) {
          ASSERT_EQ(grouped[i], single[i]) << "key " << i << " round " << round;
          ASSERT_NE(grouped[i][0], 0.5f) << "key " << i << " was not updated";
        }
      }
      // Bad groups fail before anything is sent.
      std::vector<float> out(10), small(3);
      EXPECT_EQ(kv[r]
                    ->PushPullGroup({{99, {out}, absl::MakeSpan(out)}}, 0)
                    .status()
                    .code(),
                absl::StatusCode::kNotFound);
      EXPECT_EQ(kv[r]
                    ->PushPullGroup({{1, {out}, absl::MakeSpan(small)}}, 0)
                    .status()
                    .code(),
                absl::StatusCode::kInvalidArgument);
      EXPECT_EQ(kv[r]
                    ->PushPullGroup({{1, {out}, absl::MakeSpan(out)},
                                     {1, {out}, absl::MakeSpan(out)}},
                                    0)
                    .status()
                    .code(),
                absl::StatusCode::kInvalidArgument);
      EXPECT_EQ(kv[r]->PushPullGroup({}, 0).status().code(),
                absl::StatusCode::kInvalidArgument);
      ASSERT_TRUE(kv[r]->Barrier(Deadline()).ok());
    });
  }
  for (auto& t : threads) t.join();
  for (auto& k : kv) ASSERT_TRUE(k->Finish().ok());
}

// One worker and no optimizer: the server adopts each push's received
// buffer as the weights. Pulls in flight while the next push lands read a
// whole old or new version; pulls after it read exactly the push.
TEST(KVStoreClusterTest, OneWorkerStoresEachPushWhilePullsAreInFlight) {
  ClusterSpec spec;
  spec.workers = 1;
  spec.servers = 1;
  spec.heartbeat_timeout_s = 10;  // Big values under the sanitizers are slow.
  Cluster c(spec);
  ASSERT_TRUE(c.Start());
  auto kv = c.Workers("dist_sync");
  ASSERT_EQ(kv.size(), 1u);
  ASSERT_NE(kv[0], nullptr) << c.AllOutput();
  // Key 0 spans three 4 MiB chunks, key 1 is tiny (ZeroMQ's small-message
  // path).
  const std::vector<int64_t> sizes = {2500000, 3};
  std::vector<std::vector<float>> init;
  for (int64_t n : sizes) init.emplace_back(n, -1.0f);
  ASSERT_TRUE(kv[0]->Init({0, 1}, {init[0], init[1]}, Deadline()).ok())
      << c.AllOutput();
  auto round_value = [](int round, int64_t i) {
    return static_cast<float>(round * 1000 + i % 997);
  };
  for (int round = 0; round < 8; ++round) {
    for (int64_t k = 0; k < 2; ++k) {
      const int64_t n = sizes[k];
      std::vector<float> before(n), after(n), echoed(n), v(n);
      for (int64_t i = 0; i < n; ++i) v[i] = round_value(round, i);
      auto early = kv[0]->Pull(k, absl::MakeSpan(before), 0);
      auto push = kv[0]->PushPull(k, {v}, absl::MakeSpan(echoed), 0);
      ASSERT_TRUE(early.ok() && push.ok());
      ASSERT_TRUE(kv[0]->Wait(*push, Deadline()).ok());
      ASSERT_TRUE(kv[0]->Wait(*early, Deadline()).ok());
      auto late = kv[0]->Pull(k, absl::MakeSpan(after), 0);
      ASSERT_TRUE(late.ok() && kv[0]->Wait(*late, Deadline()).ok());
      ASSERT_EQ(echoed, v) << "key " << k << " round " << round;
      ASSERT_EQ(after, v) << "key " << k << " round " << round;
      // The early pull saw the previous round's push or this one, a whole
      // version per chunk (one message each): never a mixture, which is what
      // a version rewritten while its reply is still being sent would give.
      std::vector<int64_t> load(1, 0);
      const auto chunks =
          kvstore::SplitIntoChunks(kvstore::PlanKey(k, n, 1, n, &load),
                                   c.WorkerOptions().max_message_bytes /
                                       static_cast<int64_t>(sizeof(float)));
      for (const kvstore::SliceSpec& ch : chunks) {
        bool all_old = true, all_new = true;
        for (int64_t i = ch.offset; i < ch.offset + ch.length; ++i) {
          const float old = round == 0 ? -1.0f : round_value(round - 1, i);
          all_old = all_old && before[i] == old;
          all_new = all_new && before[i] == v[i];
        }
        ASSERT_TRUE(all_old || all_new)
            << "key " << k << " round " << round << " chunk at " << ch.offset;
      }
    }
  }
  ASSERT_TRUE(kv[0]->Finish().ok());
}

TEST(KVStoreClusterTest, KilledServerAbortsTheJobNamingIt) {
  ClusterSpec spec;
  spec.workers = 1;
  spec.servers = 2;
  Cluster c(spec);
  ASSERT_TRUE(c.Start());
  auto kv = c.Workers("dist_sync");
  ASSERT_NE(kv[0], nullptr);
  std::vector<float> v(100, 1.0f);
  ASSERT_TRUE(kv[0]->Init({1, 2}, {v, v}, Deadline()).ok());
  c.servers[1].p->SignalGroup(SIGKILL);
  const absl::Time killed = absl::Now();
  ASSERT_TRUE(c.scheduler.WaitExit(Deadline(15))) << c.AllOutput();
  EXPECT_FALSE(c.scheduler.p->succeeded());
  EXPECT_THAT(c.scheduler.output, HasSubstr("node dead: server rank"));
  EXPECT_THAT(c.scheduler.output, HasSubstr("silent for"));
  // The worker's operations fail too, and the other server exits non-zero.
  auto h = kv[0]->Push(1, {v}, 0);
  absl::Status s = h.ok() ? kv[0]->Wait(*h, Deadline(15)) : h.status();
  EXPECT_FALSE(s.ok());
  ASSERT_TRUE(c.servers[0].WaitExit(Deadline(15)));
  EXPECT_FALSE(c.servers[0].p->succeeded());
  EXPECT_LT(absl::Now() - killed, absl::Seconds(15));
}

// A field of /proc/PID/status in bytes (VmRSS, VmHWM), or -1.
int64_t ProcStatusBytes(pid_t pid, const std::string& field) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0)
      return std::stoll(line.substr(field.size() + 1)) * 1024;
  }
  return -1;
}

// Stops `p`'s process group and waits until the kernel reports the process
// stopped (state T): the signal takes effect asynchronously, and under load
// a server could otherwise still answer a request sent right after it.
bool StopAndWait(launcher::Subprocess* p) {
  p->SignalGroup(SIGSTOP);
  return WaitFor([&] {
    std::ifstream status(absl::StrCat("/proc/", p->pid(), "/status"));
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("State:", 0) == 0)
        return line.find('T') != std::string::npos;
    }
    return false;
  });
}

// Pushes `values` to `key` until a push is queued, counting the pushes that
// found no room in time (DeadlineExceeded, nothing queued).
kvstore::Handle PushRetrying(kvstore::KVStore* kv, int64_t key,
                             const std::vector<float>& values, int* timeouts) {
  while (true) {
    auto h = kv->Push(key, {values}, 0);
    if (h.ok()) return *h;
    EXPECT_EQ(h.status().code(), absl::StatusCode::kDeadlineExceeded)
        << h.status();
    if (h.status().code() != absl::StatusCode::kDeadlineExceeded) return -1;
    ++*timeouts;
  }
}

TEST(KVStoreClusterTest, PushFloodStaysBoundedAndIsAppliedExactlyOnce) {
  ClusterSpec spec;
  spec.workers = 1;
  spec.servers = 1;
  spec.heartbeat_timeout_s = 20;  // The server is stopped for a while.
  Cluster c(spec);
  ASSERT_TRUE(c.Start());
  kvstore::KVStoreOptions o = c.WorkerOptions();
  constexpr int64_t kBound = int64_t{32} << 20;
  o.max_outstanding_bytes_per_server = kBound;
  o.send_timeout = absl::Milliseconds(500);
  auto kv = kvstore::KVStore::Create("dist_async", o);
  ASSERT_TRUE(kv.ok()) << kv.status() << c.AllOutput();
  constexpr int64_t kFloats = int64_t{4} << 20;  // 16 MiB values.
  constexpr int kPushes = 64;                    // 1 GiB in all.
  std::vector<float> zeros(kFloats, 0.0f), ones(kFloats, 1.0f);
  ASSERT_TRUE((*kv)->Init({7}, {zeros}, Deadline()).ok());
  const pid_t server = c.servers[0].p->pid();
  const int64_t rss_before = ProcStatusBytes(server, "VmRSS");
  // A stopped server takes nothing: after the bound, Push gives up at its
  // deadline instead of queueing more.
  ASSERT_TRUE(StopAndWait(c.servers[0].p.get()));
  std::vector<kvstore::Handle> handles;
  absl::Status full;
  while (handles.size() < kPushes) {
    auto h = (*kv)->Push(7, {ones}, 0);
    if (!h.ok()) {
      full = h.status();
      break;
    }
    handles.push_back(*h);
  }
  EXPECT_EQ(full.code(), absl::StatusCode::kDeadlineExceeded) << full;
  EXPECT_THAT(std::string(full.message()),
              HasSubstr("outstanding-request bounds"));
  EXPECT_LE(static_cast<int64_t>(handles.size()) * kFloats * 4, kBound);
  c.servers[0].p->SignalGroup(SIGCONT);
  // The rest of the flood, without waiting for acknowledgements.
  int timeouts = 0;
  while (handles.size() < kPushes) {
    const kvstore::Handle h = PushRetrying(kv->get(), 7, ones, &timeouts);
    ASSERT_GE(h, 0) << c.AllOutput();
    handles.push_back(h);
  }
  for (auto h : handles) ASSERT_TRUE((*kv)->Wait(h, Deadline()).ok());
  std::vector<float> out(kFloats);
  auto h = (*kv)->Pull(7, absl::MakeSpan(out), 0);
  ASSERT_TRUE(h.ok() && (*kv)->Wait(*h, Deadline()).ok());
  // Every queued push applied exactly once, none of the refused ones.
  EXPECT_EQ(out.front(), static_cast<float>(kPushes));
  EXPECT_EQ(out.back(), static_cast<float>(kPushes));
  // The server never held more than the bound plus its weights and
  // buffers: far less than the 1 GiB pushed.
  const int64_t peak = ProcStatusBytes(server, "VmHWM");
  RecordProperty("server_rss_before_mib", static_cast<int>(rss_before >> 20));
  RecordProperty("server_peak_rss_mib", static_cast<int>(peak >> 20));
  RecordProperty("push_timeouts_after_resume", timeouts);
#if !defined(__SANITIZE_THREAD__) && \
    !defined(__SANITIZE_ADDRESS__)  // Shadow memory.
  EXPECT_LT(peak - rss_before, int64_t{256} << 20);
#endif
  ASSERT_TRUE((*kv)->Finish().ok());
  ASSERT_TRUE(c.servers[0].WaitExit(Deadline(20))) << c.AllOutput();
  EXPECT_TRUE(c.servers[0].p->succeeded()) << c.AllOutput();
}

TEST(KVStoreClusterTest, PushWaitingForRoomEndsWhenTheJobAborts) {
  ClusterSpec spec;
  spec.workers = 1;
  spec.servers = 1;
  Cluster c(spec);
  ASSERT_TRUE(c.Start());
  kvstore::KVStoreOptions o = c.WorkerOptions();
  o.max_outstanding_requests_per_server = 1;
  o.send_timeout = absl::Seconds(120);
  auto kv = kvstore::KVStore::Create("dist_async", o);
  ASSERT_TRUE(kv.ok()) << kv.status() << c.AllOutput();
  std::vector<float> v(1000, 1.0f);
  ASSERT_TRUE((*kv)->Init({1}, {v}, Deadline()).ok());
  ASSERT_TRUE(StopAndWait(c.servers[0].p.get()));
  auto first = (*kv)->Push(1, {v}, 0);  // Outstanding: the bound is reached.
  ASSERT_TRUE(first.ok());
  absl::StatusOr<kvstore::Handle> second;
  const absl::Time start = absl::Now();
  std::thread t([&] { second = (*kv)->Push(1, {v}, 0); });
  c.servers[0].p->SignalGroup(SIGKILL);
  t.join();
  EXPECT_EQ(second.status().code(), absl::StatusCode::kAborted)
      << second.status();
  EXPECT_THAT(std::string(second.status().message()),
              HasSubstr("node dead: server rank 0"));
  EXPECT_EQ((*kv)->Wait(*first, Deadline(1)).code(),
            absl::StatusCode::kAborted);
  EXPECT_LT(absl::Now() - start, absl::Seconds(15));
}

// Two threads waiting for the same handle: one gets the result, the other
// NotFound, and neither touches the operation after the first took it (run
// under ASan to see).
TEST(KVStoreClusterTest, TwoWaitsOfOneHandleGetTheResultOnce) {
  ClusterSpec spec;
  spec.workers = 1;
  spec.servers = 1;
  Cluster c(spec);
  ASSERT_TRUE(c.Start());
  auto kv = kvstore::KVStore::Create("dist_async", c.WorkerOptions());
  ASSERT_TRUE(kv.ok()) << kv.status() << c.AllOutput();
  std::vector<float> v(1000, 1.0f);
  ASSERT_TRUE((*kv)->Init({1}, {v}, Deadline()).ok());
  ASSERT_TRUE(StopAndWait(c.servers[0].p.get()));
  auto h = (*kv)->Push(1, {v}, 0);
  ASSERT_TRUE(h.ok()) << h.status();
  absl::Status a, b;
  std::thread ta([&] { a = (*kv)->Wait(*h, Deadline(20)); });
  std::thread tb([&] { b = (*kv)->Wait(*h, Deadline(20)); });
  absl::SleepFor(absl::Milliseconds(300));  // Both are waiting.
  c.servers[0].p->SignalGroup(SIGCONT);
  ta.join();
  tb.join();
  EXPECT_TRUE(a.ok() != b.ok()) << a << " / " << b;
  const absl::Status& other = a.ok() ? b : a;
  EXPECT_EQ(other.code(), absl::StatusCode::kNotFound) << other;
  EXPECT_EQ((*kv)->Wait(*h, Deadline(1)).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE((*kv)->Finish().ok());
}

TEST(KVStoreClusterTest, KilledSchedulerIsNoticedByEveryone) {
  ClusterSpec spec;
  spec.workers = 1;
  spec.servers = 1;
  Cluster c(spec);
  ASSERT_TRUE(c.Start());
  auto kv = c.Workers("dist_sync");
  ASSERT_NE(kv[0], nullptr);
  std::vector<float> v(10, 1.0f);
  ASSERT_TRUE(kv[0]->Init({1}, {v}, Deadline()).ok());
  c.scheduler.p->SignalGroup(SIGKILL);
  ASSERT_TRUE(c.servers[0].WaitExit(Deadline(15))) << c.AllOutput();
  EXPECT_FALSE(c.servers[0].p->succeeded());
  EXPECT_THAT(c.servers[0].output, HasSubstr("silent for"));
  absl::Status s = kv[0]->Barrier(Deadline(15));
  EXPECT_FALSE(s.ok());
}

TEST(KVStoreClusterTest, StartTimeoutNamesWhoIsMissing) {
  ClusterSpec spec;
  spec.workers = 2;
  spec.servers = 1;
  spec.start_timeout_s = 2;
  Cluster c(spec);
  ASSERT_TRUE(c.Start());
  std::unique_ptr<kvstore::KVStore> lonely;
  auto r =
      kvstore::KVStore::Create("dist_sync", c.WorkerOptions());  // Only 1 of 2.
  EXPECT_FALSE(r.ok());
  ASSERT_TRUE(c.scheduler.WaitExit(Deadline(15)));
  EXPECT_FALSE(c.scheduler.p->succeeded());
  EXPECT_THAT(c.scheduler.output,
              HasSubstr("missing 0 of 1 server(s) and 1 of 2 worker(s)"));
  ASSERT_TRUE(c.servers[0].WaitExit(Deadline(15)));
  EXPECT_FALSE(c.servers[0].p->succeeded());
}

}  // namespace
}  // namespace pstrain

namespace pstrain {
namespace {

using transport::RawPeer;

void SendGarbage(const std::string& endpoint, const std::string& token) {
  RawPeer raw(endpoint, token);
  proto::Header h;
  h.set_type(proto::PUSH);
  h.set_token(token);
  h.add_keys(0);
  h.add_offsets(0);
  h.add_lengths(int64_t{1} << 40);  // Huge declared length.
  std::string huge;
  h.SerializeToString(&huge);
  proto::Header wrong = h;
  wrong.set_token("not-the-token");
  wrong.set_lengths(0, 1);
  std::string bad_token;
  wrong.SerializeToString(&bad_token);
  proto::Header reg;
  reg.set_type(proto::REGISTER);
  reg.set_token("not-the-token");
  reg.mutable_node()->set_role(proto::WORKER);
  reg.mutable_node()->set_host("127.0.0.1");
  reg.mutable_node()->set_port(1);
  std::string bad_reg;
  reg.SerializeToString(&bad_reg);
  for (int i = 0; i < 5; ++i) {
    raw.Send({"\x01\x02garbage"});
    raw.Send({huge.substr(0, huge.size() / 2)});
    raw.Send({huge, std::string(4, 'x')});
    raw.Send({bad_token, std::string(4, 'x')});
    raw.Send({bad_reg});
  }
  absl::SleepFor(
      absl::Milliseconds(200));  // Let the bytes leave before closing.
}

std::string ServerAddress(testing_util::Proc& server) {
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    server.Pump();
    size_t at = server.output.find("SERVER at ");
    if (at != std::string::npos) {
      size_t end = server.output.find(' ', at + 10);
      if (end != std::string::npos)
        return server.output.substr(at + 10, end - at - 10);
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  return "";
}

// Two workers init key 5 and push-pull 1 and 2 once (dist_sync: both see
// 3), then finish.
void SyncRoundAndFinish(std::vector<std::unique_ptr<kvstore::KVStore>>& kv) {
  ASSERT_EQ(kv.size(), 2u);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      std::vector<float> v(1000, 0.0f);
      ASSERT_TRUE(kv[r]->Init({5}, {v}, Deadline()).ok());
      std::vector<float> g(1000, r + 1.0f);
      auto h = kv[r]->PushPull(5, {g}, absl::MakeSpan(v), 0);
      ASSERT_TRUE(h.ok());
      ASSERT_TRUE(kv[r]->Wait(*h, Deadline()).ok());
      EXPECT_EQ(v[999], 3.0f);
    });
  }
  for (auto& t : threads) t.join();
  for (auto& k : kv) ASSERT_TRUE(k->Finish().ok());
}

// Garbage and wrong tokens from a plaintext peer, into a job on plaintext
// (--insecure_plaintext: everything reaches the nodes) and into a job on
// CURVE (the default: nothing a stranger sends is even read).
void GarbageIsSurvived(bool insecure_plaintext, const std::string& counts) {
  ClusterSpec spec;
  spec.insecure_plaintext = insecure_plaintext;
  spec.workers = 2;
  spec.servers = 1;
  Cluster c(spec);
  ASSERT_TRUE(c.Start());
  const std::string server = ServerAddress(c.servers[0]);
  ASSERT_FALSE(server.empty()) << c.AllOutput();
  // Before the job starts (a wrong-token REGISTER must not take a slot)...
  SendGarbage(c.address, "test-token-123");
  SendGarbage(server, "test-token-123");
  auto kv = c.Workers("dist_sync");
  for (auto& k : kv) ASSERT_NE(k, nullptr) << c.AllOutput();
  // ...and while it runs.
  SendGarbage(c.address, "test-token-123");
  SendGarbage(server, "test-token-123");
  SyncRoundAndFinish(kv);
  ASSERT_TRUE(c.scheduler.WaitExit(Deadline(20))) << c.AllOutput();
  EXPECT_TRUE(c.scheduler.p->succeeded()) << c.AllOutput();
  EXPECT_THAT(c.scheduler.output, HasSubstr(counts));

  ASSERT_TRUE(c.servers[0].WaitExit(Deadline(20)));
  EXPECT_TRUE(c.servers[0].p->succeeded()) << c.AllOutput();
}

TEST(KVStoreClusterTest,
     GarbageAndWrongTokensAreSurvivedAndCountedOnPlaintext) {
  GarbageIsSurvived(true, "20 refused (wrong token), 30 malformed");
}

TEST(KVStoreClusterTest, GarbageFromStrangersNeverReachesACurveJob) {
  GarbageIsSurvived(false, "0 refused (wrong token), 0 malformed");
}

// A serialized REGISTER of a worker at host:port with the test token.
std::string WorkerRegister(const std::string& host, int port) {
  proto::Header reg;
  reg.set_type(proto::REGISTER);
  reg.set_token("test-token-123");
  reg.mutable_node()->set_role(proto::WORKER);
  reg.mutable_node()->set_host(host);
  reg.mutable_node()->set_port(port);
  return reg.SerializeAsString();
}

// A node's host comes from its REGISTER: a newline in it must not forge a
// line in the scheduler's log, nor in the logs of the nodes that hear the
// abort reason naming it.
TEST(KVStoreClusterTest, PeerSuppliedHostsAreLoggedEscapedOnOneLine) {
  ClusterSpec spec;
  spec.insecure_plaintext = true;  // The raw peer speaks plaintext.
  spec.workers = 1;
  spec.servers = 1;
  Cluster c(spec);
  ASSERT_TRUE(c.Start());
  ASSERT_FALSE(ServerAddress(c.servers[0]).empty())
      << c.AllOutput();  // Registered.
  const std::string forged = "E0101 00:00:00.000000 1 scheduler.cc:1] forged";
  const std::string evil = "evil\n" + forged + "\x1b[2J";
  {
    // A node registers only as the address its connection carries: the
    // raw peer's routing id is the host:port it claims.
    RawPeer raw(c.address, "test-token-123", evil + ":1");
    raw.Send({WorkerRegister(evil, 1)});
    // The job starts with that "worker" and aborts: its host is no host.
    ASSERT_TRUE(c.scheduler.WaitExit(Deadline(20))) << c.AllOutput();
  }
  ASSERT_TRUE(c.servers[0].WaitExit(Deadline(20))) << c.AllOutput();
  EXPECT_THAT(c.scheduler.output,
              HasSubstr("registered WORKER at evil\\nE0101"));
  EXPECT_THAT(c.scheduler.output, HasSubstr("cannot connect to evil\\nE0101"));
  EXPECT_THAT(c.servers[0].output,
              HasSubstr("evil\\\\nE0101"));  // Escaped twice.
  for (const std::string* out : {&c.scheduler.output, &c.servers[0].output}) {
    EXPECT_EQ(out->find("\n" + forged), std::string::npos) << *out;
    EXPECT_EQ(out->find('\x1b'), std::string::npos) << *out;
  }
}

// A node registers only itself: a REGISTER naming another address than
// its connection's is refused and counted, and the job runs with the real
// nodes.
TEST(KVStoreClusterTest, ARegisterForAnotherAddressIsRefused) {
  ClusterSpec spec;
  spec.insecure_plaintext = true;  // The raw peer speaks plaintext.
  spec.workers = 1;
  spec.servers = 1;
  Cluster c(spec);
  ASSERT_TRUE(c.Start());
  {
    RawPeer raw(c.address, "test-token-123", "127.0.0.1:7");
    raw.Send({WorkerRegister("127.0.0.1", 9)});  // Not the connection's 7.
    absl::SleepFor(absl::Milliseconds(300));
  }
  auto kv = c.Workers("dist_sync");
  ASSERT_NE(kv[0], nullptr) << c.AllOutput();
  std::vector<float> v(10, 1.0f);
  ASSERT_TRUE(kv[0]->Init({1}, {v}, Deadline()).ok());
  ASSERT_TRUE(kv[0]->Finish().ok());
  ASSERT_TRUE(c.scheduler.WaitExit(Deadline(20))) << c.AllOutput();
  EXPECT_TRUE(c.scheduler.p->succeeded()) << c.AllOutput();
  EXPECT_THAT(c.scheduler.output,
              HasSubstr("refused a REGISTER for 127.0.0.1:9"));
  EXPECT_THAT(c.scheduler.output, HasSubstr("1 speaking for another node"));
  EXPECT_THAT(c.scheduler.output,
              Not(HasSubstr("registered WORKER at 127.0.0.1:9")));
}

// --curve_keys_dir end to end: the scheduler, a server and two workers
// with per-node keys (tools/curve_keys' layout) run a dist_sync round.
TEST(KVStoreClusterTest, PerNodeCurveKeysRunAJob) {
  const std::string all = std::string(std::getenv("TEST_TMPDIR")) + "/keys";
  ASSERT_TRUE(transport::WriteCurveKeysDir(all, {"node"}).ok());
  ASSERT_EQ(std::system(("mkdir -p " + all + "/dir/clients && cp -p " + all +
                         "/server.key " + all + "/dir/ && cp -p " + all +
                         "/node.key " + all + "/dir/node.key && cp " + all +
                         "/clients/node.pub " + all + "/dir/clients/")
                            .c_str()),
            0);
  ClusterSpec spec;
  spec.workers = 2;
  spec.servers = 1;
  spec.curve_keys_dir = all + "/dir";
  Cluster c(spec);
  ASSERT_TRUE(c.Start());
  auto kv = c.Workers("dist_sync");
  for (auto& k : kv) ASSERT_NE(k, nullptr) << c.AllOutput();
  SyncRoundAndFinish(kv);
  ASSERT_TRUE(c.scheduler.WaitExit(Deadline(20))) << c.AllOutput();
  EXPECT_TRUE(c.scheduler.p->succeeded()) << c.AllOutput();
}

TEST(KVStoreClusterTest, UnknownKeyAndWrongLengthAreRefused) {
  ClusterSpec spec;
  spec.workers = 1;
  spec.servers = 1;
  Cluster c(spec);
  ASSERT_TRUE(c.Start());
  cluster::ClusterOptions o = c.WorkerOptions().cluster;
  o.role = proto::WORKER;
  auto node = cluster::ClusterNode::Start(o);
  ASSERT_TRUE(node.ok()) << node.status();
  auto ask = [&](int64_t key, int64_t len, uint64_t id) {
    transport::Message m;
    m.header.set_type(proto::PUSH);
    m.header.set_request_id(id);
    m.header.add_keys(key);
    m.header.add_offsets(0);
    m.header.add_lengths(len);
    std::vector<float> v(len, 1.0f);
    m.frames.push_back(
        transport::Frame::Copy(v.data(), v.size() * sizeof(float)));
    EXPECT_TRUE(
        (*node)->Send((*node)->ServerId(0), std::move(m), Deadline(10)).ok());
    auto r = (*node)->ReceiveData(Deadline(10));
    EXPECT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->header.request_id(), id);
    return r.ok() ? r->header.error() : std::string();
  };
  // INIT key 1 with 4 values.
  transport::Message init;
  init.header.set_type(proto::INIT);
  init.header.set_sync_mode(true);
  init.header.set_request_id(1);
  init.header.add_keys(1);
  init.header.add_offsets(0);
  init.header.add_lengths(4);
  std::vector<float> four(4, 0.0f);
  init.frames.push_back(transport::Frame::Copy(four.data(), 16));
  ASSERT_TRUE(
      (*node)->Send((*node)->ServerId(0), std::move(init), Deadline(10)).ok());
  ASSERT_TRUE((*node)->ReceiveData(Deadline(10)).ok());
  EXPECT_THAT(ask(99, 4, 2), HasSubstr("unknown key 99"));
  EXPECT_THAT(ask(1, 3, 3), HasSubstr("holds 4 values, not 3"));
  EXPECT_EQ(ask(1, 4, 4), "");  // The server is still fine.
  ASSERT_TRUE((*node)->Finish().ok());
}

// The cluster's workers as bare nodes (no KVStore), joining at once,
// index = worker rank; null where one did not start.
std::vector<std::unique_ptr<cluster::ClusterNode>> WorkerNodes(Cluster& c) {
  cluster::ClusterOptions o = c.WorkerOptions().cluster;
  o.role = proto::WORKER;
  std::vector<std::unique_ptr<cluster::ClusterNode>> nodes(o.num_workers);
  std::vector<std::thread> starting;
  for (int i = 0; i < o.num_workers; ++i) {
    starting.emplace_back([&, i] {
      auto n = cluster::ClusterNode::Start(o);
      EXPECT_TRUE(n.ok()) << n.status();
      if (n.ok()) nodes[i] = std::move(*n);
    });
  }
  for (auto& t : starting) t.join();
  std::sort(nodes.begin(), nodes.end(), [](const auto& a, const auto& b) {
    return a != nullptr && (b == nullptr || a->rank() < b->rank());
  });
  return nodes;
}

// Every node tells the scheduler it has finished, at once.
void FinishAll(std::vector<std::unique_ptr<cluster::ClusterNode>>& nodes) {
  std::vector<std::thread> finishing;
  for (auto& n : nodes)
    finishing.emplace_back([&n] { EXPECT_TRUE(n->Finish().ok()); });
  for (auto& t : finishing) t.join();
}

ClusterSpec TwoWorkersOneServer() {
  ClusterSpec spec;
  spec.workers = 2;
  spec.servers = 1;
  return spec;
}

// A message of `type` for key 1 (4 values), listing it `copies` times.
transport::Message KeyOneMessage(proto::MessageType type, int copies,
                                 uint64_t id) {
  const std::vector<float> four(4, 1.0f);
  transport::Message m;
  m.header.set_type(type);
  m.header.set_sync_mode(true);
  m.header.set_request_id(id);
  for (int i = 0; i < copies; ++i) {
    m.header.add_keys(1);
    m.header.add_offsets(0);
    m.header.add_lengths(4);
    m.frames.push_back(transport::Frame::Copy(four.data(), 16));
  }
  return m;
}

// Sends `m` from `n` to server 0 and returns the reply's error ("" when
// it was served).
std::string AskServer(cluster::ClusterNode* n, transport::Message m,
                      Cluster& c) {
  const uint64_t id = m.header.request_id();
  EXPECT_TRUE(n->Send(n->ServerId(0), std::move(m), Deadline(10)).ok());
  auto r = n->ReceiveData(Deadline(10));
  EXPECT_TRUE(r.ok()) << r.status() << c.AllOutput();
  if (!r.ok()) return "no reply";
  EXPECT_EQ(r->header.request_id(), id);
  return r->header.error();
}

// dist_sync with two workers: a push listing one slice twice would count as
// both workers' pushes and complete the round with the other rank's push
// missing (the server crashed); it is refused, and the server goes on.
TEST(KVStoreClusterTest, SliceTwiceInOnePushIsRefused) {
  Cluster c(TwoWorkersOneServer());
  ASSERT_TRUE(c.Start());
  auto nodes = WorkerNodes(c);
  for (auto& n : nodes) ASSERT_NE(n, nullptr) << c.AllOutput();
  auto message = KeyOneMessage;
  auto ask = [&](int rank, transport::Message m) {
    return AskServer(nodes[rank].get(), std::move(m), c);
  };
  ASSERT_EQ(ask(0, message(proto::INIT, 1, 1)), "");
  EXPECT_THAT(ask(0, message(proto::PUSH, 2, 2)),
              HasSubstr("twice in one round"));
  // The server still runs its rounds: one push of each worker completes.
  std::string replies[2];
  {
    std::vector<std::thread> pushing;
    for (int i = 0; i < 2; ++i) {
      pushing.emplace_back(
          [&, i] { replies[i] = ask(i, message(proto::PUSH, 1, 3 + i)); });
    }
    for (auto& t : pushing) t.join();
  }
  EXPECT_EQ(replies[0], "");
  EXPECT_EQ(replies[1], "");
  FinishAll(nodes);
}

// INIT and SET_OPTIMIZER set the weights and the update rule for the whole
// job: a server takes them from worker rank 0 only. From another worker
// they are refused with an error reply and counted; the server goes on.
TEST(KVStoreClusterTest, OnlyWorkerRankZeroMayInitOrSetTheOptimizer) {
  Cluster c(TwoWorkersOneServer());
  ASSERT_TRUE(c.Start());
  auto nodes = WorkerNodes(c);
  for (auto& n : nodes) ASSERT_NE(n, nullptr) << c.AllOutput();
  cluster::ClusterNode* rank0 = nodes[0].get();
  cluster::ClusterNode* rank1 = nodes[1].get();
  ASSERT_EQ(rank1->rank(), 1);
  EXPECT_THAT(
      AskServer(rank1, KeyOneMessage(proto::INIT, 1, 1), c),
      HasSubstr("INIT is only for worker rank 0; node 3 is worker rank 1"));
  auto sgd = [](uint64_t id) {
    transport::Message m;
    m.header.set_type(proto::SET_OPTIMIZER);
    m.header.set_request_id(id);
    m.header.mutable_optimizer()->set_kind(proto::OptimizerConfig::SGD);
    m.header.mutable_optimizer()->set_learning_rate(1000);
    return m;
  };
  EXPECT_THAT(AskServer(rank1, sgd(2), c),
              HasSubstr("SET_OPTIMIZER is only for worker rank 0"));
  // Rank 1's INIT did not create key 1, and its optimizer is not in use:
  // rank 0's INIT does, and a round of pushes (1 + 1) is stored as a sum.
  EXPECT_THAT(AskServer(rank1, KeyOneMessage(proto::PULL, 1, 3), c),
              HasSubstr("unknown key 1"));
  ASSERT_EQ(AskServer(rank0, KeyOneMessage(proto::INIT, 1, 4), c), "");
  std::string pushed[2];
  {
    std::vector<std::thread> pushing;
    for (int r = 0; r < 2; ++r) {
      pushing.emplace_back([&, r] {
        pushed[r] =
            AskServer(nodes[r].get(), KeyOneMessage(proto::PUSH, 1, 5), c);
      });
    }
    for (auto& t : pushing) t.join();
  }
  EXPECT_EQ(pushed[0], "");
  EXPECT_EQ(pushed[1], "");
  transport::Message pull = KeyOneMessage(proto::PULL, 1, 6);
  pull.frames.clear();
  ASSERT_TRUE(
      rank0->Send(rank0->ServerId(0), std::move(pull), Deadline(10)).ok());
  auto weights = rank0->ReceiveData(Deadline(10));
  ASSERT_TRUE(weights.ok()) << weights.status();
  ASSERT_EQ(weights->frames.size(), 1u);
  EXPECT_EQ(weights->frames[0].As<float>()[0], 2.0f);
  // Rank 0 may set the optimizer.
  EXPECT_EQ(AskServer(rank0, sgd(7), c), "");
  FinishAll(nodes);
  ASSERT_TRUE(c.servers[0].WaitExit(Deadline(20))) << c.AllOutput();
  EXPECT_TRUE(c.servers[0].p->succeeded()) << c.AllOutput();
  EXPECT_THAT(c.servers[0].output,
              HasSubstr("3 requests refused, 2 of them INIT or SET_OPTIMIZER "
                        "from a node other "
                        "than worker rank 0"));
}

TEST(KVStoreClusterTest, KilledWorkerAbortsTheJobNamingIt) {
  ClusterSpec spec;
  spec.workers = 2;
  spec.servers = 1;
  Cluster c(spec);
  ASSERT_TRUE(c.Start());
  // Worker A: the kv_bench binary joining the job; worker B: this process.
  std::vector<std::string> argv = {
      testing_util::Runfile("tools/kv_bench"),
      "--scheduler_address=" + c.address,
      "--num_workers=2",
      "--num_servers=1",
      "--token_file=" + c.token_file_,
      "--value_bytes=4096",
      "--mode=push",
      "--iters=1000000",
      absl::StrCat("--heartbeat_timeout_s=", spec.heartbeat_timeout_s)};
  auto bench = launcher::Subprocess::Start(argv, testing_util::Env());
  ASSERT_TRUE(bench.ok()) << bench.status();
  bench->CloseStdin();
  auto kv = kvstore::KVStore::Create("dist_sync", c.WorkerOptions());
  ASSERT_TRUE(kv.ok()) << kv.status() << c.AllOutput();
  std::vector<float> v(1024, 0.0f);
  ASSERT_TRUE((*kv)->Init({0}, {v}, Deadline()).ok());
  // kv_bench now waits for us at its barrier; kill it.
  bench->SignalGroup(SIGKILL);
  const absl::Time killed = absl::Now();
  ASSERT_TRUE(c.scheduler.WaitExit(Deadline(15))) << c.AllOutput();
  EXPECT_FALSE(c.scheduler.p->succeeded());
  EXPECT_THAT(c.scheduler.output, HasSubstr("node dead: worker rank"));
  EXPECT_FALSE((*kv)->Barrier(Deadline(15)).ok());
  ASSERT_TRUE(c.servers[0].WaitExit(Deadline(15)));
  EXPECT_FALSE(c.servers[0].p->succeeded());
  EXPECT_LT(absl::Now() - killed, absl::Seconds(15));
}

}  // namespace
}  // namespace pstrain

namespace pstrain {
namespace {

TEST(KVStoreClusterTest, AllReduceSumCombinesWorkersAndSkipsTheOptimizer) {
  ClusterSpec spec;
  spec.workers = 3;
  spec.servers = 2;
  Cluster c(spec);
  ASSERT_TRUE(c.Start());
  auto kv = c.Workers("dist_sync");
  for (auto& k : kv) ASSERT_NE(k, nullptr) << c.AllOutput();
  std::vector<std::thread> threads;
  for (int r = 0; r < 3; ++r) {
    threads.emplace_back([&, r] {
      std::vector<float> w(4, 0.0f);
      ASSERT_TRUE(kv[r]->Init({0}, {w}, Deadline()).ok());
      proto::OptimizerConfig sgd;
      sgd.set_kind(proto::OptimizerConfig::SGD);
      sgd.set_learning_rate(0.5);
      ASSERT_TRUE(kv[r]->SetOptimizer(sgd, Deadline()).ok());
      for (int round = 0; round < 2; ++round) {
        std::vector<float> mine = {1.0f * (r + 1), 10.0f * round, 100.0f},
                           all(3);
        absl::Status s =
            kv[r]->AllReduceSum(-1, mine, absl::MakeSpan(all), Deadline());
        ASSERT_TRUE(s.ok()) << s;
        EXPECT_EQ(all, (std::vector<float>{6.0f, 30.0f * round, 300.0f}));
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& k : kv) ASSERT_TRUE(k->Finish().ok());
}

}  // namespace
}  // namespace pstrain
