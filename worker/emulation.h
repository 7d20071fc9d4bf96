// Emulated devices (worker --emulate_device=PROFILE): a worker drives
// `devices` emulated GPUs whose forward and backward take the per-layer
// times of a profile, and whose copies between host and devices and local
// reduce take the times of a documented model of the machine's PCIe
// topology. The CPU sleeps for those times, as a host CPU idles while its
// GPUs compute; everything else is the real worker: one real replica's
// parameter and gradient buffers (which stand for the reduced gradient),
// the real order in which gradients become ready, the real overlap, fusion,
// priorities and KVStore traffic. Every emulated time is multiplied by the
// time dilation k (and reported rates are multiplied back by k), so that
// the real network and CPUs keep pace with a faster machine.
//
// Profile (JSON; see configs/profiles/ and model_bench --write_profile):
//   {"device": "K80", "network": "alexnet", "num_layers": 0,
//    "batch_per_device": 512, "source": "...",
//    "layers": [{"name": "conv1", "forward_ms": 1.2, "backward_ms": 2.4},
//               ...],                       // every layer of the network
//    "machine": {"name": "p2.16xlarge", "gpus_per_board": 2,
//                "boards_per_socket": 4,
//                "gpu_link_gbytes_per_s": 10,     // GPU <-> board switch
//                "board_link_gbytes_per_s": 12,   // switch <-> CPU socket
//                "socket_link_gbytes_per_s": 3,   // between CPU sockets
//                "host_link_gbytes_per_s": 5,     // optional: a socket's
//                                                 // memory <-> its PCIe
//                "copy_latency_us": 10,
//                "source": "..."}}
// Layer times scale linearly with the per-device batch.
//
// The machine model: device i sits on board i / gpus_per_board, board b on
// socket b / boards_per_socket; the host's buffers are on socket 0. A copy
// of s bytes between two places loads every link it crosses (each link has
// a bandwidth per direction); a transfer of many copies at once takes
// copy_latency + max over links of (bytes on the link / its bandwidth).
// Transfers that run at the same time share the links: each link serves
// them first come, first served.
// Local reduce of a key of s bytes over G devices, then its copy to the
// host (and, after the pull, the copy back and the broadcast):
//   kOneDevice (MXNet's CommDevice): every device copies its gradient to
//     the key's device (keys are placed on devices largest first, each on
//     the device with the fewest bytes so far, as MXNet's InitMergeBuffer),
//     which sends the sum to the host; the pull comes back to that device
//     and is copied to the others.
//   kPartitioned (pstrain): the n devices of each CPU socket reduce-scatter
//     every key among themselves (device j sums part j, s / n bytes) and
//     each sends its part to the host, which adds the sockets' sums; after
//     the pull, each part goes back to its device and is gathered by the
//     socket's devices. Only one copy of the key crosses between sockets.
// Every step also copies each device's input batch (batch_per_device
// samples; float32 but for kOverlap) from the host, as MXNet's --benchmark
// 1 does: its SyntheticDataIter keeps the batch in pinned host memory and
// the executor group copies each device's slice at every forward. A copy
// between a
// device and the host also loads its socket's host link (the socket's
// memory to its PCIe tree, host_link_gbytes_per_s; unlimited when absent).
// How copies are scheduled (CopyModel):
//   kOverlap (pstrain): one copy engine per worker runs one key's copies at
//     a time, apart from compute (copy streams, as pstrain's GPU path must
//     do); a key's reduce starts when backward has produced it and the
//     engine is free, its broadcast as soon as its pull has arrived (polled)
//     and the engine is free. The next batch's input is copied during
//     backward (prefetched), as uint8 pixels that the device normalizes
//     (a quarter of float32's bytes).
//   kPerDevice (MXNet mode: CommDevice on K80s): a copy queue per device,
//     each running the reduces and broadcasts of the keys placed on it, one
//     at a time, apart from compute; the queues share the machine's links.
//     Broadcasts start
//     as soon as the pull has arrived, as MXNet's engine runs a pull's
//     broadcast once the pull completes. The input is copied when the
//     forward starts, and the forward waits for it.
//   kStallAll (the first MXNet model, kept for comparison): one engine, and
//     every device computes nothing while any copy runs, so a layer's
//     reduce delays the rest of backward, and a broadcast waits for the
//     forward that needs it; inputs as kPerDevice.
// The next forward waits for a layer's broadcast.
//
// Thread-compatible: one thread (the trainer's) calls everything.
#ifndef PSTRAIN_WORKER_EMULATION_H_
#define PSTRAIN_WORKER_EMULATION_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "nn/network.h"

