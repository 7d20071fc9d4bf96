#include "compression/compression.h"

#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "compression/codec.h"
#include "glog/logging.h"

namespace pstrain {
namespace compression {
namespace {

using transport::Frame;

// A new frame of `bytes` writable bytes (not initialised), 16-byte aligned.
std::pair<Frame, char*> NewFrame(size_t bytes) {
  std::shared_ptr<char> buf(new char[bytes > 0 ? bytes : 1],
                            std::default_delete<char[]>());
  char* p = buf.get();
  return {Frame::Borrow(p, bytes, std::shared_ptr<const void>(buf, p)), p};
}

bool ReplyEncodingAllowed(const proto::GradientCompression& c,
                          proto::Encoding e) {
  return e == proto::RAW_FLOAT32 || (e == proto::FP16 && c.type() == e);
}

}  // namespace

absl::StatusOr<proto::GradientCompression> Parse(absl::string_view spec,
                                                 int64_t min_bytes) {
  proto::GradientCompression c;
  if (min_bytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--gc_min_bytes is ", min_bytes, "; it must be >= 0"));
  }
  c.set_min_bytes(min_bytes);
  bool has_threshold = false;
  float threshold = 0.5f;
  std::string type = "none";
  for (absl::string_view part : absl::StrSplit(spec, ',', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(part, absl::MaxSplits('=', 1));
    if (kv.first == "type") {
      type = std::string(kv.second);
    } else if (kv.first == "threshold") {
      if (!absl::SimpleAtof(kv.second, &threshold) || !(threshold > 0) ||
          threshold == std::numeric_limits<float>::infinity()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--gradient_compression: threshold \"", kv.second,
                         "\" is not a positive finite number"));
      }
      has_threshold = true;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--gradient_compression: unknown setting \"", part,
                       "\" (expected type=2bit|fp16|onebit|none and, for 2bit, "
                       "threshold=<float>)"));
    }
  }
  if (type == "2bit") {
    c.set_type(proto::TWO_BIT);
    c.set_threshold(threshold);
    return c;
  }
  if (has_threshold) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--gradient_compression: type ", type, " takes no threshold"));
  }
  if (type == "fp16") {
    c.set_type(proto::FP16);
  } else if (type == "onebit") {
    c.set_type(proto::ONEBIT);
  } else if (type != "none") {
    return absl::InvalidArgumentError(
        absl::StrCat("--gradient_compression: unknown type \"", type,
                     "\" (2bit, fp16, onebit or none)"));
  }
  return c;
}

std::string Describe(const proto::GradientCompression& c) {
  std::string s = absl::StrCat("type=", EncodingName(c.type()));
  if (c.type() == proto::TWO_BIT)
    absl::StrAppend(&s, ",threshold=", c.threshold());
  return s;
}

proto::Encoding PushEncoding(const proto::GradientCompression& c, int64_t key,
                             int64_t elements) {
  if (key < 0 || elements * static_cast<int64_t>(sizeof(float)) < c.min_bytes())
    return proto::RAW_FLOAT32;
  return c.type();
}

proto::Encoding PullEncoding(const proto::GradientCompression& c, int64_t key,
                             int64_t elements) {
  const proto::Encoding e = PushEncoding(c, key, elements);
  return e == proto::FP16 ? e : proto::RAW_FLOAT32;
}

WorkerCodec::WorkerCodec(const proto::GradientCompression& c) : config_(c) {}

WorkerCodec::KeyState* WorkerCodec::State(int64_t key, int64_t elements) {
  MutexLock lock(&mu_);
  std::unique_ptr<KeyState>& s = states_[key];
  if (s == nullptr) {
    s = std::make_unique<KeyState>();
    MutexLock key_lock(&s->mu);
    s->residual.assign(elements, 0.0f);
  }
  return s.get();
}

Frame WorkerCodec::EncodePush(int64_t key, int64_t elements, int64_t offset,
                              absl::Span<const float> values, proto::Encoding e,
                              std::shared_ptr<const void> keep) {
  const size_t n = values.size();
  if (e == proto::RAW_FLOAT32) {
    return Frame::Borrow(values.data(), n * sizeof(float), std::move(keep));
  }
  auto [frame, out] = NewFrame(EncodedBytes(e, n));
  if (e == proto::FP16) {
    FloatToHalf(values.data(), n, reinterpret_cast<uint16_t*>(out));
    return std::move(frame);
  }
  KeyState* s = State(key, elements);
  MutexLock lock(&s->mu);
  CHECK_EQ(static_cast<int64_t>(s->residual.size()), elements) << "key " << key;
  CHECK_LE(offset + static_cast<int64_t>(n), elements) << "key " << key;
  float* residual = s->residual.data() + offset;
  if (e == proto::TWO_BIT) {
    Quantize2Bit(values.data(), residual, n, config_.threshold(),
                 reinterpret_cast<uint8_t*>(out));
  } else {
    CHECK_EQ(e, proto::ONEBIT);
    OnebitCompress(values.data(), residual, n, reinterpret_cast<uint8_t*>(out));
  }
  return std::move(frame);
}

