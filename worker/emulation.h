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
//                "copy_latency_us": 10,
//                "source": "..."}}
// Layer times scale linearly with the per-device batch.
//
// The machine model: device i sits on board i / gpus_per_board, board b on
// socket b / boards_per_socket; the host's buffers are on socket 0. A copy
// of s bytes between two places loads every link it crosses (each link has
// a bandwidth per direction); a transfer of many copies at once takes
// copy_latency + max over links of (bytes on the link / its bandwidth).
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
// Copies overlap the devices' compute (copy streams apart from compute, as
// pstrain's GPU path must do), or not (MXNet mode: a device computes
// nothing while its copies run, as MXNet's CommDevice on K80s behaves in
// the published table; README, Scaling): then a layer's reduce delays the
// rest of backward and its broadcast the forward.
// One key is reduced (or broadcast) at a time on one copy engine per
// worker: a key's reduce starts when backward has produced it and the
// engine is free; its broadcast as soon as its pull has arrived (polled)
// and the engine is free, as MXNet's engine runs a pull's broadcast once
// the pull completes; the next forward waits for a layer's broadcast.
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

// Times of the copies of one key of `bytes` between `devices` devices and
// the host under `machine` (see the file comment), seconds, undilated.
struct KeyCopyTimes {
  double reduce_s = 0;     // Devices -> summed -> host.
  double broadcast_s = 0;  // Host -> every device.
};
KeyCopyTimes KeyCopyCost(const MachineModel& machine, int devices,
                         LocalReduce mode, int64_t bytes, int owner_device);

// Where the emulated time of the steps went, undilated seconds.
struct EmulatedTimes {
  double compute_s = 0;  // Forward and backward of the devices.
  double copy_s = 0;     // Waiting for local reduces and broadcasts.
};

class EmulatedDevices {
 public:
  // `net` (one real replica, e.g. built for one sample) supplies the
  // layers and the parameters; every layer of it must be in `profile`
  // (InvalidArgument naming the first that is not). `batch_per_device`
  // scales the profile's times; `time_dilation` >= 1 multiplies them.
  static absl::StatusOr<std::unique_ptr<EmulatedDevices>> Create(
      const DeviceProfile& profile, nn::Network* net, int devices,
      int batch_per_device, double time_dilation, LocalReduce mode,
      bool copies_overlap_compute = true);

  // One emulated training step: forward in layer order (calling `needed`
  // with a layer's learned parameters before it runs, then waiting for the
  // broadcast of their pulled weights), then backward in reverse order;
  // each layer's learned parameters are passed to `ready` once their local
  // reduce is done. Sleeps for every emulated time, polling `arrived`
  // about every millisecond. Returns `needed`'s first error.
  // `arrived` (non-blocking) tells whether the pulls of a layer's pushed
  // parameters have come back, so their broadcast can start; null: only
  // when `needed` returns.
  using ParamsArrived = std::function<bool(const std::vector<nn::Param*>&)>;
  absl::Status Step(const nn::Network::ParamsNeeded& needed,
                    const nn::Network::GradsReady& ready,
                    const ParamsArrived& arrived = nullptr);

  const EmulatedTimes& times() const { return times_; }
  void ResetTimes() { times_ = EmulatedTimes(); }
  int devices() const { return devices_; }
  double time_dilation() const { return k_; }

 private:
  EmulatedDevices() = default;
  // Sleeps until `t`, firing the reduces that finish by then and starting
  // the broadcasts whose pulls have arrived.
  void SleepUntil(absl::Time t, const nn::Network::GradsReady& ready,
                  const ParamsArrived& arrived);
  // Starts layer i's broadcast on the copy engine, now or when it is free.
  void StartBroadcast(size_t i);

  struct Layer {
    int node = 0;
    double forward_s = 0, backward_s = 0;  // Dilated.
    KeyCopyTimes copies;                   // Dilated; its learned params.
  };
  nn::Network* net_ = nullptr;
  int devices_ = 1;
  double k_ = 1;
  bool overlap_ = true;
  std::vector<Layer> layers_;  // Network order.
  // Reduces scheduled on the copy engine: (finish time, layer index).
  std::multimap<absl::Time, size_t> reduces_;
  // Layers pushed whose pulls have not arrived, and when each layer's
  // weights are on the devices again (InfinitePast: already there).
  std::set<size_t> awaiting_pull_;
  std::vector<absl::Time> on_devices_;
  absl::Time copy_free_ = absl::InfinitePast();
  EmulatedTimes times_;
};

}  // namespace worker
}  // namespace pstrain

#endif  // PSTRAIN_WORKER_EMULATION_H_
