// The worker's preprocessing flags for the tools that run a trained model
// on images (score, predict): --image_shape, --resize, --rgb_mean and
// --rgb_std, with the worker's names, defaults and parsing, so that a
// model's worker flag file gives them.
//
// Like cluster/cluster_flags.h, an exception to "DEFINE_* only in main.cc"
// (STYLE.md): both tools must take them alike. Only binaries link this
// target; libraries take tools::PreprocessOptions.
#ifndef PSTRAIN_TOOLS_PREPROCESS_FLAGS_H_
#define PSTRAIN_TOOLS_PREPROCESS_FLAGS_H_

#include "absl/status/statusor.h"
#include "tools/score.h"
#include "util/flags.h"

namespace pstrain {
namespace tools {

// The flags above, for ProgramHelp::groups.
FlagGroup PreprocessFlagGroup();

// The flags' values, parsed as the worker parses them. InvalidArgument
// naming the flag for a value that does not parse (the values themselves
// are checked by ValidationAugment). Reads the flags: call after parsing
// them (not thread-safe).
absl::StatusOr<PreprocessOptions> PreprocessOptionsFromFlags();

}  // namespace tools
}  // namespace pstrain

#endif  // PSTRAIN_TOOLS_PREPROCESS_FLAGS_H_
