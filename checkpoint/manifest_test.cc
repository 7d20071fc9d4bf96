// Job checkpoints on real files: the manifest, verification of every part,
// corrupt and partial checkpoints falling back to the previous one, keep-K,
// the background writer.
#include "checkpoint/manifest.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "util/file.h"
#include "util/test_util.h"

namespace pstrain {
namespace checkpoint {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Root(const std::string& name) {
  const std::string root = absl::StrCat(std::getenv("TEST_TMPDIR"), "/", name);
  EXPECT_TRUE(MakeDirs(root).ok());
  return root;
}

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

// A checkpoint of `step` under `root` with two parts and its manifest.
std::string WriteCheckpoint(const std::string& root, int64_t step) {
  const std::string dir = StepDir(root, step);
  EXPECT_TRUE(MakeDirs(dir).ok());
  EXPECT_TRUE(WriteFileAtomically(dir + "/server-0.params",
                                  absl::StrCat("weights of step ", step))
                  .ok());
  EXPECT_TRUE(WriteFileAtomically(dir + "/worker-0.params", "position").ok());
  Manifest m;
  m.step = step;
  m.epoch = 1;
  m.batch = 3;
  EXPECT_TRUE(
      WriteManifest(dir, m, {"server-0.params", "worker-0.params"}).ok());
  return dir;
}

TEST(ManifestTest, RoundTripsAndVerifies) {
  const std::string dir = WriteCheckpoint(Root("roundtrip"), 12);
  EXPECT_THAT(dir, HasSubstr("step-0000000012"));
  auto m = VerifyCheckpoint(dir);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->step, 12);
  EXPECT_EQ(m->epoch, 1);
  EXPECT_EQ(m->batch, 3);
  ASSERT_EQ(m->parts.size(), 2u);
  EXPECT_EQ(m->parts[1].name, "worker-0.params");
  EXPECT_EQ(m->parts[1].size, 8);
  EXPECT_EQ(m->parts[1].crc32, Crc32("position"));
  auto part = ReadVerifiedPart(dir, "server-0.params");
  ASSERT_TRUE(part.ok()) << part.status();
  EXPECT_EQ(*part, "weights of step 12");
  // No temporary file is left behind.
  EXPECT_FALSE(Exists(absl::StrCat(dir, "/MANIFEST.tmp.", getpid())));
}

TEST(ManifestTest, ThePartitionRecordRoundTripsAndMayBeAbsent) {
  Manifest m;
  m.step = 4;
  m.partition = "levelled";
  auto back = ParseManifest(SerializeManifest(m), "m");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->partition, "levelled");
  // A manifest from before the record: no line, an empty partition.
  m.partition.clear();
  EXPECT_THAT(SerializeManifest(m), Not(HasSubstr("partition")));
  back = ParseManifest(SerializeManifest(m), "m");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->partition, "");
  // ReadManifest reads the file alone.
  const std::string dir = WriteCheckpoint(Root("partition"), 5);
  auto read = ReadManifest(dir);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->step, 5);
  EXPECT_FALSE(ReadManifest(Root("partition") + "/nowhere").ok());
}

TEST(ManifestTest, Crc32IsZlibs) {
  // The standard check value of CRC-32 (IEEE).
  EXPECT_EQ(Crc32("123456789"), 0xCBF43926u);
}

TEST(ManifestTest, CorruptPartIsNamed) {
  const std::string dir = WriteCheckpoint(Root("corrupt"), 5);
  ASSERT_TRUE(WriteFileAtomically(dir + "/server-0.params", "weights of step 6")
                  .ok());  // Same size, other bytes.
  auto m = VerifyCheckpoint(dir);
  EXPECT_TRUE(absl::IsDataLoss(m.status())) << m.status();
  EXPECT_THAT(m.status().message(), HasSubstr(dir + "/server-0.params"));
  EXPECT_THAT(m.status().message(), HasSubstr("CRC-32"));
  EXPECT_TRUE(
      absl::IsDataLoss(ReadVerifiedPart(dir, "server-0.params").status()));
  // The other part still reads.
  EXPECT_TRUE(ReadVerifiedPart(dir, "worker-0.params").ok());
}

TEST(ManifestTest, TruncatedAndMissingPartsAreNamed) {
  const std::string dir = WriteCheckpoint(Root("truncated"), 5);
  ASSERT_TRUE(WriteFileAtomically(dir + "/worker-0.params", "posit").ok());
  auto m = VerifyCheckpoint(dir);
  EXPECT_TRUE(absl::IsDataLoss(m.status()));
  EXPECT_THAT(m.status().message(), HasSubstr("worker-0.params: 5 bytes"));
  ASSERT_EQ(unlink((dir + "/worker-0.params").c_str()), 0);
  m = VerifyCheckpoint(dir);
  EXPECT_TRUE(absl::IsDataLoss(m.status()));
  EXPECT_THAT(m.status().message(), HasSubstr("worker-0.params unreadable"));
  EXPECT_TRUE(
      absl::IsDataLoss(ReadVerifiedPart(dir, "server-9.params").status()));
}

