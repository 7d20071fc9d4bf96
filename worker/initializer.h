// Parameter initializers by fit.py's --initializer names.
#ifndef PSTRAIN_WORKER_INITIALIZER_H_
#define PSTRAIN_WORKER_INITIALIZER_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "nn/network.h"

namespace pstrain {
namespace worker {

// Initializes every parameter of `net`, seeded:
// - "xavier" (also "default"): nn::InitializeXavier, which is fit.py's
//   default mx.init.Xavier(rnd_type="gaussian", factor_type="in",
//   magnitude=2);
// - "msra": MXNet's mx.init.MSRAPrelu() (slope 0.25) for the weights, i.e.
//   N(0, sqrt(magnitude / ((fan_in + fan_out) / 2))) with magnitude
//   2 / (1 + 0.25^2);
// - "normal": MXNet's mx.init.Normal() (N(0, 0.01)) for the weights, what
//   fit.py uses for AlexNet;
// and for "msra" and "normal" every other parameter (biases, ...) as
// "xavier".
// Returns InvalidArgument naming --initializer for another name.
absl::Status InitializeParams(nn::Network* net, const std::string& name,
                              uint32_t seed);

}  // namespace worker
}  // namespace pstrain

#endif  // PSTRAIN_WORKER_INITIALIZER_H_
