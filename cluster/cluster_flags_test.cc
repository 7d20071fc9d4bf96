#include "cluster/cluster_flags.h"

#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cluster/node_flags.h"
#include "gflags/gflags.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pstrain {
namespace cluster {
namespace {

using ::testing::AllOf;
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

TEST_F(ClusterFlagsTest, TimelineFlags) {
  gflags::FlagSaver restore;
  ASSERT_TRUE(ParseFlags({"prog", "--scheduler_address=10.0.0.1:9091",
                          "--timeline=/tmp/p.json", "--timeline_steps=3:5"})
                  .ok());
  auto o = NodeOptionsFromFlags(proto::WORKER);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->timeline.path, "/tmp/p.json");
  EXPECT_EQ(o->timeline.first_step, 3);
  EXPECT_EQ(o->timeline.last_step, 5);
  EXPECT_THAT(Error({"--scheduler_address=h:1", "--timeline_steps=5:2"}),
              HasSubstr("--timeline_steps 5:2: must be A:B"));
  EXPECT_THAT(Error({"--scheduler_address=h:1", "--timeline_steps=0:2"}),
              HasSubstr("--timeline_steps 0:2"));
}

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
  EXPECT_EQ(o->io_spin, defaults.io_spin);
  EXPECT_EQ(o->io_spin, absl::Microseconds(50));
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
  EXPECT_EQ(Error({a, "--io_spin_us=-1"}),
            "--io_spin_us -1: must be in [0, 100000] (0: off)");
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

// MXNet's variables as Kubeflow's MXJob operator sets them for a worker.
Environment MxJobWorker() {
  const std::string token = std::string(std::getenv("TEST_TMPDIR")) + "/tok";
  std::ofstream(token) << "job-token\n";
  return {{"DMLC_ROLE", "worker"},       {"DMLC_PS_ROOT_URI", "10.1.2.3"},
          {"DMLC_PS_ROOT_PORT", "9091"}, {"DMLC_NUM_WORKER", "4"},
          {"DMLC_NUM_SERVER", "2"},      {"DMLC_NODE_HOST", "10.1.2.9"},
          {"PSTRAIN_TOKEN_FILE", token}, {"DMLC_WORKER_ID", "3"},
          {"PATH", "/usr/bin"}};
}

TEST_F(ClusterFlagsTest, DmlcVariablesGiveTheFlagsANodeLacks) {
  ASSERT_TRUE(ParseFlags({"prog"}).ok()) << ParseFlags({"prog"}).status();
  auto notes = ApplyEnvironment(proto::WORKER, MxJobWorker());
  ASSERT_TRUE(notes.ok()) << notes.status();
  EXPECT_THAT(*notes, ::testing::IsEmpty());
  auto o = NodeOptionsFromFlags(proto::WORKER);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->scheduler_address, "10.1.2.3:9091");
  EXPECT_EQ(o->num_workers, 4);
  EXPECT_EQ(o->num_servers, 2);
  EXPECT_EQ(o->host, "10.1.2.9");
  EXPECT_EQ(o->rank_hint, 3);
  EXPECT_EQ(o->token, "job-token");
}

TEST_F(ClusterFlagsTest, GivenFlagsWinAndTheConflictIsNoted) {
  ASSERT_TRUE(ParseFlags({"prog", "--num_workers=8", "--host=10.1.2.9"}).ok());
  auto notes = ApplyEnvironment(proto::WORKER, MxJobWorker());
  ASSERT_TRUE(notes.ok()) << notes.status();
  // Equal values are no conflict.
  EXPECT_THAT(*notes, ElementsAre("--num_workers=8 (given) wins over "
                                  "DMLC_NUM_WORKER=4"));
  auto o = NodeOptionsFromFlags(proto::WORKER);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->num_workers, 8);
  EXPECT_EQ(o->num_servers, 2);
}

TEST_F(ClusterFlagsTest, TheSchedulerBindsTheRootPort) {
  Environment env = MxJobWorker();
  env["DMLC_ROLE"] = "scheduler";
  {
    gflags::FlagSaver restore;
    ASSERT_TRUE(ParseFlags({"prog"}).ok());
    auto notes = ApplyEnvironment(proto::SCHEDULER, env);
    ASSERT_TRUE(notes.ok()) << notes.status();
    auto o = ClusterOptionsFromFlags();
    ASSERT_TRUE(o.ok()) << o.status();
    EXPECT_EQ(o->scheduler_address, "10.1.2.9:9091");  // DMLC_NODE_HOST's.
  }
  // In a pod the URI names a service: without a node address, every
  // interface, said so.
  env.erase("DMLC_NODE_HOST");
  ASSERT_TRUE(ParseFlags({"prog"}).ok());
  auto notes = ApplyEnvironment(proto::SCHEDULER, env);
  ASSERT_TRUE(notes.ok()) << notes.status();
  ASSERT_EQ(notes->size(), 1u);
  EXPECT_THAT((*notes)[0], HasSubstr("binding every interface (0.0.0.0:9091)"));
  EXPECT_EQ(ClusterOptionsFromFlags()->scheduler_address, "0.0.0.0:9091");
}

