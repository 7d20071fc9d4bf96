// kv_bench: KVStore throughput and latency. Starts a real cluster (the
// scheduler and server binaries beside this tool, workers as threads here)
// or joins one as a single worker (--scheduler_address). Prints per value
// size GB/s per worker and latency percentiles; --json prints one object
// per measurement. Build optimized:
//   bazel build --config=opt //tools:kv_bench //scheduler //server
//   bazel-bin/tools/kv_bench --workers=1 --servers=1 --value_bytes=4096,1048576,67108864
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <numeric>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "kvstore/kvstore.h"
#include "launcher/subprocess.h"
#include "transport/cluster.h"
#include "util/token.h"

DEFINE_int32(workers, 1, "Workers (threads in this process) when starting a cluster.");
DEFINE_int32(servers, 1, "Servers when starting a cluster.");
DEFINE_string(value_bytes, "4096,65536,1048576,16777216,67108864,268435456",
              "Value sizes in bytes, comma-separated.");
DEFINE_string(mode, "push,pull,pushpull", "Operations to measure: push, pull, pushpull.");
DEFINE_string(kv_store, "dist_sync", "dist_sync or dist_async.");
DEFINE_int32(iters, 0, "Operations per worker per measurement; 0: by size (about 2 GB, 20 to 2000).");
DEFINE_bool(json, false, "Print one JSON object per measurement.");
DEFINE_bool(raw_tcp, true, "Also measure raw TCP over loopback in the same run.");
DEFINE_string(scheduler_address, "", "Join this job as one worker instead of starting a cluster.");
DEFINE_int32(num_workers, 1, "Join mode: workers in the job.");
DEFINE_int32(num_servers, 1, "Join mode: servers in the job.");
DEFINE_string(host, "127.0.0.1", "Join mode: address to bind and advertise.");
DEFINE_string(token_file, "", "Join mode: file with the job token.");
DEFINE_double(heartbeat_timeout_s, 10, "Heartbeat timeout of the nodes.");
DEFINE_int64(shm_bytes, pstrain::transport::kDefaultShmBytes,
             "Shared-memory arena of every node for tensors to and from nodes on the same host (one copy "
             "instead of two kernel copies); 0: everything over TCP. Either side's 0 turns it "
             "off for the pair.");
DEFINE_int64(max_message_bytes, 4 << 20,
             "Largest data message: a server's slice of a key travels in chunks of this size.");

