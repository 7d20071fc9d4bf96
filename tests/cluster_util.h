// Test helpers: a real scheduler and servers (the binaries) on 127.0.0.1
// with an ephemeral scheduler port, and KVStore workers in this process.
#ifndef PSTRAIN_TESTS_CLUSTER_UTIL_H_
#define PSTRAIN_TESTS_CLUSTER_UTIL_H_

#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "kvstore/kvstore.h"
#include "launcher/subprocess.h"

namespace pstrain {
namespace testing_util {

inline std::string Runfile(const std::string& rel) {
  return absl::StrCat(std::getenv("TEST_SRCDIR"), "/pstrain/", rel);
}

inline std::vector<std::string> Env() {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) env.push_back(*e);
  return env;
}

// A child process whose output is collected.
struct Proc {
  std::unique_ptr<launcher::Subprocess> p;
  std::string output;
  void Pump() {
    if (p) p->ReadOutput(&output);
  }
  // Waits for exit (pumping output) until `deadline`; true if it exited.
  bool WaitExit(absl::Time deadline) {
    while (absl::Now() < deadline) {
      Pump();
      if (p->Poll()) {
        Pump();
        return true;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }
};

struct ClusterSpec {
  int workers = 2;
  int servers = 1;
  double heartbeat_interval_s = 0.3;
  double heartbeat_timeout_s = 2.0;
  double start_timeout_s = 30;
  // Shared memory between the nodes (0: everything over TCP).
  int64_t shm_bytes = cluster::kDefaultShmBytes;
  // ClusterOptions::insecure_plaintext (default: CURVE).
  bool insecure_plaintext = false;
  // ClusterOptions::tcp_data_link (the TCP data links; encrypted under
  // CURVE).
  bool tcp_data_link = true;
  // ClusterOptions::curve_keys_dir (empty: keys from the token).
  std::string curve_keys_dir;
  // More flags for the scheduler alone (e.g. --status_port=0).
  std::vector<std::string> scheduler_flags;
  // More flags for every server (e.g. --send_window_bytes=N).
  std::vector<std::string> server_flags;
  // KVStoreOptions of the workers; -1: their defaults.
  int64_t max_message_bytes = -1;
  int64_t slice_bytes = -1;
  int64_t send_credit_bytes = -1;
};

class Cluster {
 public:
  explicit Cluster(const ClusterSpec& spec) : spec_(spec) {
    token_file_ = absl::StrCat(std::getenv("TEST_TMPDIR"), "/token");
    std::ofstream(token_file_) << "test-token-123\n";
  }
  ~Cluster() = default;  // Subprocess destructors kill what is left.

  std::vector<std::string> CommonFlags() const {
    return {absl::StrCat("--num_workers=", spec_.workers),
            absl::StrCat("--num_servers=", spec_.servers),
            "--token_file=" + token_file_,
            absl::StrCat("--heartbeat_interval_s=", spec_.heartbeat_interval_s),
            absl::StrCat("--heartbeat_timeout_s=", spec_.heartbeat_timeout_s),
            absl::StrCat("--start_timeout_s=", spec_.start_timeout_s),
            spec_.insecure_plaintext ? "--insecure_plaintext=true"
                                     : "--insecure_plaintext=false",
            "--curve_keys_dir=" + spec_.curve_keys_dir};
  }

  // Starts the scheduler and the servers; returns false (with a test
  // failure) when the scheduler does not come up.
  bool Start(int servers_to_start = -1) {
    std::vector<std::string> argv = {Runfile("scheduler/scheduler"),
                                     "--scheduler_address=127.0.0.1:0"};
    for (auto& f : CommonFlags()) argv.push_back(f);
    for (auto& f : spec_.scheduler_flags) argv.push_back(f);
    auto s = launcher::Subprocess::Start(argv, Env());
    EXPECT_TRUE(s.ok()) << s.status();
    if (!s.ok()) return false;
    scheduler.p = std::make_unique<launcher::Subprocess>(std::move(*s));
    scheduler.p->CloseStdin();
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    const std::string marker = "scheduler address: ";
    while (address.empty() && absl::Now() < deadline) {
      scheduler.Pump();
      size_t at = scheduler.output.find(marker);
      if (at != std::string::npos) {
        size_t end = scheduler.output.find('\n', at);
        if (end != std::string::npos) {
          address = scheduler.output.substr(at + marker.size(),
                                            end - at - marker.size());
        }
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    EXPECT_FALSE(address.empty()) << "scheduler did not start:\n"
                                  << scheduler.output;
    if (address.empty()) return false;
    if (servers_to_start < 0) servers_to_start = spec_.servers;
    for (int i = 0; i < servers_to_start; ++i) {
      std::vector<std::string> sargv = {Runfile("server/server"),
                                        "--scheduler_address=" + address};
      for (auto& f : CommonFlags()) sargv.push_back(f);
      sargv.push_back(absl::StrCat("--shm_bytes=", spec_.shm_bytes));
      sargv.push_back(spec_.tcp_data_link ? "--tcp_data_link=true"
                                          : "--tcp_data_link=false");
      for (auto& f : spec_.server_flags) sargv.push_back(f);
      auto p = launcher::Subprocess::Start(sargv, Env());
      EXPECT_TRUE(p.ok()) << p.status();
      Proc proc;
      proc.p = std::make_unique<launcher::Subprocess>(std::move(*p));
      proc.p->CloseStdin();
      servers.push_back(std::move(proc));
    }
    return true;
  }

  kvstore::KVStoreOptions WorkerOptions() const {
    kvstore::KVStoreOptions o;
    o.cluster.scheduler_address = address;
    o.cluster.token = "test-token-123";
    o.cluster.num_workers = spec_.workers;
    o.cluster.num_servers = spec_.servers;
    o.cluster.heartbeat_interval = absl::Seconds(spec_.heartbeat_interval_s);
    o.cluster.heartbeat_timeout = absl::Seconds(spec_.heartbeat_timeout_s);
    o.cluster.start_timeout = absl::Seconds(spec_.start_timeout_s);
    o.cluster.shm_bytes = spec_.shm_bytes;
    o.cluster.insecure_plaintext = spec_.insecure_plaintext;
    o.cluster.curve_keys_dir = spec_.curve_keys_dir;
    o.cluster.tcp_data_link = spec_.tcp_data_link;
    if (spec_.max_message_bytes >= 0)
      o.max_message_bytes = spec_.max_message_bytes;
    if (spec_.slice_bytes >= 0) o.slice_bytes = spec_.slice_bytes;
    if (spec_.send_credit_bytes >= 0)
      o.send_credit_bytes = spec_.send_credit_bytes;
    return o;
  }

  // Creates all workers concurrently (registration needs everyone).
  std::vector<std::unique_ptr<kvstore::KVStore>> Workers(
      const std::string& type, int n = -1) {
    if (n < 0) n = spec_.workers;
    std::vector<std::unique_ptr<kvstore::KVStore>> kv(n);
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i) {
      threads.emplace_back([&, i] {
        auto s = kvstore::KVStore::Create(type, WorkerOptions());
        EXPECT_TRUE(s.ok()) << s.status();
        if (s.ok()) kv[i] = std::move(*s);
      });
    }
    for (auto& t : threads) t.join();
    // Index by rank.
    std::vector<std::unique_ptr<kvstore::KVStore>> by_rank(n);
    for (auto& k : kv) {
      if (k) by_rank[k->rank()] = std::move(k);
    }
    return by_rank;
  }

  std::string AllOutput() {
    scheduler.Pump();
    std::string out = "--- scheduler:\n" + scheduler.output;
    for (auto& s : servers) {
      s.Pump();
      out += "--- server:\n" + s.output;
    }
    return out;
  }

  ClusterSpec spec_;
  std::string token_file_;
  std::string address;
  Proc scheduler;
  std::vector<Proc> servers;
};

inline absl::Time Deadline(double seconds = 30) {
  return absl::Now() + absl::Seconds(seconds);
}

// Collects `p`'s output until it exits or `limit` passes; *exited says
// which.
inline std::string RunToEnd(launcher::Subprocess* p, absl::Duration limit,
                            bool* exited) {
  std::string out;
  const absl::Time deadline = absl::Now() + limit;
  while ((p->ReadOutput(&out) || !p->Poll()) && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  *exited = p->exited();
  return out;
}

// Runs `argv` (stdin closed) to its end and returns its output; *rc is its
// exit code, or -1 if it did not end within `limit` (it is then left to
// the Subprocess's destructor).
inline std::string RunCommand(const std::vector<std::string>& argv,
                              absl::Duration limit, int* rc) {
  auto p = launcher::Subprocess::Start(argv, Env());
  EXPECT_TRUE(p.ok()) << p.status();
  if (!p.ok()) return "";
  p->CloseStdin();
  bool exited = false;
  std::string out = RunToEnd(&*p, limit, &exited);
  *rc = exited ? WEXITSTATUS(p->wait_status()) : -1;
  return out;
}

}  // namespace testing_util
}  // namespace pstrain

#endif  // PSTRAIN_TESTS_CLUSTER_UTIL_H_
