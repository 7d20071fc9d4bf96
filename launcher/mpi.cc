#include "launcher/mpi.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "launcher/backend.h"

namespace pstrain {
namespace launcher {

absl::StatusOr<MpiFlavor> DetectMpi(const std::string& mpirun) {
  CommandResult r = RunCommand({mpirun, "--version"}, absl::Seconds(30));
  if (!r.ok) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--launcher mpi needs mpirun (Open MPI's, or MPICH's mpiexec), and '",
        mpirun, " --version' failed (", r.description,
        "): ", LastLine(r.output),
        " (Debian: apt-get install openmpi-bin; --mpirun names another)"));
  }
  if (absl::StrContains(r.output, "Open MPI") ||
      absl::StrContains(r.output, "OpenRTE")) {
    return MpiFlavor::kOpenMpi;
  }
  if (absl::StrContains(r.output, "HYDRA")) return MpiFlavor::kHydra;
  return absl::FailedPreconditionError(absl::StrCat(
      "--launcher mpi supports Open MPI's mpirun and MPICH's Hydra mpiexec; '",
      mpirun, " --version' says: ", LastLine(r.output)));
}

std::vector<std::string> MpirunCommand(const LaunchOptions& o, MpiFlavor flavor,
                                       const std::vector<ProcessSpec>& ranks,
                                       const std::vector<std::string>& env,
                                       const std::string& workdir) {
  // The dispatch script: rank -> role, then exactly the node environment;
  // its exit is reported for launch to name a failed rank.
  std::string script = absl::StrCat(
      "r=${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-}}; tf=; for a; do tf=$a; done; "
      "case \"$tf\" in --token_file=*) ;; *) echo \"pstrain-mpi: rank $r "
      "has no --token_file argument\" >&2; exit 96;; esac; case \"$r\" in");
  for (size_t i = 0; i < ranks.size(); ++i) {
    std::vector<std::string> words;
    for (const std::string& a : ranks[i].argv) words.push_back(ShellQuote(a));
    absl::StrAppend(&script, " ", i, ") set -- ", absl::StrJoin(words, " "),
                    ";;");
  }
  std::vector<std::string> env_words;
  for (const std::string& e : env) env_words.push_back(ShellQuote(e));
  absl::StrAppend(
      &script,
      " *) echo \"pstrain-mpi: MPI rank '$r' has no role in this job "
      "of ",
      ranks.size(),
      " processes (OMPI_COMM_WORLD_RANK, PMI_RANK)\" >&2; exit 96;; esac; cd ",
      ShellQuote(workdir),
      " || exit 96; setpriv --pdeathsig TERM env -i HOME=\"$HOME\" "
      "USER=\"$USER\" ",
      absl::StrJoin(env_words, " "),
      " \"$@\" \"$tf\"; rc=$?; echo \"pstrain-mpi-exit $r $rc\"; exit $rc");

  std::vector<std::string> argv = {o.mpirun};
  if (flavor == MpiFlavor::kOpenMpi) {
    for (const std::string& a :
         {std::string("--tag-output"), std::string("-np"),
          absl::StrCat(ranks.size())}) {
      argv.push_back(a);
    }
    if (geteuid() == 0) argv.push_back("--allow-run-as-root");
    if (o.hosts.empty()) {
      argv.push_back("--oversubscribe");
    } else {
      // Rank r on hosts[r % N]: each host with the slots its ranks need.
      std::map<std::string, int> slots;
      std::vector<std::string> order;
      for (const ProcessSpec& r : ranks) {
        if (slots[r.host.name]++ == 0) order.push_back(r.host.name);
      }
      std::vector<std::string> hosts;
      for (const std::string& h : order) {
        hosts.push_back(absl::StrCat(h, ":", slots[h]));
      }
      for (const std::string& a :
           {std::string("--host"), absl::StrJoin(hosts, ","),
            std::string("--map-by"), std::string("node")}) {
        argv.push_back(a);
      }
      if (!o.ssh_config.empty()) {
        for (const std::string& a :
             {std::string("--mca"), std::string("plm_rsh_agent"),
              absl::StrCat("ssh -F ", o.ssh_config)}) {
          argv.push_back(a);
        }
      }
    }
  } else {
    for (const std::string& a :
         {std::string("-prepend-rank"), std::string("-n"),
          absl::StrCat(ranks.size())}) {
      argv.push_back(a);
    }
    if (!o.hosts.empty()) {
      // One slot per host and cycling: rank r on hosts[r % N].
      std::vector<std::string> hosts;
      for (const Host& h : o.hosts) hosts.push_back(h.name);
      argv.push_back("-hosts");
      argv.push_back(absl::StrJoin(hosts, ","));
      if (!o.ssh_config.empty()) {
        for (const std::string& a :
             {std::string("-launcher"), std::string("ssh"),
              std::string("-launcher-exec"),
              absl::StrCat("ssh -F ", o.ssh_config)}) {
          argv.push_back(a);
        }
      }
    }
  }
  argv.insert(argv.end(), o.mpi_args.begin(), o.mpi_args.end());
  for (const std::string& a :
       {std::string("setpriv"), std::string("--pdeathsig"), std::string("TERM"),
        std::string("/bin/sh"), std::string("-c"), script,
        std::string("pstrain-mpi")}) {
    argv.push_back(a);
  }
  return argv;
}

