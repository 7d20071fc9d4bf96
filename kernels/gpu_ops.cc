#include "kernels/gpu_ops.h"

#include <algorithm>
#include <climits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "kernels/gpu_kernels.h"
#include "util/status.h"

namespace pstrain {
namespace kernels {
namespace {

constexpr float kOne = 1.0f;
constexpr float kZero = 0.0f;

absl::Status Bad(const std::string& what) {
  return absl::InvalidArgumentError(what);
}

// Non-empty tensors must live on the context's device.
absl::Status CheckOnDevice(const GpuContext& ctx,
                           std::initializer_list<const GpuTensor*> tensors,
                           absl::string_view op) {
  for (const GpuTensor* t : tensors) {
    if (t != nullptr && !t->empty() && t->device() != ctx.device()) {
      return Bad(absl::StrCat(op, ": tensor ", t->ShapeString(), " is on GPU ",
                              t->device(), ", the context on GPU ",
                              ctx.device()));
    }
  }
  return absl::OkStatus();
}

// cuDNN's legacy descriptors take int dimensions and address at most 2^31
// elements.
absl::Status CheckCudnnSize(const std::vector<int64_t>& shape,
                            absl::string_view op) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  if (n > INT_MAX) {
    return Bad(absl::StrCat(op, ": tensor ", ShapeToString(shape),
                            " has more than 2^31 elements, beyond cuDNN"));
  }
  return absl::OkStatus();
}

// An owned cuDNN descriptor: created by Init(), destroyed with the object.
template <typename T, cudnnStatus_t (*kCreate)(T*),
          cudnnStatus_t (*kDestroy)(T)>
class Descriptor {
 public:
  Descriptor() = default;
  ~Descriptor() {
    if (d_ != nullptr) kDestroy(d_);
  }
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;

  absl::Status Init() {
    return CudnnStatus(kCreate(&d_), "cudnnCreate*Descriptor");
  }
  T get() const { return d_; }

