#include "worker/emulation.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "nn/network.h"

namespace pstrain {
namespace worker {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

std::string Runfile(const std::string& rel) {
  return absl::StrCat(std::getenv("TEST_SRCDIR"), "/pstrain/", rel);
}

std::string Tmp(const std::string& name) {
  return absl::StrCat(std::getenv("TEST_TMPDIR"), "/", name);
}

std::string Write(const std::string& name, const std::string& text) {
  const std::string path = Tmp(name);
  std::ofstream(path) << text;
  return path;
}

// The error message of `s` ("" when OK).
template <typename T>
std::string Error(const absl::StatusOr<T>& s) {
  return std::string(s.status().message());
}

// A valid profile of two layers on the p2.16xlarge model.
nlohmann::json GoodProfile() {
  return nlohmann::json::parse(R"({
    "device": "K80", "network": "test", "num_layers": 0,
    "batch_per_device": 32, "source": "made up",
    "layers": [{"name": "conv1", "forward_ms": 1.5, "backward_ms": 3},
               {"name": "fc1", "forward_ms": 0.5, "backward_ms": 1}],
    "machine": {"name": "p2.16xlarge", "gpus_per_board": 2,
                "boards_per_socket": 4, "gpu_link_gbytes_per_s": 10,
                "board_link_gbytes_per_s": 12, "socket_link_gbytes_per_s": 3,
                "copy_latency_us": 10, "source": "made up"}})");
}

MachineModel P2() {
  MachineModel m;
  m.gpus_per_board = 2;
  m.boards_per_socket = 4;
  m.gpu_link_bytes_per_s = 10e9;
  m.board_link_bytes_per_s = 12e9;
  m.socket_link_bytes_per_s = 3e9;
  m.copy_latency_s = 10e-6;
  return m;
}

TEST(ReadDeviceProfileTest, ReadsTheK80Profiles) {
  const std::vector<std::pair<std::string, std::string>> files = {
      {"alexnet", "alexnet"},
      {"inception_v3", "inception-v3"},
      {"resnet152", "resnet"}};
  for (const auto& [file, network] : files) {
    const std::string path =
        Runfile(absl::StrCat("configs/profiles/k80_", file, ".json"));
    auto p = ReadDeviceProfile(path);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(p->device, "K80") << path;
    EXPECT_EQ(p->network, network) << path;
    EXPECT_GE(p->batch_per_device, 1) << path;
    ASSERT_FALSE(p->layers.empty()) << path;
    double total = 0;
    for (const LayerProfile& l : p->layers) {
      EXPECT_FALSE(l.name.empty()) << path;
      EXPECT_GE(l.forward_s, 0) << path << " " << l.name;
      EXPECT_GE(l.backward_s, 0) << path << " " << l.name;
      total += l.forward_s + l.backward_s;
    }
    EXPECT_GT(total, 0) << path;
    // Every K80 profile carries the machine model of the .machine.json.
    auto m =
        ReadMachineModel(Runfile("configs/profiles/p2.16xlarge.machine.json"));
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(p->machine.name, m->name) << path;
    EXPECT_EQ(p->machine.gpus_per_board, m->gpus_per_board) << path;
    EXPECT_EQ(p->machine.boards_per_socket, m->boards_per_socket) << path;
    EXPECT_DOUBLE_EQ(p->machine.gpu_link_bytes_per_s, m->gpu_link_bytes_per_s)
        << path;
    EXPECT_DOUBLE_EQ(p->machine.board_link_bytes_per_s,
                     m->board_link_bytes_per_s)
        << path;
    EXPECT_DOUBLE_EQ(p->machine.socket_link_bytes_per_s,
                     m->socket_link_bytes_per_s)
        << path;
  }
}

TEST(ReadDeviceProfileTest, ReadsTheCiProfile) {
  auto p = ReadDeviceProfile(Runfile("configs/profiles/ci_resnet20.json"));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->network, "resnet");
  EXPECT_EQ(p->num_layers, 20);
  EXPECT_EQ(p->batch_per_device, 32);
  // Made by model_bench --profile_images_per_sec 2000 --profile_batch 32.
  double total = 0;
  for (const LayerProfile& l : p->layers) total += l.forward_s + l.backward_s;
  EXPECT_NEAR(total, 32.0 / 2000, 1e-6);
}

