#include "tools/score.h"

#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "data/pipeline.h"
#include "data/record_source.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu_ops.h"
#include "kernels/tensor.h"
#include "nn/network.h"
#include "opencv2/imgcodecs.hpp"
#include "recordio/image_record.h"
#include "recordio/recordio.h"
#include "worker/checkpointing.h"
#include "worker/metrics.h"
#include "worker/options.h"

namespace pstrain {
namespace tools {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Tmp() { return std::getenv("TEST_TMPDIR"); }

std::string Runfile(const std::string& rel) {
  return absl::StrCat(std::getenv("TEST_SRCDIR"), "/pstrain/", rel);
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// Runs `command` with sh, OMP_NUM_THREADS=1 and a time limit; stdout into
// *out and stderr into *err. Returns the exit code.
int Shell(const std::string& command, std::string* out,
          std::string* err = nullptr) {
  const std::string o = Tmp() + "/shell.out", e = Tmp() + "/shell.err";
  const int rc = std::system(absl::StrCat("OMP_NUM_THREADS=1 timeout 240 ",
                                          command, " > ", o, " 2> ", e)
                                 .c_str());
  *out = ReadAll(o);
  if (err != nullptr) {
    *err = ReadAll(e);
  } else {
    *out += ReadAll(e);
  }
  return WEXITSTATUS(rc);
}

TEST(TopKTest, LargestFirstTiesInIndexOrder) {
  const std::vector<float> p = {0.1f, 0.3f, 0.05f, 0.3f, 0.25f};
  EXPECT_EQ(TopK(p, 1), std::vector<int>({1}));
  EXPECT_EQ(TopK(p, 3), std::vector<int>({1, 3, 4}));
  EXPECT_EQ(TopK(p, 9), std::vector<int>({1, 3, 4, 0, 2}));
  EXPECT_TRUE(TopK(p, 0).empty());
}

TEST(ConfusionMatrixTest, CountsAndFormats) {
  ConfusionMatrix m(3);
  m.Add(0, 0);
  m.Add(0, 0);
  m.Add(1, 2);
  for (int i = 0; i < 10; ++i) m.Add(2, 2);
  EXPECT_EQ(m.count(0, 0), 2);
  EXPECT_EQ(m.count(1, 2), 1);
  EXPECT_EQ(m.count(2, 1), 0);
  EXPECT_EQ(m.Format(),
            "Confusion matrix (rows: label, columns: top-1 prediction):\n"
            "label\\pred  0  1  2\n"
            "         0  2  0  0\n"
            "         1  0  0  1\n"
            "         2  0  0 10\n");
  EXPECT_EQ(ConfusionMatrix(21).Format(),
            "Confusion matrix: omitted (21 classes, more than 20)\n");
  EXPECT_THAT(ConfusionMatrix(20).Format(), HasSubstr("19\n"));
}

// NPY 1.0, byte by byte: magic, version, header length 118 (so the data
// starts at 128), the dict padded with spaces and a newline.
TEST(NpyTest, HeaderAndFileBytesAreExact) {
  std::string dict =
      "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }";
  std::string want("\x93NUMPY\x01\x00", 8);
  const size_t len = 128 - 10;  // The dict is 59 bytes: 10 + 59 + 1 > 64.
  want.push_back(static_cast<char>(len));
  want.push_back('\0');
  want += dict + std::string(len - dict.size() - 1, ' ') + "\n";
  EXPECT_EQ(NpyHeader(3, 2), want);
  EXPECT_EQ(NpyHeader(3, 2).size(), 128u);
  // A longer shape spills into the next 64 bytes.
  const std::string big = NpyHeader(1234567890123, 1000);
  EXPECT_EQ(big.size() % 64, 0u);
  EXPECT_EQ(big.back(), '\n');
  EXPECT_EQ(static_cast<uint8_t>(big[8]) + 256 * static_cast<uint8_t>(big[9]),
            big.size() - 10);
  EXPECT_THAT(big, HasSubstr("'shape': (1234567890123, 1000), }"));

  const std::vector<float> v = {0, 1, -2.5f, 3.25f, 1e-7f, 1e30f};
  const std::string path = Tmp() + "/a.npy";
  ASSERT_TRUE(WriteNpy(path, 3, 2, v).ok());
  std::string data(reinterpret_cast<const char*>(v.data()), v.size() * 4);
  EXPECT_EQ(ReadAll(path), want + data);

  EXPECT_THAT(
      std::string(WriteNpy(Tmp() + "/no/such/dir/a.npy", 3, 2, v).message()),
      HasSubstr(Tmp() + "/no/such/dir/a.npy"));

  // numpy reads it, where numpy is installed.
  std::string out;
  if (Shell("python3 -c 'import numpy'", &out) != 0) {
    std::cout << "numpy not importable; numpy.load check skipped: " << out
              << "\n";
    return;
  }
  ASSERT_EQ(
      Shell(absl::StrCat("python3 -c \"import numpy as np; a = np.load('", path,
                         "'); print(a.dtype, a.shape, repr(a[1, 0]), "
                         "repr(a[2, 1]), a.flags['C_CONTIGUOUS'])\""),
            &out),
      0)
      << out;
  EXPECT_THAT(out, HasSubstr("float32 (3, 2) -2.5 1e+30 True"));
}

TEST(CsvTest, HeaderIdsLabelsAndExactProbabilities) {
  const std::string path = Tmp() + "/a.csv";
  const std::vector<uint64_t> ids = {7, 123456789012};
  const std::vector<float> labels = {1, 0};
  const std::vector<float> probs = {0.25f, 0.75f, 1.0f / 3, 2.0f / 3};
  ASSERT_TRUE(WriteCsv(path, ids, labels, probs, 2).ok());
  EXPECT_EQ(ReadAll(path),
            "id,label,p0,p1\n"
            "7,1,0.25,0.75\n"
            "123456789012,0,0.333333343,0.666666687\n");
  EXPECT_FALSE(WriteCsv(Tmp() + "/no/dir/a.csv", ids, labels, probs, 2).ok());
}

TEST(SynsetTest, OneNameALine) {
  const std::string path = Tmp() + "/synset.txt";
  WriteAll(path, "n01440764 tench, Tinca tinca\r\nn01443537 goldfish\n\n");
  auto names = ReadSynset(path);
  ASSERT_TRUE(names.ok()) << names.status();
  EXPECT_EQ(*names, std::vector<std::string>({"n01440764 tench, Tinca tinca",
                                              "n01443537 goldfish"}));
  WriteAll(path, "a\n\nb\n");
  EXPECT_THAT(std::string(ReadSynset(path).status().message()),
              HasSubstr(path + ": line 2 is blank"));
  WriteAll(path, "\n");
  EXPECT_THAT(std::string(ReadSynset(path).status().message()),
              HasSubstr("no class names"));
  EXPECT_THAT(std::string(ReadSynset(Tmp() + "/none.txt").status().message()),
              HasSubstr(Tmp() + "/none.txt"));
}

PreprocessOptions Pre() {
  PreprocessOptions p;
  p.image_shape = {1, 28, 28};
  p.resize = 28;
  p.mean[0] = p.mean[1] = p.mean[2] = 10;
  p.std[0] = p.std[1] = p.std[2] = 50;
  return p;
}

TEST(PreprocessTest, IsTheWorkersValidationAugmentation) {
  auto a = ValidationAugment(Pre());
  ASSERT_TRUE(a.ok()) << a.status();
  worker::TrainerOptions o;
  o.image_shape = {1, 28, 28};
  o.augment.resize = 28;
  o.augment.rand_crop = true;  // Training-only options play no part.
  o.augment.rand_mirror = true;
  o.augment.brightness = 0.4f;
  for (int c = 0; c < 3; ++c) o.augment.mean[c] = 10, o.augment.std[c] = 50;
  const data::AugmentOptions w = worker::AugmentFor(o, false);
  EXPECT_EQ(a->channels, w.channels);
  EXPECT_EQ(a->height, w.height);
  EXPECT_EQ(a->width, w.width);
  EXPECT_EQ(a->resize, w.resize);
  EXPECT_EQ(a->rand_crop, false);
  EXPECT_EQ(a->rand_mirror, false);
  EXPECT_EQ(a->brightness, 0);
  EXPECT_EQ(a->inter_method, w.inter_method);
  EXPECT_EQ(a->scale, w.scale);
  for (int c = 0; c < 3; ++c) {
    EXPECT_EQ(a->mean[c], w.mean[c]);
    EXPECT_EQ(a->std[c], w.std[c]);
  }
  PreprocessOptions bad = Pre();
  bad.image_shape = {2, 28, 28};
  EXPECT_THAT(std::string(ValidationAugment(bad).status().message()),
              HasSubstr("--image_shape 2,28,28"));
  bad = Pre();
  bad.std[1] = 0;
  EXPECT_THAT(std::string(ValidationAugment(bad).status().message()),
              HasSubstr("--rgb_std"));
}

// A 28 x 32 grayscale test image for record `i`: a gradient and a square
// that move with i.
cv::Mat TestImage(int i) {
  cv::Mat m(32, 30, CV_8UC1);
  for (int y = 0; y < m.rows; ++y) {
    for (int x = 0; x < m.cols; ++x) {
      m.at<uint8_t>(y, x) = static_cast<uint8_t>(
          (x * 7 + y * (i % 5) * 3 + ((x / 6 + y / 6 + i) % 3) * 60) % 256);
    }
  }
  return m;
}

// Record i: label i % 10, id 500 + i, a PNG (even i) or JPEG (odd i).
std::string Encoded(int i) {
  std::vector<uchar> buf;
  cv::imencode(i % 2 == 0 ? ".png" : ".jpg", TestImage(i), buf);
  return std::string(buf.begin(), buf.end());
}

constexpr int kRecords = 37;  // Four batches of 8 and one of 5.

// A LeNet checkpoint (xavier, seed 3) as SaveCheckpoint writes it, a
// .rec of kRecords records, and the expected probabilities: each record
// preprocessed alone and run through the model loaded alone (batch 1).
class ScoreEndToEnd : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(Tmp() + "/e2e");
    ASSERT_EQ(std::system(("mkdir -p " + *dir_).c_str()), 0);
    auto net = nn::BuildNetwork("lenet", 0, 10, {1, 28, 28}, 1);
    ASSERT_TRUE(net.ok()) << net.status();
    ASSERT_TRUE(nn::Initialize(net->get(), "xavier", 3).ok());
    auto params = worker::SaveCheckpoint(*dir_ + "/m", 1, net->get());
    ASSERT_TRUE(params.ok()) << params.status();
    auto mlp = nn::BuildNetwork("mlp", 0, 10, {1, 28, 28}, 1);
    ASSERT_TRUE(mlp.ok());
    ASSERT_TRUE(worker::SaveCheckpoint(*dir_ + "/mlp", 1, mlp->get()).ok());

    auto w = recordio::RecordWriter::Create(*dir_ + "/val.rec");
    ASSERT_TRUE(w.ok()) << w.status();
    for (int i = 0; i < kRecords; ++i) {
      ASSERT_TRUE((*w)->Write(recordio::PackImageRecord(i % 10, {}, 500 + i, 0,
                                                        Encoded(i)))
                      .ok());
    }
    ASSERT_TRUE((*w)->Close().ok());

    auto model = LoadModel(Symbol(), Params(), {1, 28, 28}, 1);
    ASSERT_TRUE(model.ok()) << model.status();
    auto a = ValidationAugment(Pre());
    ASSERT_TRUE(a.ok());
    kernels::CpuContext ctx;
    expected_ = new std::vector<float>;
    for (int i = 0; i < kRecords; ++i) {
      kernels::Tensor x({1, 1, 28, 28});
      ASSERT_TRUE(PreprocessImage(Encoded(i), *a, "test",
                                  absl::MakeSpan(x.data(), x.size()))
                      .ok());
      const float label = i % 10;
      ASSERT_TRUE((*model)
                      ->Forward(&ctx, x, absl::MakeSpan(&label, 1),
                                nn::Mode::kInference)
                      .ok());
      auto p = (*model)->probabilities().span();
      expected_->insert(expected_->end(), p.begin(), p.end());
    }
  }
  static void TearDownTestSuite() {
    delete dir_;
    delete expected_;
  }
  static std::string Symbol() { return *dir_ + "/m-symbol.json"; }
  static std::string Params() { return *dir_ + "/m-0001.params"; }
  static std::string Flags() {
    return absl::StrCat(" --symbol=", Symbol(), " --params=", Params(),
                        " --image_shape=1,28,28 --resize=28 --rgb_mean=10 "
                        "--rgb_std=50");
  }
  static std::string Score(const std::string& more) {
    return absl::StrCat(Runfile("tools/score"), Flags(), " --data_val=", *dir_,
                        "/val.rec --batch_size=8 ", more);
  }
  static std::string Predict(const std::string& more) {
    return absl::StrCat(Runfile("tools/predict"), Flags(), " ", more);
  }
  static int Top1(int record) {
    return TopK(absl::MakeSpan(*expected_).subspan(record * 10, 10), 1)[0];
  }

