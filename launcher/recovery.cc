#include "launcher/recovery.h"

#include <sys/stat.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "checkpoint/manifest.h"
#include "launcher/host_health.h"

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
  // ssh: the hosts of the next run, and every host's failures so far.
  std::vector<Host> hosts = options.hosts;
  HostFailures failures;
  for (int attempt = 0;; ++attempt) {
    const absl::Time start = absl::Now();
    LaunchOptions run =
        WithCheckpointFlags(options, r.checkpoint_dir, resume_from);
    run.hosts = hosts;
    Launcher launcher(std::move(run), out);
    const int rc = launcher.Run();
    const absl::Time end = absl::Now();
    if (rc == 0 || rc >= 128) return rc;
    for (const auto& [host, why] : launcher.host_failures()) {
      failures[host].push_back(why);
    }
    // A restart's host check that cannot reach a host (a lost host, a cut
    // link) is a failure of that host, and costs a restart; the first
    // run's check failing is a setup problem and ends the launch.
    std::string what = launcher.failure();
    if (what.empty() && attempt > 0 && launcher.check_failed() &&
        !launcher.host_failures().empty()) {
      std::vector<std::string> names;
      for (const auto& [host, why] : launcher.host_failures()) {
        names.push_back(host);
      }
      what = absl::StrCat("the host check could not reach ",
                          absl::StrJoin(names, ", "));
    }
    if (what.empty()) return rc;
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
    if (options.mode == Mode::kSsh) {
      HostExclusion next = LeaveOutFailedHosts(
          hosts, failures, options.num_servers, options.num_workers);
      // Said when the host failed again: a host that stays is not named
      // at every restart.
      for (size_t i = 0; i < next.messages.size(); ++i) {
        for (const auto& [host, why] : launcher.host_failures()) {
          if (host == next.message_hosts[i]) {
            say(next.messages[i]);
            break;
          }
        }
      }
      hosts = std::move(next.hosts);
    }
    if (launcher.check_failed()) {
      // Give a lost host a moment (a link coming back) before the next
      // check; a stop signal ends the wait.
      const absl::Time until = absl::Now() + r.check_retry_pause;
      while (absl::Now() < until) {
        if (const int sig = PendingStopSignal(); sig != 0) return 128 + sig;
        absl::SleepFor(absl::Milliseconds(50));
      }
    }
    say(absl::StrFormat(
        "restart %d of %d after %s; the failed run lasted %.1f s; resuming "
        "from %s)",
        attempt + 1, r.max_restarts, what, absl::ToDoubleSeconds(end - start),
        from));
  }
}

}  // namespace launcher
}  // namespace pstrain
