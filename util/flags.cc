#include "util/flags.h"

#include "gflags/gflags.h"

namespace pstrain {

std::vector<std::string> ParseGflags(std::vector<std::string> args) {
  std::vector<char*> cargs;
  for (auto& a : args) cargs.push_back(a.data());
  int argc = static_cast<int>(cargs.size());
  char** argv = cargs.data();
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  return std::vector<std::string>(argv, argv + argc);
}

}  // namespace pstrain
