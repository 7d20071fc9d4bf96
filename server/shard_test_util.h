// Test helpers for the shard without sockets: requests as workers send
// them. Test-only (//server:shard_test_util).
#ifndef PSTRAIN_SERVER_SHARD_TEST_UTIL_H_
#define PSTRAIN_SERVER_SHARD_TEST_UTIL_H_

#include <cstdint>
#include <vector>

#include "proto/messages.pb.h"
#include "transport/message.h"

namespace pstrain {
namespace server {
namespace testing_util {

// One slice in a request: key, offset and its values (empty for a pull).
struct Part {
  int64_t key;
  int64_t offset;
  std::vector<float> values;
};

// A request of `type` from node `sender` naming `parts` (with one frame
// each when `with_frames`), priority 7.
inline transport::Message Request(proto::MessageType type, int sender,
                                  uint64_t request_id,
                                  const std::vector<Part>& parts,
                                  bool with_frames = true) {
  transport::Message m;
  m.header.set_type(type);
  m.header.set_sender(sender);
  m.header.set_request_id(request_id);
  m.header.set_priority(7);
  for (const Part& p : parts) {
    m.header.add_keys(p.key);
    m.header.add_offsets(p.offset);
    m.header.add_lengths(static_cast<int64_t>(p.values.size()));
    if (with_frames) {
      m.frames.push_back(transport::Frame::Copy(
          p.values.data(), p.values.size() * sizeof(float)));
    }
  }
  return m;
}

}  // namespace testing_util
}  // namespace server
}  // namespace pstrain

#endif  // PSTRAIN_SERVER_SHARD_TEST_UTIL_H_