namespace pstrain {
namespace worker {

struct MachineModel {
  std::string name;
  int gpus_per_board = 2;
  int boards_per_socket = 4;
  double gpu_link_bytes_per_s = 10e9;
  double board_link_bytes_per_s = 12e9;
  double socket_link_bytes_per_s = 3e9;
  double host_link_bytes_per_s = 0;  // Per socket; 0: unlimited.
  double copy_latency_s = 10e-6;
  std::string source;
};

struct LayerProfile {
  std::string name;
  double forward_s = 0;
  double backward_s = 0;
};

struct DeviceProfile {
  std::string device;
  std::string network;
  int num_layers = 0;
  int batch_per_device = 1;
  std::string source;
  std::vector<LayerProfile> layers;
  MachineModel machine;
};

// Reads a profile; InvalidArgument naming the file and the field that is
// missing or out of range (negative times, batch_per_device < 1, ...).
absl::StatusOr<DeviceProfile> ReadDeviceProfile(const std::string& path);
// A machine model alone: a JSON object with the fields of "machine" above
// (configs/profiles/p2.16xlarge.machine.json). Errors as ReadDeviceProfile.
absl::StatusOr<MachineModel> ReadMachineModel(const std::string& path);
// The profile as JSON (what ReadDeviceProfile reads).
std::string DeviceProfileJson(const DeviceProfile& profile);

// A profile whose step of `batch_per_device` images takes
// batch_per_device / images_per_sec seconds, spread over the layers of
// `summary` in proportion to their FLOPs: a layer's forward takes its
// forward FLOPs' share, its backward twice that for layers with learned
// parameters (data and weight gradients) and once for the others.
// InvalidArgument when the network has no FLOPs or the rate is not > 0.
absl::StatusOr<DeviceProfile> ProfileFromFlops(
    const std::vector<nn::LayerSummary>& summary, int batch_per_device,
    double images_per_sec);

// How a machine's devices sum a key before it is pushed.
enum class LocalReduce { kOneDevice, kPartitioned };
// "one_device" / "partitioned"; InvalidArgument otherwise.
absl::StatusOr<LocalReduce> ParseLocalReduce(const std::string& text);

// The time of copying `bytes` from the host to each of `devices` devices
// at once (one phase, as KeyCopyTimes), or to device `only` alone (>= 0).
std::vector<std::vector<double>> InputCopyLinks(const MachineModel& machine,
                                                int devices, int64_t bytes,
                                                int only = -1);

// Times of the copies of one key of `bytes` between `devices` devices and
// the host under `machine` (see the file comment), seconds, undilated.
struct KeyCopyTimes {
  double reduce_s = 0;     // Devices -> summed -> host.
  double broadcast_s = 0;  // Host -> every device.
  // The same as phases (copies that run at once, one phase after the
  // other): the seconds each link of the machine is busy in each phase,
  // without the per-phase copy latency; indexed as LinkCount describes.
  std::vector<std::vector<double>> reduce_links, broadcast_links;
};
// The machine's links for `devices` devices: every device's link to its
// board up and down (2 * devices), every board's to its socket up and down,
// every socket's host link up and down, then the link between the sockets
// both ways.
int LinkCount(const MachineModel& machine, int devices);
KeyCopyTimes KeyCopyCost(const MachineModel& machine, int devices,
                         LocalReduce mode, int64_t bytes, int owner_device);

// How copies are scheduled and whether they stall the devices (see the
// file comment).
enum class CopyModel { kOverlap, kPerDevice, kStallAll };
// "overlap" / "per_device" / "stall_all"; InvalidArgument otherwise.
absl::StatusOr<CopyModel> ParseCopyModel(const std::string& text);

// Where the emulated time of the steps went, undilated seconds.
struct EmulatedTimes {
  double compute_s = 0;  // Forward and backward of the devices.
  double copy_s = 0;     // Waiting for local reduces and broadcasts.
};

class EmulatedDevices {
 public:
  // `net` (one real replica, e.g. built for one sample) supplies the
  // layers, the parameters and the input's shape (its batch is ignored);
  // every layer of it must be in `profile`
  // (InvalidArgument naming the first that is not). `batch_per_device`
  // scales the profile's times; `time_dilation` >= 1 multiplies them.
  // With `virtual_time` nothing sleeps: Step advances a clock of its own
  // (for predictions; `arrived` then decides at once, in emulated time).
  static absl::StatusOr<std::unique_ptr<EmulatedDevices>> Create(
      const DeviceProfile& profile, nn::Network* net, int devices,
      int batch_per_device, double time_dilation, LocalReduce mode,
      CopyModel copies = CopyModel::kOverlap, bool virtual_time = false);

