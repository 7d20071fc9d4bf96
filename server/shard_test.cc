// The shard in process, without sockets: simulated workers push and pull
// as they would over the wire, and the replies are checked against hand
// computations (values chosen so float arithmetic is exact).
#include "server/shard.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "compression/codec.h"
#include "compression/compression.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/messages.pb.h"
#include "server/shard_test_util.h"
#include "timeline/timeline.h"
#include "transport/message.h"

namespace pstrain {
namespace server {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using transport::Frame;
using transport::Message;

using testing_util::Part;
using testing_util::Request;

// Worker rank r is node id kFirstWorkerId + r (as in the address book,
// where servers come first).
constexpr int kFirstWorkerId = 10;

std::vector<float> Values(const Frame& f) {
  auto v = f.As<float>();
  return std::vector<float>(v.begin(), v.end());
}

class ShardTest : public ::testing::Test {
 protected:
  void MakeShard(int num_workers, timeline::Recorder* tl = nullptr) {
    ShardOptions o;
    o.num_workers = num_workers;
    o.timeline = tl;
    shard_ = std::make_unique<Shard>(o);
  }

  // Worker rank 0 initialises `parts`.
  void Init(const std::vector<Part>& parts, bool sync = true) {
    Message m = Request(proto::INIT, kFirstWorkerId, next_id_++, parts);
    m.header.set_sync_mode(sync);
    ASSERT_TRUE(shard_->Init(m).ok());
  }

  void Sgd(double lr, double rescale) {
    proto::OptimizerConfig c;
    c.set_kind(proto::OptimizerConfig::SGD);
    c.set_learning_rate(lr);
    c.set_rescale_grad(rescale);
    ASSERT_TRUE(shard_->SetOptimizer(c).ok());
  }

  // Worker `rank` pushes `parts`; returns the replies now due.
  std::vector<Reply> Push(int rank, const std::vector<Part>& parts,
                          proto::MessageType type = proto::PUSH) {
    std::vector<Reply> replies;
    Message m = Request(type, kFirstWorkerId + rank, next_id_++, parts);
    absl::Status s = shard_->Push(rank, std::move(m), &replies);
    EXPECT_TRUE(s.ok()) << s;
    return replies;
  }

  // The status of a push that should be refused; checks nothing is due.
  absl::Status BadPush(int rank, Message m) {
    std::vector<Reply> replies;
    absl::Status s = shard_->Push(rank, std::move(m), &replies);
    EXPECT_THAT(replies, IsEmpty());
    return s;
  }

  std::vector<float> Pull(int64_t key, int64_t offset, size_t n) {
    Message m =
        Request(proto::PULL, kFirstWorkerId, next_id_++,
                {{key, offset, std::vector<float>(n)}}, /*with_frames=*/false);
    auto r = shard_->Pull(m.header);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return {};
    EXPECT_EQ(r->frames.size(), 1u);
    return Values(r->frames[0]);
  }

