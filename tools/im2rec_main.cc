// im2rec: makes image lists and packs images into RecordIO, as MXNet's
// tools/im2rec.py (same arguments, dashed or underscored).
//   im2rec --list [--recursive] PREFIX ROOT     -> PREFIX*.lst
//   im2rec [pack options] PREFIX ROOT            -> PREFIX*.rec + .idx
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "tools/im2rec.h"
#include "util/flags.h"

DEFINE_bool(list, false,
            "Make .lst files from the images under ROOT instead of packing.");
DEFINE_bool(recursive, false,
            "--list: walk sub-folders; each folder with images is a label "
            "(sorted order).");
DEFINE_string(exts, ".jpeg,.jpg,.png",
              "--list: accepted file suffixes, comma-separated (also: --exts "
              ".jpg .png).");
DEFINE_int32(chunks, 1,
             "--list: split the list into this many chunks (PREFIX_<i>.lst).");
DEFINE_double(train_ratio, 1.0,
              "--list: fraction of each chunk for PREFIX_train.lst.");
DEFINE_double(test_ratio, 0.0,
              "--list: fraction of each chunk for PREFIX_test.lst.");
DEFINE_bool(shuffle, true,
            "--list: shuffle as im2rec.py does (Python's random.seed(100)); "
            "--no-shuffle keeps walk order.");
DEFINE_bool(pass_through, false,
            "Pack the files' bytes unchanged (no decode/resize/re-encode).");
DEFINE_int32(resize, 0,
             "Resize the shorter edge to this many pixels; 0 keeps the size.");
DEFINE_bool(center_crop, false, "Crop the center square before resizing.");
DEFINE_int32(quality, 95,
             "JPEG quality (1-100), or PNG compression level (0-9).");
DEFINE_int32(num_thread, 1,
             "Decode/encode threads; records stay in .lst order.");
DEFINE_int32(
    color, 1,
    "Load images as: 1 color, 0 grayscale, -1 unchanged (with alpha).");
DEFINE_string(encoding, ".jpg", "Encoding of packed images: .jpg or .png.");
DEFINE_bool(pack_label, false,
            "Pack every label of multi-label .lst lines into the record.");
DEFINE_double(progress_seconds, 5,
              "Seconds between progress lines; 0 disables.");

int main(int argc, char** argv) {
  const std::vector<std::string> rest = pstrain::ParseFlagsOrExit(
      {"im2rec",
       "im2rec [options] PREFIX ROOT\n"
       "  --list: write PREFIX*.lst for the images under ROOT;\n"
       "  otherwise: pack every PREFIX*.lst into .rec + .idx (images read "
       "from ROOT).",
       {{__FILE__, ""}},
       /*takes_arguments=*/true},
      pstrain::tools::NormalizeIm2recArgs(
          std::vector<std::string>(argv, argv + argc)));
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  if (rest.size() != 3) {
    std::cerr << "im2rec: need PREFIX and ROOT (see --help)\n";
    return 2;
  }
  const std::string prefix = rest[1], root = rest[2];
  if (FLAGS_list) {
    pstrain::tools::ListOptions o;
    o.prefix = prefix;
    o.root = root;
    o.recursive = FLAGS_recursive;
    o.exts = absl::StrSplit(FLAGS_exts, ',', absl::SkipEmpty());
    o.chunks = FLAGS_chunks;
    o.train_ratio = FLAGS_train_ratio;
    o.test_ratio = FLAGS_test_ratio;
    o.shuffle = FLAGS_shuffle;
    auto written = pstrain::tools::MakeLists(o, &std::cout);
    if (!written.ok()) {
      std::cerr << "im2rec: " << written.status().message() << "\n";
      return 1;
    }
    for (const auto& w : *written) std::cout << "im2rec: wrote " << w << "\n";
    return 0;
  }
  if (FLAGS_encoding != ".jpg" && FLAGS_encoding != ".png") {
    std::cerr << "im2rec: --encoding must be .jpg or .png, not "
              << FLAGS_encoding << "\n";
    return 2;
  }
  pstrain::tools::PackOptions o;
  o.root = root;
  o.color = FLAGS_color;
  o.resize = FLAGS_resize;
  o.center_crop = FLAGS_center_crop;
  o.quality = FLAGS_quality;
  o.encoding = FLAGS_encoding;
  o.pass_through = FLAGS_pass_through;
  o.pack_label = FLAGS_pack_label;
  o.num_thread = FLAGS_num_thread;
  o.progress_seconds = FLAGS_progress_seconds;
  auto stats = pstrain::tools::PackAll(prefix, o, &std::cout);
  if (!stats.ok()) {
    std::cerr << "im2rec: " << stats.status().message() << "\n";
    return 1;
  }
  return 0;
}