TEST_F(ClusterFlagsTest, TheLoopbackInterfaceGivesItsAddress) {
  ASSERT_TRUE(ParseFlags({"prog"}).ok()) << ParseFlags({"prog"}).status();
  Environment env = MxJobWorker();
  env.erase("DMLC_NODE_HOST");
  env["DMLC_INTERFACE"] = "lo";
  auto notes = ApplyEnvironment(proto::SERVER, env);
  ASSERT_FALSE(notes.ok());  // DMLC_ROLE=worker.
  env["DMLC_ROLE"] = "server";
  notes = ApplyEnvironment(proto::SERVER, env);
  ASSERT_TRUE(notes.ok()) << notes.status();
  auto o = NodeOptionsFromFlags(proto::SERVER);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->host, "127.0.0.1");
  EXPECT_EQ(o->rank_hint, -1);  // DMLC_WORKER_ID is a worker's.
}

TEST_F(ClusterFlagsTest, BadVariablesAreRefusedByName) {
  auto error = [](proto::Role role, const Environment& changes,
                  const std::vector<std::string>& drop = {}) {
    gflags::FlagSaver restore;
    Environment env = MxJobWorker();
    for (const auto& [k, v] : changes) env[k] = v;
    for (const auto& k : drop) env.erase(k);
    auto notes = ApplyEnvironment(role, env);
    return notes.ok() ? std::string() : std::string(notes.status().message());
  };
  EXPECT_EQ(error(proto::SERVER, {}),
            "environment variable DMLC_ROLE='worker', but this is the server "
            "binary: start `worker` for that role");
  EXPECT_EQ(error(proto::WORKER, {{"DMLC_ROLE", "Worker"}}),
            "environment variable DMLC_ROLE='Worker': must be scheduler, "
            "server or worker");
  EXPECT_EQ(error(proto::WORKER, {{"DMLC_NUM_WORKER", "four"}}),
            "environment variable DMLC_NUM_WORKER='four': must be an integer "
            ">= 1");
  EXPECT_EQ(error(proto::WORKER, {{"DMLC_NUM_SERVER", "0"}}),
            "environment variable DMLC_NUM_SERVER='0': must be an integer "
            ">= 1");
  EXPECT_EQ(error(proto::WORKER, {{"DMLC_PS_ROOT_PORT", "70000"}}),
            "environment variable DMLC_PS_ROOT_PORT='70000': must be in [1, "
            "65535]");
  EXPECT_THAT(error(proto::WORKER, {}, {"DMLC_PS_ROOT_URI"}),
              HasSubstr("DMLC_PS_ROOT_PORT is set without DMLC_PS_ROOT_URI"));
  EXPECT_EQ(error(proto::WORKER, {{"DMLC_WORKER_ID", "-1"}}),
            "environment variable DMLC_WORKER_ID='-1': must be an integer "
            ">= 0");
  EXPECT_THAT(error(proto::WORKER, {{"DMLC_INTERFACE", "no-such-if0"}},
                    {"DMLC_NODE_HOST"}),
              AllOf(HasSubstr("DMLC_INTERFACE='no-such-if0': no such "
                              "interface"),
                    HasSubstr("lo")));
  EXPECT_EQ(error(proto::WORKER, {}), "");
}

// What a worker makes of `env`: its options, or the error.
std::string Outcome(const Environment& env) {
  gflags::FlagSaver restore;
  EXPECT_TRUE(ParseFlags({"prog"}).ok());
  absl::StatusOr<std::vector<std::string>> notes =
      ApplyEnvironment(proto::WORKER, env);
  if (!notes.ok()) return std::string(notes.status().message());
  absl::StatusOr<ClusterOptions> o = NodeOptionsFromFlags(proto::WORKER);
  if (!o.ok()) return std::string(o.status().message());
  return absl::StrCat(o->scheduler_address, " ", o->num_workers, " ",
                      o->num_servers, " ", o->host, " ", o->rank_hint, " ",
                      o->token);
}

// kEnvironmentVariables is what ApplyEnvironment reads: another value of
// any of them changes the outcome, other DMLC_ variables change nothing.
TEST_F(ClusterFlagsTest, EveryListedVariableIsReadAndNoOther) {
  Environment base = MxJobWorker();
  base.erase("DMLC_NODE_HOST");
  base["DMLC_INTERFACE"] = "lo";
  const std::string outcome = Outcome(base);
  EXPECT_THAT(outcome, HasSubstr("10.1.2.3:9091 4 2 127.0.0.1 3 job-token"));
  const std::map<std::string, std::string> other = {
      {"DMLC_ROLE", "server"},
      {"DMLC_PS_ROOT_URI", "10.9.9.9"},
      {"DMLC_PS_ROOT_PORT", "9092"},
      {"DMLC_NUM_WORKER", "5"},
      {"DMLC_NUM_SERVER", "3"},
      {"DMLC_NODE_HOST", "10.9.9.8"},
      {"DMLC_INTERFACE", "no-such-if0"},
      {"DMLC_WORKER_ID", "7"},
      {"PSTRAIN_TOKEN_FILE", "/no/such/token"}};
  for (const char* name : kEnvironmentVariables) {
    ASSERT_EQ(other.count(name), 1u) << name;
    Environment env = base;
    env[name] = other.at(name);
    EXPECT_NE(Outcome(env), outcome) << name;
  }
  Environment env = base;
  env["DMLC_USE_KUBERNETES"] = "1";
  env["DMLC_NUM_SERVERS"] = "x";
  EXPECT_EQ(Outcome(env), outcome);
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
