// Checks the generated protobuf code links and behaves as the wire protocol
// expects: round trips, unknown bytes rejected, truncated frames rejected.
#include <string>

#include "gtest/gtest.h"
#include "proto/messages.pb.h"

namespace pstrain {
namespace {

proto::Header SamplePush() {
  proto::Header h;
  h.set_type(proto::PUSH);
  h.set_sender(3);
  h.set_request_id(123456789012345ULL);
  h.set_token("job-token");
  for (int i = 0; i < 3; ++i) {
    h.add_keys(i);
    h.add_offsets(0);
    h.add_lengths(1000 * (i + 1));
  }
  h.set_priority(-2);
  h.mutable_optimizer()->set_kind(proto::OptimizerConfig::SGD);
  (*h.mutable_optimizer()->mutable_lr_mult())[7] = 0.5;
  return h;
}

TEST(MessagesTest, HeaderRoundTrips) {
  std::string bytes;
  ASSERT_TRUE(SamplePush().SerializeToString(&bytes));
  proto::Header parsed;
  ASSERT_TRUE(parsed.ParseFromString(bytes));
  EXPECT_EQ(parsed.type(), proto::PUSH);
  EXPECT_EQ(parsed.sender(), 3);
  EXPECT_EQ(parsed.request_id(), 123456789012345ULL);
  EXPECT_EQ(parsed.token(), "job-token");
  ASSERT_EQ(parsed.keys_size(), 3);
  EXPECT_EQ(parsed.lengths(2), 3000);
  EXPECT_EQ(parsed.priority(), -2);
  EXPECT_DOUBLE_EQ(parsed.optimizer().lr_mult().at(7), 0.5);
}

TEST(MessagesTest, TruncatedHeaderDoesNotParse) {
  std::string bytes;
  ASSERT_TRUE(SamplePush().SerializeToString(&bytes));
  int rejected = 0;
  for (size_t n = 1; n < bytes.size(); ++n) {
    proto::Header parsed;
    if (!parsed.ParseFromArray(bytes.data(), static_cast<int>(n))) ++rejected;
  }
  // Cutting inside a field must be noticed; most cuts are inside one.
  EXPECT_GT(rejected, static_cast<int>(bytes.size()) / 2);
}

TEST(MessagesTest, GarbageDoesNotParse) {
  const std::string garbage = "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01";
  proto::Header parsed;
  EXPECT_FALSE(parsed.ParseFromString(garbage));
}

}  // namespace
}  // namespace pstrain
