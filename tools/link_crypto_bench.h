// kv_bench --link_crypto_bench: the encrypted data link's record ciphers
// (transport/link_crypto.h) timed on one thread against memcpy.
#ifndef PSTRAIN_TOOLS_LINK_CRYPTO_BENCH_H_
#define PSTRAIN_TOOLS_LINK_CRYPTO_BENCH_H_

#include <cstdint>
#include <ostream>
#include <vector>

namespace pstrain {
namespace tools {

// Prints, per record size (bytes, at most kLinkMaxRecordBytes) and kernel
// (memcpy; AES-256-GCM seal and open where this CPU runs it;
// ChaCha20-Poly1305 seal and open), the median single-thread GB/s of
// plaintext over `runs` runs, and the ratio to memcpy of the same bytes.
void RunLinkCryptoBench(const std::vector<int64_t>& record_bytes, int runs,
                        std::ostream& out);

}  // namespace tools
}  // namespace pstrain

#endif  // PSTRAIN_TOOLS_LINK_CRYPTO_BENCH_H_
