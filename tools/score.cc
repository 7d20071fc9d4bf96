#include "tools/score.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <random>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "data/pipeline.h"
#include "data/record_source.h"
#include "glog/logging.h"
#include "kernels/cpu_ops.h"
#include "kernels/tensor.h"
#include "nn/symbol_import.h"
#include "util/file.h"
#include "util/flags.h"
#include "util/status.h"
#include "worker/checkpointing.h"
#include "worker/metrics.h"
#include "worker/options.h"
#include "worker/trainer.h"

namespace pstrain {
namespace tools {
namespace {

// How long score waits for one batch from the pipeline (the worker's
// kWaitTimeout).
constexpr absl::Duration kWaitTimeout = absl::Minutes(10);

std::string ShapeText(const std::vector<int64_t>& shape) {
  return absl::StrJoin(shape, ",");
}

bool IsClass(float label, int classes) {
  return label >= 0 && label < classes && label == std::floor(label);
}

std::string Eta(double seconds) {
  if (!(seconds >= 0) || seconds > 1e7) return "?";
  const int64_t s = static_cast<int64_t>(std::lround(seconds));
  if (s < 60) return absl::StrCat(s, " s");
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%dh%02dm", s / 3600, s % 3600 / 60);
}

// The error of a file that could not be written: "write PATH: why".
absl::Status WriteError(const std::string& path) {
  return ErrnoToStatus(errno, absl::StrCat("write ", path));
}

absl::Status CheckDumpPath(const std::string& path) {
  if (path.empty()) return absl::OkStatus();
  if (!absl::EndsWith(path, ".npy") && !absl::EndsWith(path, ".csv")) {
    return BadFlag("dump", path, "must end in .npy or .csv");
  }
  // Found out now, not after the whole set has been scored.
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) {
    return Annotate(ErrnoToStatus(errno, absl::StrCat("create ", path)),
                    "--dump");
  }
  return absl::OkStatus();
}

}  // namespace

const char kPreprocessingHelp[] =
    "Preprocessing is the worker's validation path (--data_val), the same "
    "code:\ndecode (OpenCV), shorter edge resized to --resize when > 0, "
    "center crop to\nthe H,W of --image_shape, BGR -> RGB, (pixel - "
    "--rgb_mean) / --rgb_std into\nfloat32 C,H,W. No random augmentation. "
    "Give the flags the model was trained\nwith (its worker flag file "
    "works: --flagfile, --undefok for the other flags).";

absl::StatusOr<data::AugmentOptions> ValidationAugment(
    const PreprocessOptions& options) {
  worker::TrainerOptions o;
  o.image_shape = options.image_shape;
  o.augment.resize = options.resize;
  std::copy(options.mean, options.mean + 3, o.augment.mean);
  std::copy(options.std, options.std + 3, o.augment.std);
  // The worker's checks of these flags (the other options keep their valid
  // defaults).
  PSTRAIN_RETURN_IF_ERROR(worker::ValidateTrainerOptions(o));
  return worker::AugmentFor(o, /*train=*/false);
}

absl::Status PreprocessImage(absl::string_view bytes,
                             const data::AugmentOptions& augment,
                             absl::string_view source, absl::Span<float> out) {
  PSTRAIN_ASSIGN_OR_RETURN(cv::Mat image,
                           data::DecodeImage(bytes, augment.channels, source));
  // Validation draws no random numbers; Augment() takes a generator anyway.
  std::mt19937 rng(0);
  return Annotate(data::Augment(image, augment, &rng, out), source);
}

absl::StatusOr<std::vector<float>> PreprocessImageFile(
    const std::string& path, const data::AugmentOptions& augment) {
  PSTRAIN_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path, "image"));
  std::vector<float> out(static_cast<size_t>(augment.channels) *
                         augment.height * augment.width);
  PSTRAIN_RETURN_IF_ERROR(
      PreprocessImage(bytes, augment, path, absl::MakeSpan(out)));
  return out;
}

