// Network builders by name, following MXNet's example symbols
// (example/image-classification/symbols/*.py) for layer order, names and
// hyper-parameters.
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nn/network.h"
#include "util/status.h"

namespace pstrain {
namespace nn {
namespace {

using kernels::Activation;
using kernels::PoolKind;

// Appends layers to a network by node id, with MXNet-style names.
class Builder {
 public:
  explicit Builder(Network* net) : net_(net) {}

  int Conv(const std::string& name, int in, int filters, int kh, int kw,
           int sh = 1, int sw = 1, int ph = 0, int pw = 0, bool bias = true) {
    kernels::Conv2dParams c;
    c.kernel_h = kh;
    c.kernel_w = kw;
    c.stride_h = sh;
    c.stride_w = sw;
    c.pad_h = ph;
    c.pad_w = pw;
    c.num_filter = filters;
    return net_->Add(MakeConvolution(name, c, bias), {in});
  }
  // Convolution without bias, batch norm and ReLU: NAME_conv, NAME_bn,
  // NAME_relu.
  int ConvBnRelu(const std::string& name, int in, int filters, int kh, int kw,
                 int sh, int sw, int ph, int pw,
                 const kernels::BatchNormParams& bn) {
    int x = Conv(name + "_conv", in, filters, kh, kw, sh, sw, ph, pw,
                 /*bias=*/false);
    x = Bn(name + "_bn", x, bn);
    return Relu(name + "_relu", x);
  }
  int Bn(const std::string& name, int in, const kernels::BatchNormParams& p) {
    return net_->Add(MakeBatchNorm(name, p), {in});
  }
  int Relu(const std::string& name, int in) {
    return net_->Add(MakeActivation(name, Activation::kRelu), {in});
  }
  int Act(const std::string& name, int in, Activation a) {
    return net_->Add(MakeActivation(name, a), {in});
  }
  int Pool(const std::string& name, int in, PoolKind kind, int k, int s,
           int pad = 0) {
    kernels::Pool2dParams p;
    p.kind = kind;
    p.kernel_h = p.kernel_w = k;
    p.stride_h = p.stride_w = s;
    p.pad_h = p.pad_w = pad;
    return net_->Add(MakePooling(name, p), {in});
  }
  int GlobalAvgPool(const std::string& name, int in) {
    kernels::Pool2dParams p;
    p.kind = PoolKind::kAvg;
    p.global = true;
    return net_->Add(MakePooling(name, p), {in});
  }
  int Fc(const std::string& name, int in, int64_t hidden) {
    return net_->Add(MakeFullyConnected(name, hidden), {in});
  }
  int Flatten(const std::string& name, int in) {
    return net_->Add(MakeFlatten(name), {in});
  }
  int Dropout(const std::string& name, int in, float p) {
    return net_->Add(MakeDropout(name, p, ++dropout_seed_), {in});
  }
  int Lrn(const std::string& name, int in) {
    return net_->Add(MakeLrn(name, kernels::LrnParams()), {in});
  }
  int Concat(const std::string& name, std::vector<int> ins) {
    const int n = static_cast<int>(ins.size());
    return net_->Add(MakeConcat(name, n), std::move(ins));
  }
  int Plus(const std::string& name, int a, int b) {
    return net_->Add(MakeAdd(name), {a, b});
  }
  int Identity(const std::string& name, int in) {
    return net_->Add(MakeIdentity(name), {in});
  }
  // Makes symbol.json write node `id` as MXNet operator `op` with exactly
  // `attrs`; returns `id`.
  int Symbol(int id, const std::string& op, Network::SymbolAttrs attrs) {
    net_->SetSymbolNode(id, op, std::move(attrs));
    return id;
  }

