// Escaping of peer-supplied text before it is logged (DESIGN.md, Security).
#ifndef PSTRAIN_UTIL_ESCAPE_H_
#define PSTRAIN_UTIL_ESCAPE_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace pstrain {

// Peer-supplied text longer than this is cut when logged.
inline constexpr size_t kMaxLoggedPeerBytes = 256;

// `text` as one printable line of ASCII: newlines, other control bytes,
// bytes >= 0x80, quotes and backslashes are C-escaped (absl::CHexEscape:
// "\n", "\x1b", "\\"), so a peer cannot forge log lines or smuggle terminal
// sequences. Text longer than `max_bytes` is cut there and ends in
// "...(N bytes)". Use it on every string that came from the network (routing
// ids, hosts, error texts, barrier names) before it reaches a log line or a
// Status that will be logged. Thread-safe.
std::string EscapeForLog(absl::string_view text,
                         size_t max_bytes = kMaxLoggedPeerBytes);

}  // namespace pstrain

#endif  // PSTRAIN_UTIL_ESCAPE_H_