  static std::string* dir_;
  static std::vector<float>* expected_;
};
std::string* ScoreEndToEnd::dir_ = nullptr;
std::vector<float>* ScoreEndToEnd::expected_ = nullptr;

TEST_F(ScoreEndToEnd, PreprocessingEqualsThePipelines) {
  auto src = data::RecordSource::Open(*dir_ + "/val.rec", 0, 1);
  ASSERT_TRUE(src.ok()) << src.status();
  worker::TrainerOptions o;
  o.image_shape = {1, 28, 28};
  o.augment.resize = 28;
  for (int c = 0; c < 3; ++c) o.augment.mean[c] = 10, o.augment.std[c] = 50;
  data::PipelineOptions p;
  p.batch_size = kRecords;
  p.augment = worker::AugmentFor(o, false);
  auto pipe = data::Pipeline::Create(src->get(), p);
  ASSERT_TRUE(pipe.ok()) << pipe.status();
  (*pipe)->StartEpoch(0);
  auto batch = (*pipe)->Next(absl::Now() + absl::Seconds(60));
  ASSERT_TRUE(batch.ok()) << batch.status();
  auto a = ValidationAugment(Pre());
  ASSERT_TRUE(a.ok());
  for (int i = 0; i < kRecords; ++i) {
    EXPECT_EQ(batch->ids[i], 500u + i);
    std::vector<float> mine(28 * 28);
    ASSERT_TRUE(
        PreprocessImage(Encoded(i), *a, "test", absl::MakeSpan(mine)).ok());
    EXPECT_EQ(mine, std::vector<float>(batch->data.begin() + i * 28 * 28,
                                       batch->data.begin() + (i + 1) * 28 * 28))
        << "record " << i;
  }
}

TEST_F(ScoreEndToEnd, AccuracyAndDumpsMatchADirectForward) {
  worker::Metrics m(5, false);
  std::vector<float> labels;
  for (int i = 0; i < kRecords; ++i) labels.push_back(i % 10);
  ASSERT_TRUE(m.Update(*expected_, labels, 10).ok());
  double top1 = -1, top5 = -1;
  for (const auto& [name, value] : m.NameValues()) {
    if (name == "accuracy") top1 = value;
    if (name == "top_k_accuracy_5") top5 = value;
  }
  std::string out, err;
  const std::string npy = *dir_ + "/probs.npy";
  ASSERT_EQ(Shell(Score("--dump=" + npy), &out, &err), 0) << out << err;
  EXPECT_THAT(out, HasSubstr(absl::StrFormat("Top-1 accuracy: %.4f\n", top1)));
  EXPECT_THAT(out, HasSubstr(absl::StrFormat("Top-5 accuracy: %.4f\n", top5)));
  EXPECT_THAT(out, HasSubstr("Records: 37 scored of 37, 10 classes\n"));
  EXPECT_THAT(out, HasSubstr("Images/s: "));
  EXPECT_THAT(out, HasSubstr("Confusion matrix (rows: label"));
  // Ten rows, one per label (columns as wide as the largest count).
  EXPECT_THAT(out, HasSubstr("label\\pred"));
  EXPECT_THAT(out, HasSubstr("\n         9 "));

  const std::string bytes = ReadAll(npy);
  ASSERT_GT(bytes.size(), 10u);
  const size_t header = 10 + static_cast<uint8_t>(bytes[8]) +
                        256 * static_cast<uint8_t>(bytes[9]);
  EXPECT_EQ(bytes.substr(0, header), NpyHeader(kRecords, 10));
  ASSERT_EQ(bytes.size(), header + kRecords * 10 * sizeof(float));
  std::vector<float> got(kRecords * 10);
  std::memcpy(got.data(), bytes.data() + header, got.size() * sizeof(float));
  for (size_t k = 0; k < got.size(); ++k) {
    ASSERT_NEAR(got[k], (*expected_)[k], 1e-5) << "record " << k / 10;
  }

  const std::string csv = *dir_ + "/probs.csv";
  ASSERT_EQ(Shell(Score("--top_k=1 --dump=" + csv), &out, &err), 0)
      << out << err;
  EXPECT_THAT(out, Not(HasSubstr("Top-5")));
  std::vector<std::string> lines =
      absl::StrSplit(ReadAll(csv), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), kRecords + 1u);
  EXPECT_EQ(lines[0], "id,label,p0,p1,p2,p3,p4,p5,p6,p7,p8,p9");
  for (int i = 0; i < kRecords; ++i) {
    std::vector<std::string> f = absl::StrSplit(lines[i + 1], ',');
    ASSERT_EQ(f.size(), 12u) << lines[i + 1];
    EXPECT_EQ(f[0], absl::StrCat(500 + i));
    EXPECT_EQ(f[1], absl::StrCat(i % 10));
    float p3 = 0;
    ASSERT_TRUE(absl::SimpleAtof(f[5], &p3));
    EXPECT_EQ(p3, got[i * 10 + 3]);  // The same bytes as the .npy.
  }