TEST(ReadDeviceProfileTest, RoundTripsThroughJson) {
  const std::string path = Write("good.json", GoodProfile().dump());
  auto p = ReadDeviceProfile(path);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->device, "K80");
  EXPECT_EQ(p->batch_per_device, 32);
  ASSERT_EQ(p->layers.size(), 2u);
  EXPECT_EQ(p->layers[0].name, "conv1");
  EXPECT_DOUBLE_EQ(p->layers[0].forward_s, 1.5e-3);
  EXPECT_DOUBLE_EQ(p->layers[0].backward_s, 3e-3);
  EXPECT_DOUBLE_EQ(p->machine.board_link_bytes_per_s, 12e9);
  EXPECT_DOUBLE_EQ(p->machine.copy_latency_s, 10e-6);
  auto again = ReadDeviceProfile(Write("again.json", DeviceProfileJson(*p)));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->layers.size(), 2u);
  EXPECT_DOUBLE_EQ(again->layers[1].backward_s, 1e-3);
  EXPECT_DOUBLE_EQ(again->machine.socket_link_bytes_per_s, 3e9);
  EXPECT_EQ(again->machine.boards_per_socket, 4);
  EXPECT_DOUBLE_EQ(again->machine.host_link_bytes_per_s, 0);
  // The optional host link survives the round trip (model_bench
  // --write_profile once dropped it).
  p->machine.host_link_bytes_per_s = 6e9;
  again = ReadDeviceProfile(Write("host.json", DeviceProfileJson(*p)));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_DOUBLE_EQ(again->machine.host_link_bytes_per_s, 6e9);
}

TEST(ReadDeviceProfileTest, ErrorsNameTheFileAndTheField) {
  const std::string missing = Tmp("no_such_profile.json");
  auto p = ReadDeviceProfile(missing);
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Error(p), HasSubstr(missing));

  std::string path = Write("not_json.json", "{\"layers\": [");
  EXPECT_THAT(Error(ReadDeviceProfile(path)),
              AllOf(HasSubstr(path), HasSubstr("not a JSON object")));

  struct Case {
    std::string name;
    void (*edit)(nlohmann::json*);
    std::string field;
  };
  const std::vector<Case> cases = {
      {"no_layers", [](nlohmann::json* j) { j->erase("layers"); },
       "\"layers\""},
      {"empty_layers",
       [](nlohmann::json* j) { (*j)["layers"] = nlohmann::json::array(); },
       "\"layers\""},
      {"negative_forward",
       [](nlohmann::json* j) { (*j)["layers"][1]["forward_ms"] = -1; },
       "\"forward_ms\": -1 < 0"},
      {"no_backward",
       [](nlohmann::json* j) { (*j)["layers"][0].erase("backward_ms"); },
       "\"backward_ms\""},
      {"no_name", [](nlohmann::json* j) { (*j)["layers"][1].erase("name"); },
       "layers[1]: no \"name\""},
      {"batch_0", [](nlohmann::json* j) { (*j)["batch_per_device"] = 0; },
       "\"batch_per_device\": 0 < 1"},
      {"no_machine", [](nlohmann::json* j) { j->erase("machine"); },
       "\"machine\""},
      {"no_socket_link",
       [](nlohmann::json* j) {
         (*j)["machine"].erase("socket_link_gbytes_per_s");
       },
       "\"socket_link_gbytes_per_s\""},
      {"zero_gpus_per_board",
       [](nlohmann::json* j) { (*j)["machine"]["gpus_per_board"] = 0; },
       "\"gpus_per_board\": 0 < 1"},
      {"device_number", [](nlohmann::json* j) { (*j)["device"] = 5; },
       "\"device\""},
      {"num_layers_text",
       [](nlohmann::json* j) { (*j)["num_layers"] = "twenty"; },
       "\"num_layers\""},
      {"latency_text",
       [](nlohmann::json* j) { (*j)["machine"]["copy_latency_us"] = "10"; },
       "\"copy_latency_us\""},
  };
  for (const Case& c : cases) {
    nlohmann::json j = GoodProfile();
    c.edit(&j);
    path = Write(c.name + ".json", j.dump());
    auto bad = ReadDeviceProfile(path);
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument)
        << c.name;
    EXPECT_THAT(Error(bad), AllOf(HasSubstr(path), HasSubstr(c.field)))
        << c.name;
  }
}

