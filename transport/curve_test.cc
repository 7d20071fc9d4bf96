// ZeroMQ CURVE on the transport: job keys from the token, traffic between
// nodes of one job, and strangers refused (a key the job does not know, a
// plaintext peer, another job's token, a stranger squatting a node's
// routing id).
#include "transport/curve.h"

#include <zmq.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "transport/transport.h"

namespace pstrain {
namespace transport {
namespace {

// A deadline, not a timing: under --config=tsan about one run in twenty
// sees a CURVE handshake stall until ZeroMQ retries it, and the first
// message then arrives after 15 to 18 s (never seen without TSan in 100
// runs).
absl::Time Soon() { return absl::Now() + absl::Seconds(45); }

TransportOptions CurveOptions(const std::string& token) {
  TransportOptions o;
  o.token = token;
  o.curve = true;
  auto keys = DeriveJobKeys(token);
  EXPECT_TRUE(keys.ok()) << keys.status();
  o.curve_keys = *keys;
  return o;
}

std::unique_ptr<Transport> Make(const TransportOptions& o) {
  auto t = Transport::Create(o);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

Message Push(int64_t key, const std::vector<float>& v) {
  Message m;
  m.header.set_type(proto::PUSH);
  m.header.add_keys(key);
  m.header.add_offsets(0);
  m.header.add_lengths(static_cast<int64_t>(v.size()));
  m.frames.push_back(Frame::Copy(v.data(), v.size() * sizeof(float)));
  return m;
}

// A hand-made ZeroMQ DEALER: plaintext, or CURVE with the given keys,
// optionally claiming a routing id.
class Stranger {
 public:
  Stranger(const std::string& host_port, const CurveKeyPair* keys,
           const std::string& server_key, const std::string& routing_id = "") {
    ctx_ = zmq_ctx_new();
    sock_ = zmq_socket(ctx_, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(sock_, ZMQ_LINGER, &linger, sizeof(linger));
    if (!routing_id.empty()) {
      zmq_setsockopt(sock_, ZMQ_ROUTING_ID, routing_id.data(),
                     routing_id.size());
    }
    if (keys != nullptr) {
      zmq_setsockopt(sock_, ZMQ_CURVE_SERVERKEY, server_key.c_str(), 41);
      zmq_setsockopt(sock_, ZMQ_CURVE_PUBLICKEY, keys->public_key.c_str(), 41);
      zmq_setsockopt(sock_, ZMQ_CURVE_SECRETKEY, keys->secret_key.c_str(), 41);
    }
    zmq_connect(sock_, ("tcp://" + host_port).c_str());
  }
  ~Stranger() {
    zmq_close(sock_);
    zmq_ctx_term(ctx_);
  }
  // Sends a well-formed message carrying the right token: only the
  // handshake can stop it.
  void SendWithToken(const std::string& token) {
    proto::Header h;
    h.set_type(proto::BARRIER);
    h.set_token(token);
    const std::string bytes = h.SerializeAsString();
    zmq_send(sock_, bytes.data(), bytes.size(), ZMQ_DONTWAIT);
  }

 private:
  void* ctx_;
  void* sock_;
};

TEST(CurveTest, JobKeysComeFromTheTokenAlone) {
  auto a = DeriveJobKeys("token-1"), b = DeriveJobKeys("token-1"),
       c = DeriveJobKeys("token-2");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->public_key, b->public_key);
  EXPECT_EQ(a->secret_key, b->secret_key);
  EXPECT_NE(a->public_key, c->public_key);
  EXPECT_EQ(a->public_key.size(), 40u);
  EXPECT_EQ(a->secret_key.size(), 40u);
  char derived[41];
  ASSERT_EQ(zmq_curve_public(derived, a->secret_key.c_str()), 0);
  EXPECT_EQ(std::string(derived), a->public_key);
  // No token (a job without --token_file): the empty token's keys.
  ASSERT_TRUE(DeriveJobKeys("").ok());
  EXPECT_NE(DeriveJobKeys("")->public_key, a->public_key);
}

TEST(CurveTest, NodesOfOneJobTalkBothWays) {
  auto a = Make(CurveOptions("job-token")), b = Make(CurveOptions("job-token"));
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->Connect(1, b->address()).ok());
  ASSERT_TRUE(b->Connect(0, a->address()).ok());
  std::vector<float> big(1 << 18, 1.5f);
  ASSERT_TRUE(a->Send(1, Push(7, big), Soon()).ok());
  auto got = b->Receive(Soon());
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->frames.size(), 1u);
  EXPECT_EQ(got->frames[0].As<float>()[12345], 1.5f);
  ASSERT_TRUE(b->Send(0, Push(8, {1, 2, 3}), Soon()).ok());
  ASSERT_TRUE(a->Receive(Soon()).ok());
  EXPECT_EQ(a->stats().refused_unauthenticated, 0);
  EXPECT_EQ(b->stats().refused_unauthenticated, 0);
}

TEST(CurveTest, StrangersAreRefusedBeforeAnythingIsRead) {
  const std::string token = "job-token";
  auto node = Make(CurveOptions(token));
  ASSERT_TRUE(node);
  const CurveKeyPair job = *DeriveJobKeys(token);
  // A random key, even one that knows the job's public (server) key and
  // the token itself, is not admitted: its message is never read.
  auto random = NewKeyPair();
  ASSERT_TRUE(random.ok());
  {
    Stranger s(node->address(), &*random, job.public_key);
    s.SendWithToken(token);
    absl::SleepFor(absl::Milliseconds(300));
  }
  // Another job's keys.
  const CurveKeyPair other = *DeriveJobKeys("other-token");
  {
    Stranger s(node->address(), &other, job.public_key);
    s.SendWithToken(token);
    absl::SleepFor(absl::Milliseconds(300));
  }
  // Plaintext: the handshake fails (no ZAP request at all).
  {
    Stranger s(node->address(), nullptr, "");
    s.SendWithToken(token);
    absl::SleepFor(absl::Milliseconds(300));
  }
  EXPECT_EQ(
      node->Receive(absl::Now() + absl::Milliseconds(300)).status().code(),
      absl::StatusCode::kDeadlineExceeded);
  const TransportStats st = node->stats();
  EXPECT_EQ(st.received, 0);
  EXPECT_EQ(st.refused_unauthenticated, 2);
  EXPECT_EQ(st.dropped_bad_token + st.dropped_malformed, 0);
}

TEST(CurveTest, AStrangerCannotSquatANodesRoutingId) {
  const std::string token = "job-token";
  auto scheduler = Make(CurveOptions(token));
  auto node = Make(CurveOptions(token));
  ASSERT_TRUE(scheduler && node);
  // The stranger connects first under the node's (predictable) routing id.
  auto random = NewKeyPair();
  ASSERT_TRUE(random.ok());
  Stranger squatter(scheduler->address(), &*random,
                    DeriveJobKeys(token)->public_key, node->address());
  squatter.SendWithToken(token);
  absl::SleepFor(absl::Milliseconds(300));
  // The node's own messages still arrive.
  ASSERT_TRUE(node->Connect(0, scheduler->address()).ok());
  ASSERT_TRUE(node->Send(0, Push(1, {4, 5}), Soon()).ok());
  auto got = scheduler->Receive(Soon());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->header.keys(0), 1);
  EXPECT_GE(scheduler->stats().refused_unauthenticated, 1);
}

TEST(CurveTest, APlaintextNodeCannotJoinACurveJob) {
  auto node = Make(CurveOptions("job-token"));
  TransportOptions plain;
  plain.token = "job-token";
  auto sender = Make(plain);
  ASSERT_TRUE(node && sender);
  ASSERT_TRUE(sender->Connect(0, node->address()).ok());
  ASSERT_TRUE(sender->Send(0, Push(1, {1}), Soon()).ok());
  EXPECT_EQ(
      node->Receive(absl::Now() + absl::Milliseconds(500)).status().code(),
      absl::StatusCode::kDeadlineExceeded);
}

TEST(CurveTest, BadKeysAreAnError) {
  TransportOptions o = CurveOptions("t");
  o.curve_accepted_keys.insert("not-a-key");
  auto t = Transport::Create(o);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()),
              ::testing::HasSubstr("not a Z85 CURVE public key"));
}