namespace {

using pstrain::kvstore::KVStore;

std::string Sibling(const std::string& rel) {
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  std::string dir(self, n > 0 ? static_cast<size_t>(n) : 0);
  dir = dir.substr(0, dir.rfind('/'));
  dir = dir.substr(0, dir.rfind('/'));
  return dir + "/" + rel;
}

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
Result Measure(KVStore* kv, int64_t key, int64_t floats, const std::string& mode, int iters) {
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

void Report(int workers, int servers, int64_t bytes, const std::string& mode,
            const std::vector<Result>& results) {
  double gbps = 0;
  std::vector<double> lat;
  for (const auto& r : results) {
    gbps += bytes * static_cast<double>(r.latencies_us.size()) / r.seconds / 1e9;
    lat.insert(lat.end(), r.latencies_us.begin(), r.latencies_us.end());
  }
  gbps /= results.size();  // Per worker.
  const double p50 = Percentile(lat, 0.5), p99 = Percentile(lat, 0.99);
  if (FLAGS_json) {
    std::cout << absl::StrFormat(
                     "{\"workers\": %d, \"servers\": %d, \"value_bytes\": %d, \"mode\": \"%s\", "
                     "\"kv_store\": \"%s\", \"iters\": %d, \"gbps\": %.3f, \"p50_us\": %.1f, "
                     "\"p99_us\": %.1f}",
                     workers, servers, bytes, mode, FLAGS_kv_store, lat.size() / results.size(),
                     gbps, p50, p99)
              << std::endl;
  } else {
    std::cout << absl::StrFormat("%-9s %12d B  %dw x %ds  %8.3f GB/s per worker  p50 %9.1f us  p99 %9.1f us\n",
                                 mode, bytes, workers, servers, gbps, p50, p99)
              << std::flush;
  }
}

int RunAll(std::vector<std::unique_ptr<KVStore>>& kvs, int workers, int servers) {
  std::vector<int64_t> sizes;
  for (absl::string_view s : absl::StrSplit(FLAGS_value_bytes, ',', absl::SkipEmpty())) {
    int64_t b;
    if (!absl::SimpleAtoi(s, &b) || b < 4) {
      std::cerr << "kv_bench: bad --value_bytes entry '" << s << "'\n";
      return 2;
    }
    sizes.push_back(b);
  }
  std::vector<std::string> modes = absl::StrSplit(FLAGS_mode, ',', absl::SkipEmpty());
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
  for (size_t i = 0; i < sizes.size(); ++i) {
    const int iters = FLAGS_iters > 0
                          ? FLAGS_iters
                          : static_cast<int>(std::clamp<int64_t>((int64_t{2} << 30) / sizes[i], 20, 2000));
    for (const auto& mode : modes) {
      std::vector<Result> results(kvs.size());
      for (size_t w = 0; w < kvs.size(); ++w) {
        threads.emplace_back([&, w] {
          Measure(kvs[w].get(), keys[i], sizes[i] / 4, mode, std::min(iters, 3));  // Warm-up.
          CHECK(kvs[w]->Barrier(absl::Now() + absl::Seconds(300)).ok());
          results[w] = Measure(kvs[w].get(), keys[i], sizes[i] / 4, mode, iters);
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
  if (!FLAGS_json) {
    std::cout << absl::StrFormat(
        "workers' frames through shared memory: %d sent, %d received; %d over TCP because "
        "the arena was full; %d malformed messages dropped\n",
        total.shm_frames_sent, total.shm_frames_received, total.shm_frames_inline,
        total.dropped_malformed);
  }
  for (auto& kv : kvs) CHECK(kv->Finish().ok());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage(
      "kv_bench [--workers=N --servers=S] [--value_bytes=4096,1048576] [--mode=push,pull,pushpull]\n"
      "         [--kv_store=dist_sync|dist_async] [--iters=N] [--json]\n"
      "         or join a job: --scheduler_address=H:P --num_workers --num_servers --token_file");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
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
  pstrain::kvstore::KVStoreOptions o;
  o.cluster.heartbeat_timeout = absl::Seconds(FLAGS_heartbeat_timeout_s);
  o.cluster.shm_bytes = FLAGS_shm_bytes;
  o.max_message_bytes = FLAGS_max_message_bytes;
  if (!FLAGS_scheduler_address.empty()) {
    o.cluster.scheduler_address = FLAGS_scheduler_address;
    o.cluster.host = FLAGS_host;
    o.cluster.num_workers = FLAGS_num_workers;
    o.cluster.num_servers = FLAGS_num_servers;
    auto token = pstrain::ReadTokenFile(FLAGS_token_file);
    if (!token.ok()) {
      std::cerr << "kv_bench: " << token.status().message() << "\n";
      return 2;
    }
    o.cluster.token = *token;
    auto kv = KVStore::Create(FLAGS_kv_store, o);
    if (!kv.ok()) {
      std::cerr << "kv_bench: " << kv.status().message() << "\n";
      return 1;
    }
    std::vector<std::unique_ptr<KVStore>> kvs;
    kvs.push_back(std::move(*kv));
    return RunAll(kvs, FLAGS_num_workers, FLAGS_num_servers);
  }

  if (FLAGS_raw_tcp) {
    std::cout << absl::StrFormat("raw TCP over loopback (2 GiB in 1 MiB writes): %.2f GB/s\n",
                                 RawTcpGbps());
  }
  // Start the cluster: scheduler and servers as processes.
  const std::string token = absl::StrCat("kvbench-", getpid(), "-", absl::ToUnixNanos(absl::Now()));
  const std::string token_file = absl::StrCat("/tmp/kv_bench_token_", getpid());
  {
    std::ofstream(token_file) << token << "\n";
  }
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) env.push_back(*e);
  const std::vector<std::string> common = {
      absl::StrCat("--num_workers=", FLAGS_workers), absl::StrCat("--num_servers=", FLAGS_servers),
      "--token_file=" + token_file, "--minloglevel=1"};
  std::vector<std::string> sargv = {Sibling("scheduler/scheduler"), "--scheduler_address=127.0.0.1:0"};
  sargv.insert(sargv.end(), common.begin(), common.end());
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
    std::vector<std::string> a = {Sibling("server/server"), "--scheduler_address=" + address};
    a.insert(a.end(), common.begin(), common.end());
    a.push_back(absl::StrCat("--shm_bytes=", FLAGS_shm_bytes));
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
  return RunAll(kvs, FLAGS_workers, FLAGS_servers);
}