std::optional<TaggedLine> ParseTaggedLine(absl::string_view line) {
  if (!absl::ConsumePrefix(&line, "[")) return std::nullopt;
  const size_t close = line.find(']');
  if (close == absl::string_view::npos) return std::nullopt;
  absl::string_view inside = line.substr(0, close);
  line.remove_prefix(close + 1);
  TaggedLine t;
  const size_t comma = inside.find(',');
  if (comma != absl::string_view::npos) {  // Open MPI.
    if (!absl::SimpleAtoi(inside.substr(comma + 1), &t.rank) ||
        (!absl::ConsumePrefix(&line, "<stdout>:") &&
         !absl::ConsumePrefix(&line, "<stderr>:"))) {
      return std::nullopt;
    }
  } else {  // Hydra.
    if (!absl::SimpleAtoi(inside, &t.rank) ||
        !absl::ConsumePrefix(&line, " ")) {
      return std::nullopt;
    }
  }
  if (t.rank < 0) return std::nullopt;
  t.text = std::string(line);
  return t;
}

std::optional<RankExit> ParseRankExit(absl::string_view text) {
  if (!absl::ConsumePrefix(&text, "pstrain-mpi-exit ")) return std::nullopt;
  const size_t sp = text.find(' ');
  RankExit e;
  int status = 0;
  if (sp == absl::string_view::npos ||
      !absl::SimpleAtoi(text.substr(0, sp), &e.rank) ||
      !absl::SimpleAtoi(text.substr(sp + 1), &status) || e.rank < 0 ||
      status < 0) {
    return std::nullopt;
  }
  e.failed = status != 0;
  if (status > 128 && status < 128 + 65) {
    const char* name = sigabbrev_np(status - 128);
    e.how = absl::StrCat("was killed by signal ", status - 128, " (SIG",
                         name ? name : "?", ")");
  } else {
    e.how = absl::StrCat("exited with status ", status);
  }
  return e;
}

void MpiFailure::Scan(absl::string_view line) {
  line = absl::StripAsciiWhitespace(line);
  if (absl::ConsumePrefix(&line, "Process name: [[")) {
    const size_t close = line.find("]");
    const size_t comma = line.find("],");
    absl::string_view rest =
        comma == absl::string_view::npos ? "" : line.substr(comma + 2);
    int r = -1;
    if (close != absl::string_view::npos &&
        absl::SimpleAtoi(rest.substr(0, rest.find(']')), &r) && rank < 0) {
      rank = r;
    }
    return;
  }
  if (absl::ConsumePrefix(&line, "Exit code:") && how.empty()) {
    how = absl::StrCat("exited with status ", absl::StripAsciiWhitespace(line));
    return;
  }
  const size_t at = line.find("process rank ");
  if (at != absl::string_view::npos && rank < 0) {
    absl::string_view rest = line.substr(at + 13);
    int r = -1;
    if (absl::SimpleAtoi(rest.substr(0, rest.find(' ')), &r)) {
      rank = r;
      const size_t sig = rest.find("exited on signal ");
      if (sig != absl::string_view::npos) {
        how = absl::StrCat("was killed by signal ",
                           absl::StripSuffix(rest.substr(sig + 17), "."));
      }
    }
  }
}

}  // namespace launcher
}  // namespace pstrain
