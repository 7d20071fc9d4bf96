// kv_bench: KVStore throughput and latency. Starts a real cluster (the
// scheduler and server binaries beside this tool, workers as threads here),
// joins one as a single worker (--scheduler_address), or runs a cluster
// across hosts (--hostfile: servers and workers as processes on the hosts,
// started by `launch` over ssh, with raw TCP between the same two hosts
// measured in the same run). Prints per value size GB/s per worker and
// latency percentiles; --json prints one object per measurement. Build
// optimized:
//   bazel build --config=opt //tools:kv_bench //tools:launch //scheduler
//   //server bazel-bin/tools/kv_bench --workers=1 --servers=1
//   --value_bytes=4096,1048576,67108864 bazel-bin/tools/kv_bench
//   --hostfile=hosts --ssh_config=cfg --workers=2 --servers=2
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <numeric>
#include <optional>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "cluster/cluster.h"
#include "cluster/cluster_flags.h"
#include "cluster/node_flags.h"
#include "compression/compression.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "kvstore/kvstore.h"
#include "launcher/hostfile.h"
#include "launcher/launcher.h"
#include "launcher/subprocess.h"
#include "nlohmann/json.hpp"
#include "tools/codec_bench.h"
#include "tools/link_crypto_bench.h"
#include "util/file.h"
#include "util/flags.h"

DEFINE_int32(workers, 1,
             "Workers (threads in this process) when starting a cluster.");
DEFINE_int32(servers, 1, "Servers when starting a cluster.");
DEFINE_string(value_bytes, "4096,65536,1048576,16777216,67108864,268435456",
              "Value sizes in bytes, comma-separated.");
DEFINE_string(mode, "push,pull,pushpull",
              "Operations to measure: push, pull, pushpull.");
DEFINE_string(kv_store, "dist_sync", "dist_sync or dist_async.");
DEFINE_int32(iters, 0,
             "Operations per worker per measurement; 0: by size (about 2 GB, "
             "20 to 2000).");
DEFINE_bool(json, false, "Print one JSON object per measurement.");
DEFINE_bool(raw_tcp, true,
            "Also measure raw TCP over loopback in the same run.");
DEFINE_int64(max_message_bytes, 4 << 20,
             "Largest data message: a server's slice of a key travels in "
             "chunks of this size.");
DEFINE_string(
    hostfile, "",
    "Run the cluster across these hosts (one host[:ssh_port] a line): servers "
    "and "
    "--workers worker processes placed as `launch` places them (process i of "
    "servers-then-workers on host i mod N), the scheduler here; raw TCP from "
    "worker "
    "0's host to the first server host other than its own is measured in the "
    "same run.");
DEFINE_string(ssh_config, "",
              "--hostfile: ssh client config (ssh -F), e.g. the test bed's.");
DEFINE_string(
    launch_binary, "",
    "--hostfile: the launch tool; default: tools/launch beside this one.");
DEFINE_int32(hosts_timeout_s, 1800,
             "--hostfile: the whole run's deadline, seconds.");
DEFINE_string(gradient_compression, "",
              "Compress pushes as the worker's --gradient_compression does "
              "(type=2bit,threshold=0.5, type=fp16, type=onebit).");
DEFINE_int64(gc_min_bytes, 64 << 10,
             "Arrays smaller than this travel uncompressed.");
DEFINE_int64(slice_bytes, 4 << 20,
             "Parts of at most this many bytes per request (worker "
             "--slice_bytes); 0: --max_message_bytes.");
DEFINE_int64(send_credit_bytes, 0,
             "Push bytes per server in flight at most, the rest queued by "
             "priority (worker --send_credit_bytes); 0: off.");
DEFINE_int64(send_window_bytes, 0,
             "The servers it starts: reply bytes handed to the socket per "
             "worker at a time (server --send_window_bytes); 0: 16 MiB.");
DEFINE_bool(priority_demo, false,
            "Push a big low-priority array (the first --value_bytes) and just "
            "after it a small high-priority one (4 KiB, the first layer) as "
            "push-pulls; print when each one's weights arrive. --iters "
            "rounds (default 3).");
DEFINE_int32(demo_gap_ms, 100,
             "--priority_demo: issue the small array this long after the big "
             "one (the first layer's gradient comes last in backward); its "
             "time counts from its own issue.");
DEFINE_bool(demo_fifo, false,
            "--priority_demo: both arrays with priority 0 (no priorities: "
            "first come, first served).");
DEFINE_bool(codec_bench, false,
            "Only time the compression pack/unpack kernels in process "
            "against memcpy for each --value_bytes (no cluster), then exit.");
DEFINE_int32(codec_runs, 7, "--codec_bench: runs per kernel (median).");
DEFINE_bool(link_crypto_bench, false,
            "Only time the encrypted data link's record ciphers (AES-256-GCM, "
            "ChaCha20-Poly1305) on one thread against memcpy for each "
            "--value_bytes as the record size (at most 1 MiB), then exit.");
DEFINE_bool(raw_tcp_serve, false,
            "Internal (--hostfile): serve one raw TCP measurement on --host "
            "and print the port.");
DEFINE_string(raw_tcp_connect, "",
              "Internal (--hostfile): measure raw TCP to this HOST:PORT (a "
              "--raw_tcp_serve).");

