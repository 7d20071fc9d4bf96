#include "transport/wire.h"

#include <climits>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "compression/codec.h"

namespace pstrain {
namespace transport {
namespace {

constexpr int64_t kMaxFloats =
    std::numeric_limits<int64_t>::max() / sizeof(float);

// Checks the keys, their slices and the data frames' sizes. `shm_size`
// holds, per data frame, its descriptor's size when it travels in shared
// memory, else -1.
absl::Status CheckSlices(const proto::Header& h,
                         const std::vector<Frame>& frames,
                         const std::vector<int64_t>& shm_size) {
  const int n = h.keys_size();
  if (h.offsets_size() != n || h.lengths_size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat(n, " keys but ", h.offsets_size(), " offsets and ",
                     h.lengths_size(), " lengths"));
  }
  if (!frames.empty() && frames.size() != static_cast<size_t>(n)) {
    return absl::InvalidArgumentError(
        absl::StrCat(n, " keys but ", frames.size(), " data frames"));
  }
  if ((h.encodings_size() != 0 && h.encodings_size() != n) ||
      (h.reply_encodings_size() != 0 && h.reply_encodings_size() != n)) {
    return absl::InvalidArgumentError(
        absl::StrCat(n, " keys but ", h.encodings_size(), " encodings and ",
                     h.reply_encodings_size(), " reply encodings"));
  }
  for (int i = 0; i < n; ++i) {
    const int64_t offset = h.offsets(i), length = h.lengths(i);
    if (offset < 0 || length < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "key ", h.keys(i), " has offset ", offset, " and length ", length));
    }
    if (length > kMaxFloats ||
        offset > std::numeric_limits<int64_t>::max() - length) {
      return absl::InvalidArgumentError(
          absl::StrCat("key ", h.keys(i), ": offset ", offset, " plus length ",
                       length, " overflows"));
    }
    if (frames.empty()) continue;
    const bool in_shm = shm_size[i] >= 0;
    const uint64_t bytes =
        in_shm ? static_cast<uint64_t>(shm_size[i]) : frames[i].size();
    const proto::Encoding enc =
        i < h.encodings_size() ? h.encodings(i) : proto::RAW_FLOAT32;
    if (!proto::Encoding_IsValid(enc)) {
      return absl::InvalidArgumentError(
          absl::StrCat("key ", h.keys(i), ": unknown encoding ", enc));
    }
    const uint64_t expected = compression::EncodedBytes(enc, length);
    if (expected != bytes) {
      const std::string what = enc == proto::RAW_FLOAT32
                                   ? absl::StrCat(length, " floats")
                                   : absl::StrCat(length, " values encoded as ",
                                                  proto::Encoding_Name(enc),
                                                  " (", expected, " bytes)");
      return absl::InvalidArgumentError(
          absl::StrCat(in_shm ? "shared-memory frame " : "frame ", i, " has ",
                       bytes, " bytes but the header says ", what,
                       " at offset ", offset, " of key ", h.keys(i)));
    }
  }
  return absl::OkStatus();
}

// Checks the shared-memory descriptors against the frames and fills
// `shm_size` (per data frame: the descriptor's size, or -1).
absl::Status CheckShmFrames(const proto::Header& h,
                            const std::vector<Frame>& frames,
                            std::vector<int64_t>* shm_size) {
  shm_size->assign(frames.size(), -1);
  bool peer_arena = false;
  for (const proto::ShmFrame& d : h.shm_frames()) {
    if (d.frame() >= frames.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("shared-memory frame ", d.frame(), " of a message with ",
                       frames.size(), " data frames"));
    }
    if ((*shm_size)[d.frame()] >= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("shared-memory frame ", d.frame(), " described twice"));
    }
    if (frames[d.frame()].size() != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("shared-memory frame ", d.frame(), " also has ",
                       frames[d.frame()].size(), " bytes on the socket"));
    }
    if (d.size() == 0 ||
        d.size() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "shared-memory frame ", d.frame(), " of ", d.size(), " bytes"));
    }
    if (d.offset() > std::numeric_limits<uint64_t>::max() - d.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("shared-memory frame ", d.frame(), ": offset ",
                       d.offset(), " plus size ", d.size(), " overflows"));
    }
    if (d.by_reference() && d.in_receiver_arena()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "shared-memory frame ", d.frame(), " claims to be in both arenas"));
    }
    peer_arena |= !d.in_receiver_arena();
    (*shm_size)[d.frame()] = static_cast<int64_t>(d.size());
  }
  if (peer_arena && !h.has_shm_arena()) {
    return absl::InvalidArgumentError(
        "frames in the sender's shared memory without the arena's identity");
  }
  return absl::OkStatus();
}

}  // namespace

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

absl::StatusOr<Message> Decode(std::vector<Frame> parts,
                               absl::string_view token) {
  if (parts.empty()) return absl::InvalidArgumentError("no header frame");
  Message msg;
  const Frame& header = parts[0];
  if (header.size() > static_cast<size_t>(INT_MAX) ||
      !msg.header.ParseFromArray(header.data(),
                                 static_cast<int>(header.size()))) {
    return absl::DataLossError(
        absl::StrCat("the header does not parse (", header.size(), " bytes)"));
  }
  const proto::Header& h = msg.header;
  if (!ConstantTimeEquals(h.token(), token)) {
    return absl::PermissionDeniedError("wrong job token");
  }
  if (!proto::MessageType_IsValid(h.type())) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown message type ", h.type()));
  }
  if (!proto::DataType_IsValid(h.dtype())) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown dtype ", h.dtype()));
  }
  msg.frames.reserve(parts.size() - 1);
  for (size_t i = 1; i < parts.size(); ++i)
    msg.frames.push_back(std::move(parts[i]));
  std::vector<int64_t> shm_size;
  absl::Status s = CheckShmFrames(h, msg.frames, &shm_size);
  if (s.ok()) s = CheckSlices(h, msg.frames, shm_size);
  if (!s.ok()) return s;
  return msg;
}

}  // namespace transport
}  // namespace pstrain
