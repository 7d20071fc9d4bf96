#include "status/http_status_server.h"

#include <atomic>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"

namespace pstrain {
namespace status {
namespace {

using ::testing::HasSubstr;

JobStatus OneWorker() {
  JobStatus j;
  j.network = "lenet";
  j.state = "running";
  j.num_workers = 1;
  NodeStatus n;
  n.role = "worker";
  n.rank = 0;
  n.host = "127.0.0.1:5000";
  n.state = "alive";
  n.heartbeat_age_s = 0.1;
  j.nodes.push_back(n);
  return j;
}

HttpStatusServerOptions Loopback() {
  HttpStatusServerOptions o;
  o.bind_address = "127.0.0.1";
  o.port = 0;
  o.provider = OneWorker;
  return o;
}

TEST(IsLoopbackAddress, Addresses) {
  EXPECT_TRUE(IsLoopbackAddress("127.0.0.1"));
  EXPECT_TRUE(IsLoopbackAddress("127.1.2.3"));
  EXPECT_TRUE(IsLoopbackAddress("::1"));
  EXPECT_TRUE(IsLoopbackAddress("::ffff:127.0.0.1"));
  EXPECT_TRUE(IsLoopbackAddress("localhost"));
  EXPECT_FALSE(IsLoopbackAddress("0.0.0.0"));
  EXPECT_FALSE(IsLoopbackAddress("::"));
  EXPECT_FALSE(IsLoopbackAddress("10.1.2.3"));
  EXPECT_FALSE(IsLoopbackAddress("example.com"));
}

TEST(HttpStatusServer, ServesPageJsonAndMetricsOnLoopback) {
  std::atomic<int> calls{0};
  HttpStatusServerOptions o = Loopback();
  o.provider = [&calls] {
    ++calls;
    return OneWorker();
  };
  HttpStatusServer server(o);
  ASSERT_TRUE(server.Start().ok());
  ASSERT_GT(server.port(), 0);
  EXPECT_EQ(server.url(),
            absl::StrCat("http://127.0.0.1:", server.port(), "/"));
  httplib::Client c("127.0.0.1", server.port());
  c.set_connection_timeout(5);
  c.set_read_timeout(5);

  auto page = c.Get("/");
  ASSERT_TRUE(page) << httplib::to_string(page.error());
  EXPECT_EQ(page->status, 200);
  EXPECT_THAT(page->get_header_value("Content-Type"), HasSubstr("text/html"));
  EXPECT_THAT(page->body, HasSubstr("status.json"));
  EXPECT_THAT(page->body, HasSubstr("id=\"chart\""));

  auto js = c.Get("/status.json");
  ASSERT_TRUE(js);
  EXPECT_EQ(js->status, 200);
  EXPECT_EQ(js->get_header_value("Content-Type"), "application/json");
  const auto doc = nlohmann::json::parse(js->body);
  EXPECT_EQ(doc["job"]["network"], "lenet");
  EXPECT_EQ(doc["nodes"][0]["host"], "127.0.0.1:5000");

  auto m = c.Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->status, 200);
  EXPECT_THAT(m->get_header_value("Content-Type"),
              HasSubstr("text/plain; version=0.0.4"));
  EXPECT_EQ(m->body, MetricsText(OneWorker()));
  EXPECT_EQ(calls.load(), 2);

  auto missing = c.Get("/nope");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);

  auto post = c.Post("/status.json", "x", "text/plain");
  ASSERT_TRUE(post);
  EXPECT_EQ(post->status, 405);
  auto del = c.Delete("/metrics");
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 405);
  EXPECT_EQ(calls.load(), 2);  // Neither reached the provider.
  server.Stop();
  server.Stop();  // Idempotent.
}

TEST(HttpStatusServer, ChosenPortAndPortInUse) {
  HttpStatusServer first(Loopback());
  ASSERT_TRUE(first.Start().ok());
  HttpStatusServerOptions o = Loopback();
  o.port = first.port();
  HttpStatusServer second(o);
  absl::Status s = second.Start();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("cannot bind"));
}

TEST(HttpStatusServer, StopRightAfterStart) {
  for (int i = 0; i < 20; ++i) {
    HttpStatusServer s(Loopback());
    ASSERT_TRUE(s.Start().ok());
  }  // The destructors stop and join.
}

TEST(HttpStatusServer, BeyondLoopbackNeedsAToken) {
  HttpStatusServerOptions o = Loopback();
  o.bind_address = "0.0.0.0";
  HttpStatusServer server(o);
  absl::Status s = server.Start();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("token"));
}

// The rule is on the bind address: bound to 0.0.0.0, even a client on
// 127.0.0.1 must show the token.
TEST(HttpStatusServer, WildcardBindRequiresTheToken) {
  HttpStatusServerOptions o = Loopback();
  o.bind_address = "0.0.0.0";
  o.token = "s3cret-token";
  HttpStatusServer server(o);
  ASSERT_TRUE(server.Start().ok());
  httplib::Client c("127.0.0.1", server.port());
  c.set_connection_timeout(5);
  c.set_read_timeout(5);
  for (const char* path : {"/", "/status.json", "/metrics", "/nope"}) {
    auto r = c.Get(path);
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 401) << path;
    EXPECT_EQ(r->get_header_value("WWW-Authenticate"), "Bearer");
  }
  auto wrong = c.Get("/status.json?token=s3cret-tokeX");
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401);
  auto wrong_header =
      c.Get("/metrics", {{"Authorization", "Bearer s3cret-token2"}});
  ASSERT_TRUE(wrong_header);
  EXPECT_EQ(wrong_header->status, 401);

  auto query = c.Get("/status.json?token=s3cret-token");
  ASSERT_TRUE(query);
  EXPECT_EQ(query->status, 200);
  auto page = c.Get("/?token=s3cret-token");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  auto header = c.Get("/metrics", {{"Authorization", "Bearer s3cret-token"}});
  ASSERT_TRUE(header);
  EXPECT_EQ(header->status, 200);
  auto missing = c.Get("/nope", {{"Authorization", "Bearer s3cret-token"}});
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
}

}  // namespace
}  // namespace status
}  // namespace pstrain
