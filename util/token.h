// The job token handed to every process by `launch` (DESIGN.md, Security).
#ifndef PSTRAIN_UTIL_TOKEN_H_
#define PSTRAIN_UTIL_TOKEN_H_

#include <cerrno>
#include <fstream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "util/status.h"

namespace pstrain {

// Reads the job token: the first line of `path` ("" when `path` is empty,
// for jobs without a token). Errors name the file.
inline absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  if (path.empty()) return std::string();
  std::ifstream in(path);
  std::string token;
  if (!in) return ErrnoToStatus(errno, absl::StrCat("--token_file ", path));
  if (!std::getline(in, token)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--token_file ", path, " is empty"));
  }
  return token;
}

}  // namespace pstrain

#endif  // PSTRAIN_UTIL_TOKEN_H_
