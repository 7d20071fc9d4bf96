#include "worker/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "checkpoint/manifest.h"
#include "data/pipeline.h"
#include "data/record_source.h"
#include "glog/logging.h"
#include "kernels/cpu_ops.h"
#include "kvstore/partition.h"
#include "nn/network.h"
#include "nn/symbol_import.h"
#include "timeline/timeline.h"
#include "util/status.h"
#include "worker/checkpointing.h"
#include "worker/emulation.h"
#include "worker/finetune.h"
#include "worker/gradient_sync.h"
#include "worker/metrics.h"
#include "worker/optimizer_config.h"
#include "worker/options.h"
#include "worker/replicas.h"
#include "worker/time_split.h"
#include "worker/validation.h"

namespace pstrain {
namespace worker {
namespace {

// How long the trainer waits for any one blocking operation (a batch from
// the data pipeline, a replica step, a KVStore call) before it fails with
// DeadlineExceeded.
constexpr absl::Duration kWaitTimeout = absl::Minutes(10);

absl::Time DeadlineFromNow() { return absl::Now() + kWaitTimeout; }

void Say(const std::string& line) { std::cout << line << std::endl; }

// This machine's physical memory, bytes.
int64_t PhysicalMemoryBytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page <= 0) return std::numeric_limits<int64_t>::max();
  return static_cast<int64_t>(pages) * page;
}

// CheckBatchMemory from `one`, the network built for one sample: the
// replicas hold the batch's input and (on CPU devices) its activations, and
// each its parameters with their gradients.
absl::Status CheckMemory(const TrainerOptions& o, const nn::Network& one) {
  StepMemory m;
  if (!o.emulate_device.empty()) {
    // One real replica for one sample; the batch is never made.
    m.fixed_bytes = one.Memory().param_bytes + one.PlannedForwardBytes();
    return CheckBatchMemory(o, m, PhysicalMemoryBytes());
  }
  m.per_sample_bytes = static_cast<int64_t>(sizeof(float)) * o.image_shape[0] *
                       o.image_shape[1] * o.image_shape[2];
  if (o.gpus.empty()) m.per_sample_bytes += one.PlannedForwardBytes();
  m.fixed_bytes = NumDevices(o) * one.Memory().param_bytes;
  return CheckBatchMemory(o, m, PhysicalMemoryBytes());
}

struct Data {
  std::unique_ptr<data::RecordSource> source;
  std::unique_ptr<data::Pipeline> pipeline;
};

// Opens part `rank` of `workers` of `path` as a RecordSource; an .idx that
// does not fit its .rec gets a hint about --ignore_index.
absl::StatusOr<std::unique_ptr<data::RecordSource>> OpenSource(
    const TrainerOptions& o, const std::string& path, int rank, int workers) {
  data::RecordSourceOptions so;
  so.ignore_index = o.ignore_index;
  auto src = data::RecordSource::Open(path, rank, workers, so);
  if (absl::IsFailedPrecondition(src.status())) {
    return absl::FailedPreconditionError(absl::StrCat(
        src.status().message(),
        " (--ignore_index splits the .rec files by bytes without their .idx)"));
  }
  return src;
}

// Records of `d` skipped in its current epoch: found corrupt by reading,
// or passed over when the part was opened (missing from every epoch).
int64_t EpochSkipped(const Data& d) {
  return d.pipeline->stats().epoch_skipped + d.source->loss().corrupt_records;
}

// Opens this worker's part of `path`. With `batches` > 0 the pipeline runs
// that many batches an epoch; with 0, enough to cover the part once. An
// empty part gets no pipeline (only validation allows that, and only when
// no record of it was corrupt).
absl::StatusOr<Data> OpenData(const TrainerOptions& o, const std::string& path,
                              int rank, int workers, int64_t batches,
                              bool train) {
  Data d;
  auto src = OpenSource(o, path, rank, workers);
  if (!src.ok()) return src.status();
  d.source = std::move(*src);
  if (d.source->size() == 0) {
    const recordio::SkipStats loss = d.source->loss();
    if (train || loss.corrupt_records > 0) {
      return absl::DataLossError(absl::StrCat(
          "part ", rank, " of ", workers, " of ", path, " holds no record",
          loss.corrupt_records > 0
              ? absl::StrCat(" that reads; the first corrupt one: ", loss.first)
              : ""));
    }
    return d;
  }
  data::PipelineOptions p;
  p.batch_size = o.batch_size;
  p.batches_per_epoch =
      batches > 0 ? batches
                  : (d.source->size() + o.batch_size - 1) / o.batch_size;
  p.num_threads = std::max(1, o.data_nthreads);
  p.shuffle = train && o.shuffle;
  p.seed = o.seed;
  p.augment = AugmentFor(o, train);
  p.max_corrupt_fraction = o.max_corrupt_fraction;
  p.max_corrupt_records = o.max_corrupt_records;
  auto pipe = data::Pipeline::Create(d.source.get(), p);
  if (!pipe.ok()) return pipe.status();
  d.pipeline = std::move(*pipe);
  return d;
}

// Batches per epoch, the same on every worker: ceil(examples / (workers *
// batch_size)), with `examples` = --num_examples or, without it, every
// record of --data_train (counted from the .idx files, or by a scan).
absl::StatusOr<int64_t> EpochSize(const TrainerOptions& o, int workers) {
  int64_t examples = o.num_examples;
  if (examples == 0) {
    auto all = OpenSource(o, o.data_train, 0, 1);
    if (!all.ok()) return all.status();
    examples = (*all)->size();
    LOG(INFO) << "--data_train " << o.data_train << " holds " << examples
              << " records (--num_examples not given)";
  }
  const int64_t per_round = static_cast<int64_t>(workers) * o.batch_size;
  return std::max<int64_t>(1, (examples + per_round - 1) / per_round);
}

// This worker's parts of --data_train and --data_val (none with
// --benchmark; no validation with --test_io) and the batches per epoch.
struct JobData {
  Data train, val;
  int64_t epoch_size = 0;
};

// Opens `out`'s data and logs the training part's size. Errors start with
// the flag of the data that failed ("--data_train: ...").
absl::Status OpenJobData(const TrainerOptions& o, int rank, int workers,
                         int devices, JobData* out) {
  if (o.benchmark) {
    out->epoch_size =
        std::max<int64_t>(1, o.num_examples / workers / o.batch_size);
    return absl::OkStatus();
  }
  auto size = EpochSize(o, workers);
  if (!size.ok()) return Annotate(size.status(), "--data_train");
  out->epoch_size = *size;
  auto t = OpenData(o, o.data_train, rank, workers, out->epoch_size, true);
  if (!t.ok()) return Annotate(t.status(), "--data_train");
  out->train = std::move(*t);
  LOG(INFO) << "worker " << rank << " of " << workers << ": "
            << out->train.source->size()
            << " records in its part of --data_train, " << out->epoch_size
            << " batches of " << o.batch_size << " per epoch on " << devices
            << " device(s)";
  if (!o.data_val.empty() && !o.test_io) {
    auto v = OpenData(o, o.data_val, rank, workers, 0, false);
    if (!v.ok()) return Annotate(v.status(), "--data_val");
    out->val = std::move(*v);
  }
  return absl::OkStatus();
}

// --benchmark's batch: normal pixels and uniform labels from `rng`.
void RandomBatch(const TrainerOptions& o, std::mt19937* rng,
                 std::vector<float>* x, std::vector<float>* labels) {
  std::normal_distribution<float> nd;
  x->resize(static_cast<size_t>(o.image_shape[0] * o.image_shape[1] *
                                o.image_shape[2]) *
            o.batch_size);
  labels->resize(o.batch_size);
  for (auto& v : *x) v = nd(*rng);
  for (auto& l : *labels) l = static_cast<float>((*rng)() % o.num_classes);
}

// How the tensors travelled (dist KVStores): servers on this host share
// memory.
void LogTransportStats(const kvstore::KVStore& kv) {
  const transport::TransportStats st = kv.transport_stats();
  LOG(INFO) << "worker " << kv.rank() << ": " << st.sent << " messages sent, "
            << st.received << " received; tensors through shared memory: "
            << st.shm_frames_sent << " sent, " << st.shm_frames_received
            << " received, " << st.shm_frames_inline
            << " over TCP because the arena was full (--shm_bytes); "
            << st.dropped_malformed << " malformed messages dropped";
}

// Reads --data_train's batches for epochs [begin_epoch, num_epochs) without
// training (--test_io) and prints the speed of each epoch. False (error
// logged) when a batch does not come.
bool TestIo(const TrainerOptions& o, int begin_epoch, int64_t epoch_size,
            const Data& train) {
  for (int e = begin_epoch; e < o.num_epochs; ++e) {
    const absl::Time t0 = absl::Now();
    train.pipeline->StartEpoch(e);
    for (int64_t b = 0; b < epoch_size; ++b) {
      auto batch = train.pipeline->Next(DeadlineFromNow());
      if (!batch.ok()) {
        LOG(ERROR) << "--data_train: " << batch.status().message();
        return false;
      }
    }
    const double secs = absl::ToDoubleSeconds(absl::Now() - t0);
    Say(
        absl::StrFormat("Epoch[%d] test_io: %.1f images/sec (%d batches of "
                        "%d), %d corrupt records skipped",
                        e, epoch_size * o.batch_size / secs, epoch_size,
                        o.batch_size, EpochSkipped(train)));
  }
  return true;
}

// Adds the last step's predictions of every device to `local` (reset at
// every progress line) and `total` (the epoch's). Replicas::Step already
// checked the labels, so an error here means the sizes went wrong.
absl::Status UpdateMetrics(const Replicas& reps, int num_classes,
                           Metrics* local, Metrics* total) {
  for (int d = 0; d < reps.size(); ++d) {
    for (Metrics* m : {local, total}) {
      absl::Status s =
          m->Update(reps.probabilities(d).span(), reps.labels(d), num_classes);
      if (!s.ok()) return Annotate(s, "training");
    }
  }
  return absl::OkStatus();
}

// Emulated devices for --emulate_device (worker/emulation.h) over `net`,
// one replica built for one sample.
absl::StatusOr<std::unique_ptr<EmulatedDevices>> MakeEmulatedDevices(
    const TrainerOptions& o, nn::Network* net) {
  auto read = ReadDeviceProfile(o.emulate_device);
  if (!read.ok()) return Annotate(read.status(), "--emulate_device");
  const DeviceProfile& profile = *read;
  const std::string reduce =
      !o.local_reduce.empty()
          ? o.local_reduce
          : (o.kvstore_mode == "mxnet" ? "one_device" : "partitioned");
  PSTRAIN_ASSIGN_OR_RETURN(LocalReduce mode, ParseLocalReduce(reduce));
  const int devices = NumDevices(o);
  // MXNet's key's device computes nothing while the key's reduce runs
  // (README, Scaling); pstrain's copies overlap the compute.
  const std::string copies_name =
      !o.emulate_copies.empty()
          ? o.emulate_copies
          : (o.kvstore_mode == "mxnet" ? "per_device" : "overlap");
  PSTRAIN_ASSIGN_OR_RETURN(CopyModel copies, ParseCopyModel(copies_name));
  auto e =
      EmulatedDevices::Create(profile, net, devices, o.batch_size / devices,
                              o.time_dilation, mode, copies);
  if (!e.ok()) {
    return Annotate(e.status(), "--emulate_device " + o.emulate_device);
  }
  LOG(INFO) << "emulating " << devices << " " << profile.device
            << " device(s) of " << profile.machine.name << " ("
            << o.emulate_device << "), local reduce " << reduce << ", copies "
            << copies_name << ", time dilation " << o.time_dilation;
  return e;
}

// The time split (worker/time_split.h) of the trainer's thread: each
// measured interval's seconds go to the epoch's split and to the job's
// running total (which the benchmark line takes differences of). The
// KVStore's and the devices' own clocks say how much of an interval was
// pushing, waiting for weights, the local optimizer, or (emulated)
// device compute and local copies.
class SplitClock {
 public:
  SplitClock(const TrainerOptions& o, const GradientSync* sync,
             const EmulatedDevices* emulated, const kvstore::KVStore* kv)
      : k_(o.time_dilation), sync_(sync), emulated_(emulated), kv_(kv) {}