 private:
  Network* net_;
  uint64_t dropout_seed_ = 0;
};

std::string Shape3(const std::vector<int64_t>& s) {
  return absl::StrCat(s[0], ",", s[1], ",", s[2]);
}

void Mlp(Builder* b, int classes) {
  int x = b->Flatten("flatten0", Network::kInput);
  x = b->Relu("relu0", b->Fc("fc0", x, 128));
  x = b->Relu("relu1", b->Fc("fc1", x, 64));
  b->Fc("fc2", x, classes);
}

// MXNet's example LeNet: conv 5x5x20, tanh, max 2x2; conv 5x5x50, tanh,
// max 2x2; fc 500, tanh; fc classes.
void Lenet(Builder* b, int classes) {
  int x = b->Conv("conv0", Network::kInput, 20, 5, 5);
  x = b->Pool("pool0", b->Act("tanh0", x, Activation::kTanh), PoolKind::kMax, 2,
              2);
  x = b->Conv("conv1", x, 50, 5, 5);
  x = b->Pool("pool1", b->Act("tanh1", x, Activation::kTanh), PoolKind::kMax, 2,
              2);
  x = b->Flatten("flatten0", x);
  x = b->Act("tanh2", b->Fc("fc0", x, 500), Activation::kTanh);
  b->Fc("fc1", x, classes);
}

// symbols/alexnet.py: five convolutions (LRN after the first two), three
// fully connected layers with dropout 0.5.
void Alexnet(Builder* b, int classes) {
  int x = b->Relu("relu1", b->Conv("conv1", Network::kInput, 96, 11, 11, 4, 4));
  x = b->Pool("pool1", b->Lrn("lrn1", x), PoolKind::kMax, 3, 2);
  x = b->Relu("relu2", b->Conv("conv2", x, 256, 5, 5, 1, 1, 2, 2));
  x = b->Pool("pool2", b->Lrn("lrn2", x), PoolKind::kMax, 3, 2);
  x = b->Relu("relu3", b->Conv("conv3", x, 384, 3, 3, 1, 1, 1, 1));
  x = b->Relu("relu4", b->Conv("conv4", x, 384, 3, 3, 1, 1, 1, 1));
  x = b->Relu("relu5", b->Conv("conv5", x, 256, 3, 3, 1, 1, 1, 1));
  x = b->Flatten("flatten", b->Pool("pool3", x, PoolKind::kMax, 3, 2));
  x = b->Dropout("dropout1", b->Relu("relu6", b->Fc("fc1", x, 4096)), 0.5f);
  x = b->Dropout("dropout2", b->Relu("relu7", b->Fc("fc2", x, 4096)), 0.5f);
  b->Fc("fc3", x, classes);
}

// symbols/vgg.py without batch norm: 3x3 convolutions in five stages, each
// ending in 2x2 max pooling, then fc6/fc7 (4096, dropout 0.5) and fc8.
void Vgg(Builder* b, int num_layers, int classes) {
  const std::vector<int> per_stage = num_layers == 11
                                         ? std::vector<int>{1, 1, 2, 2, 2}
                                         : std::vector<int>{2, 2, 3, 3, 3};
  const int filters[5] = {64, 128, 256, 512, 512};
  int x = Network::kInput;
  for (int s = 0; s < 5; ++s) {
    for (int i = 0; i < per_stage[s]; ++i) {
      const std::string id = absl::StrCat(s + 1, "_", i + 1);
      x = b->Relu("relu" + id,
                  b->Conv("conv" + id, x, filters[s], 3, 3, 1, 1, 1, 1));
    }
    x = b->Pool(absl::StrCat("pool", s + 1), x, PoolKind::kMax, 2, 2);
  }
  x = b->Flatten("flatten", x);
  x = b->Dropout("drop6", b->Relu("relu6", b->Fc("fc6", x, 4096)), 0.5f);
  x = b->Dropout("drop7", b->Relu("relu7", b->Fc("fc7", x, 4096)), 0.5f);
  b->Fc("fc8", x, classes);
}

// One residual unit of ResNet v1 (post-activation): basic (two 3x3) or
// bottleneck (1x1, 3x3 with the stride, 1x1 to 4x); a 1x1 convolution and
// batch norm on the shortcut when the shape changes.
int ResidualUnit(Builder* b, const std::string& name, int in, int filters,
                 int stride, bool project, bool bottleneck,
                 const kernels::BatchNormParams& bn) {
  int x;
  if (bottleneck) {
    x = b->ConvBnRelu(name + "_1", in, filters / 4, 1, 1, 1, 1, 0, 0, bn);
    x = b->ConvBnRelu(name + "_2", x, filters / 4, 3, 3, stride, stride, 1, 1,
                      bn);
    x = b->Bn(name + "_bn3",
              b->Conv(name + "_conv3", x, filters, 1, 1, 1, 1, 0, 0, false),
              bn);
  } else {
    x = b->ConvBnRelu(name + "_1", in, filters, 3, 3, stride, stride, 1, 1, bn);
    x = b->Bn(name + "_bn2",
              b->Conv(name + "_conv2", x, filters, 3, 3, 1, 1, 1, 1, false),
              bn);
  }
  int shortcut = in;
  if (project) {
    shortcut = b->Bn(
        name + "_sc_bn",
        b->Conv(name + "_sc", in, filters, 1, 1, stride, stride, 0, 0, false),
        bn);
  }
  return b->Relu(name + "_relu", b->Plus(name + "_plus", x, shortcut));
}

// The original (post-activation) ResNet, He et al. 2016 ("Deep residual
// learning for image recognition"): --network resnet_v1.
absl::Status ResnetV1(Builder* b, int num_layers, int classes,
                      const std::vector<int64_t>& image) {
  kernels::BatchNormParams bn;
  bn.eps = 2e-5f;  // symbols/resnet.py
  bn.momentum = 0.9f;
  const bool cifar = image[1] <= 32;
  std::vector<int> units, filters;
  bool bottleneck = false;
  int x = Network::kInput;
  if (cifar) {
    // The CIFAR family (He et al. 2016, section 4.2): 6n + 2 layers, three
    // stages of n basic units with 16, 32, 64 filters.
    if (num_layers < 8 || (num_layers - 2) % 6 != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--network resnet_v1 --num_layers ", num_layers,
                       " with --image_shape ", Shape3(image),
                       ": 32x32 ResNets have 6n+2 layers (20, 32, 44, 56, "
                       "110); the 224x224 ones "
                       "(18, 34, 50, 101, 152) need a larger --image_shape"));
    }
    units.assign(3, (num_layers - 2) / 6);
    filters = {16, 32, 64};
    x = b->ConvBnRelu("stem", x, 16, 3, 3, 1, 1, 1, 1, bn);
  } else {
    switch (num_layers) {
      case 18:
        units = {2, 2, 2, 2};
        break;
      case 34:
        units = {3, 4, 6, 3};
        break;
      case 50:
        units = {3, 4, 6, 3};
        break;
      case 101:
        units = {3, 4, 23, 3};
        break;
      case 152:
        units = {3, 8, 36, 3};
        break;
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("--network resnet_v1 --num_layers ", num_layers,
                         " with --image_shape ", Shape3(image),
                         ": ImageNet ResNets have 18, 34, 50, 101 or 152 "
                         "layers (20, 56, 110 need "
                         "--image_shape 3,32,32)"));
    }
    bottleneck = num_layers >= 50;
    filters = bottleneck ? std::vector<int>{256, 512, 1024, 2048}
                         : std::vector<int>{64, 128, 256, 512};
    x = b->ConvBnRelu("stem", x, 64, 7, 7, 2, 2, 3, 3, bn);
    x = b->Pool("stem_pool", x, PoolKind::kMax, 3, 2, 1);
  }
  int channels = cifar ? 16 : 64;
  for (size_t s = 0; s < units.size(); ++s) {
    for (int u = 0; u < units[s]; ++u) {
      const int stride = (s > 0 && u == 0) ? 2 : 1;
      const bool project = u == 0 && (stride != 1 || channels != filters[s]);
      x = ResidualUnit(b, absl::StrCat("stage", s + 1, "_unit", u + 1), x,
                       filters[s], stride, project, bottleneck, bn);
      channels = filters[s];
    }
  }
  x = b->Flatten("flatten", b->GlobalAvgPool("pool1", x));
  b->Fc("fc1", x, classes);
  return absl::OkStatus();
}

