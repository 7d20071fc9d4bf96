// The TCP data link (transport/data_link.h) between real transports over
// loopback, plaintext and encrypted under CURVE (transport/link_crypto.h),
// hostile input on a raw socket, and a man-in-the-middle relay.
#include "transport/data_link.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "transport/link_crypto.h"
#include "transport/raw_peer.h"
#include "transport/transport.h"
#include "transport/wire.h"
#include "util/mutex.h"

namespace pstrain {
namespace transport {
namespace {

absl::Time Soon() { return absl::Now() + absl::Seconds(20); }

// How a test's links run.
enum class Mode { kPlain, kAes, kChaCha };

TransportOptions Options(Mode mode) {
  TransportOptions o;
  o.token = "tok";
  if (mode != Mode::kPlain) {
    EXPECT_TRUE(UseJobCurveKeys(&o).ok());
    o.data_link_aes_gcm = mode == Mode::kAes;
  }
  return o;
}

std::unique_ptr<Transport> Make(TransportOptions o = TransportOptions()) {
  o.token = "tok";
  o.split_data = true;
  auto t = Transport::Create(o);
  EXPECT_TRUE(t.ok()) << t.status();
  return std::move(*t);
}

// floats[i] = seed + i, as a frame of a PUSH of key `key`.
Message Request(uint64_t rid, int64_t floats, float seed) {
  Message m;
  m.header.set_type(proto::PUSH);
  m.header.set_request_id(rid);
  m.header.add_keys(1);
  m.header.add_offsets(0);
  m.header.add_lengths(floats);
  auto v = std::make_shared<std::vector<float>>(floats);
  for (int64_t i = 0; i < floats; ++i) (*v)[i] = seed + static_cast<float>(i);
  m.frames.push_back(Frame::Borrow(v->data(), floats * sizeof(float), v));
  return m;
}

bool Holds(const Frame& f, int64_t floats, float seed) {
  if (f.size() != static_cast<size_t>(floats) * sizeof(float)) return false;
  auto s = f.As<float>();
  for (int64_t i = 0; i < floats; ++i) {
    if (s[i] != seed + static_cast<float>(i)) return false;
  }
  return true;
}

// A server and a client: the server answers every request with a RESPONSE
// carrying the request's frames, and remembers the request ids in order.
struct Pair {
  std::unique_ptr<Transport> server, client;
  Mutex mu;
  std::vector<uint64_t> order ABSL_GUARDED_BY(mu);
  explicit Pair(TransportOptions server_options = TransportOptions(),
                TransportOptions client_options = TransportOptions())
      : server(Make(server_options)), client(Make(client_options)) {
    EXPECT_TRUE(client->Connect(1, server->address()).ok());
    EXPECT_TRUE(server->Connect(2, client->address()).ok());
    server->SetDataHandler([this](Message m) {
      {
        MutexLock lock(&mu);
        order.push_back(m.header.request_id());
      }
      Message r;
      r.header = m.header;
      r.header.set_type(proto::RESPONSE);
      // Copied: a frame received through ZeroMQ cannot be sent on as is.
      for (const Frame& f : m.frames)
        r.frames.push_back(Frame::Copy(f.data(), f.size()));
      EXPECT_TRUE(server->Send(2, std::move(r), absl::InfinitePast()).ok());
    });
  }
  explicit Pair(Mode mode) : Pair(Options(mode), Options(mode)) {}
  ~Pair() { server->SetDataHandler(nullptr); }
  bool SawRequest(uint64_t rid) {
    MutexLock lock(&mu);
    return std::find(order.begin(), order.end(), rid) != order.end();
  }
  size_t Seen() {
    MutexLock lock(&mu);
    return order.size();
  }
  // Round trips until both directions go through links (a node that
  // waits for its peer's two-way link connects its own after
  // kLinkAdoptGrace).
  void WaitForLinks() {
    const absl::Time give_up = absl::Now() + absl::Seconds(20);
    for (uint64_t rid = 1; absl::Now() < give_up; ++rid) {
      ASSERT_TRUE(client->Send(1, Request(rid, 4, 0), Soon()).ok());
      ASSERT_TRUE(client->ReceiveData(Soon()).ok());
      if (client->stats().link_messages_sent > 0 &&
          server->stats().link_messages_sent > 0) {
        return;
      }
      if (rid > 50) absl::SleepFor(absl::Milliseconds(5));
    }
    FAIL() << "the data links never came up";
  }
};

class LinkModeTest : public ::testing::TestWithParam<Mode> {};

INSTANTIATE_TEST_SUITE_P(Modes, LinkModeTest,
                         ::testing::Values(Mode::kPlain, Mode::kAes,
                                           Mode::kChaCha),
                         [](const ::testing::TestParamInfo<Mode>& i) {
                           return i.param == Mode::kPlain ? "Plaintext"
                                  : i.param == Mode::kAes ? "CurveAesGcm"
                                                          : "CurveChaCha";
                         });

TEST_P(LinkModeTest, ManySizesBothWaysInOrder) {
  Pair p(GetParam());
  ASSERT_GT(p.client->data_port(), 0);
  // The first messages travel through ZeroMQ (offering the links), the
  // rest through the links: order holds across the switch.
  const std::vector<int64_t> sizes = {1,      1024,    1025,         262147,
                                      786433, 4 << 20, (8 << 20) + 3};
  uint64_t rid = 1;
  std::vector<uint64_t> sent;
  for (int round = 0; round < 3; ++round) {
    for (int64_t n : sizes) {
      ASSERT_TRUE(
          p.client->Send(1, Request(rid, n, static_cast<float>(rid)), Soon())
              .ok());
      auto got = p.client->ReceiveData(Soon());
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(got->header.request_id(), rid);
      ASSERT_EQ(got->frames.size(), 1u);
      EXPECT_TRUE(Holds(got->frames[0], n, static_cast<float>(rid)))
          << n << " floats";
      sent.push_back(rid++);
    }
  }
  // Many small ones back to back, without waiting: FIFO.
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(p.client->Send(1, Request(rid, 3, 0), Soon()).ok());
    sent.push_back(rid++);
  }
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(p.client->ReceiveData(Soon()).ok());
  {
    MutexLock lock(&p.mu);
    EXPECT_EQ(p.order, sent);
  }
  // The sender counts a message once sendmsg() returned, which may be
  // after the receiver counted it.
  for (int i = 0; i < 200 && p.server->stats().link_messages_sent <
                                 p.client->stats().link_messages_received;
       ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  const TransportStats c = p.client->stats(), s = p.server->stats();
  EXPECT_GT(c.link_messages_sent, 200);
  EXPECT_GT(s.link_messages_sent, 200);
  EXPECT_EQ(c.link_messages_received, s.link_messages_sent);
  EXPECT_EQ(c.link_errors + s.link_errors, 0);
  EXPECT_EQ(c.dropped_malformed + s.dropped_malformed, 0);
  EXPECT_EQ(c.link_auth_failures + s.link_auth_failures, 0);
}

TEST_P(LinkModeTest, ReplyLandsInTheRegisteredBuffer) {
  Pair p(GetParam());
  p.WaitForLinks();
  // Non-multiples of a page, small and big.
  for (int64_t n : {int64_t{1}, int64_t{1025}, int64_t{1000001}}) {
    std::vector<float> dest(n, -1.0f);
    p.client->ExpectReply(1000 + n,
                          {absl::MakeSpan(reinterpret_cast<char*>(dest.data()),
                                          n * sizeof(float))});
    ASSERT_TRUE(p.client->Send(1, Request(1000 + n, n, 5), Soon()).ok());
    auto got = p.client->ReceiveData(Soon());
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(got->frames[0].data(), reinterpret_cast<char*>(dest.data()));
    EXPECT_TRUE(Holds(got->frames[0], n, 5));
    p.client->CancelReply(1000 + n);
  }
  // A buffer of another size is not used; a cancelled one is not touched.
  std::vector<float> small(10, -1.0f), cancelled(100, -1.0f);
  p.client->ExpectReply(
      7000, {absl::MakeSpan(reinterpret_cast<char*>(small.data()), 40)});
  ASSERT_TRUE(p.client->Send(1, Request(7000, 100, 1), Soon()).ok());
  auto got = p.client->ReceiveData(Soon());
  ASSERT_TRUE(got.ok());
  EXPECT_NE(got->frames[0].data(), reinterpret_cast<char*>(small.data()));
  EXPECT_TRUE(Holds(got->frames[0], 100, 1));
  EXPECT_EQ(small[0], -1.0f);
  p.client->CancelReply(7000);
  p.client->ExpectReply(
      7001, {absl::MakeSpan(reinterpret_cast<char*>(cancelled.data()), 400)});
  p.client->CancelReply(7001);
  ASSERT_TRUE(p.client->Send(1, Request(7001, 100, 1), Soon()).ok());
  got = p.client->ReceiveData(Soon());
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(Holds(got->frames[0], 100, 1));
  EXPECT_EQ(cancelled[0], -1.0f);
}

TEST_P(LinkModeTest, ConcurrentRequestsEachGetTheirReply) {
  Pair p(GetParam());
  p.WaitForLinks();
  constexpr int kThreads = 4, kEach = 40;
  // This thread receives every reply and checks it by its request id.
  std::vector<std::thread> threads;
  std::vector<std::vector<std::vector<float>>> dests(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    dests[t].resize(kEach);
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        const uint64_t rid = 10000 + t * 1000 + i;
        const int64_t n = 1 + (i * 7919 + t * 104729) % 100000;
        dests[t][i].assign(n, 0.0f);
        p.client->ExpectReply(
            rid, {absl::MakeSpan(reinterpret_cast<char*>(dests[t][i].data()),
                                 n * sizeof(float))});
        ASSERT_TRUE(
            p.client->Send(1, Request(rid, n, static_cast<float>(i)), Soon())
                .ok());
      }
    });
  }
  for (int i = 0; i < kThreads * kEach; ++i) {
    // Generous: sanitizers slow every copy tenfold.
    auto got = p.client->ReceiveData(absl::Now() + absl::Seconds(120));
    EXPECT_TRUE(got.ok()) << got.status();
    if (!got.ok()) break;  // The senders are joined below either way.
    const uint64_t rid = got->header.request_id();
    const int t = static_cast<int>((rid - 10000) / 1000),
              j = (rid - 10000) % 1000;
    const int64_t n = 1 + (j * 7919 + t * 104729) % 100000;
    EXPECT_TRUE(Holds(got->frames[0], n, static_cast<float>(j)));
    EXPECT_EQ(got->frames[0].data(),
              reinterpret_cast<char*>(dests[t][j].data()));
    p.client->CancelReply(rid);
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(p.client->stats().link_errors, 0);
}

// Once only links carry traffic, the I/O loop waits with one poll() over
// the ZeroMQ sockets' descriptors and the links (Transport::PollItems). A
// ZeroMQ message arriving then must still wake it. The messages come from
// a third node without links (as the scheduler's do), each after a link
// round trip has settled both loops; a missed wake-up would leave one
// waiting for ever.
TEST_P(LinkModeTest, ZeroMqMessagesStillArriveWhileOnlyLinksCarryTraffic) {
  Pair p(GetParam());
  p.WaitForLinks();
  TransportOptions so = Options(GetParam());
  so.data_link = false;
  std::unique_ptr<Transport> sched = Make(so);
  ASSERT_TRUE(sched->Connect(1, p.server->address()).ok());
  ASSERT_TRUE(sched->Connect(2, p.client->address()).ok());
  const int64_t links_before = p.server->stats().link_messages_received;
  absl::Duration slowest;
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(p.client->Send(1, Request(1000 + i, 4, 0), Soon()).ok());
    ASSERT_TRUE(p.client->ReceiveData(Soon()).ok());
    for (int to_id : {1, 2}) {
      Transport* to = to_id == 1 ? p.server.get() : p.client.get();
      Message hb;
      hb.header.set_type(proto::HEARTBEAT);
      hb.header.set_request_id(i);
      const absl::Time start = absl::Now();
      ASSERT_TRUE(sched->Send(to_id, std::move(hb), Soon()).ok());
      absl::StatusOr<Message> got = to->Receive(Soon());
      ASSERT_TRUE(got.ok())
          << "heartbeat " << i << " to node " << to_id << ": " << got.status();
      EXPECT_EQ(got->header.type(), proto::HEARTBEAT);
      EXPECT_EQ(got->header.request_id(), static_cast<uint64_t>(i));
      slowest = std::max(slowest, absl::Now() - start);
    }
  }
  // The requests came over the link, the heartbeats through ZeroMQ.
  EXPECT_EQ(p.server->stats().link_messages_received, links_before + 100);
  EXPECT_EQ(sched->stats().link_messages_sent, 0);
  // Not a timing test: a report of the slowest wake-up.
  std::cout << "slowest heartbeat: " << absl::FormatDuration(slowest) << "\n";
}

