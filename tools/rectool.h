// rectool: inspect a RecordIO image dataset (what a user reaches for when a
// dataset looks wrong).
//   rectool count F.rec
//   rectool headers [--json] F.rec
//   rectool verify F.rec [F.idx]
//   rectool extract F.rec INDEX OUT
#ifndef PSTRAIN_TOOLS_RECTOOL_H_
#define PSTRAIN_TOOLS_RECTOOL_H_

#include <ostream>
#include <string>
#include <vector>

namespace pstrain {
namespace tools {

// Runs one rectool command (`args` without the program name) and returns
// the exit code: 0 on success, 1 when the file is corrupt or a check fails
// (the first problem, with file, byte offset and record index, goes to
// `err`), 2 on a usage error.
int RunRectool(const std::vector<std::string>& args, bool json,
               std::ostream& out, std::ostream& err);

}  // namespace tools
}  // namespace pstrain

#endif  // PSTRAIN_TOOLS_RECTOOL_H_