  std::unique_ptr<Shard> shard_;
  uint64_t next_id_ = 1;
};

TEST_F(ShardTest, SyncRepliesOnlyAfterEveryWorkerPushedAndStoresTheSum) {
  MakeShard(3);
  Init({{0, 0, {0, 0, 0, 0}}});
  EXPECT_THAT(Push(0, {{0, 0, {1, 2, 3, 4}}}), IsEmpty());
  EXPECT_THAT(Push(1, {{0, 0, {0.5f, 0.25f, -1, 8}}}), IsEmpty());
  const uint64_t last_id = next_id_;
  std::vector<Reply> replies = Push(2, {{0, 0, {10, 20, 30, 40}}});
  // Every push of the round is acknowledged, in worker-rank order, to its
  // sender, as an empty success reply to its request.
  ASSERT_EQ(replies.size(), 3u);
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(replies[r].to, kFirstWorkerId + r);
    EXPECT_EQ(replies[r].msg.header.type(), proto::RESPONSE);
    EXPECT_EQ(replies[r].msg.header.error(), "");
    EXPECT_EQ(replies[r].msg.header.priority(), 7);
    EXPECT_THAT(replies[r].msg.frames, IsEmpty());
  }
  EXPECT_EQ(replies[2].msg.header.request_id(), last_id);
  // Without an optimizer the round's sum becomes the weights.
  EXPECT_THAT(Pull(0, 0, 4), ElementsAre(11.5f, 22.25f, 32, 52));
}

TEST_F(ShardTest, SyncSumsInWorkerRankOrderWhateverTheArrivalOrder) {
  MakeShard(3);
  Init({{0, 0, {0}}});
  // (1e8 + 1) + -1e8 == 0 in float, but (-1e8 + 1e8) + 1 == 1: the result
  // shows the order of the sum.
  EXPECT_THAT(Push(2, {{0, 0, {-1e8f}}}), IsEmpty());
  EXPECT_THAT(Push(0, {{0, 0, {1e8f}}}), IsEmpty());
  EXPECT_EQ(Push(1, {{0, 0, {1}}}).size(), 3u);
  EXPECT_THAT(Pull(0, 0, 1), ElementsAre(0.0f));
}

TEST_F(ShardTest, TimelineRecordsTheWindowsRoundsOnly) {
  timeline::TimelineOptions to;
  to.path = "unused.json";  // Never written here.
  to.first_step = 2;
  to.last_step = 3;
  timeline::Recorder tl(to);
  MakeShard(2, &tl);
  Init({{3, 0, {1, 2, 3, 4}}, {-1, 0, {0}}});
  Sgd(/*lr=*/0.5, /*rescale=*/0.25);
  std::vector<int64_t> acked_steps;
  for (int round = 1; round <= 4; ++round) {
    EXPECT_THAT(Push(0, {{3, 0, {1, 1, 1, 1}}, {-1, 0, {1}}}), IsEmpty());
    for (const Reply& r : Push(1, {{3, 0, {1, 1, 1, 1}}, {-1, 0, {1}}}))
      acked_steps.push_back(r.step);
  }
  // Rounds 2 and 3 of key 3: a sum and an update each; key -1 never.
  EXPECT_EQ(tl.num_events(), 4);
  const std::string part = tl.PartJson(timeline::PartInfo{});
  EXPECT_THAT(part, HasSubstr("\"name\": \"sum\""));
  EXPECT_THAT(part, HasSubstr("\"name\": \"update\""));
  EXPECT_THAT(part, HasSubstr("\"key\": 3, \"offset\": 0, \"bytes\": 16, "
                              "\"step\": 2"));
  EXPECT_THAT(part, Not(HasSubstr("\"key\": -1")));
  // Acks of the window's rounds carry their step (the server records
  // sending them), the others 0.
  EXPECT_THAT(acked_steps, ElementsAre(0, 0, 2, 2, 3, 3, 0, 0));
}

TEST_F(ShardTest, SyncAppliesTheOptimizerOnceToTheSum) {
  MakeShard(2);
  Init({{3, 0, {1, 2, 3, 4}}});
  Sgd(/*lr=*/0.5, /*rescale=*/0.25);
  EXPECT_THAT(Push(0, {{3, 0, {1, 2, 3, 4}}}), IsEmpty());
  EXPECT_EQ(Push(1, {{3, 0, {3, 2, 1, -4}}}).size(), 2u);
  // w -= lr * rescale * (g0 + g1) = w - 0.125 * {4, 4, 4, 0}.
  EXPECT_THAT(Pull(3, 0, 4), ElementsAre(0.5f, 1.5f, 2.5f, 4));
  // Second round, as PUSH_PULL: the acks carry the new weights.
  EXPECT_THAT(Push(1, {{3, 0, {8, 0, 0, 0}}}, proto::PUSH_PULL), IsEmpty());
  std::vector<Reply> replies =
      Push(0, {{3, 0, {0, 0, 0, 8}}}, proto::PUSH_PULL);
  ASSERT_EQ(replies.size(), 2u);
  for (const Reply& r : replies) {
    EXPECT_THAT(r.msg.header.keys(), ElementsAre(3));
    EXPECT_THAT(r.msg.header.lengths(), ElementsAre(4));
    ASSERT_EQ(r.msg.frames.size(), 1u);
    EXPECT_THAT(Values(r.msg.frames[0]), ElementsAre(-0.5f, 1.5f, 2.5f, 3));
  }
}

TEST_F(ShardTest, SyncNegativeKeysStoreTheSumEvenWithAnOptimizer) {
  MakeShard(2);
  Init({{-1, 0, {0, 0}}});
  Sgd(0.5, 0.25);
  EXPECT_THAT(Push(0, {{-1, 0, {3, 4}}}), IsEmpty());
  EXPECT_EQ(Push(1, {{-1, 0, {5, 6}}}).size(), 2u);
  EXPECT_THAT(Pull(-1, 0, 2), ElementsAre(8, 10));
}

TEST_F(ShardTest, SyncOneWorkerStoresItsPush) {
  MakeShard(1);
  Init({{0, 0, {1, 1}}});
  EXPECT_EQ(Push(0, {{0, 0, {2, 3}}}).size(), 1u);
  EXPECT_THAT(Pull(0, 0, 2), ElementsAre(2, 3));
  EXPECT_EQ(Push(0, {{0, 0, {4, 5}}}).size(), 1u);
  EXPECT_THAT(Pull(0, 0, 2), ElementsAre(4, 5));
}

TEST_F(ShardTest, SyncPushOfSeveralSlicesIsAckedWhenItsLastRoundCompletes) {
  MakeShard(2);
  Init({{0, 0, {0, 0}}, {0, 2, {0, 0}}, {1, 0, {0}}});
  EXPECT_THAT(Push(0, {{0, 0, {1, 2}}, {0, 2, {3, 4}}, {1, 0, {5}}}),
              IsEmpty());
  // Completes slice (0, 0) only: worker 1's push is done, worker 0's not.
  std::vector<Reply> replies = Push(1, {{0, 0, {1, 1}}});
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0].to, kFirstWorkerId + 1);
  EXPECT_EQ(Push(1, {{0, 2, {1, 1}}}).size(), 1u);
  replies = Push(1, {{1, 0, {1}}});
  ASSERT_EQ(replies.size(), 2u);
  EXPECT_EQ(replies[0].to, kFirstWorkerId);
  EXPECT_EQ(replies[1].to, kFirstWorkerId + 1);
  EXPECT_THAT(Pull(0, 0, 2), ElementsAre(2, 3));
  EXPECT_THAT(Pull(0, 2, 2), ElementsAre(4, 5));
  EXPECT_THAT(Pull(1, 0, 1), ElementsAre(6));
}