TEST(DataLinkTest, PeerDeathMidTransferIsAnErrorNotAHang) {
  Pair p;
  p.WaitForLinks();
  p.server->SetDataHandler(nullptr);
  // 64 MiB to a peer that dies while reading it.
  std::thread killer([&] {
    absl::SleepFor(absl::Milliseconds(5));
    p.server->Stop();
  });
  const absl::Time t0 = absl::Now();
  for (int i = 0; i < 4; ++i) {
    absl::Status s = p.client->Send(1, Request(50 + i, 16 << 20, 0),
                                    absl::Now() + absl::Seconds(5));
    EXPECT_TRUE(s.ok() || s.code() == absl::StatusCode::kDeadlineExceeded) << s;
  }
  killer.join();
  // The link is found broken (write error) within a bounded time.
  for (int i = 0; i < 500 && p.client->stats().link_errors == 0; ++i) {
    p.client
        ->Send(1, Request(99, 1 << 20, 0),
               absl::Now() + absl::Milliseconds(100))
        .IgnoreError();
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_GE(p.client->stats().link_errors, 1);
  p.client->Stop();
  // Bounded by the deadlines above (4 x 5 s, then at most 500 x 110 ms);
  // the sends' own time under TSAN on a loaded machine took up to 51 s.
  EXPECT_LT(absl::Now() - t0, absl::Seconds(90));
}

// A raw TCP client of a data-link listener.
class RawLink {
 public:
  explicit RawLink(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok_ = connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  }
  ~RawLink() { close(fd_); }
  bool ok() const { return ok_; }
  int fd() const { return fd_; }
  bool Write(const std::string& b) {
    return send(fd_, b.data(), b.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(b.size());
  }
  // Whether the other side closed within `ms` (raw_peer.h).
  bool ClosedByPeer(int ms) { return transport::ClosedByPeer(fd_, ms); }

 private:
  int fd_ = -1;
  bool ok_ = false;
};

std::string Head(const proto::Header& h, const std::vector<Frame>& frames) {
  std::string s;
  h.SerializeToString(&s);
  return EncodeLinkHead(s, frames);
}

TEST(DataLinkTest, HostileLinkInputIsRefusedAndCounted) {
  Pair p;  // The client is a peer of the server: its address may say hello.
  const int port = p.server->data_port();
  const std::string id = p.client->address();
  {
    RawLink r(port);  // Wrong token.
    ASSERT_TRUE(r.ok());
    r.Write(EncodeLinkHello("guess", id, 0));
    EXPECT_TRUE(r.ClosedByPeer(5000));
  }
  {
    RawLink r(port);  // A node the server has no connection to.
    r.Write(EncodeLinkHello("tok", "10.9.9.9:1", 0));
    EXPECT_TRUE(r.ClosedByPeer(5000));
  }
  {
    RawLink r(port);  // Not a hello at all.
    r.Write(std::string(64, 'x'));
    EXPECT_TRUE(r.ClosedByPeer(5000));
  }
  EXPECT_GE(p.server->stats().connections_refused, 3);
  {
    RawLink r(port);  // Bad magic after a good hello.
    r.Write(EncodeLinkHello("tok", id, 0) + std::string(16, 'x'));
    EXPECT_TRUE(r.ClosedByPeer(5000));
  }
  {
    RawLink r(port);  // A frame past max_frame_bytes.
    std::string head;
    head.append("PSLM", 4);
    head.append(std::string("\x02\x00\x00\x00\x01\x00\x00\x00", 8));
    head.append(4, '\0');
    head.append(std::string("\x00\x00\x00\x00\x00\x00\x00\x7f", 8));
    r.Write(EncodeLinkHello("tok", id, 0) + head);
    EXPECT_TRUE(r.ClosedByPeer(5000));
  }
  EXPECT_GE(p.server->stats().dropped_malformed, 2);
  const int64_t errors_before = p.server->stats().link_errors;
  {
    // A message cut short: the server drops the link, names the peer.
    RawLink r(port);
    Message m = Request(1, 1000, 0);
    m.header.set_token("tok");
    m.header.set_sender(-1);
    r.Write(EncodeLinkHello("tok", id, 0) + Head(m.header, m.frames) +
            std::string(100, '\0'));
  }
  for (int i = 0; i < 500 && p.server->stats().link_errors == errors_before;
       ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(p.server->stats().link_errors, errors_before + 1);
  {
    // A well-framed message without the token is dropped, and the link
    // stays: the next message on it arrives.
    RawLink r(port);
    Message bad = Request(2, 4, 0);
    bad.header.set_token("guess");
    Message good = Request(3, 4, 0);
    good.header.set_token("tok");
    std::string bytes =
        EncodeLinkHello("tok", id, 0) + Head(bad.header, bad.frames) +
        std::string(bad.frames[0].data(), 16) + Head(good.header, good.frames) +
        std::string(good.frames[0].data(), 16);
    ASSERT_TRUE(r.Write(bytes));
    for (int i = 0; i < 500 && p.Seen() == 0; ++i) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    MutexLock lock(&p.mu);
    EXPECT_THAT(p.order, ::testing::ElementsAre(3));
  }
  EXPECT_GE(p.server->stats().dropped_bad_token, 1);
  // The real client still gets through.
  ASSERT_TRUE(p.client->Send(1, Request(4, 10, 0), Soon()).ok());
  EXPECT_TRUE(p.client->ReceiveData(Soon()).ok());
}

TEST(DataLinkTest, NoLinkWhenOffOnEitherWire) {
  TransportOptions off = Options(Mode::kAes);
  off.data_link = false;
  EXPECT_EQ(Make(off)->data_port(), 0);
  TransportOptions plain_off;
  plain_off.data_link = false;
  EXPECT_EQ(Make(plain_off)->data_port(), 0);
  EXPECT_GT(Make(Options(Mode::kAes))->data_port(), 0);
}

TEST(EncryptedLinkTest, Over64MiBAndOddSizesArriveBitExact) {
  Pair p(Mode::kAes);
  p.WaitForLinks();
  const TransportStats before = p.client->stats();
  uint64_t rid = 500;
  for (int64_t n :
       {int64_t{3}, int64_t{65537}, int64_t{262145}, (int64_t{16} << 20) + 3}) {
    std::vector<float> dest(n, -1.0f);
    p.client->ExpectReply(rid,
                          {absl::MakeSpan(reinterpret_cast<char*>(dest.data()),
                                          n * sizeof(float))});
    ASSERT_TRUE(
        p.client->Send(1, Request(rid, n, static_cast<float>(n)), Soon()).ok());
    auto got = p.client->ReceiveData(absl::Now() + absl::Seconds(120));
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->header.request_id(), rid);
    EXPECT_EQ(got->frames[0].data(), reinterpret_cast<char*>(dest.data()));
    EXPECT_TRUE(Holds(got->frames[0], n, static_cast<float>(n))) << n;
    p.client->CancelReply(rid++);
  }
  const TransportStats c = p.client->stats(), s = p.server->stats();
  EXPECT_GE(c.link_messages_sent - before.link_messages_sent, 4);
  EXPECT_GE(c.link_messages_received - before.link_messages_received, 4);
  EXPECT_EQ(c.link_errors + s.link_errors, 0);
  EXPECT_EQ(c.link_auth_failures + s.link_auth_failures, 0);
}

// Per-node keys as --curve_keys_dir reads them: nodes a and b, each with
// its own directory (server.key, node.key, clients/).
TEST(EncryptedLinkTest, PerNodeKeysFromCurveKeysDirs) {
  namespace fs = std::filesystem;
  const char* tmp = std::getenv("TEST_TMPDIR");
  const fs::path root = fs::path(tmp != nullptr ? tmp : "/tmp") /
                        absl::StrCat("linkkeys", getpid());
  fs::remove_all(root);
  fs::create_directories(root);
  absl::Status written = WriteCurveKeysDir((root / "all").string(), {"a", "b"});
  ASSERT_TRUE(written.ok()) << written;
  TransportOptions opts[2];
  const char* names[2] = {"a", "b"};
  for (int i = 0; i < 2; ++i) {
    const fs::path d = root / names[i];
    fs::create_directories(d / "clients");
    fs::copy_file(root / "all" / "server.key", d / "server.key");
    fs::copy_file(root / "all" / absl::StrCat(names[i], ".key"),
                  d / "node.key");
    fs::copy(root / "all" / "clients", d / "clients");
    opts[i].token = "tok";
    absl::Status st = UseCurveKeysDir(d.string(), &opts[i]);
    ASSERT_TRUE(st.ok()) << st;
  }
  EXPECT_NE(opts[0].curve_keys.public_key, opts[1].curve_keys.public_key);
  Pair p(opts[0], opts[1]);
  p.WaitForLinks();
  ASSERT_TRUE(p.client->Send(1, Request(77, 100003, 2), Soon()).ok());
  auto got = p.client->ReceiveData(Soon());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(Holds(got->frames[0], 100003, 2));
  EXPECT_EQ(p.client->stats().link_auth_failures +
                p.server->stats().link_auth_failures,
            0);
  fs::remove_all(root);
}

// A raw client of an encrypted listener that runs the real handshake with
// `keys` and then writes records it seals itself.
class RawEncryptedLink {
 public:
  RawEncryptedLink(int port, const LinkKeys* keys) : raw_(port), hs_(keys) {
    if (!raw_.ok() || !raw_.Write(hs_.m1())) return;
    std::string m2(kLinkHs2Bytes, '\0');
    size_t got = 0;
    for (int i = 0; i < 500 && got < m2.size(); ++i) {
      pollfd pf{raw_.fd(), POLLIN, 0};
      if (poll(&pf, 1, 10) <= 0) continue;
      const ssize_t n =
          recv(raw_.fd(), &m2[got], m2.size() - got, MSG_DONTWAIT);
      if (n <= 0) return;
      got += static_cast<size_t>(n);
    }
    if (got < m2.size()) return;
    std::string m3;
    auto c = hs_.Finish(m2.data(), &m3);
    if (!c.ok() || !raw_.Write(m3)) return;
    cipher_ = std::move(*c);
  }
  bool up() const { return cipher_ != nullptr; }
  RawLink& raw() { return raw_; }
  // `plain` sealed into records of at most 64 KiB each.
  std::string Seal(const std::string& plain) {
    std::string out;
    for (size_t at = 0; at < plain.size(); at += 65536) {
      const size_t n = std::min<size_t>(65536, plain.size() - at);
      std::string rec(n + kLinkRecordOverhead, '\0');
      cipher_->Seal(plain.data() + at, n, &rec[0]);
      out += rec;
    }
    return out;
  }

 private:
  RawLink raw_;
  LinkConnectorHandshake hs_;
  std::unique_ptr<LinkRecordCipher> cipher_;
};

std::string HelloAndMessage(const std::string& id, uint64_t rid,
                            int64_t floats) {
  Message m = Request(rid, floats, 0);
  m.header.set_token("tok");
  m.header.set_sender(-1);
  return EncodeLinkHello("tok", id, 0) + Head(m.header, m.frames) +
         std::string(m.frames[0].data(), m.frames[0].size());
}

std::unique_ptr<LinkKeys> KeysOf(const TransportOptions& o,
                                 const CurveKeyPair& node) {
  auto k = MakeLinkKeys(node, o.curve_keys.public_key, o.curve_keys,
                        {o.curve_keys.public_key});
  EXPECT_TRUE(k.ok()) << k.status();
  return std::move(*k);
}

TEST(EncryptedLinkTest, KeysAndRecordsAreCheckedBeforeAnythingIsDelivered) {
  const TransportOptions o = Options(Mode::kAes);
  Pair p(o, o);
  const int port = p.server->data_port();
  const std::string id = p.client->address();
  // Control: the job's key and good records get a message through.
  {
    std::unique_ptr<LinkKeys> keys = KeysOf(o, o.curve_keys);
    RawEncryptedLink l(port, keys.get());
    ASSERT_TRUE(l.up());
    ASSERT_TRUE(l.raw().Write(l.Seal(HelloAndMessage(id, 1, 1000))));
    for (int i = 0; i < 500 && !p.SawRequest(1); ++i) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    EXPECT_TRUE(p.SawRequest(1));
  }
  // A key the job does not know: refused after M3, nothing read.
  const TransportStats before = p.server->stats();
  {
    auto rogue = NewKeyPair();
    ASSERT_TRUE(rogue.ok());
    std::unique_ptr<LinkKeys> keys = KeysOf(o, *rogue);
    RawEncryptedLink l(port, keys.get());
    ASSERT_TRUE(l.up());  // The listener proved the server key...
    l.raw().Write(l.Seal(HelloAndMessage(id, 2, 10)));
    EXPECT_TRUE(l.raw().ClosedByPeer(5000));  // ...and refused this one.
  }
  // A connector that fakes the server's answer cannot: a listener that
  // does not hold the server key (the connector's own expectation wrong).
  {
    auto other = NewKeyPair();
    ASSERT_TRUE(other.ok());
    auto keys = MakeLinkKeys(o.curve_keys, other->public_key, o.curve_keys,
                             {o.curve_keys.public_key});
    ASSERT_TRUE(keys.ok());
    RawEncryptedLink l(port, keys->get());
    EXPECT_FALSE(l.up());  // M2 does not check against that server key.
  }
  // A flipped byte in the middle of a record: the link closes, the
  // message is not delivered.
  {
    std::unique_ptr<LinkKeys> keys = KeysOf(o, o.curve_keys);
    RawEncryptedLink l(port, keys.get());
    ASSERT_TRUE(l.up());
    std::string bytes = l.Seal(HelloAndMessage(id, 3, 100000));
    bytes[bytes.size() / 2] ^= 0x20;
    l.raw().Write(bytes);
    EXPECT_TRUE(l.raw().ClosedByPeer(5000));
  }
  // A replayed record (the hello's record twice).
  {
    std::unique_ptr<LinkKeys> keys = KeysOf(o, o.curve_keys);
    RawEncryptedLink l(port, keys.get());
    ASSERT_TRUE(l.up());
    const std::string hello = l.Seal(EncodeLinkHello("tok", id, 0));
    l.raw().Write(hello + hello);
    EXPECT_TRUE(l.raw().ClosedByPeer(5000));
  }
  // Garbage instead of a handshake.
  {
    RawLink r(port);
    r.Write(std::string(64, 'x'));
    EXPECT_TRUE(r.ClosedByPeer(5000));
  }
  // Plaintext link bytes to an encrypted listener.
  {
    RawLink r(port);
    r.Write(HelloAndMessage(id, 4, 10));
    EXPECT_TRUE(r.ClosedByPeer(5000));
  }
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_FALSE(p.SawRequest(2));
  EXPECT_FALSE(p.SawRequest(3));
  EXPECT_FALSE(p.SawRequest(4));
  const TransportStats s = p.server->stats();
  EXPECT_GE(s.link_auth_failures - before.link_auth_failures, 5);
  EXPECT_GE(s.link_errors - before.link_errors, 2);  // Flip, replay.
  EXPECT_GE(s.connections_refused - before.connections_refused, 3);
  // The real client still gets through.
  ASSERT_TRUE(p.client->Send(1, Request(5, 10, 0), Soon()).ok());
  EXPECT_TRUE(p.client->ReceiveData(Soon()).ok());
}

// A TCP relay in front of a link listener: forwards both ways, keeps every
// byte from the connector, and can flip one byte of that stream.
class Relay {
 public:
  Relay() {
    listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    listen(listen_fd_, 8);
    socklen_t len = sizeof(a);
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  ~Relay() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    close(listen_fd_);
  }
  int port() const { return port_; }
  // Starts relaying to `target_port` (one connection at a time).
  void Start(int target_port) {
    target_ = target_port;
    thread_ = std::thread([this] { Loop(); });
  }
  // Flips the byte `after` bytes past what was relayed so far from the
  // client to the server (back: from the server to the client).
  void FlipAfter(size_t after, bool back = false) {
    MutexLock lock(&mu_);
    flip_at_[back] = captured_[back].size() + after;
  }
  // What was relayed from the client to the server (back: the other way).
  std::string captured(bool back = false) {
    MutexLock lock(&mu_);
    return captured_[back];
  }
  int connections() const { return connections_.load(); }
  // Closes the connection being relayed (both of its sockets).
  void Cut() { cut_ = true; }

 private:
  void Loop() {
    while (!stop_) {
      pollfd pl{listen_fd_, POLLIN, 0};
      if (poll(&pl, 1, 20) <= 0) continue;
      const int c = accept(listen_fd_, nullptr, nullptr);
      if (c < 0) continue;
      ++connections_;
      const int s = socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(static_cast<uint16_t>(target_));
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) {
        Pump(c, s);
      }
      close(c);
      close(s);
    }
  }
  // Until either side closes (or the relay stops).
  void Pump(int c, int s) {
    std::vector<char> buf(1 << 20);
    while (!stop_) {
      if (cut_.exchange(false)) return;
      pollfd pf[2] = {{c, POLLIN, 0}, {s, POLLIN, 0}};
      if (poll(pf, 2, 20) <= 0) continue;
      for (int i = 0; i < 2; ++i) {
        if (pf[i].revents == 0) continue;
        const ssize_t n = recv(pf[i].fd, buf.data(), buf.size(), MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN)) return;
        if (n < 0) continue;
        {
          MutexLock lock(&mu_);
          std::string& cap = captured_[i];
          const size_t flip = flip_at_[i];
          const size_t at = cap.size();
          if (flip >= at && flip < at + static_cast<size_t>(n)) {
            buf[flip - at] ^= 0x01;
          }
          cap.append(buf.data(), static_cast<size_t>(n));
        }
        const int to = i == 0 ? s : c;
        for (ssize_t w = 0; w < n;) {
          const ssize_t k = send(to, buf.data() + w, n - w, MSG_NOSIGNAL);
          if (k <= 0) return;
          w += k;
        }
      }
    }
  }

  int listen_fd_ = -1, port_ = 0, target_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  std::atomic<bool> cut_{false};
  Mutex mu_;
  // [0]: client to server, [1]: back.
  std::string captured_[2] ABSL_GUARDED_BY(mu_);
  size_t flip_at_[2] ABSL_GUARDED_BY(mu_) = {static_cast<size_t>(-1),
                                             static_cast<size_t>(-1)};
  std::thread thread_;
};