  // The clocks at the start of an interval.
  struct Mark {
    absl::Time t;
    GradientSync::Times sync;
    double optimizer_s = 0, device_compute_s = 0, device_copy_s = 0;
  };
  Mark Now() const {
    Mark m;
    m.t = absl::Now();
    m.sync = sync_->times();
    m.optimizer_s = kv_->optimizer_seconds();
    if (emulated_ != nullptr) {
      m.device_compute_s = emulated_->times().compute_s;
      m.device_copy_s = emulated_->times().copy_s;
    }
    return m;
  }

  void StartEpoch(absl::Time now) { epoch_.Start(now); }
  // Starts the heartbeats' next reporting interval.
  void StartInterval(absl::Time now) { interval_.Start(now); }
  // Since `m`: waiting for a batch.
  void Data(const Mark& m) {
    TimeParts p;
    p.data_s = absl::ToDoubleSeconds(absl::Now() - m.t);
    Add(p);
  }
  // Since `m`: GradientSync::Step (forward, backward, pushes) when `step`,
  // else FinishStep or WaitAll (waiting for weights).
  void Sync(const Mark& m, bool step) {
    const Mark e = Now();
    const double wall = absl::ToDoubleSeconds(e.t - m.t);
    const double push = e.sync.push_s - m.sync.push_s;
    const double pull = e.sync.pull_s - m.sync.pull_s;
    const double opt = e.optimizer_s - m.optimizer_s;
    TimeParts p;
    p.optimizer_s = opt;
    // A local KVStore runs the optimizer inside the push.
    p.wait_push_s = std::max(0.0, push - opt);
    p.wait_pull_s = pull;
    if (emulated_ != nullptr) {
      // Undilated device clocks, in real seconds.
      p.compute_s = (e.device_compute_s - m.device_compute_s) * k_;
      p.wait_push_s += (e.device_copy_s - m.device_copy_s) * k_;
    } else if (step) {
      p.compute_s = std::max(0.0, wall - push - pull);
    }
    // Waits: the rest (copying the new weights to the other replicas)
    // is waiting for weights too.
    if (!step) p.wait_pull_s += std::max(0.0, wall - p.sum());
    Add(p);
  }