// MXNet's ResNet, symbols/resnet.py: the pre-activation ResNet (He et al.
// 2016, "Identity mappings in deep residual networks"), node for node: the
// same operators, names, order and attributes, so that SymbolJson() is the
// JSON MXNet saves for get_symbol() of the same depth and image shape and an
// MXNet checkpoint loads. Each node's attributes are those the script
// passes, written as Python's str() writes them and sorted by key, as MXNet
// saves them. --network resnet.
class ResnetV2 {
 public:
  explicit ResnetV2(Builder* b) : b_(b) {}

  absl::Status Build(int num_layers, int classes,
                     const std::vector<int64_t>& image) {
    const int64_t height = image[1];
    std::vector<int> units, filters;
    bool bottleneck = false;
    // get_symbol() takes the CIFAR family (three stages) for images up to
    // 28 pixels high (train_cifar10.py crops to 28x28) and refuses depths
    // outside the ImageNet table above that. pstrain also takes the CIFAR
    // family for 29 to 32 pixels where get_symbol() would refuse the depth
    // (--num_layers 20 --image_shape 3,32,32: configs/cifar10_resnet20.flags);
    // resnet() itself already gives such images the 3x3 stem. Where
    // get_symbol() does build a network (an ImageNet depth at 29 to 32
    // pixels: 3x3 stem, four stages), this builds the same one.
    const bool imagenet_depth = ImagenetUnits(num_layers, &units);
    if (height <= 28 || (height <= 32 && !imagenet_depth)) {
      int per_stage = 0;
      if ((num_layers - 2) % 9 == 0 && num_layers >= 164) {
        per_stage = (num_layers - 2) / 9;
        filters = {16, 64, 128, 256};
        bottleneck = true;
      } else if ((num_layers - 2) % 6 == 0 && num_layers >= 8 &&
                 num_layers < 164) {
        per_stage = (num_layers - 2) / 6;
        filters = {16, 16, 32, 64};
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            "--network resnet --num_layers ", num_layers,
            " with --image_shape ", Shape3(image),
            ": ResNets for images up to 32x32 have 6n+2 layers below 164 (20, "
            "32, 44, 56, 110) or 9n+2 from 164 (164, 1001); the ImageNet ones "
            "(18, 34, 50, 101, 152, 200, 269) take larger images (or 29 to 32 "
            "pixels, as MXNet's get_symbol)"));
      }
      units.assign(3, per_stage);
    } else {
      if (!imagenet_depth) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--network resnet --num_layers ", num_layers,
            " with --image_shape ", Shape3(image),
            ": ImageNet ResNets have 18, 34, 50, 101, 152, 200 or 269 layers "
            "(20, 32, 44, 56, 110 need --image_shape 3,32,32 or smaller)"));
      }
      bottleneck = num_layers >= 50;
      filters = bottleneck ? std::vector<int>{64, 256, 512, 1024, 2048}
                           : std::vector<int>{64, 64, 128, 256, 512};
    }
    int x = b_->Symbol(b_->Identity("id", Network::kInput), "_copy", {});
    x = Bn("bn_data", x, /*fix_gamma=*/true);
    if (height <= 32) {
      x = Conv("conv0", x, filters[0], 3, 1, 1);
    } else {
      x = Conv("conv0", x, filters[0], 7, 2, 3);
      x = Relu("relu0", Bn("bn0", x));
      x = b_->Symbol(b_->Pool("pooling0", x, PoolKind::kMax, 3, 2, 1),
                     "Pooling",
                     {{"kernel", Pair(3)},
                      {"pad", Pair(1)},
                      {"pool_type", "max"},
                      {"stride", Pair(2)}});
    }
    for (size_t i = 0; i < units.size(); ++i) {
      for (int j = 0; j < units[i]; ++j) {
        x = Unit(absl::StrCat("stage", i + 1, "_unit", j + 1), x,
                 filters[i + 1], i > 0 && j == 0 ? 2 : 1,
                 /*dim_match=*/j > 0, bottleneck);
      }
    }
    x = Relu("relu1", Bn("bn1", x));
    x = b_->Symbol(
        b_->GlobalAvgPool("pool1", x), "Pooling",
        {{"global_pool", "True"}, {"kernel", Pair(7)}, {"pool_type", "avg"}});
    x = b_->Symbol(b_->Flatten("flatten0", x), "Flatten", {});
    b_->Symbol(b_->Fc("fc1", x, classes), "FullyConnected",
               {{"num_hidden", absl::StrCat(classes)}});
    return absl::OkStatus();
  }

 private:
  // get_symbol()'s units per stage of the ImageNet ResNets; false for
  // another depth.
  static bool ImagenetUnits(int num_layers, std::vector<int>* units) {
    switch (num_layers) {
      case 18:
        *units = {2, 2, 2, 2};
        return true;
      case 34:
      case 50:
        *units = {3, 4, 6, 3};
        return true;
      case 101:
        *units = {3, 4, 23, 3};
        return true;
      case 152:
        *units = {3, 8, 36, 3};
        return true;
      case 200:
        *units = {3, 24, 36, 3};
        return true;
      case 269:
        *units = {3, 30, 48, 8};
        return true;
      default:
        return false;
    }
  }
  // Python's str() of the tuple (v, v).
  static std::string Pair(int v) { return absl::StrCat("(", v, ", ", v, ")"); }

  // residual_unit(): batch norm and ReLU before each convolution; the
  // shortcut is the input, or (dim_match false) a 1x1 convolution of the
  // first ReLU's output, without a "pad" attribute.
  int Unit(const std::string& name, int in, int filters, int stride,
           bool dim_match, bool bottleneck) {
    const int act1 = Relu(name + "_relu1", Bn(name + "_bn1", in));
    int x;
    if (bottleneck) {
      // int(num_filter * 0.25); every filter count is a multiple of 4.
      const int mid = filters / 4;
      x = Conv(name + "_conv1", act1, mid, 1, 1, 0);
      x = Relu(name + "_relu2", Bn(name + "_bn2", x));
      x = Conv(name + "_conv2", x, mid, 3, stride, 1);
      x = Relu(name + "_relu3", Bn(name + "_bn3", x));
      x = Conv(name + "_conv3", x, filters, 1, 1, 0);
    } else {
      x = Conv(name + "_conv1", act1, filters, 3, stride, 1);
      x = Relu(name + "_relu2", Bn(name + "_bn2", x));
      x = Conv(name + "_conv2", x, filters, 3, 1, 1);
    }
    const int shortcut =
        dim_match ? in : Conv(name + "_sc", act1, filters, 1, stride, -1);
    // conv + shortcut: MXNet's NameManager names the sums _plus0, _plus1, ...
    return b_->Symbol(b_->Plus(absl::StrCat("_plus", plus_++), x, shortcut),
                      "elemwise_add", {});
  }
  // Square kernel and stride, no bias, workspace 256; pad < 0: no "pad"
  // attribute (MXNet's default, 0).
  int Conv(const std::string& name, int in, int filters, int kernel, int stride,
           int pad) {
    const int p = pad < 0 ? 0 : pad;
    const int id = b_->Conv(name, in, filters, kernel, kernel, stride, stride,
                            p, p, /*bias=*/false);
    Network::SymbolAttrs attrs = {{"kernel", Pair(kernel)},
                                  {"no_bias", "True"},
                                  {"num_filter", absl::StrCat(filters)}};
    if (pad >= 0) attrs.push_back({"pad", Pair(pad)});
    attrs.push_back({"stride", Pair(stride)});
    attrs.push_back({"workspace", "256"});
    return b_->Symbol(id, "Convolution", std::move(attrs));
  }
  // eps 2e-5, momentum 0.9 (bn_mom).
  int Bn(const std::string& name, int in, bool fix_gamma = false) {
    kernels::BatchNormParams p;
    p.eps = 2e-5f;
    p.momentum = 0.9f;
    p.fix_gamma = fix_gamma;
    return b_->Symbol(b_->Bn(name, in, p), "BatchNorm",
                      {{"eps", "2e-05"},
                       {"fix_gamma", fix_gamma ? "True" : "False"},
                       {"momentum", "0.9"}});
  }
  int Relu(const std::string& name, int in) {
    return b_->Symbol(b_->Relu(name, in), "Activation", {{"act_type", "relu"}});
  }

  Builder* b_;
  int plus_ = 0;
};

