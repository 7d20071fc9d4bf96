// mnist2rec: MNIST-style IDX files -> RecordIO (.rec + .idx).
//   mnist2rec --images=train-images-idx3-ubyte.gz
//             --labels=train-labels-idx1-ubyte.gz --out=/tmp/fmnist_train
#include <iostream>

#include "gflags/gflags.h"
#include "glog/logging.h"
#include "tools/mnist.h"
#include "util/flags.h"

DEFINE_string(images, "", "IDX3 image file (.gz or plain).");
DEFINE_string(labels, "", "IDX1 label file (.gz or plain).");
DEFINE_string(out, "", "Output prefix: writes OUT.rec and OUT.idx.");
DEFINE_string(encoding, ".png", "Image encoding: .png (lossless) or .jpg.");
DEFINE_int32(quality, 95, "JPEG quality when --encoding=.jpg.");
DEFINE_int64(limit, -1, "Convert only the first N images (< 0: all).");

int main(int argc, char** argv) {
  pstrain::ParseFlagsOrExit(
      {"mnist2rec",
       "mnist2rec --images=F --labels=F --out=PREFIX [--encoding=.png] "
       "[--limit=N]\n"
       "Debian's Fashion-MNIST: /usr/share/datasets/fashion-mnist/",
       {{__FILE__, ""}}},
      {argv, argv + argc});
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  if (FLAGS_images.empty() || FLAGS_labels.empty() || FLAGS_out.empty()) {
    std::cerr << "mnist2rec: --images, --labels and --out are required (see "
                 "--help)\n";
    return 2;
  }
  if (FLAGS_encoding != ".png" && FLAGS_encoding != ".jpg") {
    std::cerr << "mnist2rec: --encoding must be .png or .jpg\n";
    return 2;
  }
  pstrain::tools::MnistOptions o;
  o.encoding = FLAGS_encoding;
  o.quality = FLAGS_quality;
  o.limit = FLAGS_limit;
  auto n =
      pstrain::tools::ConvertMnist(FLAGS_images, FLAGS_labels, FLAGS_out, o);
  if (!n.ok()) {
    std::cerr << "mnist2rec: " << n.status().message() << "\n";
    return 1;
  }
  std::cout << "mnist2rec: wrote " << *n << " records to " << FLAGS_out
            << ".rec and " << FLAGS_out << ".idx\n";
  return 0;
}
