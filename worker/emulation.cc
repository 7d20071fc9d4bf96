#include "worker/emulation.h"

#include <algorithm>
#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "util/file.h"
#include "util/status.h"

namespace pstrain {
namespace worker {
namespace {

constexpr int kHost = -1;

// Bytes on each link of the machine, per direction, for one transfer.
class LinkLoad {
 public:
  LinkLoad(const MachineModel& m, int devices)
      : m_(m),
        gpu_up_(devices, 0),
        gpu_down_(devices, 0),
        board_up_(Board(devices - 1) + 1, 0),
        board_down_(Board(devices - 1) + 1, 0),
        host_up_(Socket(devices - 1) + 1, 0),
        host_down_(Socket(devices - 1) + 1, 0) {}

  // A copy of `bytes` from `src` to `dst` (device indices or kHost).
  void Copy(int src, int dst, double bytes) {
    if (src == dst || bytes <= 0) return;
    if (src != kHost) gpu_up_[src] += bytes;
    if (dst != kHost) gpu_down_[dst] += bytes;
    // The host's memory is on socket 0; a device reaches it through its
    // own socket's host link.
    if (dst == kHost) host_up_[Socket(src)] += bytes;
    if (src == kHost) host_down_[Socket(dst)] += bytes;
    if (src != kHost && dst != kHost && Board(src) == Board(dst)) return;
    if (src != kHost) board_up_[Board(src)] += bytes;
    if (dst != kHost) board_down_[Board(dst)] += bytes;
    const int from = Socket(src), to = Socket(dst);
    if (from < to) socket_up_ += bytes;
    if (from > to) socket_down_ += bytes;
  }

  // copy_latency + the busiest link's bytes over its bandwidth; 0 when
  // nothing moved.
  double Seconds() const {
    double worst = 0;
    for (double s : Busy()) worst = std::max(worst, s);
    return worst > 0 ? m_.copy_latency_s + worst : 0;
  }

  // The seconds each link is busy, in LinkCount's order.
  std::vector<double> Busy() const {
    std::vector<double> busy;
    for (double b : gpu_up_) busy.push_back(b / m_.gpu_link_bytes_per_s);
    for (double b : gpu_down_) busy.push_back(b / m_.gpu_link_bytes_per_s);
    for (double b : board_up_) busy.push_back(b / m_.board_link_bytes_per_s);
    for (double b : board_down_) busy.push_back(b / m_.board_link_bytes_per_s);
    const double host = m_.host_link_bytes_per_s;
    for (double b : host_up_) busy.push_back(host > 0 ? b / host : 0);
    for (double b : host_down_) busy.push_back(host > 0 ? b / host : 0);
    busy.push_back(socket_up_ / m_.socket_link_bytes_per_s);
    busy.push_back(socket_down_ / m_.socket_link_bytes_per_s);
    return busy;
  }

 private:
  int Board(int device) const { return device / m_.gpus_per_board; }
  int Socket(int place) const {
    return place == kHost ? 0 : Board(place) / m_.boards_per_socket;
  }

