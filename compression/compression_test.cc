#include "compression/compression.h"

#include <cstring>
#include <random>
#include <vector>

#include "compression/codec.h"
#include "gtest/gtest.h"

namespace pstrain {
namespace compression {
namespace {

using transport::Frame;
using transport::Message;

TEST(ParseTest, MxnetSyntax) {
  auto c = Parse("type=2bit,threshold=0.5", kDefaultMinBytes);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->type(), proto::TWO_BIT);
  EXPECT_EQ(c->threshold(), 0.5f);
  EXPECT_EQ(c->min_bytes(), kDefaultMinBytes);
  EXPECT_EQ(Describe(*c), "type=2bit,threshold=0.5");
  EXPECT_EQ(Parse("type=2bit", 0)->threshold(), 0.5f);
  EXPECT_EQ(Parse("type=fp16", 0)->type(), proto::FP16);
  EXPECT_EQ(Parse("type=onebit", 0)->type(), proto::ONEBIT);
  EXPECT_EQ(Parse("", 0)->type(), proto::RAW_FLOAT32);
  EXPECT_EQ(Parse("type=none", 0)->type(), proto::RAW_FLOAT32);
}

TEST(ParseTest, RefusesWhatItCannotRead) {
  for (const char* bad :
       {"type=3bit", "type=2bit,threshold=0", "type=2bit,threshold=-1",
        "type=2bit,threshold=x", "type=2bit,threshold=inf",
        "type=fp16,threshold=0.5", "kind=2bit", "type"}) {
    auto c = Parse(bad, 0);
    EXPECT_FALSE(c.ok()) << bad;
    EXPECT_NE(c.status().message().find("gradient_compression"),
              std::string::npos)
        << c.status();
  }
  EXPECT_FALSE(Parse("type=fp16", -1).ok());
}

TEST(EncodingTest, SmallArraysAndMetricKeysGoRaw) {
  auto c = *Parse("type=2bit,threshold=1", 1024);
  EXPECT_EQ(PushEncoding(c, 3, 256), proto::TWO_BIT);
  EXPECT_EQ(PushEncoding(c, 3, 255), proto::RAW_FLOAT32);
  EXPECT_EQ(PushEncoding(c, -1, 1 << 20), proto::RAW_FLOAT32);
  EXPECT_EQ(PullEncoding(c, 3, 1 << 20), proto::RAW_FLOAT32);
  auto h = *Parse("type=fp16", 1024);
  EXPECT_EQ(PullEncoding(h, 3, 1 << 20), proto::FP16);
  EXPECT_EQ(PullEncoding(h, 3, 10), proto::RAW_FLOAT32);
}

// The worker encodes slices of one array; the residual carries over per
// element, whatever the slicing, as MXNet's per-element rule.
TEST(WorkerCodecTest, SlicedPushesMatchWholeArray) {
  auto c = *Parse("type=2bit,threshold=0.5", 0);
  WorkerCodec sliced(c), whole(c);
  std::mt19937 rng(7);
  std::normal_distribution<float> d(0, 0.4f);
  const int64_t n = 1000;
  for (int round = 0; round < 3; ++round) {
    std::vector<float> g(n);
    for (float& x : g) x = d(rng);
    Frame a = sliced.EncodePush(5, n, 0, absl::MakeConstSpan(g.data(), 480),
                                proto::TWO_BIT, nullptr);
    Frame b = sliced.EncodePush(5, n, 480,
                                absl::MakeConstSpan(g.data() + 480, n - 480),
                                proto::TWO_BIT, nullptr);
    Frame w =
        whole.EncodePush(5, n, 0, g, proto::TWO_BIT, nullptr);  // One slice.
    std::vector<float> da(480), db(n - 480), dw(n);
    Dequantize2Bit(reinterpret_cast<const uint8_t*>(a.data()), 480, 0.5f,
                   da.data());
    Dequantize2Bit(reinterpret_cast<const uint8_t*>(b.data()), n - 480, 0.5f,
                   db.data());
    Dequantize2Bit(reinterpret_cast<const uint8_t*>(w.data()), n, 0.5f,
                   dw.data());
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(i < 480 ? da[i] : db[i - 480], dw[i]) << i;
    }
  }
}

// What reaches the server over many rounds tracks the true sum (error
// feedback): the residual stays bounded by the threshold.
TEST(WorkerCodecTest, ErrorFeedbackKeepsTheSumForEveryType) {
  for (const char* spec : {"type=2bit,threshold=0.5", "type=onebit"}) {
    auto c = *Parse(spec, 0);
    WorkerCodec codec(c);
    Message m;
    std::mt19937 rng(8);
    std::normal_distribution<float> d(0, 0.1f);
    const int64_t n = 300;
    std::vector<double> sent(n, 0), truth(n, 0);
    for (int round = 0; round < 50; ++round) {
      std::vector<float> g(n);
      for (int64_t i = 0; i < n; ++i) truth[i] += g[i] = d(rng);
      Message msg;
      msg.header.add_keys(1);
      msg.header.add_offsets(0);
      msg.header.add_lengths(n);
      msg.header.add_encodings(c.type());
      msg.frames.push_back(codec.EncodePush(1, n, 0, g, c.type(), nullptr));
      ASSERT_TRUE(CheckEncodings(c, msg.header).ok());
      DecodePush(c, &msg);
      EXPECT_EQ(msg.header.encodings_size(), 0);
      auto v = msg.frames[0].As<float>();
      ASSERT_EQ(v.size(), static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) sent[i] += v[i];
    }
    double worst = 0;
    for (int64_t i = 0; i < n; ++i)
      worst = std::max(worst, std::abs(sent[i] - truth[i]));
    // 2bit: |residual| < threshold. onebit: bounded by a few scales.
    EXPECT_LT(worst, 1.0) << spec;
  }
}

TEST(ServerSideTest, RefusesEncodingsTheJobDoesNotUse) {
  auto none = *Parse("", 0);
  auto fp16 = *Parse("type=fp16", 0);
  proto::Header h;
  h.add_keys(9);
  h.add_offsets(16);
  h.add_lengths(4);
  h.add_encodings(proto::TWO_BIT);
  absl::Status s = CheckEncodings(none, h);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("key 9 offset 16 was pushed as 2bit"),
            std::string::npos)
      << s;
  EXPECT_FALSE(CheckEncodings(fp16, h).ok());
  h.set_encodings(0, proto::FP16);
  EXPECT_TRUE(CheckEncodings(fp16, h).ok());
  h.set_encodings(0, proto::RAW_FLOAT32);
  EXPECT_TRUE(CheckEncodings(none, h).ok());
  h.add_reply_encodings(proto::FP16);
  EXPECT_FALSE(CheckEncodings(none, h).ok());
  EXPECT_TRUE(CheckEncodings(fp16, h).ok());
  h.add_encodings(proto::RAW_FLOAT32);  // Two encodings for one key.
  EXPECT_FALSE(CheckEncodings(fp16, h).ok());
}