  const TimeSplit& epoch() const { return epoch_; }
  // Since the last StartInterval().
  const TimeSplit& interval() const { return interval_; }
  // Real seconds since the job started.
  const TimeParts& total() const { return total_; }

 private:
  void Add(const TimeParts& p) {
    epoch_.Add(p);
    interval_.Add(p);
    total_ += p;
  }
  const double k_;
  const GradientSync* sync_;
  const EmulatedDevices* emulated_;
  const kvstore::KVStore* kv_;
  TimeSplit epoch_;
  TimeSplit interval_;
  TimeParts total_;
};

// The "benchmark:" line of a --benchmark run: the batches after the first
// warmup_batches, until the last one's weights are back.
class BenchmarkClock {
 public:
  BenchmarkClock(const TrainerOptions& o, int rank, int devices,
                 EmulatedDevices* emulated, const SplitClock* split)
      : o_(o), emulated_(emulated), split_(split) {
    s_.rank = rank;
    s_.devices = devices;
    s_.batch_size = o.batch_size;
    s_.warmup_batches = o.warmup_batches;
    s_.time_dilation = o.time_dilation;
    if (o.warmup_batches == 0) Start();
  }
  // After each batch's FinishStep.
  void BatchDone() {
    ++done_;
    if (done_ == o_.warmup_batches) {
      if (emulated_ != nullptr) emulated_->ResetTimes();
      Start();
    }
  }
  // After the last WaitAll: prints the line (only with --benchmark).
  void Finish() {
    if (!o_.benchmark) return;
    if (done_ <= o_.warmup_batches) {
      LOG(WARNING) << "--benchmark: no batch after the " << o_.warmup_batches
                   << " warm-up batches (--warmup_batches, --num_examples)";
      return;
    }
    s_.batches = done_ - o_.warmup_batches;
    s_.wall_seconds = absl::ToDoubleSeconds(absl::Now() - start_);
    // The epochs' time split over the timed batches, undilated.
    const TimeParts t =
        (split_->total() - start_parts_) * (1 / o_.time_dilation);
    s_.compute_s = t.compute_s;
    s_.push_wait_s = t.wait_push_s;
    s_.pull_wait_s = t.wait_pull_s;
    s_.data_s = t.data_s;
    s_.optimizer_s = t.optimizer_s;
    Say(BenchmarkLine(s_));
  }

