#include "tools/preprocess_flags.h"

#include <vector>

#include "gflags/gflags.h"
#include "util/status.h"
#include "worker/options.h"

// Names, defaults and help as the worker's (worker/main.cc).
DEFINE_string(image_shape, "1,28,28", "Input C,H,W.");
DEFINE_int32(resize, 0,
             "Resize the shorter edge to this many pixels first (<= 0: off).");
DEFINE_string(rgb_mean, "0,0,0",
              "Per-channel mean (pixel units), R,G,B or one value.");
DEFINE_string(rgb_std, "1,1,1", "Per-channel std (pixel units).");

namespace pstrain {
namespace tools {

FlagGroup PreprocessFlagGroup() {
  return {__FILE__, "Preprocessing (the worker's flags; its validation path)"};
}

absl::StatusOr<PreprocessOptions> PreprocessOptionsFromFlags() {
  PreprocessOptions o;
  PSTRAIN_ASSIGN_OR_RETURN(std::vector<int> shape,
                           worker::ParseInts("image_shape", FLAGS_image_shape));
  o.image_shape.assign(shape.begin(), shape.end());
  o.resize = FLAGS_resize;
  PSTRAIN_RETURN_IF_ERROR(
      worker::ParseChannelValues("rgb_mean", FLAGS_rgb_mean, 0, o.mean));
  PSTRAIN_RETURN_IF_ERROR(
      worker::ParseChannelValues("rgb_std", FLAGS_rgb_std, 1, o.std));
  return o;
}

}  // namespace tools
}  // namespace pstrain
