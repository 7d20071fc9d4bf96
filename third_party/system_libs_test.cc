// Proves every system-library wrapper in third_party/ compiles, links and
// works at run time: one real call into each library.
#include <cstring>
#include <dnnl.hpp>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "absl/strings/str_cat.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "gtest/gtest.h"
#include "opencv2/core.hpp"
#include "opencv2/imgcodecs.hpp"
#include "opencv2/imgproc.hpp"
#include "zlib.h"

DEFINE_int32(system_libs_test_flag, 7, "A flag to parse.");

namespace {

TEST(SystemLibsTest, ZeroMqMovesAMultipartMessageOverTcpLoopback) {
  zmq::context_t ctx(1);
  zmq::socket_t router(ctx, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.bind("tcp://127.0.0.1:*");  // Ephemeral port.
  const std::string endpoint = router.get(zmq::sockopt::last_endpoint);
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.connect(endpoint);

  std::vector<float> tensor(1024, 1.5f);
  ASSERT_TRUE(dealer.send(zmq::str_buffer("header"), zmq::send_flags::sndmore));
  ASSERT_TRUE(dealer.send(zmq::buffer(tensor), zmq::send_flags::none));

  router.set(zmq::sockopt::rcvtimeo, 5000);  // Never wait forever.
  zmq::message_t identity, header, data;
  ASSERT_TRUE(router.recv(identity));
  ASSERT_TRUE(router.recv(header));
  ASSERT_TRUE(router.recv(data));
  EXPECT_EQ(header.to_string(), "header");
  ASSERT_EQ(data.size(), tensor.size() * sizeof(float));
  EXPECT_EQ(std::memcmp(data.data(), tensor.data(), data.size()), 0);
}

TEST(SystemLibsTest, OpenCvEncodesAndDecodesJpegAndPng) {
  cv::Mat img(48, 64, CV_8UC3);
  cv::randu(img, 0, 255);
  cv::GaussianBlur(img, img, cv::Size(5, 5), 0);
  for (const std::string ext : {".jpg", ".png"}) {
    std::vector<uchar> buf;
    ASSERT_TRUE(cv::imencode(ext, img, buf)) << ext;
    cv::Mat back = cv::imdecode(buf, cv::IMREAD_COLOR);
    ASSERT_EQ(back.rows, 48) << ext;
    ASSERT_EQ(back.cols, 64) << ext;
    if (ext == ".png") {
      EXPECT_EQ(cv::norm(back, img, cv::NORM_INF), 0);  // Lossless.
    }
  }
}

TEST(SystemLibsTest, OneDnnRunsAReluPrimitive) {
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream strm(eng);
  dnnl::memory::desc md({8}, dnnl::memory::data_type::f32,
                        dnnl::memory::format_tag::a);
  std::vector<float> src = {-3, -2, -1, 0, 1, 2, 3, 4}, dst(8, 99.0f);
  dnnl::memory src_m(md, eng, src.data()), dst_m(md, eng, dst.data());
  dnnl::eltwise_forward::primitive_desc pd(
      dnnl::eltwise_forward::desc(dnnl::prop_kind::forward_inference,
                                  dnnl::algorithm::eltwise_relu, md, 0.0f),
      eng);
  dnnl::eltwise_forward(pd).execute(
      strm, {{DNNL_ARG_SRC, src_m}, {DNNL_ARG_DST, dst_m}});
  strm.wait();
  EXPECT_EQ(dst, (std::vector<float>{0, 0, 0, 0, 1, 2, 3, 4}));
}

TEST(SystemLibsTest, GflagsParsesAndGlogLogs) {
  std::string arg0 = "test", arg1 = "--system_libs_test_flag=42";
  char* argv_storage[] = {arg0.data(), arg1.data()};
  int argc = 2;
  char** argv = argv_storage;
  gflags::ParseCommandLineFlags(&argc, &argv, /*remove_flags=*/true);
  EXPECT_EQ(FLAGS_system_libs_test_flag, 42);
  LOG(INFO) << absl::StrCat("glog works; flag = ", FLAGS_system_libs_test_flag);
}

TEST(SystemLibsTest, ZlibRoundTrips) {
  const std::string text(1000, 'x');
  uLongf len = compressBound(text.size());
  std::vector<Bytef> packed(len);
  ASSERT_EQ(compress(packed.data(), &len,
                     reinterpret_cast<const Bytef*>(text.data()), text.size()),
            Z_OK);
  std::string back(text.size(), '\0');
  uLongf back_len = back.size();
  ASSERT_EQ(uncompress(reinterpret_cast<Bytef*>(back.data()), &back_len,
                       packed.data(), len),
            Z_OK);
  EXPECT_EQ(back, text);
}

}  // namespace