TEST(ReadMachineModelTest, ReadsTheP2Model) {
  auto m =
      ReadMachineModel(Runfile("configs/profiles/p2.16xlarge.machine.json"));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->name, "p2.16xlarge");
  EXPECT_EQ(m->gpus_per_board, 2);
  EXPECT_EQ(m->boards_per_socket, 4);
  EXPECT_DOUBLE_EQ(m->gpu_link_bytes_per_s, 10e9);
  EXPECT_DOUBLE_EQ(m->board_link_bytes_per_s, 10e9);
  EXPECT_DOUBLE_EQ(m->socket_link_bytes_per_s, 3.5e9);
  EXPECT_DOUBLE_EQ(m->host_link_bytes_per_s, 6e9);
  EXPECT_DOUBLE_EQ(m->copy_latency_s, 10e-6);
  EXPECT_FALSE(m->source.empty());
}

TEST(ReadMachineModelTest, ErrorsNameTheFileAndTheField) {
  nlohmann::json m = GoodProfile()["machine"];
  m.erase("board_link_gbytes_per_s");
  const std::string path = Write("machine.json", m.dump());
  auto r = ReadMachineModel(path);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Error(r),
              AllOf(HasSubstr(path), HasSubstr("\"board_link_gbytes_per_s\"")));
  const std::string list = Write("list.json", "[1, 2]");
  EXPECT_THAT(Error(ReadMachineModel(list)),
              AllOf(HasSubstr(list), HasSubstr("not a JSON object")));
  const std::string missing = Tmp("no_such_machine.json");
  EXPECT_THAT(Error(ReadMachineModel(missing)), HasSubstr(missing));
}

std::unique_ptr<nn::Network> Lenet() {
  auto net = nn::BuildNetwork("lenet", 0, 10, {1, 28, 28}, 1);
  if (!net.ok()) {
    ADD_FAILURE() << net.status();
    return nullptr;
  }
  return std::move(*net);
}

TEST(ProfileFromFlopsTest, SplitsTheStepByFlops) {
  auto net = Lenet();
  ASSERT_NE(net, nullptr);
  const std::vector<nn::LayerSummary> summary = net->Summary();
  auto p = ProfileFromFlops(summary, 16, 400);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->batch_per_device, 16);
  ASSERT_EQ(p->layers.size(), summary.size());
  double total = 0;
  int with_params = 0, without = 0;
  for (size_t i = 0; i < summary.size(); ++i) {
    const LayerProfile& l = p->layers[i];
    EXPECT_EQ(l.name, summary[i].name);
    total += l.forward_s + l.backward_s;
    if (summary[i].flops == 0) {
      EXPECT_EQ(l.forward_s, 0) << l.name;
      EXPECT_EQ(l.backward_s, 0) << l.name;
      continue;
    }
    EXPECT_GT(l.forward_s, 0) << l.name;
    if (summary[i].params > 0) {
      ++with_params;
      EXPECT_NEAR(l.backward_s, 2 * l.forward_s, 1e-15) << l.name;
    } else {
      ++without;
      EXPECT_NEAR(l.backward_s, l.forward_s, 1e-15) << l.name;
    }
  }
  // Both kinds were seen (convolutions and e.g. pooling).
  EXPECT_GT(with_params, 0);
  EXPECT_GT(without, 0);
  EXPECT_NEAR(total, 16.0 / 400, 1e-12);
  // Forward times are in proportion to FLOPs.
  for (size_t i = 1; i < summary.size(); ++i) {
    if (summary[0].flops == 0) break;
    EXPECT_NEAR(p->layers[i].forward_s / p->layers[0].forward_s,
                static_cast<double>(summary[i].flops) / summary[0].flops, 1e-9)
        << summary[i].name;
  }
}