 private:
  T d_ = nullptr;
};

using TensorDesc =
    Descriptor<cudnnTensorDescriptor_t, cudnnCreateTensorDescriptor,
               cudnnDestroyTensorDescriptor>;
using FilterDesc =
    Descriptor<cudnnFilterDescriptor_t, cudnnCreateFilterDescriptor,
               cudnnDestroyFilterDescriptor>;
using ConvDesc =
    Descriptor<cudnnConvolutionDescriptor_t, cudnnCreateConvolutionDescriptor,
               cudnnDestroyConvolutionDescriptor>;
using PoolDesc =
    Descriptor<cudnnPoolingDescriptor_t, cudnnCreatePoolingDescriptor,
               cudnnDestroyPoolingDescriptor>;
using ActDesc =
    Descriptor<cudnnActivationDescriptor_t, cudnnCreateActivationDescriptor,
               cudnnDestroyActivationDescriptor>;
using LrnDesc = Descriptor<cudnnLRNDescriptor_t, cudnnCreateLRNDescriptor,
                           cudnnDestroyLRNDescriptor>;

// Creates *d as a float NCHW tensor descriptor of [n, c, h, w].
absl::Status InitTensor4d(TensorDesc* d, int64_t n, int64_t c, int64_t h,
                          int64_t w) {
  PSTRAIN_RETURN_IF_ERROR(d->Init());
  return CudnnStatus(
      cudnnSetTensor4dDescriptor(d->get(), CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                 static_cast<int>(n), static_cast<int>(c),
                                 static_cast<int>(h), static_cast<int>(w)),
      "cudnnSetTensor4dDescriptor");
}

absl::Status InitTensor4d(TensorDesc* d, const std::vector<int64_t>& nchw) {
  return InitTensor4d(d, nchw[0], nchw[1], nchw[2], nchw[3]);
}

// Looks up the plan of type Plan under `key` in ctx's cache, building it
// with `build` (a function of Plan* returning absl::Status) on a miss. A
// plan whose build failed is not cached.
template <typename Plan, typename Build>
absl::StatusOr<std::shared_ptr<Plan>> CachedPlan(GpuContext* ctx,
                                                 const std::string& key,
                                                 Build build) {
  auto it = ctx->cache().find(key);
  if (it != ctx->cache().end()) {
    return std::static_pointer_cast<Plan>(it->second);
  }
  auto plan = std::make_shared<Plan>();
  PSTRAIN_RETURN_IF_ERROR(build(plan.get()));
  ctx->cache()[key] = plan;
  return plan;
}

// ---------------------------------------------------------------------------
// Convolution.

// A chosen algorithm for one direction of a convolution.
template <typename Algo>
struct ConvChoice {
  bool ready = false;
  Algo algo{};
  cudnnMathType_t math = CUDNN_FMA_MATH;
  size_t workspace = 0;
};

struct ConvPlan {
  TensorDesc x, y, bias;
  FilterDesc w;
  ConvDesc conv;
  ConvChoice<cudnnConvolutionFwdAlgo_t> fwd;
  ConvChoice<cudnnConvolutionBwdDataAlgo_t> bwd_data;
  ConvChoice<cudnnConvolutionBwdFilterAlgo_t> bwd_filter;
};

std::string ConvKey(const GpuTensor& x, const Conv2dParams& p) {
  return absl::StrCat("conv:", x.ShapeString(), ":", p.kernel_h, ",",
                      p.kernel_w, ",", p.stride_h, ",", p.stride_w, ",",
                      p.pad_h, ",", p.pad_w, ",", p.dilation_h, ",",
                      p.dilation_w, ",", p.groups, ",", p.num_filter);
}

absl::Status BuildConvPlan(const GpuContext& ctx, const GpuTensor& x,
                           const Conv2dParams& p, int64_t oh, int64_t ow,
                           ConvPlan* plan) {
  PSTRAIN_RETURN_IF_ERROR(InitTensor4d(&plan->x, x.shape()));
  PSTRAIN_RETURN_IF_ERROR(
      InitTensor4d(&plan->y, x.dim(0), p.num_filter, oh, ow));
  PSTRAIN_RETURN_IF_ERROR(InitTensor4d(&plan->bias, 1, p.num_filter, 1, 1));
  PSTRAIN_RETURN_IF_ERROR(plan->w.Init());
  PSTRAIN_CUDNN_RETURN_IF_ERROR(cudnnSetFilter4dDescriptor(
      plan->w.get(), CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, p.num_filter,
      static_cast<int>(x.dim(1) / p.groups), p.kernel_h, p.kernel_w));
  PSTRAIN_RETURN_IF_ERROR(plan->conv.Init());
  PSTRAIN_CUDNN_RETURN_IF_ERROR(cudnnSetConvolution2dDescriptor(
      plan->conv.get(), p.pad_h, p.pad_w, p.stride_h, p.stride_w, p.dilation_h,
      p.dilation_w, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  PSTRAIN_CUDNN_RETURN_IF_ERROR(
      cudnnSetConvolutionGroupCount(plan->conv.get(), p.groups));
  PSTRAIN_CUDNN_RETURN_IF_ERROR(cudnnSetConvolutionMathType(
      plan->conv.get(),
      ctx.options().allow_tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH));
  int n = 0, c = 0, h = 0, w = 0;
  PSTRAIN_CUDNN_RETURN_IF_ERROR(cudnnGetConvolution2dForwardOutputDim(
      plan->conv.get(), plan->x.get(), plan->w.get(), &n, &c, &h, &w));
  if (n != x.dim(0) || c != p.num_filter || h != oh || w != ow) {
    return absl::InternalError(absl::StrCat(
        "convolution: cuDNN's output ", ShapeToString({n, c, h, w}),
        " differs from ", ShapeToString({x.dim(0), p.num_filter, oh, ow})));
  }
  return absl::OkStatus();
}

// Picks the first (fastest, as cuDNN orders them) usable algorithm:
// succeeded, within the workspace limit, deterministic if asked, and
// without TF32 tensor-core math unless allowed. Returns false if none is.
template <typename Perf, typename Algo>
bool PickAlgo(const GpuContextOptions& o, const std::vector<Perf>& perfs,
              int count, ConvChoice<Algo>* choice) {
  for (int i = 0; i < count; ++i) {
    const Perf& q = perfs[i];
    if (q.status != CUDNN_STATUS_SUCCESS) continue;
    if (q.memory > o.conv_workspace_limit_bytes) continue;
    if (o.deterministic && q.determinism != CUDNN_DETERMINISTIC) continue;
    if (!o.allow_tf32 &&
        (q.mathType == CUDNN_TENSOR_OP_MATH ||
         q.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION)) {
      continue;
    }
    choice->algo = q.algo;
    choice->math = o.allow_tf32 ? q.mathType : CUDNN_FMA_MATH;
    return true;
  }
  return false;
}

// One direction of a convolution as cuDNN's legacy API spells it. All
// calls of a direction take the descriptors in the same order: two inputs
// (D1, D2), the convolution, the output (D3): x, w -> y forward; w, dy -> dx
// backward data; x, dy -> dw backward filter.
template <typename Algo, typename Perf, typename D1, typename D2, typename D3>
struct ConvDirection {
  cudnnStatus_t (*max_count)(cudnnHandle_t, int*);
  cudnnStatus_t (*heuristic)(cudnnHandle_t, D1, D2,
                             cudnnConvolutionDescriptor_t, D3, int, int*,
                             Perf*);
  cudnnStatus_t (*find)(cudnnHandle_t, D1, const void*, D2, const void*,
                        cudnnConvolutionDescriptor_t, D3, void*, int, int*,
                        Perf*, void*, size_t);
  cudnnStatus_t (*workspace_size)(cudnnHandle_t, D1, D2,
                                  cudnnConvolutionDescriptor_t, D3, Algo,
                                  size_t*);
  // Used when no algorithm passes PickAlgo: needs no workspace (forward)
  // or is deterministic (backward).
  Algo fallback;
};

const ConvDirection<cudnnConvolutionFwdAlgo_t, cudnnConvolutionFwdAlgoPerf_t,
                    cudnnTensorDescriptor_t, cudnnFilterDescriptor_t,
                    cudnnTensorDescriptor_t>
    kForward = {cudnnGetConvolutionForwardAlgorithmMaxCount,
                cudnnGetConvolutionForwardAlgorithm_v7,
                cudnnFindConvolutionForwardAlgorithmEx,
                cudnnGetConvolutionForwardWorkspaceSize,
                CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM};

const ConvDirection<cudnnConvolutionBwdDataAlgo_t,
                    cudnnConvolutionBwdDataAlgoPerf_t, cudnnFilterDescriptor_t,
                    cudnnTensorDescriptor_t, cudnnTensorDescriptor_t>
    kBackwardData = {cudnnGetConvolutionBackwardDataAlgorithmMaxCount,
                     cudnnGetConvolutionBackwardDataAlgorithm_v7,
                     cudnnFindConvolutionBackwardDataAlgorithmEx,
                     cudnnGetConvolutionBackwardDataWorkspaceSize,
                     CUDNN_CONVOLUTION_BWD_DATA_ALGO_1};

const ConvDirection<
    cudnnConvolutionBwdFilterAlgo_t, cudnnConvolutionBwdFilterAlgoPerf_t,
    cudnnTensorDescriptor_t, cudnnTensorDescriptor_t, cudnnFilterDescriptor_t>
    kBackwardFilter = {cudnnGetConvolutionBackwardFilterAlgorithmMaxCount,
                       cudnnGetConvolutionBackwardFilterAlgorithm_v7,
                       cudnnFindConvolutionBackwardFilterAlgorithmEx,
                       cudnnGetConvolutionBackwardFilterWorkspaceSize,
                       CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1};

// Chooses (once: *choice remembers it) the algorithm of direction `dir`
// for the descriptors d1, d2 -> d3 of `conv` (buffers in1, in2 -> out are
// used only to benchmark), sets the descriptor's math type for it and
// returns its workspace.
template <typename Algo, typename Perf, typename D1, typename D2, typename D3>
absl::StatusOr<void*> PrepareConv(
    GpuContext* ctx, const ConvDirection<Algo, Perf, D1, D2, D3>& dir, D1 d1,
    const void* in1, D2 d2, const void* in2, cudnnConvolutionDescriptor_t conv,
    D3 d3, void* out, ConvChoice<Algo>* choice) {
  const GpuContextOptions& o = ctx->options();
  cudnnHandle_t h = ctx->cudnn();
  if (!choice->ready) {
    // Searches run with the math type the options allow.
    PSTRAIN_CUDNN_RETURN_IF_ERROR(cudnnSetConvolutionMathType(
        conv, o.allow_tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH));
    int max_count = 0;
    PSTRAIN_CUDNN_RETURN_IF_ERROR(dir.max_count(h, &max_count));
    std::vector<Perf> perfs(std::max(max_count, 1));
    const int requested = static_cast<int>(perfs.size());
    int got = 0;
    bool found = false;
    if (o.conv_algo_search == ConvAlgoSearch::kBenchmark) {
      absl::StatusOr<void*> ws = ctx->Workspace(o.conv_workspace_limit_bytes);
      if (ws.ok()) {
        PSTRAIN_CUDNN_RETURN_IF_ERROR(
            dir.find(h, d1, in1, d2, in2, conv, d3, out, requested, &got,
                     perfs.data(), *ws, ctx->workspace_bytes()));
        found = PickAlgo(o, perfs, got, choice);
      } else {
        LOG(WARNING) << "GPU " << ctx->device()
                     << ": no workspace to benchmark convolutions ("
                     << ws.status() << "); using cuDNN's heuristics";
      }
    }
    if (!found) {
      PSTRAIN_CUDNN_RETURN_IF_ERROR(
          dir.heuristic(h, d1, d2, conv, d3, requested, &got, perfs.data()));
      found = PickAlgo(o, perfs, got, choice);
    }
    if (!found) {
      choice->algo = dir.fallback;
      choice->math = o.allow_tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
    }
    PSTRAIN_CUDNN_RETURN_IF_ERROR(
        cudnnSetConvolutionMathType(conv, choice->math));
    PSTRAIN_CUDNN_RETURN_IF_ERROR(dir.workspace_size(
        h, d1, d2, conv, d3, choice->algo, &choice->workspace));
    choice->ready = true;
    VLOG(1) << "GPU " << ctx->device() << ": convolution algorithm "
            << static_cast<int>(choice->algo) << " (math "
            << static_cast<int>(choice->math) << ", workspace "
            << choice->workspace << " bytes)";
  }
  PSTRAIN_CUDNN_RETURN_IF_ERROR(
      cudnnSetConvolutionMathType(conv, choice->math));
  return ctx->Workspace(choice->workspace);
}

absl::StatusOr<std::shared_ptr<ConvPlan>> GetConvPlan(GpuContext* ctx,
                                                      const GpuTensor& x,
                                                      const Conv2dParams& p,
                                                      int64_t oh, int64_t ow) {
  PSTRAIN_RETURN_IF_ERROR(CheckCudnnSize(x.shape(), "convolution"));
  PSTRAIN_RETURN_IF_ERROR(
      CheckCudnnSize({x.dim(0), p.num_filter, oh, ow}, "convolution"));
  return CachedPlan<ConvPlan>(ctx, ConvKey(x, p), [&](ConvPlan* plan) {
    return BuildConvPlan(*ctx, x, p, oh, ow, plan);
  });
}

// ---------------------------------------------------------------------------
// Pooling and LRN.

struct PoolPlan {
  TensorDesc x, y;
  PoolDesc pool;
};

absl::StatusOr<std::shared_ptr<PoolPlan>> GetPoolPlan(GpuContext* ctx,
                                                      const GpuTensor& x,
                                                      const Pool2dParams& p,
                                                      int64_t oh, int64_t ow) {
  PSTRAIN_RETURN_IF_ERROR(CheckCudnnSize(x.shape(), "pooling"));
  const std::string key =
      absl::StrCat("pool:", x.ShapeString(), ":", static_cast<int>(p.kind), ",",
                   p.kernel_h, ",", p.kernel_w, ",", p.stride_h, ",",
                   p.stride_w, ",", p.pad_h, ",", p.pad_w);
  return CachedPlan<PoolPlan>(ctx, key, [&](PoolPlan* plan) -> absl::Status {
    PSTRAIN_RETURN_IF_ERROR(InitTensor4d(&plan->x, x.shape()));
    PSTRAIN_RETURN_IF_ERROR(InitTensor4d(&plan->y, x.dim(0), x.dim(1), oh, ow));
    PSTRAIN_RETURN_IF_ERROR(plan->pool.Init());
    // MXNet's average pooling counts the padding (count_include_pad).
    PSTRAIN_CUDNN_RETURN_IF_ERROR(cudnnSetPooling2dDescriptor(
        plan->pool.get(),
        p.kind == PoolKind::kMax ? CUDNN_POOLING_MAX_DETERMINISTIC
                                 : CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING,
        CUDNN_NOT_PROPAGATE_NAN, p.kernel_h, p.kernel_w, p.pad_h, p.pad_w,
        p.stride_h, p.stride_w));
    int n = 0, c = 0, h = 0, w = 0;
    PSTRAIN_CUDNN_RETURN_IF_ERROR(cudnnGetPooling2dForwardOutputDim(
        plan->pool.get(), plan->x.get(), &n, &c, &h, &w));
    if (h != oh || w != ow) {
      return absl::InternalError(absl::StrCat("pooling: cuDNN's output ", h,
                                              "x", w, " differs from ", oh, "x",
                                              ow));
    }
    return absl::OkStatus();
  });
}

// The forward output a pooling or LRN state keeps for backward, checked
// against the shape backward expects.
absl::StatusOr<const GpuTensor*> SavedOutput(
    const std::shared_ptr<void>& workspace, const GpuContext& ctx,
    const std::vector<int64_t>& shape, absl::string_view op) {
  if (workspace == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(op, " backward needs its forward's state"));
  }
  const auto* y = static_cast<const GpuTensor*>(workspace.get());
  if (y->shape() != shape || y->device() != ctx.device()) {
    return absl::FailedPreconditionError(
        absl::StrCat(op, " backward: the forward state holds ",
                     y->ShapeString(), " on GPU ", y->device(), ", want ",
                     ShapeToString(shape), " on GPU ", ctx.device()));
  }
  return y;
}

struct LrnPlan {
  TensorDesc x;
  LrnDesc lrn;
};

absl::StatusOr<std::shared_ptr<LrnPlan>> GetLrnPlan(GpuContext* ctx,
                                                    const GpuTensor& x,
                                                    const LrnParams& p) {
  if (x.ndim() != 4) {
    return Bad(absl::StrCat("LRN input must be NCHW, got ", x.ShapeString()));
  }
  if (p.nsize % 2 != 1 || p.nsize < CUDNN_LRN_MIN_N ||
      p.nsize > CUDNN_LRN_MAX_N || p.knorm < CUDNN_LRN_MIN_K ||
      p.beta < CUDNN_LRN_MIN_BETA) {
    return Bad(absl::StrCat(
        "LRN: nsize ", p.nsize, ", knorm ", p.knorm, ", beta ", p.beta,
        " outside cuDNN's range (nsize odd in [", CUDNN_LRN_MIN_N, ", ",
        CUDNN_LRN_MAX_N, "], knorm >= ", CUDNN_LRN_MIN_K,
        ", beta >= ", CUDNN_LRN_MIN_BETA, ")"));
  }
  PSTRAIN_RETURN_IF_ERROR(CheckCudnnSize(x.shape(), "LRN"));
  const std::string key = absl::StrCat("lrn:", x.ShapeString(), ":", p.nsize,
                                       ",", p.alpha, ",", p.beta, ",", p.knorm);
  return CachedPlan<LrnPlan>(ctx, key, [&](LrnPlan* plan) -> absl::Status {
    PSTRAIN_RETURN_IF_ERROR(InitTensor4d(&plan->x, x.shape()));
    PSTRAIN_RETURN_IF_ERROR(plan->lrn.Init());
    // cuDNN divides alpha by nsize itself, as MXNet's formula does.
    return CudnnStatus(cudnnSetLRNDescriptor(plan->lrn.get(), p.nsize, p.alpha,
                                             p.beta, p.knorm),
                       "cudnnSetLRNDescriptor");
  });
}

// ---------------------------------------------------------------------------
// Activations: an elementwise cuDNN call over a flat [1, 1, 1, n] view.

struct ActPlan {
  TensorDesc t;
  ActDesc act;
};

absl::StatusOr<std::shared_ptr<ActPlan>> GetActPlan(GpuContext* ctx,
                                                    Activation a, int64_t n) {
  PSTRAIN_RETURN_IF_ERROR(CheckCudnnSize({n}, "activation"));
  const std::string key = absl::StrCat("act:", static_cast<int>(a), ":", n);
  return CachedPlan<ActPlan>(ctx, key, [&](ActPlan* plan) -> absl::Status {
    PSTRAIN_RETURN_IF_ERROR(InitTensor4d(&plan->t, 1, 1, 1, n));
    PSTRAIN_RETURN_IF_ERROR(plan->act.Init());
    cudnnActivationMode_t mode = CUDNN_ACTIVATION_RELU;
    switch (a) {
      case Activation::kRelu:
        mode = CUDNN_ACTIVATION_RELU;
        break;
      case Activation::kTanh:
        mode = CUDNN_ACTIVATION_TANH;
        break;
      case Activation::kSigmoid:
        mode = CUDNN_ACTIVATION_SIGMOID;
        break;
    }
    return CudnnStatus(cudnnSetActivationDescriptor(
                           plan->act.get(), mode, CUDNN_NOT_PROPAGATE_NAN, 0.0),
                       "cudnnSetActivationDescriptor");
  });
}

// ---------------------------------------------------------------------------
// Labels and batch norm helpers.

// Checks that labels are n integers in [0, c).
absl::Status CheckLabels(absl::Span<const float> labels, int64_t n, int64_t c,
                         absl::string_view op) {
  if (static_cast<int64_t>(labels.size()) != n) {
    return Bad(
        absl::StrCat(op, ": ", n, " rows for ", labels.size(), " labels"));
  }
  for (int64_t i = 0; i < n; ++i) {
    const float l = labels[i];
    if (!(l >= 0 && l < c) ||
        l != static_cast<float>(static_cast<int64_t>(l))) {
      return Bad(absl::StrCat("label ", l, " of sample ", i,
                              " is not a class in [0, ", c, ")"));
    }
  }
  return absl::OkStatus();
}

// Copies the labels into the start of ctx's workspace (followed by
// `extra_floats` more floats of scratch) and returns the device pointer.
absl::StatusOr<float*> UploadLabels(GpuContext* ctx,
                                    absl::Span<const float> labels,
                                    size_t extra_floats) {
  PSTRAIN_ASSIGN_OR_RETURN(
      void* ws, ctx->Workspace((labels.size() + extra_floats) * sizeof(float)));
  float* d = static_cast<float*>(ws);
  if (!labels.empty()) {
    PSTRAIN_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(d, labels.data(), labels.size() * sizeof(float),
                        cudaMemcpyHostToDevice, ctx->stream()));
  }
  return d;
}

absl::StatusOr<BatchNormShape> CheckBatchNorm(
    const GpuTensor& x, std::initializer_list<const GpuTensor*> per_channel) {
  if (x.ndim() < 2 || x.dim(0) <= 0 || x.dim(1) <= 0) {
    return Bad(
        absl::StrCat("batch norm input must be [N, C, ...] with N, C > 0, got ",
                     x.ShapeString()));
  }
  const std::vector<int64_t> want{x.dim(1)};
  for (const GpuTensor* t : per_channel) {
    if (t->shape() != want) {
      return Bad(absl::StrCat("batch norm parameter is ", t->ShapeString(),
                              ", want ", ShapeToString(want), " for input ",
                              x.ShapeString()));
    }
  }
  BatchNormShape s;
  s.n = x.dim(0);
  s.c = x.dim(1);
  s.hw = x.size() / (s.n * s.c);
  return s;
}

// Checks that two tensors have the same shape.
absl::Status SameShape(const GpuTensor& a, const GpuTensor& b,
                       absl::string_view op) {
  if (a.shape() != b.shape()) {
    return Bad(
        absl::StrCat(op, ": ", a.ShapeString(), " vs ", b.ShapeString()));
  }
  return absl::OkStatus();
}

// Checks that xs (or their shapes) can be concatenated along axis 1 and
// returns the product of the dimensions after it; *channels gets the sum.
absl::StatusOr<int64_t> ConcatGeometry(
    absl::Span<const std::vector<int64_t>> shapes, int64_t* channels) {
  if (shapes.empty()) return Bad("concat of no tensors");
  const std::vector<int64_t>& first = shapes[0];
  *channels = 0;
  for (const std::vector<int64_t>& s : shapes) {
    bool ok = s.size() >= 2 && s.size() == first.size();
    for (size_t d = 0; ok && d < s.size(); ++d) ok = d == 1 || s[d] == first[d];
    if (!ok) {
      return Bad(absl::StrCat("concat: ", ShapeToString(s), " does not match ",
                              ShapeToString(first), " outside axis 1"));
    }
    *channels += s[1];
  }
  int64_t inner = 1;
  for (size_t d = 2; d < first.size(); ++d) inner *= first[d];
  return inner;
}

// Copies `rows` blocks of `cols` floats between two row-major matrices
// with row pitches src_pitch and dst_pitch (in floats), on ctx's stream.
absl::Status CopyBlocks(GpuContext* ctx, const float* src, int64_t src_pitch,
                        float* dst, int64_t dst_pitch, int64_t rows,
                        int64_t cols) {
  if (rows == 0 || cols == 0) return absl::OkStatus();
  return CudaStatus(
      cudaMemcpy2DAsync(dst, dst_pitch * sizeof(float), src,
                        src_pitch * sizeof(float), cols * sizeof(float), rows,
                        cudaMemcpyDeviceToDevice, ctx->stream()),
      "cudaMemcpy2DAsync");
}

}  // namespace

// ---------------------------------------------------------------------------

absl::Status Conv2dForward(GpuContext* ctx, const GpuTensor& x,
                           const GpuTensor& w, const GpuTensor& b,
                           const Conv2dParams& p, GpuTensor* y) {
  int64_t oh, ow;
  PSTRAIN_RETURN_IF_ERROR(CheckConv2dShapes(
      x.shape(), w.shape(), b.empty() ? std::vector<int64_t>{} : b.shape(), p,
      &oh, &ow));
  PSTRAIN_RETURN_IF_ERROR(CheckOnDevice(*ctx, {&x, &w, &b}, "convolution"));
  CudaDeviceGuard guard(ctx->device());
  PSTRAIN_RETURN_IF_ERROR(
      ResizeGpuTensor(ctx, {x.dim(0), p.num_filter, oh, ow}, y));
  PSTRAIN_ASSIGN_OR_RETURN(std::shared_ptr<ConvPlan> plan,
                           GetConvPlan(ctx, x, p, oh, ow));
  PSTRAIN_ASSIGN_OR_RETURN(
      void* ws, PrepareConv(ctx, kForward, plan->x.get(), x.data(),
                            plan->w.get(), w.data(), plan->conv.get(),
                            plan->y.get(), y->data(), &plan->fwd));
  PSTRAIN_CUDNN_RETURN_IF_ERROR(cudnnConvolutionForward(
      ctx->cudnn(), &kOne, plan->x.get(), x.data(), plan->w.get(), w.data(),
      plan->conv.get(), plan->fwd.algo, ws, plan->fwd.workspace, &kZero,
      plan->y.get(), y->data()));
  if (!b.empty()) {
    PSTRAIN_CUDNN_RETURN_IF_ERROR(
        cudnnAddTensor(ctx->cudnn(), &kOne, plan->bias.get(), b.data(), &kOne,
                       plan->y.get(), y->data()));
  }
  return absl::OkStatus();
}

absl::Status Conv2dBackward(GpuContext* ctx, const GpuTensor& x,
                            const GpuTensor& w, const GpuTensor& dy,
                            const Conv2dParams& p, GpuTensor* dx, GpuTensor* dw,
                            GpuTensor* db) {
  int64_t oh, ow;
  PSTRAIN_RETURN_IF_ERROR(
      CheckConv2dShapes(x.shape(), w.shape(), {}, p, &oh, &ow));
  if (dy.shape() != std::vector<int64_t>{x.dim(0), p.num_filter, oh, ow}) {
    return Bad(
        absl::StrCat("convolution output gradient is ", dy.ShapeString()));
  }
  PSTRAIN_RETURN_IF_ERROR(CheckOnDevice(*ctx, {&x, &w, &dy}, "convolution"));
  CudaDeviceGuard guard(ctx->device());
  if (dx != nullptr) {
    PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, x.shape(), dx));
  }
  PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, w.shape(), dw));
  if (db != nullptr) {
    PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, {p.num_filter}, db));
  }
  PSTRAIN_ASSIGN_OR_RETURN(std::shared_ptr<ConvPlan> plan,
                           GetConvPlan(ctx, x, p, oh, ow));
  if (dx != nullptr) {
    PSTRAIN_ASSIGN_OR_RETURN(
        void* ws, PrepareConv(ctx, kBackwardData, plan->w.get(), w.data(),
                              plan->y.get(), dy.data(), plan->conv.get(),
                              plan->x.get(), dx->data(), &plan->bwd_data));
    PSTRAIN_CUDNN_RETURN_IF_ERROR(cudnnConvolutionBackwardData(
        ctx->cudnn(), &kOne, plan->w.get(), w.data(), plan->y.get(), dy.data(),
        plan->conv.get(), plan->bwd_data.algo, ws, plan->bwd_data.workspace,
        &kZero, plan->x.get(), dx->data()));
  }
  PSTRAIN_ASSIGN_OR_RETURN(
      void* ws, PrepareConv(ctx, kBackwardFilter, plan->x.get(), x.data(),
                            plan->y.get(), dy.data(), plan->conv.get(),
                            plan->w.get(), dw->data(), &plan->bwd_filter));
  PSTRAIN_CUDNN_RETURN_IF_ERROR(cudnnConvolutionBackwardFilter(
      ctx->cudnn(), &kOne, plan->x.get(), x.data(), plan->y.get(), dy.data(),
      plan->conv.get(), plan->bwd_filter.algo, ws, plan->bwd_filter.workspace,
      &kZero, plan->w.get(), dw->data()));
  if (db != nullptr) {
    PSTRAIN_CUDNN_RETURN_IF_ERROR(cudnnConvolutionBackwardBias(
        ctx->cudnn(), &kOne, plan->y.get(), dy.data(), &kZero, plan->bias.get(),
        db->data()));
  }
  return absl::OkStatus();
}

