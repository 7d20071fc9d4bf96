#include "worker/gradient_sync.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "glog/logging.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/emulation.h"

namespace pstrain {
namespace worker {
namespace {

using ::testing::HasSubstr;

constexpr int kBatch = 8;

absl::Time Soon() { return absl::Now() + absl::Seconds(60); }

// The local KVStore, with a log of the operations GradientSync issues
// ("push K1,K2@P" for a group, "wait" for a wait) and errors on demand.
class LoggingKVStore : public kvstore::KVStore {
 public:
  LoggingKVStore() {
    auto local = kvstore::KVStore::Create("local", {});
    CHECK(local.ok()) << local.status();
    local_ = std::move(*local);
  }
  const std::string& type() const override { return local_->type(); }
  int rank() const override { return local_->rank(); }
  int num_workers() const override { return local_->num_workers(); }
  absl::Status Init(const std::vector<int64_t>& keys,
                    const std::vector<absl::Span<const float>>& values,
                    absl::Time deadline) override {
    return local_->Init(keys, values, deadline);
  }
  absl::Status SetOptimizer(const proto::OptimizerConfig& config,
                            absl::Time deadline) override {
    return local_->SetOptimizer(config, deadline);
  }
  absl::StatusOr<kvstore::Handle> Push(
      int64_t key, const std::vector<absl::Span<const float>>& values,
      int priority) override {
    return local_->Push(key, values, priority);
  }
  absl::StatusOr<kvstore::Handle> Pull(int64_t key, absl::Span<float> out,
                                       int priority) override {
    return local_->Pull(key, out, priority);
  }
  absl::StatusOr<kvstore::Handle> PushPull(
      int64_t key, const std::vector<absl::Span<const float>>& values,
      absl::Span<float> out, int priority) override {
    return local_->PushPull(key, values, out, priority);
  }
  absl::StatusOr<kvstore::Handle> PushPullGroup(
      const std::vector<kvstore::KeyPushPull>& group, int priority) override {
    if (!push_error.ok()) return push_error;
    std::string entry = "push ";
    for (const auto& g : group) {
      absl::StrAppend(&entry, g.key, g.key == group.back().key ? "" : ",");
    }
    log.push_back(absl::StrCat(entry, "@", priority));
    return local_->PushPullGroup(group, priority);
  }
  absl::Status Wait(kvstore::Handle h, absl::Time deadline) override {
    log.push_back("wait");
    absl::Status s = local_->Wait(h, deadline);
    return wait_error.ok() ? s : wait_error;
  }
  bool Done(kvstore::Handle) const override { return true; }
  absl::Status WaitAll(absl::Time deadline) override {
    return local_->WaitAll(deadline);
  }
  absl::Status Barrier(absl::Time deadline) override {
    return local_->Barrier(deadline);
  }
  absl::Status AllReduceSum(int64_t slot, absl::Span<const float> values,
                            absl::Span<float> out,
                            absl::Time deadline) override {
    return local_->AllReduceSum(slot, values, out, deadline);
  }
  absl::Status Finish() override { return local_->Finish(); }

  std::vector<std::string> log;
  absl::Status push_error, wait_error;

