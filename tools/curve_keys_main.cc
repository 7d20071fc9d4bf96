// curve_keys: makes per-node CURVE keys for a job (--curve_keys_dir).
//   curve_keys DIR NAME...
// writes DIR/server.key, DIR/NAME.key and DIR/clients/NAME.pub for every
// NAME (secret files mode 600). Hand each node a folder with server.key,
// its own NAME.key renamed node.key, and clients/; see transport/curve.h.
#include <iostream>
#include <string>
#include <vector>

#include "transport/curve.h"

int main(int argc, char** argv) {
  if (argc < 3 || std::string(argv[1]) == "--help" ||
      std::string(argv[1]) == "-h") {
    std::cerr
        << "usage: curve_keys DIR NAME...\n"
           "Writes DIR/server.key (the job's server key), DIR/NAME.key and\n"
           "DIR/clients/NAME.pub for every NAME (a node: its host, say). Each "
           "node's\n"
           "--curve_keys_dir holds server.key, its own NAME.key as node.key, "
           "and\n"
           "clients/ (removing a NAME.pub there locks that node out).\n";
    return argc < 3 ? 2 : 0;
  }
  const std::vector<std::string> names(argv + 2, argv + argc);
  const absl::Status s = pstrain::transport::WriteCurveKeysDir(argv[1], names);
  if (!s.ok()) {
    std::cerr << "curve_keys: " << s.message() << "\n";
    return 1;
  }
  std::cout << "curve_keys: wrote " << argv[1] << "/server.key and "
            << names.size() << " node key(s) with their clients/*.pub\n";
  return 0;
}
