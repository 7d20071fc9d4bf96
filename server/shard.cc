#include "server/shard.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "compression/codec.h"
#include "glog/logging.h"
#include "util/status.h"

namespace pstrain {
namespace server {
namespace {

using transport::Frame;
using transport::Message;

// dst = a + b, elementwise (restrict: the compiler vectorizes freely).
void Add2(float* __restrict dst, const float* __restrict a,
          const float* __restrict b, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = a[i] + b[i];
}

// dst += src.
void AddTo(float* __restrict dst, const float* __restrict src, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] += src[i];
}

// dst = ((g[0] + g[1]) + g[2]) + ..., straight from the received frames, in
// this (worker rank) order: bitwise reproducible. REQUIRES: !g.empty().
void SumInto(float* dst, const std::vector<absl::Span<const float>>& g) {
  const size_t n = g[0].size();
  if (g.size() == 1) {
    std::memcpy(dst, g[0].data(), n * sizeof(float));
    return;
  }
  Add2(dst, g[0].data(), g[1].data(), n);
  for (size_t r = 2; r < g.size(); ++r) AddTo(dst, g[r].data(), n);
}

// OK when `msg` has one frame per slice its header names, each with the
// bytes its length takes in its encoding (float32 unless the header says
// otherwise; the transport has checked this for messages from the
// network; the shard does not rely on it).
absl::Status CheckFrames(const Message& msg, const char* what) {
  const proto::Header& h = msg.header;
  if (msg.frames.size() != static_cast<size_t>(h.keys_size())) {
    return absl::InvalidArgumentError(absl::StrCat(what, " without values"));
  }
  if (h.offsets_size() != h.keys_size() || h.lengths_size() != h.keys_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", h.keys_size(), " keys, ", h.offsets_size(),
                     " offsets, ", h.lengths_size(), " lengths"));
  }
  for (int i = 0; i < h.keys_size(); ++i) {
    const size_t bytes = msg.frames[i].size();
    const proto::Encoding e =
        i < h.encodings_size() ? h.encodings(i) : proto::RAW_FLOAT32;
    const uint64_t want =
        h.lengths(i) < 0 ? 0 : compression::EncodedBytes(e, h.lengths(i));
    if (h.lengths(i) < 0 || bytes != want) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": key ", h.keys(i), " offset ", h.offsets(i), " has ", bytes,
          " bytes for ", h.lengths(i), " values as ",
          compression::EncodingName(e), ", which take ", want));
    }
  }
  return absl::OkStatus();
}

}  // namespace

Message MakeReply(const proto::Header& req, const std::string& error,
                  std::vector<Frame> frames, bool with_slices) {
  Message r;
  r.header.set_type(proto::RESPONSE);
  r.header.set_request_id(req.request_id());
  r.header.set_priority(req.priority());
  r.header.set_error(error);
  if (with_slices) {
    for (int i = 0; i < req.keys_size(); ++i) {
      r.header.add_keys(req.keys(i));
      r.header.add_offsets(req.offsets(i));
      r.header.add_lengths(req.lengths(i));
    }
    // The weights go in the encodings the request asked for (WeightsOf).
    *r.header.mutable_encodings() = req.reply_encodings();
  }
  r.frames = std::move(frames);
  return r;
}

Shard::Version::Version(std::vector<float> v)
    : owned(std::move(v)), values(absl::MakeSpan(owned)) {}

Shard::Version::Version(Frame f, const transport::Transport* shared)
    : frame(std::move(f)),
      values(reinterpret_cast<float*>(frame.mutable_data()),
             frame.size() / sizeof(float)),
      shared(shared) {
  CHECK(frame.mutable_data() != nullptr || frame.size() == 0);
}

bool Shard::Version::free() const {
  return readers.load(std::memory_order_acquire) == 0 &&
         (shared == nullptr || !shared->SharedFrameInUse(frame));
}

Shard::Shard(const ShardOptions& options) : options_(options) {
  CHECK_GE(options_.num_workers, 1);
  if (options_.timeline != nullptr) {
    sum_track_ = options_.timeline->Track("sum");
    update_track_ = options_.timeline->Track("update");
  }
}

int64_t Shard::TracedStep(const SliceId& id, const Slice& s) const {
  if (options_.timeline == nullptr || id.first < 0) return 0;
  const int64_t step = sync_ ? s.rounds : s.rounds / options_.num_workers + 1;
  return options_.timeline->InWindow(step) ? step : 0;
}