 private:
  std::unique_ptr<kvstore::KVStore> local_;
};

std::unique_ptr<Replicas> MakeReplicas(int devices) {
  auto r = Replicas::Create("lenet", 0, 10, {1, 28, 28}, kBatch, devices);
  CHECK(r.ok()) << r.status();
  CHECK(nn::Initialize((*r)->net(0), "xavier", 7).ok());
  CHECK((*r)->CopyWeightsFromFirst(Soon()).ok());
  return std::move(*r);
}

void RandomBatch(int seed, std::vector<float>* x, std::vector<float>* labels) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  x->resize(kBatch * 28 * 28);
  labels->resize(kBatch);
  for (auto& v : *x) v = nd(rng);
  for (int i = 0; i < kBatch; ++i) (*labels)[i] = static_cast<float>(i % 10);
}

absl::Status RunStep(GradientSync* sync, int seed) {
  std::vector<float> x, labels;
  RandomBatch(seed, &x, &labels);
  absl::Status s = sync->Step(std::move(x), std::move(labels));
  if (s.ok()) s = sync->FinishStep();
  return s;
}

// No optimizer: the KVStore stores the pushed sum, so after a step every
// key's weights on every device are the sum of the devices' gradients.
proto::OptimizerConfig StoreTheSum() {
  proto::OptimizerConfig c;
  c.set_kind(proto::OptimizerConfig::NONE);
  return c;
}

struct Case {
  int devices;
  bool overlap;
  int64_t fusion_bytes;
  int64_t fusion_max_array_bytes = 0;
};

class GradientSyncCaseTest : public ::testing::TestWithParam<Case> {};

TEST_P(GradientSyncCaseTest, WeightsBecomeTheSummedGradientsOnEveryDevice) {
  const Case c = GetParam();
  auto reps = MakeReplicas(c.devices);
  LoggingKVStore kv;
  GradientSync::Options o;
  o.overlap = c.overlap;
  o.fusion_bytes = c.fusion_bytes;
  o.fusion_max_array_bytes = c.fusion_max_array_bytes;
  GradientSync sync(&kv, reps.get(), o);
  EXPECT_EQ(sync.overlap(), c.overlap && c.devices == 1);
  ASSERT_TRUE(sync.Init(StoreTheSum()).ok());
  for (int step = 0; step < 2; ++step) {
    ASSERT_TRUE(RunStep(&sync, step).ok());
    ASSERT_TRUE(sync.WaitAll().ok());
    const std::vector<nn::Param*>& params = reps->params(0);
    size_t key = 0;
    for (size_t i = 0; i < params.size(); ++i) {
      if (params[i]->aux) continue;
      ASSERT_LT(key, sync.learned().size());
      EXPECT_EQ(sync.learned()[key++], params[i]);
      std::vector<absl::Span<const float>> grads = reps->Grads(i);
      absl::Span<const float> w = params[i]->value.span();
      for (size_t j = 0; j < w.size(); ++j) {
        float sum = 0;
        for (const auto& g : grads) sum += g[j];
        ASSERT_EQ(w[j], sum) << params[i]->name << "[" << j << "]";
        for (int d = 1; d < reps->size(); ++d) {
          ASSERT_EQ(reps->params(d)[i]->value.span()[j], w[j])
              << "device " << d;
        }
      }
    }
    EXPECT_EQ(key, sync.learned().size());
  }
}

INSTANTIATE_TEST_SUITE_P(
    DevicesOverlapFusion, GradientSyncCaseTest,
    ::testing::Values(Case{1, true, 0}, Case{1, true, int64_t{1} << 30},
                      Case{1, false, 0}, Case{1, false, 4 << 20},
                      Case{2, true, 0}, Case{2, false, int64_t{1} << 30},
                      // LeNet's fc0 (1.6 MB) alone, the rest fused.
                      Case{1, true, int64_t{1} << 30, int64_t{1} << 20},
                      Case{2, false, int64_t{1} << 30, int64_t{1} << 20}));

// A GradientSync over a LoggingKVStore, initialized with StoreTheSum().
class GradientSyncTest : public ::testing::Test {
 protected:
  // Replicas on `devices`, the sync started and the log cleared.
  void Start(int devices, bool overlap, int64_t fusion_bytes,
             int64_t fusion_max_array_bytes = 0) {
    reps_ = MakeReplicas(devices);
    GradientSync::Options o;
    o.overlap = overlap;
    o.fusion_bytes = fusion_bytes;
    o.fusion_max_array_bytes = fusion_max_array_bytes;
    sync_ = std::make_unique<GradientSync>(&kv_, reps_.get(), o);
    ASSERT_TRUE(sync_->Init(StoreTheSum()).ok());
    kv_.log.clear();
  }

  LoggingKVStore kv_;
  std::unique_ptr<Replicas> reps_;
  std::unique_ptr<GradientSync> sync_;
};

TEST(GradientSyncInitTest, CopiesRankZerosWeightsToEveryDevice) {
  auto reps = MakeReplicas(2);
  for (float& v : reps->params(1)[0]->value.span()) v = 42;
  LoggingKVStore kv;
  GradientSync sync(&kv, reps.get(), {});
  ASSERT_TRUE(sync.Init(StoreTheSum()).ok());
  for (size_t i = 0; i < reps->params(0).size(); ++i) {
    absl::Span<const float> a = reps->params(0)[i]->value.span();
    absl::Span<const float> b = reps->params(1)[i]->value.span();
    EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin(), b.end()))
        << reps->params(0)[i]->name;
  }
}

