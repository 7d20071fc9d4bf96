#include "launcher/args.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pstrain {
namespace launcher {
namespace {

using ::testing::ElementsAre;

TEST(SplitLaunchArgsTest, MxnetSpellingBecomesGflags) {
  auto a = SplitLaunchArgs({"launch", "-n", "2", "-s", "1", "-H", "hosts",
                            "--launcher", "ssh", "--sync-dst-dir", "/tmp/x",
                            "--env", "A=1", "--env=B=2=3", "--", "worker",
                            "--flagfile=f", "-n", "9"});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(a->flags, ElementsAre("launch", "--num_workers=2",
                                    "--num_servers=1", "--hostfile=hosts",
                                    "--launcher=ssh", "--sync_dst_dir=/tmp/x"));
  EXPECT_THAT(a->env, ElementsAre("A=1", "B=2=3"));
  // Everything after -- belongs to the worker, even options it shares.
  EXPECT_THAT(a->command, ElementsAre("worker", "--flagfile=f", "-n", "9"));
}

TEST(SplitLaunchArgsTest, CommandStartsAtFirstPositionalWithoutDashDash) {
  auto a = SplitLaunchArgs(
      {"launch", "-n2", "--num-servers=3", "python", "train.py", "--lr", "1"});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(a->flags,
              ElementsAre("launch", "--num_workers=2", "--num_servers=3"));
  EXPECT_THAT(a->command, ElementsAre("python", "train.py", "--lr", "1"));
}

TEST(SplitLaunchArgsTest, HelpPassesThrough) {
  auto a = SplitLaunchArgs({"launch", "-h"});
  ASSERT_TRUE(a.ok());
  EXPECT_THAT(a->flags, ElementsAre("launch", "--help"));
}

TEST(SplitLaunchArgsTest, Errors) {
  EXPECT_EQ(SplitLaunchArgs({"launch", "-n"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto bad_env = SplitLaunchArgs({"launch", "--env", "NOEQUALS"});
  EXPECT_EQ(bad_env.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad_env.status().message()),
              ::testing::HasSubstr("NOEQUALS"));
  auto unknown = SplitLaunchArgs({"launch", "-x", "1"});
  EXPECT_THAT(std::string(unknown.status().message()),
              ::testing::HasSubstr("'-x'"));
}

}  // namespace
}  // namespace launcher
}  // namespace pstrain