TEST(ProfileFromFlopsTest, BadRatesAndNetworksAreErrors) {
  auto net = Lenet();
  ASSERT_NE(net, nullptr);
  const std::vector<nn::LayerSummary> summary = net->Summary();
  for (double rate : {0.0, -1.0, std::nan("")}) {
    auto p = ProfileFromFlops(summary, 32, rate);
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << rate;
  }
  EXPECT_EQ(ProfileFromFlops(summary, 0, 100).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto none = ProfileFromFlops({}, 32, 100);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Error(none), HasSubstr("no FLOPs"));
}

TEST(KeyCopyCostTest, OneDeviceIsOneCopyToTheHost) {
  const MachineModel m = P2();
  const int64_t bytes = 40 << 20;
  // Device 0 -> its board's switch (10 GB/s) -> socket 0 (12 GB/s): the
  // slower link bounds it.
  const double expected = m.copy_latency_s + bytes / m.gpu_link_bytes_per_s;
  for (LocalReduce mode :
       {LocalReduce::kOneDevice, LocalReduce::kPartitioned}) {
    const KeyCopyTimes t = KeyCopyCost(m, 1, mode, bytes, 0);
    EXPECT_NEAR(t.reduce_s, expected, 1e-12);
    EXPECT_NEAR(t.broadcast_s, expected, 1e-12);
  }
}

TEST(KeyCopyCostTest, OneDeviceReduceIsSlowerThanPartitionedAt16) {
  const MachineModel m = P2();
  const int64_t bytes = 40 << 20;
  const KeyCopyTimes one =
      KeyCopyCost(m, 16, LocalReduce::kOneDevice, bytes, 0);
  const KeyCopyTimes part =
      KeyCopyCost(m, 16, LocalReduce::kPartitioned, bytes, 0);
  EXPECT_GT(one.reduce_s, part.reduce_s);
  EXPECT_GT(one.broadcast_s, part.broadcast_s);
  // Neither is free, and neither beats one device's copy to the host.
  const KeyCopyTimes single =
      KeyCopyCost(m, 1, LocalReduce::kOneDevice, bytes, 0);
  EXPECT_GE(part.reduce_s, single.reduce_s * 0.1);
  EXPECT_GT(one.reduce_s, single.reduce_s);
}

TEST(KeyCopyCostTest, MoreDevicesNeverMakeOneDeviceCheaper) {
  const MachineModel m = P2();
  for (int64_t bytes : {int64_t{4}, int64_t{1} << 20, int64_t{100} << 20}) {
    KeyCopyTimes last = KeyCopyCost(m, 1, LocalReduce::kOneDevice, bytes, 0);
    for (int devices = 2; devices <= 16; ++devices) {
      const KeyCopyTimes t =
          KeyCopyCost(m, devices, LocalReduce::kOneDevice, bytes, 0);
      EXPECT_GE(t.reduce_s, last.reduce_s) << devices << " " << bytes;
      EXPECT_GE(t.broadcast_s, last.broadcast_s) << devices << " " << bytes;
      last = t;
    }
  }
}

TEST(KeyCopyCostTest, PartitionedReduceCrossesSocketsOnce) {
  // 16 devices on 2 sockets: the partitioned reduce sends one copy of the
  // key between the sockets, each way; the one-device reduce 8.
  const MachineModel m = P2();
  const int64_t bytes = 100 << 20;
  const KeyCopyTimes part =
      KeyCopyCost(m, 16, LocalReduce::kPartitioned, bytes, 0);
  const double one_socket_crossing = bytes / m.socket_link_bytes_per_s;
  EXPECT_GE(part.reduce_s, one_socket_crossing);
  EXPECT_LT(part.reduce_s, 2.5 * one_socket_crossing);
  const KeyCopyTimes one =
      KeyCopyCost(m, 16, LocalReduce::kOneDevice, bytes, 0);
  EXPECT_GE(one.reduce_s, 8 * one_socket_crossing);
}

