#include "transport/transport.h"

#include <zmq.h>

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "transport/raw_peer.h"

namespace pstrain {
namespace transport {
namespace {

using ::testing::HasSubstr;

absl::Time Soon() { return absl::Now() + absl::Seconds(10); }

std::unique_ptr<Transport> Make(const std::string& token = "tok") {
  TransportOptions o;
  o.token = token;
  auto t = Transport::Create(o);
  EXPECT_TRUE(t.ok()) << t.status();
  return std::move(*t);
}

Message Push(int64_t key, const std::vector<float>& v, int priority = 0) {
  Message m;
  m.header.set_type(proto::PUSH);
  m.header.add_keys(key);
  m.header.add_offsets(0);
  m.header.add_lengths(static_cast<int64_t>(v.size()));
  m.header.set_priority(priority);
  m.frames.push_back(Frame::Copy(v.data(), v.size() * sizeof(float)));
  return m;
}

TEST(TransportTest, MessagesWithFramesBothWays) {
  auto a = Make(), b = Make();
  ASSERT_TRUE(a->Connect(1, b->address()).ok());
  ASSERT_TRUE(b->Connect(0, a->address()).ok());
  // Zero-copy send of caller memory kept alive by a shared_ptr.
  auto big = std::make_shared<std::vector<float>>(1 << 20, 2.5f);
  Message m = Push(7, {});
  m.frames.clear();
  m.header.set_lengths(0, static_cast<int64_t>(big->size()));
  m.frames.push_back(Frame::Borrow(big->data(), big->size() * sizeof(float), big));
  ASSERT_TRUE(a->Send(1, std::move(m), Soon()).ok());
  auto got = b->Receive(Soon());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->header.keys(0), 7);
  ASSERT_EQ(got->frames.size(), 1u);
  auto span = got->frames[0].As<float>();
  ASSERT_EQ(span.size(), big->size());
  EXPECT_EQ(span[12345], 2.5f);
  ASSERT_TRUE(b->Send(0, Push(8, {1, 2, 3}), Soon()).ok());
  auto back = a->Receive(Soon());
  ASSERT_TRUE(back.ok());
  EXPECT_THAT(std::vector<float>(back->frames[0].As<float>().begin(),
                                 back->frames[0].As<float>().end()),
              ::testing::ElementsAre(1, 2, 3));
  EXPECT_EQ(a->Send(5, Push(1, {}), Soon()).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(TransportTest, ReceiveHasADeadlineAndStopCancels) {
  auto a = Make();
  EXPECT_EQ(a->Receive(absl::Now() + absl::Milliseconds(20)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  a->Stop();
  EXPECT_EQ(a->Receive(Soon()).status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(a->Send(0, Push(1, {}), Soon()).code(), absl::StatusCode::kCancelled);
}

TEST(TransportTest, BindAndConnectErrorsNameTheEndpoint) {
  auto a = Make();
  TransportOptions o;
  o.bind_port = a->port();  // Taken.
  auto b = Transport::Create(o);
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(std::string(b.status().message()),
              HasSubstr(absl::StrCat("127.0.0.1:", a->port())));
  EXPECT_THAT(std::string(b.status().message()), HasSubstr("Address already in use"));
  absl::Status c = a->Connect(3, "no-such-host-name.invalid:x");
  EXPECT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.message()), HasSubstr("no-such-host-name.invalid:x"));
}


std::string Header(const proto::Header& h) {
  std::string s;
  h.SerializeToString(&s);
  return s;
}

TEST(TransportTest, GarbageIsCountedAndDroppedAndGoodTrafficContinues) {
  auto b = Make("secret");
  RawPeer raw(b->address());
  proto::Header good;
  good.set_type(proto::PUSH);
  good.set_token("secret");
  good.add_keys(1);
  good.add_offsets(0);
  good.add_lengths(2);
  const std::string two_floats(8, '\0');

  raw.Send({"\xff\xff\xff garbage that is not protobuf"});       // Unparsable.
  proto::Header truncated = good;
  std::string cut = Header(truncated);
  raw.Send({cut.substr(0, cut.size() - 3), two_floats});         // Truncated header.
  proto::Header wrong_token = good;
  wrong_token.set_token("guess");
  raw.Send({Header(wrong_token), two_floats});                   // Wrong token.
  proto::Header huge = good;
  huge.set_lengths(0, int64_t{1} << 40);
  raw.Send({Header(huge), two_floats});                          // Huge declared length.
  raw.Send({Header(good), two_floats, two_floats});              // Extra frame.
  proto::Header neg = good;
  neg.set_lengths(0, -2);
  raw.Send({Header(neg), two_floats});                           // Negative length.
  raw.Send({Header(good), two_floats});                          // Valid.

  auto got = b->Receive(Soon());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->header.keys(0), 1);
  EXPECT_EQ(b->Receive(absl::Now() + absl::Milliseconds(100)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  TransportStats s = b->stats();
  EXPECT_EQ(s.received, 1);
  EXPECT_EQ(s.dropped_bad_token, 1);
  EXPECT_EQ(s.dropped_malformed, 5);
}

TEST(TransportTest, HigherPriorityIsSentFirst) {
  auto a = Make(), b = Make();
  ASSERT_TRUE(a->Connect(1, b->address()).ok());
  // A batch is queued at once, so its send order is priority order
  // (FIFO within a priority).
  std::vector<std::pair<int, Message>> batch;
  for (int i = 0; i < 50; ++i) batch.emplace_back(1, Push(i, {1}, i % 5));
  ASSERT_TRUE(a->SendBatch(std::move(batch), Soon()).ok());
  int last_priority = 100, inversions = 0;
  int64_t last_key = -1;
  for (int i = 0; i < 50; ++i) {
    auto got = b->Receive(Soon());
    ASSERT_TRUE(got.ok());
    if (got->header.priority() > last_priority) ++inversions;
    if (got->header.priority() == last_priority) {
      EXPECT_GT(got->header.keys(0), last_key);
    }
    last_priority = got->header.priority();
    last_key = got->header.keys(0);
  }
  EXPECT_EQ(inversions, 0);
}

}  // namespace
}  // namespace transport
}  // namespace pstrain