void Shard::Trace(int track, const char* name, const SliceId& id,
                  const Slice& s, int64_t step, absl::Time begin,
                  absl::Time end) {
  timeline::EventArgs args;
  args.ints = {
      {"key", id.first},
      {"offset", id.second},
      {"bytes", static_cast<int64_t>(s.weights().size() * sizeof(float))},
      {"step", step}};
  options_.timeline->Add(track, name, begin, end, std::move(args));
}

Shard::~Shard() = default;

Shard::Buffer Shard::NewVersion(size_t n) const {
  if (options_.shared != nullptr) {
    Frame f = options_.shared->NewSharedFrame(n * sizeof(float));
    if (f.size() > 0)
      return std::make_shared<Version>(std::move(f), options_.shared);
  }
  return std::make_shared<Version>(std::vector<float>(n));
}

absl::Span<float> Shard::Writable(Slice& s, bool keep) {
  if (!s.weights_ptr->free()) {
    Buffer* spare = nullptr;
    for (Buffer& b : s.spares) {
      if (b->free()) {
        spare = &b;
        break;
      }
    }
    if (spare == nullptr) {
      s.spares.push_back(NewVersion(s.weights().size()));
      spare = &s.spares.back();
    }
    std::swap(*spare, s.weights_ptr);
    if (keep) {
      std::memcpy(s.weights_ptr->values.data(), (*spare)->values.data(),
                  s.weights_ptr->values.size() * sizeof(float));
    }
  }
  return s.weights_ptr->values;
}

Frame Shard::Share(const Slice& s) {
  Buffer b = s.weights_ptr;
  b->readers.fetch_add(1, std::memory_order_relaxed);
  const absl::Span<const float> v = b->values;
  return Frame::Borrow(v.data(), v.size() * sizeof(float),
                       std::shared_ptr<const void>(v.data(), [b](const void*) {
                         b->readers.fetch_sub(1, std::memory_order_release);
                       }));
}

absl::Status Shard::CheckSlices(const proto::Header& h) const {
  if (h.offsets_size() != h.keys_size() || h.lengths_size() != h.keys_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(h.keys_size(), " keys, ", h.offsets_size(), " offsets, ",
                     h.lengths_size(), " lengths"));
  }
  for (int i = 0; i < h.keys_size(); ++i) {
    auto it = slices_.find({h.keys(i), h.offsets(i)});
    if (it == slices_.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown key ", h.keys(i), " (offset ", h.offsets(i), ")"));
    }
    if (static_cast<int64_t>(it->second.weights().size()) != h.lengths(i)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "key ", h.keys(i), " offset ", h.offsets(i), " holds ",
          it->second.weights().size(), " values, not ", h.lengths(i)));
    }
  }
  return absl::OkStatus();
}

std::vector<Frame> Shard::WeightsOf(const proto::Header& h) {
  std::vector<Frame> out;
  for (int i = 0; i < h.keys_size(); ++i) {
    auto it = slices_.find({h.keys(i), h.offsets(i)});
    CHECK(it != slices_.end());
    out.push_back(compression::EncodeReply(i < h.reply_encodings_size()
                                               ? h.reply_encodings(i)
                                               : proto::RAW_FLOAT32,
                                           Share(it->second)));
  }
  return out;
}

Reply Shard::Ack(const proto::Header& h) {
  Reply r;
  r.to = h.sender();
  if (h.type() == proto::PUSH_PULL) {
    r.msg = MakeReply(h, "", WeightsOf(h), /*with_slices=*/true);
  } else {
    r.msg = MakeReply(h, "");
  }
  return r;
}

absl::Status Shard::Init(const Message& msg) {
  const proto::Header& h = msg.header;
  if (msg.frames.size() != static_cast<size_t>(h.keys_size())) {
    return absl::InvalidArgumentError("INIT without values");
  }
  if (h.offsets_size() != h.keys_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "INIT: ", h.keys_size(), " keys, ", h.offsets_size(), " offsets"));
  }
  sync_ = h.sync_mode();
  compression_ = h.compression();
  for (int i = 0; i < h.keys_size(); ++i) {
    Slice& s = slices_[{h.keys(i), h.offsets(i)}];
    if (s.received > 0) --open_rounds_;  // Forgotten.
    auto v = msg.frames[i].As<float>();
    s.weights_ptr = NewVersion(v.size());
    std::copy(v.begin(), v.end(), s.weights_ptr->values.begin());
    s.spares.clear();
    s.pending.assign(options_.num_workers, nullptr);
    s.frame_of.assign(options_.num_workers, -1);
    s.received = 0;
    s.merged.clear();
    s.repeats.clear();
    s.previous.clear();
    s.previous_round = -1;
    s.rounds = 0;
  }
  return absl::OkStatus();
}