TEST(KeyCopyCostTest, CrossingSocketsCostsMoreThanOneBoard) {
  const int64_t bytes = 40 << 20;
  // Two devices on one board, and two devices each on its own socket.
  const MachineModel board = P2();
  MachineModel sockets = P2();
  sockets.gpus_per_board = 1;
  sockets.boards_per_socket = 1;
  for (LocalReduce mode :
       {LocalReduce::kOneDevice, LocalReduce::kPartitioned}) {
    const KeyCopyTimes near = KeyCopyCost(board, 2, mode, bytes, 0);
    const KeyCopyTimes far = KeyCopyCost(sockets, 2, mode, bytes, 0);
    EXPECT_GT(far.reduce_s, near.reduce_s);
    EXPECT_GT(far.broadcast_s, near.broadcast_s);
  }
  // A key owned by a device on socket 1 crosses to the host's socket 0.
  const KeyCopyTimes owner0 =
      KeyCopyCost(board, 16, LocalReduce::kOneDevice, bytes, 0);
  const KeyCopyTimes owner8 =
      KeyCopyCost(board, 16, LocalReduce::kOneDevice, bytes, 8);
  EXPECT_GT(owner8.reduce_s, owner0.reduce_s);
}

TEST(ParseLocalReduceTest, NamesTheFlag) {
  EXPECT_EQ(*ParseLocalReduce("one_device"), LocalReduce::kOneDevice);
  EXPECT_EQ(*ParseLocalReduce("partitioned"), LocalReduce::kPartitioned);
  EXPECT_THAT(Error(ParseLocalReduce("ring")),
              HasSubstr("--local_reduce 'ring'"));
}

// Emulated devices over LeNet built for one sample, with a profile made
// from its FLOPs.
class EmulatedDevicesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    net_ = Lenet();
    ASSERT_NE(net_, nullptr);
    for (int id = 1; id <= net_->last(); ++id) {
      if (!net_->node_learned(id).empty()) learned_.push_back(id);
    }
    ASSERT_GE(learned_.size(), 2u);
  }

  // A profile whose step of `batch` takes `step_s`.
  DeviceProfile Profile(int batch, double step_s) {
    auto p = ProfileFromFlops(net_->Summary(), batch, batch / step_s);
    EXPECT_TRUE(p.ok()) << p.status();
    p->network = "lenet";
    p->device = "test GPU";
    p->machine = P2();
    return *p;
  }

  std::unique_ptr<nn::Network> net_;
  std::vector<int> learned_;  // Nodes with learned parameters, in order.
};

TEST_F(EmulatedDevicesTest, ALayerMissingFromTheProfileIsNamed) {
  DeviceProfile p = Profile(8, 0.1);
  const std::string gone = net_->layer(learned_[1]).name();
  p.layers.erase(p.layers.begin() + (learned_[1] - 1));
  ASSERT_EQ(p.layers.size(), static_cast<size_t>(net_->last() - 1));
  auto e = EmulatedDevices::Create(p, net_.get(), 2, 8, 1,
                                   LocalReduce::kPartitioned);
  EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Error(e), HasSubstr(absl::StrCat("'", gone, "'")));
}

TEST_F(EmulatedDevicesTest, BadArgumentsAreErrors) {
  const DeviceProfile p = Profile(8, 0.1);
  EXPECT_FALSE(
      EmulatedDevices::Create(p, net_.get(), 0, 8, 1, LocalReduce::kOneDevice)
          .ok());
  EXPECT_FALSE(
      EmulatedDevices::Create(p, net_.get(), 2, 0, 1, LocalReduce::kOneDevice)
          .ok());
  EXPECT_FALSE(
      EmulatedDevices::Create(p, net_.get(), 2, 8, 0.5, LocalReduce::kOneDevice)
          .ok());
}

