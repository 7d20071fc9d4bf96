#include "recordio/recordio.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pstrain {
namespace recordio {
namespace {

using ::testing::HasSubstr;

std::string TmpPath(const std::string& name) {
  return absl::StrCat(std::getenv("TEST_TMPDIR"), "/", name);
}

std::string Magic() {
  std::string m(4, '\0');
  std::memcpy(m.data(), &kMagic, 4);
  return m;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// Payloads covering the interesting cases: empty, tiny, unaligned, magic at
// aligned offsets (start, middle, end, twice in a row), magic at an
// unaligned offset (not split), large.
std::vector<std::string> Payloads() {
  std::mt19937 rng(5);
  std::string big(3 << 20, '\0');
  for (auto& c : big) c = static_cast<char>(rng());
  std::memcpy(big.data() + 4096, &kMagic, 4);
  return {"",
          "a",
          "abcde",
          Magic(),
          Magic() + "tail",
          "head" + Magic() + "mid!" + Magic() + Magic() + "xy",
          "abcd" + Magic(),
          "ab" + Magic() + "cd",  // Unaligned: stays whole.
          big};
}

std::vector<std::string> WriteAndRead(const std::vector<std::string>& payloads,
                                      const std::string& path,
                                      std::vector<int64_t>* offsets = nullptr) {
  auto w = RecordWriter::Create(path);
  EXPECT_TRUE(w.ok()) << w.status();
  for (const auto& p : payloads) {
    if (offsets) offsets->push_back((*w)->Tell());
    EXPECT_TRUE((*w)->Write(p).ok());
  }
  EXPECT_TRUE((*w)->Close().ok());
  std::vector<std::string> got;
  ReaderOptions small;
  small.buffer_bytes = 4096;  // Records straddle buffer refills.
  auto r = RecordReader::Open(path, small);
  EXPECT_TRUE(r.ok()) << r.status();
  absl::string_view v;
  while (true) {
    auto more = (*r)->Next(&v);
    EXPECT_TRUE(more.ok()) << more.status();
    if (!more.ok() || !*more) break;
    if (offsets) {
      EXPECT_EQ((*r)->record_offset(), (*offsets)[got.size()]);
    }
    got.emplace_back(v);
  }
  return got;
}

// A kSkip reader of `path` from byte `begin` (null, with a test failure,
// when it does not open).
std::unique_ptr<RecordReader> SkipReader(const std::string& path,
                                         int64_t begin = 0) {
  ReaderOptions skip;
  skip.policy = CorruptionPolicy::kSkip;
  auto r = RecordReader::Open(path, skip, begin);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *std::move(r) : nullptr;
}

TEST(RecordIOTest, RoundTripsEveryKindOfPayload) {
  const auto payloads = Payloads();
  std::vector<int64_t> offsets;
  EXPECT_EQ(WriteAndRead(payloads, TmpPath("rt.rec"), &offsets), payloads);
  // Heads are 4-aligned and the file length is a multiple of 4.
  for (int64_t o : offsets) EXPECT_EQ(o % 4, 0);
  EXPECT_EQ(ReadAll(TmpPath("rt.rec")).size() % 4, 0u);
}

TEST(RecordIOTest, WriterSplitsAlignedMagicExactlyAsDmlc) {
  std::string out;
  AppendRecord("head" + Magic() + "tail", &out);
  // [magic][cflag1 len4]["head"][magic][cflag3 len4]["tail"]
  ASSERT_EQ(out.size(), 24u);
  uint32_t w[6];
  std::memcpy(w, out.data(), 24);
  EXPECT_EQ(w[0], kMagic);
  EXPECT_EQ(w[1], EncodeLRec(1, 4));
  EXPECT_EQ(out.substr(8, 4), "head");
  EXPECT_EQ(w[3], kMagic);
  EXPECT_EQ(w[4], EncodeLRec(3, 4));
  EXPECT_EQ(out.substr(20, 4), "tail");
  // Padding: 5 bytes -> 3 zero bytes.
  out.clear();
  AppendRecord("abcde", &out);
  EXPECT_EQ(out.size(), 16u);
  EXPECT_EQ(out.substr(13), std::string(3, '\0'));
}

TEST(RecordIOTest, RangeReadsOnlyHeadsInsideIt) {
  std::vector<std::string> payloads = {"one", "two2", "three", "four", "five"};
  std::vector<int64_t> offsets;
  const std::string path = TmpPath("range.rec");
  WriteAndRead(payloads, path, &offsets);
  // [offsets[1] - 2, offsets[3]) holds heads 2 only... begin moves forward.
  auto r = RecordReader::Open(path, {}, offsets[1] + 1, offsets[3]);
  ASSERT_TRUE(r.ok());
  absl::string_view v;
  std::vector<std::string> got;
  while (*(*r)->Next(&v)) got.emplace_back(v);
  EXPECT_EQ(got, (std::vector<std::string>{"three"}));
}

TEST(RecordIOTest, EveryCorruptionModeIsReportedWithOffsetAndIndex) {
  const std::vector<std::string> payloads = {
      "record-zero", "head" + Magic() + "tail", "record-two!!", "record-three"};
  std::vector<int64_t> off;
  const std::string good_path = TmpPath("good.rec");
  WriteAndRead(payloads, good_path, &off);
  const std::string good = ReadAll(good_path);
  struct Case {
    std::string name;
    std::string bytes;
    int64_t offset;  // Expected reported offset.
    std::string what;
    int64_t good_before;  // Records returned before the error.
  };
  std::vector<Case> cases;
  {
    std::string b = good;
    b[off[2]] ^= 0x55;  // Bad magic at record 2.
    cases.push_back({"bad magic", b, off[2], "bad magic", 2});
  }
  {
    std::string b = good;
    uint32_t lrec = EncodeLRec(0, 1 << 28);  // Impossible length for record 2.
    std::memcpy(b.data() + off[2] + 4, &lrec, 4);
    cases.push_back({"impossible length", b, off[2], "runs past the end", 2});
  }
  {
    std::string b = good.substr(0, off[3] + 10);  // Truncated tail.
    cases.push_back({"truncated tail", b, off[3], "truncated", 3});
  }
  {
    std::string b = good.substr(0, off[3] + 5);  // Truncated inside a header.
    cases.push_back({"truncated header", b, off[3], "8-byte record header", 3});
  }
  {
    std::string b = good;
    // Record 1's second part (cflag 3) becomes cflag 0: chain broken.
    const int64_t part2 = off[1] + 8 + 4;
    uint32_t lrec = EncodeLRec(0, 4);
    std::memcpy(b.data() + part2 + 4, &lrec, 4);
    cases.push_back({"broken chain", b, off[1], "broken multi-part chain", 1});
  }
  {
    std::string b = good;
    // Record 2 starts with a continuation part.
    uint32_t lrec = EncodeLRec(2, static_cast<uint32_t>(payloads[2].size()));
    std::memcpy(b.data() + off[2] + 4, &lrec, 4);
    cases.push_back(
        {"starts with continuation", b, off[2], "continuation part", 2});
  }
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = TmpPath("corrupt.rec");
    WriteAll(path, c.bytes);
    auto r = RecordReader::Open(path);
    ASSERT_TRUE(r.ok());
    absl::string_view v;
    int64_t n = 0;
    absl::Status err;
    while (true) {
      auto more = (*r)->Next(&v);
      if (!more.ok()) {
        err = more.status();
        break;
      }
      if (!*more) break;
      ++n;
    }
    ASSERT_FALSE(err.ok()) << "corruption passed silently";
    EXPECT_EQ(err.code(), absl::StatusCode::kDataLoss);
    EXPECT_EQ(n, c.good_before);
    EXPECT_THAT(std::string(err.message()), HasSubstr(path));
    EXPECT_THAT(std::string(err.message()),
                HasSubstr(absl::StrCat("record ", c.good_before,
                                       " at byte offset ", c.offset)));
    EXPECT_THAT(std::string(err.message()), HasSubstr(c.what));

    // The skip policy reads every intact record and counts the damage.
    ReaderOptions skip;
    skip.policy = CorruptionPolicy::kSkip;
    auto s = RecordReader::Open(path, skip);
    ASSERT_TRUE(s.ok());
    std::vector<std::string> got;
    while (true) {
      auto more = (*s)->Next(&v);
      ASSERT_TRUE(more.ok()) << more.status();
      if (!*more) break;
      got.emplace_back(v);
    }
    EXPECT_GE((*s)->skip_stats().corrupt_records, 1);
    EXPECT_GT((*s)->skip_stats().skipped_bytes, 0);
    EXPECT_LE(got.size(), payloads.size());
    // Except for the broken chain, whose orphaned cflag-0 part is a
    // well-formed record in its own right, only intact records come back.
    if (c.name != "broken chain") {
      EXPECT_LT(got.size(), payloads.size());
      for (const auto& g : got) {
        EXPECT_NE(std::find(payloads.begin(), payloads.end(), g),
                  payloads.end());
      }
    }
    // Records after the damage are still found (except for the tail cases).
    if (c.good_before < 3) {
      EXPECT_EQ(got.back(), payloads[3]);
    }
  }
}

TEST(RecordIOTest, GarbageBetweenRecordsIsSkippedByResync) {
  std::string bytes;
  AppendRecord("first", &bytes);
  bytes += std::string(40, 'g');
  AppendRecord("second", &bytes);
  const std::string path = TmpPath("garbage.rec");
  WriteAll(path, bytes);
  auto r = SkipReader(path);
  ASSERT_NE(r, nullptr);
  absl::string_view v;
  std::vector<std::string> got;
  while (*r->Next(&v)) got.emplace_back(v);
  EXPECT_EQ(got, (std::vector<std::string>{"first", "second"}));
  EXPECT_EQ(r->skip_stats().corrupt_records, 1);
  EXPECT_EQ(r->skip_stats().skipped_bytes, 40);
}

// The skip log names each corrupt record by its index in the file (the
// records skipped before it count) and says how many bytes were skipped.
TEST(RecordIOTest, SkippedRecordsAreNamedByFileIndexWithTheBytesSkipped) {
  std::vector<int64_t> off;
  const std::string path = TmpPath("skips.rec");
  WriteAndRead({"zero", "one", "two", "three", "four"}, path, &off);
  std::string b = ReadAll(path);
  b[off[1]] ^= 0x55;
  b[off[3]] ^= 0x55;
  WriteAll(path, b);
  auto r = SkipReader(path);
  ASSERT_NE(r, nullptr);
  absl::string_view v;
  std::vector<int64_t> indices;
  while (*r->Next(&v)) indices.push_back(r->file_record_index());
  EXPECT_EQ(indices, (std::vector<int64_t>{0, 2, 4}));
  const SkipStats& st = r->skip_stats();
  EXPECT_EQ(st.corrupt_records, 2);
  EXPECT_EQ(st.skipped_bytes, (off[2] - off[1]) + (off[4] - off[3]));
  EXPECT_THAT(st.first,
              HasSubstr(absl::StrCat(path, ": record 1 at byte offset ", off[1],
                                     ": bad magic")));
  EXPECT_THAT(st.first,
              HasSubstr(absl::StrCat(
                  "; skipped ", off[2] - off[1],
                  " bytes to the next record head at byte offset ", off[2])));
  // Record 3, not "record 2" (the second record returned before it).
  EXPECT_THAT(st.last, HasSubstr(absl::StrCat(
                           path, ": record 3 at byte offset ", off[3])));
  EXPECT_EQ(st.truncated, "");
  // A reader whose range starts inside the file does not know the index.
  auto mid = SkipReader(path, off[2]);
  ASSERT_NE(mid, nullptr);
  while (*mid->Next(&v)) EXPECT_EQ(mid->file_record_index(), -1);
  EXPECT_THAT(
      mid->skip_stats().first,
      HasSubstr(absl::StrCat(path, ": record at byte offset ", off[3])));
}

// A file cut inside a record: the skip reaches the end of the file, and
// the spot is reported as a truncation with the bytes it skipped.
TEST(RecordIOTest, FileCutInsideARecordIsReportedAsTruncated) {
  std::vector<int64_t> off;
  const std::string path = TmpPath("cut.rec");
  WriteAndRead({"zero", "one", "two", "a longer record three"}, path, &off);
  const int64_t cut = off[3] + 12;
  WriteAll(path, ReadAll(path).substr(0, cut));
  auto r = SkipReader(path);
  ASSERT_NE(r, nullptr);
  absl::string_view v;
  int n = 0;
  while (*r->Next(&v)) ++n;
  EXPECT_EQ(n, 3);
  const SkipStats& st = r->skip_stats();
  EXPECT_EQ(st.skipped_bytes, cut - off[3]);
  EXPECT_THAT(st.truncated,
              HasSubstr(absl::StrCat(path, ": record 3 at byte offset ", off[3],
                                     ": record length")));
  EXPECT_THAT(st.truncated,
              HasSubstr(absl::StrCat("skipped ", cut - off[3],
                                     " bytes to the end of the file")));
}

// ReadAt names the record by the index the caller gives, and an offset
// past the end of the file is reported as such, not as a negative count.
TEST(RecordIOTest, ReadAtPastTheEndNamesTheRecordAndNoNegativeCount) {
  std::vector<int64_t> off;
  const std::string path = TmpPath("past.rec");
  WriteAndRead({"a", "bb", "ccc"}, path, &off);
  auto r = RecordReader::Open(path);
  ASSERT_TRUE(r.ok());
  std::string p;
  RecordExtent extent;
  ASSERT_TRUE((*r)->ReadAt(off[1], &p, 1, &extent).ok());
  EXPECT_EQ(extent.end, off[2]);
  const int64_t far = (*r)->file_size() + 4000;
  absl::Status s = (*r)->ReadAt(far, &p, 9711, &extent);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(extent.past_end_of_file);
  const std::string m(s.message());
  EXPECT_THAT(
      m, HasSubstr(absl::StrCat(path, ": record 9711 at byte offset ", far)));
  EXPECT_THAT(m, HasSubstr(absl::StrCat("past the end of the file (",
                                        (*r)->file_size(), " bytes)")));
  EXPECT_THAT(m, ::testing::Not(::testing::ContainsRegex("-[0-9]"))) << m;
  // Without an index, none is named.
  s = (*r)->ReadAt(off[2] + 4, &p);
  EXPECT_THAT(
      std::string(s.message()),
      HasSubstr(absl::StrCat(path, ": record at byte offset ", off[2] + 4)));
  EXPECT_EQ(*(*r)->FindHead(off[1] + 4), off[2]);
  EXPECT_EQ(*(*r)->FindHead(off[2] + 4), (*r)->file_size());
}

TEST(RecordIOTest, ReadAtAndOpenErrors) {
  std::vector<int64_t> off;
  const std::string path = TmpPath("at.rec");
  WriteAndRead({"a", "bb" + Magic() + "cc", "ddd"}, path, &off);
  auto r = RecordReader::Open(path);
  ASSERT_TRUE(r.ok());
  std::string p;
  ASSERT_TRUE((*r)->ReadAt(off[2], &p).ok());
  EXPECT_EQ(p, "ddd");
  EXPECT_FALSE((*r)->ReadAt(off[2] + 4, &p).ok());
  EXPECT_FALSE((*r)->ReadAt(off[2] + 1, &p).ok());
  EXPECT_FALSE((*r)->ReadAt(1 << 30, &p).ok());
  auto missing = RecordReader::Open(TmpPath("none.rec"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("none.rec"));
  auto w = RecordWriter::Create("/no/such/dir/x.rec");
  EXPECT_FALSE(w.ok());
}

}  // namespace
}  // namespace recordio
}  // namespace pstrain