absl::Status DecodeReply(proto::Encoding e, const Frame& f, int64_t key,
                         int64_t offset, absl::Span<float> out) {
  if (e != proto::RAW_FLOAT32 && e != proto::FP16) {
    return absl::DataLossError(
        absl::StrCat("reply of key ", key, " at ", offset, " encoded as ",
                     EncodingName(e), "; replies are raw or fp16"));
  }
  const uint64_t want = EncodedBytes(e, out.size());
  if (f.size() != want) {
    return absl::DataLossError(absl::StrCat(
        "reply of key ", key, " at ", offset, " has ", f.size(), " bytes; ",
        out.size(), " values as ", EncodingName(e), " take ", want));
  }
  if (e == proto::FP16) {
    // The frame's bytes may sit at any even address: copy when unaligned.
    if (reinterpret_cast<uintptr_t>(f.data()) % alignof(uint16_t) == 0) {
      HalfToFloat(reinterpret_cast<const uint16_t*>(f.data()), out.size(),
                  out.data());
    } else {
      std::vector<uint16_t> tmp(out.size());
      std::memcpy(tmp.data(), f.data(), f.size());
      HalfToFloat(tmp.data(), out.size(), out.data());
    }
  } else if (!out.empty()) {
    std::memcpy(out.data(), f.data(), f.size());
  }
  return absl::OkStatus();
}

absl::Status CheckEncodings(const proto::GradientCompression& c,
                            const proto::Header& h) {
  const int n = h.keys_size();
  if ((h.encodings_size() != 0 && h.encodings_size() != n) ||
      (h.reply_encodings_size() != 0 && h.reply_encodings_size() != n) ||
      h.offsets_size() != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        n, " keys, ", h.offsets_size(), " offsets, ", h.encodings_size(),
        " encodings, ", h.reply_encodings_size(), " reply encodings"));
  }
  for (int i = 0; i < h.reply_encodings_size(); ++i) {
    if (!ReplyEncodingAllowed(c, h.reply_encodings(i))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "key ", h.keys(i), " offset ", h.offsets(i), ": a reply as ",
          EncodingName(h.reply_encodings(i)),
          " was asked for; this job's gradient compression is ", Describe(c)));
    }
  }
  for (int i = 0; i < h.encodings_size(); ++i) {
    const proto::Encoding e = h.encodings(i);
    if (e != proto::RAW_FLOAT32 && e != c.type()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "key ", h.keys(i), " offset ", h.offsets(i), " was pushed as ",
          EncodingName(e), "; this job's gradient compression is ", Describe(c),
          " (from INIT)"));
    }
  }
  return absl::OkStatus();
}

void DecodePush(const proto::GradientCompression& c, transport::Message* msg) {
  proto::Header& h = msg->header;
  for (int i = 0; i < h.encodings_size(); ++i) {
    const proto::Encoding e = h.encodings(i);
    if (e == proto::RAW_FLOAT32) continue;
    const size_t n = static_cast<size_t>(h.lengths(i));
    const Frame& in = msg->frames[i];
    // Received frames are 8-byte aligned (transport/message.h); others
    // are copied to be safe.
    std::vector<char> aligned;
    const char* src = in.data();
    if (reinterpret_cast<uintptr_t>(src) % 8 != 0) {
      aligned.assign(src, src + in.size());
      src = aligned.data();
    }
    auto [frame, out] = NewFrame(n * sizeof(float));
    float* f = reinterpret_cast<float*>(out);
    const uint8_t* u = reinterpret_cast<const uint8_t*>(src);
    switch (e) {
      case proto::TWO_BIT:
        Dequantize2Bit(u, n, c.threshold(), f);
        break;
      case proto::FP16:
        HalfToFloat(reinterpret_cast<const uint16_t*>(src), n, f);
        break;
      case proto::ONEBIT:
        OnebitDecompress(u, n, f);
        break;
      default:
        LOG(FATAL) << "DecodePush without CheckEncodings: encoding " << e;
    }
    msg->frames[i] = std::move(frame);
  }
  h.clear_encodings();
}

Frame EncodeReply(proto::Encoding e, Frame raw) {
  if (e == proto::RAW_FLOAT32) return raw;
  CHECK_EQ(e, proto::FP16);
  const size_t n = raw.size() / sizeof(float);
  auto [frame, out] = NewFrame(HalfBytes(n));
  std::vector<float> aligned;
  const float* src = reinterpret_cast<const float*>(raw.data());
  if (reinterpret_cast<uintptr_t>(raw.data()) % alignof(float) != 0) {
    aligned.resize(n);
    std::memcpy(aligned.data(), raw.data(), n * sizeof(float));
    src = aligned.data();
  }
  FloatToHalf(src, n, reinterpret_cast<uint16_t*>(out));
  return std::move(frame);
}

}  // namespace compression
}  // namespace pstrain