std::vector<std::string> Pushes(const std::vector<std::string>& log) {
  std::vector<std::string> p;
  for (const auto& e : log) {
    if (e != "wait") p.push_back(e);
  }
  return p;
}

// "push 6,7,5@0" -> "push 5,6,7@0".
std::string SortedGroup(const std::string& entry) {
  const size_t at = entry.find('@');
  std::vector<int> keys;
  for (absl::string_view k :
       absl::StrSplit(entry.substr(5, at - 5), ',', absl::SkipEmpty())) {
    keys.push_back(std::stoi(std::string(k)));
  }
  std::sort(keys.begin(), keys.end());
  return absl::StrCat("push ", absl::StrJoin(keys, ","), entry.substr(at));
}

TEST_F(GradientSyncTest, WithoutFusionEachKeyIsPushedAloneLastLayersFirst) {
  Start(1, /*overlap=*/false, /*fusion_bytes=*/0);
  ASSERT_TRUE(RunStep(sync_.get(), 1).ok());
  std::vector<std::string> want;
  for (size_t k = sync_->learned().size(); k-- > 0;) {
    want.push_back(absl::StrCat("push ", k, "@", -static_cast<int>(k)));
  }
  EXPECT_EQ(Pushes(kv_.log), want);
  // Without overlap, the step waits for every key before it ends.
  EXPECT_EQ(kv_.log.size(), 2 * want.size());
  EXPECT_EQ(kv_.log.back(), "wait");
}

TEST_F(GradientSyncTest, FusionPushesOneGroupAtTheFirstKeysPriority) {
  Start(1, /*overlap=*/false, int64_t{1} << 30);
  ASSERT_TRUE(RunStep(sync_.get(), 1).ok());
  std::string keys;
  for (size_t k = sync_->learned().size(); k-- > 0;) {
    absl::StrAppend(&keys, k, k > 0 ? "," : "");
  }
  // One group, waited for once.
  EXPECT_EQ(kv_.log, (std::vector<std::string>{
                         absl::StrCat("push ", keys, "@0"), "wait"}));
}

TEST_F(GradientSyncTest, AnArrayAboveTheFusionLimitIsPushedAloneAtOnce) {
  // LeNet's keys: only fc0's weights (400,000 floats) exceed 1 MiB.
  Start(1, /*overlap=*/false, 0);
  auto bytes = [&](size_t k) {
    return static_cast<int64_t>(sync_->learned()[k]->grad.size() *
                                sizeof(float));
  };
  std::vector<size_t> big;
  for (size_t k = 0; k < sync_->learned().size(); ++k) {
    if (bytes(k) > (int64_t{1} << 20)) big.push_back(k);
  }
  ASSERT_EQ(big.size(), 1u);
  const size_t fc0 = big[0];
  ASSERT_GT(fc0, 0u);
  // A limit of fc0's exact size still fuses it.
  const int64_t fc0_bytes = bytes(fc0);
  for (int64_t limit : {int64_t{1} << 20, fc0_bytes - 1, fc0_bytes}) {
    SCOPED_TRACE(limit);
    for (bool overlap : {false, true}) {
      SCOPED_TRACE(overlap ? "overlap" : "no overlap");
      Start(1, overlap, int64_t{1} << 30, limit);
      ASSERT_TRUE(RunStep(sync_.get(), 1).ok());
      // Backward produces the later layers first. The big array leaves as
      // soon as backward produces it, right after the smaller ones produced
      // before it (one group, at their first key's priority); the rest go
      // as one group when backward ends. With overlap a layer's weights
      // come before its bias (fc0's bias, fc0 + 1, then waits for the last
      // group); without, the keys come last to first. (The keys of a group
      // are in the order backward produced them; compared sorted.)
      auto group = [](std::vector<size_t> keys) {
        return absl::StrCat("push ", absl::StrJoin(keys, ","), "@",
                            -static_cast<int>(keys.front()));
      };
      const size_t keys = sync_->learned().size();
      ASSERT_EQ(keys, fc0 + 4);  // fc0's bias, fc1's weights and bias.
      std::vector<size_t> all, first(fc0);
      for (size_t k = 0; k < keys; ++k) all.push_back(k);
      std::iota(first.begin(), first.end(), 0);
      std::vector<std::string> want;
      if (limit >= fc0_bytes) {
        want = {group(all)};
      } else if (overlap) {
        first.push_back(fc0 + 1);
        want = {group({fc0 + 2, fc0 + 3}), group({fc0}), group(first)};
      } else {
        want = {group({fc0 + 1, fc0 + 2, fc0 + 3}), group({fc0}), group(first)};
      }
      std::vector<std::string> got = Pushes(kv_.log);
      for (std::string& g : got) g = SortedGroup(g);
      EXPECT_EQ(got, want);
      ASSERT_TRUE(sync_->WaitAll().ok());
    }
  }
  // 0: no limit, one group; 1 byte: every array alone.
  Start(1, /*overlap=*/false, int64_t{1} << 30, 0);
  ASSERT_TRUE(RunStep(sync_.get(), 1).ok());
  EXPECT_EQ(Pushes(kv_.log).size(), 1u);
  Start(1, /*overlap=*/false, int64_t{1} << 30, 1);
  ASSERT_TRUE(RunStep(sync_.get(), 1).ok());
  EXPECT_EQ(Pushes(kv_.log).size(), sync_->learned().size());
}

