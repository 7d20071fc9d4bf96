// GpuNetwork against the CPU Network (the reference) on the same initial
// weights: loss, probabilities, every learned gradient and the moving
// statistics after one training step and after a second one from changed
// host weights, then an inference forward, for
// LeNet, a CIFAR ResNet (batch norm, residual additions), MiniGoogLeNet
// (concatenation) and a small AlexNet-like network (LRN, dropout); the
// per-layer callbacks in the CPU network's order; dropout repeats itself
// for a seed; the context's GPU is used whatever device is current;
// argument errors, and kernel errors naming the GPU and layer.
//
// Built only with --config=cuda and tagged "gpu"; where no GPU is usable
// every test skips and says why.
#include "nn/gpu_network.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "gtest/gtest.h"
#include "kernels/gpu_context.h"
#include "kernels/tensor.h"
#include "nn/layers.h"
#include "nn/network.h"

namespace pstrain {
namespace nn {
namespace {

using kernels::Tensor;

// ASSERT_TRUE(Ok(status)) prints the status when it is not OK.
::testing::AssertionResult Ok(const absl::Status& s) {
  if (s.ok()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << s;
}

// Relative tolerance, GPU against CPU (TF32 is off in the default context).
constexpr double kRtol = 1e-4;

// Every element within kRtol of the reference, relative to the larger of
// the element and the reference tensor's largest magnitude (gradients of
// tiny elements are compared at the scale of the tensor).
void ExpectNear(const Tensor& got, const Tensor& want,
                const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  double scale = 1e-12;
  for (float w : want.span())
    scale = std::max(scale, static_cast<double>(std::fabs(w)));
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < want.size(); ++i) {
    const double g = got.data()[i], w = want.data()[i];
    if (!(std::fabs(g - w) <= kRtol * std::max(std::fabs(w), scale))) {
      if (first < 0) first = i;
      ++bad;
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << want.size()
                    << " elements differ; first at " << first << ": got "
                    << (first >= 0 ? got.data()[first] : 0) << ", want "
                    << (first >= 0 ? want.data()[first] : 0) << " (scale "
                    << scale << ")";
}

void ExpectNearLoss(double got, double want, const std::string& what) {
  EXPECT_LE(std::fabs(got - want), kRtol * std::max(1.0, std::fabs(want)))
      << what << ": got " << got << ", want " << want;
}

Tensor RandomInput(const std::vector<int64_t>& shape, uint32_t seed) {
  Tensor t(shape);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  for (float& v : t.span()) v = nd(rng);
  return t;
}

std::vector<float> RandomLabels(int64_t n, int classes, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> labels(n);
  for (float& l : labels) l = static_cast<float>(rng() % classes);
  return labels;
}

// conv 5x5x16, relu, LRN, max pool; conv 3x3x32, relu, LRN, max pool;
// fc 64, relu, dropout(p); fc classes: AlexNet's layer kinds at a size the
// CPU reference runs quickly. Built for 3x32x32 inputs.
std::unique_ptr<Network> SmallAlexnet(int batch, int classes, float dropout) {
  auto net = std::make_unique<Network>();
  kernels::Conv2dParams c;
  c.kernel_h = c.kernel_w = 5;
  c.num_filter = 16;
  kernels::Pool2dParams pool;
  pool.kernel_h = pool.kernel_w = 3;
  net->Add(MakeConvolution("conv1", c));
  net->Add(MakeActivation("relu1", kernels::Activation::kRelu));
  net->Add(MakeLrn("lrn1", kernels::LrnParams()));
  net->Add(MakePooling("pool1", pool));
  c.kernel_h = c.kernel_w = 3;
  c.pad_h = c.pad_w = 1;
  c.num_filter = 32;
  net->Add(MakeConvolution("conv2", c));
  net->Add(MakeActivation("relu2", kernels::Activation::kRelu));
  net->Add(MakeLrn("lrn2", kernels::LrnParams()));
  net->Add(MakePooling("pool2", pool));
  net->Add(MakeFlatten("flatten"));
  net->Add(MakeFullyConnected("fc1", 64));
  net->Add(MakeActivation("relu3", kernels::Activation::kRelu));
  net->Add(MakeDropout("drop1", dropout, 1));
  net->Add(MakeFullyConnected("fc2", classes));
  const absl::Status built = net->Build({batch, 3, 32, 32}, classes);
  CHECK(built.ok()) << built;
  return net;
}

struct Case {
  std::string name;
  int num_layers;
  std::vector<int64_t> image;  // C, H, W.
  int classes;
  int batch;
};

class GpuNetworkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kernels::GpuContextOptions o;
    o.device = 0;
    auto ctx = kernels::GpuContext::Create(o);
    if (!ctx.ok()) {
      // Only a machine without a usable GPU may skip.
      ASSERT_EQ(ctx.status().code(), absl::StatusCode::kNotFound)
          << ctx.status();
      GTEST_SKIP() << "No GPU, GPU test skipped: " << ctx.status();
    }
    ctx_ = std::move(*ctx);
  }

  // Two identically built networks, given the same weights here: `cpu` runs
  // on the CPU, `host` is the GpuNetwork's host mirror.
  void Compare(std::unique_ptr<Network> cpu, std::unique_ptr<Network> host) {
    const std::vector<int64_t> input_shape = cpu->output_shape(Network::kInput);
    const int classes = cpu->num_classes();
    ASSERT_TRUE(Ok(Initialize(cpu.get(), "xavier", 7)));
    ASSERT_TRUE(Ok(Initialize(host.get(), "xavier", 7)));
    auto gpu = GpuNetwork::Create(host.get(), ctx_.get());
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    const Tensor x = RandomInput(input_shape, 11);
    const std::vector<float> labels = RandomLabels(input_shape[0], classes, 13);
    kernels::CpuContext cpu_ctx;

    // One training step, recording the callbacks' order.
    std::vector<std::string> cpu_calls, gpu_calls;
    auto record = [](std::vector<std::string>* calls, const char* what) {
      return [calls, what](const std::vector<Param*>& ps) {
        calls->push_back(
            absl::StrCat(what, " ", ps.front()->name, " x", ps.size()));
      };
    };
    auto needed = [](std::function<void(const std::vector<Param*>&)> f) {
      return [f](const std::vector<Param*>& ps) {
        f(ps);
        return absl::OkStatus();
      };
    };
    auto want = cpu->Forward(&cpu_ctx, x, labels, Mode::kTrain,
                             needed(record(&cpu_calls, "needed")));
    ASSERT_TRUE(want.ok()) << want.status();
    ASSERT_TRUE(Ok(cpu->Backward(&cpu_ctx, 0.5f, record(&cpu_calls, "ready"))));
    auto got = (*gpu)->Forward(x, labels, Mode::kTrain,
                               needed(record(&gpu_calls, "needed")));
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_TRUE(Ok((*gpu)->Backward(0.5f, record(&gpu_calls, "ready"))));
    EXPECT_EQ(gpu_calls, cpu_calls);
    ExpectNearLoss(*got, *want, "training loss");
    ExpectNear((*gpu)->probabilities(), cpu->probabilities(),
               "training probabilities");
    const std::vector<Param*> cp = cpu->params(), gp = host->params();
    ASSERT_EQ(cp.size(), gp.size());
    auto compare_params = [&](const std::string& step) {
      for (size_t i = 0; i < cp.size(); ++i) {
        ASSERT_EQ(gp[i]->name, cp[i]->name);
        if (cp[i]->aux) {
          ExpectNear(gp[i]->value, cp[i]->value, step + cp[i]->name);
        } else {
          ExpectNear(gp[i]->grad, cp[i]->grad,
                     step + cp[i]->name + " gradient");
        }
      }
    };
    compare_params("");

    // A second step from new host weights (an SGD step of the CPU's, given
    // to both, moving statistics included) on another batch: the GPU must
    // upload them and reuse its buffers from the first step without
    // carrying anything over.
    for (size_t i = 0; i < cp.size(); ++i) {
      if (!cp[i]->aux) {
        float* v = cp[i]->value.data();
        const float* g = cp[i]->grad.data();
        for (int64_t e = 0; e < cp[i]->value.size(); ++e) v[e] -= 0.1f * g[e];
      }
      std::copy(cp[i]->value.data(), cp[i]->value.data() + cp[i]->value.size(),
                gp[i]->value.data());
    }
    const Tensor x2 = RandomInput(input_shape, 17);
    const std::vector<float> labels2 =
        RandomLabels(input_shape[0], classes, 19);
    want = cpu->Forward(&cpu_ctx, x2, labels2);
    ASSERT_TRUE(want.ok()) << want.status();
    ASSERT_TRUE(Ok(cpu->Backward(&cpu_ctx, 0.5f)));
    got = (*gpu)->Forward(x2, labels2);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_TRUE(Ok((*gpu)->Backward(0.5f)));
    ExpectNearLoss(*got, *want, "second training loss");
    ExpectNear((*gpu)->probabilities(), cpu->probabilities(),
               "second training probabilities");
    compare_params("second step: ");

    // Inference on the moving statistics of that step.
    want = cpu->Forward(&cpu_ctx, x, labels, Mode::kInference);
    ASSERT_TRUE(want.ok()) << want.status();
    got = (*gpu)->Forward(x, labels, Mode::kInference);
    ASSERT_TRUE(got.ok()) << got.status();
    ExpectNearLoss(*got, *want, "inference loss");
    ExpectNear((*gpu)->probabilities(), cpu->probabilities(),
               "inference probabilities");
    EXPECT_EQ((*gpu)->Backward(1.0f).code(),
              absl::StatusCode::kFailedPrecondition);
  }

  void CompareBuilt(const Case& c) {
    SCOPED_TRACE(absl::StrCat(c.name, " ", c.num_layers));
    auto cpu = BuildNetwork(c.name, c.num_layers, c.classes, c.image, c.batch);
    auto host = BuildNetwork(c.name, c.num_layers, c.classes, c.image, c.batch);
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    ASSERT_TRUE(host.ok()) << host.status();
    Compare(std::move(*cpu), std::move(*host));
  }

  std::unique_ptr<kernels::GpuContext> ctx_;
};

TEST_F(GpuNetworkTest, LenetMatchesCpu) {
  CompareBuilt({"lenet", 0, {1, 28, 28}, 10, 4});
}

TEST_F(GpuNetworkTest, CifarResnetMatchesCpu) {
  CompareBuilt({"resnet", 20, {3, 32, 32}, 10, 4});
}

TEST_F(GpuNetworkTest, MiniGooglenetMatchesCpu) {
  CompareBuilt({"minigooglenet", 0, {3, 32, 32}, 10, 4});
}

// Replica threads drive one GPU each, whatever device CUDA has current on
// the thread: with GPU 1 current, a network on GPU 0's context (created
// then too) still matches the CPU, and GPU 1 is current afterwards.
TEST_F(GpuNetworkTest, RunsOnItsContextsGpuWhateverIsCurrent) {
  int count = 0;
  ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
  if (count < 2) GTEST_SKIP() << "Needs two GPUs; this machine has " << count;
  ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
  CompareBuilt({"resnet", 20, {3, 32, 32}, 10, 4});
  int current = -1;
  EXPECT_EQ(cudaGetDevice(&current), cudaSuccess);
  EXPECT_EQ(current, 1);
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
}

// Dropout 0 in training: the GPU and CPU masks differ by design (see
// gpu_network.h), so the comparison keeps every element.
TEST_F(GpuNetworkTest, SmallAlexnetMatchesCpu) {
  Compare(SmallAlexnet(4, 10, 0.0f), SmallAlexnet(4, 10, 0.0f));
}

// With dropout on, two GpuNetworks over identical networks drop the same
// elements (the seed comes from the layer), inference matches the CPU, and
// the training loss differs from the dropout-free one.
TEST_F(GpuNetworkTest, DropoutRepeatsForASeed) {
  const std::vector<int64_t> shape = {4, 3, 32, 32};
  const Tensor x = RandomInput(shape, 3);
  const std::vector<float> labels = RandomLabels(4, 10, 5);
  std::vector<std::unique_ptr<Network>> hosts;
  std::vector<std::unique_ptr<GpuNetwork>> gpus;
  std::vector<double> losses;
  for (int i = 0; i < 2; ++i) {
    hosts.push_back(SmallAlexnet(4, 10, 0.5f));
    ASSERT_TRUE(Ok(Initialize(hosts.back().get(), "xavier", 7)));
    auto g = GpuNetwork::Create(hosts.back().get(), ctx_.get());
    ASSERT_TRUE(g.ok()) << g.status();
    gpus.push_back(std::move(*g));
    auto loss = gpus.back()->Forward(x, labels, Mode::kTrain);
    ASSERT_TRUE(loss.ok()) << loss.status();
    losses.push_back(*loss);
    ASSERT_TRUE(Ok(gpus.back()->Backward(1.0f)));
  }
  EXPECT_EQ(losses[0], losses[1]);
  for (size_t i = 0; i < hosts[0]->params().size(); ++i) {
    const Param* a = hosts[0]->params()[i];
    const Param* b = hosts[1]->params()[i];
    EXPECT_TRUE(std::equal(a->grad.span().begin(), a->grad.span().end(),
                           b->grad.span().begin()))
        << a->name;
  }
  auto cpu = SmallAlexnet(4, 10, 0.5f);
  ASSERT_TRUE(Ok(Initialize(cpu.get(), "xavier", 7)));
  kernels::CpuContext cpu_ctx;
  auto want = cpu->Forward(&cpu_ctx, x, labels, Mode::kInference);
  ASSERT_TRUE(want.ok()) << want.status();
  auto got = gpus[0]->Forward(x, labels, Mode::kInference);
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectNearLoss(*got, *want, "inference loss");
  EXPECT_NE(losses[0], *got);
}

TEST_F(GpuNetworkTest, BadInputsAreInvalidArgument) {
  auto host = BuildNetwork("lenet", 0, 10, {1, 28, 28}, 2);
  ASSERT_TRUE(host.ok()) << host.status();
  auto gpu = GpuNetwork::Create(host->get(), ctx_.get());
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  EXPECT_EQ((*gpu)->Backward(1.0f).code(),
            absl::StatusCode::kFailedPrecondition);
  const std::vector<float> labels = {1, 2};
  EXPECT_EQ((*gpu)->Forward(Tensor({2, 1, 28, 27}), labels).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*gpu)->Forward(Tensor({2, 1, 28, 28}), {1.0f}).status().code(),
            absl::StatusCode::kInvalidArgument);
  const std::vector<float> bad = {1, 10};
  const absl::Status bad_label =
      (*gpu)->Forward(Tensor({2, 1, 28, 28}), bad).status();
  EXPECT_EQ(bad_label.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_label.message().find("GPU 0: softmax"), absl::string_view::npos)
      << bad_label;
  // An error from `needed` stops the forward pass.
  auto s = (*gpu)->Forward(Tensor({2, 1, 28, 28}), labels, Mode::kTrain,
                           [](const std::vector<Param*>&) {
                             return absl::UnavailableError("pull failed");
                           });
  EXPECT_EQ(s.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ((*gpu)->Backward(1.0f).code(),
            absl::StatusCode::kFailedPrecondition);
}

// A layer the GPU kernels refuse (cuDNN's LRN takes odd sizes only; the
// CPU kernel takes any): the error names the GPU and the layer, and no
// Backward follows a failed Forward.
TEST_F(GpuNetworkTest, LayerErrorsNameTheGpuAndLayer) {
  Network host;
  kernels::Conv2dParams c;
  c.kernel_h = c.kernel_w = 3;
  c.num_filter = 4;
  kernels::LrnParams lrn;
  lrn.nsize = 4;
  host.Add(MakeConvolution("conv1", c));
  host.Add(MakeLrn("lrn1", lrn));
  host.Add(MakeFlatten("flatten"));
  host.Add(MakeFullyConnected("fc1", 10));
  ASSERT_TRUE(Ok(host.Build({2, 3, 8, 8}, 10)));
  ASSERT_TRUE(Ok(Initialize(&host, "xavier", 7)));
  auto gpu = GpuNetwork::Create(&host, ctx_.get());
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  const std::vector<float> labels = {1, 2};
  const absl::Status s =
      (*gpu)->Forward(RandomInput({2, 3, 8, 8}, 1), labels).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("GPU 0: lrn1: "), absl::string_view::npos) << s;
  EXPECT_EQ((*gpu)->Backward(1.0f).code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace nn
}  // namespace pstrain
