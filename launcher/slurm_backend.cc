#include "launcher/slurm_backend.h"

#include <cstdlib>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "launcher/wrapper.h"

namespace pstrain {
namespace launcher {
namespace {

constexpr char kStepPrefix[] = "pstrain-";

std::string StepName(const ProcessSpec& spec) {
  return absl::StrCat(kStepPrefix, spec.role, "-", spec.index);
}

}  // namespace

absl::StatusOr<std::map<std::string, std::string>> ParseScontrolNodes(
    absl::string_view text) {
  std::map<std::string, std::string> addr;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::string name, node_addr;
    for (absl::string_view word :
         absl::StrSplit(line, ' ', absl::SkipEmpty())) {
      if (absl::ConsumePrefix(&word, "NodeName=")) name = std::string(word);
      if (absl::ConsumePrefix(&word, "NodeAddr="))
        node_addr = std::string(word);
    }
    if (name.empty() || node_addr.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "scontrol printed a node line without NodeName and NodeAddr: '",
          absl::StripAsciiWhitespace(line.substr(0, 120)), "'"));
    }
    addr[name] = node_addr;
  }
  return addr;
}

absl::StatusOr<SlurmAllocation> ReadSlurmAllocation() {
  const char* id = getenv("SLURM_JOB_ID");
  const char* list = getenv("SLURM_JOB_NODELIST");
  if (id == nullptr || *id == '\0' || list == nullptr || *list == '\0') {
    return absl::FailedPreconditionError(
        "--launcher slurm runs inside a Slurm allocation, and SLURM_JOB_ID / "
        "SLURM_JOB_NODELIST are not set: run it inside salloc or an sbatch "
        "script (configs/slurm/pstrain.sbatch)");
  }
  SlurmAllocation a;
  a.job_id = id;
  CommandResult names =
      RunCommand({"scontrol", "show", "hostnames", list}, absl::Seconds(30));
  if (!names.ok) {
    return absl::UnavailableError(absl::StrCat("scontrol show hostnames ", list,
                                               " failed (", names.description,
                                               "): ", LastLine(names.output)));
  }
  CommandResult nodes =
      RunCommand({"scontrol", "-o", "show", "node", list}, absl::Seconds(30));
  if (!nodes.ok) {
    return absl::UnavailableError(absl::StrCat("scontrol -o show node ", list,
                                               " failed (", nodes.description,
                                               "): ", LastLine(nodes.output)));
  }
  absl::StatusOr<std::map<std::string, std::string>> addr =
      ParseScontrolNodes(nodes.output);
  if (!addr.ok()) return addr.status();
  for (absl::string_view n :
       absl::StrSplit(names.output, '\n', absl::SkipWhitespace())) {
    const std::string name(absl::StripAsciiWhitespace(n));
    auto it = addr->find(name);
    if (it == addr->end()) {
      return absl::UnavailableError(absl::StrCat("scontrol -o show node ", list,
                                                 " does not list node ", name));
    }
    Host h;
    h.node = name;
    h.name = it->second;
    a.nodes.push_back(h);
  }
  if (a.nodes.empty()) {
    return absl::UnavailableError(
        absl::StrCat("SLURM_JOB_NODELIST=", list, " names no node"));
  }
  return a;
}

std::vector<std::string> SlurmBackend::Srun(const std::string& nodes,
                                            int count) const {
  return {"srun",
          absl::StrCat("--jobid=", options().slurm_job_id),
          absl::StrCat("--nodes=", count),
          absl::StrCat("--ntasks=", count),
          "--ntasks-per-node=1",
          absl::StrCat("--nodelist=", nodes),
          "--overlap",
          "--quiet"};
}

absl::StatusOr<std::string> SlurmBackend::DefaultSchedulerHost() const {
  // Nodes that all sit at loopback addresses (a cluster on one machine)
  // reach the scheduler at loopback too.
  for (const Host& h : options().hosts) {
    if (!absl::StartsWith(h.name, "127.")) return AddressTowards(h);
  }
  return std::string("127.0.0.1");
}