// The small Inception for 32x32 images (Zhang et al. 2017, "Understanding
// deep learning requires rethinking generalization"): conv modules are
// convolution (with bias, "same" padding) + batch norm + ReLU.
void MiniGooglenet(Builder* b, int classes) {
  kernels::BatchNormParams bn;
  int seq = 0;
  auto conv = [&](int in, int k, int size, int stride, bool same) {
    const std::string name = absl::StrCat("conv", seq++);
    const int pad = same ? size / 2 : 0;
    int x = b->Conv(name, in, k, size, size, stride, stride, pad, pad, true);
    return b->Relu(name + "_relu", b->Bn(name + "_bn", x, bn));
  };
  int mod = 0;
  auto inception = [&](int in, int k1, int k3) {
    const int a = conv(in, k1, 1, 1, true);
    const int c = conv(in, k3, 3, 1, true);
    return b->Concat(absl::StrCat("inception", mod++), {a, c});
  };
  int down = 0;
  auto downsample = [&](int in, int k) {
    const int a = conv(in, k, 3, 2, false);
    const int p =
        b->Pool(absl::StrCat("down", down, "_pool"), in, PoolKind::kMax, 3, 2);
    return b->Concat(absl::StrCat("down", down++), {a, p});
  };
  int x = conv(Network::kInput, 96, 3, 1, true);
  x = inception(x, 32, 32);
  x = inception(x, 32, 48);
  x = downsample(x, 80);
  x = inception(x, 112, 48);
  x = inception(x, 96, 64);
  x = inception(x, 80, 80);
  x = inception(x, 48, 96);
  x = downsample(x, 96);
  x = inception(x, 176, 160);
  x = inception(x, 176, 160);
  x = b->GlobalAvgPool("pool", x);
  x = b->Flatten("flatten", b->Dropout("dropout", x, 0.5f));
  b->Fc("fc", x, classes);
}

