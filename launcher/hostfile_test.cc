#include "launcher/hostfile.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pstrain {
namespace launcher {
namespace {

using ::testing::HasSubstr;

TEST(HostfileTest, ParsesHostsPortsSlotsAndComments) {
  auto hosts = ParseHostfile(
      "# cluster\n"
      "node1\n"
      "\n"
      "10.0.0.2:2222   # second\n"
      "node3 slots=8\r\n",
      "hosts");
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  ASSERT_EQ(hosts->size(), 3u);
  EXPECT_EQ((*hosts)[0].name, "node1");
  EXPECT_EQ((*hosts)[0].ssh_port, 22);
  EXPECT_EQ((*hosts)[1].name, "10.0.0.2");
  EXPECT_EQ((*hosts)[1].ssh_port, 2222);
  EXPECT_EQ((*hosts)[1].ToString(), "10.0.0.2:2222");
  EXPECT_EQ((*hosts)[2].name, "node3");
  EXPECT_EQ((*hosts)[0].slots, 0);  // None given: no limit.
  EXPECT_EQ((*hosts)[2].slots, 8);
}

TEST(HostfileTest, ErrorsNameFileAndLine) {
  auto bad_port = ParseHostfile("a\nb:99999\n", "my.hosts");
  ASSERT_FALSE(bad_port.ok());
  EXPECT_THAT(std::string(bad_port.status().message()),
              HasSubstr("my.hosts:2: bad port '99999'"));
  auto extra = ParseHostfile("a b\n", "h");
  EXPECT_THAT(std::string(extra.status().message()), HasSubstr("h:1"));
  auto empty_host = ParseHostfile(":22\n", "h");
  EXPECT_THAT(std::string(empty_host.status().message()),
              HasSubstr("empty host name"));
  auto slots = ParseHostfile("a slots=0\n", "h");
  EXPECT_THAT(std::string(slots.status().message()),
              HasSubstr("h:1: bad slots '0'"));
  auto none = ParseHostfile("# nothing\n\n", "h");
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("no host"));
}

TEST(HostfileTest, MissingFileNamesPath) {
  auto r = ReadHostfile("/no/such/hosts");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("/no/such/hosts"));
}

}  // namespace
}  // namespace launcher
}  // namespace pstrain
