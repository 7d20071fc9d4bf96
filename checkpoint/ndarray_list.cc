#include "checkpoint/ndarray_list.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "checkpoint/manifest.h"
#include "glog/logging.h"
#include "util/file.h"
#include "util/status.h"

namespace pstrain {
namespace checkpoint {
namespace {

constexpr uint64_t kListMagic = 0x112;
constexpr uint32_t kV1Magic = 0xF993FAC8;
constexpr uint32_t kV2Magic = 0xF993FAC9;
constexpr uint32_t kV3Magic = 0xF993FACA;
constexpr int kMaxDims = 32;

// Bounds-checked little-endian reader over untrusted bytes.
class Reader {
 public:
  Reader(absl::string_view bytes, absl::string_view source)
      : bytes_(bytes), source_(source) {}

  size_t offset() const { return pos_; }
  size_t remaining() const { return bytes_.size() - pos_; }

  template <typename T>
  absl::Status Read(T* out, absl::string_view what) {
    if (remaining() < sizeof(T)) return Truncated(what);
    std::memcpy(out, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return absl::OkStatus();
  }

  absl::Status ReadBytes(size_t n, std::string* out, absl::string_view what) {
    if (remaining() < n) return Truncated(what);
    out->assign(bytes_.data() + pos_, n);
    pos_ += n;
    return absl::OkStatus();
  }

  absl::Status Error(absl::string_view what, size_t at) const {
    return absl::DataLossError(
        absl::StrCat(source_, ": ", what, " at byte offset ", at));
  }
  absl::Status Truncated(absl::string_view what) const {
    return Error(absl::StrCat("file truncated reading ", what, " (file has ",
                              bytes_.size(), " bytes)"),
                 pos_);
  }

 private:
  absl::string_view bytes_;
  absl::string_view source_;
  size_t pos_ = 0;
};

absl::Status ReadArray(Reader& r, size_t index, NDArray* a) {
  const size_t start = r.offset();
  auto where = [&](absl::string_view what) {
    return absl::StrCat("array ", index, ": ", what);
  };
  uint32_t magic;
  PSTRAIN_RETURN_IF_ERROR(r.Read(&magic, where("magic")));
  std::vector<int64_t> shape;
  bool numpy_shape = false;
  if (magic == kV1Magic || magic == kV2Magic || magic == kV3Magic) {
    if (magic != kV1Magic) {
      int32_t stype;
      PSTRAIN_RETURN_IF_ERROR(r.Read(&stype, where("storage type")));
      if (stype != 0) {
        return absl::UnimplementedError(absl::StrCat(
            where("sparse storage type "), stype,
            " is not supported (dense only), at byte offset ", start));
      }
    }
    numpy_shape = magic == kV3Magic;
    int32_t ndim;
    PSTRAIN_RETURN_IF_ERROR(r.Read(&ndim, where("ndim")));
    if ((numpy_shape && ndim == -1) || (!numpy_shape && ndim == 0)) {
      a->none = true;
      return absl::OkStatus();
    }
    if (ndim < 0 || ndim > kMaxDims) {
      return r.Error(where(absl::StrCat("impossible ndim ", ndim)), start);
    }
    for (int i = 0; i < ndim; ++i) {
      int64_t d;
      PSTRAIN_RETURN_IF_ERROR(r.Read(&d, where("dims")));
      shape.push_back(d);
    }
  } else {
    // Legacy: the first word is ndim, then u32 dims.
    const uint32_t ndim = magic;
    if (ndim == 0) {
      a->none = true;
      return absl::OkStatus();
    }
    if (ndim > kMaxDims) {
      return r.Error(where(absl::StrCat("bad magic 0x", absl::Hex(magic))),
                     start);
    }
    for (uint32_t i = 0; i < ndim; ++i) {
      uint32_t d;
      PSTRAIN_RETURN_IF_ERROR(r.Read(&d, where("dims")));
      shape.push_back(d);
    }
  }
  int64_t count = 1;
  for (int64_t d : shape) {
    if (d < 0) return r.Error(where(absl::StrCat("negative dim ", d)), start);
    if (d != 0 && count > (int64_t{1} << 40) / d) {
      return r.Error(where("shape too large"), start);
    }
    count *= d;
  }
  int32_t dev_type, dev_id, dtype;
  PSTRAIN_RETURN_IF_ERROR(r.Read(&dev_type, where("device type")));
  PSTRAIN_RETURN_IF_ERROR(r.Read(&dev_id, where("device id")));
  PSTRAIN_RETURN_IF_ERROR(r.Read(&dtype, where("dtype")));
  const int size = DTypeSize(dtype);
  if (size == 0) {
    return r.Error(where(absl::StrCat("unknown dtype ", dtype)), start);
  }
  const uint64_t nbytes = static_cast<uint64_t>(count) * size;
  if (nbytes > r.remaining()) {
    return r.Error(where(absl::StrCat("data of ", nbytes,
                                      " bytes runs past "
                                      "the end of the file")),
                   r.offset());
  }
  a->shape = std::move(shape);
  a->dtype = static_cast<DType>(dtype);
  return r.ReadBytes(nbytes, &a->data, where("data"));
}

}  // namespace

int DTypeSize(int32_t flag) {
  switch (flag) {
    case 0:
    case 4:
    case 10:
      return 4;
    case 1:
    case 6:
    case 11:
      return 8;
    case 2:
    case 8:
    case 9:
    case 12:
      return 2;
    case 3:
    case 5:
    case 7:
      return 1;
    default:
      return 0;
  }
}

int64_t NDArray::num_elements() const {
  if (none) return 0;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<std::vector<float>> NDArray::ToFloats() const {
  if (dtype != DType::kFloat32) {
    return absl::InvalidArgumentError(
        absl::StrCat("array ", name.empty() ? "(unnamed)" : name, " has dtype ",
                     static_cast<int>(dtype), ", not float32 (0)"));
  }
  std::vector<float> v(data.size() / sizeof(float));
  std::memcpy(v.data(), data.data(), v.size() * sizeof(float));
  return v;
}

NDArray NDArray::FromFloats(std::string name, std::vector<int64_t> shape,
                            const std::vector<float>& values) {
  NDArray a;
  a.name = std::move(name);
  a.shape = std::move(shape);
  CHECK_EQ(a.num_elements(), static_cast<int64_t>(values.size()));
  a.data.assign(reinterpret_cast<const char*>(values.data()),
                values.size() * sizeof(float));
  return a;
}

absl::StatusOr<std::vector<NDArray>> ParseNDArrayList(
    absl::string_view bytes, absl::string_view source) {
  Reader r(bytes, source);
  uint64_t magic, reserved, n;
  PSTRAIN_RETURN_IF_ERROR(r.Read(&magic, "header"));
  if (magic != kListMagic) {
    return r.Error(absl::StrCat("not an MXNet NDArray list (magic 0x",
                                absl::Hex(magic), ", want 0x112)"),
                   0);
  }
  PSTRAIN_RETURN_IF_ERROR(r.Read(&reserved, "header"));
  PSTRAIN_RETURN_IF_ERROR(r.Read(&n, "array count"));
  // Every array takes at least 4 bytes: a count beyond that is corrupt, and
  // checking it first bounds the allocation below.
  if (n > r.remaining() / 4) {
    return r.Error(absl::StrCat("array count ", n, " impossible for ",
                                r.remaining(), " remaining bytes"),
                   16);
  }
  std::vector<NDArray> arrays(n);
  for (uint64_t i = 0; i < n; ++i) {
    PSTRAIN_RETURN_IF_ERROR(ReadArray(r, i, &arrays[i]));
  }
  uint64_t k;
  const size_t names_at = r.offset();
  PSTRAIN_RETURN_IF_ERROR(r.Read(&k, "name count"));
  if (k != 0 && k != n) {
    return r.Error(
        absl::StrCat("name count ", k, " differs from array count ", n),
        names_at);
  }
  for (uint64_t i = 0; i < k; ++i) {
    uint64_t len;
    const size_t at = r.offset();
    PSTRAIN_RETURN_IF_ERROR(r.Read(&len, absl::StrCat("name ", i, " length")));
    if (len > r.remaining()) {
      return r.Error(absl::StrCat("name ", i, " length ", len,
                                  " runs past the end of the file"),
                     at);
    }
    PSTRAIN_RETURN_IF_ERROR(r.ReadBytes(len, &arrays[i].name, "name"));
  }
  if (r.remaining() != 0) {
    return r.Error(absl::StrCat(r.remaining(), " unexpected trailing bytes"),
                   r.offset());
  }
  return arrays;
}

namespace {

template <typename T>
void Put(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(v));
}

}  // namespace

std::string SerializeNDArrayList(const std::vector<NDArray>& arrays) {
  std::string out;
  Put<uint64_t>(&out, kListMagic);
  Put<uint64_t>(&out, 0);
  Put<uint64_t>(&out, arrays.size());
  bool named = false;
  for (const NDArray& a : arrays) {
    named |= !a.name.empty();
    Put<uint32_t>(&out, kV2Magic);
    Put<int32_t>(&out, 0);  // Dense.
    if (a.none) {
      Put<int32_t>(&out, 0);
      continue;
    }
    CHECK(!a.shape.empty()) << a.name << ": V2 cannot store a 0-d array";
    CHECK_EQ(static_cast<int64_t>(a.data.size()),
             a.num_elements() * DTypeSize(static_cast<int32_t>(a.dtype)))
        << a.name;
    Put<int32_t>(&out, static_cast<int32_t>(a.shape.size()));
    for (int64_t d : a.shape) Put<int64_t>(&out, d);
    Put<int32_t>(&out, 1);  // cpu
    Put<int32_t>(&out, 0);  // device 0
    Put<int32_t>(&out, static_cast<int32_t>(a.dtype));
    out += a.data;
  }
  Put<uint64_t>(&out, named ? arrays.size() : 0);
  if (named) {
    for (const NDArray& a : arrays) {
      CHECK(!a.name.empty()) << "either every array has a name or none has";
      Put<uint64_t>(&out, a.name.size());
      out += a.name;
    }
  }
  return out;
}

absl::StatusOr<std::vector<NDArray>> ReadNDArrayListFile(
    const std::string& path) {
  PSTRAIN_ASSIGN_OR_RETURN(const std::string bytes, ReadFileToString(path));
  return ParseNDArrayList(bytes, path);
}

absl::Status WriteNDArrayListFile(const std::string& path,
                                  const std::vector<NDArray>& arrays) {
  return WriteFileAtomically(path, SerializeNDArrayList(arrays));
}

}  // namespace checkpoint
}  // namespace pstrain