absl::Status Pool2dForward(GpuContext* ctx, const GpuTensor& x,
                           const Pool2dParams& params, GpuTensor* y,
                           PoolState* state) {
  Pool2dParams p = params;
  int64_t oh, ow;
  PSTRAIN_RETURN_IF_ERROR(Pool2dGeometry(x.shape(), &p, &oh, &ow));
  PSTRAIN_RETURN_IF_ERROR(CheckOnDevice(*ctx, {&x}, "pooling"));
  CudaDeviceGuard guard(ctx->device());
  PSTRAIN_RETURN_IF_ERROR(
      ResizeGpuTensor(ctx, {x.dim(0), x.dim(1), oh, ow}, y));
  PSTRAIN_ASSIGN_OR_RETURN(std::shared_ptr<PoolPlan> plan,
                           GetPoolPlan(ctx, x, p, oh, ow));
  PSTRAIN_CUDNN_RETURN_IF_ERROR(
      cudnnPoolingForward(ctx->cudnn(), plan->pool.get(), &kOne, plan->x.get(),
                          x.data(), &kZero, plan->y.get(), y->data()));
  state->workspace = std::make_shared<GpuTensor>(*y);
  return absl::OkStatus();
}

absl::Status Pool2dBackward(GpuContext* ctx, const GpuTensor& x,
                            const GpuTensor& dy, const Pool2dParams& params,
                            const PoolState& state, GpuTensor* dx) {
  Pool2dParams p = params;
  int64_t oh, ow;
  PSTRAIN_RETURN_IF_ERROR(Pool2dGeometry(x.shape(), &p, &oh, &ow));
  const std::vector<int64_t> out_shape{x.dim(0), x.dim(1), oh, ow};
  if (dy.shape() != out_shape) {
    return Bad(absl::StrCat("pooling output gradient is ", dy.ShapeString()));
  }
  PSTRAIN_RETURN_IF_ERROR(CheckOnDevice(*ctx, {&x, &dy}, "pooling"));
  // Average pooling's gradient does not depend on y; cuDNN's signature
  // wants one all the same, so dy stands in when there is no state.
  const GpuTensor* y = &dy;
  if (p.kind == PoolKind::kMax || state.workspace != nullptr) {
    PSTRAIN_ASSIGN_OR_RETURN(
        y, SavedOutput(state.workspace, *ctx, out_shape, "pooling"));
  }
  CudaDeviceGuard guard(ctx->device());
  PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, x.shape(), dx));
  PSTRAIN_ASSIGN_OR_RETURN(std::shared_ptr<PoolPlan> plan,
                           GetPoolPlan(ctx, x, p, oh, ow));
  return CudnnStatus(
      cudnnPoolingBackward(ctx->cudnn(), plan->pool.get(), &kOne, plan->y.get(),
                           y->data(), plan->y.get(), dy.data(), plan->x.get(),
                           x.data(), &kZero, plan->x.get(), dx->data()),
      "cudnnPoolingBackward");
}

