#include "tools/link_crypto_bench.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "tools/codec_bench.h"
#include "transport/link_crypto.h"

namespace pstrain {
namespace tools {

// Each timed run repeats its kernel for at least this long.
constexpr int kMinRunMs = 50;

void RunLinkCryptoBench(const std::vector<int64_t>& record_bytes, int runs,
                        std::ostream& out) {
  using transport::LinkCipher;
  using transport::LinkRecordCipher;
  out << absl::StrFormat(
      "data-link record ciphers, one thread, median of %d runs; GB/s of "
      "plaintext (x memcpy of the same bytes)\n",
      runs);
  const uint8_t key[32] = {1, 2, 3};
  for (int64_t b : record_bytes) {
    const size_t n =
        std::min<size_t>(static_cast<size_t>(std::max<int64_t>(b, 1)),
                         transport::kLinkMaxRecordBytes);
    std::vector<char> src(n, 'x'), dst(n + transport::kLinkRecordOverhead),
        back(n);
    const double copy = MedianGbps(
        [&] { std::memcpy(dst.data(), src.data(), n); }, n, runs, kMinRunMs);
    out << absl::StrFormat("%10d B  memcpy %7.2f GB/s\n", n, copy);
    for (LinkCipher c :
         {LinkCipher::kAes256Gcm, LinkCipher::kChaCha20Poly1305}) {
      if (c == LinkCipher::kAes256Gcm && !transport::LinkAesGcmAvailable()) {
        out << absl::StrFormat("%10d B  %s: not available on this CPU\n", n,
                               transport::LinkCipherName(c));
        continue;
      }
      LinkRecordCipher seal(c, key);
      const double s = MedianGbps([&] { seal.Seal(src.data(), n, dst.data()); },
                                  n, runs, kMinRunMs);
      // Opening needs records in counter order: seal one per open.
      LinkRecordCipher seal2(c, key), open(c, key);
      std::vector<char> rec(n + transport::kLinkRecordOverhead);
      const double o = MedianGbps(
          [&] {
            seal2.Seal(src.data(), n, rec.data());
            open.Open(rec.data(), n, back.data());
          },
          n, runs, kMinRunMs);
      // Seal+open took 1/s + 1/open_alone: the open alone.
      const double open_alone = 1.0 / std::max(1e-9, 1.0 / o - 1.0 / s);
      out << absl::StrFormat(
          "%10d B  %-17s seal %6.2f GB/s (x%.2f)  open %6.2f GB/s (x%.2f)\n", n,
          transport::LinkCipherName(c), s, s / copy, open_alone,
          open_alone / copy);
    }
  }
}

}  // namespace tools
}  // namespace pstrain