absl::Status SlurmBackend::Preflight(const std::vector<ProcessSpec>& specs) {
  std::map<std::string, std::set<std::string>> needs;  // Node -> binaries.
  for (const ProcessSpec& s : specs) needs[s.host.node].insert(s.argv[0]);
  std::vector<std::string> node_names;
  std::string script = absl::StrCat(
      "cd ", ShellQuote(context().workdir),
      " 2>/dev/null || { echo \"pstrain-check: $SLURMD_NODENAME no directory ",
      context().workdir, "\"; exit 0; }; case \"$SLURMD_NODENAME\" in");
  for (const auto& [node, bins] : needs) {
    node_names.push_back(node);
    absl::StrAppend(&script, " ", ShellQuote(node), ") set --");
    for (const std::string& b : bins)
      absl::StrAppend(&script, " ", ShellQuote(b));
    absl::StrAppend(&script, ";;");
  }
  absl::StrAppend(&script,
                  " *) set --;; esac; for b; do command -v \"$b\" >/dev/null "
                  "2>&1 || echo \"pstrain-check: $SLURMD_NODENAME missing "
                  "$b\"; done; echo \"pstrain-check: $SLURMD_NODENAME ok\"");
  std::vector<std::string> argv =
      Srun(absl::StrJoin(node_names, ","), static_cast<int>(node_names.size()));
  for (const std::string& a :
       {std::string("/bin/sh"), std::string("-c"), script}) {
    argv.push_back(a);
  }
  CommandResult r = RunCommand(argv, absl::Seconds(60));
  std::map<std::string, std::vector<std::string>> problems;
  std::set<std::string> reached;
  for (absl::string_view line : absl::StrSplit(r.output, '\n')) {
    if (!absl::ConsumePrefix(&line, "pstrain-check: ")) continue;
    const size_t sp = line.find(' ');
    if (sp == absl::string_view::npos) continue;
    const std::string node(line.substr(0, sp));
    const absl::string_view what = line.substr(sp + 1);
    if (what == "ok") {
      reached.insert(node);
    } else {
      problems[node].push_back(std::string(what));
    }
  }
  bool all_ok = true;
  std::ostream& out = *context().out;
  out << absl::StrFormat("launch: %-16s %-16s %-8s %s\n", "NODE", "ADDRESS",
                         "ROLES", "CHECK");
  for (const std::string& node : node_names) {
    int servers = 0, workers = 0;
    std::string addr;
    for (const ProcessSpec& s : specs) {
      if (s.host.node != node) continue;
      addr = s.host.name;
      ++(s.role == "server" ? servers : workers);
    }
    std::string status = "ok";
    if (!problems[node].empty()) {
      status = absl::StrJoin(problems[node], "; ");
    } else if (!reached.count(node)) {
      status = absl::StrCat("no answer: srun ", r.description, ": ",
                            LastLine(r.output));
    }
    if (status != "ok") all_ok = false;
    out << absl::StrFormat("launch: %-16s %-16s %-8s %s\n", node, addr,
                           absl::StrCat(servers, "s+", workers, "w"), status);
  }
  out.flush();
  if (!all_ok) {
    return absl::UnavailableError("node check failed; nothing was started");
  }
  return absl::OkStatus();
}

NodeCommand SlurmBackend::Command(const ProcessSpec& spec) const {
  NodeCommand c;
  c.argv = Srun(spec.host.node, 1);
  c.argv.push_back(absl::StrCat("--job-name=", StepName(spec)));
  c.argv.push_back(absl::StrCat("--chdir=", context().workdir));
  // The node's environment exactly, as on ssh: nothing of launch's own.
  c.argv.push_back("env");
  c.argv.push_back("-i");
  if (const char* home = getenv("HOME")) {
    c.argv.push_back(absl::StrCat("HOME=", home));
  }
  if (const char* user = getenv("USER")) {
    c.argv.push_back(absl::StrCat("USER=", user));
  }
  c.argv.insert(c.argv.end(), context().node_env.begin(),
                context().node_env.end());
  for (const std::string& a : {std::string("/bin/sh"), std::string("-c"),
                               WrapperScript(), std::string("pstrain-node")}) {
    c.argv.push_back(a);
  }
  c.argv.insert(c.argv.end(), spec.argv.begin(), spec.argv.end());
  c.env = OwnEnvironment();
  return c;
}