absl::Status FullyConnectedForward(GpuContext* ctx, const GpuTensor& x,
                                   const GpuTensor& w, const GpuTensor& b,
                                   GpuTensor* y) {
  if (x.ndim() < 2 || x.dim(0) <= 0 || w.ndim() != 2 ||
      x.size() / x.dim(0) != w.dim(1)) {
    return Bad(absl::StrCat("fully connected: input ", x.ShapeString(),
                            " does not match weight ", w.ShapeString()));
  }
  const int64_t n = x.dim(0), k = w.dim(1), o = w.dim(0);
  if (!b.empty() && b.size() != o) {
    return Bad(absl::StrCat("fully connected bias is ", b.ShapeString()));
  }
  if (n > INT_MAX || k > INT_MAX || o > INT_MAX) {
    return Bad(absl::StrCat("fully connected: ", x.ShapeString(), " x ",
                            w.ShapeString(), " is beyond cuBLAS's int sizes"));
  }
  PSTRAIN_RETURN_IF_ERROR(CheckOnDevice(*ctx, {&x, &w, &b}, "fully connected"));
  CudaDeviceGuard guard(ctx->device());
  PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, {n, o}, y));
  // Row-major y[n, o] = x[n, k] w[o, k]^T is column-major y^T = w^T x^T:
  // cuBLAS sees w as k x o (transposed to o x k) and x as k x n.
  PSTRAIN_CUBLAS_RETURN_IF_ERROR(
      cublasSgemm(ctx->cublas(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(o),
                  static_cast<int>(n), static_cast<int>(k), &kOne, w.data(),
                  static_cast<int>(k), x.data(), static_cast<int>(k), &kZero,
                  y->data(), static_cast<int>(o)));
  if (!b.empty()) {
    PSTRAIN_RETURN_IF_ERROR(CudaStatus(
        AddRowBiasGpu(y->data(), b.data(), n, o, ctx->stream()), "AddRowBias"));
  }
  return absl::OkStatus();
}