 private:
  void Start() {
    start_ = absl::Now();
    start_parts_ = split_->total();
  }
  const TrainerOptions& o_;
  EmulatedDevices* emulated_;
  const SplitClock* split_;
  TimeParts start_parts_;
  BenchmarkSummary s_;
  int64_t done_ = 0;
  absl::Time start_ = absl::Now();
};

// The network's name for the status page: --network, or the --symbol
// file's name.
std::string NetworkName(const TrainerOptions& o) {
  if (o.symbol.empty()) return o.network;
  const size_t slash = o.symbol.find_last_of('/');
  return slash == std::string::npos ? o.symbol : o.symbol.substr(slash + 1);
}

// What this worker's next heartbeats tell the scheduler (dist_*): `steps`
// done of `total_steps` this run, the `epoch` it is in, `images_per_sec`
// over the last reporting interval (emulated images with a time dilation),
// the time split of that interval (which it then restarts), the job's
// network and kv_store, and the time left at that speed.
void PublishStats(const TrainerOptions& o, int64_t steps, int64_t total_steps,
                  int epoch, double images_per_sec, SplitClock* split,
                  kvstore::KVStore* kv) {
  const absl::Time now = absl::Now();
  proto::NodeStats st;
  st.set_steps(steps);
  st.set_epoch(epoch);
  st.set_images_per_sec(images_per_sec);
  split->interval().FillStats(now, &st);
  split->StartInterval(now);
  st.set_network(NetworkName(o));
  st.set_kv_store(o.kv_store);
  if (images_per_sec > 0) {
    st.set_eta_s(
        static_cast<double>(std::max<int64_t>(0, total_steps - steps)) *
        o.batch_size * o.time_dilation / images_per_sec);
  }
  kv->SetNodeStats(st);
}

// Records every layer's forward and backward of `reps`' CPU networks on
// `tl` while it is active ("compute" for device 0, "compute (device D)"
// for the others); a no-op without a timeline. GPU replicas
// (nn::GpuNetwork) are not traced.
void ObserveLayers(timeline::Recorder* tl, Replicas* reps) {
  if (tl == nullptr || !tl->enabled()) return;
  for (int d = 0; d < reps->size(); ++d) {
    nn::Network* net = reps->net(d);
    const int track =
        tl->Track(d == 0 ? std::string("compute")
                         : absl::StrCat("compute (device ", d, ")"));
    net->set_layer_observer([tl, net, track](int id, bool backward,
                                             absl::Time begin, absl::Time end) {
      if (!tl->active()) return;
      timeline::EventArgs args;
      args.ints = {{"step", tl->step()}};
      args.category = backward ? "backward" : "forward";
      tl->Add(track, net->layer(id).name(), begin, end, std::move(args));
    });
  }
}

// Tells the job that this worker is done. A failure is logged and
// otherwise ignored, as it always was at the end of training: by then this
// worker's work is complete (its last pushes waited for, its checkpoint
// written), so its exit code stays 0.
void FinishJob(kvstore::KVStore* kv) {
  absl::Status s = kv->Finish();
  if (!s.ok()) LOG(WARNING) << "finish: " << s.message();
}

}  // namespace