TEST_F(ShardTest, PullDuringARoundSeesThePreviousVersion) {
  MakeShard(2);
  Init({{0, 0, {1, 2}}});
  Sgd(1, 1);
  EXPECT_THAT(Push(0, {{0, 0, {1, 1}}}), IsEmpty());
  // Half the round has arrived: the weights are still the initial ones.
  EXPECT_THAT(Pull(0, 0, 2), ElementsAre(1, 2));
  // A pull reply still being sent holds that version...
  Message pull =
      Request(proto::PULL, kFirstWorkerId, 99, {{0, 0, {0, 0}}}, false);
  auto held = shard_->Pull(pull.header);
  ASSERT_TRUE(held.ok());
  EXPECT_EQ(Push(1, {{0, 0, {1, 1}}}).size(), 2u);
  // ...which the update does not touch: it went to another buffer.
  EXPECT_THAT(Values(held->frames[0]), ElementsAre(1, 2));
  EXPECT_THAT(Pull(0, 0, 2), ElementsAre(-1, 0));
  // Once released, the next rounds reuse the buffers.
  held = absl::InternalError("released");
  EXPECT_THAT(Push(0, {{0, 0, {1, 0}}}), IsEmpty());
  EXPECT_EQ(Push(1, {{0, 0, {1, 0}}}).size(), 2u);
  EXPECT_THAT(Pull(0, 0, 2), ElementsAre(-3, 0));
}

TEST_F(ShardTest, AsyncAppliesAndAcknowledgesEachPush) {
  MakeShard(3);
  Init({{0, 0, {1, 2}}, {-2, 0, {0}}}, /*sync=*/false);
  Sgd(0.5, 0.5);
  std::vector<Reply> r = Push(2, {{0, 0, {4, 8}}});
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].to, kFirstWorkerId + 2);
  EXPECT_THAT(Pull(0, 0, 2), ElementsAre(0, 0));  // w -= 0.25 * g.
  r = Push(0, {{0, 0, {-4, 4}}, {-2, 0, {3}}}, proto::PUSH_PULL);
  ASSERT_EQ(r.size(), 1u);
  ASSERT_EQ(r[0].msg.frames.size(), 2u);
  EXPECT_THAT(Values(r[0].msg.frames[0]), ElementsAre(1, -1));
  // Negative keys add each push, never optimized.
  EXPECT_THAT(Values(r[0].msg.frames[1]), ElementsAre(3));
  // The same worker may push again at once: no rounds.
  EXPECT_EQ(Push(0, {{-2, 0, {4}}}).size(), 1u);
  EXPECT_THAT(Pull(-2, 0, 1), ElementsAre(7));
}