absl::Status FullyConnectedBackward(GpuContext* ctx, const GpuTensor& x,
                                    const GpuTensor& w, const GpuTensor& dy,
                                    GpuTensor* dx, GpuTensor* dw,
                                    GpuTensor* db) {
  if (x.ndim() < 2 || x.dim(0) <= 0 || w.ndim() != 2 ||
      x.size() / x.dim(0) != w.dim(1) ||
      dy.shape() != std::vector<int64_t>{x.dim(0), w.dim(0)}) {
    return Bad(absl::StrCat("fully connected backward: input ", x.ShapeString(),
                            ", weight ", w.ShapeString(), ", output gradient ",
                            dy.ShapeString()));
  }
  const int64_t n = x.dim(0), k = w.dim(1), o = w.dim(0);
  if (n > INT_MAX || k > INT_MAX || o > INT_MAX) {
    return Bad(absl::StrCat("fully connected: ", x.ShapeString(), " x ",
                            w.ShapeString(), " is beyond cuBLAS's int sizes"));
  }
  PSTRAIN_RETURN_IF_ERROR(
      CheckOnDevice(*ctx, {&x, &w, &dy}, "fully connected backward"));
  CudaDeviceGuard guard(ctx->device());
  const int in = static_cast<int>(n), ik = static_cast<int>(k),
            io = static_cast<int>(o);
  if (dx != nullptr) {
    PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, x.shape(), dx));
    // dx[n, k] = dy[n, o] w[o, k]; column-major dx^T = w^T dy^T.
    PSTRAIN_CUBLAS_RETURN_IF_ERROR(
        cublasSgemm(ctx->cublas(), CUBLAS_OP_N, CUBLAS_OP_N, ik, in, io, &kOne,
                    w.data(), ik, dy.data(), io, &kZero, dx->data(), ik));
  }
  PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, w.shape(), dw));
  // dw[o, k] = dy[n, o]^T x[n, k]; column-major dw^T = x^T dy.
  PSTRAIN_CUBLAS_RETURN_IF_ERROR(
      cublasSgemm(ctx->cublas(), CUBLAS_OP_N, CUBLAS_OP_T, ik, io, in, &kOne,
                  x.data(), ik, dy.data(), io, &kZero, dw->data(), ik));
  if (db != nullptr) {
    PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, {o}, db));
    PSTRAIN_RETURN_IF_ERROR(
        CudaStatus(SumColumnsGpu(dy.data(), n, o, db->data(), ctx->stream()),
                   "SumColumns"));
  }
  return absl::OkStatus();
}