absl::StatusOr<std::unique_ptr<nn::Network>> LoadModel(
    const std::string& symbol_path, const std::string& params_path,
    const std::vector<int64_t>& image_shape, int batch) {
  if (symbol_path.empty()) return BadFlag("symbol", "", "required");
  if (params_path.empty()) return BadFlag("params", "", "required");
  auto net = nn::ImportSymbolFile(symbol_path, image_shape, batch);
  if (!net.ok()) {
    return Annotate(net.status(), absl::StrCat("--symbol (with --image_shape ",
                                               ShapeText(image_shape), ")"));
  }
  PSTRAIN_RETURN_IF_ERROR(
      Annotate(worker::LoadCheckpoint(params_path, net->get(),
                                      /*require_every_param=*/true),
               "--params"));
  return std::move(*net);
}

std::vector<int> TopK(absl::Span<const float> probs, int k) {
  std::vector<int> idx(probs.size());
  std::iota(idx.begin(), idx.end(), 0);
  const size_t n = std::min<size_t>(std::max(k, 0), idx.size());
  std::partial_sort(idx.begin(), idx.begin() + n, idx.end(), [&](int a, int b) {
    return probs[a] > probs[b] || (probs[a] == probs[b] && a < b);
  });
  idx.resize(n);
  return idx;
}

ConfusionMatrix::ConfusionMatrix(int classes)
    : classes_(classes), counts_(static_cast<size_t>(classes) * classes, 0) {
  CHECK_GT(classes, 0);
}

void ConfusionMatrix::Add(int label, int predicted) {
  CHECK(label >= 0 && label < classes_) << label;
  CHECK(predicted >= 0 && predicted < classes_) << predicted;
  ++counts_[static_cast<size_t>(label) * classes_ + predicted];
}

int64_t ConfusionMatrix::count(int label, int predicted) const {
  return counts_[static_cast<size_t>(label) * classes_ + predicted];
}

std::string ConfusionMatrix::Format() const {
  if (classes_ > kMaxConfusionClasses) {
    return absl::StrCat("Confusion matrix: omitted (", classes_,
                        " classes, more than ", kMaxConfusionClasses, ")\n");
  }
  const int64_t most = *std::max_element(counts_.begin(), counts_.end());
  const int width =
      1 + static_cast<int>(std::max(absl::StrCat(most).size(),
                                    absl::StrCat(classes_ - 1).size()));
  const std::string corner = "label\\pred";
  std::string s =
      "Confusion matrix (rows: label, columns: top-1 prediction):\n";
  absl::StrAppend(&s, corner);
  for (int p = 0; p < classes_; ++p) {
    absl::StrAppend(&s, absl::StrFormat("%*d", width, p));
  }
  absl::StrAppend(&s, "\n");
  for (int l = 0; l < classes_; ++l) {
    absl::StrAppend(&s,
                    absl::StrFormat("%*d", static_cast<int>(corner.size()), l));
    for (int p = 0; p < classes_; ++p) {
      absl::StrAppend(&s, absl::StrFormat("%*d", width, count(l, p)));
    }
    absl::StrAppend(&s, "\n");
  }
  return s;
}

std::string NpyHeader(int64_t rows, int64_t cols) {
  std::string dict =
      absl::StrCat("{'descr': '<f4', 'fortran_order': False, 'shape': (", rows,
                   ", ", cols, "), }");
  // Magic (6) + version (2) + header length (2) + dict + padding + '\n'.
  const size_t unpadded = 10 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict.push_back('\n');
  const size_t len = dict.size();
  CHECK_LT(len, 65536u);
  std::string out("\x93NUMPY\x01\x00", 8);
  out.push_back(static_cast<char>(len & 0xff));
  out.push_back(static_cast<char>(len >> 8));
  return out + dict;
}

absl::Status WriteNpy(const std::string& path, int64_t rows, int64_t cols,
                      absl::Span<const float> values) {
  CHECK_EQ(static_cast<int64_t>(values.size()), rows * cols);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) return ErrnoToStatus(errno, absl::StrCat("create ", path));
  f << NpyHeader(rows, cols);
  // float32 little-endian: the host's layout on every machine we build for.
  static_assert(sizeof(float) == 4, "float32");
  const uint32_t one = 1;
  CHECK_EQ(*reinterpret_cast<const uint8_t*>(&one), 1) << "big-endian host";
  f.write(reinterpret_cast<const char*>(values.data()),
          static_cast<std::streamsize>(values.size() * sizeof(float)));
  f.close();
  if (!f) return WriteError(path);
  return absl::OkStatus();
}

