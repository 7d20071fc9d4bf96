#include "util/flags.h"

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "gflags/gflags.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

DEFINE_int32(test_count, 3, "A count.");
DEFINE_bool(test_switch, false, "A switch.");
DEFINE_string(test_name, "none", "A name.");
DEFINE_double(test_rate, 0.5, "A rate.");

namespace pstrain {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

std::string Write(const std::string& name, const std::string& text) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/" + name;
  std::ofstream(path) << text;
  return path;
}

class FlagsTest : public ::testing::Test {
 protected:
  gflags::FlagSaver saver_;  // Every test starts from the defaults.
};

std::string Error(const std::vector<std::string>& args) {
  absl::StatusOr<ParsedFlags> p = ParseFlags(args);
  EXPECT_FALSE(p.ok());
  if (p.ok()) return "";
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(p.status().message());
}

TEST_F(FlagsTest, SetsFlagsInEverySpellingAndKeepsPositionals) {
  auto p = ParseFlags({"prog", "a", "--test-count", "7", "-test_name=x",
                       "--test_switch", "b", "--", "--test_rate=9"});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(FLAGS_test_count, 7);
  EXPECT_EQ(FLAGS_test_name, "x");
  EXPECT_TRUE(FLAGS_test_switch);
  EXPECT_EQ(FLAGS_test_rate, 0.5);
  EXPECT_THAT(p->positional, ElementsAre("prog", "a", "b", "--test_rate=9"));
  EXPECT_FALSE(p->help);
  ASSERT_TRUE(ParseFlags({"prog", "--notest_switch"}).ok());
  EXPECT_FALSE(FLAGS_test_switch);
  ASSERT_TRUE(ParseFlags({"prog", "--test-switch", "--no-test-switch"}).ok());
  EXPECT_FALSE(FLAGS_test_switch);
  // MXNet's int switches; another word after a bool is an argument.
  p = ParseFlags({"prog", "--test_switch", "1", "--test_switch", "x"});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(FLAGS_test_switch);
  EXPECT_THAT(p->positional, ElementsAre("prog", "x"));
  ASSERT_TRUE(ParseFlags({"prog", "--test-switch", "0"}).ok());
  EXPECT_FALSE(FLAGS_test_switch);
}

TEST_F(FlagsTest, UnknownFlagOnTheCommandLineIsRefused) {
  EXPECT_EQ(Error({"prog", "--test_cuont=3"}),
            "unknown flag --test_cuont (did you mean --test_count?)");
  EXPECT_EQ(Error({"prog", "--zzz"}), "unknown flag --zzz");
  EXPECT_THAT(Error({"prog", "--notest_count"}),
              HasSubstr("unknown flag --notest_count"));
  // gflags' --undefok still works.
  EXPECT_TRUE(ParseFlags({"prog", "--undefok=zzz", "--zzz=1"}).ok());
}

// gflags alone would skip the typo in the file without a word.
TEST_F(FlagsTest, UnknownFlagInAFlagFileNamesFileAndLine) {
  const std::string f =
      Write("typo.flags", "# a job\n--test_count=5\n\n--test_cuont=6\n");
  EXPECT_EQ(Error({"prog", "--flagfile=" + f}),
            f + ":4: unknown flag --test_cuont (did you mean --test_count?)");
}

TEST_F(FlagsTest, FlagFilesNestAndApplyWhereTheyStand) {
  const std::string inner = Write("inner.flags", "--test-name=inner\n");
  const std::string outer =
      Write("outer.flags", "  --test_count=5  \n--flagfile=" + inner +
                               "\n--no-test-switch\n--test_rate=2.5\n");
  auto p = ParseFlags({"prog", "--test_switch", "--test_rate=1", "--flagfile",
                       outer, "--test_count=9"});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(FLAGS_test_count, 9);  // The later command-line flag wins.
  EXPECT_EQ(FLAGS_test_name, "inner");
  EXPECT_FALSE(FLAGS_test_switch);
  EXPECT_EQ(FLAGS_test_rate, 2.5);
}

