// Validation after an epoch (fit.py's eval_data): a forward-only pass over
// a worker's part of the validation set, with the metrics of every worker
// summed through the KVStore so that each reports the whole set's.
#ifndef PSTRAIN_WORKER_VALIDATION_H_
#define PSTRAIN_WORKER_VALIDATION_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "data/pipeline.h"
#include "kvstore/kvstore.h"
#include "worker/metrics.h"
#include "worker/replicas.h"

namespace pstrain {
namespace worker {

// Runs the `records` records of this worker's part through `replicas` in
// inference mode, ceil(records / replicas->batch_size()) batches from
// `pipeline` (epoch 0; the last batch wraps around and only its real
// samples count), and returns the metrics (top-k per `top_k`, as Metrics)
// summed over every worker with KVStore::AllReduceSum on slot -1; every
// worker must call it, in the same order as its other AllReduceSum calls.
// `pipeline` may be null only when `records` is 0 (an empty part still
// takes part in the sum). Every blocking call waits at most `wait_timeout`.
// Errors name what failed: "--data_val: ..." (the pipeline), "validation:
// ..." (a replica step or the metrics), "combining validation metrics:
// ..." (the KVStore). The replicas' probabilities and labels are
// overwritten; their weights are not touched.
absl::StatusOr<Metrics> Validate(Replicas* replicas, data::Pipeline* pipeline,
                                 int64_t records, int num_classes, int top_k,
                                 kvstore::KVStore* kv,
                                 absl::Duration wait_timeout);

}  // namespace worker
}  // namespace pstrain

#endif  // PSTRAIN_WORKER_VALIDATION_H_
