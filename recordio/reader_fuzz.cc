// libFuzzer target: any file content read through RecordReader (both
// policies) and every payload through ParseImageRecord ends in records or a
// Status, never a crash or an out-of-bounds read; so does the content taken
// as an .idx and checked against the file (CheckIndex).
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "recordio/image_record.h"
#include "recordio/index.h"
#include "recordio/recordio.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = [] {
    char tmpl[] = "/tmp/pstrain-fuzz-XXXXXX";
    int fd = mkstemp(tmpl);
    if (fd >= 0) close(fd);
    return std::string(tmpl);
  }();
  FILE* f = fopen(path.c_str(), "wb");
  if (f == nullptr) return 0;
  fwrite(data, 1, size, f);
  fclose(f);
  (void)pstrain::recordio::ParseImageRecord(
      absl::string_view(reinterpret_cast<const char*>(data), size));
  for (auto policy : {pstrain::recordio::CorruptionPolicy::kFail,
                      pstrain::recordio::CorruptionPolicy::kSkip}) {
    pstrain::recordio::ReaderOptions o;
    o.policy = policy;
    o.buffer_bytes = 64;  // Small buffers exercise refills.
    auto r = pstrain::recordio::RecordReader::Open(path, o);
    if (!r.ok()) continue;
    absl::string_view v;
    for (int i = 0; i < 100000; ++i) {
      auto more = (*r)->Next(&v);
      if (!more.ok() || !*more) break;
      (void)pstrain::recordio::ParseImageRecord(v);
    }
  }
  auto idx = pstrain::recordio::ParseIndex(
      absl::string_view(reinterpret_cast<const char*>(data), size), "fuzz.idx");
  auto rec = pstrain::recordio::RecordReader::Open(path);
  if (idx.ok() && rec.ok()) {
    (void)pstrain::recordio::CheckIndex(*idx, "fuzz.idx", rec->get());
  }
  return 0;
}