TEST(ReplyTest, Fp16RoundTripAndSizeErrors) {
  std::vector<float> w = {1.0f, -2.5f, 1e-6f, 70000.0f, 0.1f};
  std::vector<float> copy = w;
  Frame raw = Frame::Copy(copy.data(), copy.size() * 4);
  Frame f = EncodeReply(proto::FP16, std::move(raw));
  ASSERT_EQ(f.size(), 10u);
  std::vector<float> out(5);
  ASSERT_TRUE(DecodeReply(proto::FP16, f, 3, 0, absl::MakeSpan(out)).ok());
  for (size_t i = 0; i < w.size(); ++i) {
    EXPECT_EQ(out[i], HalfToFloat1(FloatToHalf1(w[i]))) << i;
  }
  std::vector<float> four(4);
  absl::Status s = DecodeReply(proto::FP16, f, 3, 8, absl::MakeSpan(four));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("key 3 at 8 has 10 bytes"), std::string::npos)
      << s;
  EXPECT_FALSE(DecodeReply(proto::TWO_BIT, f, 3, 0, absl::MakeSpan(out)).ok());
  Frame r = EncodeReply(proto::RAW_FLOAT32, Frame::Copy(w.data(), 20));
  ASSERT_TRUE(
      DecodeReply(proto::RAW_FLOAT32, r, 3, 0, absl::MakeSpan(out)).ok());
  EXPECT_EQ(out, w);
}

}  // namespace
}  // namespace compression
}  // namespace pstrain
