// MXNet's NDArray-list files (`.params`): read every version MXNet writes,
// write the V2 format MXNet 1.x reads (formats.md §7).
//
//   u64 0x112 ; u64 0 ; u64 N ; N x NDArray ; u64 K (0 or N) ; K x name
//   NDArray V2: u32 0xF993FAC9 ; i32 stype ; i32 ndim ; ndim x i64 dims
//               (ndim 0: a "none" array, nothing follows) ;
//               i32 dev_type ; i32 dev_id ; i32 dtype ; data (C order, LE)
//   V1 (0xF993FAC8): no stype; V3 (0xF993FACA, numpy shapes): ndim -1 is
//   "none" and ndim 0 a scalar; legacy (no magic): u32 ndim, u32 dims.
//
// Checkpoints name arrays "arg:<name>" (learned parameters) and
// "aux:<name>" (auxiliary states such as batch-norm running statistics).
#ifndef PSTRAIN_CHECKPOINT_NDARRAY_LIST_H_
#define PSTRAIN_CHECKPOINT_NDARRAY_LIST_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pstrain {
namespace checkpoint {

// MXNet's type flags.
enum class DType : int32_t {
  kFloat32 = 0,
  kFloat64 = 1,
  kFloat16 = 2,
  kUint8 = 3,
  kInt32 = 4,
  kInt8 = 5,
  kInt64 = 6,
  kBool = 7,
  kInt16 = 8,
  kUint16 = 9,
  kUint32 = 10,
  kUint64 = 11,
  kBfloat16 = 12,
};

// Bytes per element, or 0 for a flag MXNet does not define.
int DTypeSize(int32_t dtype_flag);

struct NDArray {
  std::string name;   // Empty when the file has no names.
  bool none = false;  // MXNet's "none" array: no shape, no data.
  std::vector<int64_t> shape;
  DType dtype = DType::kFloat32;
  std::string data;  // Raw little-endian elements, C order.

  int64_t num_elements() const;
  // The elements as floats; InvalidArgument naming the array when its dtype
  // (read from a file) is not float32.
  absl::StatusOr<std::vector<float>> ToFloats() const;
  static NDArray FromFloats(std::string name, std::vector<int64_t> shape,
                            const std::vector<float>& values);
};

// Parses the bytes of a `.params` file. Returns DataLoss for a truncated or
// malformed file, Unimplemented for sparse arrays, naming `source`, the byte
// offset and the array index. Never reads out of bounds and never allocates
// more than the input size justifies.
absl::StatusOr<std::vector<NDArray>> ParseNDArrayList(absl::string_view bytes,
                                                      absl::string_view source);

// Serializes `arrays` as MXNet writes them: V2 magic, dense storage, on
// cpu(0). Names are written when any array has one (then all must).
std::string SerializeNDArrayList(const std::vector<NDArray>& arrays);

// Reads and parses the file at `path` (errors name the path).
absl::StatusOr<std::vector<NDArray>> ReadNDArrayListFile(
    const std::string& path);

// Writes `arrays` to `path` atomically: a temporary file in the same folder,
// fsync, then rename, so a crash never leaves a half-written checkpoint.
absl::Status WriteNDArrayListFile(const std::string& path,
                                  const std::vector<NDArray>& arrays);

}  // namespace checkpoint
}  // namespace pstrain

#endif  // PSTRAIN_CHECKPOINT_NDARRAY_LIST_H_