// symbols/inception-v3.py (Szegedy et al. 2016) without the auxiliary head:
// convolutions without bias, batch norm (eps 0.001, fixed gamma) and ReLU.
class InceptionV3 {
 public:
  explicit InceptionV3(Builder* b) : b_(b) { bn_.fix_gamma = true; }

  void Build(int classes) {
    int x = Conv("conv", Network::kInput, 32, 3, 3, 2, 2);
    x = Conv("conv_1", x, 32, 3, 3);
    x = Conv("conv_2", x, 64, 3, 3, 1, 1, 1, 1);
    x = b_->Pool("pool", x, PoolKind::kMax, 3, 2);
    x = Conv("conv_3", x, 80, 1, 1);
    x = Conv("conv_4", x, 192, 3, 3);
    x = b_->Pool("pool1", x, PoolKind::kMax, 3, 2);
    x = A("mixed", x, 64, 64, 96, 96, 48, 64, PoolKind::kAvg, 32);
    x = A("mixed_1", x, 64, 64, 96, 96, 48, 64, PoolKind::kAvg, 64);
    x = A("mixed_2", x, 64, 64, 96, 96, 48, 64, PoolKind::kAvg, 64);
    x = B("mixed_3", x, 384, 64, 96, 96);
    x = C("mixed_4", x, 192, 128, 128, 192, 128, 128, 128, 128, 192, 192);
    x = C("mixed_5", x, 192, 160, 160, 192, 160, 160, 160, 160, 192, 192);
    x = C("mixed_6", x, 192, 160, 160, 192, 160, 160, 160, 160, 192, 192);
    x = C("mixed_7", x, 192, 192, 192, 192, 192, 192, 192, 192, 192, 192);
    x = D("mixed_8", x, 192, 320, 192, 192, 192, 192);
    x = E("mixed_9", x, 320, 384, 384, 384, 448, 384, 384, 384, PoolKind::kAvg,
          192);
    x = E("mixed_10", x, 320, 384, 384, 384, 448, 384, 384, 384, PoolKind::kMax,
          192);
    x = b_->Flatten("flatten", b_->GlobalAvgPool("global_pool", x));
    b_->Fc("fc1", x, classes);
  }

