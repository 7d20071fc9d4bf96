// score: a trained model's accuracy on a .rec validation set (see
// tools/score.h).
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "tools/preprocess_flags.h"
#include "tools/score.h"
#include "util/flags.h"

DEFINE_string(symbol, "", "The model's MXNet symbol: PREFIX-symbol.json.");
DEFINE_string(params, "",
              "Its parameters: PREFIX-NNNN.params (MXNet's NDArray list; "
              "every parameter of the symbol must be in it).");
DEFINE_string(data_val, "", "Validation .rec file or folder of .rec files.");
DEFINE_int32(top_k, 5, "Also report top-k accuracy (1: top-1 only).");
DEFINE_int32(batch_size, 64,
             "Images per forward pass; the last batch is padded and only its "
             "real records count.");
DEFINE_int32(data_nthreads, 2, "Decode/preprocess threads.");
DEFINE_double(max_corrupt_fraction, 0.001,
              "As the worker's: stop when more than this fraction of the "
              "records are corrupt; those within it are skipped, counted and "
              "left out of the accuracy and the dump.");
DEFINE_int64(max_corrupt_records, -1,
             "Also stop past this many corrupt records; -1: no cap.");
DEFINE_string(dump, "",
              "Write the output probabilities, records in .rec order: F.npy "
              "(float32 [records, classes], numpy.load reads it) or F.csv "
              "(id,label,p0,...: the record header's id and label).");
DEFINE_double(progress_seconds, 5,
              "Seconds between progress lines on stderr; 0 disables.");

int main(int argc, char** argv) {
  constexpr char kProgram[] = "score";
  pstrain::ParseFlagsOrExit(
      {kProgram,
       absl::StrCat(
           "score --symbol PREFIX-symbol.json --params PREFIX-0010.params "
           "--data_val val.rec\n      [--top_k 5] [--batch_size 64] [--dump "
           "probs.npy|probs.csv] [preprocessing flags]\n"
           "Prints top-1 and top-k accuracy, images/s and (up to ",
           pstrain::tools::kMaxConfusionClasses,
           " classes) the confusion matrix.\n",
           pstrain::tools::kPreprocessingHelp),
       {{__FILE__, "Flags"}, pstrain::tools::PreprocessFlagGroup()}},
      {argv, argv + argc});
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  auto pre = pstrain::tools::PreprocessOptionsFromFlags();
  if (!pre.ok()) pstrain::ExitWithError(kProgram, pre.status().message());
  pstrain::tools::ScoreOptions o;
  o.symbol = FLAGS_symbol;
  o.params = FLAGS_params;
  o.data_val = FLAGS_data_val;
  o.preprocess = *pre;
  o.batch_size = FLAGS_batch_size;
  o.top_k = FLAGS_top_k;
  o.data_nthreads = FLAGS_data_nthreads;
  o.max_corrupt_fraction = FLAGS_max_corrupt_fraction;
  o.max_corrupt_records = FLAGS_max_corrupt_records;
  o.dump = FLAGS_dump;
  o.progress_seconds = FLAGS_progress_seconds;
  auto result = pstrain::tools::Score(o, &std::cerr);
  if (!result.ok()) pstrain::ExitWithError(kProgram, result.status().message());
  std::cout << pstrain::tools::FormatScore(*result);
  if (!o.dump.empty()) {
    std::cout << "Wrote " << o.dump << " (" << result->scored << " records x "
              << result->classes << " classes)\n";
  }
  return 0;
}
