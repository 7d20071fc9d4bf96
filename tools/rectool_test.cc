#include "tools/rectool.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "opencv2/imgcodecs.hpp"
#include "recordio/image_record.h"
#include "recordio/index.h"
#include "recordio/recordio.h"

namespace pstrain {
namespace tools {
namespace {

using ::testing::HasSubstr;

std::string Tmp(const std::string& name) {
  return absl::StrCat(std::getenv("TEST_TMPDIR"), "/", name);
}

std::string Png(int v) {
  cv::Mat m(3, 4, CV_8UC1, cv::Scalar(v));
  std::vector<uchar> buf;
  cv::imencode(".png", m, buf);
  return std::string(buf.begin(), buf.end());
}

// Three records: labels 0, 1 and packed {2, 3}; ids 10, 11, 12.
std::vector<int64_t> MakeRec(const std::string& path) {
  auto w = recordio::RecordWriter::Create(path);
  std::vector<recordio::IndexEntry> idx;
  std::vector<int64_t> offsets;
  for (int i = 0; i < 3; ++i) {
    offsets.push_back((*w)->Tell());
    idx.push_back({10 + i, (*w)->Tell()});
    std::vector<float> packed;
    if (i == 2) packed = {2, 3};
    EXPECT_TRUE(
        (*w)->Write(recordio::PackImageRecord(i, packed, 10 + i, 0, Png(i)))
            .ok());
  }
  EXPECT_TRUE((*w)->Close().ok());
  EXPECT_TRUE(
      recordio::WriteIndexFile(path.substr(0, path.size() - 4) + ".idx", idx)
          .ok());
  return offsets;
}

int Rectool(std::vector<std::string> args, bool json, std::string* out,
            std::string* err) {
  std::ostringstream o, e;
  int rc = RunRectool(args, json, o, e);
  *out = o.str();
  *err = e.str();
  return rc;
}

TEST(RectoolTest, CountHeadersJsonVerifyExtract) {
  const std::string rec = Tmp("r.rec");
  std::vector<int64_t> off = MakeRec(rec);
  std::string out, err;
  ASSERT_EQ(Rectool({"count", rec}, false, &out, &err), 0) << err;
  EXPECT_EQ(out, "3\n");
  ASSERT_EQ(Rectool({"headers", rec}, false, &out, &err), 0) << err;
  EXPECT_THAT(out, HasSubstr(absl::StrCat(
                       "2\toffset=", off[2],
                       "\tflag=2\tlabels=2,3\tid=12\tid2=0\tbytes=")));
  ASSERT_EQ(Rectool({"headers", rec}, true, &out, &err), 0) << err;
  {
    std::vector<std::string> lines =
        absl::StrSplit(out, '\n', absl::SkipEmpty());
    ASSERT_EQ(lines.size(), 3u) << out;
    const nlohmann::json one = nlohmann::json::parse(lines[1]);
    EXPECT_EQ(one["index"], 1);
    EXPECT_EQ(one["offset"], off[1]);
    EXPECT_EQ(one["flag"], 0);
    EXPECT_EQ(one["labels"], nlohmann::json::parse("[1.0]"));
    EXPECT_EQ(one["id"], 11);
    EXPECT_EQ(one["id2"], 0);
    EXPECT_GT(one["bytes"].get<int64_t>(), 0);
    EXPECT_EQ(nlohmann::json::parse(lines[2])["labels"],
              nlohmann::json::parse("[2.0, 3.0]"));
  }
  ASSERT_EQ(Rectool({"verify", rec, Tmp("r.idx")}, false, &out, &err), 0)
      << err;
  EXPECT_THAT(out, HasSubstr("OK, 3 records"));
  ASSERT_EQ(Rectool({"extract", rec, "1", Tmp("one.png")}, false, &out, &err),
            0)
      << err;
  std::ifstream in(Tmp("one.png"), std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  EXPECT_EQ(s.str(), Png(1));
  EXPECT_EQ(Rectool({"extract", rec, "9", Tmp("x.png")}, false, &out, &err), 1);
  EXPECT_THAT(err, HasSubstr("has no record 9"));
}

TEST(RectoolTest, CorruptFileReportsFirstProblem) {
  const std::string rec = Tmp("bad.rec");
  std::vector<int64_t> off = MakeRec(rec);
  {
    std::fstream f(rec, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(off[1]);
    f.put('X');  // Bad magic at record 1.
  }
  std::string out, err;
  EXPECT_EQ(Rectool({"verify", rec}, false, &out, &err), 1);
  EXPECT_THAT(err, HasSubstr(absl::StrCat(rec, ": record 1 at byte offset ",
                                          off[1], ": bad magic")));
  EXPECT_EQ(Rectool({"count", rec}, false, &out, &err), 1);
  EXPECT_EQ(Rectool({"headers", rec}, true, &out, &err), 1);
}

TEST(RectoolTest, IndexDisagreementAndUndecodableImage) {
  const std::string rec = Tmp("i.rec");
  std::vector<int64_t> off = MakeRec(rec);
  std::ofstream(Tmp("wrong.idx")) << "10\t" << off[0] << "\n11\t" << off[1] + 4
                                  << "\n12\t" << off[2] << "\n";
  std::string out, err;
  EXPECT_EQ(Rectool({"verify", rec, Tmp("wrong.idx")}, false, &out, &err), 1);
  EXPECT_THAT(err, HasSubstr("wrong.idx:2: offset"));
  std::ofstream(Tmp("keys.idx"))
      << "10\t" << off[0] << "\n99\t" << off[1] << "\n12\t" << off[2] << "\n";
  EXPECT_EQ(Rectool({"verify", rec, Tmp("keys.idx")}, false, &out, &err), 1);
  EXPECT_THAT(err, HasSubstr("key 99 but the record"));

  auto w = recordio::RecordWriter::Create(Tmp("noimg.rec"));
  ASSERT_TRUE(
      (*w)->Write(recordio::PackImageRecord(0, {}, 0, 0, "garbage")).ok());
  ASSERT_TRUE((*w)->Close().ok());
  EXPECT_EQ(Rectool({"verify", Tmp("noimg.rec")}, false, &out, &err), 1);
  EXPECT_THAT(
      err,
      HasSubstr("record 0 at byte offset 0: image (7 bytes) does not decode"));
  EXPECT_EQ(Rectool({"bogus"}, false, &out, &err), 2);
  EXPECT_EQ(Rectool({"count", Tmp("missing.rec")}, false, &out, &err), 1);
  EXPECT_THAT(err, HasSubstr("missing.rec"));
}

}  // namespace
}  // namespace tools
}  // namespace pstrain
