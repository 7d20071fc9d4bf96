// The library behind `score` (a trained model's accuracy on a .rec
// validation set, with an optional dump of its output probabilities) and
// `predict` (the top classes of image files): the worker's validation
// preprocessing, loading an MXNet-layout checkpoint, top-k, the confusion
// matrix, the .npy and .csv writers and synset files.
//
// Preprocessing is the worker's validation path itself (not a copy):
// worker::AugmentFor(options, /*train=*/false) gives the options and
// data::DecodeImage + data::Augment apply them, in the data::Pipeline for
// score and directly for predict's image files.
#ifndef PSTRAIN_TOOLS_SCORE_H_
#define PSTRAIN_TOOLS_SCORE_H_

#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "data/augment.h"
#include "nn/network.h"

namespace pstrain {
namespace tools {

// What --help says about the preprocessing of both tools.
extern const char kPreprocessingHelp[];

// The worker's preprocessing flags (worker --help), with its defaults.
struct PreprocessOptions {
  std::vector<int64_t> image_shape = {1, 28, 28};  // --image_shape C,H,W.
  int resize = 0;                                  // --resize.
  float mean[3] = {0, 0, 0};                       // --rgb_mean (R, G, B).
  float std[3] = {1, 1, 1};                        // --rgb_std.
};

// The augmentation the worker applies to --data_val for these flags:
// worker::AugmentFor(options, false) (decode, shorter edge resized to
// --resize when > 0, center crop to H x W, BGR -> RGB, (pixel - mean) / std
// into float32 CHW). InvalidArgument naming the flag (the worker's checks)
// for a shape that is not C,H,W with C 1 or 3, or a zero --rgb_std.
absl::StatusOr<data::AugmentOptions> ValidationAugment(
    const PreprocessOptions& options);

// Decodes the encoded image `bytes` and preprocesses it with `augment`
// into `out` (C x H x W floats). DataLoss naming `source` when the bytes do
// not decode; Augment()'s errors, annotated with `source`.
// REQUIRES: `augment` from ValidationAugment(), out.size() == C * H * W.
absl::Status PreprocessImage(absl::string_view bytes,
                             const data::AugmentOptions& augment,
                             absl::string_view source, absl::Span<float> out);

// PreprocessImage() of the file at `path`; errors name the path.
absl::StatusOr<std::vector<float>> PreprocessImageFile(
    const std::string& path, const data::AugmentOptions& augment);

// The network of the MXNet symbol file `symbol_path`, built for batches of
// `batch` images of `image_shape`, with every parameter loaded from the
// .params file `params_path` (worker::LoadCheckpoint; a parameter missing
// from the file is an error). Errors start with "--symbol PATH: " or
// "--params PATH: ".
absl::StatusOr<std::unique_ptr<nn::Network>> LoadModel(
    const std::string& symbol_path, const std::string& params_path,
    const std::vector<int64_t>& image_shape, int batch);

// The indices of the min(k, probs.size()) largest entries of `probs`, the
// largest first; equal values in index order (so TopK(p, 1)[0] is the
// argmax the accuracy metric uses).
std::vector<int> TopK(absl::Span<const float> probs, int k);

// Confusion matrices are printed for at most this many classes.
inline constexpr int kMaxConfusionClasses = 20;

// Counts of (label, top-1 prediction). A value type; thread-compatible.
class ConfusionMatrix {
 public:
  // REQUIRES: classes > 0.
  explicit ConfusionMatrix(int classes);
  // REQUIRES: both in [0, classes).
  void Add(int label, int predicted);
  int64_t count(int label, int predicted) const;
  int classes() const { return classes_; }

  // A table with a title line, the predictions as columns and the labels
  // as rows; with more than kMaxConfusionClasses classes, one line saying
  // that it is omitted.
  std::string Format() const;