  // predict on a few records' image files (the PNG or JPEG bytes
  // cv::imencode made for them) gives their top-1.
  std::string files;
  const std::vector<int> picked = {0, 3, 8, 11, 36};
  for (int i : picked) {
    const std::string f =
        absl::StrCat(*dir_, "/rec", i, i % 2 == 0 ? ".png" : ".jpg");
    WriteAll(f, Encoded(i));
    files += " " + f;
  }
  ASSERT_EQ(Shell(Predict("--top_k=3 --batch_size=2" + files), &out, &err), 0)
      << out << err;
  std::vector<std::string> plines =
      absl::StrSplit(out, '\n', absl::SkipEmpty());
  ASSERT_EQ(plines.size(), picked.size() * 4) << out;
  for (size_t k = 0; k < picked.size(); ++k) {
    EXPECT_TRUE(absl::EndsWith(
        plines[k * 4],
        absl::StrCat("/rec", picked[k], picked[k] % 2 == 0 ? ".png" : ".jpg")));
    std::vector<std::string> top =
        absl::StrSplit(plines[k * 4 + 1], ' ', absl::SkipEmpty());
    ASSERT_EQ(top.size(), 2u) << plines[k * 4 + 1];
    EXPECT_EQ(top[1], absl::StrCat(Top1(picked[k]))) << "record " << picked[k];
    EXPECT_EQ(top[1],
              absl::StrCat(
                  TopK(absl::MakeSpan(got).subspan(picked[k] * 10, 10), 1)[0]));
  }

