// launch: starts a pstrain job (scheduler, servers, workers) locally, over
// ssh from a hosts file, or as steps of a Slurm allocation. See
// launcher/launcher.h and README.md.
#include <unistd.h>

#include <iostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_split.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "launcher/args.h"
#include "launcher/hostfile.h"
#include "launcher/launcher.h"
#include "launcher/recovery.h"
#include "launcher/slurm_backend.h"
#include "util/file.h"
#include "util/flags.h"

DEFINE_int32(num_workers, 0, "Number of workers (-n).");
DEFINE_int32(num_servers, -1,
             "Number of servers (-s); default: as many as workers.");
DEFINE_string(hostfile, "",
              "Hosts file (-H): one host[:ssh_port] a line, optionally "
              "followed by slots=N (at most N servers and workers there).");
DEFINE_string(launcher, "",
              "ssh, slurm, mpi or local; default: ssh with a hosts file, else "
              "local. slurm: inside an allocation (salloc, sbatch), servers "
              "and workers run as job steps (srun) on its nodes.");
DEFINE_string(sync_dst_dir, "",
              "ssh: rsync the current directory to this directory on every "
              "host and run there.");
DEFINE_string(scheduler_binary, "",
              "Scheduler binary; default: scheduler/scheduler beside this "
              "tool's folder (bazel-bin).");
DEFINE_string(server_binary, "",
              "Server binary; default: server/server beside this tool's folder "
              "(bazel-bin).");
DEFINE_string(scheduler_args, "",
              "Extra flags for the scheduler, space-separated.");
DEFINE_string(server_args, "",
              "Extra flags for every server, space-separated.");
DEFINE_string(scheduler_host, "",
              "Address the nodes use to reach the scheduler; default: "
              "127.0.0.1 (local), or (ssh) the address this host sends from on "
              "its route to the first host.");
DEFINE_int32(scheduler_port, 0, "Scheduler port; 0 picks a free one.");
DEFINE_int32(status_port, -1,
             "The scheduler's live status page (/, /status.json, /metrics) "
             "on this port, printed as `launch: status page: URL`; 0 picks a "
             "free one. Default -1: off.");
DEFINE_double(straggler_ratio, 1.2,
              "The scheduler logs a worker as a straggler (rank, host, "
              "reason) when its own time per image (all but waiting for "
              "weights) is above this many times the median worker's, for 3 "
              "reports in a row (> 1).");
DEFINE_string(
    ssh_config, "",
    "ssh: client config file passed as ssh -F (identity, user, known hosts).");
DEFINE_int32(ssh_connect_timeout_s, 10,
             "ssh: connection timeout per host, seconds.");
DEFINE_string(mpirun, "mpirun",
              "mpi: Open MPI's mpirun or MPICH's Hydra mpiexec (e.g. "
              "mpiexec.mpich). The whole job is one mpirun: rank 0 the "
              "scheduler, then the servers, then the workers.");
DEFINE_string(mpi_args, "",
              "mpi: extra arguments for mpirun, space-separated (e.g. "
              "'--mca btl_tcp_if_include 10.0.0.0/24').");
DEFINE_string(timeline, "",
              "Write a timeline of the job (a Chrome trace of "
              "--timeline_steps, for https://ui.perfetto.dev or "
              "chrome://tracing) to this file: every server and worker "
              "writes its part to FILE.parts/ROLE-INDEX.json, which must be "
              "a folder every host sees (local: this machine; ssh: a shared "
              "filesystem, or collect the parts and run merge_timeline), and "
              "launch merges them into FILE when the job ends. Empty: off.");
DEFINE_string(timeline_steps, "10:20",
              "With --timeline: the training steps A:B (both included) it "
              "records; steps are a worker's batches counted from 1 across "
              "epochs.");
DEFINE_int32(
    stop_grace_s, 10,
    "Seconds processes get after SIGTERM before SIGKILL when the job stops.");

DEFINE_int32(max_restarts, 0,
             "When a process of the job fails, stop the job and restart it "
             "from the newest complete checkpoint under --checkpoint_dir "
             "(or from the beginning without one), up to this many times.");
DEFINE_string(checkpoint_dir, "",
              "Job checkpoints: passed to every server and worker as "
              "--checkpoint_dir; --max_restarts resumes from the newest "
              "complete one here (--resume_from=DIR/step-N).");

DEFINE_string(recovery, "restart",
              "What a dead worker does to the job: restart (the job stops; "
              "--max_restarts restarts it from the newest checkpoint) or "
              "replace (the job goes on: launch starts a new worker process "
              "for the dead rank, which pulls the current weights and "
              "continues at the current step; the other workers wait for it "
              "up to --replace_timeout_s). A dead server or scheduler always "
              "takes the restart path. replace: local and ssh launchers.");
DEFINE_double(replace_timeout_s, 60,
              "--recovery=replace: how long the scheduler waits, once it "
              "declared a worker dead, for its replacement to register "
              "before it aborts the job; in (0, 540].");

namespace {}  // namespace

