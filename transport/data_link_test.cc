// The TCP data link (transport/data_link.h) between real transports over
// loopback, and hostile input on a raw socket.
#include "transport/data_link.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "transport/transport.h"
#include "util/mutex.h"

namespace pstrain {
namespace transport {
namespace {

absl::Time Soon() { return absl::Now() + absl::Seconds(20); }

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
  std::unique_ptr<Transport> server = Make(), client = Make();
  Mutex mu;
  std::vector<uint64_t> order ABSL_GUARDED_BY(mu);
  Pair() {
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
  ~Pair() { server->SetDataHandler(nullptr); }
  size_t Seen() {
    MutexLock lock(&mu);
    return order.size();
  }
  // Round trips until both directions go through links.
  void WaitForLinks() {
    for (uint64_t rid = 1; rid < 200; ++rid) {
      ASSERT_TRUE(client->Send(1, Request(rid, 4, 0), Soon()).ok());
      ASSERT_TRUE(client->ReceiveData(Soon()).ok());
      if (client->stats().link_messages_sent > 0 &&
          server->stats().link_messages_sent > 0) {
        return;
      }
    }
    FAIL() << "the data links never came up";
  }
};

TEST(DataLinkTest, ManySizesBothWaysInOrder) {
  Pair p;
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
}

TEST(DataLinkTest, ReplyLandsInTheRegisteredBuffer) {
  Pair p;
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

TEST(DataLinkTest, ConcurrentRequestsEachGetTheirReply) {
  Pair p;
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
  EXPECT_LT(absl::Now() - t0, absl::Seconds(30));
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
  bool Write(const std::string& b) {
    return send(fd_, b.data(), b.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(b.size());
  }
  // Whether the other side closed within `ms`.
  bool ClosedByPeer(int ms) {
    char buf[256];
    for (int waited = 0; waited < ms; waited += 10) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 10) > 0) {
        const ssize_t n = recv(fd_, buf, sizeof(buf), MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN)) return true;
      }
    }
    return false;
  }

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

TEST(DataLinkTest, NoLinkWithCurveOrWhenOff) {
  TransportOptions o;
  o.token = "tok";
  ASSERT_TRUE(UseJobCurveKeys(&o).ok());
  auto c = Transport::Create(o);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)->data_port(), 0);
  TransportOptions off;
  off.data_link = false;
  EXPECT_EQ(Make(off)->data_port(), 0);
}

}  // namespace
}  // namespace transport
}  // namespace pstrain