absl::Status WriteCsv(const std::string& path, absl::Span<const uint64_t> ids,
                      absl::Span<const float> labels,
                      absl::Span<const float> probs, int classes) {
  CHECK_EQ(ids.size(), labels.size());
  CHECK_EQ(probs.size(), ids.size() * classes);
  std::ofstream f(path, std::ios::trunc);
  if (!f) return ErrnoToStatus(errno, absl::StrCat("create ", path));
  f << "id,label";
  for (int c = 0; c < classes; ++c) f << ",p" << c;
  f << "\n";
  std::string line;
  for (size_t r = 0; r < ids.size(); ++r) {
    line = absl::StrFormat("%d,%g", ids[r], labels[r]);
    for (int c = 0; c < classes; ++c) {
      absl::StrAppendFormat(&line, ",%.9g", probs[r * classes + c]);
    }
    line.push_back('\n');
    f << line;
  }
  f.close();
  if (!f) return WriteError(path);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ReadSynset(const std::string& path) {
  PSTRAIN_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, "synset"));
  std::vector<std::string> names = absl::StrSplit(text, '\n');
  for (auto& n : names) {
    if (!n.empty() && n.back() == '\r') n.pop_back();
  }
  while (!names.empty() && names.back().empty()) names.pop_back();
  if (names.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": no class names (one a line expected)"));
  }
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": line ", i + 1, " is blank (one class name a line)"));
    }
  }
  return names;
}