TEST_F(ShardTest, BadPushesAreRefusedAndChangeNothing) {
  MakeShard(2);
  Init({{0, 0, {1, 2}}});
  auto message = [&](int rank, const std::vector<Part>& parts) {
    return Request(proto::PUSH, kFirstWorkerId + rank, next_id_++, parts);
  };
  absl::Status s = BadPush(0, message(0, {{5, 0, {1, 1}}}));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("unknown key 5 (offset 0)"));
  s = BadPush(0, message(0, {{0, 1, {1, 1}}}));
  EXPECT_THAT(s.message(), HasSubstr("unknown key 0 (offset 1)"));
  s = BadPush(0, message(0, {{0, 0, {1, 1, 1}}}));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("holds 2 values, not 3"));
  // No frames, and a frame that disagrees with the header.
  s = BadPush(0,
              Request(proto::PUSH, kFirstWorkerId, 1, {{0, 0, {1, 1}}}, false));
  EXPECT_THAT(s.message(), HasSubstr("push without values"));
  Message short_frame = message(0, {{0, 0, {1, 1}}});
  short_frame.frames[0] = Frame::Copy("abc", 3);
  s = BadPush(0, std::move(short_frame));
  EXPECT_THAT(s.message(), HasSubstr("3 bytes for 2 values"));
  // Header lists that disagree.
  Message lists = message(0, {{0, 0, {1, 1}}});
  lists.header.add_offsets(0);
  s = BadPush(0, std::move(lists));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  // Not a worker of the job.
  s = BadPush(-1, message(0, {{0, 0, {1, 1}}}));
  EXPECT_THAT(s.message(), HasSubstr("is not a worker"));
  s = BadPush(2, message(2, {{0, 0, {1, 1}}}));
  EXPECT_THAT(s.message(), HasSubstr("is not a worker"));
  // Twice in one message, and twice in one round.
  s = BadPush(0, message(0, {{0, 0, {1, 1}}, {0, 0, {1, 1}}}));
  EXPECT_THAT(s.message(), HasSubstr("twice in one round"));
  EXPECT_THAT(Push(0, {{0, 0, {1, 1}}}), IsEmpty());
  s = BadPush(0, message(0, {{0, 0, {1, 1}}}));
  EXPECT_THAT(
      s.message(),
      HasSubstr("worker rank 0 pushed key 0 (offset 0) twice in one round"));
  // None of that touched the weights or the round.
  EXPECT_THAT(Pull(0, 0, 2), ElementsAre(1, 2));
  EXPECT_EQ(Push(1, {{0, 0, {2, 2}}}).size(), 2u);
  EXPECT_THAT(Pull(0, 0, 2), ElementsAre(3, 3));
}

