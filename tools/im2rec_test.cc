// im2rec end to end: the real binary on a generated folder tree of JPEG and
// PNG images with one corrupt file.
#include "tools/im2rec.h"

#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <numeric>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "opencv2/imgcodecs.hpp"
#include "recordio/image_record.h"
#include "recordio/index.h"
#include "recordio/recordio.h"
#include "tools/py_random.h"

namespace pstrain {
namespace tools {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Tmp() { return std::getenv("TEST_TMPDIR"); }

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs the im2rec binary; returns its exit code, output in *out.
int Im2rec(const std::string& args, std::string* out) {
  const std::string bin =
      absl::StrCat(std::getenv("TEST_SRCDIR"), "/pstrain/tools/im2rec");
  const std::string log = Tmp() + "/im2rec.log";
  int rc =
      std::system(absl::StrCat(bin, " ", args, " > ", log, " 2>&1").c_str());
  *out = ReadAll(log);
  return WEXITSTATUS(rc);
}

void Image(const std::string& path, int h, int w, int seed) {
  cv::Mat m(h, w, CV_8UC3);
  cv::randu(m, seed, 255);
  ASSERT_TRUE(cv::imwrite(path, m)) << path;
}

// root/
//   a.jpg                 (root holds images: label 0 with --recursive)
//   cat/c1.jpg c2.PNG     (label 1)
//   cat/kitten/k1.jpg     (label 2)
//   dog/d1.png d2.jpg bad.jpg (corrupt) notes.txt   (label 3)
//   empty/                (no label)
std::string MakeTree(const std::string& name) {
  const std::string root = Tmp() + "/" + name;
  for (const char* d : {"", "/cat", "/cat/kitten", "/dog", "/empty"}) {
    mkdir((root + d).c_str(), 0755);
  }
  Image(root + "/a.jpg", 40, 60, 1);
  Image(root + "/cat/c1.jpg", 50, 40, 2);
  Image(root + "/cat/c2.PNG", 30, 30, 3);
  Image(root + "/cat/kitten/k1.jpg", 64, 48, 4);
  Image(root + "/dog/d1.png", 20, 80, 5);
  Image(root + "/dog/d2.jpg", 45, 45, 6);
  std::ofstream(root + "/dog/bad.jpg") << "this is not a jpeg";
  std::ofstream(root + "/dog/notes.txt") << "ignored";
  return root;
}

TEST(Im2recTest, RecursiveListLabelsFoldersInSortedWalkOrder) {
  const std::string root = MakeTree("tree1");
  std::string out;
  ASSERT_EQ(Im2rec(absl::StrCat("--list --recursive --no-shuffle ", Tmp(),
                                "/l1 ", root),
                   &out),
            0)
      << out;
  EXPECT_THAT(out, HasSubstr(". 0\ncat 1\ncat/kitten 2\ndog 3\n"));
  EXPECT_EQ(ReadAll(Tmp() + "/l1.lst"),
            "0\t0.000000\ta.jpg\n"
            "1\t1.000000\tcat/c1.jpg\n"
            "2\t1.000000\tcat/c2.PNG\n"
            "3\t2.000000\tcat/kitten/k1.jpg\n"
            "4\t3.000000\tdog/bad.jpg\n"
            "5\t3.000000\tdog/d1.png\n"
            "6\t3.000000\tdog/d2.jpg\n");
  // Shuffled exactly as Python's random.seed(100); random.shuffle would.
  ASSERT_EQ(
      Im2rec(absl::StrCat("--list --recursive ", Tmp(), "/l2 ", root), &out),
      0);
  std::vector<int> order(7);
  std::iota(order.begin(), order.end(), 0);
  PyRandom(100).Shuffle(&order);
  std::vector<std::string> lines =
      absl::StrSplit(ReadAll(Tmp() + "/l2.lst"), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 7u);
  for (size_t i = 0; i < 7; ++i) {
    EXPECT_TRUE(absl::StartsWith(lines[i], absl::StrCat(order[i], "\t")))
        << lines[i];
  }
  // Without --recursive: only root's own images, label 0.
  ASSERT_EQ(Im2rec(absl::StrCat("--list ", Tmp(), "/l3 ", root), &out), 0);
  EXPECT_EQ(ReadAll(Tmp() + "/l3.lst"), "0\t0.000000\ta.jpg\n");
  // --exts restricts suffixes (case-insensitively).
  ASSERT_EQ(Im2rec(absl::StrCat("--list --recursive --no-shuffle --exts .png ",
                                Tmp(), "/l4 ", root),
                   &out),
            0);
  EXPECT_EQ(ReadAll(Tmp() + "/l4.lst"),
            "0\t0.000000\tcat/c2.PNG\n1\t1.000000\tdog/d1.png\n");
}

TEST(Im2recTest, ChunksAndRatiosSplitLikeIm2recPy) {
  const std::string root = MakeTree("tree2");
  std::string out;
  ASSERT_EQ(
      Im2rec(absl::StrCat("--list --recursive --chunks 2 --train-ratio 0.5 "
                          "--test-ratio 0.25 ",
                          Tmp(), "/c ", root),
             &out),
      0)
      << out;
  // 7 images, chunk size 4: test int(4*.25)=1, train int(4*.5)=2, val rest.
  auto count = [&](const std::string& f) {
    std::vector<std::string> l =
        absl::StrSplit(ReadAll(Tmp() + "/" + f), '\n', absl::SkipEmpty());
    return l.size();
  };
  EXPECT_EQ(count("c_0_test.lst"), 1u);
  EXPECT_EQ(count("c_0_train.lst"), 2u);
  EXPECT_EQ(count("c_0_val.lst"), 1u);
  EXPECT_EQ(count("c_1_test.lst"), 1u);
  EXPECT_EQ(count("c_1_train.lst"), 2u);
  EXPECT_EQ(count("c_1_val.lst"), 0u);
  EXPECT_NE(Im2rec(absl::StrCat("--list --train-ratio 0.9 --test-ratio 0.5 ",
                                Tmp(), "/x ", root),
                   &out),
            0);
  EXPECT_THAT(out, HasSubstr("sum to at most 1"));
}

TEST(Im2recTest, PacksInListOrderSkipsCorruptAndWritesIdx) {
  const std::string root = MakeTree("tree3");
  std::string out;
  ASSERT_EQ(
      Im2rec(absl::StrCat("--list --recursive ", Tmp(), "/p1 ", root), &out),
      0);
  std::string lst = ReadAll(Tmp() + "/p1.lst");
  std::ofstream(Tmp() + "/p3.lst") << lst;  // Same list for the 3-thread run.
  ASSERT_EQ(Im2rec(absl::StrCat(Tmp(), "/p1 ", root,
                                " --resize 24 --quality 90 --num-thread 1"),
                   &out),
            0)
      << out;
  EXPECT_THAT(out, HasSubstr("skipping dog/bad.jpg"));
  EXPECT_THAT(out, HasSubstr("6 packed, 1 skipped"));
  ASSERT_EQ(Im2rec(absl::StrCat(Tmp(), "/p3 ", root,
                                " --resize=24 --quality=90 --num_thread=3"),
                   &out),
            0)
      << out;
  // Same records whatever the thread count.
  EXPECT_EQ(ReadAll(Tmp() + "/p1.rec"), ReadAll(Tmp() + "/p3.rec"));
  EXPECT_EQ(ReadAll(Tmp() + "/p1.idx"), ReadAll(Tmp() + "/p3.idx"));

  // Records follow the .lst order, ids are the .lst indices, the .idx
  // offsets point at them, images have their shorter edge at 24.
  std::vector<std::string> lines = absl::StrSplit(lst, '\n', absl::SkipEmpty());
  auto idx = recordio::ReadIndexFile(Tmp() + "/p1.idx");
  ASSERT_TRUE(idx.ok());
  ASSERT_EQ(idx->size(), 6u);
  auto reader = recordio::RecordReader::Open(Tmp() + "/p1.rec");
  ASSERT_TRUE(reader.ok());
  absl::string_view v;
  size_t r = 0;
  for (const auto& line : lines) {
    std::vector<std::string> f = absl::StrSplit(line, '\t');
    if (f.back() == "dog/bad.jpg") continue;
    ASSERT_TRUE(*(*reader)->Next(&v));
    auto rec = recordio::ParseImageRecord(v);
    ASSERT_TRUE(rec.ok());
    EXPECT_EQ(absl::StrCat(rec->id), f[0]);
    EXPECT_EQ(absl::StrFormat("%f", rec->label), f[1]);
    EXPECT_EQ((*idx)[r].key, static_cast<int64_t>(rec->id));
    EXPECT_EQ((*idx)[r].offset, (*reader)->record_offset());
    cv::Mat img =
        cv::imdecode(cv::Mat(1, static_cast<int>(rec->image.size()), CV_8U,
                             const_cast<char*>(rec->image.data())),
                     cv::IMREAD_COLOR);
    ASSERT_FALSE(img.empty());
    EXPECT_EQ(std::min(img.rows, img.cols), 24) << f.back();
    ++r;
  }
  EXPECT_FALSE(*(*reader)->Next(&v));
}

TEST(Im2recTest, PassThroughAndPackLabel) {
  const std::string root = MakeTree("tree4");
  std::ofstream(Tmp() + "/m.lst") << "7\t1.5\t2.5\t3\tcat/c1.jpg\n"
                                  << "bad line\n"
                                  << "8\t4\tdog/d1.png\n";
  std::string out;
  ASSERT_EQ(
      Im2rec(absl::StrCat("--pass-through --pack-label ", Tmp(), "/m ", root),
             &out),
      0)
      << out;
  EXPECT_THAT(out, HasSubstr("m.lst:2"));  // The malformed line is reported.
  auto reader = recordio::RecordReader::Open(Tmp() + "/m.rec");
  ASSERT_TRUE(reader.ok());
  absl::string_view v;
  ASSERT_TRUE(*(*reader)->Next(&v));
  auto rec = recordio::ParseImageRecord(v);
  EXPECT_EQ(rec->flag, 3u);
  EXPECT_THAT(rec->labels, ElementsAre(1.5f, 2.5f, 3.0f));
  EXPECT_EQ(std::string(rec->image), ReadAll(root + "/cat/c1.jpg"));
  ASSERT_TRUE(*(*reader)->Next(&v));
  rec = recordio::ParseImageRecord(v);
  EXPECT_EQ(rec->flag, 0u);
  EXPECT_EQ(rec->label, 4.0f);
  EXPECT_EQ(rec->id, 8u);
}

TEST(Im2recTest, ErrorsAreClear) {
  std::string out;
  EXPECT_NE(Im2rec(absl::StrCat(Tmp(), "/nothing ", Tmp()), &out), 0);
  EXPECT_THAT(out, HasSubstr("no .lst file with prefix"));
  EXPECT_NE(Im2rec(absl::StrCat("--list ", Tmp(), "/x /no/such/root"), &out),
            0);
  EXPECT_THAT(out, HasSubstr("/no/such/root"));
  EXPECT_NE(Im2rec("onlyone", &out), 0);
}

TEST(NormalizeIm2recArgsTest, MxnetSpelling) {
  EXPECT_THAT(NormalizeIm2recArgs({"im2rec", "--num-thread", "16",
                                   "--no-shuffle", "--exts", ".jpg", ".png",
                                   "p", "r", "--center-crop"}),
              ElementsAre("im2rec", "--num_thread", "16", "--noshuffle",
                          "--exts=.jpg,.png", "p", "r", "--center_crop"));
}

}  // namespace
}  // namespace tools
}  // namespace pstrain
