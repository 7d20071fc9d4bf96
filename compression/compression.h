// Gradient compression between workers and servers (issue #16), over the
// kernels of codec.h: the --gradient_compression syntax, the worker's
// per-key residuals, and the server's checks and decoding. Which arrays are
// compressed: keys >= 0 whose whole array holds at least min_bytes as
// float32; pushes in the job's type, pull replies in fp16 only with type
// fp16 (2bit and onebit pull raw weights, as in MXNet). Each slice (the
// part of an array one message carries) is encoded on its own; 2bit and
// onebit keep one residual per array, so slicing does not change what
// 2bit sends (it is elementwise) and gives onebit one scale per slice.
#ifndef PSTRAIN_COMPRESSION_COMPRESSION_H_
#define PSTRAIN_COMPRESSION_COMPRESSION_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "proto/messages.pb.h"
#include "transport/message.h"
#include "util/mutex.h"

namespace pstrain {
namespace compression {

constexpr int64_t kDefaultMinBytes = int64_t{64} << 10;

// Parses MXNet's syntax: "type=2bit,threshold=0.5", "type=fp16",
// "type=onebit", or "" / "type=none" for none (threshold defaults to 0.5
// for 2bit, as MXNet's). InvalidArgument naming the bad part otherwise
// (an unknown type or key, a threshold <= 0 or not a number, a threshold
// for a type without one, min_bytes < 0).
absl::StatusOr<proto::GradientCompression> Parse(absl::string_view spec,
                                                 int64_t min_bytes);
// The spec Parse() reads back, e.g. "type=2bit,threshold=0.5".
std::string Describe(const proto::GradientCompression& c);

// The encoding of pushes of `key`, an array of `elements` floats, and the
// one its pull replies should have.
proto::Encoding PushEncoding(const proto::GradientCompression& c, int64_t key,
                             int64_t elements);
proto::Encoding PullEncoding(const proto::GradientCompression& c, int64_t key,
                             int64_t elements);

// The worker's side: encodes pushes, keeping each array's residual (2bit)
// or error (onebit), and decodes replies. Thread-safe; encodings of one
// key are serialised (they share its residual).
class WorkerCodec {
 public:
  explicit WorkerCodec(const proto::GradientCompression& c);
  WorkerCodec(const WorkerCodec&) = delete;
  WorkerCodec& operator=(const WorkerCodec&) = delete;

  const proto::GradientCompression& config() const { return config_; }
  bool enabled() const { return config_.type() != proto::RAW_FLOAT32; }

  // The frame that carries `values`, the slice at `offset` of `key`'s
  // array of `elements` floats, in encoding `e` (PushEncoding()). Raw:
  // borrows `values`, kept alive by `keep`; else a new frame, and the
  // residual of those elements is updated. REQUIRES: offset +
  // values.size() <= elements; every call for a key passes the same
  // `elements`.
  transport::Frame EncodePush(int64_t key, int64_t elements, int64_t offset,
                              absl::Span<const float> values, proto::Encoding e,
                              std::shared_ptr<const void> keep);

 private:
  struct KeyState {
    Mutex mu;
    std::vector<float> residual ABSL_GUARDED_BY(mu);
  };
  KeyState* State(int64_t key, int64_t elements);

  const proto::GradientCompression config_;
  Mutex mu_;
  std::map<int64_t, std::unique_ptr<KeyState>> states_ ABSL_GUARDED_BY(mu_);
};

// Copies the `out.size()` values of a reply frame in encoding `e` (raw or
// fp16) into `out`. DataLoss, naming key and sizes, when the frame's size
// does not match or the encoding is not one a reply may have.
absl::Status DecodeReply(proto::Encoding e, const transport::Frame& f,
                         int64_t key, int64_t offset, absl::Span<float> out);

// The server's side. OK when every data frame the PUSH, PUSH_PULL or PULL
// header `h` announces has an encoding the job's compression `c` allows
// (raw, or c.type()), every reply encoding is raw or (type fp16) fp16, and
// the lists have one entry per key (or none); else InvalidArgument naming
// the key, offset and encodings. The frames' sizes are the caller's to
// check (EncodedBytes, codec.h).
absl::Status CheckEncodings(const proto::GradientCompression& c,
                            const proto::Header& h);
// Replaces every encoded data frame of `msg` by its float32 values and
// clears the encodings. REQUIRES: CheckEncodings(c, msg) is OK.
void DecodePush(const proto::GradientCompression& c, transport::Message* msg);
// The weights frame `raw` (float32) for a reply in encoding `e`: `raw`
// itself, or a new fp16 frame. REQUIRES: e is RAW_FLOAT32 or FP16.
transport::Frame EncodeReply(proto::Encoding e, transport::Frame raw);

}  // namespace compression
}  // namespace pstrain

#endif  // PSTRAIN_COMPRESSION_COMPRESSION_H_