 private:
  int Conv(const std::string& name, int in, int filters, int kh, int kw,
           int sh = 1, int sw = 1, int ph = 0, int pw = 0) {
    return b_->ConvBnRelu(name, in, filters, kh, kw, sh, sw, ph, pw, bn_);
  }
  // A 3x3 stride-1 pooling (padded) and a 1x1 projection.
  int PoolProj(const std::string& name, int in, PoolKind kind, int proj) {
    const int p = b_->Pool(name + "_pool", in, kind, 3, 1, 1);
    return Conv(name + "_proj", p, proj, 1, 1);
  }
  int A(const std::string& n, int in, int c1, int r3, int c3a, int c3b, int r5,
        int c5, PoolKind pool, int proj) {
    const int t1 = Conv(n + "_1x1", in, c1, 1, 1);
    const int t5 = Conv(n + "_5x5", Conv(n + "_5x5_red", in, r5, 1, 1), c5, 5,
                        5, 1, 1, 2, 2);
    int t3 = Conv(n + "_3x3_red", in, r3, 1, 1);
    t3 = Conv(n + "_3x3_1", t3, c3a, 3, 3, 1, 1, 1, 1);
    t3 = Conv(n + "_3x3_2", t3, c3b, 3, 3, 1, 1, 1, 1);
    return b_->Concat(n, {t1, t5, t3, PoolProj(n, in, pool, proj)});
  }
  int B(const std::string& n, int in, int c3, int rd, int d1, int d2) {
    const int t3 = Conv(n + "_3x3", in, c3, 3, 3, 2, 2);
    int td = Conv(n + "_d3x3_red", in, rd, 1, 1);
    td = Conv(n + "_d3x3_1", td, d1, 3, 3, 1, 1, 1, 1);
    td = Conv(n + "_d3x3_2", td, d2, 3, 3, 2, 2);
    const int p = b_->Pool(n + "_pool", in, PoolKind::kMax, 3, 2);
    return b_->Concat(n, {t3, td, p});
  }
  int C(const std::string& n, int in, int c1, int rd, int d1, int d2, int rq,
        int q1, int q2, int q3, int q4, int proj) {
    const int t1 = Conv(n + "_1x1", in, c1, 1, 1);
    int td = Conv(n + "_d7_red", in, rd, 1, 1);
    td = Conv(n + "_d7_1", td, d1, 1, 7, 1, 1, 0, 3);
    td = Conv(n + "_d7_2", td, d2, 7, 1, 1, 1, 3, 0);
    int tq = Conv(n + "_q7_red", in, rq, 1, 1);
    tq = Conv(n + "_q7_1", tq, q1, 7, 1, 1, 1, 3, 0);
    tq = Conv(n + "_q7_2", tq, q2, 1, 7, 1, 1, 0, 3);
    tq = Conv(n + "_q7_3", tq, q3, 7, 1, 1, 1, 3, 0);
    tq = Conv(n + "_q7_4", tq, q4, 1, 7, 1, 1, 0, 3);
    return b_->Concat(n, {t1, td, tq, PoolProj(n, in, PoolKind::kAvg, proj)});
  }
  int D(const std::string& n, int in, int r3, int c3, int rd, int d1, int d2,
        int d3) {
    const int t3 =
        Conv(n + "_3x3", Conv(n + "_3x3_red", in, r3, 1, 1), c3, 3, 3, 2, 2);
    int td = Conv(n + "_d7_red", in, rd, 1, 1);
    td = Conv(n + "_d7_1", td, d1, 1, 7, 1, 1, 0, 3);
    td = Conv(n + "_d7_2", td, d2, 7, 1, 1, 1, 3, 0);
    td = Conv(n + "_d7_3x3", td, d3, 3, 3, 2, 2);
    const int p = b_->Pool(n + "_pool", in, PoolKind::kMax, 3, 2);
    return b_->Concat(n, {t3, td, p});
  }
  int E(const std::string& n, int in, int c1, int rd, int d1, int d2, int r3,
        int c3, int e1, int e2, PoolKind pool, int proj) {
    const int t1 = Conv(n + "_1x1", in, c1, 1, 1);
    const int td = Conv(n + "_d3_red", in, rd, 1, 1);
    const int td_a = Conv(n + "_d3_a", td, d1, 1, 3, 1, 1, 0, 1);
    const int td_b = Conv(n + "_d3_b", td, d2, 3, 1, 1, 1, 1, 0);
    int t3 = Conv(n + "_3x3_red", in, r3, 1, 1);
    t3 = Conv(n + "_3x3", t3, c3, 3, 3, 1, 1, 1, 1);
    const int t3_a = Conv(n + "_3x3_a", t3, e1, 1, 3, 1, 1, 0, 1);
    const int t3_b = Conv(n + "_3x3_b", t3, e2, 3, 1, 1, 1, 1, 0);
    return b_->Concat(
        n, {t1, td_a, td_b, t3_a, t3_b, PoolProj(n, in, pool, proj)});
  }

