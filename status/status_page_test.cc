// The status page in a real browser: headless Chromium (Debian's chromium)
// loads it from a live HttpStatusServer whose workers speed up with every
// poll, runs its script for a few seconds of virtual time, and dumps the
// DOM; then takes a screenshot (status_page.png in the test's undeclared
// outputs; docs/status_page.png is one). Skips when chromium is absent.
#include <sys/wait.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "status/http_status_server.h"
#include "status/status.h"
#include "status/test_shell.h"

namespace pstrain {
namespace status {
namespace {

using ::testing::HasSubstr;

// A job of one server and three workers; worker 2 is a straggler. Each
// call is one step further, and the workers a little faster.
JobStatus Job(int call) {
  JobStatus j;
  j.network = "resnet";
  j.kv_store = "dist_sync";
  j.state = "running";
  j.num_servers = 1;
  j.num_workers = 3;
  j.epoch = 2;
  j.step = 1000 + 10 * call;
  j.eta_s = 3600 - call;
  NodeStatus s;
  s.role = "server";
  s.rank = 0;
  s.host = "127.0.0.1:9100";
  s.state = "alive";
  s.heartbeat_age_s = 0.4;
  s.has_stats = true;
  s.bytes_pushed = 0;
  s.bytes_pulled = int64_t{3} << 30;
  s.server_split = {0.2, 0.1, 0.3, 0.1, 0.3};
  j.nodes.push_back(s);
  for (int r = 0; r < 3; ++r) {
    NodeStatus w;
    w.role = "worker";
    w.rank = r;
    w.host = absl::StrCat("127.0.0.1:92", r, "0");
    w.state = "alive";
    w.heartbeat_age_s = 0.2 + 0.3 * r;
    w.has_stats = true;
    w.images_per_s = r == 2 ? 40 + 4.0 * call : 180 + 15.0 * call;
    w.split = r == 2 ? TimeSplit{0.55, 0.35, 0.05, 0.05, 0}
                     : TimeSplit{0.1, 0.65, 0.15, 0.1, 0};
    w.queue_depth = r;
    if (r == 1) w.link_auth_failures = 4242;
    if (r == 2) {
      w.straggler = true;
      w.straggler_reason =
          "data wait 55% (median 10%), 2.9x the median worker's own time "
          "per image (14.07 ms vs 4.86 ms)";
    }
    w.bytes_pushed = (int64_t{1} << 30) + call * (int64_t{1} << 24);
    w.bytes_pulled = w.bytes_pushed;
    j.nodes.push_back(w);
  }
  return j;
}

class StatusPageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveChromium()) {
      GTEST_SKIP() << "chromium is not installed (Debian package chromium; "
                      "scripts/setup installs it): the page is not tested in "
                      "a browser";
    }
    HttpStatusServerOptions o;
    o.bind_address = "127.0.0.1";
    o.provider = [this] { return Job(calls_++); };
    server_ = std::make_unique<HttpStatusServer>(o);
    ASSERT_TRUE(server_->Start().ok());
    tmp_ = std::getenv("TEST_TMPDIR");
  }

  // Chromium on the page; `args` before the URL.
  std::string Chromium(const std::string& args, int* rc) {
    std::string out;
    *rc = status::Chromium(tmp_, args, server_->url(), &out);
    return out;
  }

  std::atomic<int> calls_{0};
  std::unique_ptr<HttpStatusServer> server_;
  std::string tmp_;
};

// The value of attribute `name` in `dom` (first occurrence), or "".
std::string Attribute(const std::string& dom, const std::string& name) {
  const std::string key = name + "=\"";
  size_t at = dom.find(key);
  if (at == std::string::npos) return "";
  at += key.size();
  return dom.substr(at, dom.find('"', at) - at);
}

TEST_F(StatusPageTest, ListsEveryNodeAndTheChartUpdates) {
  int rc;
  const std::string dom =
      Chromium("--virtual-time-budget=6000 --dump-dom", &rc);
  ASSERT_EQ(rc, 0) << "chromium failed; see chromium.log in " << tmp_;
  // A row per node, each host shown, the straggler highlighted.
  std::vector<std::string> rows = absl::StrSplit(dom, "<tr class=\"node ");
  EXPECT_EQ(rows.size() - 1, 4u) << dom;
  for (const char* host : {"127.0.0.1:9100", "127.0.0.1:9200", "127.0.0.1:9210",
                           "127.0.0.1:9220"}) {
    EXPECT_THAT(dom, HasSubstr(absl::StrCat("<td>", host, "</td>")));
  }
  EXPECT_THAT(dom, HasSubstr("<tr class=\"node alive straggler\">"));
  EXPECT_THAT(dom, HasSubstr("straggler: "));
  // The server's split has its own phases.
  EXPECT_THAT(dom, HasSubstr("<i class=\"bar sum\""));
  EXPECT_THAT(dom, HasSubstr("<i id=\"network\">resnet</i>"));
  // Its own column: a node's data links' authentication failures.
  EXPECT_THAT(dom, HasSubstr("<th>link auth failures</th>"));
  EXPECT_THAT(dom, HasSubstr("<td class=\"num\">4242</td>"));
  // The chart took several polls, and its line has a point for each.
  int updates = 0, points = 0;
  ASSERT_TRUE(absl::SimpleAtoi(Attribute(dom, "data-updates"), &updates))
      << dom;
  ASSERT_TRUE(absl::SimpleAtoi(Attribute(dom, "data-points"), &points));
  EXPECT_GE(updates, 3) << dom;
  EXPECT_EQ(points, updates);
  std::vector<std::string> xy =
      absl::StrSplit(Attribute(dom, " points"), ' ', absl::SkipEmpty());
  EXPECT_EQ(static_cast<int>(xy.size()), points);
  // Throughput rose between polls: the line climbs (SVG y grows downward).
  ASSERT_GE(xy.size(), 2u);
  double y_first, y_last;
  ASSERT_TRUE(
      absl::SimpleAtod(xy.front().substr(xy.front().find(',') + 1), &y_first));
  ASSERT_TRUE(
      absl::SimpleAtod(xy.back().substr(xy.back().find(',') + 1), &y_last));
  EXPECT_LT(y_last, y_first);
  EXPECT_GE(calls_.load(), updates);
}

TEST_F(StatusPageTest, Screenshot) {
  const char* dir = std::getenv("TEST_UNDECLARED_OUTPUTS_DIR");
  const std::string png =
      absl::StrCat(dir != nullptr ? dir : tmp_.c_str(), "/status_page.png");
  int rc;
  Chromium(absl::StrCat("--virtual-time-budget=8000 --window-size=1500,640 "
                        "--screenshot=",
                        png),
           &rc);
  ASSERT_EQ(rc, 0) << "chromium failed; see chromium.log in " << tmp_;
  std::ifstream f(png, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)),
                    std::istreambuf_iterator<char>());
  ASSERT_GT(bytes.size(), 1000u);
  EXPECT_EQ(bytes.substr(1, 3), "PNG");
}

}  // namespace
}  // namespace status
}  // namespace pstrain