  const MachineModel& m_;
  std::vector<double> gpu_up_, gpu_down_, board_up_, board_down_, host_up_,
      host_down_;
  double socket_up_ = 0, socket_down_ = 0;
};

absl::Status Bad(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

// o[key] as a number >= lo.
absl::Status Number(const std::string& path, const nlohmann::json& o,
                    const char* key, double lo, double* out) {
  if (!o.contains(key) || !o[key].is_number())
    return Bad(path, absl::StrCat("\"", key, "\": a number is required"));
  *out = o[key].get<double>();
  if (!(*out >= lo))
    return Bad(path, absl::StrCat("\"", key, "\": ", *out, " < ", lo));
  return absl::OkStatus();
}

// o[key] as a string, "" when absent (nlohmann's value() would throw for
// another type).
absl::Status OptionalText(const std::string& path, const nlohmann::json& o,
                          const char* key, std::string* out) {
  out->clear();
  if (!o.contains(key)) return absl::OkStatus();
  if (!o[key].is_string())
    return Bad(path, absl::StrCat("\"", key, "\": a string is required"));
  *out = o[key].get<std::string>();
  return absl::OkStatus();
}

absl::StatusOr<MachineModel> ParseMachine(const std::string& path,
                                          const nlohmann::json& m) {
  MachineModel mm;
  PSTRAIN_RETURN_IF_ERROR(OptionalText(path, m, "name", &mm.name));
  PSTRAIN_RETURN_IF_ERROR(OptionalText(path, m, "source", &mm.source));
  double v = 0;
  PSTRAIN_RETURN_IF_ERROR(Number(path, m, "gpus_per_board", 1, &v));
  mm.gpus_per_board = static_cast<int>(v);
  PSTRAIN_RETURN_IF_ERROR(Number(path, m, "boards_per_socket", 1, &v));
  mm.boards_per_socket = static_cast<int>(v);
  PSTRAIN_RETURN_IF_ERROR(Number(path, m, "gpu_link_gbytes_per_s", 1e-3, &v));
  mm.gpu_link_bytes_per_s = v * 1e9;
  PSTRAIN_RETURN_IF_ERROR(Number(path, m, "board_link_gbytes_per_s", 1e-3, &v));
  mm.board_link_bytes_per_s = v * 1e9;
  PSTRAIN_RETURN_IF_ERROR(
      Number(path, m, "socket_link_gbytes_per_s", 1e-3, &v));
  mm.socket_link_bytes_per_s = v * 1e9;
  if (m.contains("host_link_gbytes_per_s")) {
    PSTRAIN_RETURN_IF_ERROR(
        Number(path, m, "host_link_gbytes_per_s", 1e-3, &v));
    mm.host_link_bytes_per_s = v * 1e9;
  }
  PSTRAIN_RETURN_IF_ERROR(Number(path, m, "copy_latency_us", 0, &v));
  mm.copy_latency_s = v / 1e6;
  return mm;
}

}  // namespace

absl::StatusOr<MachineModel> ReadMachineModel(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return Bad(path, std::string(text.status().message()));
  const nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Bad(path, "not a JSON object");
  return ParseMachine(path, j);
}

KeyCopyTimes KeyCopyCost(const MachineModel& m, int devices, LocalReduce mode,
                         int64_t bytes, int owner) {
  const double s = static_cast<double>(bytes);
  KeyCopyTimes t;
  if (mode == LocalReduce::kOneDevice || devices == 1) {
    LinkLoad gather(m, devices), up(m, devices), down(m, devices),
        scatter(m, devices);
    for (int d = 0; d < devices; ++d) {
      gather.Copy(d, owner, s);
      scatter.Copy(owner, d, s);
    }
    up.Copy(owner, kHost, s);
    down.Copy(kHost, owner, s);
    t.reduce_s = gather.Seconds() + up.Seconds();
    t.broadcast_s = down.Seconds() + scatter.Seconds();
    t.reduce_links = {gather.Busy(), up.Busy()};
    t.broadcast_links = {down.Busy(), scatter.Busy()};
    return t;
  }
  // The devices of each socket reduce-scatter among themselves, and every
  // device sends its part of its socket's sum to the host (which adds the
  // sockets' sums); the pull comes back the same way.
  const int per_socket = m.gpus_per_board * m.boards_per_socket;
  LinkLoad scatter_reduce(m, devices), up(m, devices), down(m, devices),
      all_gather(m, devices);
  for (int first = 0; first < devices; first += per_socket) {
    const int last = std::min(devices, first + per_socket);
    const double part = s / (last - first);
    for (int j = first; j < last; ++j) {
      for (int i = first; i < last; ++i) {
        scatter_reduce.Copy(i, j, part);
        all_gather.Copy(j, i, part);
      }
      up.Copy(j, kHost, part);
      down.Copy(kHost, j, part);
    }
  }
  t.reduce_s = scatter_reduce.Seconds() + up.Seconds();
  t.broadcast_s = down.Seconds() + all_gather.Seconds();
  t.reduce_links = {scatter_reduce.Busy(), up.Busy()};
  t.broadcast_links = {down.Busy(), all_gather.Busy()};
  return t;
}

int LinkCount(const MachineModel& m, int devices) {
  const int boards = (devices - 1) / m.gpus_per_board + 1;
  const int sockets = (boards - 1) / m.boards_per_socket + 1;
  return 2 * devices + 2 * boards + 2 * sockets + 2;
}

std::vector<std::vector<double>> InputCopyLinks(const MachineModel& m,
                                                int devices, int64_t bytes,
                                                int only) {
  LinkLoad load(m, devices);
  for (int d = 0; d < devices; ++d) {
    if (only < 0 || d == only) load.Copy(kHost, d, static_cast<double>(bytes));
  }
  return {load.Busy()};
}

absl::StatusOr<CopyModel> ParseCopyModel(const std::string& text) {
  if (text == "overlap") return CopyModel::kOverlap;
  if (text == "stall_all") return CopyModel::kStallAll;
  if (text == "per_device") return CopyModel::kPerDevice;
  return absl::InvalidArgumentError(absl::StrCat(
      "--emulate_copies '", text, "': overlap, per_device or stall_all"));
}

absl::StatusOr<LocalReduce> ParseLocalReduce(const std::string& text) {
  if (text == "one_device") return LocalReduce::kOneDevice;
  if (text == "partitioned") return LocalReduce::kPartitioned;
  return absl::InvalidArgumentError(
      absl::StrCat("--local_reduce '", text, "': one_device or partitioned"));
}

absl::StatusOr<DeviceProfile> ReadDeviceProfile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return Bad(path, std::string(text.status().message()));
  const nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Bad(path, "not a JSON object");
  DeviceProfile p;
  auto number = [&](const nlohmann::json& o, const char* key, double lo,
                    double* out) { return Number(path, o, key, lo, out); };
  PSTRAIN_RETURN_IF_ERROR(OptionalText(path, j, "device", &p.device));
  PSTRAIN_RETURN_IF_ERROR(OptionalText(path, j, "network", &p.network));
  PSTRAIN_RETURN_IF_ERROR(OptionalText(path, j, "source", &p.source));
  if (j.contains("num_layers")) {
    double layers = 0;
    PSTRAIN_RETURN_IF_ERROR(number(j, "num_layers", 0, &layers));
    p.num_layers = static_cast<int>(layers);
  }
  double batch = 0;
  PSTRAIN_RETURN_IF_ERROR(number(j, "batch_per_device", 1, &batch));
  p.batch_per_device = static_cast<int>(batch);
  if (!j.contains("layers") || !j["layers"].is_array() || j["layers"].empty())
    return Bad(path, "\"layers\": a non-empty array is required");
  for (size_t i = 0; i < j["layers"].size(); ++i) {
    const nlohmann::json& l = j["layers"][i];
    LayerProfile lp;
    if (!l.is_object() || !l.contains("name") || !l["name"].is_string())
      return Bad(path, absl::StrCat("layers[", i, "]: no \"name\""));
    lp.name = l["name"].get<std::string>();
    double f = 0, b = 0;
    PSTRAIN_RETURN_IF_ERROR(number(l, "forward_ms", 0, &f));
    PSTRAIN_RETURN_IF_ERROR(number(l, "backward_ms", 0, &b));
    lp.forward_s = f / 1e3;
    lp.backward_s = b / 1e3;
    p.layers.push_back(lp);
  }
  if (!j.contains("machine") || !j["machine"].is_object())
    return Bad(path, "\"machine\": an object is required");
  PSTRAIN_ASSIGN_OR_RETURN(p.machine, ParseMachine(path, j["machine"]));
  return p;
}

std::string DeviceProfileJson(const DeviceProfile& p) {
  nlohmann::ordered_json j;
  j["device"] = p.device;
  j["network"] = p.network;
  j["num_layers"] = p.num_layers;
  j["batch_per_device"] = p.batch_per_device;
  j["source"] = p.source;
  const MachineModel& m = p.machine;
  j["machine"] = {{"name", m.name},
                  {"gpus_per_board", m.gpus_per_board},
                  {"boards_per_socket", m.boards_per_socket},
                  {"gpu_link_gbytes_per_s", m.gpu_link_bytes_per_s / 1e9},
                  {"board_link_gbytes_per_s", m.board_link_bytes_per_s / 1e9},
                  {"socket_link_gbytes_per_s", m.socket_link_bytes_per_s / 1e9},
                  {"copy_latency_us", m.copy_latency_s * 1e6},
                  {"source", m.source}};
  if (m.host_link_bytes_per_s > 0) {
    // Optional (0: unlimited), before "source" as in the hand-written files.
    nlohmann::ordered_json machine;
    for (auto it = j["machine"].begin(); it != j["machine"].end(); ++it) {
      if (it.key() == "copy_latency_us") {
        machine["host_link_gbytes_per_s"] = m.host_link_bytes_per_s / 1e9;
      }
      machine[it.key()] = it.value();
    }
    j["machine"] = machine;
  }
  nlohmann::ordered_json layers = nlohmann::ordered_json::array();
  for (const LayerProfile& l : p.layers) {
    layers.push_back({{"name", l.name},
                      {"forward_ms", l.forward_s * 1e3},
                      {"backward_ms", l.backward_s * 1e3}});
  }
  j["layers"] = layers;
  return j.dump(1) + "\n";
}

absl::StatusOr<DeviceProfile> ProfileFromFlops(
    const std::vector<nn::LayerSummary>& summary, int batch_per_device,
    double images_per_sec) {
  if (!(images_per_sec > 0) || batch_per_device < 1) {
    return absl::InvalidArgumentError(
        "a profile needs a rate > 0 and a batch >= 1");
  }
  double work = 0;
  for (const auto& s : summary)
    work += static_cast<double>(s.flops) * (s.params > 0 ? 3 : 2);
  if (work <= 0) return absl::InvalidArgumentError("the network has no FLOPs");
  const double step_s = batch_per_device / images_per_sec;
  DeviceProfile p;
  p.batch_per_device = batch_per_device;
  for (const auto& s : summary) {
    const double f = static_cast<double>(s.flops);
    LayerProfile l;
    l.name = s.name;
    l.forward_s = step_s * f / work;
    l.backward_s = step_s * f * (s.params > 0 ? 2 : 1) / work;
    p.layers.push_back(l);
  }
  return p;
}

absl::StatusOr<std::unique_ptr<EmulatedDevices>> EmulatedDevices::Create(
    const DeviceProfile& profile, nn::Network* net, int devices,
    int batch_per_device, double time_dilation, LocalReduce mode,
    CopyModel copies, bool virtual_time) {
  if (devices < 1 || batch_per_device < 1 || !(time_dilation >= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("emulated devices: ", devices, " devices of batch ",
                     batch_per_device, ", time dilation ", time_dilation,
                     " (need >= 1 device, batch >= 1, dilation >= 1)"));
  }
  std::map<std::string, const LayerProfile*> by_name;
  for (const LayerProfile& l : profile.layers) by_name[l.name] = &l;
  std::unique_ptr<EmulatedDevices> e(new EmulatedDevices());
  e->net_ = net;
  e->devices_ = devices;
  e->k_ = time_dilation;
  e->copies_ = copies;
  e->copy_latency_s_ = profile.machine.copy_latency_s * time_dilation;
  e->virtual_ = virtual_time;
  // Key queues, then input queues.
  const int queues = copies == CopyModel::kPerDevice ? devices : 1;
  e->queue_free_.assign(2 * queues, absl::InfinitePast());
  int64_t sample = 1;
  const std::vector<int64_t>& shape = net->output_shape(nn::Network::kInput);
  for (size_t i = 1; i < shape.size(); ++i) sample *= shape[i];
  // MXNet copies float32 pixels; pstrain's design copies the decoded
  // uint8 pixels and normalizes them on the device (4 times fewer bytes).
  const int64_t element_bytes =
      copies == CopyModel::kOverlap ? 1 : static_cast<int64_t>(sizeof(float));
  const int64_t input_bytes = sample * batch_per_device * element_bytes;
  for (int q = 0; q < queues; ++q) {
    auto links = InputCopyLinks(profile.machine, devices, input_bytes,
                                queues == 1 ? -1 : q);
    for (auto& phase : links) {
      for (double& s : phase) s *= time_dilation;
    }
    e->inputs_.push_back(std::move(links));
  }
  e->link_free_.assign(LinkCount(profile.machine, devices),
                       absl::InfinitePast());
  const double scale =
      time_dilation * batch_per_device / profile.batch_per_device;
  // Keys on devices as MXNet's InitMergeBuffer: largest first, each on
  // the device with the fewest bytes so far.
  std::vector<std::pair<int64_t, size_t>> sizes;
  for (int id = 1; id <= net->last(); ++id) {
    const nn::Layer& layer = net->layer(id);
    auto it = by_name.find(layer.name());
    if (it == by_name.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the device profile (", profile.network, " on ",
                       profile.device, ") has no layer '", layer.name(),
                       "': it was made for another network"));
    }
    Layer l;
    l.node = id;
    l.forward_s = it->second->forward_s * scale;
    l.backward_s = it->second->backward_s * scale;
    int64_t bytes = 0;
    for (const nn::Param* p : net->node_learned(id))
      bytes += static_cast<int64_t>(p->value.size() * sizeof(float));
    if (bytes > 0) sizes.emplace_back(bytes, e->layers_.size());
    e->layers_.push_back(l);
  }
  std::stable_sort(
      sizes.begin(), sizes.end(),
      [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<int64_t> load(devices, 0);
  for (const auto& [bytes, index] : sizes) {
    const int owner = static_cast<int>(
        std::min_element(load.begin(), load.end()) - load.begin());
    load[owner] += bytes;
    KeyCopyTimes t = KeyCopyCost(profile.machine, devices, mode, bytes, owner);
    t.reduce_s *= time_dilation;
    t.broadcast_s *= time_dilation;
    for (auto* phases : {&t.reduce_links, &t.broadcast_links}) {
      for (auto& phase : *phases) {
        for (double& s : phase) s *= time_dilation;
      }
    }
    e->layers_[index].copies = t;
    e->layers_[index].owner = owner;
  }
  return e;
}

void EmulatedDevices::SleepFor(absl::Duration d) {
  if (d <= absl::ZeroDuration()) return;
  if (virtual_) {
    virtual_now_ += d;
  } else {
    absl::SleepFor(d);
  }
}

absl::Time EmulatedDevices::ScheduleCopies(
    int queue, absl::Time earliest,
    const std::vector<std::vector<double>>& phases) {
  absl::Time t = std::max(earliest, queue_free_[queue]);
  for (const std::vector<double>& phase : phases) {
    absl::Time end = t;
    for (size_t link = 0; link < phase.size(); ++link) {
      if (phase[link] <= 0) continue;
      const absl::Time start = std::max(t, link_free_[link]);
      link_free_[link] = start + absl::Seconds(phase[link]);
      end = std::max(end, link_free_[link]);
    }
    if (end > t) t = end + absl::Seconds(copy_latency_s_);
  }
  queue_free_[queue] = t;
  return t;
}

absl::Time EmulatedDevices::CopyInputs(absl::Time earliest) {
  const int queues = static_cast<int>(inputs_.size());
  absl::Time done = earliest;
  for (int q = 0; q < queues; ++q)
    done = std::max(done, ScheduleCopies(queues + q, earliest, inputs_[q]));
  return done;
}

void EmulatedDevices::StartBroadcast(size_t i) {
  awaiting_pull_.erase(i);
  const int queue = inputs_.size() > 1 ? layers_[i].owner : 0;
  on_devices_[i] =
      ScheduleCopies(queue, Now(), layers_[i].copies.broadcast_links);
}

void EmulatedDevices::SleepUntil(absl::Time t,
                                 const nn::Network::GradsReady& ready,
                                 const ParamsArrived& arrived) {
  // How often the pulls are polled: every emulated millisecond (k real
  // ones), so that polling costs the same CPU share at any dilation.
  const absl::Duration poll = absl::Milliseconds(1) * k_;
  while (true) {
    const absl::Time now = Now();
    while (!reduces_.empty() && reduces_.begin()->first <= now) {
      const size_t index = reduces_.begin()->second;
      reduces_.erase(reduces_.begin());
      awaiting_pull_.insert(index);
      if (ready) ready(net_->node_learned(layers_[index].node));
    }
    if (arrived) {
      // In layer order: the next forward needs the first layers first.
      for (auto it = awaiting_pull_.begin(); it != awaiting_pull_.end();) {
        const size_t index = *it++;
        if (arrived(net_->node_learned(layers_[index].node)))
          StartBroadcast(index);
      }
    }
    if (now >= t) return;
    absl::Time until = t;
    if (!reduces_.empty()) until = std::min(until, reduces_.begin()->first);
    if (arrived && !awaiting_pull_.empty()) until = std::min(until, now + poll);
    SleepFor(until - now);
  }
}

absl::Status EmulatedDevices::Step(const nn::Network::ParamsNeeded& needed,
                                   const nn::Network::GradsReady& ready,
                                   const ParamsArrived& arrived_or_null) {
  // With every device stalled by copies, a broadcast waits for the
  // forward that needs it.
  const ParamsArrived& arrived =
      copies_ == CopyModel::kStallAll ? nullptr : arrived_or_null;
  if (on_devices_.empty()) {
    on_devices_.assign(layers_.size(), absl::InfinitePast());
    if (copies_ == CopyModel::kOverlap) inputs_ready_ = CopyInputs(Now());
  }
  // The input: prefetched during the last backward (kOverlap), or copied
  // now.
  if (copies_ != CopyModel::kOverlap) inputs_ready_ = CopyInputs(Now());
  const absl::Time input_wait = Now();
  SleepUntil(inputs_ready_, ready, arrived);
  times_.copy_s += absl::ToDoubleSeconds(Now() - input_wait) / k_;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    if (!net_->node_learned(l.node).empty()) {
      if (needed) PSTRAIN_RETURN_IF_ERROR(needed(net_->node_learned(l.node)));
      // Pulled weights still on their way to the devices go now.
      if (awaiting_pull_.count(i) > 0) StartBroadcast(i);
      const absl::Time now = Now();
      SleepUntil(on_devices_[i], ready, arrived);
      times_.copy_s += absl::ToDoubleSeconds(Now() - now) / k_;
    }
    SleepUntil(Now() + absl::Seconds(l.forward_s), ready, arrived);
    times_.compute_s += l.forward_s / k_;
  }
  // The devices compute backward back to back; each layer's reduce starts
  // when its gradients exist and its copy queue is free. With kStallAll
  // the devices wait for it.
  const absl::Time start = Now();
  if (copies_ == CopyModel::kOverlap) inputs_ready_ = CopyInputs(start);
  absl::Time device = start;
  for (size_t i = layers_.size(); i-- > 0;) {
    const Layer& l = layers_[i];
    device += absl::Seconds(l.backward_s);
    times_.compute_s += l.backward_s / k_;
    if (!net_->node_learned(l.node).empty()) {
      const int queue = inputs_.size() > 1 ? l.owner : 0;
      const absl::Time done =
          ScheduleCopies(queue, device, l.copies.reduce_links);
      reduces_.emplace(done, i);
      if (copies_ == CopyModel::kStallAll) {
        times_.copy_s += absl::ToDoubleSeconds(done - device) / k_;
        device = done;
      }
    }
    SleepUntil(device, ready, arrived);
  }
  const absl::Time tail = Now();
  absl::Time last = tail;
  for (const auto& [t, index] : reduces_) last = std::max(last, t);
  SleepUntil(last, ready, arrived);
  times_.copy_s += absl::ToDoubleSeconds(Now() - tail) / k_;
  return absl::OkStatus();
}

}  // namespace worker
}  // namespace pstrain
