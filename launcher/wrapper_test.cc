#include "launcher/wrapper.h"

#include "gtest/gtest.h"

namespace pstrain {
namespace launcher {
namespace {

TEST(WrapperReportTest, ParsesTheWrappersLine) {
  auto r = ParseWrapperReport(
      "pstrain-node-pid 1234 98765 /tmp/x/pstrain-token.AbC123");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->pid, 1234);
  EXPECT_EQ(r->started, "98765");
  EXPECT_EQ(r->token_file, "/tmp/x/pstrain-token.AbC123");
}

TEST(WrapperReportTest, OtherLinesAreNotReports) {
  EXPECT_FALSE(ParseWrapperReport("hello").has_value());
  EXPECT_FALSE(ParseWrapperReport("pstrain-node-pid").has_value());
  EXPECT_FALSE(ParseWrapperReport(" pstrain-node-pid 1 2 3").has_value());
}

TEST(WrapperReportTest, MalformedFieldsStayUnset) {
  // No pid 0 or negative pid: `kill 0` would hit the whole group.
  for (const char* line : {"pstrain-node-pid 0 5 /tmp/pstrain-token.abcdef",
                           "pstrain-node-pid -3 5 /tmp/pstrain-token.abcdef",
                           "pstrain-node-pid x 5 /tmp/pstrain-token.abcdef"}) {
    auto r = ParseWrapperReport(line);
    ASSERT_TRUE(r.has_value()) << line;
    EXPECT_EQ(r->pid, -1) << line;
  }
  // Only a token file's name is ever removed.
  auto r = ParseWrapperReport("pstrain-node-pid 7 5 /home/me/.bashrc");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->pid, 7);
  EXPECT_EQ(r->started, "5");
  EXPECT_EQ(r->token_file, "");
  // A start time that is not a number, or a word too many or too few.
  r = ParseWrapperReport("pstrain-node-pid 7 x /tmp/pstrain-token.abcdef");
  EXPECT_EQ(r->started, "");
  EXPECT_EQ(r->token_file, "/tmp/pstrain-token.abcdef");
  r = ParseWrapperReport("pstrain-node-pid 7 5 /tmp/pstrain-token.abcdef x");
  EXPECT_EQ(r->pid, 7);
  EXPECT_EQ(r->started, "");
  EXPECT_EQ(r->token_file, "");
  r = ParseWrapperReport("pstrain-node-pid 7");
  EXPECT_EQ(r->pid, 7);
  EXPECT_EQ(r->token_file, "");
}

TEST(IsTokenFileTest, OnlyMktempNames) {
  EXPECT_TRUE(IsTokenFile("/tmp/pstrain-token.abcDE9"));
  EXPECT_TRUE(IsTokenFile("pstrain-token.abcDE9"));
  EXPECT_FALSE(IsTokenFile("/tmp/pstrain-token.abcDE"));    // Too short.
  EXPECT_FALSE(IsTokenFile("/tmp/pstrain-token.abcDE99"));  // Too long.
  EXPECT_FALSE(IsTokenFile("/tmp/pstrain-token.ab/DE9"));
  EXPECT_FALSE(IsTokenFile("/tmp/pstrain-token.ab*DE9"));
  EXPECT_FALSE(IsTokenFile("/tmp/other-token.abcDE9"));
  EXPECT_FALSE(IsTokenFile("/tmp/pstrain-token.abcDE9/"));
}

TEST(WrapperScriptTest, DefinesTheSameProcessFunctionsFirst) {
  const std::string script = WrapperScript();
  EXPECT_EQ(script.rfind(kSameProcessFunctions, 0), 0u);
  EXPECT_NE(script.find("pstrain-node-pid"), std::string::npos);
}

}  // namespace
}  // namespace launcher
}  // namespace pstrain