TEST_F(GradientSyncTest, OverlapWaitsForAKeyOnlyWhenTheNextForwardNeedsIt) {
  Start(1, /*overlap=*/true, /*fusion_bytes=*/0);
  ASSERT_TRUE(RunStep(sync_.get(), 1).ok());
  // Pushed during backward, not waited for by the step.
  const size_t keys = sync_->learned().size();
  EXPECT_EQ(kv_.log.size(), keys);
  EXPECT_EQ(std::count(kv_.log.begin(), kv_.log.end(), "wait"), 0);
  // The next step's forward waits for every key before its backward
  // pushes any.
  kv_.log.clear();
  ASSERT_TRUE(RunStep(sync_.get(), 2).ok());
  ASSERT_EQ(kv_.log.size(), 2 * keys);
  for (size_t i = 0; i < keys; ++i) EXPECT_EQ(kv_.log[i], "wait") << i;
  // WaitAll waits for what the last step pushed.
  kv_.log.clear();
  ASSERT_TRUE(sync_->WaitAll().ok());
  EXPECT_EQ(kv_.log.size(), keys);
  kv_.log.clear();
  ASSERT_TRUE(sync_->WaitAll().ok());
  EXPECT_TRUE(kv_.log.empty());
}

TEST_F(GradientSyncTest, APushErrorFailsTheStepAndEveryLaterCall) {
  Start(1, /*overlap=*/true, /*fusion_bytes=*/0);
  kv_.push_error = absl::UnavailableError("server 1 gone");
  std::vector<float> x, labels;
  RandomBatch(1, &x, &labels);
  absl::Status s = sync_->Step(std::move(x), std::move(labels));
  EXPECT_THAT(s.message(), HasSubstr("server 1 gone"));
  EXPECT_EQ(sync_->FinishStep().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(sync_->WaitAll().code(), absl::StatusCode::kUnavailable);
  kv_.push_error = absl::OkStatus();
  EXPECT_EQ(RunStep(sync_.get(), 2).code(), absl::StatusCode::kUnavailable);
}

TEST_F(GradientSyncTest, AWaitErrorEndsTheStepOrFailsTheNextForward) {
  for (bool overlap : {false, true}) {
    SCOPED_TRACE(overlap ? "overlap" : "no overlap");
    kv_.wait_error = absl::OkStatus();
    Start(1, overlap, /*fusion_bytes=*/0);
    kv_.wait_error = absl::DeadlineExceededError("no reply");
    absl::Status s = RunStep(sync_.get(), 1);
    if (overlap) {
      ASSERT_TRUE(s.ok()) << s;
      s = RunStep(sync_.get(), 2);
    }
    EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  }
}

TEST(GradientSyncInitTest, ReportsTheKVStoresError) {
  auto reps = MakeReplicas(1);
  LoggingKVStore kv;
  GradientSync sync(&kv, reps.get(), {});
  proto::OptimizerConfig bad;
  bad.set_kind(proto::OptimizerConfig::SGD);
  bad.set_momentum(1.5);
  absl::Status s = sync.Init(bad);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("momentum"));
}