absl::StatusOr<ScoreResult> Score(const ScoreOptions& o,
                                  std::ostream* progress) {
  if (o.data_val.empty()) return BadFlag("data_val", "", "required");
  if (o.batch_size < 1 || o.batch_size > worker::kMaxBatchSize) {
    return BadFlag("batch_size", o.batch_size,
                   absl::StrCat("must be in [1, ", worker::kMaxBatchSize, "]"));
  }
  if (o.top_k < 1) return BadFlag("top_k", o.top_k, "must be >= 1");
  if (o.data_nthreads < 1) {
    return BadFlag("data_nthreads", o.data_nthreads, "must be >= 1");
  }
  if (!(o.max_corrupt_fraction >= 0 && o.max_corrupt_fraction <= 1)) {
    return BadFlag("max_corrupt_fraction", o.max_corrupt_fraction,
                   "must be in [0, 1]");
  }
  PSTRAIN_ASSIGN_OR_RETURN(data::AugmentOptions augment,
                           ValidationAugment(o.preprocess));
  PSTRAIN_RETURN_IF_ERROR(CheckDumpPath(o.dump));

  auto source = data::RecordSource::Open(o.data_val, 0, 1);
  if (!source.ok()) return Annotate(source.status(), "--data_val");
  data::RecordSource& src = **source;
  const recordio::SkipStats loss = src.loss();
  if (src.size() == 0) {
    return absl::DataLossError(absl::StrCat(
        "--data_val ", o.data_val, ": holds no record",
        loss.corrupt_records > 0
            ? absl::StrCat(" that reads; the first corrupt one: ", loss.first)
            : ""));
  }
  PSTRAIN_ASSIGN_OR_RETURN(
      std::unique_ptr<nn::Network> net,
      LoadModel(o.symbol, o.params, o.preprocess.image_shape, o.batch_size));
  const int classes = net->num_classes();
  if (o.top_k > classes) {
    return BadFlag(
        "top_k", o.top_k,
        absl::StrCat("must be in [1, ", classes, "], the network's classes"));
  }

  const int64_t n = src.size();
  const int64_t batches = (n + o.batch_size - 1) / o.batch_size;
  data::PipelineOptions p;
  p.batch_size = o.batch_size;
  p.batches_per_epoch = batches;
  p.num_threads = o.data_nthreads;
  p.shuffle = false;
  p.augment = augment;
  p.max_corrupt_fraction = o.max_corrupt_fraction;
  p.max_corrupt_records = o.max_corrupt_records;
  auto pipeline = data::Pipeline::Create(&src, p);
  if (!pipeline.ok()) return Annotate(pipeline.status(), "--data_val");

  ScoreResult result;
  result.records = n + loss.corrupt_records;
  result.classes = classes;
  result.top_k = o.top_k;
  result.confusion = ConfusionMatrix(classes);
  worker::Metrics metrics(o.top_k, false);
  // What the dump holds, in the order first scored.
  std::vector<int64_t> rows;
  std::vector<uint64_t> ids;
  std::vector<float> labels, probs;
  // A record appears twice when the last batch wraps around or when a
  // corrupt record before it was replaced: it counts once.
  std::vector<bool> seen(n, false);

  const std::vector<int64_t>& shape = o.preprocess.image_shape;
  kernels::Tensor x({o.batch_size, shape[0], shape[1], shape[2]});
  kernels::CpuContext ctx;
  const absl::Time start = absl::Now();
  absl::Time last_progress = start;
  (*pipeline)->StartEpoch(0);
  for (int64_t b = 0; b < batches; ++b) {
    auto batch = (*pipeline)->Next(absl::Now() + kWaitTimeout);
    if (!batch.ok()) return Annotate(batch.status(), "--data_val");
    CHECK_EQ(batch->data.size(), static_cast<size_t>(x.size()));
    for (int i = 0; i < o.batch_size; ++i) {
      if (!IsClass(batch->labels[i], classes)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--data_val ", src.Describe(batch->records[i]), ": label ",
            batch->labels[i], " is not a class of the network (0 to ",
            classes - 1, ")"));
      }
    }
    std::copy(batch->data.begin(), batch->data.end(), x.data());
    auto forward = net->Forward(&ctx, x, batch->labels, nn::Mode::kInference);
    if (!forward.ok()) return Annotate(forward.status(), "scoring");
    absl::Span<const float> out = net->probabilities().span();
    for (int i = 0; i < o.batch_size; ++i) {
      const int64_t rec = batch->records[i];
      if (seen[rec]) continue;
      seen[rec] = true;
      absl::Span<const float> row = out.subspan(i * classes, classes);
      absl::Span<const float> label(&batch->labels[i], 1);
      PSTRAIN_RETURN_IF_ERROR(metrics.Update(row, label, classes));
      result.confusion.Add(static_cast<int>(label[0]), TopK(row, 1)[0]);
      ++result.scored;
      if (!o.dump.empty()) {
        rows.push_back(rec);
        ids.push_back(batch->ids[i]);
        labels.push_back(label[0]);
        probs.insert(probs.end(), row.begin(), row.end());
      }
    }
    const absl::Time now = absl::Now();
    if (progress != nullptr && o.progress_seconds > 0 &&
        now - last_progress >= absl::Seconds(o.progress_seconds) &&
        b + 1 < batches) {
      last_progress = now;
      const double rate = result.scored / absl::ToDoubleSeconds(now - start);
      *progress << absl::StrFormat(
                       "score: %d/%d records, %.1f images/s, ETA %s\n",
                       result.scored, n, rate, Eta((n - result.scored) / rate))
                << std::flush;
    }
  }
  result.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  for (const auto& [name, value] : metrics.NameValues()) {
    if (name == "accuracy") {
      result.top1 = value;
    } else if (absl::StartsWith(name, "top_k_accuracy")) {
      result.topk = value;
    }
  }

  if (!o.dump.empty()) {
    // Record order (first appearances already are; this makes it so).
    std::vector<size_t> order(rows.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return rows[a] < rows[b]; });
    std::vector<uint64_t> sorted_ids;
    std::vector<float> sorted_labels, sorted_probs;
    for (size_t r : order) {
      sorted_ids.push_back(ids[r]);
      sorted_labels.push_back(labels[r]);
      sorted_probs.insert(sorted_probs.end(), probs.begin() + r * classes,
                          probs.begin() + (r + 1) * classes);
    }
    const int64_t count = static_cast<int64_t>(order.size());
    absl::Status written = absl::EndsWith(o.dump, ".npy")
                               ? WriteNpy(o.dump, count, classes, sorted_probs)
                               : WriteCsv(o.dump, sorted_ids, sorted_labels,
                                          sorted_probs, classes);
    PSTRAIN_RETURN_IF_ERROR(Annotate(written, "--dump"));
  }
  return result;
}

