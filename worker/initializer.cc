#include "worker/initializer.h"

#include <cmath>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace pstrain {
namespace worker {

absl::Status InitializeParams(nn::Network* net, const std::string& name,
                              uint32_t seed) {
  if (name == "xavier" || name == "default") {
    nn::InitializeXavier(net, seed);
    return absl::OkStatus();
  }
  if (name != "msra" && name != "normal") {
    return absl::InvalidArgumentError(
        absl::StrCat("--initializer ", name,
                     ": unknown; use xavier (the default), msra or normal"));
  }
  nn::InitializeXavier(net, seed);  // Biases and any non-weight parameter.
  constexpr double kSlope = 0.25;
  const double magnitude = 2.0 / (1.0 + kSlope * kSlope);
  std::mt19937 rng(seed);
  for (nn::Param* p : net->params()) {
    const auto& shape = p->value.shape();
    if (p->aux || shape.size() < 2 || !absl::EndsWith(p->name, "_weight"))
      continue;
    // MXNet's Xavier: fan_in = shape[1] * hw, fan_out = shape[0] * hw.
    double hw = 1;
    for (size_t i = 2; i < shape.size(); ++i)
      hw *= static_cast<double>(shape[i]);
    const double fan_in = static_cast<double>(shape[1]) * hw;
    const double fan_out = static_cast<double>(shape[0]) * hw;
    const double sigma = name == "normal"
                             ? 0.01
                             : std::sqrt(magnitude / ((fan_in + fan_out) / 2));
    std::normal_distribution<float> nd(0.0f, static_cast<float>(sigma));
    for (float& v : p->value.span()) v = nd(rng);
  }
  return absl::OkStatus();
}

}  // namespace worker
}  // namespace pstrain