namespace {

// The allocation's steps named pstrain-*: "JOB.STEP" -> name.
std::map<std::string, std::string> OurSteps(const std::string& job_id,
                                            std::string* error) {
  std::map<std::string, std::string> steps;
  CommandResult r =
      RunCommand({"squeue", "--steps", "--noheader",
                  absl::StrCat("--jobs=", job_id), "--format=%i %j"},
                 absl::Seconds(15));
  if (!r.ok) {
    *error = absl::StrCat("squeue ", r.description, ": ", LastLine(r.output));
    return steps;
  }
  for (absl::string_view line :
       absl::StrSplit(r.output, '\n', absl::SkipWhitespace())) {
    std::vector<std::string> f =
        absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (f.size() == 2 && absl::StartsWith(f[1], kStepPrefix)) {
      steps[f[0]] = f[1];
    }
  }
  return steps;
}

}  // namespace

void SlurmBackend::CleanUp(const std::vector<StartedNode>& nodes, bool failed) {
  const std::string& job = options().slurm_job_id;
  std::string error;
  std::map<std::string, std::string> steps = OurSteps(job, &error);
  if (!error.empty()) {
    Say(absl::StrCat("could not list the job steps of allocation ", job, ": ",
                     error));
    return;
  }
  if (!steps.empty()) {
    std::vector<std::string> argv = {"scancel", "--quiet"};
    std::vector<std::string> names;
    for (const auto& [id, name] : steps) {
      argv.push_back(id);
      names.push_back(absl::StrCat(name, " (", id, ")"));
    }
    CommandResult r = RunCommand(argv, absl::Seconds(15));
    Say(absl::StrCat("cancelled ", steps.size(),
                     " job step(s) still running: ", absl::StrJoin(names, ", "),
                     r.ok ? ""
                          : absl::StrCat(" (scancel ", r.description, ": ",
                                         LastLine(r.output), ")")));
    const absl::Time deadline = absl::Now() + absl::Seconds(15);
    while (!steps.empty() && error.empty() && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(300));
      steps = OurSteps(job, &error);
    }
    if (!steps.empty()) {
      std::vector<std::string> left;
      for (const auto& [id, name] : steps) left.push_back(id);
      Say(absl::StrCat(
          "job steps still there after scancel: ", absl::StrJoin(left, ", "),
          error.empty() ? "" : absl::StrCat(" (", error, ")")));
    }
  }
  if (!failed) return;
  // Token files of wrappers killed with SIGKILL, removed on their nodes.
  std::map<std::string, std::vector<std::string>> tokens;
  for (const StartedNode& n : nodes) {
    if (!n.report.token_file.empty()) {
      tokens[n.spec.host.node].push_back(ShellQuote(n.report.token_file));
    }
  }
  for (const auto& [node, files] : tokens) {
    std::vector<std::string> argv = Srun(node, 1);
    for (const std::string& a :
         {std::string("/bin/sh"), std::string("-c"),
          absl::StrCat("rm -f ", absl::StrJoin(files, " "))}) {
      argv.push_back(a);
    }
    CommandResult r = RunCommand(argv, absl::Seconds(30));
    if (!r.ok) {
      Say(absl::StrCat("could not remove the token files left on ", node,
                       ": srun ", r.description, ": ", LastLine(r.output)));
    }
  }
}

}  // namespace launcher
}  // namespace pstrain