absl::Status ActivationForward(GpuContext* ctx, Activation a,
                               const GpuTensor& x, GpuTensor* y) {
  PSTRAIN_RETURN_IF_ERROR(CheckOnDevice(*ctx, {&x}, "activation"));
  CudaDeviceGuard guard(ctx->device());
  PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, x.shape(), y));
  if (x.empty()) return absl::OkStatus();
  PSTRAIN_ASSIGN_OR_RETURN(std::shared_ptr<ActPlan> plan,
                           GetActPlan(ctx, a, x.size()));
  return CudnnStatus(cudnnActivationForward(ctx->cudnn(), plan->act.get(),
                                            &kOne, plan->t.get(), x.data(),
                                            &kZero, plan->t.get(), y->data()),
                     "cudnnActivationForward");
}

absl::Status ActivationBackward(GpuContext* ctx, Activation a,
                                const GpuTensor& y, const GpuTensor& dy,
                                GpuTensor* dx) {
  PSTRAIN_RETURN_IF_ERROR(SameShape(y, dy, "activation backward"));
  PSTRAIN_RETURN_IF_ERROR(CheckOnDevice(*ctx, {&y, &dy}, "activation"));
  CudaDeviceGuard guard(ctx->device());
  PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, y.shape(), dx));
  if (y.empty()) return absl::OkStatus();
  PSTRAIN_ASSIGN_OR_RETURN(std::shared_ptr<ActPlan> plan,
                           GetActPlan(ctx, a, y.size()));
  // cuDNN's ReLU backward tests x > 0; y > 0 exactly when x > 0, so y
  // stands in for x (tanh and sigmoid use y only).
  return CudnnStatus(cudnnActivationBackward(
                         ctx->cudnn(), plan->act.get(), &kOne, plan->t.get(),
                         y.data(), plan->t.get(), dy.data(), plan->t.get(),
                         y.data(), &kZero, plan->t.get(), dx->data()),
                     "cudnnActivationBackward");
}

absl::Status SoftmaxCrossEntropy(GpuContext* ctx, const GpuTensor& logits,
                                 absl::Span<const float> labels,
                                 GpuTensor* probs, double* loss) {
  if (logits.ndim() != 2 || logits.dim(0) <= 0 || logits.dim(1) <= 0) {
    return Bad(absl::StrCat("softmax: logits must be [N, C], got ",
                            logits.ShapeString()));
  }
  const int64_t n = logits.dim(0), c = logits.dim(1);
  PSTRAIN_RETURN_IF_ERROR(CheckLabels(labels, n, c, "softmax"));
  PSTRAIN_RETURN_IF_ERROR(CheckOnDevice(*ctx, {&logits}, "softmax"));
  CudaDeviceGuard guard(ctx->device());
  PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, logits.shape(), probs));
  PSTRAIN_ASSIGN_OR_RETURN(float* d_labels,
                           UploadLabels(ctx, labels, loss != nullptr ? n : 0));
  float* d_losses = loss != nullptr ? d_labels + n : nullptr;
  PSTRAIN_RETURN_IF_ERROR(
      CudaStatus(SoftmaxCrossEntropyGpu(logits.data(), d_labels, n, c,
                                        probs->data(), d_losses, ctx->stream()),
                 "SoftmaxCrossEntropy"));
  if (loss == nullptr) return absl::OkStatus();
  std::vector<float> losses(n);
  PSTRAIN_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(losses.data(), d_losses, n * sizeof(float),
                      cudaMemcpyDeviceToHost, ctx->stream()));
  PSTRAIN_RETURN_IF_ERROR(ctx->Synchronize());
  double total = 0;
  for (float l : losses) total += l;
  *loss = total / n;
  return absl::OkStatus();
}