namespace {

using Json = nlohmann::ordered_json;
using pstrain::kvstore::KVStore;

// `v` to `digits` decimals, for JSON output.
double Round(double v, int digits) {
  const double scale = std::pow(10.0, digits);
  return std::round(v * scale) / scale;
}
using pstrain::cluster::ClusterOptions;

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

struct Result {
  double seconds = 0;
  std::vector<double> latencies_us;
};

// One worker's loop for one (size, mode).
Result Measure(KVStore* kv, int64_t key, int64_t floats,
               const std::string& mode, int iters) {
  std::vector<float> grad(floats, 0.001f), out(floats);
  Result r;
  const absl::Time start = absl::Now();
  for (int i = 0; i < iters; ++i) {
    const absl::Time t = absl::Now();
    absl::StatusOr<pstrain::kvstore::Handle> h;
    if (mode == "push") {
      h = kv->Push(key, {grad}, 0);
    } else if (mode == "pull") {
      h = kv->Pull(key, absl::MakeSpan(out), 0);
    } else {
      h = kv->PushPull(key, {grad}, absl::MakeSpan(out), 0);
    }
    CHECK(h.ok()) << h.status();
    absl::Status s = kv->Wait(*h, absl::Now() + absl::Seconds(120));
    CHECK(s.ok()) << s;
    r.latencies_us.push_back(absl::ToDoubleMicroseconds(absl::Now() - t));
  }
  r.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return r;
}

// How long SettleLinks waits at most.
constexpr absl::Duration kSettleTimeout = absl::Seconds(5);

// Before the first measurement, with TCP data links on: rounds of one pull
// of every key (`keys[i]` is `floats[i]` long), so that every server
// holding a slice is asked, until one round's requests and replies all
// travelled on data links, for every worker, at most kSettleTimeout. A link
// comes up only after the first messages offer its port, and with two-way
// links a node that offered first may wait a second (kLinkAdoptGrace) for
// its peer's connection before it connects its own: a measurement started
// before would count ZeroMQ round trips (20,000 of 4 KB take under a
// second). Between test-bed hosts it takes a few milliseconds. Pulls only:
// a dist_sync push waits for every worker's. Returns the time it took, or
// nullopt when the links did not carry everything by then (a failed link;
// a heartbeat to the scheduler, which goes through ZeroMQ, only costs one
// more round).
std::optional<absl::Duration> SettleLinks(
    std::vector<std::unique_ptr<KVStore>>& kvs,
    const std::vector<int64_t>& keys, const std::vector<int64_t>& floats) {
  const absl::Time start = absl::Now();
  const absl::Time give_up = start + kSettleTimeout;
  std::vector<char> settled(kvs.size(), 0);
  std::vector<std::thread> threads;
  for (size_t w = 0; w < kvs.size(); ++w) {
    threads.emplace_back([&, w] {
      KVStore* kv = kvs[w].get();
      while (absl::Now() < give_up) {
        const pstrain::transport::TransportStats a = kv->transport_stats();
        for (size_t i = 0; i < keys.size(); ++i) {
          Measure(kv, keys[i], floats[i], "pull", 1);
        }
        const pstrain::transport::TransportStats b = kv->transport_stats();
        const int64_t sent = b.sent - a.sent;
        const int64_t got = b.received - a.received;
        if (sent >= static_cast<int64_t>(keys.size()) &&
            got >= static_cast<int64_t>(keys.size()) &&
            b.link_messages_sent - a.link_messages_sent == sent &&
            b.link_messages_received - a.link_messages_received == got) {
          settled[w] = 1;
          return;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  for (char s : settled) {
    if (!s) return std::nullopt;
  }
  return absl::Now() - start;
}

double RawTcpGbps() {
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(ls, reinterpret_cast<sockaddr*>(&a), &len);
  listen(ls, 1);
  const size_t total = size_t{2} << 30, chunk = 1 << 20;
  std::thread reader([ls, total] {
    int c = accept(ls, nullptr, nullptr);
    std::vector<char> buf(1 << 20);
    size_t got = 0;
    while (got < total) {
      ssize_t n = read(c, buf.data(), buf.size());
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    close(c);
  });
  int s = socket(AF_INET, SOCK_STREAM, 0);
  connect(s, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  std::vector<char> buf(chunk, 1);
  const absl::Time t = absl::Now();
  size_t sent = 0;
  while (sent < total) {
    ssize_t n = write(s, buf.data(), buf.size());
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  close(s);
  reader.join();
  close(ls);
  return sent / 1e9 / absl::ToDoubleSeconds(absl::Now() - t);
}

// Raw TCP measured in this run (0: not): the 2 GiB stream's GB/s, the
// 4 KB round trip's p50, and the GB/s of 1 MiB round trips (1 MiB out, 1
// byte back).
struct RawTcp {
  double gbps = 0;
  double rtt4k_us = 0;
  double rt1m_gbps = 0;
  // The reference for `bytes`: the 1 MiB round trips for 1 MiB values
  // (one request and its answer, as a push or pull), else the stream.
  double ReferenceGbps(int64_t bytes) const {
    return bytes == static_cast<int64_t>(1 << 20) && rt1m_gbps > 0 ? rt1m_gbps
                                                                   : gbps;
  }
  const char* ReferenceName(int64_t bytes) const {
    return bytes == static_cast<int64_t>(1 << 20) && rt1m_gbps > 0
               ? "raw 1 MiB round trip"
               : "raw TCP";
  }
};
RawTcp g_raw;  // Local mode.

void Report(int workers, int servers, int64_t bytes, const std::string& mode,
            const std::vector<Result>& results) {
  double gbps = 0;
  std::vector<double> lat;
  for (const auto& r : results) {
    gbps +=
        bytes * static_cast<double>(r.latencies_us.size()) / r.seconds / 1e9;
    lat.insert(lat.end(), r.latencies_us.begin(), r.latencies_us.end());
  }
  gbps /= results.size();  // Per worker.
  const double p50 = Percentile(lat, 0.5), p99 = Percentile(lat, 0.99);
  if (FLAGS_json) {
    const Json line = {
        {"workers", workers},         {"servers", servers},
        {"value_bytes", bytes},       {"mode", mode},
        {"kv_store", FLAGS_kv_store}, {"iters", lat.size() / results.size()},
        {"gbps", Round(gbps, 3)},     {"p50_us", Round(p50, 1)},
        {"p99_us", Round(p99, 1)}};
    std::cout << line.dump() << std::endl;
  } else {
    std::string ratio;
    if (g_raw.gbps > 0) {
      ratio = bytes <= 4096 && g_raw.rtt4k_us > 0
                  ? absl::StrFormat("  (p50 %.2f x raw 4 KB round trip)",
                                    p50 / g_raw.rtt4k_us)
                  : absl::StrFormat("  (%.2f x %s)",
                                    gbps / g_raw.ReferenceGbps(bytes),
                                    g_raw.ReferenceName(bytes));
    }
    std::cout << absl::StrFormat(
                     "%-9s %12d B  %dw x %ds  %8.3f GB/s per worker  p50 %9.1f "
                     "us  p99 %9.1f us%s\n",
                     mode, bytes, workers, servers, gbps, p50, p99, ratio)
              << std::flush;
  }
}

// Raw TCP between two hosts, the reference for the KVStore's figures: the
// same 2 GiB in 1 MiB writes as over loopback, then 4 KB round trips (4 KB
// out, 1 byte back: a push and its acknowledgement). The serving side reads
// a one-byte command per connection: 'T' throughput, 'L' latency.
constexpr size_t kRawTotal = size_t{2} << 30;
constexpr size_t kRawChunk = 1 << 20;
constexpr int kRawRoundTrips = 2000;
constexpr size_t kRawSmall = 4096;
// The 1 MiB reference: 1 MiB out and 1 byte back per round (the issue's
// "push-plus-1-byte-ack loop"), the fair reference for a 1 MiB push or pull,
// which is one request and its answer too; the 2 GiB stream never waits for
// an answer.
constexpr size_t kRawMedium = 1 << 20;
constexpr int kRawMediumRoundTrips = 400;

// Reads exactly n bytes with a deadline; false on EOF, error or timeout.
bool ReadFull(int fd, char* buf, size_t n, absl::Time deadline) {
  size_t got = 0;
  while (got < n) {
    pollfd p{fd, POLLIN, 0};
    const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (ms <= 0 || poll(&p, 1, static_cast<int>(ms)) != 1) return false;
    ssize_t r = read(fd, buf + got, n - got);
    if (r <= 0) return false;
    got += static_cast<size_t>(r);
  }
  return true;
}

bool WriteFull(int fd, const char* buf, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t w = write(fd, buf + done, n - done);
    if (w <= 0) return false;
    done += static_cast<size_t>(w);
  }
  return true;
}

// Answers round trips on `c` until EOF, error or `deadline`: reads
// `bytes`, writes 1 byte back.
void ServeRoundTrips(int c, size_t bytes, absl::Time deadline) {
  std::vector<char> buf(bytes);
  while (ReadFull(c, buf.data(), bytes, deadline)) {
    if (!WriteFull(c, "k", 1)) break;
  }
}

// Round trips of `bytes` out and 1 byte back on the connected socket `s`:
// `warmup` untimed, then `iters` timed. Fills *rtt_us (one per timed round)
// and returns the timed rounds' bytes over their total time in GB/s; 0 when
// a round failed.
double TimeRoundTrips(int s, size_t bytes, int warmup, int iters,
                      absl::Time deadline, std::vector<double>* rtt_us) {
  std::vector<char> buf(bytes, 1);
  char ack = 0;
  absl::Time timed_start;
  for (int i = 0; i < warmup + iters; ++i) {
    const absl::Time t0 = absl::Now();
    if (i == warmup) timed_start = t0;
    if (!WriteFull(s, buf.data(), bytes) || !ReadFull(s, &ack, 1, deadline)) {
      return 0;
    }
    if (i >= warmup)
      rtt_us->push_back(absl::ToDoubleMicroseconds(absl::Now() - t0));
  }
  return static_cast<double>(bytes) * iters / 1e9 /
         absl::ToDoubleSeconds(absl::Now() - timed_start);
}

// Raw TCP over loopback in this process: round trips of `bytes` out and 1
// byte back (`warmup` untimed, then `iters`). Returns {p50 in microseconds,
// GB/s of the timed rounds}; {0, 0} when a socket call failed.
std::pair<double, double> RawTcpRoundTrips(size_t bytes, int warmup,
                                           int iters) {
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      listen(ls, 1) != 0 ||
      getsockname(ls, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    close(ls);
    return {0, 0};
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  std::thread echo([ls, bytes, deadline] {
    pollfd p{ls, POLLIN, 0};
    if (poll(&p, 1, 60000) != 1) return;
    int c = accept(ls, nullptr, nullptr);
    if (c < 0) return;
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ServeRoundTrips(c, bytes, deadline);
    close(c);
  });
  int s = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  std::vector<double> rtt;
  double gbps = 0;
  if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0)
    gbps = TimeRoundTrips(s, bytes, warmup, iters, deadline, &rtt);
  close(s);
  echo.join();
  close(ls);
  if (gbps <= 0) return {0, 0};
  return {Percentile(rtt, 0.5), gbps};
}

int RawTcpServe(const std::string& host) {
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  if (inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) {
    std::cerr << "kv_bench: --host '" << host << "' is not an IPv4 address\n";
    return 2;
  }
  if (bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      listen(ls, 2) != 0) {
    std::cerr << "kv_bench: cannot listen on " << host << ": "
              << strerror(errno) << "\n";
    return 1;
  }
  socklen_t len = sizeof(a);
  getsockname(ls, reinterpret_cast<sockaddr*>(&a), &len);
  std::cout << "raw-tcp-port " << ntohs(a.sin_port) << std::endl;
  const absl::Time deadline = absl::Now() + absl::Seconds(120);
  std::vector<char> buf(kRawChunk);
  for (int conn = 0; conn < 3; ++conn) {
    pollfd p{ls, POLLIN, 0};
    if (poll(&p, 1,
             static_cast<int>(
                 absl::ToInt64Milliseconds(deadline - absl::Now()))) != 1) {
      std::cerr << "kv_bench: no raw TCP client within 120 s\n";
      return 1;
    }
    int c = accept(ls, nullptr, nullptr);
    if (c < 0) return 1;
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    char cmd = 0;
    if (!ReadFull(c, &cmd, 1, deadline)) return 1;
    if (cmd == 'T') {
      size_t got = 0;
      while (got < kRawTotal) {
        if (!ReadFull(c, buf.data(), std::min(kRawChunk, kRawTotal - got),
                      deadline))
          break;
        got += std::min(kRawChunk, kRawTotal - got);
      }
      WriteFull(c, "k", 1);
    } else {
      // 'L': round trips of a size given as 4 bytes (host order: the same
      // binary on both ends), at most kRawChunk.
      uint32_t bytes = 0;
      if (!ReadFull(c, reinterpret_cast<char*>(&bytes), sizeof(bytes),
                    deadline) ||
          bytes == 0 || bytes > kRawChunk) {
        close(c);
        return 1;
      }
      ServeRoundTrips(c, bytes, deadline);
    }
    close(c);
  }
  close(ls);
  return 0;
}

int RawTcpConnect() {
  const std::string& target = FLAGS_raw_tcp_connect;
  const size_t colon = target.rfind(':');
  int port = 0;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(target.substr(colon + 1), &port)) {
    std::cerr << "kv_bench: --raw_tcp_connect needs HOST:PORT, not '" << target
              << "'\n";
    return 2;
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, target.substr(0, colon).c_str(), &a.sin_addr) != 1) {
    std::cerr << "kv_bench: --raw_tcp_connect: '" << target
              << "' is not an IPv4 address\n";
    return 2;
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(120);
  auto open = [&]() {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
      std::cerr << "kv_bench: cannot connect to " << target << ": "
                << strerror(errno) << "\n";
      close(s);
      return -1;
    }
    return s;
  };
  int s = open();
  if (s < 0) return 1;
  std::vector<char> buf(kRawChunk, 1);
  const absl::Time t = absl::Now();
  size_t sent = 0;
  bool ok = WriteFull(s, "T", 1);
  while (ok && sent < kRawTotal) {
    ok = WriteFull(s, buf.data(), kRawChunk);
    sent += kRawChunk;
  }
  char ack = 0;
  ok = ok && ReadFull(s, &ack, 1, deadline);
  const double gbps = sent / 1e9 / absl::ToDoubleSeconds(absl::Now() - t);
  close(s);
  if (!ok) {
    std::cerr << "kv_bench: raw TCP throughput to " << target << " failed\n";
    return 1;
  }
  // Round trips of `bytes`: {p50 us, GB/s}, {0, 0} on failure.
  auto round_trips = [&](uint32_t bytes, int warmup, int iters) {
    const int c = open();
    std::vector<double> rtt;
    double rate = 0;
    if (c >= 0 && WriteFull(c, "L", 1) &&
        WriteFull(c, reinterpret_cast<const char*>(&bytes), sizeof(bytes))) {
      rate = TimeRoundTrips(c, bytes, warmup, iters, deadline, &rtt);
    }
    if (c >= 0) close(c);
    return rate > 0 ? std::make_pair(Percentile(rtt, 0.5), rate)
                    : std::make_pair(0.0, 0.0);
  };
  const auto small = round_trips(kRawSmall, 100, kRawRoundTrips);
  const auto medium = round_trips(kRawMedium, 20, kRawMediumRoundTrips);
  if (small.second <= 0 || medium.second <= 0) {
    std::cerr << "kv_bench: raw TCP round trips to " << target << " failed\n";
    return 1;
  }
  std::cout << absl::StrFormat("raw-tcp %.4f %.2f %.4f\n", gbps, small.first,
                               medium.second)
            << std::flush;
  return 0;
}

// Runs `argv` to its end within `limit`, returning its exit status (-1 on
// timeout) and its output.
int RunTool(const std::vector<std::string>& argv, absl::Duration limit,
            std::string* out, bool echo) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) env.push_back(*e);
  auto p = pstrain::launcher::Subprocess::Start(argv, env);
  if (!p.ok()) {
    *out = std::string(p.status().message());
    return -1;
  }
  p->CloseStdin();
  const absl::Time deadline = absl::Now() + limit;
  size_t shown = 0;
  while (true) {
    const bool open = p->ReadOutput(out);
    if (echo) {
      // Progress: pass whole lines on as they come.
      const size_t nl = out->rfind('\n');
      if (nl != std::string::npos && nl + 1 > shown) {
        std::cerr << out->substr(shown, nl + 1 - shown) << std::flush;
        shown = nl + 1;
      }
    }
    if (p->Poll() && !open) break;
    if (absl::Now() > deadline) {
      p->SignalGroup(SIGTERM);
      absl::SleepFor(absl::Seconds(2));
      p->SignalGroup(SIGKILL);
      while (!p->Poll()) absl::SleepFor(absl::Milliseconds(10));
      return -1;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return p->succeeded() ? 0 : 1;
}

std::vector<std::string> SshArgv(const pstrain::launcher::Host& host) {
  std::vector<std::string> argv = {"ssh"};
  if (!FLAGS_ssh_config.empty())
    argv.insert(argv.end(), {"-F", FLAGS_ssh_config});
  argv.insert(argv.end(), {"-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                           "-p", absl::StrCat(host.ssh_port), host.name});
  return argv;
}

// Raw TCP from `from` to `to` (two hosts of the hosts file) through ssh.
absl::StatusOr<RawTcp> RawTcpBetween(const pstrain::launcher::Host& from,
                                     const pstrain::launcher::Host& to,
                                     const std::string& self) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) env.push_back(*e);
  std::vector<std::string> serve = SshArgv(to);
  serve.push_back(absl::StrCat(
      pstrain::launcher::ShellQuote(self),
      " --raw_tcp_serve --host=", pstrain::launcher::ShellQuote(to.name)));
  auto server = pstrain::launcher::Subprocess::Start(serve, env);
  if (!server.ok()) return server.status();
  server->CloseStdin();
  std::string out;
  int port = 0;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (port == 0 && absl::Now() < deadline) {
    const bool open = server->ReadOutput(&out);
    const size_t at = out.find("raw-tcp-port ");
    const size_t end = at == std::string::npos ? at : out.find('\n', at);
    if (end != std::string::npos)
      absl::SimpleAtoi(out.substr(at + 13, end - at - 13), &port);
    if (port == 0 && server->Poll() && !open) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  if (port == 0) {
    server->SignalGroup(SIGKILL);
    return absl::UnavailableError(
        absl::StrCat("raw TCP server on ", to.name, " did not start: ", out));
  }
  std::vector<std::string> connect = SshArgv(from);
  connect.push_back(absl::StrCat(pstrain::launcher::ShellQuote(self),
                                 " --raw_tcp_connect=", to.name, ":", port));
  std::string cout_text;
  const int rc = RunTool(connect, absl::Seconds(180), &cout_text, false);
  server->SignalGroup(SIGKILL);
  RawTcp raw;
  const size_t at = cout_text.find("raw-tcp ");
  if (rc != 0 || at == std::string::npos) {
    return absl::UnavailableError(absl::StrCat(
        "raw TCP from ", from.name, " to ", to.name, " failed: ", cout_text));
  }
  std::vector<std::string> words =
      absl::StrSplit(cout_text.substr(at, cout_text.find('\n', at) - at), ' ',
                     absl::SkipEmpty());
  if (words.size() != 4 || !absl::SimpleAtod(words[1], &raw.gbps) ||
      !absl::SimpleAtod(words[2], &raw.rtt4k_us) ||
      !absl::SimpleAtod(words[3], &raw.rt1m_gbps)) {
    return absl::InternalError(
        absl::StrCat("unexpected raw TCP output: ", cout_text));
  }
  return raw;
}

// --hostfile: servers and workers as processes on the hosts (through
// launch), raw TCP between worker 0's and server 0's hosts, one table.
int RunOnHosts(const ClusterOptions& cluster) {
  auto hosts = pstrain::launcher::ReadHostfile(FLAGS_hostfile);
  if (!hosts.ok()) {
    std::cerr << "kv_bench: " << hosts.status().message() << "\n";
    return 2;
  }
  if (FLAGS_workers < 1 || FLAGS_servers < 1) {
    std::cerr << "kv_bench: --workers and --servers must be at least 1\n";
    return 2;
  }
  const std::string self = pstrain::PathBesideThisProgram("tools/kv_bench");
  const std::string launch =
      FLAGS_launch_binary.empty()
          ? pstrain::PathBesideThisProgram("tools/launch")
          : FLAGS_launch_binary;
  const int n = static_cast<int>(hosts->size());
  // Raw TCP between worker 0's host and the first server host that is not
  // its own (servers go to hosts 0..S-1 mod N, worker 0 to host S mod N).
  const pstrain::launcher::Host worker_host = (*hosts)[FLAGS_servers % n];
  pstrain::launcher::Host server_host = (*hosts)[0];
  for (int i = 0; i < FLAGS_servers; ++i) {
    if (!((*hosts)[i % n] == worker_host)) {
      server_host = (*hosts)[i % n];
      break;
    }
  }
  RawTcp raw;
  if (FLAGS_raw_tcp) {
    std::cerr << "kv_bench: raw TCP from " << worker_host.name << " to "
              << server_host.name << " (2 GiB, then " << kRawRoundTrips
              << " round trips of 4 KB and " << kRawMediumRoundTrips
              << " of 1 MiB)\n";
    auto measured = RawTcpBetween(worker_host, server_host, self);
    if (!measured.ok()) {
      std::cerr << "kv_bench: " << measured.status().message() << "\n";
      return 1;
    }
    raw = *measured;
    if (!FLAGS_json) {
      std::cout << absl::StrFormat(
          "raw TCP %s -> %s (2 GiB in 1 MiB writes): %.2f GB/s; 4 KB round "
          "trip p50 %.1f us; 1 MiB round trips (1 MiB out, 1 byte back) "
          "%.2f GB/s\n",
          worker_host.name, server_host.name, raw.gbps, raw.rtt4k_us,
          raw.rt1m_gbps);
    }
  }
  // Every node gets this run's timing flags (servers and workers also its
  // --shm_bytes).
  const std::vector<std::string> timing =
      pstrain::cluster::TimingFlags(cluster);
  const std::string shm = absl::StrCat("--shm_bytes=", cluster.shm_bytes);
  const std::string link = absl::StrCat(
      "--tcp_data_link=", cluster.tcp_data_link ? "true" : "false");
  const std::string two_way = absl::StrCat(
      "--two_way_links=", cluster.two_way_links ? "true" : "false");
  const std::string spin =
      absl::StrCat("--io_spin_us=", absl::ToInt64Microseconds(cluster.io_spin));
  std::vector<std::string> argv = {launch, "-H", FLAGS_hostfile};
  argv.insert(argv.end(), {"-n", absl::StrCat(FLAGS_workers), "-s",
                           absl::StrCat(FLAGS_servers)});
  argv.insert(
      argv.end(),
      {"--scheduler_binary",
       pstrain::PathBesideThisProgram("scheduler/scheduler"), "--server_binary",
       pstrain::PathBesideThisProgram("server/server")});
  argv.insert(argv.end(),
              {"--scheduler_args", absl::StrJoin(timing, " "), "--server_args",
               absl::StrCat(shm, " ", link, " ", two_way, " ", spin, " ",
                            absl::StrJoin(timing, " "), " --send_window_bytes=",
                            FLAGS_send_window_bytes, " --max_frame_bytes=",
                            pstrain::kvstore::MaxFrameBytesFor(
                                FLAGS_max_message_bytes))});
  if (!FLAGS_ssh_config.empty())
    argv.insert(argv.end(), {"--ssh_config", FLAGS_ssh_config});
  argv.insert(argv.end(),
              {"--", self, "--json", "--value_bytes=" + FLAGS_value_bytes,
               "--mode=" + FLAGS_mode, "--kv_store=" + FLAGS_kv_store,
               absl::StrCat("--iters=", FLAGS_iters), shm, link, two_way, spin,
               absl::StrCat("--max_message_bytes=", FLAGS_max_message_bytes),
               absl::StrCat("--slice_bytes=", FLAGS_slice_bytes),
               absl::StrCat("--send_credit_bytes=", FLAGS_send_credit_bytes),
               absl::StrCat("--priority_demo=", FLAGS_priority_demo),
               absl::StrCat("--demo_fifo=", FLAGS_demo_fifo),
               absl::StrCat("--demo_gap_ms=", FLAGS_demo_gap_ms),
               "--gradient_compression=" + FLAGS_gradient_compression,
               absl::StrCat("--gc_min_bytes=", FLAGS_gc_min_bytes)});
  argv.insert(argv.end(), timing.begin(), timing.end());
  std::string out;
  const int rc =
      RunTool(argv, absl::Seconds(FLAGS_hosts_timeout_s), &out, !FLAGS_json);
  if (rc != 0) {
    std::cerr << "kv_bench: the job across hosts failed"
              << (rc < 0 ? " (timed out)" : "") << ":\n"
              << (FLAGS_json ? out : "");
    return 1;
  }
  // Every worker's measurements, in the order they were taken.
  struct Agg {
    std::vector<double> gbps, p50, p99;
  };
  std::vector<std::pair<int64_t, std::string>> order;
  std::map<std::pair<int64_t, std::string>, Agg> agg;
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    const size_t brace = line.find("{\"workers\"");
    if (!absl::StartsWith(line, "[worker ") || brace == absl::string_view::npos)
      continue;
    const Json obj =
        Json::parse(line.substr(brace), nullptr, /*allow_exceptions=*/false);
    if (obj.is_discarded() || !obj.is_object()) {
      std::cerr << "kv_bench: a worker printed a line that is not JSON: "
                << line << "\n";
      return 1;
    }
    const auto key = std::make_pair(obj.value("value_bytes", int64_t{0}),
                                    obj.value("mode", std::string()));
    if (!agg.count(key)) order.push_back(key);
    agg[key].gbps.push_back(obj.value("gbps", 0.0));
    agg[key].p50.push_back(obj.value("p50_us", 0.0));
    agg[key].p99.push_back(obj.value("p99_us", 0.0));
  }
  if (order.empty()) {
    std::cerr << "kv_bench: no measurement came back from the workers:\n"
              << out;
    return 1;
  }
  for (const auto& key : order) {
    const Agg& a = agg[key];
    if (static_cast<int>(a.gbps.size()) != FLAGS_workers) {
      std::cerr << "kv_bench: " << a.gbps.size() << " of " << FLAGS_workers
                << " workers reported " << key.second << " " << key.first
                << " B\n";
      return 1;
    }
    const double gbps =
        std::accumulate(a.gbps.begin(), a.gbps.end(), 0.0) / a.gbps.size();
    const double p50 = Percentile(a.p50, 0.5);
    const double p99 = *std::max_element(a.p99.begin(), a.p99.end());
    const double gbps_ratio =
        raw.gbps > 0 ? gbps / raw.ReferenceGbps(key.first) : 0;
    const double p50_ratio = raw.rtt4k_us > 0 ? p50 / raw.rtt4k_us : 0;
    if (FLAGS_json) {
      const Json line = {{"hosts", n},
                         {"workers", FLAGS_workers},
                         {"servers", FLAGS_servers},
                         {"value_bytes", key.first},
                         {"mode", key.second},
                         {"kv_store", FLAGS_kv_store},
                         {"gbps", Round(gbps, 3)},
                         {"p50_us", Round(p50, 1)},
                         {"p99_us", Round(p99, 1)},
                         {"raw_tcp_gbps", Round(raw.gbps, 3)},
                         {"raw_tcp_rtt4k_p50_us", Round(raw.rtt4k_us, 1)},
                         {"raw_tcp_rt1m_gbps", Round(raw.rt1m_gbps, 3)}};
      std::cout << line.dump() << std::endl;
    } else {
      std::cout << absl::StrFormat(
          "%-9s %12d B  %dw x %ds on %d hosts  %8.3f GB/s per worker (%.2f x "
          "%s)  p50 %9.1f us%s"
          "  p99 %9.1f us\n",
          key.second, key.first, FLAGS_workers, FLAGS_servers, n, gbps,
          gbps_ratio, raw.ReferenceName(key.first), p50,
          key.first <= static_cast<int64_t>(kRawSmall)
              ? absl::StrFormat(" (%.2f x raw 4 KB round trip)", p50_ratio)
              : std::string(),
          p99);
    }
  }
  return 0;
}

// --value_bytes into `sizes`; false (after saying why) for a bad entry.
bool ParseValueBytes(std::vector<int64_t>* sizes) {
  for (absl::string_view s :
       absl::StrSplit(FLAGS_value_bytes, ',', absl::SkipEmpty())) {
    int64_t b;
    if (!absl::SimpleAtoi(s, &b) || b < 4) {
      std::cerr << "kv_bench: bad --value_bytes entry '" << s << "'\n";
      return false;
    }
    sizes->push_back(b);
  }
  return true;
}

// --priority_demo (issue #16): each round every worker push-pulls the big
// array (key 0, `big_bytes`) with priority -10 and --demo_gap_ms after it
// the first layer's 4 KiB array (key 1) with priority 0, and notes when
// each one's weights have arrived. Reported as modes "first_layer" and
// "big_array": p50/p99 are the arrival times (us after each one's request
// was issued), gbps the array's bytes over its time.
// --demo_fifo: both with priority 0.
constexpr int64_t kDemoSmallBytes = 4096;

int PriorityDemo(std::vector<std::unique_ptr<KVStore>>& kvs, int workers,
                 int servers, int64_t big_bytes) {
  const int64_t big_n = big_bytes / 4, small_n = kDemoSmallBytes / 4;
  const std::vector<float> big_init(big_n, 0.0f), small_init(small_n, 0.0f);
  const int rounds = FLAGS_iters > 0 ? FLAGS_iters : 3;
  std::vector<Result> small_r(kvs.size()), big_r(kvs.size());
  std::vector<int> small_first(kvs.size(), 0);
  std::vector<std::thread> threads;
  for (size_t w = 0; w < kvs.size(); ++w) {
    threads.emplace_back([&, w] {
      KVStore* k = kvs[w].get();
      const absl::Time setup = absl::Now() + absl::Seconds(600);
      CHECK(k->Init({0, 1}, {big_init, small_init}, setup).ok());
      std::vector<float> big(big_n, 0.001f), small(small_n, 0.001f);
      std::vector<float> big_out(big_n), small_out(small_n);
      for (int r = 0; r < rounds; ++r) {
        CHECK(k->Barrier(absl::Now() + absl::Seconds(600)).ok());
        const absl::Time t0 = absl::Now();
        auto hb = k->PushPull(0, {big}, absl::MakeSpan(big_out),
                              FLAGS_demo_fifo ? 0 : -10);
        CHECK(hb.ok()) << hb.status();
        absl::SleepFor(absl::Milliseconds(FLAGS_demo_gap_ms));
        const absl::Time t1 = absl::Now();
        auto hs = k->PushPull(1, {small}, absl::MakeSpan(small_out), 0);
        CHECK(hs.ok()) << hs.status();
        // Poll both, so that each arrival is timed whichever comes first.
        const absl::Time give_up = t0 + absl::Seconds(600);
        double small_us = -1, big_us = -1;
        while ((small_us < 0 || big_us < 0) && absl::Now() < give_up) {
          const absl::Time now = absl::Now();
          if (small_us < 0 && k->Done(*hs))
            small_us = absl::ToDoubleMicroseconds(now - t1);
          if (big_us < 0 && k->Done(*hb))
            big_us = absl::ToDoubleMicroseconds(now - t0);
          absl::SleepFor(absl::Microseconds(50));
        }
        CHECK(k->Wait(*hs, give_up).ok());
        CHECK(k->Wait(*hb, give_up).ok());
        small_r[w].latencies_us.push_back(small_us);
        small_r[w].seconds += small_us / 1e6;
        big_r[w].latencies_us.push_back(big_us);
        big_r[w].seconds += big_us / 1e6;
        if (small_us + FLAGS_demo_gap_ms * 1e3 < big_us) ++small_first[w];
      }
      CHECK(k->Barrier(absl::Now() + absl::Seconds(600)).ok());
    });
  }
  for (auto& t : threads) t.join();
  Report(workers, servers, kDemoSmallBytes, "first_layer", small_r);
  Report(workers, servers, big_bytes, "big_array", big_r);
  int first = 0;
  for (int f : small_first) first += f;
  // On stderr with --json (one object per line on stdout).
  (FLAGS_json ? std::cerr : std::cout)
      << absl::StrFormat(
             "priority demo: the first layer's weights arrived before the "
             "big array's in %d of %d rounds (slice_bytes %d, "
             "send_credit_bytes %d, max_message_bytes %d%s)\n",
             first, rounds * static_cast<int>(kvs.size()), FLAGS_slice_bytes,
             FLAGS_send_credit_bytes, FLAGS_max_message_bytes,
             FLAGS_demo_fifo ? ", both priority 0" : "")
      << std::flush;
  for (auto& kv : kvs) CHECK(kv->Finish().ok());
  return 0;
}

int RunAll(std::vector<std::unique_ptr<KVStore>>& kvs, int workers, int servers,
           bool data_links) {
  std::vector<int64_t> sizes;
  if (!ParseValueBytes(&sizes)) return 2;
  if (FLAGS_priority_demo) {
    if (sizes.empty()) {
      std::cerr << "kv_bench: --priority_demo needs the big array's size "
                   "as the first --value_bytes\n";
      return 2;
    }
    return PriorityDemo(kvs, workers, servers, sizes[0]);
  }
  std::vector<std::string> modes =
      absl::StrSplit(FLAGS_mode, ',', absl::SkipEmpty());
  for (const auto& m : modes) {
    if (m != "push" && m != "pull" && m != "pushpull") {
      std::cerr << "kv_bench: bad --mode '" << m << "'\n";
      return 2;
    }
  }
  // Init every key once (same order on every worker).
  std::vector<int64_t> keys;
  std::vector<std::vector<float>> init;
  for (size_t i = 0; i < sizes.size(); ++i) {
    keys.push_back(static_cast<int64_t>(i));
    init.emplace_back(sizes[i] / 4, 0.0f);
  }
  std::vector<std::thread> threads;
  for (auto& kv : kvs) {
    threads.emplace_back([&, k = kv.get()] {
      std::vector<absl::Span<const float>> spans(init.begin(), init.end());
      absl::Status s = k->Init(keys, spans, absl::Now() + absl::Seconds(300));
      CHECK(s.ok()) << s;
    });
  }
  for (auto& t : threads) t.join();
  threads.clear();
  if (data_links) {
    std::vector<int64_t> floats;
    for (int64_t bytes : sizes) floats.push_back(bytes / 4);
    const std::optional<absl::Duration> took = SettleLinks(kvs, keys, floats);
    (FLAGS_json ? std::cerr : std::cout)
        << (took.has_value()
                ? absl::StrFormat("kv_bench: data links carry every request "
                                  "and reply after %.1f ms of warm-up\n",
                                  absl::ToDoubleMilliseconds(*took))
                : absl::StrCat("kv_bench: not every request and reply is on "
                               "a data link after ",
                               absl::FormatDuration(kSettleTimeout),
                               " of warm-up; measuring anyway\n"))
        << std::flush;
  }
  for (size_t i = 0; i < sizes.size(); ++i) {
    const int iters = FLAGS_iters > 0
                          ? FLAGS_iters
                          : static_cast<int>(std::clamp<int64_t>(
                                (int64_t{2} << 30) / sizes[i], 20, 2000));
    for (const auto& mode : modes) {
      std::vector<Result> results(kvs.size());
      for (size_t w = 0; w < kvs.size(); ++w) {
        threads.emplace_back([&, w] {
          Measure(kvs[w].get(), keys[i], sizes[i] / 4, mode,
                  std::min(iters, 3));  // Warm-up.
          CHECK(kvs[w]->Barrier(absl::Now() + absl::Seconds(300)).ok());
          results[w] =
              Measure(kvs[w].get(), keys[i], sizes[i] / 4, mode, iters);
          CHECK(kvs[w]->Barrier(absl::Now() + absl::Seconds(300)).ok());
        });
      }
      for (auto& t : threads) t.join();
      threads.clear();
      // In join mode only this process's worker reports.
      Report(workers, servers, sizes[i], mode, results);
    }
  }
  // How the workers' tensors travelled (not with --json: one object per
  // measurement only).
  pstrain::transport::TransportStats total;
  for (auto& kv : kvs) {
    const pstrain::transport::TransportStats s = kv->transport_stats();
    total.shm_frames_sent += s.shm_frames_sent;
    total.shm_frames_received += s.shm_frames_received;
    total.shm_frames_inline += s.shm_frames_inline;
    total.dropped_malformed += s.dropped_malformed;
  }
  // With --json on stderr, so that stdout stays one object per line (and
  // --hostfile runs still see each worker's account).
  (FLAGS_json ? std::cerr : std::cout)
      << absl::StrFormat(
             "workers' frames through shared memory: %d sent, %d received; %d "
             "over TCP because "
             "the arena was full; %d malformed messages dropped\n",
             total.shm_frames_sent, total.shm_frames_received,
             total.shm_frames_inline, total.dropped_malformed)
      << std::flush;
  for (auto& kv : kvs) CHECK(kv->Finish().ok());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  pstrain::ParseFlagsOrExit(
      {"kv_bench",
       "kv_bench [--workers=N --servers=S] [--value_bytes=4096,1048576] "
       "[--mode=push,pull,pushpull]\n"
       "         [--gradient_compression=type=2bit,threshold=0.5] "
       "[--codec_bench] [--link_crypto_bench]\n"
       "         [--kv_store=dist_sync|dist_async] [--iters=N] [--json]\n"
       "         across hosts: --hostfile=FILE [--ssh_config=FILE] (workers "
       "and servers on the hosts)\n"
       "         or join a job: --scheduler_address=H:P --num_workers "
       "--num_servers --token_file\n"
       "KVStore throughput and latency against raw TCP. The cluster flags "
       "below also go\nto the scheduler and servers it starts.",
       {{__FILE__, "Flags"},
        pstrain::cluster::ClusterFlagGroup(),
        pstrain::cluster::NodeFlagGroup()}},
      {argv, argv + argc});
  auto cluster = pstrain::cluster::NodeOptionsFromFlags(
      pstrain::proto::WORKER, /*require_scheduler_address=*/false);
  if (!cluster.ok()) {
    pstrain::ExitWithError("kv_bench", cluster.status().message());
  }
  FLAGS_logtostderr = true;
  FLAGS_minloglevel = 1;
  google::InitGoogleLogging(argv[0]);
  if (!pstrain::transport::TuneMallocForMessages()) {
    LOG(WARNING) << "could not tune malloc for message buffers (not glibc?)";
  }
  if (FLAGS_kv_store != "dist_sync" && FLAGS_kv_store != "dist_async") {
    std::cerr << "kv_bench: --kv_store must be dist_sync or dist_async\n";
    return 2;
  }
  if (FLAGS_link_crypto_bench) {
    std::vector<int64_t> sizes;
    if (!ParseValueBytes(&sizes)) return 2;
    pstrain::tools::RunLinkCryptoBench(sizes, std::max(1, FLAGS_codec_runs),
                                       std::cout);
    return 0;
  }
  if (FLAGS_codec_bench) {
    pstrain::tools::CodecBenchOptions c;
    c.runs = std::max(1, FLAGS_codec_runs);
    c.json = FLAGS_json;
    if (!ParseValueBytes(&c.value_bytes)) return 2;
    pstrain::tools::RunCodecBench(c, std::cout);
    return 0;
  }
  auto compression = pstrain::compression::Parse(FLAGS_gradient_compression,
                                                 FLAGS_gc_min_bytes);
  if (!compression.ok()) {
    pstrain::ExitWithError("kv_bench", compression.status().message());
  }
  if (FLAGS_raw_tcp_serve) return RawTcpServe(cluster->host);
  if (!FLAGS_raw_tcp_connect.empty()) return RawTcpConnect();
  if (!FLAGS_hostfile.empty()) {
    if (!cluster->scheduler_address.empty()) {
      std::cerr << "kv_bench: --hostfile starts its own job; it does not go "
                   "with --scheduler_address\n";
      return 2;
    }
    return RunOnHosts(*cluster);
  }
  pstrain::kvstore::KVStoreOptions o;
  o.cluster = *cluster;
  o.max_message_bytes = FLAGS_max_message_bytes;
  o.slice_bytes = FLAGS_slice_bytes;
  o.send_credit_bytes = FLAGS_send_credit_bytes;
  o.compression = *compression;
  if (!o.cluster.scheduler_address.empty()) {  // Join mode.
    auto kv = KVStore::Create(FLAGS_kv_store, o);
    if (!kv.ok()) {
      std::cerr << "kv_bench: " << kv.status().message() << "\n";
      return 1;
    }
    std::vector<std::unique_ptr<KVStore>> kvs;
    kvs.push_back(std::move(*kv));
    return RunAll(kvs, o.cluster.num_workers, o.cluster.num_servers,
                  o.cluster.tcp_data_link);
  }

  if (FLAGS_raw_tcp) {
    g_raw.gbps = RawTcpGbps();
    g_raw.rtt4k_us = RawTcpRoundTrips(kRawSmall, 100, kRawRoundTrips).first;
    g_raw.rt1m_gbps =
        RawTcpRoundTrips(kRawMedium, 20, kRawMediumRoundTrips).second;
    std::cout << absl::StrFormat(
        "raw TCP over loopback (2 GiB in 1 MiB writes): %.2f GB/s; 4 KB round "
        "trip (4 KB out, 1 byte back) p50 %.1f us; 1 MiB round trips %.2f "
        "GB/s\n",
        g_raw.gbps, g_raw.rtt4k_us, g_raw.rt1m_gbps);
  }
  // Start the cluster: scheduler and servers as processes.
  const std::string token =
      absl::StrCat("kvbench-", getpid(), "-", absl::ToUnixNanos(absl::Now()));
  const std::string token_file = absl::StrCat("/tmp/kv_bench_token_", getpid());
  { std::ofstream(token_file) << token << "\n"; }
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) env.push_back(*e);
  const std::vector<std::string> common = {
      absl::StrCat("--num_workers=", FLAGS_workers),
      absl::StrCat("--num_servers=", FLAGS_servers),
      "--token_file=" + token_file, "--minloglevel=1"};
  const std::vector<std::string> timing =
      pstrain::cluster::TimingFlags(o.cluster);
  std::vector<std::string> sargv = {
      pstrain::PathBesideThisProgram("scheduler/scheduler"),
      "--scheduler_address=127.0.0.1:0"};
  sargv.insert(sargv.end(), common.begin(), common.end());
  sargv.insert(sargv.end(), timing.begin(), timing.end());
  auto sched = pstrain::launcher::Subprocess::Start(sargv, env);
  if (!sched.ok()) {
    std::cerr << "kv_bench: " << sched.status().message()
              << " (build //scheduler and //server too)\n";
    return 1;
  }
  sched->CloseStdin();
  std::string out, address;
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (address.empty() && absl::Now() < deadline) {
    sched->ReadOutput(&out);
    size_t at = out.find("scheduler address: ");
    size_t end = at == std::string::npos ? at : out.find('\n', at);
    if (end != std::string::npos) address = out.substr(at + 19, end - at - 19);
    absl::SleepFor(absl::Milliseconds(10));
  }
  if (address.empty()) {
    std::cerr << "kv_bench: the scheduler did not start:\n" << out;
    return 1;
  }
  std::vector<pstrain::launcher::Subprocess> servers;
  for (int i = 0; i < FLAGS_servers; ++i) {
    std::vector<std::string> a = {
        pstrain::PathBesideThisProgram("server/server"),
        "--scheduler_address=" + address};
    a.insert(a.end(), common.begin(), common.end());
    a.insert(a.end(), timing.begin(), timing.end());
    a.push_back(absl::StrCat("--shm_bytes=", o.cluster.shm_bytes));
    a.push_back(absl::StrCat("--tcp_data_link=",
                             o.cluster.tcp_data_link ? "true" : "false"));
    a.push_back(absl::StrCat("--two_way_links=",
                             o.cluster.two_way_links ? "true" : "false"));
    a.push_back(absl::StrCat("--io_spin_us=",
                             absl::ToInt64Microseconds(o.cluster.io_spin)));
    a.push_back(absl::StrCat(
        "--max_frame_bytes=",
        pstrain::kvstore::MaxFrameBytesFor(FLAGS_max_message_bytes)));
    a.push_back(absl::StrCat("--send_window_bytes=", FLAGS_send_window_bytes));
    auto s = pstrain::launcher::Subprocess::Start(a, env);
    if (!s.ok()) {
      std::cerr << "kv_bench: " << s.status().message() << "\n";
      return 1;
    }
    s->CloseStdin();
    servers.push_back(std::move(*s));
  }
  o.cluster.scheduler_address = address;
  o.cluster.token = token;
  o.cluster.num_workers = FLAGS_workers;
  o.cluster.num_servers = FLAGS_servers;
  std::vector<std::unique_ptr<KVStore>> kvs(FLAGS_workers);
  std::vector<std::thread> threads;
  for (int w = 0; w < FLAGS_workers; ++w) {
    threads.emplace_back([&, w] {
      auto kv = KVStore::Create(FLAGS_kv_store, o);
      CHECK(kv.ok()) << kv.status();
      kvs[w] = std::move(*kv);
    });
  }
  for (auto& t : threads) t.join();
  unlink(token_file.c_str());  // Every node has read it: they all joined.
  return RunAll(kvs, FLAGS_workers, FLAGS_servers, o.cluster.tcp_data_link);
}
