#include "transport/wire.h"

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pstrain {
namespace transport {
namespace {

using ::testing::HasSubstr;

constexpr char kToken[] = "job-token";

// A PUSH of `keys` slices of 2 floats each.
proto::Header Push(int keys = 1) {
  proto::Header h;
  h.set_type(proto::PUSH);
  h.set_token(kToken);
  for (int i = 0; i < keys; ++i) {
    h.add_keys(i);
    h.add_offsets(0);
    h.add_lengths(2);
  }
  return h;
}

Frame HeaderFrame(const proto::Header& h) {
  std::string s;
  h.SerializeToString(&s);
  return Frame::Own(std::move(s));
}

Frame Floats(size_t n) {
  return Frame::Own(std::string(n * sizeof(float), '\0'));
}

std::vector<Frame> Parts(const proto::Header& h, std::vector<Frame> data) {
  std::vector<Frame> parts;
  parts.push_back(HeaderFrame(h));
  for (Frame& f : data) parts.push_back(std::move(f));
  return parts;
}

std::vector<Frame> Parts(const proto::Header& h, size_t frames,
                         size_t floats_each = 2) {
  std::vector<Frame> data;
  for (size_t i = 0; i < frames; ++i) data.push_back(Floats(floats_each));
  return Parts(h, std::move(data));
}

// Decodes and expects an error of `code` whose text contains `what`.
void ExpectRefused(std::vector<Frame> parts, absl::StatusCode code,
                   const std::string& what) {
  auto m = Decode(std::move(parts), kToken);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), code) << m.status();
  EXPECT_THAT(std::string(m.status().message()), HasSubstr(what));
}

// A PUSH whose frame `f` of 2 floats travels in the sender's arena.
proto::Header ShmPush(int keys, uint32_t f) {
  proto::Header h = Push(keys);
  h.mutable_shm_arena()->set_pid(1);
  proto::ShmFrame* d = h.add_shm_frames();
  d->set_frame(f);
  d->set_offset(4096);
  d->set_size(2 * sizeof(float));
  return h;
}

std::vector<Frame> WithPlaceholder(const proto::Header& h, int keys,
                                   uint32_t f) {
  std::vector<Frame> data;
  for (int i = 0; i < keys; ++i)
    data.push_back(i == static_cast<int>(f) ? Frame() : Floats(2));
  return Parts(h, std::move(data));
}

// --- What decodes.

TEST(WireTest, DataFramesAreMovedNotCopied) {
  static const float kValues[4] = {1, 2, 3, 4};
  std::vector<Frame> data;
  data.push_back(Frame::Borrow(kValues, 8, nullptr));
  data.push_back(Frame::Borrow(kValues + 2, 8, nullptr));
  std::vector<Frame> parts = Parts(Push(2), std::move(data));
  const char* first = parts[1].data();
  auto m = Decode(std::move(parts), kToken);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->header.keys_size(), 2);
  ASSERT_EQ(m->frames.size(), 2u);
  EXPECT_EQ(m->frames[0].data(), first);
}

TEST(WireTest, RequestsWithoutValuesAndControlMessagesDecode) {
  proto::Header pull = Push(3);
  pull.set_type(proto::PULL);
  EXPECT_TRUE(Decode(Parts(pull, 0), kToken).ok());
  proto::Header beat;
  beat.set_type(proto::HEARTBEAT);
  beat.set_token(kToken);
  EXPECT_TRUE(Decode(Parts(beat, 0), kToken).ok());
}

TEST(WireTest, SharedMemoryFramesDecodeWithTheirPlaceholders) {
  auto m = Decode(WithPlaceholder(ShmPush(2, 1), 2, 1), kToken);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->frames[1].size(), 0u);  // ShmPeers::Resolve fills it in.
  EXPECT_EQ(m->header.shm_frames_size(), 1);
}

// --- One test per corruption mode.

TEST(WireTest, NoHeaderFrame) {
  ExpectRefused({}, absl::StatusCode::kInvalidArgument, "no header frame");
}

TEST(WireTest, HeaderIsGarbage) {
  std::vector<Frame> parts;
  parts.push_back(Frame::Own("\xff\xff\xff garbage that is not protobuf"));
  ExpectRefused(std::move(parts), absl::StatusCode::kDataLoss,
                "does not parse (32 bytes)");
}

TEST(WireTest, HeaderIsTruncated) {
  std::string s;
  Push().SerializeToString(&s);
  std::vector<Frame> parts;
  parts.push_back(
      Frame::Own(s.substr(0, s.size() - 1)));  // Inside the last field.
  parts.push_back(Floats(2));
  ExpectRefused(std::move(parts), absl::StatusCode::kDataLoss,
                "does not parse");
}