// Emulated devices (worker --emulate_device) drive the steps: one real
// replica built for one sample, as the trainer builds it, and MXNet mode's
// pushes at priority 0.
TEST(GradientSyncEmulatedTest, EveryKeyIsPushedWithoutPriorities) {
  auto r = Replicas::Create("lenet", 0, 10, {1, 28, 28}, 1, 1);
  ASSERT_TRUE(r.ok()) << r.status();
  std::unique_ptr<Replicas> reps = std::move(*r);
  ASSERT_TRUE(nn::Initialize(reps->net(0), "xavier", 7).ok());
  // 4 devices of batch 8 at 800 images/s: 10 ms of compute a step.
  auto profile = ProfileFromFlops(reps->net(0)->Summary(), 8, 800);
  ASSERT_TRUE(profile.ok()) << profile.status();
  auto emu = EmulatedDevices::Create(*profile, reps->net(0), 4, 8, 1,
                                     LocalReduce::kOneDevice);
  ASSERT_TRUE(emu.ok()) << emu.status();
  LoggingKVStore kv;
  GradientSync::Options o;
  o.fusion_bytes = 0;
  o.priorities = false;
  o.emulated = emu->get();
  GradientSync sync(&kv, reps.get(), o);
  // One replica: the emulated devices' gradients overlap as one device's.
  EXPECT_TRUE(sync.overlap());
  ASSERT_TRUE(sync.Init(StoreTheSum()).ok());
  const size_t keys = sync.learned().size();
  ASSERT_GT(keys, 2u);
  double last_pull = 0;
  for (int step = 0; step < 3; ++step) {
    kv.log.clear();
    // The emulated devices read no input.
    ASSERT_TRUE(sync.Step({}, {}).ok()) << "step " << step;
    ASSERT_TRUE(sync.FinishStep().ok()) << "step " << step;
    std::vector<int> pushed;
    for (const std::string& entry : kv.log) {
      if (entry == "wait") continue;
      // "push K@0": one key a group (no fusion), every one at priority 0.
      ASSERT_THAT(entry, ::testing::StartsWith("push ")) << entry;
      ASSERT_THAT(entry, ::testing::EndsWith("@0")) << entry;
      pushed.push_back(std::stoi(entry.substr(5)));
    }
    std::sort(pushed.begin(), pushed.end());
    std::vector<int> all(keys);
    for (size_t k = 0; k < keys; ++k) all[k] = static_cast<int>(k);
    EXPECT_EQ(pushed, all) << "step " << step;
    // Every step after the first waits for the last one's weights.
    if (step > 0) {
      EXPECT_EQ(std::count(kv.log.begin(), kv.log.end(), "wait"),
                static_cast<int>(keys))
          << "step " << step;
    }
    // Pushes made while the emulated devices compute backward delay
    // nothing: they are not counted as waiting; the waits for the weights
    // are, from the second step on.
    const GradientSync::Times& t = sync.times();
    EXPECT_EQ(t.push_s, 0) << "step " << step;
    EXPECT_GE(t.pull_s, last_pull) << "step " << step;
    if (step > 0) {
      EXPECT_GT(t.pull_s, 0) << "step " << step;
    }
    last_pull = t.pull_s;
  }
  ASSERT_TRUE(sync.WaitAll().ok());
  // Three steps of 10 ms of emulated compute.
  EXPECT_NEAR((*emu)->times().compute_s, 0.03, 1e-9);
  sync.ResetTimes();
  EXPECT_EQ(sync.times().push_s, 0);
  EXPECT_EQ(sync.times().pull_s, 0);
}

}  // namespace
}  // namespace worker
}  // namespace pstrain