// Waits up to 5 s for `t` to have sent at least `n` messages over links (a
// message is counted once the kernel took all of it, which may be after
// the receiver has it).
int64_t LinkSentReaches(Transport* t, int64_t n) {
  for (int i = 0; i < 500 && t->stats().link_messages_sent < n; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  return t->stats().link_messages_sent;
}

// A Pair whose link goes through a Relay, links up: the server speaks
// first, so the client connects (through the relay, the port the server
// offers) and the server sends back on the same connection (two-way).
struct RelayedPair {
  explicit RelayedPair(Mode mode) : pair(Through(relay, mode), Options(mode)) {
    relay.Start(pair.server->data_port());
    EXPECT_TRUE(pair.server->Send(2, Request(1, 4, 0), Soon()).ok());
    EXPECT_TRUE(pair.client->ReceiveData(Soon()).ok());
    pair.WaitForLinks();
    EXPECT_EQ(pair.server->stats().links_adopted, 1);
    EXPECT_EQ(pair.client->stats().links_adopted, 0);
  }
  static TransportOptions Through(const Relay& relay, Mode mode) {
    TransportOptions o = Options(mode);
    o.data_link_offered_port = relay.port();
    return o;
  }
  Relay relay;  // Before pair: it outlives it.
  Pair pair;
};

// floats whose bytes spell a recognisable pattern.
Message PatternRequest(uint64_t rid) {
  Message m = Request(rid, 4096, 0);
  const std::string pattern = "PSTRAIN-SECRET-PAYLOAD-";
  std::string bytes;
  while (bytes.size() < 4096 * sizeof(float)) bytes += pattern;
  bytes.resize(4096 * sizeof(float));
  m.frames[0] = Frame::Copy(bytes.data(), bytes.size());
  return m;
}

// Whether the client's messages to the server through a relay show
// `needle` (back: the server's replies, which echo them, on the same
// two-way link).
bool RelaySees(Mode mode, const std::string& needle, bool back) {
  RelayedPair rp(mode);
  Relay& relay = rp.relay;
  Pair& p = rp.pair;
  const int64_t replies_before = p.server->stats().link_messages_sent;
  for (uint64_t rid = 300; rid < 310; ++rid) {
    EXPECT_TRUE(p.client->Send(1, PatternRequest(rid), Soon()).ok());
    EXPECT_TRUE(p.client->ReceiveData(Soon()).ok());
  }
  EXPECT_EQ(relay.connections(), 1);
  EXPECT_GE(p.client->stats().link_messages_sent, 10);
  EXPECT_GE(LinkSentReaches(p.server.get(), replies_before + 10),
            replies_before + 10);
  return relay.captured(back).find(needle) != std::string::npos;
}

TEST(EncryptedLinkTest, TheWireCarriesNoPlaintext) {
  for (bool back : {false, true}) {
    SCOPED_TRACE(back ? "server to client" : "client to server");
    // Control: the same capture of a plaintext link shows the payload.
    EXPECT_TRUE(RelaySees(Mode::kPlain, "PSTRAIN-SECRET-PAYLOAD-", back));
    EXPECT_FALSE(RelaySees(Mode::kAes, "PSTRAIN-SECRET-PAYLOAD-", back));
    EXPECT_FALSE(RelaySees(Mode::kChaCha, "PSTRAIN-SECRET-PAYLOAD-", back));
    EXPECT_FALSE(RelaySees(Mode::kAes, "tok", back));  // Nor the token.
  }
}

// The plaintext sizes of the records in `stream` from `at` on, as the
// length prefixes (in the clear, authenticated) give them.
std::vector<size_t> RecordSizes(const std::string& stream, size_t at) {
  std::vector<size_t> sizes;
  while (at + 4 <= stream.size()) {
    uint32_t n = 0;
    for (int i = 3; i >= 0; --i)
      n = (n << 8) | static_cast<uint8_t>(stream[at + i]);
    sizes.push_back(n);
    at += 4 + n + 16;
  }
  return sizes;
}

// A big frame's first bytes leave after one small record is sealed, and the
// receiver has its last bytes after opening a small one (DirectRecordBytes
// in data_link.cc): a 1 MiB + 12-byte frame goes as 64 KiB, three records
// of 256 KiB, the rest, and 64 KiB; each opened into the registered buffer.
TEST(EncryptedLinkTest, ABigFrameStartsAndEndsWithSmallRecords) {
  RelayedPair rp(Mode::kAes);
  Relay& relay = rp.relay;
  Pair& p = rp.pair;
  // Every byte of the round trips so far went through the relay: the
  // server answered them.
  const size_t before = relay.captured().size();
  const std::vector<size_t> earlier = RecordSizes(relay.captured(), 88);
  size_t at = 88;  // After the handshake's M1 (40 bytes) and M3 (48).
  for (size_t n : earlier) at += 4 + n + 16;
  ASSERT_EQ(at, before) << "the captured stream is not whole records";
  const std::string before_back = relay.captured(true);

  const int64_t floats = (int64_t{1} << 18) + 3;  // 1 MiB + 12 bytes.
  std::vector<float> dest(floats, -1.0f);
  p.client->ExpectReply(900,
                        {absl::MakeSpan(reinterpret_cast<char*>(dest.data()),
                                        floats * sizeof(float))});
  ASSERT_TRUE(p.client->Send(1, Request(900, floats, 7.0f), Soon()).ok());
  auto got = p.client->ReceiveData(Soon());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(Holds(got->frames[0], floats, 7.0f));
  p.client->CancelReply(900);

  const size_t frame = floats * sizeof(float);
  for (bool back : {false, true}) {
    SCOPED_TRACE(back ? "the reply, server to client" : "client to server");
    // Back: after the handshake's M2 (56 bytes) and the records so far.
    size_t from = back ? 56 : before;
    if (back) {
      for (size_t n : RecordSizes(before_back, 56)) from += 4 + n + 16;
      ASSERT_EQ(from, before_back.size());
    }
    const std::vector<size_t> sizes = RecordSizes(relay.captured(back), from);
    // The head (preamble and header) in a record of its own, then the frame.
    ASSERT_EQ(sizes.size(), 7u) << ::testing::PrintToString(sizes);
    EXPECT_LT(sizes[0], size_t{16} << 10);
    EXPECT_THAT(std::vector<size_t>(sizes.begin() + 1, sizes.end()),
                ::testing::ElementsAre(65536, 262144, 262144, 262144,
                                       frame - 2 * 65536 - 3 * 262144, 65536));
  }
}

// `n` requests from `first` on, each answered in turn, all over the link.
void AnsweredOverTheLink(Pair* p, uint64_t first, int n, int64_t floats,
                         float seed) {
  const int64_t sent_before = p->client->stats().link_messages_sent;
  for (uint64_t rid = first; rid < first + n; ++rid) {
    ASSERT_TRUE(p->client->Send(1, Request(rid, floats, seed), Soon()).ok());
    absl::StatusOr<Message> got = p->client->ReceiveData(Soon());
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->header.request_id(), rid);
    EXPECT_TRUE(Holds(got->frames[0], floats, seed));
  }
  EXPECT_EQ(p->client->stats().link_messages_sent, sent_before + n);
}

