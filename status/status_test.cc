#include "status/status.h"

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "status/test_shell.h"

namespace pstrain {
namespace status {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// One server and two workers, worker 1 marked a straggler; the server
// without stats.
JobStatus SmallJob() {
  JobStatus j;
  j.network = "resnet";
  j.kv_store = "dist_sync";
  j.state = "running";
  j.num_servers = 1;
  j.num_workers = 2;
  j.epoch = 3;
  j.step = 1200;
  j.eta_s = 95.5;
  NodeStatus s;
  s.role = "server";
  s.rank = 0;
  s.host = "10.0.0.1:9000";
  s.state = "alive";
  s.heartbeat_age_s = 0.25;
  j.nodes.push_back(s);
  for (int r = 0; r < 2; ++r) {
    NodeStatus w;
    w.role = "worker";
    w.rank = r;
    w.host = absl::StrCat("10.0.0.", 2 + r, ":9000");
    w.state = "alive";
    w.heartbeat_age_s = 0.5;
    w.has_stats = true;
    w.images_per_s = r == 0 ? 200 : 50;
    w.split = {0.1, 0.6, 0.2, 0.1};
    w.bytes_pushed = int64_t{1} << 33;
    w.bytes_pulled = 12345;
    w.queue_depth = 2;
    w.refused = 1;
    w.malformed = 0;
    w.link_auth_failures = 3;
    if (r == 1) {
      w.straggler = true;
      w.straggler_reason = "data wait 10% (median 10%), 4.0x the median";
    }
    j.nodes.push_back(w);
  }
  return j;
}

TEST(MetricsText, ExactLines) {
  const std::string m = MetricsText(SmallJob());
  const std::string w0 = "role=\"worker\",rank=\"0\",host=\"10.0.0.2:9000\"";
  for (const std::string& line : std::vector<std::string>{
           "# HELP pstrain_job_info The job: network, kv_store and state as "
           "labels; always 1.",
           "# TYPE pstrain_job_info gauge",
           "pstrain_job_info{network=\"resnet\",kv_store=\"dist_sync\","
           "state=\"running\"} 1",
           "pstrain_job_expected_nodes{role=\"worker\"} 2",
           "pstrain_job_epoch 3",
           "pstrain_job_step 1200",
           "pstrain_job_eta_seconds 95.5",
           "pstrain_node_up{role=\"server\",rank=\"0\",host=\"10.0.0.1:"
           "9000\"} 1",
           "pstrain_node_heartbeat_age_seconds{role=\"server\",rank=\"0\","
           "host=\"10.0.0.1:9000\"} 0.25",
           "# TYPE pstrain_node_images_per_second gauge",
           "pstrain_node_images_per_second{" + w0 + "} 200",
           "pstrain_node_time_fraction{" + w0 + ",phase=\"compute\"} 0.6",
           "pstrain_node_queue_depth{" + w0 + "} 2",
           "pstrain_node_refused_messages_total{" + w0 + "} 1",
           "pstrain_node_malformed_messages_total{" + w0 + "} 0",
           "# HELP pstrain_node_link_auth_failures_total Encrypted data link "
           "handshakes and records that failed authentication.",
           "# TYPE pstrain_node_link_auth_failures_total counter",
           "pstrain_node_link_auth_failures_total{" + w0 + "} 3",
           "pstrain_node_straggler{" + w0 + "} 0",
       }) {
    EXPECT_THAT(m, HasSubstr(line + "\n")) << m;
  }
  // The server has no stats: none of its stats series is exported.
  EXPECT_THAT(m,
              Not(HasSubstr("pstrain_node_images_per_second{role=\"server")));
  EXPECT_EQ(m.back(), '\n');
  // Bytes are servers' (what workers pushed to and pulled from them);
  // images/s and the time split are workers'.
  EXPECT_THAT(m, Not(HasSubstr("pstrain_node_pushed_bytes_total{" + w0)));
  JobStatus job = SmallJob();
  NodeStatus& server = job.nodes[0];
  ASSERT_EQ(server.role, "server");
  server.has_stats = true;
  server.bytes_pushed = 8589934592;
  server.bytes_pulled = 12345;
  const std::string s0 = "role=\"server\",rank=\"0\",host=\"10.0.0.1:9000\"";
  const std::string with = MetricsText(job);
  EXPECT_THAT(with, HasSubstr("# TYPE pstrain_node_pushed_bytes_total counter\n"
                              "pstrain_node_pushed_bytes_total{" +
                              s0 + "} 8589934592\n"));
  EXPECT_THAT(with,
              HasSubstr("pstrain_node_pulled_bytes_total{" + s0 + "} 12345\n"));
  EXPECT_THAT(with, Not(HasSubstr("pstrain_node_images_per_second{" + s0)));
  // A server's split has its own phases.
  EXPECT_THAT(with, HasSubstr("pstrain_node_time_fraction{" + s0 +
                              ",phase=\"sum\"} 0\n"));
  EXPECT_THAT(with, Not(HasSubstr("pstrain_node_time_fraction{" + s0 +
                                  ",phase=\"data\"}")));
  EXPECT_THAT(with, HasSubstr("pstrain_node_time_fraction{" + w0 +
                              ",phase=\"optimizer\"} 0\n"));
}

TEST(MetricsText, UnknownJobFieldsAndEmptyFamiliesAreLeftOut) {
  JobStatus j;
  j.state = "starting";
  const std::string m = MetricsText(j);
  EXPECT_THAT(m, Not(HasSubstr("pstrain_job_epoch")));
  EXPECT_THAT(m, Not(HasSubstr("pstrain_job_eta_seconds")));
  EXPECT_THAT(m, Not(HasSubstr("pstrain_node_")));
  EXPECT_THAT(m, HasSubstr("state=\"starting\"} 1\n"));
}

TEST(MetricsText, EscapesLabelValues) {
  JobStatus j;
  NodeStatus n;
  n.role = "worker";
  n.host = "evil\"host\\\nx";
  n.state = "registered";
  j.nodes.push_back(n);
  const std::string m = MetricsText(j);
  EXPECT_THAT(m, HasSubstr("pstrain_node_up{role=\"worker\",rank=\"\","
                           "host=\"evil\\\"host\\\\\\nx\"} 1\n"))
      << m;
}

TEST(MetricsText, PassesPromtool) {
  std::string out;
  if (Shell("command -v promtool", &out) != 0) {
    GTEST_SKIP() << "promtool is not installed (Debian package prometheus; "
                    "scripts/setup installs it): not checking with it";
  }
  JobStatus j = SmallJob();
  j.nodes[0].has_stats = true;
  j.nodes[0].server_split = {0.1, 0.2, 0.3, 0.1, 0.3};
  NodeStatus odd;
  odd.role = "worker";
  odd.host = "a\"b\\c\nd";
  odd.state = "dead";
  j.nodes.push_back(odd);
  for (const JobStatus& job : {j, JobStatus()}) {
    const std::string file = absl::StrCat(std::getenv("TEST_TMPDIR"), "/m.txt");
    std::ofstream(file) << MetricsText(job);
    out.clear();
    const int rc = Shell(
        absl::StrCat("timeout 60 promtool check metrics < ", file, " 2>&1"),
        &out);
    EXPECT_EQ(rc, 0) << out << "\n--- metrics:\n" << MetricsText(job);
  }
}

TEST(StatusJson, Shape) {
  JobStatus j = SmallJob();
  const auto doc = nlohmann::json::parse(StatusJson(j));
  EXPECT_EQ(doc["job"]["network"], "resnet");
  EXPECT_EQ(doc["job"]["kv_store"], "dist_sync");
  EXPECT_EQ(doc["job"]["state"], "running");
  EXPECT_EQ(doc["job"]["epoch"], 3);
  EXPECT_EQ(doc["job"]["step"], 1200);
  EXPECT_EQ(doc["job"]["eta_s"], 95.5);
  EXPECT_EQ(doc["job"]["num_workers"], 2);
  ASSERT_EQ(doc["nodes"].size(), 3u);
  const auto& s = doc["nodes"][0];
  EXPECT_EQ(s["role"], "server");
  EXPECT_EQ(s["rank"], 0);
  EXPECT_EQ(s["host"], "10.0.0.1:9000");
  EXPECT_EQ(s["state"], "alive");
  EXPECT_EQ(s["heartbeat_age_s"], 0.25);
  EXPECT_EQ(s["has_stats"], false);
  EXPECT_TRUE(s["images_per_s"].is_null());
  EXPECT_TRUE(s["split"].is_null());
  EXPECT_TRUE(s["link_auth_failures"].is_null());
  const auto& w = doc["nodes"][2];
  EXPECT_EQ(w["images_per_s"], 50);
  EXPECT_EQ(w["split"]["compute"], 0.6);
  EXPECT_EQ(w["split"]["wait_pull"], 0.2);
  EXPECT_EQ(w["bytes_pushed"], int64_t{1} << 33);
  EXPECT_EQ(w["queue_depth"], 2);
  EXPECT_EQ(w["refused"], 1);
  EXPECT_EQ(w["malformed"], 0);
  EXPECT_EQ(w["link_auth_failures"], 3);
  EXPECT_EQ(w["straggler"], true);
  EXPECT_THAT(w["straggler_reason"].get<std::string>(),
              HasSubstr("4.0x the median"));
  EXPECT_EQ(doc["nodes"][1]["straggler"], false);

  // A server's split has its phases.
  j.nodes[0].has_stats = true;
  j.nodes[0].server_split = {0.1, 0.2, 0.3, 0.15, 0.25};
  const auto with = nlohmann::json::parse(StatusJson(j));
  EXPECT_EQ(with["nodes"][0]["split"],
            nlohmann::json::parse(R"({"sum": 0.1, "update": 0.2, "wait": 0.3,
                                      "send": 0.15, "idle": 0.25})"));
}

TEST(StatusJson, UnknownsAreNullAndBadUtf8IsReplaced) {
  JobStatus j;
  NodeStatus n;
  n.role = "worker";
  n.host = std::string("h\xff\xfe", 3);
  j.nodes.push_back(n);
  const auto doc = nlohmann::json::parse(StatusJson(j));
  EXPECT_TRUE(doc["job"]["epoch"].is_null());
  EXPECT_TRUE(doc["job"]["eta_s"].is_null());
  EXPECT_TRUE(doc["nodes"][0]["rank"].is_null());
  EXPECT_TRUE(doc["nodes"][0]["heartbeat_age_s"].is_null());
  EXPECT_EQ(doc["nodes"][0]["host"], "h\xEF\xBF\xBD\xEF\xBF\xBD");
}

}  // namespace
}  // namespace status
}  // namespace pstrain
