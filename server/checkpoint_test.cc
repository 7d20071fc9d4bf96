// A server's part of a job checkpoint on real files: a shard saved after
// some dist_sync rounds and restored into a fresh shard continues bit for
// bit as the original (weights, momentum / Adam moments, and the update
// count that positions the learning-rate schedule); a corrupt part is
// refused naming the file.
#include "server/checkpoint.h"

#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/messages.pb.h"
#include "server/shard_test_util.h"
#include "transport/message.h"
#include "util/file.h"

namespace pstrain {
namespace server {
namespace {

using ::testing::HasSubstr;
using transport::Message;

using testing_util::Part;

constexpr int kWorkerId = 10;

Message Request(proto::MessageType type, const std::vector<Part>& parts,
                bool with_frames = true) {
  return testing_util::Request(type, kWorkerId, 0, parts, with_frames);
}

// Key 0 in two slices (offsets 0 and 3), key 1 whole, and the metric key
// -1, which checkpoints leave out.
const std::vector<Part> kLayout = {{0, 0, {0.5f, -1, 2}},
                                   {0, 3, {4, 0.25f}},
                                   {1, 0, {1, 2, 3, 4}},
                                   {-1, 0, {0}}};

proto::OptimizerConfig Config(proto::OptimizerConfig::Kind kind) {
  proto::OptimizerConfig c;
  c.set_kind(kind);
  c.set_learning_rate(0.1);
  c.set_momentum(0.9);
  c.set_weight_decay(0.01);
  c.set_rescale_grad(0.5);
  c.set_beta1(0.9);
  c.set_beta2(0.999);
  c.set_epsilon(1e-8);
  // The learning rate halves every 3 updates: a restored shard must know
  // how many it has done.
  c.mutable_schedule()->set_kind(proto::LearningRateSchedule::FACTOR);
  c.mutable_schedule()->set_factor(0.5);
  c.mutable_schedule()->set_step(3);
  return c;
}

std::unique_ptr<Shard> NewShard(proto::OptimizerConfig::Kind kind,
                                float init_scale = 1) {
  ShardOptions o;
  o.num_workers = 2;
  auto shard = std::make_unique<Shard>(o);
  std::vector<Part> init = kLayout;
  for (Part& p : init) {
    for (float& v : p.values) v *= init_scale;
  }
  Message m = Request(proto::INIT, init);
  m.header.set_sync_mode(true);
  EXPECT_TRUE(shard->Init(m).ok());
  EXPECT_TRUE(shard->SetOptimizer(Config(kind)).ok());
  return shard;
}

// One dist_sync round of both workers; gradients depend on `round`.
void Round(Shard* shard, int round) {
  for (int w = 0; w < 2; ++w) {
    std::vector<Part> grads = kLayout;
    for (Part& p : grads) {
      for (size_t i = 0; i < p.values.size(); ++i) {
        p.values[i] = 0.37f * (round + 1) - 0.11f * w + 0.05f * i - p.key;
      }
    }
    std::vector<Reply> replies;
    ASSERT_TRUE(shard->Push(w, Request(proto::PUSH, grads), &replies).ok());
  }
}

// The learned slices' weights (the metric key is not checkpointed).
std::vector<std::vector<float>> Weights(Shard* shard) {
  std::vector<std::vector<float>> out;
  for (const Part& p : kLayout) {
    if (p.key < 0) continue;
    auto r = shard->Pull(Request(proto::PULL, {p}, false).header);
    EXPECT_TRUE(r.ok()) << r.status();
    auto v = r->frames[0].As<float>();
    out.emplace_back(v.begin(), v.end());
  }
  return out;
}

std::string Root(const std::string& name) {
  return absl::StrCat(std::getenv("TEST_TMPDIR"), "/", name);
}

// Saves `shard` as step `step` under `root` through a ServerCheckpointer
// (its destructor waits for the write) and writes the manifest.
std::string Save(const std::string& root, int64_t step, const Shard& shard) {
  {
    ServerCheckpointOptions o;
    o.checkpoint_dir = root;
    ServerCheckpointer saver(o);
    EXPECT_TRUE(saver.Save(step, shard).ok());
  }
  const std::string dir = checkpoint::StepDir(root, step);
  checkpoint::Manifest m;
  m.step = step;
  EXPECT_TRUE(
      checkpoint::WriteManifest(dir, m, {checkpoint::ServerPartName(0)}).ok());
  return dir;
}

class ServerCheckpointTest
    : public ::testing::TestWithParam<proto::OptimizerConfig::Kind> {};

TEST_P(ServerCheckpointTest, RestoredShardContinuesBitForBit) {
  const std::string root = Root(absl::StrCat("continue", GetParam()));
  auto original = NewShard(GetParam());
  for (int r = 0; r < 4; ++r) Round(original.get(), r);
  const std::string dir = Save(root, 4, *original);

  // A new job: other initial weights, a fresh optimizer; the restore
  // replaces both.
  auto restored = NewShard(GetParam(), /*init_scale=*/3);
  ServerCheckpointOptions o;
  o.resume_from = dir;
  ServerCheckpointer loader(o);
  ASSERT_TRUE(loader.MaybeRestore(restored.get()).ok());
  EXPECT_EQ(Weights(restored.get()), Weights(original.get()));
  // Rounds 4..7 cross the schedule's halving at update 6.
  for (int r = 4; r < 8; ++r) {
    Round(original.get(), r);
    Round(restored.get(), r);
  }
  EXPECT_EQ(Weights(restored.get()), Weights(original.get()));

  // Without the optimizer's state (weights only) the next rounds differ:
  // the test can tell.
  auto weights_only = NewShard(GetParam());
  ShardSnapshot snap = original->Snapshot();
  snap.has_optimizer = false;
  snap.optimizer = {};
  ASSERT_TRUE(weights_only->Restore(snap).ok());
  Round(original.get(), 8);
  Round(weights_only.get(), 8);
  EXPECT_NE(Weights(weights_only.get()), Weights(original.get()));
}

INSTANTIATE_TEST_SUITE_P(Optimizers, ServerCheckpointTest,
                         ::testing::Values(proto::OptimizerConfig::SGD,
                                           proto::OptimizerConfig::NAG,
                                           proto::OptimizerConfig::ADAM));

TEST(ServerCheckpointFileTest, SnapshotArraysRoundTrip) {
  auto shard = NewShard(proto::OptimizerConfig::ADAM);
  Round(shard.get(), 0);
  const ShardSnapshot a = shard->Snapshot();
  EXPECT_EQ(a.slices.size(), 3u);  // Not the metric key.
  auto b = SnapshotFromArrays(SnapshotToArrays(a), "x");
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ(b->slices.size(), a.slices.size());
  for (size_t i = 0; i < a.slices.size(); ++i) {
    EXPECT_EQ(b->slices[i].key, a.slices[i].key);
    EXPECT_EQ(b->slices[i].offset, a.slices[i].offset);
    EXPECT_EQ(b->slices[i].values, a.slices[i].values);
  }
  EXPECT_TRUE(b->has_optimizer);
  EXPECT_EQ(b->optimizer.num_update, 1);
  EXPECT_EQ(b->optimizer.key_count, a.optimizer.key_count);
  ASSERT_EQ(b->optimizer.slots.size(), a.optimizer.slots.size());
  for (size_t i = 0; i < a.optimizer.slots.size(); ++i) {
    EXPECT_EQ(b->optimizer.slots[i].count, a.optimizer.slots[i].count);
    EXPECT_EQ(b->optimizer.slots[i].m, a.optimizer.slots[i].m);
    EXPECT_EQ(b->optimizer.slots[i].v, a.optimizer.slots[i].v);
  }
  std::vector<checkpoint::NDArray> bad = SnapshotToArrays(a);
  bad.push_back(checkpoint::NDArray::FromFloats("surprise", {1}, {1}));
  auto refused = SnapshotFromArrays(bad, "part.params");
  EXPECT_TRUE(absl::IsDataLoss(refused.status()));
  EXPECT_THAT(refused.status().message(), HasSubstr("part.params"));
  EXPECT_THAT(refused.status().message(), HasSubstr("surprise"));
}

TEST(ServerCheckpointFileTest, CorruptPartIsRefusedNamingTheFile) {
  const std::string root = Root("corrupt");
  auto shard = NewShard(proto::OptimizerConfig::SGD);
  Round(shard.get(), 0);
  const std::string dir = Save(root, 1, *shard);
  const std::string path = dir + "/" + checkpoint::ServerPartName(0);
  auto bytes = checkpoint::ReadVerifiedPart(dir, checkpoint::ServerPartName(0));
  ASSERT_TRUE(bytes.ok());
  std::string flipped = *bytes;
  flipped[flipped.size() - 1] ^= 1;
  ASSERT_TRUE(WriteFileAtomically(path, flipped).ok());
  ServerCheckpointOptions o;
  o.resume_from = dir;
  ServerCheckpointer loader(o);
  auto fresh = NewShard(proto::OptimizerConfig::SGD);
  absl::Status s = loader.MaybeRestore(fresh.get());
  EXPECT_TRUE(absl::IsDataLoss(s)) << s;
  EXPECT_THAT(s.message(), HasSubstr(path));
}

TEST(ServerCheckpointFileTest, OtherLayoutIsRefused) {
  auto shard = NewShard(proto::OptimizerConfig::SGD);
  ShardSnapshot snap = shard->Snapshot();
  snap.slices[0].values.push_back(1);  // A slice of another length.
  absl::Status s = shard->Restore(snap);
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_THAT(s.message(), HasSubstr("key 0 at offset 0"));
  snap = shard->Snapshot();
  snap.slices.pop_back();
  EXPECT_TRUE(absl::IsInvalidArgument(shard->Restore(snap)));
  ServerCheckpointOptions o;  // No checkpoint_dir.
  ServerCheckpointer saver(o);
  EXPECT_TRUE(absl::IsFailedPrecondition(saver.Save(1, *shard)));
}

}  // namespace
}  // namespace server
}  // namespace pstrain
