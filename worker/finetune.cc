#include "worker/finetune.h"

#include <regex.h>

#include <algorithm>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "checkpoint/ndarray_list.h"
#include "kernels/tensor.h"
#include "util/status.h"

namespace pstrain {
namespace worker {

absl::StatusOr<Pretrained> ParsePretrained(const std::string& text) {
  const size_t comma = text.rfind(',');
  Pretrained p;
  if (comma == std::string::npos || comma == 0 ||
      !absl::SimpleAtoi(text.substr(comma + 1), &p.epoch) || p.epoch < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--pretrained '", text,
                     "': must be PREFIX,EPOCH (e.g. models/lenet,10 for "
                     "models/lenet-0010.params)"));
  }
  p.prefix = text.substr(0, comma);
  return p;
}

absl::StatusOr<PretrainedLoad> LoadPretrained(const std::string& path,
                                              nn::Network* net) {
  PSTRAIN_ASSIGN_OR_RETURN(std::vector<checkpoint::NDArray> arrays,
                           checkpoint::ReadNDArrayListFile(path));
  const std::vector<nn::Param*>& classifier = net->node_params(net->last());
  std::set<const nn::Param*> set;
  PretrainedLoad out;
  for (const auto& a : arrays) {
    const std::string name = a.name.substr(a.name.find(':') + 1);
    nn::Param* p = net->FindParam(name);
    if (p == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": array ", a.name,
                       " is no parameter of the network (is the file from "
                       "another network?)"));
    }
    if (p->value.shape() != a.shape) {
      if (std::count(classifier.begin(), classifier.end(), p) > 0) continue;
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": array ", a.name, " is ", kernels::ShapeToString(a.shape),
          " but the network's ", name, " is ", p->value.ShapeString()));
    }
    if (a.dtype != checkpoint::DType::kFloat32) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": array ", a.name, " is not float32"));
    }
    PSTRAIN_ASSIGN_OR_RETURN(std::vector<float> v, a.ToFloats());
    std::copy(v.begin(), v.end(), p->value.data());
    set.insert(p);
    ++out.loaded;
  }
  for (const nn::Param* p : net->params()) {
    if (set.count(p) == 0) out.fresh.push_back(p->name);
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> FixParams(const std::string& regex,
                                                   nn::Network* net) {
  std::vector<std::string> fixed;
  if (regex.empty()) return fixed;
  regex_t re;
  const std::string anchored = absl::StrCat("^(", regex, ")$");
  const int rc = regcomp(&re, anchored.c_str(), REG_EXTENDED | REG_NOSUB);
  if (rc != 0) {
    char why[256];
    regerror(rc, &re, why, sizeof(why));
    return absl::InvalidArgumentError(
        absl::StrCat("--fixed_params '", regex, "': ", why));
  }
  for (nn::Param* p : net->params()) {
    if (p->aux || regexec(&re, p->name.c_str(), 0, nullptr, 0) != 0) continue;
    p->fixed = true;
    fixed.push_back(p->name);
  }
  regfree(&re);
  if (fixed.empty()) {
    std::vector<std::string> names;
    for (const nn::Param* p : net->params()) {
      if (!p->aux && names.size() < 6) names.push_back(p->name);
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "--fixed_params '", regex,
        "' matches no learned parameter (the whole name must match; they "
        "are named like ",
        absl::StrJoin(names, ", "), ", ...)"));
  }
  return fixed;
}

}  // namespace worker
}  // namespace pstrain
