// Test helpers for the worker binary end to end: real Fashion-MNIST
// records (Debian's dataset-fashion-mnist through tools/mnist2rec), record
// files rearranged by the test, jobs started with the real `launch`,
// scheduler and server binaries, and checkpoints compared array by array.
#ifndef PSTRAIN_TESTS_WORKER_UTIL_H_
#define PSTRAIN_TESTS_WORKER_UTIL_H_

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "checkpoint/manifest.h"
#include "checkpoint/ndarray_list.h"
#include "gtest/gtest.h"
#include "recordio/recordio.h"
#include "tests/cluster_util.h"

namespace pstrain {
namespace testing_util {

// The file's bytes, or "" when it cannot be read.
inline std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline std::string TestTmp() { return std::getenv("TEST_TMPDIR"); }

// Runs `command` with sh and OMP_NUM_THREADS=1 (on a busy 2-core machine
// OpenMP's spinning threads make the worker 5-10x slower), stdout and
// stderr into *out; returns its exit code.
inline int Shell(const std::string& command, std::string* out) {
  const std::string log = TestTmp() + "/shell.log";
  const int rc = std::system(
      absl::StrCat("OMP_NUM_THREADS=1 ", command, " > ", log, " 2>&1").c_str());
  std::ifstream in(log);
  out->assign(std::istreambuf_iterator<char>(in), {});
  return WEXITSTATUS(rc);
}

inline constexpr char kFashionDir[] = "/usr/share/datasets/fashion-mnist/";

inline bool HaveFashionMnist() {
  return static_cast<bool>(
      std::ifstream(absl::StrCat(kFashionDir, "train-images-idx3-ubyte.gz")));
}

// A fixture for jobs on Fashion-MNIST: skips, saying so, without Debian's
// dataset-fashion-mnist, and gives every test a folder of its own, tmp_
// (its checkpoints and data must not meet another test's).
class FashionMnistJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveFashionMnist()) {
      GTEST_SKIP()
          << "Debian's dataset-fashion-mnist is not installed; skipped";
    }
    tmp_ = absl::StrCat(
        TestTmp(), "/",
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_TRUE(checkpoint::MakeDirs(tmp_).ok());
  }

  std::string tmp_;
};

// Packs the first `limit` images of Fashion-MNIST's `set` ("train" or
// "t10k") into `prefix`.rec and `prefix`.idx with tools/mnist2rec; returns
// its output on failure, "" on success.
inline std::string PackFashion(const std::string& set, int limit,
                               const std::string& prefix) {
  std::string out;
  const int rc = Shell(
      absl::StrCat(Runfile("tools/mnist2rec"), " --images=", kFashionDir, set,
                   "-images-idx3-ubyte.gz --labels=", kFashionDir, set,
                   "-labels-idx1-ubyte.gz --limit=", limit, " --out=", prefix),
      &out);
  return rc == 0 ? "" : absl::StrCat("mnist2rec failed (", rc, "): ", out);
}

// Every record payload of a .rec file, in order (test failure on error).
inline std::vector<std::string> ReadPayloads(const std::string& path) {
  std::vector<std::string> out;
  auto reader = recordio::RecordReader::Open(path);
  EXPECT_TRUE(reader.ok()) << reader.status();
  if (!reader.ok()) return out;
  absl::string_view v;
  while (true) {
    auto more = (*reader)->Next(&v);
    EXPECT_TRUE(more.ok()) << more.status();
    if (!more.ok() || !*more) break;
    out.emplace_back(v);
  }
  return out;
}

// Writes `payloads` as a .rec file (no .idx: readers split it by bytes).
inline void WritePayloads(const std::string& path,
                          const std::vector<std::string>& payloads) {
  auto writer = recordio::RecordWriter::Create(path);
  ASSERT_TRUE(writer.ok()) << writer.status();
  for (const auto& p : payloads) ASSERT_TRUE((*writer)->Write(p).ok());
  ASSERT_TRUE((*writer)->Close().ok());
}