  Builder* b_;
  kernels::BatchNormParams bn_;
};

}  // namespace

std::string BuiltNetworks() {
  return "mlp, lenet, alexnet, vgg (--num_layers 11, 16), resnet (MXNet's, "
         "pre-activation: 18, 34, 50, 101, 152, 200, 269 for 224x224; 6n+2 "
         "such as 20, 56, 110, or 9n+2 from 164, for 32x32), resnet_v1 "
         "(post-activation: 18, 34, 50, 101, 152 for 224x224; 20, 56, 110 for "
         "32x32), inception-v3 (299x299), minigooglenet (32x32)";
}

absl::StatusOr<std::unique_ptr<Network>> BuildNetwork(
    const std::string& name, int num_layers, int num_classes,
    const std::vector<int64_t>& image_shape, int batch_size) {
  if (image_shape.size() != 3 || image_shape[0] <= 0 || image_shape[1] <= 0 ||
      image_shape[2] <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--image_shape ", kernels::ShapeToString(image_shape),
                     " is not C,H,W"));
  }
  if (num_classes < 2)
    return absl::InvalidArgumentError("--num_classes must be >= 2");
  if (batch_size < 1)
    return absl::InvalidArgumentError("--batch_size must be >= 1");
  auto net = std::make_unique<Network>();
  Builder b(net.get());
  // The smallest input each architecture's downsampling takes.
  int64_t min_size = 1;
  if (name == "mlp") {
    Mlp(&b, num_classes);
  } else if (name == "lenet") {
    Lenet(&b, num_classes);
    min_size = 16;
  } else if (name == "alexnet") {
    Alexnet(&b, num_classes);
    min_size = 67;
  } else if (name == "vgg") {
    if (num_layers != 11 && num_layers != 16) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--network vgg takes --num_layers 11 or 16, not ", num_layers));
    }
    Vgg(&b, num_layers, num_classes);
    min_size = 32;
  } else if (name == "resnet") {
    PSTRAIN_RETURN_IF_ERROR(
        ResnetV2(&b).Build(num_layers, num_classes, image_shape));
    min_size = image_shape[1] <= 32 ? 8 : 33;
  } else if (name == "resnet_v1") {
    PSTRAIN_RETURN_IF_ERROR(ResnetV1(&b, num_layers, num_classes, image_shape));
    min_size = image_shape[1] <= 32 ? 8 : 33;
  } else if (name == "inception-v3") {
    InceptionV3(&b).Build(num_classes);
    min_size = 75;
  } else if (name == "minigooglenet") {
    MiniGooglenet(&b, num_classes);
    min_size = 7;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "--network '", name, "' is unknown; built: ", BuiltNetworks()));
  }
  if (image_shape[1] < min_size || image_shape[2] < min_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--network ", name, " needs images of at least ", min_size, "x",
        min_size, ", not --image_shape ", Shape3(image_shape)));
  }
  PSTRAIN_RETURN_IF_ERROR(Annotate(
      net->Build({batch_size, image_shape[0], image_shape[1], image_shape[2]},
                 num_classes),
      absl::StrCat("--network ", name, " with --image_shape ",
                   Shape3(image_shape))));
  return net;
}

}  // namespace nn
}  // namespace pstrain