std::string FormatScore(const ScoreResult& r) {
  std::string s = absl::StrCat("Records: ", r.scored, " scored of ", r.records);
  if (r.records > r.scored) {
    absl::StrAppend(&s, " (", r.records - r.scored, " corrupt, skipped)");
  }
  absl::StrAppend(&s, ", ", r.classes, " classes\n");
  absl::StrAppendFormat(&s, "Top-1 accuracy: %.4f\n", r.top1);
  if (r.top_k > 1) {
    absl::StrAppendFormat(&s, "Top-%d accuracy: %.4f\n", r.top_k, r.topk);
  }
  absl::StrAppendFormat(&s, "Images/s: %.1f\n",
                        r.seconds > 0 ? r.scored / r.seconds : 0.0);
  absl::StrAppend(&s, r.confusion.Format());
  return s;
}

absl::StatusOr<int> Predict(const PredictOptions& o,
                            const std::vector<std::string>& images,
                            std::ostream* out, std::ostream* err) {
  if (o.top_k < 1) return BadFlag("top_k", o.top_k, "must be >= 1");
  if (o.batch_size < 1 || o.batch_size > worker::kMaxBatchSize) {
    return BadFlag("batch_size", o.batch_size,
                   absl::StrCat("must be in [1, ", worker::kMaxBatchSize, "]"));
  }
  if (images.empty()) {
    return absl::InvalidArgumentError("no IMAGE given (see --help)");
  }
  PSTRAIN_ASSIGN_OR_RETURN(data::AugmentOptions augment,
                           ValidationAugment(o.preprocess));
  std::vector<std::string> synset;
  if (!o.synset.empty()) {
    auto names = ReadSynset(o.synset);
    if (!names.ok()) return Annotate(names.status(), "--synset");
    synset = std::move(*names);
  }
  const int batch =
      static_cast<int>(std::min<size_t>(o.batch_size, images.size()));
  PSTRAIN_ASSIGN_OR_RETURN(
      std::unique_ptr<nn::Network> net,
      LoadModel(o.symbol, o.params, o.preprocess.image_shape, batch));
  const int classes = net->num_classes();
  if (!synset.empty() && static_cast<int>(synset.size()) != classes) {
    return absl::InvalidArgumentError(
        absl::StrCat("--synset ", o.synset, ": ", synset.size(),
                     " class names for a network of ", classes, " classes"));
  }
  const std::vector<int64_t>& shape = o.preprocess.image_shape;
  const size_t per_image = static_cast<size_t>(shape[0] * shape[1] * shape[2]);
  kernels::Tensor x({batch, shape[0], shape[1], shape[2]});
  const std::vector<float> labels(batch, 0.0f);
  kernels::CpuContext ctx;
  int failed = 0;
  for (size_t first = 0; first < images.size(); first += batch) {
    const size_t count = std::min<size_t>(batch, images.size() - first);
    x.Fill(0);
    std::vector<bool> ok(count, false);
    for (size_t i = 0; i < count; ++i) {
      auto pixels = PreprocessImageFile(images[first + i], augment);
      if (!pixels.ok()) {
        *err << "predict: " << pixels.status().message() << "\n";
        ++failed;
        continue;
      }
      std::copy(pixels->begin(), pixels->end(), x.data() + i * per_image);
      ok[i] = true;
    }
    if (std::none_of(ok.begin(), ok.end(), [](bool b) { return b; })) continue;
    auto forward = net->Forward(&ctx, x, labels, nn::Mode::kInference);
    if (!forward.ok()) return Annotate(forward.status(), "predicting");
    absl::Span<const float> probs = net->probabilities().span();
    for (size_t i = 0; i < count; ++i) {
      if (!ok[i]) continue;
      absl::Span<const float> row = probs.subspan(i * classes, classes);
      *out << images[first + i] << "\n";
      for (int c : TopK(row, o.top_k)) {
        *out << absl::StrFormat("  %.6f  %d", row[c], c);
        if (!synset.empty()) *out << "  " << synset[c];
        *out << "\n";
      }
    }
  }
  out->flush();
  return failed;
}

}  // namespace tools
}  // namespace pstrain