TEST_F(EmulatedDevicesTest, StepRunsTheLayersAndSleepsTheDilatedTime) {
  // 0.2 s a step, dilated 2x: at least 0.4 s of sleep.
  constexpr double kStep = 0.2, kDilation = 2;
  const DeviceProfile p = Profile(8, kStep);
  auto e = EmulatedDevices::Create(p, net_.get(), 4, 8, kDilation,
                                   LocalReduce::kPartitioned);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ((*e)->devices(), 4);
  EXPECT_DOUBLE_EQ((*e)->time_dilation(), kDilation);
  for (int step = 0; step < 2; ++step) {
    std::vector<int> needed, ready;
    auto node_of = [&](const std::vector<nn::Param*>& ps) {
      for (int id : learned_) {
        if (net_->node_learned(id) == ps) return id;
      }
      ADD_FAILURE() << "parameters of no learned layer";
      return 0;
    };
    const absl::Time t0 = absl::Now();
    absl::Status s = (*e)->Step(
        [&](const std::vector<nn::Param*>& ps) {
          // Forward has not reached past the layers already needed.
          EXPECT_EQ(ready.size(), 0u);
          needed.push_back(node_of(ps));
          return absl::OkStatus();
        },
        [&](const std::vector<nn::Param*>& ps) {
          ready.push_back(node_of(ps));
        });
    const double secs = absl::ToDoubleSeconds(absl::Now() - t0);
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ(needed, learned_) << "step " << step;
    const std::vector<int> reversed(learned_.rbegin(), learned_.rend());
    EXPECT_EQ(ready, reversed) << "step " << step;
    // Sleeps are at least as long as asked; 1 ms for rounding.
    EXPECT_GE(secs, kStep * kDilation - 1e-3) << "step " << step;
    EXPECT_LT(secs, 5) << "step " << step;
    // compute_s is undilated: the profile's step time per step.
    EXPECT_NEAR((*e)->times().compute_s, (step + 1) * kStep, 1e-9);
    EXPECT_GE((*e)->times().copy_s, 0);
  }
  // The second step waits for broadcasts before the learned layers.
  EXPECT_GT((*e)->times().copy_s, 0);
  (*e)->ResetTimes();
  EXPECT_EQ((*e)->times().compute_s, 0);
  EXPECT_EQ((*e)->times().copy_s, 0);
}

TEST_F(EmulatedDevicesTest, TimesScaleWithTheBatch) {
  // The profile is for 8 per device; 4 per device takes half as long.
  const DeviceProfile p = Profile(8, 0.1);
  auto e =
      EmulatedDevices::Create(p, net_.get(), 1, 4, 1, LocalReduce::kOneDevice);
  ASSERT_TRUE(e.ok()) << e.status();
  ASSERT_TRUE((*e)->Step(nullptr, nullptr).ok());
  EXPECT_NEAR((*e)->times().compute_s, 0.05, 1e-9);
}

// Links of 20 MB/s: LeNet's 1.7 MB of parameters take about as long to
// copy as its 50 ms step computes.
MachineModel SlowLinks() {
  MachineModel m = P2();
  m.gpu_link_bytes_per_s = m.board_link_bytes_per_s =
      m.socket_link_bytes_per_s = 20e6;
  return m;
}

TEST_F(EmulatedDevicesTest, CopiesThatStallTheDevicesLengthenTheStep) {
  // Same profile and links; copies overlapping the compute (one engine, or
  // a queue per device), or stalling every device.
  DeviceProfile p = Profile(8, 0.05);
  p.machine = SlowLinks();
  std::map<CopyModel, double> copy_s;
  for (CopyModel copies :
       {CopyModel::kOverlap, CopyModel::kPerDevice, CopyModel::kStallAll}) {
    auto e = EmulatedDevices::Create(p, net_.get(), 4, 8, 1,
                                     LocalReduce::kOneDevice, copies);
    ASSERT_TRUE(e.ok()) << e.status();
    for (int step = 0; step < 2; ++step) {
      ASSERT_TRUE((*e)->Step(nullptr, nullptr).ok());
    }
    // Undilated compute is the profile's either way; the copies were
    // waited for.
    EXPECT_NEAR((*e)->times().compute_s, 2 * 0.05, 1e-9);
    EXPECT_GT((*e)->times().copy_s, 0);
    copy_s[copies] = (*e)->times().copy_s;
  }
  // Stalled devices wait for every reduce, not just the tail's.
  EXPECT_GT(copy_s[CopyModel::kStallAll], copy_s[CopyModel::kOverlap]);
  EXPECT_GT(copy_s[CopyModel::kStallAll], copy_s[CopyModel::kPerDevice]);
}

