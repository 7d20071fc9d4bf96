// Test helpers: polling for a condition that no event signals (a counter),
// and collecting what glog logs.
#ifndef PSTRAIN_UTIL_TEST_UTIL_H_
#define PSTRAIN_UTIL_TEST_UTIL_H_

#include <mutex>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "glog/logging.h"

namespace pstrain {

// Polls `done` every 2 ms until it holds (true) or `timeout` passes (false).
template <typename F>
bool WaitFor(F done, absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return true;
}

// Every message logged (any severity, any thread) from construction to
// destruction, one entry per LOG statement, text as logged (without glog's
// prefix). Thread-safe.
class LogCapture : public google::LogSink {
 public:
  LogCapture() { google::AddLogSink(this); }
  ~LogCapture() override { google::RemoveLogSink(this); }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  void send(google::LogSeverity, const char*, const char*, int,
            const google::LogMessageTime&, const char* message,
            size_t message_len) override {
    std::lock_guard<std::mutex> lock(mu_);
    messages_.emplace_back(message, message_len);
  }

  // The messages that contain `needle`.
  std::vector<std::string> Containing(const std::string& needle) const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> out;
    for (const std::string& m : messages_) {
      if (m.find(needle) != std::string::npos) out.push_back(m);
    }
    return out;
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::string> messages_;
};

}  // namespace pstrain

#endif  // PSTRAIN_UTIL_TEST_UTIL_H_
