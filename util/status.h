// Status helpers shared by every pstrain component.
//
// pstrain reports input errors (bad files, corrupt records, malformed
// messages, timeouts, peers gone) as absl::Status and uses CHECK only for
// broken internal invariants. These macros keep call sites short.
#ifndef PSTRAIN_UTIL_STATUS_H_
#define PSTRAIN_UTIL_STATUS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

// Evaluates `expr` (an absl::Status); returns it from the enclosing function
// if it is not OK.
#define PSTRAIN_RETURN_IF_ERROR(expr)                  \
  do {                                                 \
    ::absl::Status pstrain_status_ = (expr);           \
    if (!pstrain_status_.ok()) return pstrain_status_; \
  } while (0)

#define PSTRAIN_STATUS_CONCAT_INNER_(a, b) a##b
#define PSTRAIN_STATUS_CONCAT_(a, b) PSTRAIN_STATUS_CONCAT_INNER_(a, b)

// Evaluates `rexpr` (an absl::StatusOr<T>); on error returns its status from
// the enclosing function, otherwise moves the value into `lhs`, which may be
// a declaration: PSTRAIN_ASSIGN_OR_RETURN(auto reader, Reader::Open(path));
#define PSTRAIN_ASSIGN_OR_RETURN(lhs, rexpr) \
  PSTRAIN_ASSIGN_OR_RETURN_IMPL_(            \
      PSTRAIN_STATUS_CONCAT_(pstrain_statusor_, __LINE__), lhs, rexpr)

#define PSTRAIN_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                   \
  if (!statusor.ok()) return std::move(statusor).status();   \
  lhs = std::move(statusor).value()

namespace pstrain {

// Returns `status` with `context` prepended to its message ("context: msg"),
// keeping the code. OK stays OK. Use it to add a file name, host or node to
// an error on its way up.
absl::Status Annotate(const absl::Status& status, absl::string_view context);

// Returns an error for a failed system call: the code follows `errno_value`
// (NotFound for ENOENT, PermissionDenied for EACCES, Unavailable for
// ECONNREFUSED and similar, Internal otherwise) and the message is
// "<what>: <strerror text> (errno N)".
absl::Status ErrnoToStatus(int errno_value, absl::string_view what);

}  // namespace pstrain

#endif  // PSTRAIN_UTIL_STATUS_H_