TEST(WireTest, WrongToken) {
  proto::Header h = Push();
  h.set_token("guess");
  ExpectRefused(Parts(h, 1), absl::StatusCode::kPermissionDenied,
                "wrong job token");
}

TEST(WireTest, NoToken) {
  proto::Header h = Push();
  h.clear_token();
  ExpectRefused(Parts(h, 1), absl::StatusCode::kPermissionDenied,
                "wrong job token");
}

TEST(WireTest, UnknownMessageType) {
  proto::Header h = Push();
  h.set_type(static_cast<proto::MessageType>(77));
  ExpectRefused(Parts(h, 1), absl::StatusCode::kInvalidArgument,
                "unknown message type 77");
}

TEST(WireTest, UnknownDtype) {
  proto::Header h = Push();
  h.set_dtype(static_cast<proto::DataType>(3));
  ExpectRefused(Parts(h, 1), absl::StatusCode::kInvalidArgument,
                "unknown dtype 3");
}

TEST(WireTest, KeysOffsetsAndLengthsOfDifferentCounts) {
  proto::Header h = Push();
  h.clear_lengths();
  ExpectRefused(Parts(h, 1), absl::StatusCode::kInvalidArgument,
                "1 keys but 1 offsets and 0 lengths");
}

TEST(WireTest, MoreDataFramesThanKeys) {
  ExpectRefused(Parts(Push(1), 2), absl::StatusCode::kInvalidArgument,
                "1 keys but 2 data frames");
}

TEST(WireTest, FewerDataFramesThanKeys) {
  ExpectRefused(Parts(Push(3), 2), absl::StatusCode::kInvalidArgument,
                "3 keys but 2 data frames");
}

TEST(WireTest, NegativeLength) {
  proto::Header h = Push();
  h.set_lengths(0, -2);
  ExpectRefused(Parts(h, 1), absl::StatusCode::kInvalidArgument, "length -2");
}

TEST(WireTest, NegativeOffset) {
  proto::Header h = Push();
  h.set_offsets(0, -1);
  ExpectRefused(Parts(h, 1), absl::StatusCode::kInvalidArgument, "offset -1");
}

TEST(WireTest, LengthInBytesOverflows) {
  proto::Header h = Push();
  // 2^62 floats: 2^64 bytes, which wraps to 0 in 64 bits.
  h.set_lengths(0, int64_t{1} << 62);
  ExpectRefused(Parts(h, 1, 0), absl::StatusCode::kInvalidArgument,
                "overflows");
}

TEST(WireTest, OffsetPlusLengthOverflows) {
  proto::Header h = Push();
  h.set_offsets(0, std::numeric_limits<int64_t>::max() - 1);
  ExpectRefused(Parts(h, 1), absl::StatusCode::kInvalidArgument, "overflows");
}

TEST(WireTest, HugeDeclaredLength) {
  proto::Header h = Push();
  h.set_lengths(0, int64_t{1} << 40);
  ExpectRefused(Parts(h, 1), absl::StatusCode::kInvalidArgument,
                "frame 0 has 8 bytes but the header says 1099511627776 floats");
}

TEST(WireTest, FrameShorterThanItsLength) {
  ExpectRefused(Parts(Push(2), 2, 1), absl::StatusCode::kInvalidArgument,
                "frame 0 has 4 bytes but the header says 2 floats");
}

TEST(WireTest, FrameNotAWholeNumberOfFloats) {
  std::vector<Frame> data;
  data.push_back(Frame::Own(std::string(9, 'x')));
  ExpectRefused(Parts(Push(), std::move(data)),
                absl::StatusCode::kInvalidArgument, "frame 0 has 9 bytes");
}

// Gradient compression (issue #16): a frame has the bytes its encoding
// gives its length.
TEST(WireTest, EncodedFramesOfTheirSizeAreAccepted) {
  proto::Header h = Push(3);
  h.set_lengths(0, 17);  // 2bit: 2 words.
  h.add_encodings(proto::TWO_BIT);
  h.add_encodings(proto::FP16);
  h.add_encodings(proto::ONEBIT);
  std::vector<Frame> data;
  data.push_back(Frame::Own(std::string(8, '\0')));
  data.push_back(Frame::Own(std::string(4, '\0')));
  data.push_back(Frame::Own(std::string(12, '\0')));
  auto m = Decode(Parts(h, std::move(data)), kToken);
  EXPECT_TRUE(m.ok()) << m.status();
}