TEST(EncryptedLinkTest, ATamperedRecordClosesTheLinkAndZeroMqTakesOver) {
  RelayedPair rp(Mode::kAes);
  Relay& relay = rp.relay;
  Pair& p = rp.pair;
  const int64_t sent_before = p.client->stats().link_messages_sent;
  // Flip a byte inside the big frame of the next message.
  relay.FlipAfter(1 << 20);
  ASSERT_TRUE(p.client->Send(1, Request(900, 1 << 20, 9), Soon()).ok());
  for (int i = 0; i < 500 && p.server->stats().link_auth_failures == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(p.server->stats().link_auth_failures, 1);
  EXPECT_GE(p.server->stats().link_errors, 1);
  // Later messages arrive: once the client found its link broken, through
  // ZeroMQ.
  bool replied_after_break = false;
  for (uint64_t rid = 901; rid < 1100 && !replied_after_break; ++rid) {
    const bool broken = p.client->stats().link_errors > 0;
    ASSERT_TRUE(p.client->Send(1, Request(rid, 1000, 1), Soon()).ok());
    auto got = p.client->ReceiveData(absl::Now() + absl::Milliseconds(500));
    if (got.ok() && broken && got->header.request_id() == rid) {
      replied_after_break = true;
    }
  }
  EXPECT_TRUE(replied_after_break);
  EXPECT_FALSE(p.SawRequest(900));
  EXPECT_GE(p.client->stats().link_messages_sent, sent_before);
  // The client connects its link again (after 0.5 s), through the relay,
  // which flips nothing more: requests go over a link again and are
  // answered.
  for (int i = 0; i < 1000 && p.client->stats().link_reconnects == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_EQ(p.client->stats().link_reconnects, 1);
  EXPECT_EQ(relay.connections(), 2);
  AnsweredOverTheLink(&p, 2000, 10, 1000, 2);
  EXPECT_EQ(p.server->stats().link_auth_failures, 1);
}

// A link cut under a running client (both ends alive) is connected again:
// the messages the kernel had taken are lost, as ZeroMQ loses them for a
// broken connection; later ones go through ZeroMQ, then over the new link.
TEST_P(LinkModeTest, ACutLinkIsConnectedAgain) {
  RelayedPair rp(GetParam());
  Relay& relay = rp.relay;
  Pair& p = rp.pair;
  relay.Cut();
  // Requests until the client finds its link broken and connects it again;
  // each waits briefly (a request on the cut connection gets no answer).
  uint64_t rid = 3000;
  const absl::Time give_up = absl::Now() + absl::Seconds(20);
  while (absl::Now() < give_up && p.client->stats().link_reconnects == 0) {
    ASSERT_TRUE(p.client->Send(1, Request(rid++, 256, 1), Soon()).ok());
    (void)p.client->ReceiveData(absl::Now() + absl::Milliseconds(20));
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_EQ(p.client->stats().link_reconnects, 1);
  EXPECT_GE(p.client->stats().link_errors, 1);
  EXPECT_EQ(relay.connections(), 2);
  // Drain replies still on their way, then every request is answered
  // over the new link.
  while (p.client->ReceiveData(absl::Now() + absl::Milliseconds(300)).ok()) {
  }
  AnsweredOverTheLink(&p, 5000, 20, 4096, 3);
}

// Two-way links: the client connects (RelayedPair), the server adopts the
// connection, and every message either way then travels on that one
// connection: the relay sees one connection, replies come back through it.
TEST_P(LinkModeTest, OneConnectionCarriesBothDirections) {
  RelayedPair rp(GetParam());
  Relay& relay = rp.relay;
  Pair& p = rp.pair;
  const size_t back_before = relay.captured(true).size();
  const int64_t replies_before = p.server->stats().link_messages_sent;
  AnsweredOverTheLink(&p, 100, 20, 10000, 4);
  EXPECT_GE(LinkSentReaches(p.server.get(), replies_before + 20),
            replies_before + 20);
  // 20 replies of 40,000 bytes each came back through the relay.
  EXPECT_GE(relay.captured(true).size(), back_before + 20 * 40000);
  EXPECT_EQ(relay.connections(), 1);
  EXPECT_EQ(p.server->stats().links_adopted, 1);
  EXPECT_EQ(p.client->stats().link_errors + p.server->stats().link_errors, 0);
}

// Where either end (or both) has two-way links off, each node connects a
// link of its own and nothing is adopted; messages still arrive.
TEST_P(LinkModeTest, OneWayLinksWhenEitherEndTurnsTwoWayOff) {
  for (int off : {1, 2, 3}) {  // Bit 0: the server's off, bit 1: client's.
    SCOPED_TRACE(absl::StrCat("two-way off on ", off == 1   ? "the server"
                                                 : off == 2 ? "the client"
                                                            : "both"));
    TransportOptions so = Options(GetParam()), co = Options(GetParam());
    so.data_link_two_way = (off & 1) == 0;
    co.data_link_two_way = (off & 2) == 0;
    Pair p(so, co);
    p.WaitForLinks();
    AnsweredOverTheLink(&p, 100, 10, 1000, 5);
    EXPECT_EQ(p.server->stats().links_adopted, 0);
    EXPECT_EQ(p.client->stats().links_adopted, 0);
  }
}

// Reconnect() (--recovery=replace: another node took the peer's id)
// closes the links to and from the old peer: the old node's link breaks
// (with two-way links its writer on the closed connection goes down at
// once; with one-way links its own link breaks when it next writes), and
// the moved id's messages reach the new node.
TEST_P(LinkModeTest, ReconnectClosesTheOldPeersLinks) {
  for (bool two_way : {true, false}) {
    SCOPED_TRACE(two_way ? "two-way links" : "one-way links");
    TransportOptions so = Options(GetParam()), co = Options(GetParam());
    so.data_link_two_way = co.data_link_two_way = two_way;
    Pair p(so, co);
    p.WaitForLinks();
    const int64_t errors_before = p.server->stats().link_errors;
    auto c = Make(co);
    ASSERT_TRUE(c->Connect(2, p.client->address()).ok());
    ASSERT_TRUE(p.client->Reconnect(1, c->address()).ok());
    const absl::Time give_up = absl::Now() + absl::Seconds(20);
    for (uint64_t rid = 8000; absl::Now() < give_up &&
                              p.server->stats().link_errors == errors_before;
         ++rid) {
      ASSERT_TRUE(p.server->Send(2, Request(rid, 4, 0), Soon()).ok());
      absl::SleepFor(absl::Milliseconds(10));
    }
    EXPECT_GT(p.server->stats().link_errors, errors_before);
    for (uint64_t rid = 7000; rid < 7010; ++rid) {
      ASSERT_TRUE(p.client->Send(1, Request(rid, 1000, 3), Soon()).ok());
      absl::StatusOr<Message> got = c->ReceiveData(Soon());
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(got->header.request_id(), rid);
      EXPECT_TRUE(Holds(got->frames[0], 1000, 3));
    }
    EXPECT_FALSE(p.SawRequest(7000));
  }
}

// The connector's reverse side of a link (LinkReader::Reverse) on one end
// of a socket pair: a peer that never adopted closes quietly, a hello that
// names another node is refused, and the adopter's hello and messages are
// read.
TEST(DataLinkTest, TheConnectorReadsOnlyItsPeersHelloBack) {
  ReplyDests dests;
  auto reader_on = [&](int* other) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    *other = sv[1];
    return LinkReader::Reverse(sv[0], "tok", int64_t{1} << 30, &dests,
                               "10.0.0.2:5000", nullptr);
  };
  auto read = [](LinkReader* r, std::vector<Frame>* parts, std::string* err) {
    LinkReader::State st = LinkReader::State::kAgain;
    for (int i = 0; i < 100 && st == LinkReader::State::kAgain; ++i) {
      st = r->Read(parts, err);
      if (st == LinkReader::State::kAgain) {
        pollfd pf{r->fd(), POLLIN, 0};
        poll(&pf, 1, 10);
        r->Polled();
      }
    }
    return st;
  };
  std::vector<Frame> parts;
  std::string error;
  {  // Never adopted: the peer closes without a byte.
    int other;
    std::unique_ptr<LinkReader> r = reader_on(&other);
    close(other);
    EXPECT_EQ(read(r.get(), &parts, &error), LinkReader::State::kClosed)
        << error;
  }
  {  // Another node's hello.
    int other;
    std::unique_ptr<LinkReader> r = reader_on(&other);
    const std::string b = HelloAndMessage("10.0.0.3:5000", 1, 10);
    ASSERT_EQ(write(other, b.data(), b.size()), static_cast<ssize_t>(b.size()));
    EXPECT_EQ(read(r.get(), &parts, &error), LinkReader::State::kRefused);
    EXPECT_THAT(error, ::testing::HasSubstr("another node"));
    close(other);
  }
  {  // The adopter's hello, then a message; then a close between messages.
    int other;
    std::unique_ptr<LinkReader> r = reader_on(&other);
    const std::string b = HelloAndMessage("10.0.0.2:5000", 7, 10);
    ASSERT_EQ(write(other, b.data(), b.size()), static_cast<ssize_t>(b.size()));
    ASSERT_EQ(read(r.get(), &parts, &error), LinkReader::State::kMessage)
        << error;
    EXPECT_EQ(r->identity(), "10.0.0.2:5000");
    EXPECT_FALSE(r->two_way());  // The adopter's hello sets no flag.
    absl::StatusOr<Message> m = Decode(std::move(parts), "tok");
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->header.request_id(), 7u);
    EXPECT_TRUE(Holds(m->frames[0], 10, 0));
    close(other);
    EXPECT_EQ(read(r.get(), &parts, &error), LinkReader::State::kClosed)
        << error;
  }
}

// The two directions of an encrypted link have keys of their own: what
// the listener seals to the connector (k_r) opens only with the
// connector's reverse cipher, not with the forward one, and vice versa.
TEST(EncryptedLinkTest, EachDirectionHasItsOwnKey) {
  const TransportOptions o = Options(Mode::kAes);
  std::unique_ptr<LinkKeys> keys = KeysOf(o, o.curve_keys);
  LinkConnectorHandshake c(keys.get());
  LinkListenerHandshake l(keys.get());
  std::string m2, m3;
  ASSERT_TRUE(l.OnM1(c.m1().data(), &m2).ok());
  std::unique_ptr<LinkRecordCipher> c_open, l_seal;
  auto c_seal = c.Finish(m2.data(), &m3, &c_open);
  ASSERT_TRUE(c_seal.ok()) << c_seal.status();
  auto l_open = l.OnM3(m3.data(), &l_seal);
  ASSERT_TRUE(l_open.ok()) << l_open.status();
  ASSERT_NE(c_open, nullptr);
  ASSERT_NE(l_seal, nullptr);
  const std::string msg = "the listener's reply";
  std::string rec(msg.size() + kLinkRecordOverhead, '\0');
  std::string out(msg.size(), '\0');
  // Back: the listener seals, the connector's forward cipher cannot open
  // it (its own direction's key), its reverse one can.
  l_seal->Seal(msg.data(), msg.size(), &rec[0]);
  std::unique_ptr<LinkRecordCipher>& forward = *c_seal;
  EXPECT_FALSE(forward->Open(rec.data(), msg.size(), &out[0]));
  EXPECT_TRUE(c_open->Open(rec.data(), msg.size(), &out[0]));
  EXPECT_EQ(out, msg);
  // Forward: the connector seals; the listener's opener takes it (its
  // first record: counters are per direction).
  (*c_seal)->Seal(msg.data(), msg.size(), &rec[0]);
  EXPECT_TRUE((*l_open)->Open(rec.data(), msg.size(), &out[0]));
  EXPECT_EQ(out, msg);
}

// A record altered on its way back (a reply on the two-way link) fails its
// tag at the client: the client drops the connection, which takes down the
// server's direction too; replies go through ZeroMQ until the client
// connects again, and the server adopts the new connection.
TEST(EncryptedLinkTest, ATamperedReplyClosesTheTwoWayLinkAndItComesBack) {
  RelayedPair rp(Mode::kAes);
  Relay& relay = rp.relay;
  Pair& p = rp.pair;
  relay.FlipAfter(1 << 20, /*back=*/true);
  ASSERT_TRUE(p.client->Send(1, Request(900, 1 << 20, 9), Soon()).ok());
  for (int i = 0; i < 500 && p.client->stats().link_auth_failures == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(p.client->stats().link_auth_failures, 1);
  // The server finds its direction gone (its reader sees the close).
  for (int i = 0; i < 500 && p.server->stats().link_errors == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_GE(p.server->stats().link_errors, 1);
  // The altered reply is never delivered; later requests are answered.
  for (uint64_t rid = 901; rid < 911; ++rid) {
    ASSERT_TRUE(p.client->Send(1, Request(rid, 1000, 1), Soon()).ok());
    absl::StatusOr<Message> got = p.client->ReceiveData(Soon());
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->header.request_id(), rid);
  }
  for (int i = 0; i < 1000 && (p.client->stats().link_reconnects == 0 ||
                               p.server->stats().links_adopted < 2);
       ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(p.client->stats().link_reconnects, 1);
  EXPECT_EQ(p.server->stats().links_adopted, 2);
  EXPECT_EQ(relay.connections(), 2);
  const int64_t replies_before = p.server->stats().link_messages_sent;
  AnsweredOverTheLink(&p, 2000, 10, 1000, 2);
  EXPECT_GE(LinkSentReaches(p.server.get(), replies_before + 10),
            replies_before + 10);
  EXPECT_EQ(p.server->stats().link_auth_failures, 0);
}

}  // namespace
}  // namespace transport
}  // namespace pstrain
