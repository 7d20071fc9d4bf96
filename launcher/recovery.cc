#include "launcher/recovery.h"

#include <sys/stat.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "checkpoint/manifest.h"

namespace pstrain {
namespace launcher {

LaunchOptions WithCheckpointFlags(LaunchOptions o,
                                  const std::string& checkpoint_dir,
                                  const std::string& resume_from) {
  std::vector<std::string> flags;
  if (!checkpoint_dir.empty()) {
    flags.push_back(absl::StrCat("--checkpoint_dir=", checkpoint_dir));
  }
  if (!resume_from.empty()) {
    flags.push_back(absl::StrCat("--resume_from=", resume_from));
  }
  for (const std::string& f : flags) {
    o.server_args.push_back(f);
    if (!o.command.empty()) o.command.push_back(f);
  }
  return o;
}

int RunWithRestarts(const LaunchOptions& options, const RestartOptions& r,
                    std::ostream* out) {
  auto say = [out](const std::string& line) {
    *out << "launch: " << line << "\n" << std::flush;
  };
  std::string resume_from;
  for (int attempt = 0;; ++attempt) {
    const absl::Time start = absl::Now();
    Launcher launcher(
        WithCheckpointFlags(options, r.checkpoint_dir, resume_from), out);
    const int rc = launcher.Run();
    const absl::Time end = absl::Now();
    if (rc == 0 || rc >= 128 || launcher.failure().empty()) return rc;
    if (attempt >= r.max_restarts) {
      if (r.max_restarts > 0) {
        say(absl::StrCat("no restart left (--max_restarts ", r.max_restarts,
                         ")"));
      }
      return rc;
    }
    std::string from = "the beginning (no complete checkpoint";
    resume_from.clear();
    if (!r.checkpoint_dir.empty()) {
      auto latest = checkpoint::FindLatestCheckpoint(r.checkpoint_dir);
      if (latest.ok()) {
        resume_from = *latest;
        auto m = checkpoint::VerifyCheckpoint(resume_from);
        struct stat st;
        const std::string manifest =
            absl::StrCat(resume_from, "/", checkpoint::kManifestName);
        double age_s = -1;
        if (stat(manifest.c_str(), &st) == 0) {
          age_s = absl::ToDoubleSeconds(end - absl::FromTimeT(st.st_mtime));
        }
        from = absl::StrFormat(
            "%s (step %d, written %.1f s before the job stopped: the work "
            "lost",
            resume_from, m.ok() ? m->step : -1, age_s);
      } else {
        from = absl::StrCat(from, " under ", r.checkpoint_dir);
      }
    }
    say(absl::StrFormat(
        "restart %d of %d after %s; the failed run lasted %.1f s; resuming "
        "from %s)",
        attempt + 1, r.max_restarts, launcher.failure(),
        absl::ToDoubleSeconds(end - start), from));
  }
}

}  // namespace launcher
}  // namespace pstrain