// Push identity (--recovery=replace): worker rank, push_round, key.
TEST_F(ShardTest, RepeatedPushInTheOpenRoundIsAckedWithItAndSummedOnce) {
  MakeShard(3);
  Init({{0, 0, {0, 0}}, {1, 0, {0}}});
  auto push = [&](int rank, int64_t round, const std::vector<Part>& parts,
                  proto::MessageType type = proto::PUSH) {
    std::vector<Reply> replies;
    Message m = Request(type, kFirstWorkerId + rank, next_id_++, parts);
    m.header.set_push_round(round);
    absl::Status s = shard_->Push(rank, std::move(m), &replies);
    EXPECT_TRUE(s.ok()) << s;
    return replies;
  };
  // Round 1: rank 1 pushes, then (a reconnect, a replacement) pushes the
  // same round again with other values: held, not summed, not refused.
  EXPECT_THAT(push(0, 1, {{0, 0, {1, 1}}, {1, 0, {1}}}), IsEmpty());
  EXPECT_THAT(push(1, 1, {{0, 0, {2, 2}}, {1, 0, {2}}}), IsEmpty());
  EXPECT_THAT(push(1, 1, {{0, 0, {50, 50}}, {1, 0, {50}}}, proto::PUSH_PULL),
              IsEmpty());
  EXPECT_EQ(shard_->repeated_pushes(), 2);
  const uint64_t last = next_id_;
  std::vector<Reply> replies = push(2, 1, {{0, 0, {4, 4}}, {1, 0, {4}}});
  // Every push of the round, the repeat too, is acknowledged once the
  // round completes: the repeat (a PUSH_PULL) with the new weights.
  ASSERT_EQ(replies.size(), 4u);
  int to_rank1 = 0;
  for (const Reply& r : replies) {
    EXPECT_EQ(r.msg.header.error(), "");
    if (r.to == kFirstWorkerId + 1) ++to_rank1;
    if (!r.msg.frames.empty()) {
      ASSERT_EQ(r.msg.frames.size(), 2u);
      EXPECT_THAT(Values(r.msg.frames[0]), ElementsAre(7, 7));
    }
  }
  EXPECT_EQ(to_rank1, 2);
  // The round's own pushes in rank order, then the repeat.
  EXPECT_EQ(replies[2].msg.header.request_id(), last);
  EXPECT_EQ(replies[3].msg.header.request_id(), last - 1);
  EXPECT_EQ(replies[3].to, kFirstWorkerId + 1);
  EXPECT_THAT(Pull(0, 0, 2), ElementsAre(7, 7));
  EXPECT_THAT(Pull(1, 0, 1), ElementsAre(7));
  EXPECT_EQ(shard_->min_learned_rounds(), 1);
  EXPECT_EQ(shard_->open_rounds(), 0);
}

TEST_F(ShardTest, RepeatedPushOfAnAppliedRoundIsAckedAtOnceAndNotSummed) {
  MakeShard(2);
  Init({{0, 0, {0}}});
  auto message = [&](int rank, int64_t round, float v) {
    Message m =
        Request(proto::PUSH, kFirstWorkerId + rank, next_id_++, {{0, 0, {v}}});
    m.header.set_push_round(round);
    return m;
  };
  std::vector<Reply> replies;
  ASSERT_TRUE(shard_->Push(0, message(0, 1, 1), &replies).ok());
  ASSERT_TRUE(shard_->Push(1, message(1, 1, 2), &replies).ok());
  ASSERT_EQ(replies.size(), 2u);  // Round 1 applied: 3.
  replies.clear();
  // Rank 1 again for round 1 (its ack was lost): acknowledged at once.
  ASSERT_TRUE(shard_->Push(1, message(1, 1, 100), &replies).ok());
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0].to, kFirstWorkerId + 1);
  EXPECT_EQ(replies[0].msg.header.error(), "");
  EXPECT_THAT(Pull(0, 0, 1), ElementsAre(3));
  EXPECT_EQ(shard_->repeated_pushes(), 1);
  EXPECT_EQ(shard_->open_rounds(), 0);
  // A round beyond the open one is refused; the open round is 2.
  replies.clear();
  absl::Status s = shard_->Push(0, message(0, 3, 1), &replies);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("for round 3; the open round is 2"));
  EXPECT_THAT(replies, IsEmpty());
  // Round 2 goes on as usual; a pull reply says how many rounds are done.
  ASSERT_TRUE(shard_->Push(0, message(0, 2, 1), &replies).ok());
  ASSERT_TRUE(shard_->Push(1, message(1, 2, 1), &replies).ok());
  EXPECT_EQ(replies.size(), 2u);
  EXPECT_THAT(Pull(0, 0, 1), ElementsAre(2));
  Message pull = Request(proto::PULL, kFirstWorkerId, next_id_++,
                         {{0, 0, std::vector<float>(1)}}, false);
  auto r = shard_->Pull(pull.header);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->header.push_round(), 2);
  EXPECT_EQ(shard_->min_learned_rounds(), 2);
}