ShardSnapshot Shard::Snapshot() const {
  ShardSnapshot out;
  Snapshot(&out);
  return out;
}

void Shard::Snapshot(ShardSnapshot* out) const {
  size_t n = 0;
  for (const auto& [id, s] : slices_) n += id.first >= 0;
  out->slices.resize(n);
  size_t i = 0;
  for (const auto& [id, s] : slices_) {
    if (id.first < 0) continue;
    ShardSnapshot::SliceWeights& w = out->slices[i++];
    w.key = id.first;
    w.offset = id.second;
    w.values.assign(s.weights().begin(), s.weights().end());
  }
  out->has_optimizer = optimizer_ != nullptr;
  if (optimizer_ != nullptr) {
    optimizer_->ExportState(&out->optimizer);
  } else {
    out->optimizer = {};
  }
}

absl::Status Shard::Restore(const ShardSnapshot& snap) {
  size_t learned = 0;
  for (const auto& [id, s] : slices_) learned += id.first >= 0;
  if (learned != snap.slices.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the checkpoint holds ", snap.slices.size(), " slices, this server ",
        learned, " (a different network, or number of servers?)"));
  }
  for (const ShardSnapshot::SliceWeights& w : snap.slices) {
    auto it = slices_.find({w.key, w.offset});
    if (w.key < 0 || it == slices_.end() ||
        it->second.weights().size() != w.values.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the checkpoint's slice of key ", w.key, " at offset ", w.offset,
          " (", w.values.size(), " values) is not one this server holds"));
    }
  }
  for (const nn::OptimizerState::Slot& o : snap.optimizer.slots) {
    auto it = slices_.find({o.key, o.slot});
    if (it == slices_.end() ||
        (!o.m.empty() && o.m.size() != it->second.weights().size())) {
      return absl::InvalidArgumentError(
          absl::StrCat("the checkpoint's optimizer state of key ", o.key,
                       " slot ", o.slot, " fits no slice of this server"));
    }
  }
  if (snap.has_optimizer) {
    if (optimizer_ == nullptr) {
      return absl::InvalidArgumentError(
          "the checkpoint has optimizer state; this server has no optimizer");
    }
    PSTRAIN_RETURN_IF_ERROR(optimizer_->ImportState(snap.optimizer));
  }
  for (const ShardSnapshot::SliceWeights& w : snap.slices) {
    Slice& s = slices_.at({w.key, w.offset});
    absl::Span<float> dst = Writable(s, /*keep=*/false);
    std::copy(w.values.begin(), w.values.end(), dst.begin());
  }
  return absl::OkStatus();
}

absl::Status Shard::SetOptimizer(const proto::OptimizerConfig& config) {
  auto opt = nn::Optimizer::Create(config);
  if (!opt.ok()) return opt.status();
  optimizer_ = std::move(*opt);
  return absl::OkStatus();
}

absl::StatusOr<Message> Shard::Pull(const proto::Header& req) {
  absl::Status s = CheckSlices(req);
  if (s.ok()) s = compression::CheckEncodings(compression_, req);
  if (!s.ok()) return s;
  Message reply;
  if (req.push_round() > 0) {
    // The weights a push of round N is computed from (after round N - 1).
    const int64_t want = req.push_round() - 1;
    std::vector<Frame> frames;
    for (int i = 0; i < req.keys_size(); ++i) {
      const Slice& sl = slices_.find({req.keys(i), req.offsets(i)})->second;
      Frame f;
      if (sl.rounds == want) {
        f = Share(sl);
      } else if (sl.previous_round == want && !sl.previous.empty()) {
        f = Frame::Copy(sl.previous.data(), sl.previous.size() * sizeof(float));
      } else {
        return absl::FailedPreconditionError(absl::StrCat(
            "key ", req.keys(i), " (offset ", req.offsets(i),
            "): the weights after round ", want,
            " are no longer held (the slice is at round ", sl.rounds, ")"));
      }
      frames.push_back(compression::EncodeReply(i < req.reply_encodings_size()
                                                    ? req.reply_encodings(i)
                                                    : proto::RAW_FLOAT32,
                                                std::move(f)));
    }
    reply = MakeReply(req, "", std::move(frames), /*with_slices=*/true);
  } else {
    reply = MakeReply(req, "", WeightsOf(req), /*with_slices=*/true);
  }
  // The rounds the slices have completed: a replacement worker's step.
  int64_t fewest = -1;
  for (int i = 0; i < req.keys_size(); ++i) {
    const int64_t r =
        slices_.find({req.keys(i), req.offsets(i)})->second.rounds;
    if (fewest < 0 || r < fewest) fewest = r;
  }
  if (fewest > 0) reply.header.set_push_round(fewest);
  return reply;
}