TEST(WireTest, EncodedFrameOfAnotherSize) {
  proto::Header h = Push(1);
  h.set_keys(0, 42);
  h.set_lengths(0, 17);
  h.add_encodings(proto::TWO_BIT);
  std::vector<Frame> data;
  data.push_back(Frame::Own(std::string(4, '\0')));
  ExpectRefused(Parts(h, std::move(data)), absl::StatusCode::kInvalidArgument,
                "frame 0 has 4 bytes but the header says 17 values encoded "
                "as TWO_BIT (8 bytes) at offset 0 of key 42");
}

TEST(WireTest, UnknownEncoding) {
  proto::Header h = Push(1);
  h.add_encodings(static_cast<proto::Encoding>(77));
  ExpectRefused(Parts(h, 1), absl::StatusCode::kInvalidArgument,
                "unknown encoding 77");
}

TEST(WireTest, EncodingsForSomeKeysOnly) {
  proto::Header h = Push(2);
  h.add_encodings(proto::FP16);
  ExpectRefused(Parts(h, 2), absl::StatusCode::kInvalidArgument,
                "2 keys but 1 encodings");
}

TEST(WireTest, SharedMemoryFrameOutOfRange) {
  ExpectRefused(WithPlaceholder(ShmPush(2, 2), 2, 2),
                absl::StatusCode::kInvalidArgument,
                "shared-memory frame 2 of a message with 2 data frames");
}

TEST(WireTest, SharedMemoryFrameWithoutDataFrames) {
  proto::Header h = ShmPush(1, 0);
  h.set_type(proto::PULL);
  ExpectRefused(Parts(h, 0), absl::StatusCode::kInvalidArgument,
                "shared-memory frame 0 of a message with 0 data frames");
}

TEST(WireTest, SharedMemoryFrameDescribedTwice) {
  proto::Header h = ShmPush(2, 0);
  *h.add_shm_frames() = h.shm_frames(0);
  ExpectRefused(WithPlaceholder(h, 2, 0), absl::StatusCode::kInvalidArgument,
                "shared-memory frame 0 described twice");
}

TEST(WireTest, SharedMemoryFrameAlsoOnTheSocket) {
  ExpectRefused(Parts(ShmPush(1, 0), 1), absl::StatusCode::kInvalidArgument,
                "also has 8 bytes on the socket");
}

TEST(WireTest, SharedMemoryFrameWithoutBytes) {
  proto::Header h = ShmPush(1, 0);
  h.mutable_shm_frames(0)->set_size(0);
  ExpectRefused(WithPlaceholder(h, 1, 0), absl::StatusCode::kInvalidArgument,
                "shared-memory frame 0 of 0 bytes");
}

TEST(WireTest, SharedMemoryFrameOfAnotherLength) {
  proto::Header h = ShmPush(1, 0);
  h.mutable_shm_frames(0)->set_size(4096);
  ExpectRefused(
      WithPlaceholder(h, 1, 0), absl::StatusCode::kInvalidArgument,
      "shared-memory frame 0 has 4096 bytes but the header says 2 floats");
}

TEST(WireTest, SharedMemoryOffsetPlusSizeOverflows) {
  proto::Header h = ShmPush(1, 0);
  h.mutable_shm_frames(0)->set_offset(std::numeric_limits<uint64_t>::max() - 4);
  ExpectRefused(WithPlaceholder(h, 1, 0), absl::StatusCode::kInvalidArgument,
                "overflows");
}

TEST(WireTest, SharedMemoryFrameInBothArenas) {
  proto::Header h = ShmPush(1, 0);
  h.mutable_shm_frames(0)->set_by_reference(true);
  h.mutable_shm_frames(0)->set_in_receiver_arena(true);
  ExpectRefused(WithPlaceholder(h, 1, 0), absl::StatusCode::kInvalidArgument,
                "claims to be in both arenas");
}

TEST(WireTest, SharedMemoryFramesWithoutTheArena) {
  proto::Header h = ShmPush(1, 0);
  h.clear_shm_arena();
  ExpectRefused(WithPlaceholder(h, 1, 0), absl::StatusCode::kInvalidArgument,
                "without the arena's identity");
  // Blocks of the receiver's own arena need no identity.
  h.mutable_shm_frames(0)->set_in_receiver_arena(true);
  EXPECT_TRUE(Decode(WithPlaceholder(h, 1, 0), kToken).ok());
}

TEST(WireTest, ConstantTimeEqualsComparesWholeStrings) {
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "ab"));
  EXPECT_FALSE(
      ConstantTimeEquals(std::string("a\0b", 3), std::string("a\0c", 3)));
}

}  // namespace
}  // namespace transport
}  // namespace pstrain
