#include "worker/checkpointing.h"

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "checkpoint/ndarray_list.h"
#include "util/status.h"

namespace pstrain {
namespace worker {

std::string CheckpointParamsPath(const std::string& prefix, int epoch) {
  return absl::StrFormat("%s-%04d.params", prefix, epoch);
}

absl::Status LoadCheckpoint(const std::string& path, nn::Network* net,
                            bool require_every_param) {
  PSTRAIN_ASSIGN_OR_RETURN(std::vector<checkpoint::NDArray> arrays,
                           checkpoint::ReadNDArrayListFile(path));
  if (require_every_param) {
    std::set<std::string> names;
    for (const auto& a : arrays) {
      names.insert(a.name.substr(a.name.find(':') + 1));
    }
    for (nn::Param* p : net->params()) {
      if (names.count(p->name) == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": no array for the network's parameter ",
                         p->aux ? "aux:" : "arg:", p->name));
      }
    }
  }
  for (const auto& a : arrays) {
    const std::string name = a.name.substr(a.name.find(':') + 1);
    nn::Param* p = net->FindParam(name);
    if (p == nullptr || p->value.size() != a.num_elements() ||
        a.dtype != checkpoint::DType::kFloat32) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": array ", a.name, " does not fit the network"));
    }
    PSTRAIN_ASSIGN_OR_RETURN(std::vector<float> v, a.ToFloats());
    std::copy(v.begin(), v.end(), p->value.data());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> SaveCheckpoint(const std::string& prefix, int epoch,
                                           nn::Network* net) {
  std::vector<checkpoint::NDArray> arrays;
  for (nn::Param* p : net->params()) {
    std::vector<float> v(p->value.data(), p->value.data() + p->value.size());
    arrays.push_back(checkpoint::NDArray::FromFloats(
        absl::StrCat(p->aux ? "aux:" : "arg:", p->name), p->value.shape(), v));
  }
  const std::string symbol = prefix + "-symbol.json";
  std::ofstream out(symbol);
  if (!out) return ErrnoToStatus(errno, absl::StrCat("create ", symbol));
  out << net->SymbolJson();
  out.close();
  if (!out) return ErrnoToStatus(errno, absl::StrCat("write ", symbol));
  const std::string path = CheckpointParamsPath(prefix, epoch);
  PSTRAIN_RETURN_IF_ERROR(checkpoint::WriteNDArrayListFile(path, arrays));
  return path;
}

}  // namespace worker
}  // namespace pstrain
