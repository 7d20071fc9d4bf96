#include "recordio/split.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pstrain {
namespace recordio {
namespace {

std::string TmpPath(const std::string& name) {
  return absl::StrCat(std::getenv("TEST_TMPDIR"), "/", name);
}

// Writes `n` records of random sizes (some holding the magic at aligned
// offsets) to `path`; record payloads are "<file>:<i>:" + filler.
std::vector<std::string> MakeFile(const std::string& path, int n, int seed) {
  std::mt19937 rng(seed);
  auto w = RecordWriter::Create(path);
  std::vector<std::string> payloads;
  for (int i = 0; i < n; ++i) {
    std::string p = absl::StrCat(path, ":", i, ":");
    p.resize(p.size() + rng() % 300, 'z');
    if (i % 7 == 3) {
      p.resize((p.size() + 3) / 4 * 4);
      p.append(reinterpret_cast<const char*>(&kMagic), 4);
      p += "after";
    }
    EXPECT_TRUE((*w)->Write(p).ok());
    payloads.push_back(p);
  }
  EXPECT_TRUE((*w)->Close().ok());
  return payloads;
}

TEST(SplitTest, EveryRecordInExactlyOnePartForOneToEightParts) {
  std::vector<std::string> files, all;
  for (int f = 0; f < 3; ++f) {
    files.push_back(TmpPath(absl::StrCat("split", f, ".rec")));
    auto p = MakeFile(files.back(), 20 + 13 * f, f);
    all.insert(all.end(), p.begin(), p.end());
  }
  for (int parts = 1; parts <= 8; ++parts) {
    std::map<std::string, int> seen;
    std::vector<std::string> order;
    for (int k = 0; k < parts; ++k) {
      auto r = PartReader::Open(files, k, parts);
      ASSERT_TRUE(r.ok()) << r.status();
      absl::string_view v;
      while (true) {
        auto more = (*r)->Next(&v);
        ASSERT_TRUE(more.ok()) << more.status();
        if (!*more) break;
        ++seen[std::string(v)];
        order.emplace_back(v);
      }
    }
    ASSERT_EQ(seen.size(), all.size()) << parts << " parts";
    for (const auto& [p, count] : seen) EXPECT_EQ(count, 1) << p;
    EXPECT_EQ(order, all) << "parts must be contiguous and in order";
  }
}

// A part over two files read with kSkip: the skip stats add up across the
// files, keep the first and last spots and the truncation, and records are
// numbered within their own file.
TEST(SplitTest, SkipStatsAcrossFilesAndIndicesWithinEachFile) {
  const std::string a = TmpPath("skip_a.rec"), b = TmpPath("skip_b.rec");
  MakeFile(a, 5, 1);
  MakeFile(b, 4, 2);
  std::vector<int64_t> a_off, b_off;
  for (const auto& [path, off] :
       {std::make_pair(a, &a_off), std::make_pair(b, &b_off)}) {
    auto r = RecordReader::Open(path);
    absl::string_view v;
    while (*(*r)->Next(&v)) off->push_back((*r)->record_offset());
  }
  // a: record 2 loses its magic; b: cut inside its last record.
  std::fstream fa(a, std::ios::in | std::ios::out | std::ios::binary);
  fa.seekp(a_off[2]);
  fa.write("\0\0\0\0", 4);
  fa.close();
  std::filesystem::resize_file(b, b_off[3] + 9);
  ReaderOptions skip;
  skip.policy = CorruptionPolicy::kSkip;
  auto r = PartReader::Open({a, b}, 0, 1, skip);
  ASSERT_TRUE(r.ok());
  absl::string_view v;
  std::vector<std::pair<std::string, int64_t>> got;
  while (*(*r)->Next(&v))
    got.emplace_back((*r)->path(), (*r)->file_record_index());
  EXPECT_EQ(got, (std::vector<std::pair<std::string, int64_t>>{
                     {a, 0}, {a, 1}, {a, 3}, {a, 4}, {b, 0}, {b, 1}, {b, 2}}));
  const SkipStats st = (*r)->skip_stats();
  EXPECT_EQ(st.corrupt_records, 2);
  EXPECT_THAT(st.first,
              ::testing::HasSubstr(absl::StrCat(a, ": record 2 at byte offset ",
                                                a_off[2], ": bad magic")));
  EXPECT_THAT(st.last, ::testing::HasSubstr(absl::StrCat(
                           b, ": record 3 at byte offset ", b_off[3])));
  EXPECT_EQ(st.truncated, st.last);
}

TEST(SplitTest, PartRangesFollowDmlcStepRule) {
  // 3 files of 100, 40, 60 bytes: total 200, 3 parts -> step ceil(200/3)=67
  // rounded up to 68: [0,68) [68,136) [136,200).
  auto p1 = PartRanges({"a", "b", "c"}, {100, 40, 60}, 1, 3);
  ASSERT_TRUE(p1.ok());
  ASSERT_EQ(p1->size(), 2u);
  EXPECT_EQ((*p1)[0].path, "a");
  EXPECT_EQ((*p1)[0].begin, 68);
  EXPECT_EQ((*p1)[0].end, 100);
  EXPECT_EQ((*p1)[1].path, "b");
  EXPECT_EQ((*p1)[1].begin, 0);
  EXPECT_EQ((*p1)[1].end, 36);
  EXPECT_FALSE(PartRanges({"a"}, {4}, 3, 3).ok());
  EXPECT_FALSE(PartRanges({"a"}, {4}, 0, 0).ok());
}

TEST(SplitTest, IndexedPartsHoldCeilNOverParts) {
  std::vector<IndexEntry> e;
  for (int i = 0; i < 10; ++i) e.push_back({i, (9 - i) * 16});  // Unsorted.
  auto p0 = IndexedPart(e, 0, 3);
  auto p2 = IndexedPart(e, 2, 3);
  ASSERT_TRUE(p0.ok() && p2.ok());
  ASSERT_EQ(p0->size(), 4u);
  EXPECT_EQ((*p0)[0].offset, 0);  // Sorted by offset.
  EXPECT_EQ((*p0)[0].key, 9);
  EXPECT_EQ(p2->size(), 2u);
  EXPECT_EQ(IndexedPart(e, 0, 20)->size(), 1u);
  EXPECT_EQ(IndexedPart(e, 19, 20)->size(), 0u);
}

}  // namespace
}  // namespace recordio
}  // namespace pstrain
