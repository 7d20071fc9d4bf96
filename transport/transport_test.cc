#include "transport/transport.h"

#include <zmq.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "transport/raw_peer.h"
#include "util/test_util.h"

namespace pstrain {
namespace transport {
namespace {

// A received frame passed on (e.g. forwarded) moves its ZeroMQ message into
// the caller's zmq_msg_t, which need not be initialised (zmq_msg_move
// releases the destination's old content first).
TEST(FrameTest, ReceivedFrameReleasesIntoAnUninitialisedMessage) {
  zmq_msg_t in;
  ASSERT_EQ(zmq_msg_init_size(&in, 64), 0);
  for (int i = 0; i < 64; ++i) static_cast<char*>(zmq_msg_data(&in))[i] = i;
  Frame frame = Frame::FromZmq(&in);
  ASSERT_EQ(frame.size(), 64u);
  zmq_msg_t out;
  std::memset(&out, 0xab, sizeof(out));  // What the stack may hold.
  EXPECT_FALSE(frame.ReleaseTo(&out));
  ASSERT_EQ(zmq_msg_size(&out), 64u);
  for (int i = 0; i < 64; ++i)
    EXPECT_EQ(static_cast<const char*>(zmq_msg_data(&out))[i], i);
  EXPECT_EQ(frame.size(), 0u);
  zmq_msg_close(&out);
}

using ::testing::HasSubstr;

absl::Time Soon() { return absl::Now() + absl::Seconds(10); }

std::unique_ptr<Transport> Make(const std::string& token = "tok",
                                TransportOptions o = TransportOptions()) {
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
  m.frames.push_back(
      Frame::Borrow(big->data(), big->size() * sizeof(float), big));
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
  EXPECT_EQ(a->Send(5, Push(1, {}), Soon()).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(TransportTest, ReceiveHasADeadlineAndStopCancels) {
  auto a = Make();
  EXPECT_EQ(a->Receive(absl::Now() + absl::Milliseconds(20)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  a->Stop();
  EXPECT_EQ(a->Receive(Soon()).status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(a->Send(0, Push(1, {}), Soon()).code(),
            absl::StatusCode::kCancelled);
}

TEST(TransportTest, BindAndConnectErrorsNameTheEndpoint) {
  auto a = Make();
  TransportOptions o;
  o.bind_port = a->port();  // Taken.
  auto b = Transport::Create(o);
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(std::string(b.status().message()),
              HasSubstr(absl::StrCat("127.0.0.1:", a->port())));
  EXPECT_THAT(std::string(b.status().message()),
              HasSubstr("Address already in use"));
  absl::Status c = a->Connect(3, "no-such-host-name.invalid:x");
  EXPECT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.message()),
              HasSubstr("no-such-host-name.invalid:x"));
}

std::string Header(const proto::Header& h) {
  std::string s;
  h.SerializeToString(&s);
  return s;
}

TEST(TransportTest, GarbageIsCountedAndDroppedAndGoodTrafficContinues) {
  auto b = Make("secret");
  RawPeer raw(b->address(), "secret");
  proto::Header good;
  good.set_type(proto::PUSH);
  good.set_token("secret");
  good.add_keys(1);
  good.add_offsets(0);
  good.add_lengths(2);
  const std::string two_floats(8, '\0');

  raw.Send({"\xff\xff\xff garbage that is not protobuf"});  // Unparsable.
  proto::Header truncated = good;
  std::string cut = Header(truncated);
  raw.Send({cut.substr(0, cut.size() - 3), two_floats});  // Truncated header.
  proto::Header wrong_token = good;
  wrong_token.set_token("guess");
  raw.Send({Header(wrong_token), two_floats});  // Wrong token.
  proto::Header huge = good;
  huge.set_lengths(0, int64_t{1} << 40);
  raw.Send({Header(huge), two_floats});              // Huge declared length.
  raw.Send({Header(good), two_floats, two_floats});  // Extra frame.
  proto::Header neg = good;
  neg.set_lengths(0, -2);
  raw.Send({Header(neg), two_floats});   // Negative length.
  raw.Send({Header(good), two_floats});  // Valid.

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

// Sanitizers keep shadow memory per byte: resident memory says little there.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

// Resident memory of this process.
int64_t RssBytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return -1;
}

// Writes `frames` empty frames of one message that never ends, 1 MB at a
// time; returns how many the receiver took before it closed the connection.
int64_t SendUnfinishedMessage(RawZmtpPeer* raw, int64_t frames) {
  std::string chunk;
  for (int i = 0; i < 500000; ++i)
    chunk += RawZmtpPeer::FrameHeader(0, /*more=*/true, false);
  int64_t sent = 0;
  while (sent < frames && raw->Write(chunk)) sent += 500000;
  return sent;
}

// After `raw`'s handshake, 10 million empty frames of one message that
// never ends (20 MB on the wire): the receiver `b` must close the
// connection, take nothing, hold no memory for it, and count it.
void ExpectAMessageThatNeverEndsHoldsNoMemory(Transport* b, RawZmtpPeer* raw) {
  const int64_t rss_before = RssBytes();
  const int64_t written = SendUnfinishedMessage(raw, 10000000);
  EXPECT_TRUE(raw->ClosedByPeer(10000)) << "the connection stayed open";
  const int64_t grown = RssBytes() - rss_before;
  ::testing::Test::RecordProperty("frames_written", static_cast<int>(written));
  ::testing::Test::RecordProperty("rss_growth_mib",
                                  static_cast<int>(grown >> 20));
  if (!kSanitized) {
    EXPECT_LT(grown, int64_t{32} << 20) << written << " frames written";
  }
  EXPECT_TRUE(WaitFor([&] { return b->stats().connections_refused >= 1; }));
  EXPECT_EQ(b->stats().received + b->stats().dropped_malformed, 0);
}

// ZeroMQ delivers a message only once its last frame is in and keeps every
// frame of an unfinished one (64 bytes each, however small): one connection
// sending 20 MB of empty frames made a receiver hold over 600 MiB. A peer
// without the job token is now turned away in the handshake, before any
// frame of a message is taken from it: here one speaking plain ZMTP (the
// NULL mechanism), as any ZeroMQ socket does by default.
TEST(TransportTest,
     AMessageThatNeverEndsFromAPeerWithoutTheTokenHoldsNoMemory) {
  auto b = Make("secret");
  RawZmtpPeer raw(b->port(), "NULL");
  ASSERT_TRUE(raw.ok());
  raw.SendReady("flood");
  ExpectAMessageThatNeverEndsHoldsNoMemory(b.get(), &raw);
}

// The same from a peer that speaks the right mechanism with a wrong token.
TEST(TransportTest, AMessageThatNeverEndsAfterAWrongTokenHoldsNoMemory) {
  auto b = Make("secret");
  RawZmtpPeer raw(b->port(), "PLAIN");
  ASSERT_TRUE(raw.ok());
  raw.SendHello("pstrain", "guess");
  ExpectAMessageThatNeverEndsHoldsNoMemory(b.get(), &raw);
}

// With CURVE (the default between nodes) the same peer fails the CURVE
// handshake: turned away and counted by the same gate.
TEST(TransportTest, AMessageThatNeverEndsIsTurnedAwayByCurveToo) {
  TransportOptions o;
  o.token = "secret";
  ASSERT_TRUE(UseJobCurveKeys(&o).ok());
  auto b = Make("secret", o);
  RawZmtpPeer raw(b->port(), "NULL");
  ASSERT_TRUE(raw.ok());
  raw.SendReady("flood");
  ExpectAMessageThatNeverEndsHoldsNoMemory(b.get(), &raw);
}

// Jobs without a token (an empty one) still connect; a token over what
// PLAIN carries is refused up front.
TEST(TransportTest, AnEmptyTokenWorksAndAnOverlongOneIsRefused) {
  auto a = Make(""), b = Make("");
  ASSERT_TRUE(a->Connect(1, b->address()).ok());
  ASSERT_TRUE(a->Send(1, Push(5, {5}), Soon()).ok());
  auto got = b->Receive(Soon());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->header.keys(0), 5);
  TransportOptions o;
  o.token = std::string(256, 't');
  auto t = Transport::Create(o);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()),
              HasSubstr("256 bytes; at most 255"));
}

// A pstrain node with another job's token does not get in either.
TEST(TransportTest, ANodeWithAnotherTokenIsRefusedInTheHandshake) {
  auto b = Make("secret"), stranger = Make("other job");
  ASSERT_TRUE(stranger->Connect(1, b->address()).ok());
  ASSERT_TRUE(stranger->Send(1, Push(1, {1}), Soon()).ok());
  EXPECT_TRUE(WaitFor([&] { return b->stats().connections_refused >= 1; }));
  EXPECT_EQ(b->Receive(absl::Now() + absl::Milliseconds(200)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(b->stats().dropped_bad_token, 0);  // No message got as far.
}

// Many connections that each start a handshake frame (up to
// max_frame_bytes) and never finish it: each holds at most one frame, at
// most max_incoming_connections are open, and they go at the handshake
// timeout.
TEST(TransportTest, StalledHandshakesAreBoundedPerConnectionAndInTotal) {
  TransportOptions o;
  o.max_frame_bytes = 1 << 20;
  o.max_incoming_connections = 16;
  // Every peer must arrive while the first 16 still hold their slots:
  // sanitizers slow the 200 connections down several times (under TSan
  // with two test binaries at once they took 15-20 s).
  const absl::Duration handshake = absl::Seconds(kSanitized ? 40 : 2);
  o.handshake_timeout = handshake;
  auto b = Make("secret", o);
  const int64_t rss_before = RssBytes();
  constexpr int kPeers = 200;
  std::vector<std::unique_ptr<RawZmtpPeer>> peers;
  for (int i = 0; i < kPeers; ++i) {
    auto raw = std::make_unique<RawZmtpPeer>(b->port(), "PLAIN");
    // Half a frame of the largest size the receiver takes (512 KiB of 1 MiB).
    if (raw->ok()) {
      raw->Write(RawZmtpPeer::FrameHeader(1 << 20, false, /*command=*/true) +
                 std::string(512 << 10, 'x'));
    }
    peers.push_back(std::move(raw));
  }
  EXPECT_TRUE(
      WaitFor([&] { return b->stats().connections_over_limit >= kPeers - 16; },
              handshake + absl::Seconds(8)))
      << b->stats().connections_over_limit;
  const int64_t grown = RssBytes() - rss_before;
  RecordProperty("rss_growth_mib", static_cast<int>(grown >> 20));
  if (!kSanitized) {
    EXPECT_LT(grown, int64_t{32} << 20);
  }
  // The rest are dropped when their handshake times out.
  int closed = 0;
  const int close_wait_ms =
      static_cast<int>(absl::ToInt64Milliseconds(handshake)) + 8000;
  for (auto& p : peers) closed += p->ClosedByPeer(close_wait_ms);
  EXPECT_EQ(closed, kPeers);
  EXPECT_TRUE(WaitFor([&] { return b->stats().connections_refused >= 16; }));
  // And the gate still lets a real peer in.
  auto a = Make("secret");
  ASSERT_TRUE(a->Connect(1, b->address()).ok());
  ASSERT_TRUE(a->Send(1, Push(3, {3}), Soon()).ok());
  auto got = b->Receive(Soon());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->header.keys(0), 3);
}

// A routing id is the peer's to choose: a newline in it must not forge a
// log line.
TEST(TransportTest, PeerSuppliedRoutingIdsAreLoggedEscapedOnOneLine) {
  auto b = Make("secret");
  LogCapture logs;
  {
    RawPeer raw(b->address(), "secret",
                "evil\nE0101 00:00:00.000000 1 forged.cc:1] \x1b[31mforged");
    // LOG_EVERY_N(.., 100) logs one of any 100 drops.
    for (int i = 0; i < 100; ++i) raw.Send({"\xff\xff not protobuf"});
    while (b->stats().dropped_malformed < 100)
      absl::SleepFor(absl::Milliseconds(5));
  }
  const auto lines = logs.Containing("does not parse");
  ASSERT_FALSE(lines.empty());
  for (const std::string& line : lines) {
    EXPECT_EQ(line.find('\n'), std::string::npos) << line;
    EXPECT_EQ(line.find('\x1b'), std::string::npos) << line;
    EXPECT_THAT(line, HasSubstr("evil\\nE0101"));
  }
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

// A receiver that reads nothing until told, and a sender with small bounds.
struct Flood {
  static constexpr int64_t kBound = int64_t{8} << 20;
  static constexpr size_t kFloats = 256 * 1024;  // 1 MiB messages.
  std::unique_ptr<Transport> receiver, sender;
  Flood() {
    TransportOptions r;
    r.incoming_capacity = 4;
    r.receive_hwm_messages = 2;
    receiver = Make("tok", r);
    TransportOptions s;
    s.max_queued_bytes_per_peer = kBound;
    s.max_queued_messages_per_peer = 64;
    s.send_window_bytes = 2 << 20;
    sender = Make("tok", s);
    EXPECT_TRUE(sender->Connect(1, receiver->address()).ok());
  }
  absl::Status Send(int i, absl::Time deadline) {
    return sender->Send(
        1, Push(i, std::vector<float>(kFloats, static_cast<float>(i))),
        deadline);
  }
  // Sends until the bound stops the sender; returns how many went.
  int FillUp() {
    int sent = 0;
    absl::Status s;
    while (sent < 1000) {
      s = Send(sent, absl::Now() + absl::Milliseconds(300));
      if (!s.ok()) break;
      ++sent;
    }
    EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("stayed full"));
    return sent;
  }
};

TEST(TransportTest, AFloodLargerThanTheBoundWaitsAndNeverDeadlocks) {
  Flood f;
  constexpr int kMessages = 200;  // 200 MiB offered, 8 MiB bound.
  const int64_t rss_before = RssBytes();
  int sent = f.FillUp();
  EXPECT_LT(sent, kMessages);
  EXPECT_LE(f.sender->stats().max_queued_bytes, Flood::kBound);
  // What is buffered anywhere in this process (sender queue and ZeroMQ
  // pipes, receiver pipes and queue) stays far below what was offered.
  const int64_t grown = RssBytes() - rss_before;
  RecordProperty("sent_before_the_bound_mib", sent);
  RecordProperty("rss_growth_mib", static_cast<int>(grown >> 20));
  if (!kSanitized) {
    EXPECT_LT(grown, int64_t{64} << 20) << sent << " MiB sent before the bound";
  }
  // The consumer starts: everything arrives once, in order, and the rest
  // of the flood goes through.
  std::atomic<int> received{0};
  std::thread consumer([&] {
    for (int i = 0; i < kMessages; ++i) {
      auto m = f.receiver->Receive(Soon());
      if (!m.ok()) {
        ADD_FAILURE() << m.status();
        return;
      }
      EXPECT_EQ(m->header.keys(0), i);
      EXPECT_EQ(m->frames[0].As<float>()[12345], static_cast<float>(i));
      ++received;
    }
  });
  for (; sent < kMessages; ++sent)
    ASSERT_TRUE(f.Send(sent, Soon()).ok()) << sent;
  consumer.join();
  EXPECT_EQ(received, kMessages);
  EXPECT_LE(f.sender->stats().max_queued_bytes, Flood::kBound);
}

TEST(TransportTest, StopWakesASenderWaitingForRoom) {
  Flood f;
  f.FillUp();
  absl::Status blocked;
  const absl::Time start = absl::Now();
  std::thread t(
      [&] { blocked = f.Send(999, absl::Now() + absl::Seconds(60)); });
  f.sender->Stop();
  t.join();
  EXPECT_EQ(blocked.code(), absl::StatusCode::kCancelled) << blocked;
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
}

TEST(TransportTest, DataHandlerGetsQueuedDataFirstThenNewDataOnTheIoThread) {
  TransportOptions o;
  o.split_data = true;
  auto b = Make("tok", o);
  auto a = Make();
  ASSERT_TRUE(a->Connect(1, b->address()).ok());
  ASSERT_TRUE(b->Connect(0, a->address()).ok());
  ASSERT_TRUE(a->Send(1, Push(1, {1}), Soon()).ok());
  // Arrived before any handler: queued for ReceiveData.
  auto first = b->ReceiveData(Soon());
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->header.keys(0), 1);
  ASSERT_TRUE(a->Send(1, Push(2, {2}), Soon()).ok());
  // Wait until it is queued (a control message sent after it arrives after it).
  Message beat;
  beat.header.set_type(proto::HEARTBEAT);
  ASSERT_TRUE(a->Send(1, std::move(beat), Soon()).ok());
  ASSERT_TRUE(b->Receive(Soon()).ok());
  std::mutex mu;
  std::vector<int64_t> keys;
  std::atomic<bool> on_caller_thread{false};
  const std::thread::id caller = std::this_thread::get_id();
  b->SetDataHandler([&](Message m) {
    if (std::this_thread::get_id() == caller) on_caller_thread = true;
    // Answer from the handler: queued without waiting.
    EXPECT_TRUE(
        b->Send(0, Push(100 + m.header.keys(0), {0}), absl::InfinitePast())
            .ok());
    std::lock_guard<std::mutex> lock(mu);
    keys.push_back(m.header.keys(0));
  });
  ASSERT_TRUE(a->Send(1, Push(3, {3}), Soon()).ok());
  for (int64_t want : {102, 103}) {
    auto reply = a->Receive(Soon());
    ASSERT_TRUE(reply.ok()) << reply.status();
    EXPECT_EQ(reply->header.keys(0), want);
  }
  b->SetDataHandler(nullptr);
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(keys, (std::vector<int64_t>{2, 3}));
  }
  EXPECT_FALSE(on_caller_thread);
  // Without a handler, data goes to the queue again.
  ASSERT_TRUE(a->Send(1, Push(4, {4}), Soon()).ok());
  auto last = b->ReceiveData(Soon());
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(last->header.keys(0), 4);
}

// A node holding the token cannot speak for another: the sender id in the
// header must be the connected peer whose connection the message came in
// on.
TEST(TransportTest, AMessageCannotClaimAnotherNodesId) {
  auto a = Make(), b = Make(), c = Make();
  ASSERT_TRUE(a->Connect(5, b->address()).ok());
  ASSERT_TRUE(a->Connect(6, c->address()).ok());
  ASSERT_TRUE(b->Connect(0, a->address()).ok());
  ASSERT_TRUE(c->Connect(0, a->address()).ok());
  Message forged = Push(1, {1});
  forged.header.set_sender(5);  // c claims to be b.
  ASSERT_TRUE(c->Send(0, std::move(forged), Soon()).ok());
  Message own = Push(2, {2});
  own.header.set_sender(6);
  ASSERT_TRUE(c->Send(0, std::move(own), Soon()).ok());
  Message from_b = Push(3, {3});
  from_b.header.set_sender(5);
  ASSERT_TRUE(b->Send(0, std::move(from_b), Soon()).ok());
  std::vector<int64_t> keys;
  std::vector<std::string> froms;
  for (int i = 0; i < 2; ++i) {
    auto got = a->Receive(Soon());
    ASSERT_TRUE(got.ok()) << got.status();
    keys.push_back(got->header.keys(0));
    froms.push_back(got->from);
  }
  EXPECT_THAT(keys, ::testing::UnorderedElementsAre(2, 3));
  EXPECT_THAT(froms,
              ::testing::UnorderedElementsAre(b->address(), c->address()));
  EXPECT_EQ(a->Receive(absl::Now() + absl::Milliseconds(200)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(a->stats().dropped_wrong_sender, 1);
  EXPECT_EQ(a->stats().received, 2);
}

TEST(TransportTest, ReconnectMovesAPeerIdToANewNode) {
  // Peer id 5 was b; b dies and c takes its id (--recovery=replace).
  auto a = Make(), c = Make();
  std::string b_address;
  {
    auto b = Make();
    b_address = b->address();
    ASSERT_TRUE(a->Connect(5, b->address()).ok());
    ASSERT_TRUE(b->Connect(0, a->address()).ok());
    Message m = Push(1, {1});
    m.header.set_sender(5);
    ASSERT_TRUE(b->Send(0, std::move(m), Soon()).ok());
    ASSERT_TRUE(a->Receive(Soon()).ok());
  }
  // Queued for the dead b: dropped by the move.
  ASSERT_TRUE(a->Send(5, Push(9, {9}), Soon()).ok());
  // Connect() refuses another endpoint; Reconnect() moves the id.
  EXPECT_EQ(a->Connect(5, c->address()).code(),
            absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(a->Reconnect(5, c->address()).ok());
  ASSERT_TRUE(a->Reconnect(5, c->address()).ok());  // Idempotent.
  ASSERT_TRUE(c->Connect(0, a->address()).ok());
  // c speaks as 5 and is heard; a's messages to 5 reach c.
  Message m = Push(2, {2});
  m.header.set_sender(5);
  ASSERT_TRUE(c->Send(0, std::move(m), Soon()).ok());
  auto got = a->Receive(Soon());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->header.keys(0), 2);
  EXPECT_EQ(got->from, c->address());
  ASSERT_TRUE(a->Send(5, Push(3, {3}), Soon()).ok());
  auto back = c->Receive(Soon());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->header.keys(0), 3);
  EXPECT_EQ(a->stats().dropped_wrong_sender, 0);
  EXPECT_NE(b_address, c->address());
}

// After a message that came in less than twice TransportOptions::io_spin
// after the one before, the I/O thread polls without sleeping for io_spin and
// then sleeps again; after a lone message, with io_spin zero, and while
// nothing comes in, it never spins.
TEST(TransportTest, TheIoThreadSpinsForIoSpinAfterCloseMessagesAndOnlyThen) {
  TransportOptions spins;
  spins.io_spin = absl::Milliseconds(100);  // After messages within 200 ms.
  TransportOptions sleeps;
  sleeps.io_spin = absl::ZeroDuration();
  auto a = Make(), b = Make("tok", spins), c = Make("tok", sleeps);
  ASSERT_TRUE(a->Connect(1, b->address()).ok());
  ASSERT_TRUE(a->Connect(2, c->address()).ok());
  auto exchange = [&]() {
    for (int peer : {1, 2}) {
      ASSERT_TRUE(a->Send(peer, Push(peer, {1}), Soon()).ok());
    }
    ASSERT_TRUE(b->Receive(Soon()).ok());
    ASSERT_TRUE(c->Receive(Soon()).ok());
  };
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(b->stats().io_spin_turns, 0) << "spun with nothing received";
  exchange();  // The first message ends a silence.
  absl::SleepFor(absl::Milliseconds(300));
  exchange();  // So does this one: 300 ms after.
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(b->stats().io_spin_turns, 0) << "spun after a lone message";
  // Two exchanges right after each other start the spin. The spin ends
  // 100 ms after the message; by 300 ms it is over. A loaded machine may
  // space the two by more than 200 ms: up to 5 tries.
  int64_t spun = 0, turns = 0;  // In total; of the last try.
  for (int attempt = 0; attempt < 5 && turns <= 10; ++attempt) {
    exchange();
    exchange();  // Right after the one before.
    absl::SleepFor(absl::Milliseconds(300));
    turns = b->stats().io_spin_turns - spun;
    spun += turns;
  }
  EXPECT_GT(turns, 10) << "100 ms of polling without sleep";
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(b->stats().io_spin_turns, spun) << "still spinning";
  EXPECT_EQ(c->stats().io_spin_turns, 0);
}

}  // namespace
}  // namespace transport
}  // namespace pstrain
