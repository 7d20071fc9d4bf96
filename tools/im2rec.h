// im2rec: makes `.lst` image lists and packs them into `.rec` + `.idx`
// files, with the semantics of MXNet's tools/im2rec.py (formats.md §3), so
// its command lines work unchanged and its lists come out the same.
#ifndef PSTRAIN_TOOLS_IM2REC_H_
#define PSTRAIN_TOOLS_IM2REC_H_

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace pstrain {
namespace tools {

struct ListOptions {
  std::string prefix;  // Output: prefix[_chunk][_train|_val|_test].lst
  std::string root;    // Folder of images.
  bool recursive = false;
  std::vector<std::string> exts = {".jpeg", ".jpg", ".png"};
  int chunks = 1;
  double train_ratio = 1.0;
  double test_ratio = 0.0;
  bool shuffle = true;  // Python's random.seed(100) + random.shuffle.
};

// One line of a `.lst`: index, labels, path relative to the root.
struct LstItem {
  int64_t index = 0;
  std::vector<float> labels;
  std::string path;
};

// Lists the images under options.root as im2rec.py --list does and writes
// the `.lst` files. With `recursive`, prints each folder's label ("relpath
// label") to `out`. Returns the paths written. Errors name the folder or
// file.
absl::StatusOr<std::vector<std::string>> MakeLists(const ListOptions& options,
                                                   std::ostream* out);

// Reads a `.lst`: tab-separated index, labels, path. Lines with fewer than
// three fields or unparsable numbers are reported to `warnings` (with the
// line number) and skipped, as im2rec.py does.
absl::StatusOr<std::vector<LstItem>> ReadLst(const std::string& path,
                                             std::ostream* warnings);

struct PackOptions {
  std::string root;
  int color = 1;   // cv2.imread flag: 1 color, 0 gray, -1 unchanged.
  int resize = 0;  // Shorter edge to this; 0: keep.
  bool center_crop = false;
  int quality = 95;  // JPEG quality, or PNG compression level (0-9).
  std::string encoding = ".jpg";
  bool pass_through = false;  // Store the file bytes as they are.
  bool pack_label = false;    // Store every label of a multi-label line.
  int num_thread = 1;
  double progress_seconds = 5;  // Progress line period; <= 0: none.
};

struct PackStats {
  int64_t packed = 0;
  int64_t skipped = 0;
  int64_t bytes = 0;  // Size of the .rec.
  double seconds = 0;
};

// Packs the images of `lst_path` into `rec_path` and `idx_path`, records in
// `.lst` order whatever the thread count, memory bounded by a window of
// 4 x num_thread images. Images that cannot be read or decoded are skipped
// with a warning naming the file. Progress (images/s, ETA) and a summary go
// to `out`.
absl::StatusOr<PackStats> PackList(const std::string& lst_path,
                                   const std::string& rec_path,
                                   const std::string& idx_path,
                                   const PackOptions& options,
                                   std::ostream* out);

// Pack mode of im2rec.py: every `*.lst` in the prefix's folder whose path
// starts with `prefix` is packed into `<lst without .lst>.rec/.idx`.
// Returns NotFound when there is no such list.
absl::StatusOr<PackStats> PackAll(const std::string& prefix,
                                  const PackOptions& options,
                                  std::ostream* out);

}  // namespace tools
}  // namespace pstrain

namespace pstrain {
namespace tools {

// Rewrites im2rec.py's spelling into gflags': --dashed-name -> --dashed_name,
// --no-shuffle -> --noshuffle, and `--exts .jpg .png` (several values) ->
// --exts=.jpg,.png. Positional arguments are kept in place.
std::vector<std::string> NormalizeIm2recArgs(
    const std::vector<std::string>& argv);

}  // namespace tools
}  // namespace pstrain

#endif  // PSTRAIN_TOOLS_IM2REC_H_