int Train(const TrainerOptions& o) {
  const bool emulated = !o.emulate_device.empty();
  absl::Status devices = emulated ? absl::OkStatus() : CheckDevices(o);
  if (!devices.ok()) {
    LOG(ERROR) << devices.message();
    return 2;
  }
  // One replica per local device; replica 0 holds the weights that are
  // initialized, pulled and saved, the others get copies. Built before the
  // job is joined, so a bad network or GPU fails fast; and declared before
  // the KVStore, so the KVStore (and any reply still landing in the
  // weights) goes first.
  // Emulated devices run one CPU replica for one sample: its buffers stand
  // for the devices' reduced gradients.
  const nn::NetworkFactory factory = NetworkFactoryFor(o);
  auto reps_or =
      emulated ? Replicas::Create(factory, 1, 1)
               : Replicas::Create(factory, o.batch_size, NumDevices(o), o.gpus);
  if (!reps_or.ok()) {
    LOG(ERROR) << reps_or.status().message();
    return 2;
  }
  std::unique_ptr<Replicas> reps = std::move(*reps_or);
  std::unique_ptr<EmulatedDevices> emu;
  if (emulated) {
    auto e = MakeEmulatedDevices(o, reps->net(0));
    if (!e.ok()) {
      LOG(ERROR) << e.status().message();
      return 2;
    }
    emu = std::move(*e);
  }
  const bool mxnet = o.kvstore_mode == "mxnet";
  kvstore::KVStoreOptions kv_options = o.kv;
  if (mxnet) kv_options.placement = kvstore::Placement::kMxnetHash;
  if (!o.recovery.resume_from.empty()) {
    // The servers restore the checkpoint's slices: plan the keys as the
    // job that wrote it did. A checkpoint from before the record: MXNet
    // mode's placement has not changed, pstrain's was the even split.
    absl::StatusOr<checkpoint::Manifest> m =
        checkpoint::ReadManifest(o.recovery.resume_from);
    absl::StatusOr<kvstore::Placement> p = kvstore::Placement::kMxnetHash;
    if (!m.ok()) {
      p = m.status();
    } else if (!m->partition.empty() || !mxnet) {
      p = kvstore::PlacementFromName(m->partition);
    }
    if (!p.ok()) {
      LOG(ERROR) << "--resume_from: " << o.recovery.resume_from << ": "
                 << p.status().message();
      return 1;
    }
    if (*p != kv_options.placement) {
      Say(absl::StrFormat(
          "--resume_from: the checkpoint's keys are split over the servers "
          "as \"%s\"%s; this job keeps that rather than \"%s\"",
          kvstore::PlacementName(*p),
          m->partition.empty()
              ? " (its manifest records no partition: pstrain before "
                "2026-12-07)"
              : "",
          kvstore::PlacementName(kv_options.placement)));
    }
    kv_options.placement = *p;
  }
  auto kv_or = kvstore::KVStore::Create(o.kv_store, kv_options);
  if (!kv_or.ok()) {
    LOG(ERROR) << kv_or.status().message();
    return 1;
  }
  auto kv = std::move(*kv_or);
  const int rank = kv->rank(), workers = kv->num_workers();
  nn::Network* net = reps->net(0);
  absl::Status init = nn::Initialize(net, o.initializer, o.seed);
  if (!init.ok()) {
    LOG(ERROR) << init.message();
    return 2;
  }
  int begin_epoch = 0;
  if (o.load_epoch > 0) {
    const std::string path = CheckpointParamsPath(o.model_prefix, o.load_epoch);
    absl::Status loaded = LoadCheckpoint(path, net);
    if (!loaded.ok()) {
      LOG(ERROR) << "--load_epoch " << o.load_epoch << ": " << loaded.message();
      return 1;
    }
    begin_epoch = o.load_epoch;
    Say(absl::StrFormat("Loaded checkpoint from \"%s\"", path));
  } else if (!o.pretrained.empty()) {
    auto pre = ParsePretrained(o.pretrained);
    auto loaded =
        pre.ok()
            ? LoadPretrained(CheckpointParamsPath(pre->prefix, pre->epoch), net)
            : absl::StatusOr<PretrainedLoad>(pre.status());
    if (!loaded.ok()) {
      LOG(ERROR) << "--pretrained: " << loaded.status().message();
      return 1;
    }
    Say(absl::StrFormat(
        "Loaded %d pretrained arrays from \"%s\"%s", loaded->loaded,
        CheckpointParamsPath(pre->prefix, pre->epoch),
        loaded->fresh.empty()
            ? ""
            : absl::StrCat("; freshly initialized: ",
                           absl::StrJoin(loaded->fresh, ", "))));
  }
  // Fixed parameters: the same on every device, none of them a key.
  for (int d = 0; d < reps->size(); ++d) {
    auto fixed = FixParams(o.fixed_params, reps->net(d));
    if (!fixed.ok()) {
      LOG(ERROR) << fixed.status().message();
      return 2;
    }
    if (d == 0 && !fixed->empty()) {
      Say(absl::StrFormat("Fixed %d parameters (--fixed_params): %s",
                          fixed->size(), absl::StrJoin(*fixed, ", ")));
    }
  }

  // Data and epoch size: every worker runs the same number of batches.
  JobData data;
  absl::Status opened = OpenJobData(o, rank, workers, reps->size(), &data);
  if (!opened.ok()) {
    LOG(ERROR) << opened.message();
    return 1;
  }
  Data& train = data.train;
  Data& val = data.val;
  const int64_t epoch_size = data.epoch_size;

  if (o.test_io) {
    if (!TestIo(o, begin_epoch, epoch_size, train)) return 1;
    FinishJob(kv.get());
    return 0;
  }

  // Everyone starts from rank 0's weights, on every device.
  GradientSync::Options so;
  so.overlap = o.overlap;
  so.fusion_bytes = mxnet ? 0 : o.fusion_bytes;
  so.fusion_max_array_bytes = o.fusion_max_array_bytes;
  so.priorities = !mxnet;
  so.emulated = emu.get();
  so.wait_timeout = kWaitTimeout;
  // The timeline (dist_*; --timeline): steps count from 1 (SetStep below).
  timeline::Recorder* const tl = kv->timeline();
  if (tl == nullptr && !o.kv.cluster.timeline.path.empty()) {
    LOG(WARNING) << "--timeline: only dist_* KVStores record a timeline; "
                    "--kv_store "
                 << o.kv_store << " writes none";
  }
  so.timeline = tl;
  if (!emulated) ObserveLayers(tl, reps.get());
  const int data_track = tl != nullptr ? tl->Track("data") : 0;
  GradientSync sync(kv.get(), reps.get(), so);
  absl::Status s = sync.Init(
      MakeOptimizerConfig(o, workers, begin_epoch, epoch_size, sync.learned()));
  if (!s.ok()) {
    LOG(ERROR) << "KVStore: " << s.message();
    return 1;
  }

  std::mt19937 rng(o.seed + rank);
  RecoveryOptions recovery = o.recovery;
  recovery.placement = kv_options.placement;
  Checkpointer ckpt(recovery, kv.get());
  ResumePoint resume;  // Where this run starts (issue #15).
  if (!o.recovery.resume_from.empty()) {
    auto r = ResumeWorker(o.recovery.resume_from, rank, reps.get(), &rng);
    if (!r.ok()) {
      LOG(ERROR) << "--resume_from: " << r.status().message();
      return 1;
    }
    resume = *r;
    begin_epoch = resume.epoch;
    Say(absl::StrFormat("Resumed from \"%s\": step %d, epoch %d, batch %d",
                        o.recovery.resume_from, resume.step, resume.epoch,
                        resume.batch));
  }
  // A replacement (--recovery=replace) continues after the step the
  // servers are at: that many steps past where this run began.
  const int64_t replaced_round = kv->replacement_round();
  if (replaced_round >= 0) {
    const int64_t index = static_cast<int64_t>(begin_epoch) * epoch_size +
                          resume.batch + replaced_round;
    begin_epoch = static_cast<int>(index / epoch_size);
    resume.epoch = begin_epoch;
    resume.batch = index % epoch_size;
    resume.step += replaced_round;
    Say(absl::StrFormat(
        "worker rank %d: replacement (--replace_rank %d) joins at step %d: "
        "epoch %d, batch %d",
        rank, o.recovery.replace_rank, resume.step, resume.epoch,
        resume.batch));
  }
  const absl::Time process_start = absl::Now();
  bool said_training_again = replaced_round < 0;
  SplitClock split(o, &sync, emu.get(), kv.get());
  BenchmarkClock clock(o, rank, NumDevices(o), emu.get(), &split);
  int64_t steps = 0;  // For the heartbeats.
  const int64_t total_steps =
      static_cast<int64_t>(o.num_epochs - begin_epoch) * epoch_size -
      resume.batch;
  const bool slow = rank == o.slow_worker_rank && o.slow_worker_ms > 0;
  split.StartInterval(absl::Now());
  for (int epoch = begin_epoch; epoch < o.num_epochs; ++epoch) {
    const absl::Time t0 = absl::Now();
    split.StartEpoch(t0);
    Metrics local(o.top_k, false), total(o.top_k, false);
    const int64_t first = epoch == begin_epoch ? resume.batch : 0;
    if (!o.benchmark) train.pipeline->StartEpoch(epoch, first);
    absl::Time tic = absl::Now();
    for (int64_t b = first; b < epoch_size; ++b) {
      std::vector<float> x, labels;
      if (tl != nullptr) tl->SetStep(steps + 1);
      SplitClock::Mark m = split.Now();
      if (emulated) {
        // The emulated devices read no input.
      } else if (o.benchmark) {
        RandomBatch(o, &rng, &x, &labels);
      } else {
        auto batch = train.pipeline->Next(DeadlineFromNow());
        if (!batch.ok()) {
          LOG(ERROR) << "--data_train: " << batch.status().message();
          return 1;
        }
        x = std::move(batch->data);
        labels = std::move(batch->labels);
      }
      if (slow) absl::SleepFor(absl::Milliseconds(o.slow_worker_ms));
      if (!emulated) split.Data(m);
      if (tl != nullptr && tl->active() && !emulated) {
        timeline::EventArgs args;
        args.ints = {{"step", steps + 1}};
        tl->Add(data_track, "data wait", m.t, absl::Now(), std::move(args));
      }
      // Forward and backward on every device, each on its slice, and the
      // gradients pushed; the metrics are counted while they travel.
      m = split.Now();
      s = sync.Step(std::move(x), std::move(labels));
      split.Sync(m, /*step=*/true);
      if (s.ok() && !emulated)
        s = UpdateMetrics(*reps, o.num_classes, &local, &total);
      if (s.ok()) {
        m = split.Now();
        s = sync.FinishStep();
        split.Sync(m, /*step=*/false);
      }
      if (!s.ok()) {
        LOG(ERROR) << "epoch " << epoch << " batch " << b << ": "
                   << s.message();
        return 1;
      }
      clock.BatchDone();
      ++steps;
      if (!said_training_again) {
        said_training_again = true;
        const absl::Time now = absl::Now();
        const int64_t since_us = o.recovery.replace_since_us;
        Say(absl::StrFormat(
            "worker rank %d: replacement training again: step %d done %s "
            "after launch saw worker rank %d die (%.2f s after joining)",
            rank, resume.step + steps,
            since_us > 0
                ? absl::StrFormat("%.2f s",
                                  absl::ToDoubleSeconds(
                                      now - absl::FromUnixMicros(since_us)))
                : std::string("(unknown)"),
            o.recovery.replace_rank,
            absl::ToDoubleSeconds(now - process_start)));
      }
      if (b + 1 < epoch_size) {
        s = ckpt.AfterStep({resume.step + steps, epoch, b + 1}, rng, &sync,
                           reps.get());
        if (!s.ok()) {
          LOG(ERROR) << "epoch " << epoch << " batch " << b << ": "
                     << s.message();
          return 1;
        }
      }
      ckpt.MaybeDieForTest(resume.step + steps);
      if ((b + 1) % o.disp_batches == 0) {
        // Emulated devices: the emulated machine's speed.
        const double speed = o.disp_batches * o.batch_size * o.time_dilation /
                             absl::ToDoubleSeconds(absl::Now() - tic);
        Say(BatchLine(epoch, b + 1 - o.disp_batches, b + 1, speed, local));
        PublishStats(o, steps, total_steps, epoch, speed, &split, kv.get());
        local.Reset();
        tic = absl::Now();
      }
    }
    // The epoch's last pushes land before metrics, checkpoints, validation.
    SplitClock::Mark m = split.Now();
    s = sync.WaitAll();
    split.Sync(m, /*step=*/false);
    // Validation and checkpoints are no step of the window.
    if (tl != nullptr) tl->SetStep(0);
    if (!s.ok()) {
      LOG(ERROR) << "epoch " << epoch << ": " << s.message();
      return 1;
    }
    const absl::Time loop_end = absl::Now();
    for (const auto& line : EpochMetricLines(epoch, "Train", total)) Say(line);
    Say(TimeCostLine(epoch, absl::ToDoubleSeconds(loop_end - t0)));
    Say(split.epoch().Line(epoch, loop_end));
    PublishStats(o, steps, total_steps, epoch,
                 epoch_size * o.batch_size * o.time_dilation /
                     std::max(1e-9, absl::ToDoubleSeconds(loop_end - t0)),
                 &split, kv.get());
    if (!o.benchmark) {
      Say(absl::StrFormat("Epoch[%d] skipped %d corrupt records", epoch,
                          EpochSkipped(train)));
    }
    if (rank == 0 && !o.model_prefix.empty() &&
        (epoch + 1) % o.save_period == 0) {
      auto saved = SaveCheckpoint(o.model_prefix, epoch + 1, net);
      if (!saved.ok()) {
        LOG(ERROR) << saved.status().message();
        return 1;
      }
      Say(absl::StrFormat("Saved checkpoint to \"%s\"", *saved));
    }
    if (val.source) {
      auto vm = Validate(reps.get(), val.pipeline.get(), val.source->size(),
                         o.num_classes, o.top_k, kv.get(), kWaitTimeout);
      if (!vm.ok()) {
        LOG(ERROR) << vm.status().message();
        return 1;
      }
      for (const auto& line : EpochMetricLines(epoch, "Validation", *vm))
        Say(line);
      if (val.pipeline) {
        Say(absl::StrFormat("Epoch[%d] Validation skipped %d corrupt records",
                            epoch, EpochSkipped(val)));
      }
    }
    s = ckpt.AtEpochEnd({resume.step + steps, epoch + 1, 0}, rng, &sync,
                        reps.get());
    if (!s.ok()) {
      LOG(ERROR) << "epoch " << epoch << ": " << s.message();
      return 1;
    }
  }
  clock.Finish();
  s = ckpt.Finish(DeadlineFromNow());
  if (!s.ok()) {
    LOG(ERROR) << s.message();
    return 1;
  }
  if (o.kv_store.rfind("dist", 0) == 0) LogTransportStats(*kv);
  FinishJob(kv.get());
  return 0;
}