TEST(ManifestTest, NoManifestIsNoCheckpoint) {
  const std::string root = Root("partial");
  const std::string dir = StepDir(root, 8);
  ASSERT_TRUE(MakeDirs(dir).ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/server-0.params", "half").ok());
  EXPECT_TRUE(absl::IsNotFound(VerifyCheckpoint(dir).status()));
  EXPECT_TRUE(absl::IsNotFound(FindLatestCheckpoint(root).status()));
}

TEST(ManifestTest, MalformedManifestsAreRefused) {
  EXPECT_TRUE(ParseManifest("pstrain-checkpoint 1\nstep 3\nepoch 0\nbatch 1\n"
                            "part a 3 0badf00d\n",
                            "m")
                  .ok());
  for (const char* bad : {
           "",
           "pstrain-checkpoint 2\nstep 3\nepoch 0\nbatch 1\n",
           "pstrain-checkpoint 1\nstep 3\nepoch 0\n",  // Truncated.
           "pstrain-checkpoint 1\nstep -3\nepoch 0\nbatch 1\n",
           "pstrain-checkpoint 1\nstep 3\nepoch 0\nbatch 1\npart ../x 1 0\n",
           "pstrain-checkpoint 1\nstep 3\nepoch 0\nbatch 1\npart a 1 zz\n",
           "pstrain-checkpoint 1\nstep 3\nepoch 0\nbatch 1\nextra\n",
           "pstrain-checkpoint 1\nstep 3\nepoch 0\nbatch 1\npartition\n",
       }) {
    auto m = ParseManifest(bad, "MANIFEST");
    EXPECT_TRUE(absl::IsDataLoss(m.status())) << bad;
    EXPECT_THAT(m.status().message(), HasSubstr("MANIFEST")) << bad;
  }
}

TEST(ManifestTest, LatestSkipsCorruptAndPartialForThePreviousOne) {
  const std::string root = Root("latest");
  WriteCheckpoint(root, 4);
  const std::string good = WriteCheckpoint(root, 8);
  const std::string corrupt = WriteCheckpoint(root, 12);
  ASSERT_TRUE(
      WriteFileAtomically(corrupt + "/server-0.params", "weights of step 13")
          .ok());
  // A newer one still being written: no manifest.
  ASSERT_TRUE(MakeDirs(StepDir(root, 16)).ok());
  // Not checkpoints at all.
  ASSERT_TRUE(MakeDirs(root + "/step-12").ok());
  ASSERT_TRUE(MakeDirs(root + "/other").ok());
  auto latest = FindLatestCheckpoint(root);
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(*latest, good);
}

TEST(ManifestTest, PruneKeepsTheNewestComplete) {
  const std::string root = Root("prune");
  for (int64_t step : {2, 4, 6, 8}) WriteCheckpoint(root, step);
  ASSERT_TRUE(MakeDirs(StepDir(root, 10)).ok());  // In progress.
  ASSERT_TRUE(MakeDirs(StepDir(root, 1)).ok());   // Abandoned.
  ASSERT_TRUE(PruneCheckpoints(root, 2).ok());
  EXPECT_TRUE(Exists(StepDir(root, 10)));
  EXPECT_TRUE(Exists(StepDir(root, 8)));
  EXPECT_TRUE(Exists(StepDir(root, 6)));
  EXPECT_FALSE(Exists(StepDir(root, 4)));
  EXPECT_FALSE(Exists(StepDir(root, 2)));
  EXPECT_FALSE(Exists(StepDir(root, 1)));
}

TEST(ManifestTest, WaitForPartsHasADeadlineAndCancels) {
  const std::string dir = Root("wait");
  ASSERT_TRUE(WriteFileAtomically(dir + "/a", "x").ok());
  EXPECT_TRUE(WaitForParts(dir, {"a"}, absl::Now(), nullptr).ok());
  auto s = WaitForParts(dir, {"a", "b"}, absl::Now() + absl::Milliseconds(50),
                        nullptr);
  EXPECT_TRUE(absl::IsDeadlineExceeded(s));
  EXPECT_THAT(s.message(), HasSubstr(dir + "/b"));
  std::atomic<bool> cancel{true};
  EXPECT_TRUE(absl::IsCancelled(
      WaitForParts(dir, {"b"}, absl::InfiniteFuture(), &cancel)));
}

TEST(BackgroundWriterTest, RunsInOrderAndReportsTheFirstError) {
  std::vector<int> order;
  BackgroundWriter w;
  w.Submit([&] {
    order.push_back(1);
    return absl::OkStatus();
  });
  w.Submit([&] {
    order.push_back(2);
    return absl::DataLossError("disk full");
  });
  w.Submit([&] {
    order.push_back(3);
    return absl::InternalError("later");
  });
  absl::Status s = w.Flush(absl::Now() + absl::Seconds(30));
  EXPECT_TRUE(absl::IsDataLoss(s)) << s;
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
  EXPECT_TRUE(w.Flush(absl::Now() + absl::Seconds(30)).ok());
}

TEST(BackgroundWriterTest, DestructorCancelsALongTask) {
  const std::string dir = Root("cancel");
  auto w = std::make_unique<BackgroundWriter>();
  const std::atomic<bool>* cancel = w->cancelled();
  absl::Status result;
  std::atomic<bool> started{false};
  w->Submit([&] {
    started = true;
    result = WaitForParts(dir, {"never"}, absl::InfiniteFuture(), cancel);
    return result;
  });
  ASSERT_TRUE(WaitFor([&] { return started.load(); }));
  w.reset();  // Joins: the wait ends.
  EXPECT_TRUE(absl::IsCancelled(result)) << result;
}

}  // namespace
}  // namespace checkpoint
}  // namespace pstrain