int main(int argc, char** argv) {
  constexpr char kProgram[] = "launch";
  std::vector<std::string> raw(argv, argv + argc);
  auto split = pstrain::launcher::SplitLaunchArgs(raw);
  if (!split.ok()) pstrain::ExitWithError(kProgram, split.status().message());
  pstrain::ParseFlagsOrExit(
      {kProgram,
       "launch -n WORKERS [-s SERVERS] [-H HOSTFILE] "
       "[--launcher ssh|slurm|mpi|local]\n"
       "       [--sync_dst_dir DIR] [--env K=V ...] -- WORKER-COMMAND "
       "[FLAGS...]\n"
       "Starts the scheduler here, then servers and workers (process i of\n"
       "servers-then-workers on hosts[i % N]); streams their output prefixed\n"
       "with [role index host]; stops every process when one fails or on\n"
       "Ctrl-C, and exits non-zero naming the first failure. MXNet's dashed\n"
       "spellings (--num-workers, --sync-dst-dir) work too. Exit codes: 0 the "
       "job\nfinished, 1 it failed, 2 bad flags, 128+N stopped by signal N.",
       {{__FILE__, ""}}},
      split->flags);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);

  pstrain::launcher::LaunchOptions o;
  o.num_workers = FLAGS_num_workers;
  o.num_servers = FLAGS_num_servers < 0 ? FLAGS_num_workers : FLAGS_num_servers;
  std::string mode = FLAGS_launcher;
  if (mode.empty()) mode = FLAGS_hostfile.empty() ? "local" : "ssh";
  if (mode == "local") {
    if (!FLAGS_hostfile.empty()) {
      pstrain::ExitWithError(
          kProgram, pstrain::BadFlag("hostfile", FLAGS_hostfile,
                                     "is for --launcher ssh, not local")
                        .message());
    }
    o.mode = pstrain::launcher::Mode::kLocal;
  } else if (mode == "ssh") {
    o.mode = pstrain::launcher::Mode::kSsh;
  } else if (mode == "mpi") {
    o.mode = pstrain::launcher::Mode::kMpi;
    o.mpirun = FLAGS_mpirun;
    o.mpi_args = absl::StrSplit(FLAGS_mpi_args, ' ', absl::SkipEmpty());
  } else if (mode == "slurm") {
    if (!FLAGS_hostfile.empty()) {
      pstrain::ExitWithError(
          kProgram, pstrain::BadFlag("hostfile", FLAGS_hostfile,
                                     "is for --launcher ssh; slurm runs on "
                                     "the allocation's nodes")
                        .message());
    }
    o.mode = pstrain::launcher::Mode::kSlurm;
    auto allocation = pstrain::launcher::ReadSlurmAllocation();
    if (!allocation.ok()) {
      pstrain::ExitWithError(kProgram, allocation.status().message());
    }
    o.slurm_job_id = allocation->job_id;
    o.hosts = allocation->nodes;
  } else {
    pstrain::ExitWithError(
        kProgram,
        pstrain::BadFlag("launcher", mode, "must be ssh, slurm, mpi or local")
            .message());
  }
  if ((mode == "ssh" || mode == "mpi") && !FLAGS_hostfile.empty()) {
    auto hosts = pstrain::launcher::ReadHostfile(FLAGS_hostfile);
    if (!hosts.ok()) pstrain::ExitWithError(kProgram, hosts.status().message());
    o.hosts = *hosts;
  }
  o.sync_dst_dir = FLAGS_sync_dst_dir;
  o.env = split->env;
  o.command = split->command;
  o.scheduler_binary =
      FLAGS_scheduler_binary.empty()
          ? pstrain::PathBesideThisProgram("scheduler/scheduler")
          : FLAGS_scheduler_binary;
  o.server_binary = FLAGS_server_binary.empty()
                        ? pstrain::PathBesideThisProgram("server/server")
                        : FLAGS_server_binary;
  o.scheduler_args =
      absl::StrSplit(FLAGS_scheduler_args, ' ', absl::SkipEmpty());
  o.server_args = absl::StrSplit(FLAGS_server_args, ' ', absl::SkipEmpty());
  o.scheduler_host = FLAGS_scheduler_host;
  o.scheduler_port = FLAGS_scheduler_port;
  o.status_port = FLAGS_status_port;
  o.straggler_ratio = FLAGS_straggler_ratio;
  o.ssh_config = FLAGS_ssh_config;
  o.ssh_connect_timeout = absl::Seconds(FLAGS_ssh_connect_timeout_s);
  o.stop_grace = absl::Seconds(FLAGS_stop_grace_s);
  o.timeline = FLAGS_timeline;
  if (!o.timeline.empty() && o.timeline[0] != '/') {
    // The nodes run in this directory (ssh: the same path on every host).
    char cwd[4096];
    if (getcwd(cwd, sizeof(cwd)) != nullptr) {
      o.timeline = std::string(cwd) + "/" + o.timeline;
    }
  }
  o.timeline_steps = FLAGS_timeline_steps;
  if (FLAGS_recovery != "restart" && FLAGS_recovery != "replace") {
    pstrain::ExitWithError(kProgram,
                           pstrain::BadFlag("recovery", FLAGS_recovery,
                                            "must be restart or replace")
                               .message());
  }
  o.replace_workers = FLAGS_recovery == "replace";
  o.replace_timeout = absl::Seconds(FLAGS_replace_timeout_s);
  absl::Status valid = pstrain::launcher::ValidateLaunchOptions(o);
  if (!valid.ok()) pstrain::ExitWithError(kProgram, valid.message());

  if (FLAGS_max_restarts < 0) {
    pstrain::ExitWithError(
        kProgram,
        pstrain::BadFlag("max_restarts", FLAGS_max_restarts, "must be >= 0")
            .message());
  }
  pstrain::launcher::InstallStopSignalHandlers();
  pstrain::launcher::RestartOptions restart;
  restart.max_restarts = FLAGS_max_restarts;
  restart.checkpoint_dir = FLAGS_checkpoint_dir;
  return pstrain::launcher::RunWithRestarts(o, restart, &std::cout);
}
