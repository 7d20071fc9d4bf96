#include "worker/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <limits>
#include <optional>
#include <random>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "checkpoint/ndarray_list.h"
#include "data/pipeline.h"
#include "data/record_source.h"
#include "glog/logging.h"
#include "kernels/cpu_ops.h"
#include "nn/network.h"
#include "util/status.h"
#include "worker/metrics.h"
#include "worker/options.h"
#include "worker/replicas.h"

namespace pstrain {
namespace worker {
namespace {

absl::Time Later() { return absl::Now() + absl::Minutes(10); }

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
absl::StatusOr<Data> OpenData(const TrainerOptions& o, const std::string& path, int rank,
                              int workers, int64_t batches, bool train) {
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
  p.batches_per_epoch = batches > 0 ? batches
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

}  // namespace

int Train(const TrainerOptions& o) {
  absl::Status devices = CheckDevices(o);
  if (!devices.ok()) {
    LOG(ERROR) << devices.message();
    return 2;
  }
  // One replica per local device; replica 0 holds the weights that are
  // initialized, pulled and saved, the others get copies. Built before the
  // job is joined, so a bad network or GPU fails fast; and declared before
  // the KVStore, so the KVStore (and any reply still landing in the
  // weights) goes first.
  auto reps_or = Replicas::Create(o.network, o.num_layers, o.num_classes, o.image_shape,
                                  o.batch_size, NumDevices(o), o.gpus);
  if (!reps_or.ok()) {
    LOG(ERROR) << reps_or.status().message();
    return 2;
  }
  std::unique_ptr<Replicas> reps = std::move(*reps_or);
  auto kv_or = kvstore::KVStore::Create(o.kv_store, o.kv);
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
  // Arguments and auxiliary states; the KVStore trains the arguments
  // (learned[k] is the index of key k), auxiliary states (batch norm's moving
  // statistics) stay local to each worker and device, as in MXNet.
  const std::vector<nn::Param*>& params = reps->params(0);
  std::vector<size_t> learned;
  for (size_t i = 0; i < params.size(); ++i) {
    if (!params[i]->aux) learned.push_back(i);
  }
  int begin_epoch = 0;
  if (o.load_epoch > 0) {
    const std::string path = absl::StrFormat("%s-%04d.params", o.model_prefix, o.load_epoch);
    auto arrays = checkpoint::ReadNDArrayListFile(path);
    if (!arrays.ok()) {
      LOG(ERROR) << "--load_epoch " << o.load_epoch << ": " << arrays.status().message();
      return 1;
    }
    for (const auto& a : *arrays) {
      const std::string name = a.name.substr(a.name.find(':') + 1);
      nn::Param* p = net->FindParam(name);
      if (p == nullptr || p->value.size() != a.num_elements() || a.dtype != checkpoint::DType::kFloat32) {
        LOG(ERROR) << path << ": array " << a.name << " does not fit the network";
        return 1;
      }
      auto v = a.ToFloats();
      if (!v.ok()) {
        LOG(ERROR) << path << ": " << v.status().message();
        return 1;
      }
      std::copy(v->begin(), v->end(), p->value.data());
    }
    begin_epoch = o.load_epoch;
    Say(absl::StrFormat("Loaded checkpoint from \"%s\"", path));
  }

  // Data and epoch size: every worker runs the same number of batches.
  Data train, val;
  int64_t epoch_size = 0;
  if (!o.benchmark) {
    auto size = EpochSize(o, workers);
    if (!size.ok()) {
      LOG(ERROR) << "--data_train: " << size.status().message();
      return 1;
    }
    epoch_size = *size;
    auto t = OpenData(o, o.data_train, rank, workers, epoch_size, true);
    if (!t.ok()) {
      LOG(ERROR) << "--data_train: " << t.status().message();
      return 1;
    }
    train = std::move(*t);
    LOG(INFO) << "worker " << rank << " of " << workers << ": " << train.source->size()
              << " records in its part of --data_train, " << epoch_size << " batches of "
              << o.batch_size << " per epoch on " << reps->size() << " device(s)";
    if (!o.data_val.empty() && !o.test_io) {
      auto v = OpenData(o, o.data_val, rank, workers, 0, false);
      if (!v.ok()) {
        LOG(ERROR) << "--data_val: " << v.status().message();
        return 1;
      }
      val = std::move(*v);
    }
  } else {
    epoch_size = std::max<int64_t>(1, o.num_examples / workers / o.batch_size);
  }

  if (o.test_io) {
    for (int e = begin_epoch; e < o.num_epochs; ++e) {
      const absl::Time t0 = absl::Now();
      train.pipeline->StartEpoch(e);
      for (int64_t b = 0; b < epoch_size; ++b) {
        auto batch = train.pipeline->Next(Later());
        if (!batch.ok()) {
          LOG(ERROR) << "--data_train: " << batch.status().message();
          return 1;
        }
      }
      const double secs = absl::ToDoubleSeconds(absl::Now() - t0);
      Say(
          absl::StrFormat("Epoch[%d] test_io: %.1f images/sec (%d batches of "
                          "%d), %d corrupt records skipped",
                          e, epoch_size * o.batch_size / secs, epoch_size,
                          o.batch_size, EpochSkipped(train)));
    }
    (void)kv->Finish();
    return 0;
  }

  // KVStore: key k is the k-th learned parameter.
  std::vector<int64_t> keys;
  std::vector<absl::Span<const float>> values;
  std::unordered_map<const nn::Param*, size_t> key_of;
  for (size_t k = 0; k < learned.size(); ++k) {
    keys.push_back(static_cast<int64_t>(k));
    values.push_back(params[learned[k]]->value.span());
    key_of[params[learned[k]]] = k;
  }
  absl::Status s = kv->Init(keys, values, Later());
  if (s.ok()) {
    proto::OptimizerConfig cfg;
    cfg.set_kind(o.optimizer == "adam"  ? proto::OptimizerConfig::ADAM
                 : o.optimizer == "nag" ? proto::OptimizerConfig::NAG
                                        : proto::OptimizerConfig::SGD);
    double lr = o.lr;
    auto* sched = cfg.mutable_schedule();
    for (int e : o.lr_step_epochs) {
      if (e <= begin_epoch) {
        lr *= o.lr_factor;  // fit.py: steps already passed shrink the start lr.
      } else {
        sched->add_steps(epoch_size * (e - begin_epoch));
      }
    }
    if (sched->steps_size() > 0) {
      sched->set_kind(proto::LearningRateSchedule::MULTI_FACTOR);
      sched->set_factor(o.lr_factor);
    }
    cfg.set_learning_rate(lr);
    cfg.set_momentum(o.optimizer == "adam" ? 0 : o.mom);
    cfg.set_beta1(0.9);
    cfg.set_beta2(0.999);
    cfg.set_epsilon(1e-8);
    cfg.set_weight_decay(o.wd);
    const bool sync = o.kv_store == "dist_sync" || o.kv_store == "dist_device_sync";
    cfg.set_rescale_grad(1.0 / (o.batch_size * (sync ? workers : 1)));
    for (size_t k = 0; k < learned.size(); ++k) {
      (*cfg.mutable_wd_mult())[static_cast<int64_t>(k)] = params[learned[k]]->wd_mult;
      (*cfg.mutable_lr_mult())[static_cast<int64_t>(k)] = params[learned[k]]->lr_mult;
    }
    s = kv->SetOptimizer(cfg, Later());
  }
  // Everyone starts from rank 0's weights, on every device.
  for (size_t k = 0; s.ok() && k < learned.size(); ++k) {
    auto h = kv->Pull(keys[k], params[learned[k]]->value.span(), 0);
    s = h.ok() ? kv->Wait(*h, Later()) : h.status();
  }
  if (s.ok()) s = reps->CopyWeightsFromFirst(Later());
  if (!s.ok()) {
    LOG(ERROR) << "KVStore: " << s.message();
    return 1;
  }

  // Overlap (one device): each layer's gradients are pushed as soon as
  // backward produces them, first layers first; the next forward waits for
  // a layer's new weights only when it reaches that layer.
  const bool overlap = o.overlap && reps->size() == 1;
  // Gradients ready and not yet pushed (tensor fusion, --fusion_bytes):
  // pushed together as one PushPullGroup; each key's pending operation is
  // shared by the keys of its group and waited for once.
  struct Pushed {
    kvstore::Handle handle = 0;
    bool waited = false;
    absl::Status status;
  };
  std::vector<std::shared_ptr<Pushed>> pending(learned.size());
  std::vector<size_t> unsent;
  int64_t unsent_bytes = 0;
  absl::Status comm;  // First error of a push issued during backward.
  auto flush = [&] {
    if (unsent.empty() || !comm.ok()) return;
    std::vector<kvstore::KeyPushPull> group;
    size_t first = unsent.front();
    for (size_t k : unsent) {
      group.push_back({keys[k], reps->Grads(learned[k]), params[learned[k]]->value.span()});
      first = std::min(first, k);
    }
    // The first layers (lowest keys) at the highest priority.
    auto h = kv->PushPullGroup(group, -static_cast<int>(first));
    if (h.ok()) {
      auto p = std::make_shared<Pushed>();
      p->handle = *h;
      for (size_t k : unsent) pending[k] = p;
    } else {
      comm = h.status();
    }
    unsent.clear();
    unsent_bytes = 0;
  };
  auto push = [&](size_t k) {
    unsent.push_back(k);
    unsent_bytes += static_cast<int64_t>(params[learned[k]]->grad.size() * sizeof(float));
    if (unsent_bytes >= o.fusion_bytes) flush();
  };
  auto wait_key = [&](size_t k) {
    if (!pending[k]) return absl::OkStatus();
    std::shared_ptr<Pushed> p = std::move(pending[k]);
    if (!p->waited) {
      p->status = kv->Wait(p->handle, Later());
      p->waited = true;
    }
    return p->status;
  };
  auto wait_all = [&] {
    absl::Status all = comm;
    for (size_t k = 0; k < pending.size(); ++k) {
      absl::Status w = wait_key(k);
      if (all.ok()) all = w;
    }
    return all;
  };
  const nn::Network::ParamsNeeded needed = [&](const std::vector<nn::Param*>& ps) {
    for (const nn::Param* p : ps) PSTRAIN_RETURN_IF_ERROR(wait_key(key_of.at(p)));
    return absl::OkStatus();
  };
  const nn::Network::GradsReady ready = [&](const std::vector<nn::Param*>& ps) {
    for (nn::Param* p : ps) push(key_of.at(p));
  };

  const size_t sample_floats =
      static_cast<size_t>(o.image_shape[0] * o.image_shape[1] * o.image_shape[2]);
  std::mt19937 rng(o.seed + rank);
  for (int epoch = begin_epoch; epoch < o.num_epochs; ++epoch) {
    const absl::Time t0 = absl::Now();
    Metrics local(o.top_k, false), total(o.top_k, false);
    if (!o.benchmark) train.pipeline->StartEpoch(epoch);
    absl::Time tic = absl::Now();
    for (int64_t b = 0; b < epoch_size; ++b) {
      std::vector<float> x, labels;
      if (o.benchmark) {
        std::normal_distribution<float> nd;
        x.resize(sample_floats * o.batch_size);
        labels.resize(o.batch_size);
        for (auto& v : x) v = nd(rng);
        for (auto& l : labels) l = static_cast<float>(rng() % o.num_classes);
      } else {
        auto batch = train.pipeline->Next(Later());
        if (!batch.ok()) {
          LOG(ERROR) << "--data_train: " << batch.status().message();
          return 1;
        }
        x = std::move(batch->data);
        labels = std::move(batch->labels);
      }
      // Forward and backward on every device, each on its slice.
      s = overlap ? reps->Step(std::move(x), std::move(labels), /*backward=*/true, Later(),
                               needed, ready)
                  : reps->Step(std::move(x), std::move(labels), /*backward=*/true, Later());
      if (s.ok()) s = comm;
      if (!s.ok()) {
        LOG(ERROR) << "epoch " << epoch << " batch " << b << ": " << s.message();
        return 1;
      }
      // Without overlap, push every gradient now (summed over the devices:
      // one push per key, fused by --fusion_bytes), last layers first, and
      // pull the new weights into device 0; with overlap only what backward
      // left unsent goes now (the first layers).
      for (size_t k = learned.size(); !overlap && k-- > 0;) push(k);
      flush();
      s = comm;
      for (int d = 0; d < reps->size(); ++d) {
        (void)local.Update(reps->probabilities(d).span(), reps->labels(d), o.num_classes);
        (void)total.Update(reps->probabilities(d).span(), reps->labels(d), o.num_classes);
      }
      if (s.ok() && !overlap) {
        s = wait_all();
        if (s.ok()) s = reps->CopyWeightsFromFirst(Later());
      }
      if (!s.ok()) {
        LOG(ERROR) << "epoch " << epoch << " batch " << b << ": " << s.message();
        return 1;
      }
      if ((b + 1) % o.disp_batches == 0) {
        const double speed = o.disp_batches * o.batch_size / absl::ToDoubleSeconds(absl::Now() - tic);
        Say(BatchLine(epoch, b + 1 - o.disp_batches, b + 1, speed, local));
        local.Reset();
        tic = absl::Now();
      }
    }
    // The epoch's last pushes land before metrics, checkpoints, validation.
    s = wait_all();
    if (!s.ok()) {
      LOG(ERROR) << "epoch " << epoch << ": " << s.message();
      return 1;
    }
    for (const auto& line : EpochMetricLines(epoch, "Train", total)) Say(line);
    Say(TimeCostLine(epoch, absl::ToDoubleSeconds(absl::Now() - t0)));
    if (!o.benchmark) {
      Say(absl::StrFormat("Epoch[%d] skipped %d corrupt records", epoch,
                          EpochSkipped(train)));
    }
    if (rank == 0 && !o.model_prefix.empty() && (epoch + 1) % o.save_period == 0) {
      std::vector<checkpoint::NDArray> arrays;
      for (nn::Param* p : params) {
        std::vector<float> v(p->value.data(), p->value.data() + p->value.size());
        arrays.push_back(checkpoint::NDArray::FromFloats(
            absl::StrCat(p->aux ? "aux:" : "arg:", p->name), p->value.shape(), v));
      }
      const std::string symbol = o.model_prefix + "-symbol.json";
      std::ofstream(symbol) << net->SymbolJson();
      const std::string path = absl::StrFormat("%s-%04d.params", o.model_prefix, epoch + 1);
      absl::Status w = checkpoint::WriteNDArrayListFile(path, arrays);
      if (!w.ok()) {
        LOG(ERROR) << w.message();
        return 1;
      }
      Say(absl::StrFormat("Saved checkpoint to \"%s\"", path));
    }
    if (val.source) {
      Metrics vm(o.top_k, false);
      const int64_t n = val.source->size();
      const int64_t batches = (n + o.batch_size - 1) / o.batch_size;
      if (val.pipeline) val.pipeline->StartEpoch(0);
      for (int64_t b = 0; b < batches; ++b) {
        auto batch = val.pipeline->Next(Later());
        if (!batch.ok()) {
          LOG(ERROR) << "--data_val: " << batch.status().message();
          return 1;
        }
        s = reps->Step(std::move(batch->data), std::move(batch->labels), /*backward=*/false,
                       Later());
        if (!s.ok()) {
          LOG(ERROR) << "validation: " << s.message();
          return 1;
        }
        // The last batch wraps around: count only the real samples.
        const int64_t real = std::min<int64_t>(o.batch_size, n - b * o.batch_size);
        for (int d = 0; d < reps->size(); ++d) {
          const int64_t mine = std::clamp<int64_t>(real - d * reps->per_device_batch(), 0,
                                                   reps->per_device_batch());
          (void)vm.Update(reps->probabilities(d).span().subspan(0, mine * o.num_classes),
                          reps->labels(d).subspan(0, mine), o.num_classes);
        }
      }
      // Every worker reports the metrics over the whole validation set.
      std::vector<double> sums = vm.Sums();
      std::vector<float> mine(sums.begin(), sums.end()), all(sums.size());
      absl::Status r = kv->AllReduceSum(-1, mine, absl::MakeSpan(all), Later());
      if (!r.ok()) {
        LOG(ERROR) << "combining validation metrics: " << r.message();
        return 1;
      }
      Metrics combined(o.top_k, false);
      combined.AddSums(std::vector<double>(all.begin(), all.end()));
      for (const auto& line : EpochMetricLines(epoch, "Validation", combined)) Say(line);
      if (val.pipeline) {
        Say(absl::StrFormat("Epoch[%d] Validation skipped %d corrupt records",
                            epoch, EpochSkipped(val)));
      }
    }
  }
  if (o.kv_store.rfind("dist", 0) == 0) {
    // How the tensors travelled: servers on this host share memory.
    const transport::TransportStats st = kv->transport_stats();
    LOG(INFO) << "worker " << kv->rank() << ": " << st.sent << " messages sent, " << st.received
              << " received; tensors through shared memory: " << st.shm_frames_sent << " sent, "
              << st.shm_frames_received << " received, " << st.shm_frames_inline
              << " over TCP because the arena was full (--shm_bytes); " << st.dropped_malformed
              << " malformed messages dropped";
  }
  s = kv->Finish();
  if (!s.ok()) LOG(WARNING) << "finish: " << s.message();
  return 0;
}

absl::Status CheckBatchFits(const TrainerOptions& o) {
  PSTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<nn::Network> one,
                           nn::BuildNetwork(o.network, o.num_layers,
                                            o.num_classes, o.image_shape, 1));
  return CheckMemory(o, *one);
}

int DryRun(const TrainerOptions& o) {
  Say(absl::StrFormat("dry run: flags OK (network %s, num_layers %d, image_shape %d,%d,%d, "
                      "batch_size %d on %d device(s), kv_store %s)",
                      o.network, o.num_layers, o.image_shape[0], o.image_shape[1],
                      o.image_shape[2], o.batch_size, NumDevices(o), o.kv_store));
  absl::Status devices = CheckDevices(o);
  if (!devices.ok()) Say(absl::StrCat("dry run: note: ", devices.message()));
  auto net = nn::BuildNetwork(o.network, o.num_layers, o.num_classes, o.image_shape, 1);
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