void Shard::ApplyAsync(const SliceId& id, Slice& s,
                       absl::Span<const float> grad) {
  // Negative keys are plain sums (e.g. metrics), never optimized.
  const int64_t step = TracedStep(id, s);
  ++s.rounds;
  const absl::Time t0 = absl::Now();
  const bool update = optimizer_ != nullptr && id.first >= 0;
  if (update) {
    optimizer_->Update(id.first, id.second, Writable(s), grad);
  } else {
    AddTo(Writable(s).data(), grad.data(), grad.size());
  }
  const absl::Time t1 = absl::Now();
  (update ? times_.update_s : times_.sum_s) += absl::ToDoubleSeconds(t1 - t0);
  if (step > 0) {
    Trace(update ? update_track_ : sum_track_, update ? "update" : "sum", id, s,
          step, t0, t1);
  }
}

absl::Status Shard::Push(int worker_rank, Message&& msg,
                         std::vector<Reply>* replies) {
  const proto::Header& h = msg.header;
  absl::Status st = CheckSlices(h);
  if (st.ok()) st = compression::CheckEncodings(compression_, h);
  if (!st.ok()) return st;
  if (msg.frames.size() != static_cast<size_t>(h.keys_size())) {
    return absl::InvalidArgumentError("push without values");
  }
  st = CheckFrames(msg, "push");
  if (!st.ok()) return st;
  const int rank = worker_rank;
  if (rank < 0 || rank >= options_.num_workers) {
    return absl::InvalidArgumentError(
        absl::StrCat("node ", h.sender(), " is not a worker"));
  }
  if (!sync_) {
    int64_t step = 0;
    compression::DecodePush(compression_, &msg);
    for (int i = 0; i < h.keys_size(); ++i) {
      const SliceId id{h.keys(i), h.offsets(i)};
      Slice& s = slices_.find(id)->second;
      if (i == 0) step = TracedStep(id, s);
      ApplyAsync(id, s, msg.frames[i].As<float>());
    }
    replies->push_back(Ack(h));
    replies->back().step = step;
    return absl::OkStatus();
  }
  // Each slice of the push is new to its round, a repeat of a push already
  // held in the open round, or a repeat of a round already applied (only
  // pushes with an identity, push_round > 0, can be repeats).
  enum Kind { kNew, kRepeatOpen, kRepeatApplied };
  const int64_t round = h.push_round();
  std::vector<Kind> kinds(h.keys_size(), kNew);
  std::set<SliceId> listed;
  for (int i = 0; i < h.keys_size(); ++i) {
    const SliceId id{h.keys(i), h.offsets(i)};
    const Slice& sl = slices_.find(id)->second;
    // A slice listed twice in one message would count as two workers'
    // pushes (and complete the round with another rank's still null).
    if (!listed.insert(id).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "worker rank ", rank, " pushed key ", h.keys(i), " (offset ",
          h.offsets(i), ") twice in one round (listed twice in one message)"));
    }
    if (round > 0) {
      const int64_t open = sl.rounds + 1;
      if (round > open) {
        return absl::InvalidArgumentError(absl::StrCat(
            "worker rank ", rank, " pushed key ", h.keys(i), " (offset ",
            h.offsets(i), ") for round ", round, "; the open round is ", open));
      }
      if (round < open) {
        kinds[i] = kRepeatApplied;
      } else if (sl.pending[rank] != nullptr) {
        kinds[i] = kRepeatOpen;
      }
    } else if (sl.pending[rank] != nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("worker rank ", rank, " pushed key ", h.keys(i),
                       " (offset ", h.offsets(i), ") twice in one round"));
    }
  }
  compression::DecodePush(compression_, &msg);
  auto req = std::make_shared<Request>();
  for (Kind k : kinds) {
    if (k != kRepeatApplied) ++req->outstanding;
    if (k != kNew) ++repeated_pushes_;
  }
  req->msg = std::move(msg);
  const proto::Header& rh = req->msg.header;
  if (req->outstanding == 0) {
    // Every slice was applied in an earlier round: acknowledged at once.
    replies->push_back(Ack(rh));
    return absl::OkStatus();
  }
  // Repeats in the open round wait for it like the push they repeat (their
  // frames are not summed).
  for (int i = 0; i < rh.keys_size(); ++i) {
    if (kinds[i] != kRepeatOpen) continue;
    slices_.find({rh.keys(i), rh.offsets(i)})->second.repeats.push_back(req);
  }
  for (int i = 0; i < rh.keys_size(); ++i) {
    if (kinds[i] != kNew) continue;
    const SliceId id{rh.keys(i), rh.offsets(i)};
    Slice& s = slices_.find(id)->second;
    s.pending[rank] = req;
    s.frame_of[rank] = i;
    if (s.received == 0) ++open_rounds_;
    if (++s.received == options_.num_workers) Complete(id, s, replies);
  }
  return absl::OkStatus();
}