absl::Status SoftmaxCrossEntropyBackward(GpuContext* ctx,
                                         const GpuTensor& probs,
                                         absl::Span<const float> labels,
                                         float scale, GpuTensor* dlogits) {
  if (probs.ndim() != 2) {
    return Bad(
        absl::StrCat("softmax backward: probabilities must be [N, C], got ",
                     probs.ShapeString()));
  }
  const int64_t n = probs.dim(0), c = probs.dim(1);
  PSTRAIN_RETURN_IF_ERROR(CheckLabels(labels, n, c, "softmax backward"));
  PSTRAIN_RETURN_IF_ERROR(CheckOnDevice(*ctx, {&probs}, "softmax backward"));
  CudaDeviceGuard guard(ctx->device());
  PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, probs.shape(), dlogits));
  PSTRAIN_ASSIGN_OR_RETURN(float* d_labels, UploadLabels(ctx, labels, 0));
  return CudaStatus(
      SoftmaxCrossEntropyBackwardGpu(probs.data(), d_labels, n, c, scale,
                                     dlogits->data(), ctx->stream()),
      "SoftmaxCrossEntropyBackward");
}

absl::Status BatchNormForwardTraining(
    GpuContext* ctx, const GpuTensor& x, const GpuTensor& gamma,
    const GpuTensor& beta, const BatchNormParams& p, GpuTensor* y,
    GpuBatchNormState* state, GpuTensor* moving_mean, GpuTensor* moving_var) {
  PSTRAIN_ASSIGN_OR_RETURN(
      BatchNormShape s,
      CheckBatchNorm(x, {&gamma, &beta, moving_mean, moving_var}));
  PSTRAIN_RETURN_IF_ERROR(CheckOnDevice(
      *ctx, {&x, &gamma, &beta, moving_mean, moving_var}, "batch norm"));
  CudaDeviceGuard guard(ctx->device());
  PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, x.shape(), y));
  PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, {s.c}, &state->mean));
  PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, {s.c}, &state->inv_std));
  return CudaStatus(
      BatchNormForwardTrainingGpu(
          x.data(), gamma.data(), beta.data(), s, p.eps, p.momentum,
          p.fix_gamma, y->data(), state->mean.data(), state->inv_std.data(),
          moving_mean->data(), moving_var->data(), ctx->stream()),
      "BatchNormForwardTraining");
}

absl::Status BatchNormForwardInference(GpuContext* ctx, const GpuTensor& x,
                                       const GpuTensor& gamma,
                                       const GpuTensor& beta,
                                       const GpuTensor& moving_mean,
                                       const GpuTensor& moving_var,
                                       const BatchNormParams& p, GpuTensor* y) {
  PSTRAIN_ASSIGN_OR_RETURN(
      BatchNormShape s,
      CheckBatchNorm(x, {&gamma, &beta, &moving_mean, &moving_var}));
  PSTRAIN_RETURN_IF_ERROR(CheckOnDevice(
      *ctx, {&x, &gamma, &beta, &moving_mean, &moving_var}, "batch norm"));
  CudaDeviceGuard guard(ctx->device());
  PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, x.shape(), y));
  return CudaStatus(
      BatchNormForwardInferenceGpu(
          x.data(), gamma.data(), beta.data(), moving_mean.data(),
          moving_var.data(), s, p.eps, p.fix_gamma, y->data(), ctx->stream()),
      "BatchNormForwardInference");
}

absl::Status BatchNormBackward(GpuContext* ctx, const GpuTensor& x,
                               const GpuTensor& gamma, const GpuTensor& dy,
                               const BatchNormParams& p,
                               const GpuBatchNormState& state, GpuTensor* dx,
                               GpuTensor* dgamma, GpuTensor* dbeta) {
  PSTRAIN_ASSIGN_OR_RETURN(
      BatchNormShape s,
      CheckBatchNorm(x, {&gamma, &state.mean, &state.inv_std}));
  PSTRAIN_RETURN_IF_ERROR(SameShape(x, dy, "batch norm backward"));
  PSTRAIN_RETURN_IF_ERROR(CheckOnDevice(
      *ctx, {&x, &gamma, &dy, &state.mean, &state.inv_std}, "batch norm"));
  CudaDeviceGuard guard(ctx->device());
  if (dx != nullptr) {
    PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, x.shape(), dx));
  }
  PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, {s.c}, dgamma));
  PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, {s.c}, dbeta));
  return CudaStatus(
      BatchNormBackwardGpu(x.data(), gamma.data(), dy.data(), state.mean.data(),
                           state.inv_std.data(), s, p.fix_gamma,
                           dx != nullptr ? dx->data() : nullptr, dgamma->data(),
                           dbeta->data(), ctx->stream()),
      "BatchNormBackward");
}

absl::Status LrnForward(GpuContext* ctx, const GpuTensor& x, const LrnParams& p,
                        GpuTensor* y, LrnState* state) {
  PSTRAIN_RETURN_IF_ERROR(CheckOnDevice(*ctx, {&x}, "LRN"));
  CudaDeviceGuard guard(ctx->device());
  PSTRAIN_ASSIGN_OR_RETURN(std::shared_ptr<LrnPlan> plan,
                           GetLrnPlan(ctx, x, p));
  PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, x.shape(), y));
  PSTRAIN_CUDNN_RETURN_IF_ERROR(cudnnLRNCrossChannelForward(
      ctx->cudnn(), plan->lrn.get(), CUDNN_LRN_CROSS_CHANNEL_DIM1, &kOne,
      plan->x.get(), x.data(), &kZero, plan->x.get(), y->data()));
  state->workspace = std::make_shared<GpuTensor>(*y);
  return absl::OkStatus();
}

absl::Status LrnBackward(GpuContext* ctx, const GpuTensor& x,
                         const GpuTensor& dy, const LrnParams& p,
                         const LrnState& state, GpuTensor* dx) {
  PSTRAIN_RETURN_IF_ERROR(SameShape(x, dy, "LRN backward"));
  PSTRAIN_RETURN_IF_ERROR(CheckOnDevice(*ctx, {&x, &dy}, "LRN"));
  PSTRAIN_ASSIGN_OR_RETURN(
      const GpuTensor* y, SavedOutput(state.workspace, *ctx, x.shape(), "LRN"));
  CudaDeviceGuard guard(ctx->device());
  PSTRAIN_ASSIGN_OR_RETURN(std::shared_ptr<LrnPlan> plan,
                           GetLrnPlan(ctx, x, p));
  PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, x.shape(), dx));
  return CudnnStatus(
      cudnnLRNCrossChannelBackward(
          ctx->cudnn(), plan->lrn.get(), CUDNN_LRN_CROSS_CHANNEL_DIM1, &kOne,
          plan->x.get(), y->data(), plan->x.get(), dy.data(), plan->x.get(),
          x.data(), &kZero, plan->x.get(), dx->data()),
      "cudnnLRNCrossChannelBackward");
}

absl::Status DropoutForward(GpuContext* ctx, float p, std::mt19937_64* rng,
                            const GpuTensor& x, GpuTensor* y, GpuTensor* mask) {
  if (!(p >= 0.0f && p < 1.0f)) {
    return Bad(absl::StrCat("dropout probability ", p, " is not in [0, 1)"));
  }
  PSTRAIN_RETURN_IF_ERROR(CheckOnDevice(*ctx, {&x}, "dropout"));
  CudaDeviceGuard guard(ctx->device());
  PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, x.shape(), y));
  PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, x.shape(), mask));
  const uint64_t seed = (*rng)();
  return CudaStatus(DropoutForwardGpu(x.data(), x.size(), p, seed, y->data(),
                                      mask->data(), ctx->stream()),
                    "DropoutForward");
}

