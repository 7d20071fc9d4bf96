#include "recordio/split.h"

#include <cstdlib>
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