 private:
  int classes_;
  std::vector<int64_t> counts_;  // classes_ x classes_, row = label.
};

// NPY format 1.0 header for a C-order little-endian float32 array of shape
// (rows, cols): the magic "\x93NUMPY", version 1.0, the header length
// (uint16 LE) and the dict, space-padded and ending in '\n' so that the
// data starts at a multiple of 64 bytes.
std::string NpyHeader(int64_t rows, int64_t cols);

// Writes `values` (rows x cols, row-major) as a .npy file at `path`.
// Errors name the path. REQUIRES: values.size() == rows * cols.
absl::Status WriteNpy(const std::string& path, int64_t rows, int64_t cols,
                      absl::Span<const float> values);

// Writes a CSV file: the line "id,label,p0,...,pK-1" (K = classes), then
// one line per record: its header id, its label and its K probabilities
// (%.9g: each float32 exactly). Errors name the path.
// REQUIRES: ids.size() == labels.size(), probs.size() == ids.size() * K.
absl::Status WriteCsv(const std::string& path, absl::Span<const uint64_t> ids,
                      absl::Span<const float> labels,
                      absl::Span<const float> probs, int classes);

// The class names of an MXNet synset.txt, one per line ("n01440764 tench,
// Tinca tinca"), '\r' and trailing blank lines dropped. Errors name the
// path; InvalidArgument for a file without names or a blank line amid
// them.
absl::StatusOr<std::vector<std::string>> ReadSynset(const std::string& path);

struct ScoreOptions {
  std::string symbol;    // --symbol.
  std::string params;    // --params.
  std::string data_val;  // --data_val: a .rec file or a folder of them.
  PreprocessOptions preprocess;
  int batch_size = 64;
  int top_k = 5;  // 1: top-1 only.
  int data_nthreads = 2;
  // Corrupt records, as the worker's --max_corrupt_fraction/_records.
  double max_corrupt_fraction = 0.001;
  int64_t max_corrupt_records = -1;
  // "" (none), or a path ending in .npy or .csv.
  std::string dump;
  double progress_seconds = 5;  // <= 0: no progress lines.
};

struct ScoreResult {
  int64_t records = 0;  // In --data_val, corrupt ones included.
  int64_t scored = 0;   // Counted once each.
  int classes = 0;
  int top_k = 1;
  double top1 = 0;  // Accuracy over the scored records.
  double topk = 0;  // Top-k accuracy (top_k > 1).
  double seconds = 0;
  ConfusionMatrix confusion{1};
};

// Runs every record of options.data_val once through the model in
// inference mode, in batches of options.batch_size (the last one padded by
// wrapping around, only its real records counted), with the worker's
// validation pipeline (data::Pipeline, not shuffled); corrupt records are
// skipped and counted as the worker does. Writes options.dump (the scored
// records in record order). Progress lines ("score: 1280/10000 records,
// 523.4 images/s, ETA 17 s") go to `progress` every
// options.progress_seconds. Errors name the flag or file: a symbol, params
// or .rec that cannot be used, a label that is not a class of the network,
// --top_k outside [1, classes], a --dump that cannot be written.
absl::StatusOr<ScoreResult> Score(const ScoreOptions& options,
                                  std::ostream* progress);

// The report: "Records: ...", "Top-1 accuracy: 0.xxxx", "Top-K accuracy:
// ..." (top_k > 1), "Images/s: ...", the confusion matrix.
std::string FormatScore(const ScoreResult& result);

struct PredictOptions {
  std::string symbol;
  std::string params;
  std::string synset;  // Optional.
  PreprocessOptions preprocess;
  int top_k = 5;  // Shown: min(top_k, classes).
  int batch_size = 16;
};

// Prints the top classes of each image file to `out`, in order:
//   IMAGE
//     0.812345  3  n01440764 tench, Tinca tinca
// (probability, class, synset name when given). An image that cannot be
// read or decoded is reported on `err` ("predict: IMAGE: why") and
// skipped. Returns the number of such images; errors for the model, the
// synset (its line count must equal the network's classes) or the flags.
absl::StatusOr<int> Predict(const PredictOptions& options,
                            const std::vector<std::string>& images,
                            std::ostream* out, std::ostream* err);

}  // namespace tools
}  // namespace pstrain

#endif  // PSTRAIN_TOOLS_SCORE_H_