TEST_F(ShardTest, KeepPreviousServesTheWeightsARoundIsComputedFrom) {
  ShardOptions o;
  o.num_workers = 1;
  o.keep_previous = true;
  shard_ = std::make_unique<Shard>(o);
  Init({{0, 0, {1}}});
  Sgd(1.0, 1.0);
  auto push = [&](int64_t round, float g) {
    std::vector<Reply> replies;
    Message m = Request(proto::PUSH, kFirstWorkerId, next_id_++, {{0, 0, {g}}});
    m.header.set_push_round(round);
    EXPECT_TRUE(shard_->Push(0, std::move(m), &replies).ok());
  };
  auto pull_for = [&](int64_t round) -> absl::StatusOr<float> {
    Message m = Request(proto::PULL, kFirstWorkerId, next_id_++,
                        {{0, 0, std::vector<float>(1)}}, false);
    m.header.set_push_round(round);
    auto r = shard_->Pull(m.header);
    if (!r.ok()) return r.status();
    return Values(r->frames[0])[0];
  };
  push(1, 0.25f);  // 1 - 0.25.
  push(2, 0.25f);  // 0.75 - 0.25.
  EXPECT_THAT(Pull(0, 0, 1), ElementsAre(0.5f));
  // Round 3 is computed from the current weights, round 2 from those
  // after round 1 (kept); round 1's are gone.
  EXPECT_EQ(*pull_for(3), 0.5f);
  EXPECT_EQ(*pull_for(2), 0.75f);
  absl::StatusOr<float> gone = pull_for(1);
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(gone.status().message(),
              HasSubstr("the weights after round 0 are no longer held"));
  // Without keep_previous only the current round's are served.
  MakeShard(1);
  Init({{0, 0, {1}}});
  push(1, 0.25f);
  EXPECT_EQ(*pull_for(2), 0.25f);  // No optimizer: the sum is stored.
  EXPECT_EQ(pull_for(1).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(ShardTest, PushWithoutIdentityTwiceInARoundIsStillRefused) {
  MakeShard(2);
  Init({{0, 0, {0}}});
  EXPECT_THAT(Push(0, {{0, 0, {1}}}), IsEmpty());
  absl::Status s = BadPush(
      0, Request(proto::PUSH, kFirstWorkerId, next_id_++, {{0, 0, {1}}}));
  EXPECT_THAT(s.message(), HasSubstr("twice in one round"));
  EXPECT_EQ(shard_->repeated_pushes(), 0);
}

TEST_F(ShardTest, RefusedPushLeavesTheMessageToTheCaller) {
  MakeShard(1);
  Init({{0, 0, {1}}});
  Message m = Request(proto::PUSH, kFirstWorkerId, 42, {{9, 0, {1}}});
  std::vector<Reply> replies;
  EXPECT_FALSE(shard_->Push(0, std::move(m), &replies).ok());
  EXPECT_EQ(m.header.request_id(), 42u);
  EXPECT_EQ(m.frames.size(), 1u);
}

TEST_F(ShardTest, BadPullsInitsAndOptimizersAreRefused) {
  MakeShard(1);
  Init({{0, 0, {1, 2}}});
  Message pull = Request(proto::PULL, kFirstWorkerId, 1, {{4, 0, {0}}}, false);
  auto r = shard_->Pull(pull.header);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("unknown key 4"));
  pull = Request(proto::PULL, kFirstWorkerId, 1, {{0, 0, {0}}}, false);
  EXPECT_THAT(shard_->Pull(pull.header).status().message(),
              HasSubstr("holds 2 values, not 1"));

  Message init = Request(proto::INIT, kFirstWorkerId, 2, {{1, 0, {1}}}, false);
  absl::Status s = shard_->Init(init);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("INIT without values"));
  EXPECT_EQ(shard_->num_slices(), 1u);

  proto::OptimizerConfig bad;
  bad.set_kind(proto::OptimizerConfig::SGD);
  bad.set_learning_rate(-1);
  EXPECT_EQ(shard_->SetOptimizer(bad).code(),
            absl::StatusCode::kInvalidArgument);
  // No optimizer was installed: a push still stores the sum.
  EXPECT_EQ(Push(0, {{0, 0, {5, 6}}}).size(), 1u);
  EXPECT_THAT(Pull(0, 0, 2), ElementsAre(5, 6));
}

