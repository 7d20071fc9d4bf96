// Checkpoints in MXNet's layout: PREFIX-symbol.json (the network) and
// PREFIX-%04d.params (an NDArray list of "arg:NAME" and "aux:NAME" arrays,
// checkpoint/ndarray_list.h), as mx.callback.do_checkpoint writes them and
// --load_epoch reads them back.
#ifndef PSTRAIN_WORKER_CHECKPOINTING_H_
#define PSTRAIN_WORKER_CHECKPOINTING_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nn/network.h"

namespace pstrain {
namespace worker {

// "PREFIX-0003.params" for `prefix` "PREFIX" and `epoch` 3.
std::string CheckpointParamsPath(const std::string& prefix, int epoch);

// Copies every array of the .params file at `path` into the parameter of
// `net` with its name (the part after "arg:"/"aux:"). Returns
// ReadNDArrayListFile's errors (which name the path), or InvalidArgument
// "PATH: array NAME does not fit the network" for an array whose name,
// size or dtype (float32 only) does not match a parameter of `net`; the
// parameters copied before it keep their new values. With
// `require_every_param` (as MXNet's load_params without allow_missing),
// also InvalidArgument "PATH: no array for the network's parameter NAME"
// when a parameter of `net` (auxiliary states included) is not in the file.
absl::Status LoadCheckpoint(const std::string& path, nn::Network* net,
                            bool require_every_param = false);

// Writes PREFIX-symbol.json and CheckpointParamsPath(prefix, epoch) from
// `net` (every parameter, auxiliary states included; the .params file
// atomically) and returns the .params path. Errors name the file that
// could not be written.
absl::StatusOr<std::string> SaveCheckpoint(const std::string& prefix, int epoch,
                                           nn::Network* net);

}  // namespace worker
}  // namespace pstrain

#endif  // PSTRAIN_WORKER_CHECKPOINTING_H_
