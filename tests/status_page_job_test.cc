// The status page of a real job in a real browser (issue #17): `launch
// --status_port 0` runs a dist_sync LeNet job (1 server, 3 workers, worker
// 2 slowed on purpose); once the scheduler has named the straggler,
// headless Chromium loads the page from the running job, runs its script
// for a few seconds and dumps the DOM: every node is listed, the straggler
// is highlighted, the chart took several polls. Then a screenshot
// (status_page_job.png in the test's undeclared outputs; docs/
// status_page.png is one). Skips without chromium or Fashion-MNIST.
#include <signal.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "status/test_shell.h"
#include "tests/worker_util.h"

namespace pstrain {
namespace {

using ::testing::HasSubstr;

// The value of the first `name="..."` attribute in `dom`.
std::string Attribute(const std::string& dom, const std::string& name) {
  const std::string key = name + "=\"";
  const size_t at = dom.find(key);
  if (at == std::string::npos) return "";
  const size_t end = dom.find('"', at + key.size());
  return dom.substr(at + key.size(), end - at - key.size());
}

class StatusPageJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!status::HaveChromium()) {
      GTEST_SKIP() << "chromium is not installed (Debian package chromium; "
                      "scripts/setup installs it): the page is not tested in "
                      "a browser";
    }
    if (!testing_util::HaveFashionMnist()) {
      GTEST_SKIP() << "Debian's dataset-fashion-mnist is not installed; "
                      "skipped";
    }
    tmp_ = testing_util::TestTmp();
  }
  void TearDown() override {
    // A failed test leaves the job running: launch stops it on SIGTERM
    // (the Subprocess's destructor kills what is left).
    if (launch_ != nullptr && !launch_->Poll()) {
      launch_->SignalGroup(SIGTERM);
      bool exited = false;
      testing_util::RunToEnd(launch_.get(), absl::Seconds(15), &exited);
    }
  }
  // Reads launch's output until it holds `needle` or `deadline` passes.
  bool WaitFor(const std::string& needle, absl::Time deadline) {
    while (absl::Now() < deadline) {
      launch_->ReadOutput(&out_);
      if (out_.find(needle) != std::string::npos) return true;
      if (launch_->Poll()) return false;
      absl::SleepFor(absl::Milliseconds(50));
    }
    return false;
  }
  std::string tmp_;
  std::unique_ptr<launcher::Subprocess> launch_;
  std::string out_;
};

TEST_F(StatusPageJobTest, ChromiumShowsTheRunningJob) {
  ASSERT_EQ(testing_util::PackFashion("train", 3000, tmp_ + "/train"), "");
  // 1,000 records each: 62 batches of 16 per epoch, 4 epochs; worker 2
  // sleeps 80 ms per batch, so the job runs about 20 s.
  auto p = launcher::Subprocess::Start(
      testing_util::LaunchArgv(
          3, 1,
          {"--network=lenet", "--data_nthreads=1", "--kv_store=dist_sync",
           "--batch_size=16", "--num_epochs=4", "--disp_batches=4",
           "--test_slow_worker=2:80", "--data_train=" + tmp_ + "/train.rec"},
          {"--status_port=0"}),
      testing_util::Env());
  ASSERT_TRUE(p.ok()) << p.status();
  launch_ = std::make_unique<launcher::Subprocess>(std::move(*p));
  launch_->CloseStdin();

  const std::string marker = "launch: status page: ";
  ASSERT_TRUE(WaitFor(marker, absl::Now() + absl::Seconds(30))) << out_;
  const size_t at = out_.find(marker) + marker.size();
  const std::string url = out_.substr(at, out_.find('\n', at) - at);
  ASSERT_THAT(url, HasSubstr("http://127.0.0.1:"));
  // The scheduler names the straggler a few reports in.
  ASSERT_TRUE(WaitFor("straggler: worker 2", absl::Now() + absl::Seconds(40)))
      << out_;

  // /status.json as the page gets it: the job, and every worker's stats.
  httplib::Client client(std::string(absl::StripSuffix(url, "/")).c_str());
  client.set_connection_timeout(5);
  client.set_read_timeout(5);
  // (The page's status is published every 250 ms: poll for the mark.)
  nlohmann::json doc;
  std::string body;
  for (const absl::Time end = absl::Now() + absl::Seconds(10);
       absl::Now() < end; absl::SleepFor(absl::Milliseconds(100))) {
    auto r = client.Get("/status.json");
    ASSERT_TRUE(r) << httplib::to_string(r.error());
    body = r->body;
    doc = nlohmann::json::parse(body, nullptr, false);
    ASSERT_FALSE(doc.is_discarded()) << body;
    if (body.find("\"straggler\":true") != std::string::npos) break;
  }
  EXPECT_EQ(doc["job"]["network"], "lenet") << body;
  EXPECT_EQ(doc["job"]["kv_store"], "dist_sync");
  EXPECT_TRUE(doc["job"]["eta_s"].is_number()) << body;
  ASSERT_EQ(doc["nodes"].size(), 4u) << body;
  for (const auto& n : doc["nodes"]) {
    EXPECT_EQ(n["state"], "alive") << n.dump();
    EXPECT_EQ(n["straggler"], n["role"] == "worker" && n["rank"] == 2)
        << n.dump();
  }

  std::string dom;
  ASSERT_EQ(status::Chromium(tmp_, "--virtual-time-budget=5000 --dump-dom", url,
                             &dom),
            0)
      << "chromium failed; see chromium.log in " << tmp_;
  const std::vector<std::string> rows =
      absl::StrSplit(dom, "<tr class=\"node ");
  EXPECT_EQ(rows.size() - 1, 4u) << dom;
  EXPECT_THAT(dom, HasSubstr("<tr class=\"node alive straggler\">")) << dom;
  EXPECT_THAT(dom, HasSubstr("straggler: data wait ")) << dom;
  EXPECT_THAT(dom, HasSubstr("<i id=\"network\">lenet</i>"));
  EXPECT_THAT(dom, HasSubstr("<i class=\"bar sum\""));
  int updates = 0;
  ASSERT_TRUE(absl::SimpleAtoi(Attribute(dom, "data-updates"), &updates))
      << dom;
  EXPECT_GE(updates, 3) << dom;

  const char* dir = std::getenv("TEST_UNDECLARED_OUTPUTS_DIR");
  const std::string png =
      absl::StrCat(dir != nullptr ? dir : tmp_.c_str(), "/status_page_job.png");
  std::string ignored;
  ASSERT_EQ(
      status::Chromium(tmp_,
                       absl::StrCat("--virtual-time-budget=8000 "
                                    "--window-size=1500,560 --screenshot=",
                                    png),
                       url, &ignored),
      0);
  std::ifstream f(png, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(f)),
                          std::istreambuf_iterator<char>());
  ASSERT_GT(bytes.size(), 1000u);
  EXPECT_EQ(bytes.substr(0, 8), "\x89PNG\r\n\x1a\n");

  // The job still ends cleanly.
  bool exited = false;
  out_ += testing_util::RunToEnd(launch_.get(), absl::Seconds(90), &exited);
  ASSERT_TRUE(exited) << out_;
  EXPECT_TRUE(launch_->succeeded()) << out_;
}

}  // namespace
}  // namespace pstrain