// A step in virtual time, with the pulls back as soon as the reduces are
// done: seconds per step.
double VirtualStep(const DeviceProfile& p, nn::Network* net, int devices,
                   CopyModel copies) {
  auto e = EmulatedDevices::Create(p, net, devices, p.batch_per_device, 1,
                                   LocalReduce::kOneDevice, copies, true);
  EXPECT_TRUE(e.ok()) << e.status();
  if (!e.ok()) return 0;
  const absl::Time wall = absl::Now();
  auto arrived = [](const std::vector<nn::Param*>&) { return true; };
  EXPECT_TRUE((*e)->Step(nullptr, nullptr, arrived).ok());
  const absl::Time t0 = (*e)->Now();
  EXPECT_TRUE((*e)->Step(nullptr, nullptr, arrived).ok());
  const double step_s = absl::ToDoubleSeconds((*e)->Now() - t0);
  // Nothing slept.
  EXPECT_LT(absl::ToDoubleSeconds(absl::Now() - wall), 0.5);
  return step_s;
}

TEST_F(EmulatedDevicesTest, VirtualTimeSleepsNotAndCountsTheSame) {
  // A 0.5 s step takes no real time, and the virtual clock sees it.
  DeviceProfile p = Profile(8, 0.5);
  EXPECT_NEAR(VirtualStep(p, net_.get(), 1, CopyModel::kOverlap), 0.5, 0.01);
  p.machine = SlowLinks();
  // With copies as slow as the step, stalling every device costs more than
  // overlapping, with one copy engine or a queue per device.
  const double overlap = VirtualStep(p, net_.get(), 8, CopyModel::kOverlap);
  const double per_device =
      VirtualStep(p, net_.get(), 8, CopyModel::kPerDevice);
  const double all = VirtualStep(p, net_.get(), 8, CopyModel::kStallAll);
  EXPECT_GT(overlap, 0.5);
  EXPECT_GT(per_device, 0.5);
  EXPECT_GT(all, overlap);
  EXPECT_GT(all, per_device);
}

TEST_F(EmulatedDevicesTest, InputCopiesLoadTheHostLink) {
  // A host link so slow that copying the input takes about a step: MXNet's
  // copy when the forward starts adds it to the step; pstrain's prefetched
  // uint8 copy (a quarter of the bytes) hides behind backward.
  // A batch big enough that the input (25.7 MB for 2 devices) outweighs
  // LeNet's 1.7 MB of parameters, which cross the host link too.
  constexpr int kBatch = 4096;
  DeviceProfile p = Profile(kBatch, 0.5);
  const double fast = VirtualStep(p, net_.get(), 2, CopyModel::kPerDevice);
  p.machine.host_link_bytes_per_s = 2.0 * kBatch * 28 * 28 * 4 / 0.5;
  const double slow = VirtualStep(p, net_.get(), 2, CopyModel::kPerDevice);
  const double prefetched = VirtualStep(p, net_.get(), 2, CopyModel::kOverlap);
  EXPECT_GE(slow - fast, 0.5 - 1e-3);
  EXPECT_LT(prefetched, slow - 0.4);
}

TEST(InputCopyLinksTest, SharesTheSocketsHostLink) {
  MachineModel m = P2();
  m.host_link_bytes_per_s = 5e9;
  const int64_t bytes = int64_t{100} << 20;
  // 16 devices: 8 per socket share its host link; socket 1's also cross
  // between the sockets.
  const auto all = InputCopyLinks(m, 16, bytes);
  ASSERT_EQ(all.size(), 1u);
  ASSERT_EQ(all[0].size(), static_cast<size_t>(LinkCount(m, 16)));
  const double busiest = *std::max_element(all[0].begin(), all[0].end());
  EXPECT_NEAR(busiest, 8.0 * bytes / m.socket_link_bytes_per_s, 1e-9);
  // One device alone: its own link, or the host link, whichever is slower.
  const auto one = InputCopyLinks(m, 16, bytes, 3);
  const double alone = *std::max_element(one[0].begin(), one[0].end());
  EXPECT_NEAR(alone, bytes / 5e9, 1e-9);
  // Without a host link figure the host side is not a limit.
  m.host_link_bytes_per_s = 0;
  const auto free = InputCopyLinks(m, 1, bytes);
  EXPECT_NEAR(*std::max_element(free[0].begin(), free[0].end()),
              bytes / m.gpu_link_bytes_per_s, 1e-9);
}

