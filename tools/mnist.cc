#include "tools/mnist.h"

#include <zlib.h>

#include <cerrno>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "opencv2/core.hpp"
#include "opencv2/imgcodecs.hpp"
#include "recordio/image_record.h"
#include "recordio/index.h"
#include "recordio/recordio.h"
#include "util/status.h"

namespace pstrain {
namespace tools {
namespace {

// Reads a whole (possibly gzip-compressed) file; gzread reads plain files
// as they are.
absl::StatusOr<std::string> ReadMaybeGzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) return ErrnoToStatus(errno, absl::StrCat("open ", path));
  std::string out;
  char buf[1 << 16];
  while (true) {
    int n = gzread(f, buf, sizeof(buf));
    if (n < 0) {
      int errnum = 0;
      std::string msg = gzerror(f, &errnum);
      gzclose(f);
      return absl::DataLossError(absl::StrCat(path, ": ", msg));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > (size_t{1} << 32)) {
      gzclose(f);
      return absl::DataLossError(absl::StrCat(path, ": larger than 4 GiB"));
    }
  }
  gzclose(f);
  return out;
}

uint32_t BigEndian(const std::string& s, size_t at) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + at;
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) |
         (uint32_t{p[2]} << 8) | p[3];
}

}  // namespace

absl::StatusOr<IdxImages> ReadIdxImages(const std::string& path) {
  PSTRAIN_ASSIGN_OR_RETURN(std::string data, ReadMaybeGzip(path));
  if (data.size() < 16 || BigEndian(data, 0) != 0x00000803) {
    return absl::DataLossError(
        absl::StrCat(path, ": not an IDX3 ubyte image file"));
  }
  IdxImages out;
  out.count = BigEndian(data, 4);
  out.rows = static_cast<int>(BigEndian(data, 8));
  out.cols = static_cast<int>(BigEndian(data, 12));
  const uint64_t need =
      uint64_t{16} + uint64_t(out.count) * out.rows * out.cols;
  if (out.rows <= 0 || out.cols <= 0 || out.rows > 65536 || out.cols > 65536 ||
      data.size() < need) {
    return absl::DataLossError(absl::StrCat(
        path, ": header says ", out.count, " images of ", out.rows, "x",
        out.cols, " but the file has ", data.size(), " bytes"));
  }
  out.pixels.assign(data.begin() + 16,
                    data.begin() + static_cast<int64_t>(need));
  return out;
}

absl::StatusOr<std::vector<uint8_t>> ReadIdxLabels(const std::string& path) {
  PSTRAIN_ASSIGN_OR_RETURN(std::string data, ReadMaybeGzip(path));
  if (data.size() < 8 || BigEndian(data, 0) != 0x00000801) {
    return absl::DataLossError(
        absl::StrCat(path, ": not an IDX1 ubyte label file"));
  }
  const uint64_t n = BigEndian(data, 4);
  if (data.size() < 8 + n) {
    return absl::DataLossError(absl::StrCat(path, ": header says ", n,
                                            " labels but the file has ",
                                            data.size(), " bytes"));
  }
  return std::vector<uint8_t>(data.begin() + 8,
                              data.begin() + 8 + static_cast<int64_t>(n));
}

absl::StatusOr<int64_t> ConvertMnist(const std::string& images_path,
                                     const std::string& labels_path,
                                     const std::string& prefix,
                                     const MnistOptions& o) {
  PSTRAIN_ASSIGN_OR_RETURN(IdxImages images, ReadIdxImages(images_path));
  PSTRAIN_ASSIGN_OR_RETURN(std::vector<uint8_t> labels,
                           ReadIdxLabels(labels_path));
  if (static_cast<int64_t>(labels.size()) != images.count) {
    return absl::InvalidArgumentError(
        absl::StrCat(images_path, " has ", images.count, " images but ",
                     labels_path, " has ", labels.size(), " labels"));
  }
  int64_t n = images.count;
  if (o.limit >= 0 && o.limit < n) n = o.limit;
  PSTRAIN_ASSIGN_OR_RETURN(auto writer,
                           recordio::RecordWriter::Create(prefix + ".rec"));
  std::vector<recordio::IndexEntry> index;
  std::vector<int> params;
  if (o.encoding == ".jpg") params = {cv::IMWRITE_JPEG_QUALITY, o.quality};
  const size_t plane = static_cast<size_t>(images.rows) * images.cols;
  std::vector<uchar> buf;
  for (int64_t i = 0; i < n; ++i) {
    cv::Mat img(images.rows, images.cols, CV_8UC1,
                images.pixels.data() + i * plane);
    buf.clear();
    if (!cv::imencode(o.encoding, img, buf, params)) {
      return absl::InternalError(
          absl::StrCat("cannot encode image ", i, " as ", o.encoding));
    }
    index.push_back({i, writer->Tell()});
    PSTRAIN_RETURN_IF_ERROR(writer->Write(recordio::PackImageRecord(
        static_cast<float>(labels[i]), {}, static_cast<uint64_t>(i), 0,
        absl::string_view(reinterpret_cast<const char*>(buf.data()),
                          buf.size()))));
  }
  PSTRAIN_RETURN_IF_ERROR(writer->Close());
  PSTRAIN_RETURN_IF_ERROR(recordio::WriteIndexFile(prefix + ".idx", index));
  return n;
}

}  // namespace tools
}  // namespace pstrain
