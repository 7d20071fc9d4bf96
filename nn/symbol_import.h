// MXNet models into pstrain: a network from an MXNet symbol JSON (what
// mod.save_checkpoint, mx.model.save_checkpoint or a Gluon export() write
// as PREFIX-symbol.json), with MXNet's operator names, attribute syntax and
// defaults, and its parameters under the symbol's variable names so that
// PREFIX-NNNN.params loads by name (worker/checkpointing.h).
//
// Operators (old and new names): Convolution, Pooling, FullyConnected,
// Activation / relu / sigmoid / tanh, Flatten / flatten, BatchNorm, LRN,
// Dropout, Concat / concat, elemwise_add / _Plus / _plus / broadcast_add /
// ElementWiseSum / add_n (two inputs of equal shape), _copy / identity, and
// a final SoftmaxOutput (the loss every pstrain network ends in). Anything
// else, or an attribute value pstrain does not compute exactly, is an error
// naming the node, the operator and the attribute: nothing is approximated.
// Attributes that change nothing in the results (workspace, cudnn_tune,
// cudnn_off, "__...__" annotations other than __lr_mult__/__wd_mult__) are
// accepted and ignored.
#ifndef PSTRAIN_NN_SYMBOL_IMPORT_H_
#define PSTRAIN_NN_SYMBOL_IMPORT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nn/network.h"

namespace pstrain {
namespace nn {

struct ImportOptions {
  // When positive and different from the symbol's, the network's last
  // layer, which must then be FullyConnected, gets this many outputs (a
  // fresh layer for fine-tuning, as MXNet's fine-tune.py makes; its
  // parameters keep their names and shapes change).
  int num_classes = 0;
  // Seeds the dropout layers' masks (the i-th dropout gets seed + i).
  uint64_t seed = 0;
};

// The network `json` describes, built for inputs [batch, C, H, W] where
// `image_shape` is {C, H, W}. Nodes keep the symbol's names, and
// SymbolJson() writes each operator node with the operator name and the
// attributes the symbol had. Per-variable __lr_mult__ and __wd_mult__
// override the default multipliers, as MXNet's optimizer does.
// InvalidArgument for a malformed JSON, a graph that is not one input to one
// output, or an unsupported operator or attribute (the message names the
// node); Build()'s errors for shapes that do not fit.
absl::StatusOr<std::unique_ptr<Network>> ImportSymbol(
    const std::string& json, const std::vector<int64_t>& image_shape, int batch,
    const ImportOptions& options = {});

// ImportSymbol() of the file at `path`; errors start with the path.
absl::StatusOr<std::unique_ptr<Network>> ImportSymbolFile(
    const std::string& path, const std::vector<int64_t>& image_shape, int batch,
    const ImportOptions& options = {});

}  // namespace nn
}  // namespace pstrain

#endif  // PSTRAIN_NN_SYMBOL_IMPORT_H_