TEST(KeyCopyCostTest, ListsEachPhasesLinks) {
  // Two keys of the same size on devices 0 and 1 of one board, each
  // reduced from both devices, list the links each phase loads: per-device
  // queues share those links.
  MachineModel m = P2();
  const int64_t bytes = int64_t{100} << 20;
  const KeyCopyTimes t0 = KeyCopyCost(m, 2, LocalReduce::kOneDevice, bytes, 0);
  const KeyCopyTimes t1 = KeyCopyCost(m, 2, LocalReduce::kOneDevice, bytes, 1);
  ASSERT_EQ(t0.reduce_links.size(), 2u);
  ASSERT_EQ(t0.reduce_links[0].size(), static_cast<size_t>(LinkCount(m, 2)));
  // Device 1 sends up its link, device 0 receives: the gather phase of
  // key 0 and the host phase of key 1 both load device 1's uplink.
  const double up1 = t0.reduce_links[0][1] + t1.reduce_links[1][1];
  EXPECT_NEAR(up1, 2 * bytes / m.gpu_link_bytes_per_s, 1e-9);
  // The phases sum to the key's seconds, less the per-phase latency.
  double busiest = 0;
  for (const auto& phase : t0.reduce_links)
    busiest += *std::max_element(phase.begin(), phase.end());
  EXPECT_NEAR(busiest + 2 * m.copy_latency_s, t0.reduce_s, 1e-9);
}

TEST(ParseCopyModelTest, NamesTheFlag) {
  EXPECT_EQ(*ParseCopyModel("overlap"), CopyModel::kOverlap);
  EXPECT_EQ(*ParseCopyModel("stall_all"), CopyModel::kStallAll);
  EXPECT_EQ(*ParseCopyModel("per_device"), CopyModel::kPerDevice);
  EXPECT_THAT(std::string(ParseCopyModel("stall").status().message()),
              HasSubstr("--emulate_copies 'stall': overlap, per_device"));
}

TEST_F(EmulatedDevicesTest, BroadcastsStartWhenTheirPullsArrive) {
  DeviceProfile p = Profile(8, 0.05);
  // Copies about as long as the forward: lazily they add to it, eagerly
  // they overlap it.
  p.machine = SlowLinks();
  p.machine.gpu_link_bytes_per_s = p.machine.board_link_bytes_per_s =
      p.machine.socket_link_bytes_per_s = 100e6;
  // Lazy (no `arrived`): every broadcast waits for the forward that needs
  // it; eager: the pulls arrive once the step's last reduce is done, and
  // the broadcasts run from then on, overlapping the next forward.
  double copy_s[2] = {0, 0};
  for (bool eager : {false, true}) {
    auto e = EmulatedDevices::Create(
        p, net_.get(), 2, 8, 1, LocalReduce::kPartitioned, CopyModel::kOverlap);
    ASSERT_TRUE(e.ok()) << e.status();
    int polls = 0;
    size_t reduced = 0;
    EmulatedDevices::ParamsArrived arrived = nullptr;
    if (eager) {
      arrived = [&](const std::vector<nn::Param*>&) {
        ++polls;
        return reduced == learned_.size();
      };
    }
    for (int step = 0; step < 2; ++step) {
      reduced = 0;
      ASSERT_TRUE((*e)->Step(
                          nullptr,
                          [&](const std::vector<nn::Param*>&) { ++reduced; },
                          arrived)
                      .ok());
    }
    if (eager) {
      EXPECT_GT(polls, 0);
    }
    copy_s[eager ? 1 : 0] = (*e)->times().copy_s;
  }
  EXPECT_LT(copy_s[1], copy_s[0]);
}

TEST_F(EmulatedDevicesTest, NeededsErrorStopsTheStep) {
  const DeviceProfile p = Profile(8, 0.01);
  auto e =
      EmulatedDevices::Create(p, net_.get(), 2, 8, 1, LocalReduce::kOneDevice);
  ASSERT_TRUE(e.ok()) << e.status();
  int ready = 0;
  absl::Status s = (*e)->Step(
      [](const std::vector<nn::Param*>&) {
        return absl::UnavailableError("pull failed");
      },
      [&](const std::vector<nn::Param*>&) { ++ready; });
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ready, 0);
}

}  // namespace
}  // namespace worker
}  // namespace pstrain
