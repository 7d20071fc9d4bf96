#include "util/escape.h"

#include <string>

#include "gtest/gtest.h"

namespace pstrain {
namespace {

TEST(EscapeForLogTest, PlainTextIsUnchanged) {
  EXPECT_EQ(EscapeForLog("10.0.0.1:9091"), "10.0.0.1:9091");
  EXPECT_EQ(EscapeForLog(""), "");
}

TEST(EscapeForLogTest, ControlBytesAndNewlinesStayOnOneLine) {
  const std::string forged =
      "host\nE0101 00:00:00.000000 1 scheduler.cc:1] forged\r\x1b[2J\x7f";
  const std::string escaped = EscapeForLog(forged);
  EXPECT_EQ(escaped.find('\n'), std::string::npos);
  EXPECT_EQ(escaped.find('\r'), std::string::npos);
  EXPECT_EQ(escaped.find('\x1b'), std::string::npos);
  EXPECT_EQ(escaped.find('\x7f'), std::string::npos);
  EXPECT_EQ(escaped,
            "host\\nE0101 00:00:00.000000 1 scheduler.cc:1] "
            "forged\\r\\x1b[2J\\x7f");
}

TEST(EscapeForLogTest, BackslashesQuotesAndHighBytesAreEscaped) {
  // An escaped form cannot be mistaken for the escape of something else.
  EXPECT_EQ(EscapeForLog("a\\nb"), "a\\\\nb");
  EXPECT_EQ(EscapeForLog("'\""), "\\'\\\"");
  EXPECT_EQ(EscapeForLog(std::string("\xe2\x80\xae\0", 4)),
            "\\xe2\\x80\\xae\\x00");
}

TEST(EscapeForLogTest, LongTextIsCutAndSaysHowLongItWas) {
  const std::string escaped = EscapeForLog(std::string(100000, 'a'), 8);
  EXPECT_EQ(escaped, "aaaaaaaa...(100000 bytes)");
  EXPECT_EQ(EscapeForLog(std::string(300, '\n')).size(),
            2 * kMaxLoggedPeerBytes + std::string("...(300 bytes)").size());
}

}  // namespace
}  // namespace pstrain