absl::Status DropoutBackward(GpuContext* ctx, const GpuTensor& mask,
                             const GpuTensor& dy, GpuTensor* dx) {
  PSTRAIN_RETURN_IF_ERROR(SameShape(mask, dy, "dropout backward"));
  PSTRAIN_RETURN_IF_ERROR(CheckOnDevice(*ctx, {&mask, &dy}, "dropout"));
  CudaDeviceGuard guard(ctx->device());
  PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, dy.shape(), dx));
  return CudaStatus(
      MulGpu(dy.data(), mask.data(), dx->data(), dy.size(), ctx->stream()),
      "DropoutBackward");
}

absl::Status ConcatForward(GpuContext* ctx,
                           absl::Span<const GpuTensor* const> xs,
                           GpuTensor* y) {
  std::vector<std::vector<int64_t>> shapes;
  for (const GpuTensor* x : xs) {
    if (x == nullptr) return Bad("concat: null input");
    PSTRAIN_RETURN_IF_ERROR(CheckOnDevice(*ctx, {x}, "concat"));
    shapes.push_back(x->shape());
  }
  int64_t channels = 0;
  PSTRAIN_ASSIGN_OR_RETURN(int64_t inner, ConcatGeometry(shapes, &channels));
  std::vector<int64_t> out = shapes[0];
  out[1] = channels;
  CudaDeviceGuard guard(ctx->device());
  PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, out, y));
  int64_t offset = 0;
  for (const GpuTensor* x : xs) {
    const int64_t block = x->dim(1) * inner;
    PSTRAIN_RETURN_IF_ERROR(CopyBlocks(ctx, x->data(), block,
                                       y->data() + offset, channels * inner,
                                       out[0], block));
    offset += block;
  }
  return absl::OkStatus();
}

absl::Status ConcatBackward(GpuContext* ctx, const GpuTensor& dy,
                            absl::Span<const std::vector<int64_t>> shapes,
                            absl::Span<GpuTensor* const> dxs) {
  if (shapes.size() != dxs.size()) {
    return Bad(absl::StrCat("concat backward: ", shapes.size(), " shapes for ",
                            dxs.size(), " gradients"));
  }
  int64_t channels = 0;
  PSTRAIN_ASSIGN_OR_RETURN(int64_t inner, ConcatGeometry(shapes, &channels));
  std::vector<int64_t> out = shapes[0];
  out[1] = channels;
  if (dy.shape() != out) {
    return Bad(absl::StrCat("concat backward: output gradient is ",
                            dy.ShapeString(), ", want ", ShapeToString(out)));
  }
  PSTRAIN_RETURN_IF_ERROR(CheckOnDevice(*ctx, {&dy}, "concat backward"));
  CudaDeviceGuard guard(ctx->device());
  int64_t offset = 0;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const int64_t block = shapes[i][1] * inner;
    if (dxs[i] != nullptr) {
      PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, shapes[i], dxs[i]));
      PSTRAIN_RETURN_IF_ERROR(CopyBlocks(ctx, dy.data() + offset,
                                         channels * inner, dxs[i]->data(),
                                         block, out[0], block));
    }
    offset += block;
  }
  return absl::OkStatus();
}

absl::Status AddForward(GpuContext* ctx, const GpuTensor& a, const GpuTensor& b,
                        GpuTensor* y) {
  PSTRAIN_RETURN_IF_ERROR(SameShape(a, b, "add"));
  PSTRAIN_RETURN_IF_ERROR(CheckOnDevice(*ctx, {&a, &b}, "add"));
  CudaDeviceGuard guard(ctx->device());
  PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, a.shape(), y));
  return CudaStatus(
      AddGpu(a.data(), b.data(), y->data(), a.size(), ctx->stream()), "Add");
}

absl::Status AddInPlace(GpuContext* ctx, const GpuTensor& x, GpuTensor* acc) {
  PSTRAIN_RETURN_IF_ERROR(SameShape(x, *acc, "add in place"));
  PSTRAIN_RETURN_IF_ERROR(CheckOnDevice(*ctx, {&x, acc}, "add in place"));
  CudaDeviceGuard guard(ctx->device());
  return CudaStatus(
      AddGpu(acc->data(), x.data(), acc->data(), x.size(), ctx->stream()),
      "AddInPlace");
}

absl::Status SgdMomentumUpdate(GpuContext* ctx, const SgdMomentumParams& p,
                               const GpuTensor& grad, GpuTensor* weights,
                               GpuTensor* mom) {
  PSTRAIN_RETURN_IF_ERROR(SameShape(*weights, grad, "SGD update"));
  if (p.momentum != 0) {
    if (mom == nullptr) {
      return Bad("SGD update: momentum without a momentum buffer");
    }
    PSTRAIN_RETURN_IF_ERROR(SameShape(*weights, *mom, "SGD momentum"));
  }
  PSTRAIN_RETURN_IF_ERROR(
      CheckOnDevice(*ctx, {&grad, weights, mom}, "SGD update"));
  CudaDeviceGuard guard(ctx->device());
  return CudaStatus(SgdMomentumUpdateGpu(weights->data(), grad.data(),
                                         mom != nullptr ? mom->data() : nullptr,
                                         p, weights->size(), ctx->stream()),
                    "SgdMomentumUpdate");
}

absl::Status SumBuffers(GpuContext* ctx,
                        absl::Span<const GpuTensor* const> srcs,
                        GpuTensor* dst) {
  if (srcs.empty()) return Bad("sum of no buffers");
  // Handles on the sources keep their storage alive even if *dst, one of
  // them, is reallocated below.
  std::vector<GpuTensor> keep;
  for (const GpuTensor* s : srcs) {
    if (s == nullptr) return Bad("sum: null source");
    PSTRAIN_RETURN_IF_ERROR(SameShape(*srcs[0], *s, "sum"));
    keep.push_back(*s);
  }
  const int64_t n = keep[0].size();
  CudaDeviceGuard guard(ctx->device());
  PSTRAIN_RETURN_IF_ERROR(ResizeGpuTensor(ctx, keep[0].shape(), dst));
  if (n == 0) return absl::OkStatus();
  size_t remote = 0;
  for (const GpuTensor& s : keep) remote += s.device() != ctx->device();
  PSTRAIN_ASSIGN_OR_RETURN(void* ws,
                           ctx->Workspace(remote * n * sizeof(float)));
  float* staging = static_cast<float*>(ws);
  std::vector<const float*> ptrs;
  for (const GpuTensor& s : keep) {
    if (s.device() == ctx->device()) {
      ptrs.push_back(s.data());
      continue;
    }
    PSTRAIN_CUDA_RETURN_IF_ERROR(
        cudaMemcpyPeerAsync(staging, ctx->device(), s.data(), s.device(),
                            n * sizeof(float), ctx->stream()));
    ptrs.push_back(staging);
    staging += n;
  }
  return CudaStatus(SumGpu(ptrs.data(), static_cast<int>(ptrs.size()),
                           dst->data(), n, ctx->stream()),
                    "Sum");
}

}  // namespace kernels
}  // namespace pstrain
