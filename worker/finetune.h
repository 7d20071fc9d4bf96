// Fine-tuning (MXNet's example/image-classification/fine-tune.py): start
// from a pretrained checkpoint's weights by name, with a fresh classifier
// when the class count differs, and freeze parameters by name.
#ifndef PSTRAIN_WORKER_FINETUNE_H_
#define PSTRAIN_WORKER_FINETUNE_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nn/network.h"

namespace pstrain {
namespace worker {

// --pretrained PREFIX,EPOCH.
struct Pretrained {
  std::string prefix;
  int epoch = 0;
};
// Parses "PREFIX,EPOCH" (the last comma splits; EPOCH >= 0).
// InvalidArgument naming --pretrained otherwise.
absl::StatusOr<Pretrained> ParsePretrained(const std::string& text);

// What LoadPretrained() did.
struct PretrainedLoad {
  int loaded = 0;                  // Arrays copied into the network.
  std::vector<std::string> fresh;  // Parameters left as initialized.
};

// Copies every array of the .params file at `path` ("arg:NAME" and
// "aux:NAME") into the parameter of `net` with that name. The arrays of
// the network's last layer (the classifier) are skipped when their shape
// differs, which happens when --num_classes differs from the checkpoint's:
// that layer stays freshly initialized, as fine-tune.py replaces it.
// Parameters the file lacks keep their values too (MXNet's allow_missing)
// and are listed in `fresh`. InvalidArgument naming the file and the
// array for an array no parameter has, or of another shape or dtype
// elsewhere in the network; the file's read errors.
absl::StatusOr<PretrainedLoad> LoadPretrained(const std::string& path,
                                              nn::Network* net);

// Marks the learned parameters of `net` whose whole name matches the POSIX
// extended regular expression `regex` as fixed (nn::Param::fixed: no
// gradient pushed, never updated) and returns their names. An empty regex
// fixes nothing. InvalidArgument naming --fixed_params for a regex that
// does not compile or matches no learned parameter.
absl::StatusOr<std::vector<std::string>> FixParams(const std::string& regex,
                                                   nn::Network* net);

}  // namespace worker
}  // namespace pstrain

#endif  // PSTRAIN_WORKER_FINETUNE_H_
