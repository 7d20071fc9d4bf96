// recordio_bench: RecordIO reader throughput against `cat FILE > /dev/null`
// on the same file in the same run, and im2rec packing rate with 1 and N
// threads. Build optimized:
//   bazel run --config=opt //tools:recordio_bench -- --dir=/tmp/rbench
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "opencv2/imgcodecs.hpp"
#include "opencv2/imgproc.hpp"
#include "recordio/image_record.h"
#include "recordio/recordio.h"
#include "tools/im2rec.h"
#include "util/flags.h"

DEFINE_string(dir, "/tmp/pstrain-recordio-bench",
              "Scratch folder (deleted files are regenerated).");
DEFINE_double(rec_gb, 1.0, "Size of the .rec for the reader benchmark, GB.");
DEFINE_int32(repeats, 5, "Timed repetitions; the median is reported.");
DEFINE_int32(images, 200,
             "Generated photographs for the im2rec benchmark (0: skip).");
DEFINE_int32(threads, 2, "im2rec thread count compared against 1.");
DEFINE_bool(keep, false, "Keep the generated files.");

namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double CatSeconds(const std::string& path) {
  const absl::Time t = absl::Now();
  pid_t pid = fork();
  if (pid == 0) {
    FILE* null = freopen("/dev/null", "w", stdout);
    (void)null;
    execlp("cat", "cat", path.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status;
  waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "cat failed";
  return absl::ToDoubleSeconds(absl::Now() - t);
}

double ReaderSeconds(const std::string& path, int64_t* records,
                     uint64_t* checksum) {
  const absl::Time t = absl::Now();
  auto r = pstrain::recordio::RecordReader::Open(path);
  CHECK(r.ok()) << r.status();
  absl::string_view v;
  *records = 0;
  uint64_t sum = 0;
  while (true) {
    auto more = (*r)->Next(&v);
    CHECK(more.ok()) << more.status();
    if (!*more) break;
    // Touch the payload as a consumer would (first and last byte).
    if (!v.empty())
      sum += static_cast<unsigned char>(v.front()) +
             static_cast<unsigned char>(v.back());
    ++*records;
  }
  *checksum = sum;
  return absl::ToDoubleSeconds(absl::Now() - t);
}

// A synthetic "photograph": smooth gradients, blobs and noise, 500x375.
cv::Mat Photo(std::mt19937* rng) {
  cv::Mat img(375, 500, CV_8UC3);
  std::uniform_int_distribution<int> c(0, 255);
  for (int y = 0; y < img.rows; ++y) {
    for (int x = 0; x < img.cols; ++x) {
      img.at<cv::Vec3b>(y, x) =
          cv::Vec3b((x * 255) / img.cols, (y * 255) / img.rows,
                    ((x + y) * 255) / (img.rows + img.cols));
    }
  }
  for (int i = 0; i < 12; ++i) {
    cv::circle(img, cv::Point(c(*rng) * 2, c(*rng) * 3 / 2), 10 + c(*rng) / 4,
               cv::Scalar(c(*rng), c(*rng), c(*rng)), cv::FILLED, cv::LINE_AA);
  }
  cv::Mat noise(img.size(), img.type());
  cv::randn(noise, 0, 12);
  img += noise;
  cv::GaussianBlur(img, img, cv::Size(3, 3), 0);
  return img;
}

}  // namespace

int main(int argc, char** argv) {
  pstrain::ParseFlagsOrExit(
      {"recordio_bench",
       "recordio_bench [--dir=D] [--rec_gb=1] [--images=200] [--threads=2]\n"
       "The RecordIO reader's GB/s against cat, and im2rec's images/s.",
       {{__FILE__, ""}}},
      {argv, argv + argc});
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  mkdir(FLAGS_dir.c_str(), 0755);

  // 1. Reader vs cat.
  const std::string rec = FLAGS_dir + "/big.rec";
  struct stat st;
  const int64_t want = static_cast<int64_t>(FLAGS_rec_gb * 1e9);
  if (stat(rec.c_str(), &st) != 0 || st.st_size < want) {
    std::cout << "generating " << rec << " (" << FLAGS_rec_gb
              << " GB of 100-200 KB records)\n";
    auto w = pstrain::recordio::RecordWriter::Create(rec);
    CHECK(w.ok()) << w.status();
    std::mt19937 rng(1);
    std::string payload;
    while ((*w)->Tell() < want) {
      payload.resize(100000 + rng() % 100000);
      for (size_t i = 0; i < payload.size(); i += 64)
        payload[i] = static_cast<char>(rng());
      CHECK((*w)->Write(payload).ok());
    }
    CHECK((*w)->Close().ok());
    stat(rec.c_str(), &st);
  }
  const double gb = st.st_size / 1e9;
  int64_t records = 0;
  uint64_t checksum = 0;
  CatSeconds(rec);  // Warm the page cache.
  ReaderSeconds(rec, &records, &checksum);
  std::vector<double> cat_t, reader_t;
  for (int i = 0; i < FLAGS_repeats; ++i) {
    cat_t.push_back(CatSeconds(rec));
    reader_t.push_back(ReaderSeconds(rec, &records, &checksum));
  }
  const double cat_gbps = gb / Median(cat_t),
               reader_gbps = gb / Median(reader_t);
  std::cout << absl::StrFormat(
      "reader: %.2f GB, %d records; median of %d: cat %.2f GB/s, RecordReader "
      "%.2f GB/s, "
      "ratio %.2f (checksum %d)\n",
      gb, records, FLAGS_repeats, cat_gbps, reader_gbps, reader_gbps / cat_gbps,
      checksum);

  // 2. im2rec packing rate.
  if (FLAGS_images > 0) {
    const std::string root = FLAGS_dir + "/photos";
    mkdir(root.c_str(), 0755);
    std::ofstream lst(FLAGS_dir + "/photos.lst");
    std::mt19937 rng(2);
    for (int i = 0; i < FLAGS_images; ++i) {
      const std::string name = absl::StrCat("p", i, ".jpg");
      if (stat((root + "/" + name).c_str(), &st) != 0) {
        CHECK(cv::imwrite(root + "/" + name, Photo(&rng),
                          {cv::IMWRITE_JPEG_QUALITY, 95}));
      }
      lst << i << "\t" << (i % 10) << ".000000\t" << name << "\n";
    }
    lst.close();
    double single = 0;
    for (int threads : {1, FLAGS_threads}) {
      pstrain::tools::PackOptions o;
      o.root = root;
      o.resize = 480;
      o.quality = 90;
      o.num_thread = threads;
      o.progress_seconds = 0;
      std::vector<double> rates;
      for (int rep = 0; rep < 3; ++rep) {
        std::ostringstream log;
        auto s = pstrain::tools::PackList(FLAGS_dir + "/photos.lst",
                                          FLAGS_dir + "/photos.rec",
                                          FLAGS_dir + "/photos.idx", o, &log);
        CHECK(s.ok()) << s.status();
        rates.push_back(s->packed / s->seconds);
      }
      const double rate = Median(rates);
      if (threads == 1) single = rate;
      std::cout << absl::StrFormat(
          "im2rec: %d photos 500x375 -> --resize 480 --quality 90, %d "
          "thread(s): %.1f "
          "images/s (median of 3)%s\n",
          FLAGS_images, threads, rate,
          threads == 1 ? ""
                       : absl::StrFormat(", speedup %.2fx", rate / single));
    }
  }
  if (!FLAGS_keep) {
    unlink(rec.c_str());
  }
  return 0;
}