TEST_F(ShardTest, InitAgainRestartsTheSlice) {
  MakeShard(2);
  Init({{0, 0, {1, 2}}});
  EXPECT_THAT(Push(0, {{0, 0, {1, 1}}}), IsEmpty());
  Init({{0, 0, {7, 8, 9}}});
  EXPECT_THAT(Pull(0, 0, 3), ElementsAre(7, 8, 9));
  // The round in progress was forgotten: worker 0 may push again.
  EXPECT_THAT(Push(0, {{0, 0, {1, 1, 1}}}), IsEmpty());
  EXPECT_EQ(Push(1, {{0, 0, {1, 1, 1}}}).size(), 2u);
  EXPECT_THAT(Pull(0, 0, 3), ElementsAreArray({2.0f, 2.0f, 2.0f}));
}

TEST(MakeReplyTest, CopiesIdsAndSlices) {
  proto::Header req;
  req.set_type(proto::PULL);
  req.set_request_id(5);
  req.set_priority(-3);
  req.add_keys(1);
  req.add_offsets(2);
  req.add_lengths(3);
  Message r = MakeReply(req, "boom");
  EXPECT_EQ(r.header.type(), proto::RESPONSE);
  EXPECT_EQ(r.header.request_id(), 5u);
  EXPECT_EQ(r.header.priority(), -3);
  EXPECT_EQ(r.header.error(), "boom");
  EXPECT_EQ(r.header.keys_size(), 0);
  r = MakeReply(req, "", {}, /*with_slices=*/true);
  EXPECT_THAT(r.header.keys(), ElementsAre(1));
  EXPECT_THAT(r.header.offsets(), ElementsAre(2));
  EXPECT_THAT(r.header.lengths(), ElementsAre(3));
}

// The time split's inputs (server/time_split.h): rounds open while some
// worker has pushed a slice and not every one, and the time summing and
// updating is counted.
TEST_F(ShardTest, OpenRoundsAndTimes) {
  MakeShard(2);
  Init({{0, 0, {1, 2}}, {1, 0, {3, 4}}});
  Sgd(0.5, 1);
  EXPECT_EQ(shard_->open_rounds(), 0);
  Push(0, {{0, 0, {1, 1}}, {1, 0, {1, 1}}});
  EXPECT_EQ(shard_->open_rounds(), 2);
  Push(1, {{0, 0, {1, 1}}});
  EXPECT_EQ(shard_->open_rounds(), 1);
  Push(1, {{1, 0, {1, 1}}});
  EXPECT_EQ(shard_->open_rounds(), 0);
  EXPECT_GT(shard_->times().sum_s, 0);
  EXPECT_GT(shard_->times().update_s, 0);
  // A slice initialised again forgets its open round.
  Push(0, {{0, 0, {1, 1}}});
  EXPECT_EQ(shard_->open_rounds(), 1);
  Init({{0, 0, {1, 2}}});
  EXPECT_EQ(shard_->open_rounds(), 0);
}

// Gradient compression (issue #16): INIT carries the job's compression;
// encoded pushes are dequantised, summed and stored (or applied) as
// float32.
class CompressedShardTest : public ShardTest {
 protected:
  void InitCompressed(const proto::GradientCompression& c, int64_t n) {
    Message m = Request(proto::INIT, kFirstWorkerId, next_id_++,
                        {{4, 0, std::vector<float>(n, 0.0f)}});
    *m.header.mutable_compression() = c;
    m.header.set_sync_mode(true);
    ASSERT_TRUE(shard_->Init(m).ok());
  }
  // A push of key 4 from worker `rank`: `bytes` as the frame, `e` its
  // encoding.
  Message Encoded(int rank, int64_t n, proto::Encoding e, std::string bytes) {
    Message m;
    m.header.set_type(proto::PUSH_PULL);
    m.header.set_sender(kFirstWorkerId + rank);
    m.header.set_request_id(next_id_++);
    m.header.add_keys(4);
    m.header.add_offsets(0);
    m.header.add_lengths(n);
    m.header.add_encodings(e);
    m.frames.push_back(Frame::Own(std::move(bytes)));
    return m;
  }
};

