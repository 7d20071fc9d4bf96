#include "worker/validation.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "glog/logging.h"
#include "util/status.h"

namespace pstrain {
namespace worker {

absl::StatusOr<Metrics> Validate(Replicas* replicas, data::Pipeline* pipeline,
                                 int64_t records, int num_classes, int top_k,
                                 kvstore::KVStore* kv,
                                 absl::Duration wait_timeout) {
  CHECK(pipeline != nullptr || records == 0);
  Metrics vm(top_k, false);
  const int batch_size = replicas->batch_size();
  const int64_t batches = (records + batch_size - 1) / batch_size;
  if (pipeline != nullptr) pipeline->StartEpoch(0);
  for (int64_t b = 0; b < batches; ++b) {
    auto batch = pipeline->Next(absl::Now() + wait_timeout);
    if (!batch.ok()) return Annotate(batch.status(), "--data_val");
    PSTRAIN_RETURN_IF_ERROR(Annotate(
        replicas->Step(std::move(batch->data), std::move(batch->labels),
                       /*backward=*/false, absl::Now() + wait_timeout),
        "validation"));
    // The last batch wraps around: count only the real samples.
    const int64_t real =
        std::min<int64_t>(batch_size, records - b * batch_size);
    for (int d = 0; d < replicas->size(); ++d) {
      const int64_t mine =
          std::clamp<int64_t>(real - d * replicas->per_device_batch(), 0,
                              replicas->per_device_batch());
      PSTRAIN_RETURN_IF_ERROR(Annotate(
          vm.Update(
              replicas->probabilities(d).span().subspan(0, mine * num_classes),
              replicas->labels(d).subspan(0, mine), num_classes),
          "validation"));
    }
  }
  // Every worker reports the metrics over the whole validation set.
  std::vector<double> sums = vm.Sums();
  std::vector<float> mine(sums.begin(), sums.end()), all(sums.size());
  PSTRAIN_RETURN_IF_ERROR(
      Annotate(kv->AllReduceSum(-1, mine, absl::MakeSpan(all),
                                absl::Now() + wait_timeout),
               "combining validation metrics"));
  Metrics combined(top_k, false);
  combined.AddSums(std::vector<double>(all.begin(), all.end()));
  return combined;
}

}  // namespace worker
}  // namespace pstrain