TEST_F(FlagsTest, BadFlagFilesAreRefused) {
  EXPECT_THAT(Error({"prog", "--flagfile=/no/such.flags"}),
              HasSubstr("--flagfile /no/such.flags: No such file"));
  const std::string spaced = Write("spaced.flags", "--test_count 5\n");
  EXPECT_EQ(Error({"prog", "--flagfile=" + spaced}),
            spaced +
                ":1: '--test_count 5' is not a flag (a flag file holds "
                "one --name=value a line, # comments)");
  const std::string names = Write("names.flags", "prog\n--test_count=5\n");
  EXPECT_THAT(Error({"prog", "--flagfile=" + names}),
              HasSubstr(names + ":1: 'prog' is not a flag"));
  const std::string self = Write("self.flags", "--flagfile=");
  std::ofstream(self, std::ios::app) << self << "\n";
  EXPECT_THAT(Error({"prog", "--flagfile=" + self}),
              HasSubstr("flag files include each other"));
  EXPECT_EQ(Error({"prog", "--flagfile="}), "--flagfile '': names no file");
}

TEST_F(FlagsTest, BadValuesSayWhatIsAllowed) {
  EXPECT_EQ(
      Error({"prog", "--test_count=abc"}),
      "--test_count abc: must be an integer in [-2147483648, 2147483647]");
  EXPECT_EQ(Error({"prog", "--test_count=3000000000"}),
            "--test_count 3000000000: must be an integer in [-2147483648, "
            "2147483647]");
  EXPECT_EQ(Error({"prog", "--test_rate="}),
            "--test_rate '': must be a number");
  EXPECT_EQ(Error({"prog", "--test_switch=maybe"}),
            "--test_switch maybe: must be true or false");
  EXPECT_EQ(Error({"prog", "--test_count"}), "--test_count: missing its value");
  EXPECT_EQ(Error({"prog", "--notest_switch=1"}),
            "--notest_switch=1: --notest_switch takes no value");
  const std::string f = Write("bad_value.flags", "--test_rate=fast\n");
  EXPECT_EQ(Error({"prog", "--flagfile=" + f}),
            f + ":1: --test_rate fast: must be a number");
}

TEST_F(FlagsTest, HelpListsTheProgramsFlagsOnly) {
  auto p = ParseFlags({"prog", "--help"});
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->help);
  const std::string help =
      FlagsHelp({"prog", "prog [flags]: does things", {{__FILE__, ""}}});
  EXPECT_THAT(help, HasSubstr("prog [flags]: does things\n"));
  EXPECT_THAT(help,
              HasSubstr("  --test_count (int32, default 3)\n      A count.\n"));
  EXPECT_THAT(help, HasSubstr("--test_name (string, default none)"));
  // glog's and gflags' own flags are not the program's.
  EXPECT_THAT(help, Not(HasSubstr("--logtostderr ")));
  EXPECT_THAT(help, Not(HasSubstr("--vmodule ")));
  EXPECT_THAT(help, Not(HasSubstr("--flagfile (")));
}

TEST(FlagsDeathTest, ErrorsExitWithCode2AndOneLine) {
  const ProgramHelp help{"prog", "prog: usage", {{__FILE__, ""}}};
  EXPECT_EXIT(ParseFlagsOrExit(help, {"prog", "--test_cuont=1"}),
              ::testing::ExitedWithCode(2),
              "^prog: unknown flag --test_cuont \\(did you mean "
              "--test_count\\?\\)\n$");
  EXPECT_EXIT(ParseFlagsOrExit(help, {"prog", "--help"}),
              ::testing::ExitedWithCode(0), "");
  EXPECT_EXIT(ExitWithError("prog", "--x 1: must be 2", 1),
              ::testing::ExitedWithCode(1), "^prog: --x 1: must be 2\n$");
}

TEST(BadFlagTest, NamesFlagValueAndWhy) {
  EXPECT_EQ(BadFlag("heartbeat_timeout_s", -1, "must be > 0").message(),
            "--heartbeat_timeout_s -1: must be > 0");
  EXPECT_EQ(BadFlag("host", "", "required").message(), "--host '': required");
}

}  // namespace
}  // namespace pstrain