TEST_F(CompressedShardTest, TwoBitPushesAreDequantisedAndSummed) {
  MakeShard(2);
  auto c = *compression::Parse("type=2bit,threshold=0.5", 0);
  InitCompressed(c, 17);
  // Worker 0: +t for element 0 (bits 11 in the top of byte 0), -t for
  // element 16 (bits 10 in the top of the second word's first byte).
  std::string w0(8, '\0'), w1(8, '\0');
  w0[0] = static_cast<char>(0xc0);
  w0[4] = static_cast<char>(0x80);
  // Worker 1: +t for elements 0 and 3.
  w1[0] = static_cast<char>(0xc3);
  std::vector<Reply> replies;
  ASSERT_TRUE(
      shard_->Push(0, Encoded(0, 17, proto::TWO_BIT, w0), &replies).ok());
  EXPECT_THAT(replies, IsEmpty());
  ASSERT_TRUE(
      shard_->Push(1, Encoded(1, 17, proto::TWO_BIT, w1), &replies).ok());
  ASSERT_EQ(replies.size(), 2u);
  // The PUSH_PULL's reply carries the new weights, raw.
  std::vector<float> want(17, 0.0f);
  want[0] = 1.0f;
  want[3] = 0.5f;
  want[16] = -0.5f;
  EXPECT_THAT(Values(replies[0].msg.frames.at(0)), ElementsAreArray(want));
  EXPECT_THAT(Pull(4, 0, 17), ElementsAreArray(want));
}

TEST_F(CompressedShardTest, RefusesAnEncodingTheJobDoesNotUse) {
  MakeShard(1);
  auto c = *compression::Parse("type=fp16", 0);
  InitCompressed(c, 17);
  absl::Status s =
      BadPush(0, Encoded(0, 17, proto::TWO_BIT, std::string(8, '\0')));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("key 4 offset 0 was pushed as 2bit; this job's "
                        "gradient compression is type=fp16"));
  // A job without compression refuses every encoded push.
  MakeShard(1);
  Init({{4, 0, std::vector<float>(17, 0.0f)}});
  s = BadPush(0, Encoded(0, 17, proto::FP16, std::string(34, '\0')));
  EXPECT_THAT(std::string(s.message()), HasSubstr("type=none"));
}

TEST_F(CompressedShardTest, RefusesAPayloadOfTheWrongSize) {
  MakeShard(1);
  auto c = *compression::Parse("type=onebit", 0);
  InitCompressed(c, 17);
  absl::Status s =
      BadPush(0, Encoded(0, 17, proto::ONEBIT, std::string(8, '\0')));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("key 4 offset 0 has 8 bytes for 17 values as onebit, "
                        "which take 12"));
  EXPECT_THAT(Pull(4, 0, 17), ElementsAreArray(std::vector<float>(17, 0.0f)));
}

TEST_F(CompressedShardTest, Fp16PushesAndPullReplies) {
  MakeShard(1);
  auto c = *compression::Parse("type=fp16", 0);
  InitCompressed(c, 3);
  const uint16_t halves[3] = {0x3c00, 0xc100, 0x3555};  // 1, -2.5, ~1/3.
  std::string bytes(reinterpret_cast<const char*>(halves), 6);
  std::vector<Reply> replies;
  Message m = Encoded(0, 3, proto::FP16, bytes);
  m.header.add_reply_encodings(proto::FP16);
  ASSERT_TRUE(shard_->Push(0, std::move(m), &replies).ok());
  ASSERT_EQ(replies.size(), 1u);
  const Message& r = replies[0].msg;
  ASSERT_EQ(r.header.encodings_size(), 1);
  EXPECT_EQ(r.header.encodings(0), proto::FP16);
  ASSERT_EQ(r.frames.size(), 1u);
  EXPECT_EQ(std::string(r.frames[0].data(), r.frames[0].size()), bytes);
  EXPECT_THAT(Pull(4, 0, 3),
              ElementsAre(1.0f, -2.5f, compression::HalfToFloat1(0x3555)));
  // A job without fp16 does not answer in fp16.
  MakeShard(1);
  Init({{4, 0, std::vector<float>(3, 0.0f)}});
  Message pull = Request(proto::PULL, kFirstWorkerId, next_id_++,
                         {{4, 0, std::vector<float>(3)}}, false);
  pull.header.add_reply_encodings(proto::FP16);
  EXPECT_FALSE(shard_->Pull(pull.header).ok());
}

}  // namespace
}  // namespace server
}  // namespace pstrain
