// rectool: inspect RecordIO image datasets. See tools/rectool.h.
#include <iostream>
#include <string>
#include <vector>

#include "gflags/gflags.h"
#include "tools/rectool.h"
#include "util/flags.h"

DEFINE_bool(json, false, "headers: one JSON object per record.");

int main(int argc, char** argv) {
  const std::vector<std::string> rest = pstrain::ParseFlagsOrExit(
      {"rectool",
       "rectool count F.rec | headers [--json] F.rec | verify F.rec [F.idx] | "
       "extract F.rec INDEX OUT\n"
       "  count    number of records\n"
       "  headers  index, byte offset, flag, labels, id, id2, image bytes per "
       "record\n"
       "  verify   every record reads and its image decodes; with F.idx, every "
       "index\n"
       "           offset is the head of the record whose id is the key\n"
       "  extract  write the image bytes of record INDEX (0-based) to OUT\n"
       "On a corrupt file, prints the first problem (file, byte offset, "
       "record\n"
       "index) and exits 1.",
       {{__FILE__, ""}},
       /*takes_arguments=*/true},
      {argv, argv + argc});
  std::vector<std::string> args(rest.begin() + 1, rest.end());
  return pstrain::tools::RunRectool(args, FLAGS_json, std::cout, std::cerr);
}