  // One emulated training step: forward in layer order (calling `needed`
  // with a layer's learned parameters before it runs, then waiting for the
  // broadcast of their pulled weights), then backward in reverse order;
  // each layer's learned parameters are passed to `ready` once their local
  // reduce is done. Sleeps for every emulated time, polling `arrived`
  // about every emulated millisecond (k real ones). Returns `needed`'s first
  // error. `arrived` (non-blocking) tells whether the pulls of a layer's pushed
  // parameters have come back, so their broadcast can start; null: only
  // when `needed` returns.
  using ParamsArrived = std::function<bool(const std::vector<nn::Param*>&)>;
  absl::Status Step(const nn::Network::ParamsNeeded& needed,
                    const nn::Network::GradsReady& ready,
                    const ParamsArrived& arrived = nullptr);

  const EmulatedTimes& times() const { return times_; }
  // The clock Step runs on: absl::Now(), or the virtual one.
  absl::Time Now() const { return virtual_ ? virtual_now_ : absl::Now(); }
  void ResetTimes() { times_ = EmulatedTimes(); }
  int devices() const { return devices_; }
  double time_dilation() const { return k_; }

 private:
  EmulatedDevices() = default;
  // Sleeps until `t`, firing the reduces that finish by then and starting
  // the broadcasts whose pulls have arrived.
  void SleepUntil(absl::Time t, const nn::Network::GradsReady& ready,
                  const ParamsArrived& arrived);
  // Starts layer i's broadcast on its copy queue, now or when it is free.
  void StartBroadcast(size_t i);
  // Schedules `phases` of copies on `queue` from `earliest`: each phase
  // starts when the previous has ended, each link carries its share once
  // it is free; returns when the last phase ends.
  absl::Time ScheduleCopies(int queue, absl::Time earliest,
                            const std::vector<std::vector<double>>& phases);
  void SleepFor(absl::Duration d);
  // Schedules the input copies of a step from `earliest`; returns when the
  // last is done.
  absl::Time CopyInputs(absl::Time earliest);

  struct Layer {
    int node = 0;
    int owner = 0;  // The device a key is reduced on (kOneDevice).
    double forward_s = 0, backward_s = 0;  // Dilated.
    KeyCopyTimes copies;                   // Dilated; its learned params.
  };
  nn::Network* net_ = nullptr;
  int devices_ = 1;
  double k_ = 1;
  CopyModel copies_ = CopyModel::kOverlap;
  double copy_latency_s_ = 0;  // Dilated.
  bool virtual_ = false;
  absl::Time virtual_now_ = absl::UnixEpoch();
  std::vector<Layer> layers_;  // Network order.
  // Input copies: one transfer to every device (kOverlap), or one per
  // device (phases as KeyCopyTimes); when the next step's input is there.
  std::vector<std::vector<std::vector<double>>> inputs_;
  absl::Time inputs_ready_ = absl::InfinitePast();
  // Reduces scheduled on the copy engine: (finish time, layer index).
  std::multimap<absl::Time, size_t> reduces_;
  // Layers pushed whose pulls have not arrived, and when each layer's
  // weights are on the devices again (InfinitePast: already there).
  std::set<size_t> awaiting_pull_;
  std::vector<absl::Time> on_devices_;
  // When each copy queue is free (one, or one per device; then the input
  // queues, one or one per device) and each link is.
  std::vector<absl::Time> queue_free_, link_free_;
  EmulatedTimes times_;
};

}  // namespace worker
}  // namespace pstrain

#endif  // PSTRAIN_WORKER_EMULATION_H_