nn::NetworkFactory NetworkFactoryFor(const TrainerOptions& o) {
  if (!o.symbol.empty()) {
    nn::ImportOptions io;
    io.num_classes = o.num_classes;
    return [path = o.symbol, shape = o.image_shape, io](int batch) {
      return nn::ImportSymbolFile(path, shape, batch, io);
    };
  }
  return [name = o.network, layers = o.num_layers, classes = o.num_classes,
          shape = o.image_shape](int batch) {
    return nn::BuildNetwork(name, layers, classes, shape, batch);
  };
}

absl::Status CheckBatchFits(const TrainerOptions& o) {
  PSTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<nn::Network> one,
                           NetworkFactoryFor(o)(1));
  return CheckMemory(o, *one);
}

int DryRun(const TrainerOptions& o) {
  Say(absl::StrFormat(
      "dry run: flags OK (network %s, num_layers %d, image_shape %d,%d,%d, "
      "batch_size %d on %d device(s), kv_store %s)",
      o.symbol.empty() ? o.network : o.symbol, o.num_layers, o.image_shape[0],
      o.image_shape[1], o.image_shape[2], o.batch_size, NumDevices(o),
      o.kv_store));
  absl::Status devices = CheckDevices(o);
  if (!devices.ok()) Say(absl::StrCat("dry run: note: ", devices.message()));
  auto net = NetworkFactoryFor(o)(1);
  if (!net.ok()) {
    Say(absl::StrCat("dry run: network: ", net.status().message()));
    return 3;
  }
  Say(absl::StrFormat("dry run: network OK: %d parameters in %d layers",
                      (*net)->NumParams(), (*net)->Summary().size()));
  absl::Status fits = CheckMemory(o, **net);
  if (!fits.ok()) {
    Say(absl::StrCat("dry run: ", fits.message()));
    return 2;
  }
  return 0;
}

}  // namespace worker
}  // namespace pstrain