int64_t Shard::min_learned_rounds() const {
  int64_t fewest = -1;
  for (const auto& [id, s] : slices_) {
    if (id.first < 0) continue;
    if (fewest < 0 || s.rounds < fewest) fewest = s.rounds;
  }
  return std::max<int64_t>(fewest, 0);
}

void Shard::Complete(const SliceId& id, Slice& s, std::vector<Reply>* replies) {
  std::vector<absl::Span<const float>> grads;
  for (size_t r = 0; r < s.pending.size(); ++r) {
    grads.push_back(s.pending[r]->msg.frames[s.frame_of[r]].As<float>());
  }
  if (options_.keep_previous && id.first >= 0) {
    const absl::Span<const float> w = s.weights();
    s.previous.assign(w.begin(), w.end());
    s.previous_round = s.rounds;
  }
  --open_rounds_;
  ++s.rounds;
  const int64_t step = TracedStep(id, s);
  const absl::Time t0 = absl::Now();
  if (optimizer_ == nullptr || id.first < 0) {
    // Store the sum. With one worker that is its push: the received
    // buffer becomes the weights (no copy; the old version goes when no
    // reply reads it any more). Otherwise summed straight into the
    // weights.
    Frame& only = s.pending[0]->msg.frames[s.frame_of[0]];
    if (grads.size() == 1 && only.mutable_data() != nullptr) {
      // (A push through shared memory may go back to the worker by
      // reference: `shared` tells when a reply still reads it.)
      s.weights_ptr =
          std::make_shared<Version>(std::move(only), options_.shared);
    } else {
      SumInto(Writable(s, /*keep=*/false).data(), grads);
    }
    const absl::Time t1 = absl::Now();
    times_.sum_s += absl::ToDoubleSeconds(t1 - t0);
    if (step > 0) Trace(sum_track_, "sum", id, s, step, t0, t1);
  } else {
    absl::Span<const float> g = grads[0];
    if (grads.size() > 1) {
      s.merged.resize(s.weights().size());
      SumInto(s.merged.data(), grads);
      g = s.merged;
    }
    const absl::Time t1 = absl::Now();
    times_.sum_s += absl::ToDoubleSeconds(t1 - t0);
    optimizer_->Update(id.first, id.second, Writable(s), g);
    const absl::Time t2 = absl::Now();
    times_.update_s += absl::ToDoubleSeconds(t2 - t1);
    if (step > 0) {
      Trace(sum_track_, "sum", id, s, step, t0, t1);
      Trace(update_track_, "update", id, s, step, t1, t2);
    }
  }
  std::vector<std::shared_ptr<Request>> pending;
  pending.swap(s.pending);
  s.pending.assign(pending.size(), nullptr);
  s.received = 0;
  std::vector<std::shared_ptr<Request>> repeats;
  repeats.swap(s.repeats);
  pending.insert(pending.end(), repeats.begin(), repeats.end());
  for (auto& req : pending) {
    req->step = std::max(req->step, step);
    if (--req->outstanding > 0) continue;
    replies->push_back(Ack(req->msg.header));
    replies->back().step = req->step;
  }
}

}  // namespace server
}  // namespace pstrain
