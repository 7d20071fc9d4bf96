// The scheduler's --status_port end to end: the real scheduler and server
// binaries on 127.0.0.1, KVStore workers in this process, the status
// fetched over HTTP with httplib's client as the job starts, runs and ends.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/cluster_util.h"

namespace pstrain {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing_util::Cluster;
using testing_util::ClusterSpec;
using testing_util::Deadline;

// The URL the scheduler prints as "status page: URL", or "" by `deadline`.
std::string StatusUrl(Cluster* c, absl::Time deadline) {
  const std::string marker = "status page: ";
  while (absl::Now() < deadline) {
    c->scheduler.Pump();
    const size_t at = c->scheduler.output.find(marker);
    const size_t end = at == std::string::npos
                           ? std::string::npos
                           : c->scheduler.output.find('\n', at);
    if (end != std::string::npos) {
      return c->scheduler.output.substr(at + marker.size(),
                                        end - at - marker.size());
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  return "";
}

// GET `path` from the status server at "http://127.0.0.1:PORT/"; the body,
// or "" with a test failure.
std::string Get(const std::string& url, const std::string& path,
                std::string* content_type = nullptr) {
  std::string hostport(
      absl::StripSuffix(absl::StripPrefix(url, "http://"), "/"));
  httplib::Client client("http://" + hostport);
  client.set_connection_timeout(5);
  client.set_read_timeout(5);
  auto r = client.Get(path.c_str());
  EXPECT_TRUE(r) << url << path << ": " << httplib::to_string(r.error());
  if (!r) return "";
  EXPECT_EQ(r->status, 200) << path;
  if (content_type != nullptr) {
    *content_type = r->get_header_value("Content-Type");
  }
  return r->body;
}

// /status.json once `ready` holds for it, or the last one by `deadline`.
nlohmann::json StatusWhen(
    const std::string& url,
    const std::function<bool(const nlohmann::json&)>& ready,
    absl::Time deadline) {
  nlohmann::json doc;
  while (absl::Now() < deadline) {
    doc = nlohmann::json::parse(Get(url, "/status.json"), nullptr, false);
    if (!doc.is_discarded() && ready(doc)) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return doc;
}

TEST(StatusCluster, SchedulerServesTheJobAsItStartsAndRuns) {
  ClusterSpec spec;
  spec.workers = 2;
  spec.servers = 1;
  spec.scheduler_flags = {"--status_port=0"};
  Cluster c(spec);
  ASSERT_TRUE(c.Start());
  const std::string url = StatusUrl(&c, Deadline(20));
  ASSERT_THAT(url, HasSubstr("http://127.0.0.1:")) << c.AllOutput();

  // The server registers; the workers have not: the job is starting.
  nlohmann::json doc = StatusWhen(
      url, [](const nlohmann::json& d) { return d["nodes"].size() == 1; },
      Deadline(20));
  EXPECT_EQ(doc["job"]["state"], "starting") << doc.dump();
  EXPECT_EQ(doc["job"]["num_servers"], 1);
  EXPECT_EQ(doc["job"]["num_workers"], 2);
  ASSERT_EQ(doc["nodes"].size(), 1u) << doc.dump() << c.AllOutput();
  EXPECT_EQ(doc["nodes"][0]["role"], "server");
  EXPECT_EQ(doc["nodes"][0]["state"], "registered");
  EXPECT_TRUE(doc["nodes"][0]["rank"].is_null());

  auto kv = c.Workers("dist_sync");
  for (auto& k : kv) ASSERT_NE(k, nullptr) << c.AllOutput();
  doc = StatusWhen(
      url,
      [](const nlohmann::json& d) {
        return d["job"]["state"] == "running" && d["nodes"].size() == 3;
      },
      Deadline(20));
  ASSERT_EQ(doc["nodes"].size(), 3u) << doc.dump();
  EXPECT_EQ(doc["job"]["state"], "running");
  int workers = 0;
  for (const auto& n : doc["nodes"]) {
    EXPECT_EQ(n["state"], "alive") << n.dump();
    EXPECT_TRUE(n["rank"].is_number()) << n.dump();
    EXPECT_GE(n["heartbeat_age_s"].get<double>(), 0);
    EXPECT_THAT(n["host"].get<std::string>(), HasSubstr("127.0.0.1:"));
    if (n["role"] == "worker") ++workers;
  }
  EXPECT_EQ(workers, 2);

  std::string type;
  const std::string metrics = Get(url, "/metrics", &type);
  EXPECT_THAT(type, HasSubstr("text/plain; version=0.0.4"));
  EXPECT_THAT(metrics, HasSubstr("pstrain_node_up{role=\"worker\",rank=\"1\","
                                 "host=\"127.0.0.1:"));
  EXPECT_THAT(metrics, HasSubstr("state=\"running\"} 1\n"));
  EXPECT_THAT(Get(url, "/"), HasSubstr("<title>pstrain job status</title>"));

  for (auto& k : kv) ASSERT_TRUE(k->Finish().ok());
  ASSERT_TRUE(c.scheduler.WaitExit(Deadline(20))) << c.AllOutput();
  EXPECT_TRUE(c.scheduler.p->succeeded()) << c.AllOutput();
}

// Without --status_port nothing is served and nothing is printed.
TEST(StatusCluster, OffByDefault) {
  ClusterSpec spec;
  spec.workers = 1;
  spec.servers = 1;
  Cluster c(spec);
  ASSERT_TRUE(c.Start());
  auto kv = c.Workers("dist_sync");
  for (auto& k : kv) ASSERT_NE(k, nullptr) << c.AllOutput();
  for (auto& k : kv) ASSERT_TRUE(k->Finish().ok());
  ASSERT_TRUE(c.scheduler.WaitExit(Deadline(20))) << c.AllOutput();
  EXPECT_THAT(c.scheduler.output, Not(HasSubstr("status page")));
  EXPECT_THAT(c.scheduler.output, Not(HasSubstr("status server")));
}

// Beyond loopback without a token the scheduler refuses to start.
TEST(StatusCluster, WildcardBindWithoutATokenIsRefused) {
  std::vector<std::string> argv = {testing_util::Runfile("scheduler/scheduler"),
                                   "--scheduler_address=127.0.0.1:0",
                                   "--status_port=0", "--status_bind=0.0.0.0",
                                   "--insecure_plaintext=true"};
  auto p = launcher::Subprocess::Start(argv, testing_util::Env());
  ASSERT_TRUE(p.ok()) << p.status();
  testing_util::Proc proc;
  proc.p = std::make_unique<launcher::Subprocess>(std::move(*p));
  proc.p->CloseStdin();
  ASSERT_TRUE(proc.WaitExit(Deadline(20))) << proc.output;
  EXPECT_EQ(proc.p->DescribeExit(), "exit status 2") << proc.output;
  EXPECT_THAT(proc.output,
              HasSubstr("scheduler: --status_bind 0.0.0.0: beyond loopback "
                        "needs --token_file"));
}

}  // namespace
}  // namespace pstrain
