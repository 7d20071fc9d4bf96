// predict: the top classes of image files under a trained model (see
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
DEFINE_string(synset, "",
              "Class names, MXNet's synset.txt: one a line, line i for class "
              "i (e.g. \"n01440764 tench, Tinca tinca\").");
DEFINE_int32(top_k, 5, "Classes shown per image (at most the network's).");
DEFINE_int32(batch_size, 16, "Images per forward pass.");

int main(int argc, char** argv) {
  constexpr char kProgram[] = "predict";
  const std::vector<std::string> args = pstrain::ParseFlagsOrExit(
      {kProgram,
       absl::StrCat(
           "predict --symbol PREFIX-symbol.json --params PREFIX-0010.params "
           "[--synset synset.txt]\n        [--top_k 5] [preprocessing flags] "
           "IMAGE...\n"
           "Prints each image's path, then its top-k classes: probability, "
           "class, name.\nAn image that does not read or decode is reported "
           "and skipped (exit code 1).\n",
           pstrain::tools::kPreprocessingHelp),
       {{__FILE__, "Flags"}, pstrain::tools::PreprocessFlagGroup()},
       /*takes_arguments=*/true},
      {argv, argv + argc});
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  auto pre = pstrain::tools::PreprocessOptionsFromFlags();
  if (!pre.ok()) pstrain::ExitWithError(kProgram, pre.status().message());
  pstrain::tools::PredictOptions o;
  o.symbol = FLAGS_symbol;
  o.params = FLAGS_params;
  o.synset = FLAGS_synset;
  o.preprocess = *pre;
  o.top_k = FLAGS_top_k;
  o.batch_size = FLAGS_batch_size;
  const std::vector<std::string> images(args.begin() + 1, args.end());
  auto failed = pstrain::tools::Predict(o, images, &std::cout, &std::cerr);
  if (!failed.ok()) pstrain::ExitWithError(kProgram, failed.status().message());
  return *failed > 0 ? 1 : 0;
}