// The records of `workers` consecutive parts (worker w reads part w, as
// with an .idx and part_index = rank) reordered so that batch j of
// `workers * batch` holds every worker's batch j in rank order: one local
// run on the result sees exactly the samples a dist_sync step sums.
inline std::vector<std::string> InterleaveBatches(
    const std::vector<std::string>& all, int workers, int batch, int steps) {
  const size_t part = static_cast<size_t>(batch) * steps;
  std::vector<std::string> out;
  for (int j = 0; j < steps; ++j) {
    for (int w = 0; w < workers; ++w) {
      for (int i = 0; i < batch; ++i)
        out.push_back(all[w * part + j * batch + i]);
    }
  }
  return out;
}

using Params = std::map<std::string, std::vector<float>>;

// A checkpoint's arrays by name (empty, with a test failure, on error).
inline Params ReadParams(const std::string& path) {
  Params out;
  auto arrays = checkpoint::ReadNDArrayListFile(path);
  EXPECT_TRUE(arrays.ok()) << path << ": " << arrays.status();
  if (!arrays.ok()) return out;
  for (const auto& a : *arrays) out[a.name] = a.ToFloats().value();
  return out;
}

// The largest, over the arrays of `a`, of max|a - b| / max|a|: a relative
// difference that tiny weights (biases near 0) do not inflate. Infinity
// when the names or sizes differ.
inline double MaxRelativeDiff(const Params& a, const Params& b) {
  if (a.empty() || a.size() != b.size()) return INFINITY;
  double worst = 0;
  for (const auto& [name, x] : a) {
    auto it = b.find(name);
    if (it == b.end() || it->second.size() != x.size()) return INFINITY;
    double diff = 0, scale = 1e-30;
    for (size_t i = 0; i < x.size(); ++i) {
      diff =
          std::max(diff, static_cast<double>(std::fabs(x[i] - it->second[i])));
      scale = std::max(scale, static_cast<double>(std::fabs(x[i])));
    }
    worst = std::max(worst, diff / scale);
  }
  return worst;
}

// The command line of a job through the real launcher (local mode):
// `servers` servers and `workers` copies of the worker binary with
// `worker_flags`, each worker with OMP_NUM_THREADS=1, and `launch_flags`
// for launch itself.
inline std::vector<std::string> LaunchArgv(
    int workers, int servers, const std::vector<std::string>& worker_flags,
    const std::vector<std::string>& launch_flags = {}) {
  std::vector<std::string> argv = {Runfile("tools/launch"),
                                   "-n",
                                   absl::StrCat(workers),
                                   "-s",
                                   absl::StrCat(servers),
                                   "--launcher",
                                   "local",
                                   "--scheduler_binary",
                                   Runfile("scheduler/scheduler"),
                                   "--server_binary",
                                   Runfile("server/server"),
                                   "--env",
                                   "OMP_NUM_THREADS=1",
                                   "--stop_grace_s",
                                   "3"};
  argv.insert(argv.end(), launch_flags.begin(), launch_flags.end());
  argv.push_back("--");
  argv.push_back(Runfile("worker/worker"));
  argv.insert(argv.end(), worker_flags.begin(), worker_flags.end());
  return argv;
}

// Runs LaunchArgv's job to its end. Returns the prefixed output of every
// process; *ok is true when launch exited 0 within `limit`.
inline std::string LaunchWorkers(
    int workers, int servers, const std::vector<std::string>& worker_flags,
    absl::Duration limit, bool* ok,
    const std::vector<std::string>& launch_flags = {}) {
  const std::vector<std::string> argv =
      LaunchArgv(workers, servers, worker_flags, launch_flags);
  *ok = false;
  auto p = launcher::Subprocess::Start(argv, Env());
  EXPECT_TRUE(p.ok()) << p.status();
  if (!p.ok()) return "";
  p->CloseStdin();
  bool exited = false;
  std::string out = RunToEnd(&*p, limit, &exited);
  EXPECT_TRUE(exited) << "the job did not finish in " << limit << ":\n" << out;
  *ok = exited && p->succeeded();
  return out;
}

// The lines of `out` that contain `needle`.
inline std::vector<std::string> LinesWith(const std::string& out,
                                          const std::string& needle) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < out.size()) {
    size_t end = out.find('\n', start);
    if (end == std::string::npos) end = out.size();
    std::string line = out.substr(start, end - start);
    if (line.find(needle) != std::string::npos) lines.push_back(line);
    start = end + 1;
  }
  return lines;
}

}  // namespace testing_util
}  // namespace pstrain

#endif  // PSTRAIN_TESTS_WORKER_UTIL_H_