// A node's --curve_keys_dir made from WriteCurveKeysDir's output: the
// server key, its own key as node.key, and the public keys of `clients`.
std::string NodeDir(const std::string& all, const std::string& name,
                    const std::vector<std::string>& clients) {
  const std::string dir = all + "-" + name;
  std::system(("rm -rf " + dir + " && mkdir -p " + dir + "/clients && cp -p " +
               all + "/server.key " + dir + "/ && cp -p " + all + "/" + name +
               ".key " + dir + "/node.key")
                  .c_str());
  for (const auto& c : clients) {
    std::system(
        ("cp " + all + "/clients/" + c + ".pub " + dir + "/clients/").c_str());
  }
  return dir;
}

TEST(CurveTest, PerNodeKeysAdmitTheListedNodesOnly) {
  const std::string all = std::string(std::getenv("TEST_TMPDIR")) + "/keys";
  ASSERT_TRUE(WriteCurveKeysDir(all, {"a", "b", "c"}).ok());
  auto make = [&](const std::string& name,
                  const std::vector<std::string>& clients) {
    TransportOptions o;
    o.token = "tok";
    absl::Status s = UseCurveKeysDir(NodeDir(all, name, clients), &o);
    EXPECT_TRUE(s.ok()) << s;
    return Make(o);
  };
  // a admits a and b; c's key is not among a's clients (revoked).
  auto a = make("a", {"a", "b"}), b = make("b", {"a", "b", "c"}),
       c = make("c", {"a", "b", "c"});
  ASSERT_TRUE(a && b && c);
  ASSERT_TRUE(b->Connect(0, a->address()).ok());
  ASSERT_TRUE(a->Connect(1, b->address()).ok());
  ASSERT_TRUE(c->Connect(0, a->address()).ok());
  ASSERT_TRUE(c->Send(0, Push(9, {9}), Soon()).ok());
  ASSERT_TRUE(b->Send(0, Push(1, {1}), Soon()).ok());
  auto got = a->Receive(Soon());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->header.keys(0), 1);
  ASSERT_TRUE(a->Send(1, Push(2, {2}), Soon()).ok());
  ASSERT_TRUE(b->Receive(Soon()).ok());
  EXPECT_EQ(a->Receive(absl::Now() + absl::Milliseconds(500)).status().code(),
            absl::StatusCode::kDeadlineExceeded);  // c's message never came in.
  EXPECT_GE(a->stats().refused_unauthenticated, 1);
  // A node with the token's keys cannot join a job of per-node keys.
  auto token_node = Make(CurveOptions("tok"));
  ASSERT_TRUE(token_node->Connect(0, a->address()).ok());
  ASSERT_TRUE(token_node->Send(0, Push(3, {3}), Soon()).ok());
  EXPECT_EQ(a->Receive(absl::Now() + absl::Milliseconds(500)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST(CurveTest, KeysDirErrorsNameTheFile) {
  const std::string all = std::string(std::getenv("TEST_TMPDIR")) + "/bad";
  ASSERT_TRUE(WriteCurveKeysDir(all, {"a"}).ok());
  const std::string dir = NodeDir(all, "a", {"a"});
  ASSERT_TRUE(ReadCurveKeysDir(dir).ok());
  std::system(("chmod 644 " + dir + "/node.key").c_str());
  auto open = ReadCurveKeysDir(dir);
  EXPECT_EQ(open.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(open.status().message()),
              ::testing::HasSubstr(
                  dir + "/node.key: a secret key file must not be readable"));
  std::system(("chmod 600 " + dir + "/node.key && rm " + dir + "/clients/a.pub")
                  .c_str());
  EXPECT_THAT(std::string(ReadCurveKeysDir(dir).status().message()),
              ::testing::HasSubstr("no *.pub file"));
  std::system(("echo nonsense > " + dir + "/clients/x.pub").c_str());
  EXPECT_THAT(std::string(ReadCurveKeysDir(dir).status().message()),
              ::testing::HasSubstr("x.pub: not a Z85 CURVE public key"));
  EXPECT_EQ(ReadCurveKeysDir(all + "-missing").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace transport
}  // namespace pstrain
