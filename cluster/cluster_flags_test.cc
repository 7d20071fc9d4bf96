#include "cluster/cluster_flags.h"

#include <string>
#include <vector>

#include "cluster/node_flags.h"
#include "gflags/gflags.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pstrain {
namespace cluster {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class ClusterFlagsTest : public ::testing::Test {
 protected:
  // Parses `flags` (after "prog") from the defaults and returns the node
  // options' error, or "" when they are valid.
  std::string Error(std::vector<std::string> flags) {
    gflags::FlagSaver restore;  // Each case from the defaults.
    flags.insert(flags.begin(), "prog");
    auto parsed = ParseFlags(flags);
    EXPECT_TRUE(parsed.ok()) << parsed.status();
    auto o = NodeOptionsFromFlags(proto::WORKER);
    return o.ok() ? "" : std::string(o.status().message());
  }
  gflags::FlagSaver saver_;
};

TEST_F(ClusterFlagsTest, DefaultsAreTheLibrarysAndOneEach) {
  auto parsed = ParseFlags({"prog", "--scheduler_address=10.0.0.1:9091"});
  ASSERT_TRUE(parsed.ok());
  auto o = NodeOptionsFromFlags(proto::SERVER);
  ASSERT_TRUE(o.ok()) << o.status();
  const ClusterOptions defaults;
  EXPECT_EQ(o->role, proto::SERVER);
  EXPECT_EQ(o->scheduler_address, "10.0.0.1:9091");
  EXPECT_EQ(o->start_timeout, defaults.start_timeout);
  EXPECT_EQ(o->start_timeout, kDefaultStartTimeout);
  EXPECT_EQ(o->heartbeat_interval, defaults.heartbeat_interval);
  EXPECT_EQ(o->heartbeat_timeout, defaults.heartbeat_timeout);
  EXPECT_EQ(o->host, defaults.host);
  EXPECT_EQ(o->port, defaults.port);
  EXPECT_EQ(o->shm_bytes, defaults.shm_bytes);
  EXPECT_EQ(o->token, "");
  EXPECT_THAT(
      TimingFlags(*o),
      ElementsAre("--start_timeout_s=120", "--heartbeat_interval_s=1",
                  "--heartbeat_timeout_s=10", "--insecure_plaintext=false"));
  EXPECT_FALSE(o->insecure_plaintext);
}

TEST_F(ClusterFlagsTest, NonsenseIsRefusedNamingFlagValueAndRange) {
  const std::string a = "--scheduler_address=127.0.0.1:9091";
  EXPECT_EQ(Error({a, "--heartbeat_timeout_s=-1"}),
            "--heartbeat_timeout_s -1: must be in (0, 86400]");
  EXPECT_EQ(Error({a, "--heartbeat_interval_s=0"}),
            "--heartbeat_interval_s 0: must be in (0, 86400]");
  EXPECT_EQ(Error({a, "--heartbeat_interval_s=5", "--heartbeat_timeout_s=5"}),
            "--heartbeat_timeout_s 5: must be greater than "
            "--heartbeat_interval_s 5");
  EXPECT_EQ(Error({a, "--start_timeout_s=nan"}),
            "--start_timeout_s nan: must be in (0, 86400]");
  EXPECT_EQ(Error({a, "--start_timeout_s=1e9"}),
            "--start_timeout_s 1e+09: must be in (0, 86400]");
  EXPECT_EQ(Error({a, "--num_workers=0"}), "--num_workers 0: must be >= 1");
  EXPECT_EQ(Error({a, "--num_servers=-2"}), "--num_servers -2: must be >= 1");
  EXPECT_EQ(Error({a, "--port=70000"}),
            "--port 70000: must be in [0, 65535] (0: any)");
  EXPECT_EQ(Error({a, "--shm_bytes=-1"}),
            "--shm_bytes -1: must be >= 0 (0: off)");
  EXPECT_EQ(Error({a, "--host="}), "--host '': must name this host's address");
  EXPECT_THAT(Error({a, "--token_file=/no/such/token"}),
              HasSubstr("--token_file /no/such/token: No such file"));
  EXPECT_THAT(Error({"--scheduler_address=localhost"}),
              HasSubstr("--scheduler_address localhost: must be host:port"));
  EXPECT_THAT(Error({"--scheduler_address=127.0.0.1:0"}),
              HasSubstr("--scheduler_address 127.0.0.1:0: port 0 is for the "
                        "scheduler"));
  EXPECT_THAT(Error({}),
              HasSubstr("--scheduler_address '': must be host:port"));
  EXPECT_EQ(Error({a}), "");
}

TEST_F(ClusterFlagsTest, SchedulerAddressMayBeLeftEmptyWhereOptional) {
  ASSERT_TRUE(ParseFlags({"prog", "--heartbeat_timeout_s=3"}).ok());
  auto o = ClusterOptionsFromFlags(/*require_scheduler_address=*/false);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->scheduler_address, "");
  EXPECT_EQ(o->heartbeat_timeout, absl::Seconds(3));
  // The scheduler may bind port 0.
  ASSERT_TRUE(ParseFlags({"prog", "--scheduler_address=127.0.0.1:0"}).ok());
  EXPECT_TRUE(ClusterOptionsFromFlags().ok());
}

TEST(ClusterFlagGroupTest, HelpListsTheSharedFlags) {
  const std::string help =
      FlagsHelp({"prog", "usage", {ClusterFlagGroup(), NodeFlagGroup()}});
  EXPECT_THAT(
      help, HasSubstr("Flags common to the scheduler, servers and workers:\n"));
  EXPECT_THAT(help, HasSubstr("  --start_timeout_s (double, default 120)"));
  EXPECT_THAT(help, HasSubstr("Flags common to servers and workers:\n"));
  EXPECT_THAT(help, HasSubstr("  --shm_bytes (int64, default 536870912)"));
}

}  // namespace
}  // namespace cluster
}  // namespace pstrain