  // With a synset, names follow.
  std::string synset;
  for (int c = 0; c < 10; ++c)
    absl::StrAppend(&synset, "n0", c, " class ", c, "\n");
  WriteAll(*dir_ + "/synset.txt", synset);
  ASSERT_EQ(Shell(Predict(absl::StrCat("--top_k=1 --synset=", *dir_,
                                       "/synset.txt ", *dir_, "/rec0.png")),
                  &out, &err),
            0)
      << out << err;
  EXPECT_THAT(out, HasSubstr(absl::StrCat("  ", Top1(0), "  n0", Top1(0),
                                          " class ", Top1(0), "\n")));
}

TEST_F(ScoreEndToEnd, BadInputIsOneLineAndANonZeroExit) {
  std::string out, err;
  // A symbol file that is not there.
  EXPECT_EQ(Shell(absl::StrCat(Runfile("tools/score"), " --symbol=", *dir_,
                               "/none-symbol.json --params=", Params(),
                               " --data_val=", *dir_, "/val.rec"),
                  &out, &err),
            2);
  EXPECT_THAT(err, HasSubstr("score: --symbol"));
  EXPECT_THAT(err, HasSubstr(*dir_ + "/none-symbol.json"));
  // Parameters of another network.
  EXPECT_EQ(Shell(absl::StrCat(Runfile("tools/score"), " --symbol=", Symbol(),
                               " --params=", *dir_, "/mlp-0001.params",
                               " --data_val=", *dir_, "/val.rec"),
                  &out, &err),
            2);
  EXPECT_THAT(err, HasSubstr("score: --params: " + *dir_ + "/mlp-0001.params"));
  // No such .rec; a --dump that is neither .npy nor .csv; --top_k too big.
  EXPECT_EQ(Shell(absl::StrCat(Runfile("tools/score"), Flags(),
                               " --data_val=", *dir_, "/none.rec"),
                  &out, &err),
            2);
  EXPECT_THAT(err, HasSubstr("--data_val"));
  EXPECT_THAT(err, HasSubstr(*dir_ + "/none.rec"));
  EXPECT_EQ(Shell(Score("--dump=" + *dir_ + "/p.txt"), &out, &err), 2);
  EXPECT_THAT(err, HasSubstr("--dump " + *dir_ + "/p.txt: must end in .npy"));
  EXPECT_EQ(Shell(Score("--top_k=11"), &out, &err), 2);
  EXPECT_THAT(err, HasSubstr("--top_k 11: must be in [1, 10]"));
  // A record whose label is not a class of the network.
  {
    auto w = recordio::RecordWriter::Create(*dir_ + "/bad_label.rec");
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(
        (*w)->Write(recordio::PackImageRecord(3, {}, 1, 0, Encoded(0))).ok());
    ASSERT_TRUE(
        (*w)->Write(recordio::PackImageRecord(12, {}, 2, 0, Encoded(1))).ok());
    ASSERT_TRUE((*w)->Close().ok());
  }
  EXPECT_EQ(Shell(absl::StrCat(Runfile("tools/score"), Flags(),
                               " --data_val=", *dir_, "/bad_label.rec"),
                  &out, &err),
            2);
  EXPECT_THAT(err, HasSubstr("label 12 is not a class of the network"));
  EXPECT_THAT(err, HasSubstr(*dir_ + "/bad_label.rec"));

  // predict: a corrupt image and a missing one are named, the good one
  // still gets its classes, and the exit code is 1.
  WriteAll(*dir_ + "/corrupt.png", "\x89PNG\r\n\x1a\n not really a png");
  WriteAll(*dir_ + "/good.png", Encoded(0));
  EXPECT_EQ(Shell(Predict(absl::StrCat(*dir_, "/corrupt.png ", *dir_,
                                       "/good.png ", *dir_, "/missing.jpg")),
                  &out, &err),
            1);
  EXPECT_THAT(err, HasSubstr("predict: " + *dir_ + "/corrupt.png"));
  EXPECT_THAT(err, HasSubstr(*dir_ + "/missing.jpg"));
  EXPECT_THAT(out, HasSubstr(*dir_ + "/good.png\n"));
  EXPECT_THAT(out, Not(HasSubstr("corrupt.png")));
  // No image; a synset of the wrong length.
  EXPECT_EQ(Shell(Predict(""), &out, &err), 2);
  EXPECT_THAT(err, HasSubstr("no IMAGE given"));
  WriteAll(*dir_ + "/short_synset.txt", "a\nb\n");
  EXPECT_EQ(Shell(Predict(absl::StrCat("--synset=", *dir_, "/short_synset.txt ",
                                       *dir_, "/good.png")),
                  &out, &err),
            2);
  EXPECT_THAT(err, HasSubstr("2 class names for a network of 10 classes"));
  // --help states the preprocessing.
  ASSERT_EQ(Shell(Runfile("tools/score") + " --help", &out, &err), 0);
  EXPECT_THAT(out, HasSubstr("worker's validation path"));
  EXPECT_THAT(out, HasSubstr("--rgb_mean"));
  ASSERT_EQ(Shell(Runfile("tools/predict") + " --help", &out, &err), 0);
  EXPECT_THAT(out, HasSubstr("worker's validation path"));
  EXPECT_THAT(out, HasSubstr("--image_shape"));
}

}  // namespace
}  // namespace tools
}  // namespace pstrain
