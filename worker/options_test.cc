#include "worker/options.h"

#include <functional>
#include <string>
#include <utility>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pstrain {
namespace worker {
namespace {

using ::testing::HasSubstr;

// The error for `o`, or "" when it validates.
std::string Error(const TrainerOptions& o) {
  return std::string(ValidateTrainerOptions(o).message());
}

TEST(OptionsTest, DefaultsAreValid) { EXPECT_EQ(Error(TrainerOptions()), ""); }

TEST(OptionsTest, ErrorsNameTheFlag) {
  using Set = std::function<void(TrainerOptions*, data::AugmentOptions*)>;
  const std::vector<std::pair<Set, std::string>> cases = {
      {[](TrainerOptions* o, auto*) { o->top_k = 1; },
       "--top_k 1: must be 0 (off) or in [2, --num_classes 10]"},
      {[](TrainerOptions* o, auto*) { o->top_k = 11; }, "--top_k 11"},
      {[](TrainerOptions* o, auto*) { o->recovery.period_batches = 5; },
       "--checkpoint_period_batches set: needs --checkpoint_dir"},
      {[](TrainerOptions* o, auto*) { o->recovery.checkpoint_dir = "/ck"; },
       "--checkpoint_dir /ck: needs a dist_* --kv_store"},
      {[](TrainerOptions* o, auto*) {
         o->recovery.checkpoint_dir = "/ck";
         o->kv_store = "dist_sync";
         o->recovery.period_s = -1;
       },
       "--checkpoint_period_s -1"},
      {[](TrainerOptions* o, auto*) {
         o->recovery.checkpoint_dir = "/ck";
         o->kv_store = "dist_sync";
         o->recovery.keep = -2;
       },
       "--checkpoint_keep -2"},
      {[](TrainerOptions* o, auto*) { o->initializer = "orthogonal"; },
       "--initializer orthogonal: unknown"},
      {[](auto*, data::AugmentOptions* a) { a->min_random_area = 0; },
       "--min_random_area 0"},
      {[](auto*, data::AugmentOptions* a) {
         a->min_random_area = 0.5f, a->max_random_area = 0.2f;
       },
       "--max_random_area 0.2"},
      {[](auto*, data::AugmentOptions* a) { a->max_random_area = 1.5f; },
       "--max_random_area 1.5"},
      {[](auto*, data::AugmentOptions* a) { a->min_aspect_ratio = 0; },
       "--min_random_aspect_ratio 0"},
      {[](auto*, data::AugmentOptions* a) { a->min_aspect_ratio = 2; },
       "--min_random_aspect_ratio 2 (range up to 1): need 0 < min <= max"},
      {[](auto*, data::AugmentOptions* a) { a->brightness = -0.1f; },
       "--brightness -0.1"},
      {[](auto*, data::AugmentOptions* a) { a->contrast = 2; }, "--contrast 2"},
      {[](auto*, data::AugmentOptions* a) { a->saturation = -1; },
       "--saturation -1"},
      {[](auto*, data::AugmentOptions* a) { a->random_h = 200; },
       "--max_random_h 200: must be in [0, 180]"},
      {[](auto*, data::AugmentOptions* a) { a->random_s = -1; },
       "--max_random_s -1"},
      {[](auto*, data::AugmentOptions* a) { a->random_l = 256; },
       "--max_random_l 256"},
      {[](auto*, data::AugmentOptions* a) { a->fill_value = 300; },
       "--fill_value 300"},
      {[](auto*, data::AugmentOptions* a) { a->resize = -5; }, "--resize -5"},
      {[](auto*, data::AugmentOptions* a) { a->pad = -1; }, "--pad -1"},
      {[](auto*, data::AugmentOptions* a) { a->std[1] = 0; }, "--rgb_std 0"},
      {[](TrainerOptions* o, auto*) { o->cpu_devices = 0; }, "--cpu_devices 0"},
      {[](TrainerOptions* o, auto*) { o->cpu_devices = 3; },
       "--batch_size 64: does not split evenly over 3 devices (--cpu_devices)"},
      {[](TrainerOptions* o, auto*) {
         o->gpus = {0, 1, 2};
       },
       "--batch_size 64: does not split evenly over 3 devices (--gpus)"},
      {[](TrainerOptions* o, auto*) {
         o->gpus = {0, 0};
       },
       "--gpus 0,0"},
      {[](TrainerOptions* o, auto*) {
         o->gpus = {0, 1}, o->cpu_devices = 2;
       },
       "--cpu_devices 2: cannot be combined with --gpus 0,1"},
      {[](TrainerOptions* o, auto*) {
         o->image_shape = {2, 28, 28};
       },
       "--image_shape 2,28,28"},
      {[](TrainerOptions* o, auto*) {
         o->image_shape = {28, 28};
       },
       "--image_shape 28,28"},
      {[](TrainerOptions* o, auto*) { o->kv_store = "dist"; },
       "--kv_store dist"},
      {[](TrainerOptions* o, auto*) { o->optimizer = "rmsprop"; },
       "--optimizer rmsprop"},
      {[](TrainerOptions* o, auto*) { o->load_epoch = 3; },
       "--load_epoch 3: needs --model_prefix"},
      {[](TrainerOptions* o, auto*) { o->num_classes = 1; }, "--num_classes 1"},
      {[](TrainerOptions* o, auto*) { o->lr = 0; }, "--lr 0"},
      {[](TrainerOptions* o, auto*) { o->mom = 1; }, "--mom 1"},
      {[](TrainerOptions* o, auto*) { o->disp_batches = 0; },
       "--disp_batches 0"},
      {[](TrainerOptions* o, auto*) { o->fusion_bytes = -1; },
       "--fusion_bytes -1"},
      {[](TrainerOptions* o, auto*) { o->fusion_max_array_bytes = -1; },
       "--fusion_max_array_bytes -1"},
      {[](TrainerOptions* o, auto*) { o->kv.slice_bytes = 100; },
       "--slice_bytes 100: must be 0 (off) or in [4096, 1073741824]"},
      {[](TrainerOptions* o, auto*) { o->kv.send_credit_bytes = -1; },
       "--send_credit_bytes -1: must be >= 0"},
      {[](TrainerOptions* o, auto*) { o->kv.bigarray_bound = 0; },
       "--bigarray_bound 0: must be >= 1"},
      {[](TrainerOptions* o, auto*) { o->max_corrupt_fraction = 1.5; },
       "--max_corrupt_fraction 1.5: must be in [0, 1]"},
      {[](TrainerOptions* o, auto*) { o->max_corrupt_fraction = -0.1; },
       "--max_corrupt_fraction -0.1"},
      {[](TrainerOptions* o, auto*) { o->max_corrupt_records = -2; },
       "--max_corrupt_records -2: must be >= -1"},
  };
  for (const auto& [set, error] : cases) {
    TrainerOptions o;
    set(&o, &o.augment);
    EXPECT_THAT(Error(o), HasSubstr(error));
  }
}

TEST(OptionsTest, GoodValuesPass) {
  TrainerOptions o;
  o.image_shape = {3, 299, 299};
  o.num_classes = 1000;
  o.top_k = 5;
  o.initializer = "msra";
  data::AugmentOptions& a = o.augment;
  a.random_resized_crop = true;
  a.min_random_area = 0.08f;
  a.min_aspect_ratio = 0.75f;
  a.max_aspect_ratio = 1.33f;
  a.brightness = a.contrast = a.saturation = 0.4f;
  a.random_h = 36;
  a.random_s = a.random_l = 50;
  a.rand_mirror = true;
  a.resize = 320;
  o.gpus = {0, 1, 2, 3};
  o.batch_size = 128;
  o.max_corrupt_fraction = 1;
  o.max_corrupt_records = 0;
  EXPECT_EQ(Error(o), "");
  data::AugmentOptions t = AugmentFor(o, true);
  EXPECT_TRUE(data::ValidateAugmentOptions(t).ok());
  EXPECT_EQ(t.channels, 3);
  EXPECT_EQ(t.height, 299);
  EXPECT_EQ(t.random_h, 36);
  EXPECT_TRUE(t.random_resized_crop);
  // Validation is deterministic: resize and normalization only.
  data::AugmentOptions v = AugmentFor(o, false);
  EXPECT_TRUE(data::ValidateAugmentOptions(v).ok());
  EXPECT_FALSE(v.random_resized_crop || v.rand_crop || v.rand_mirror);
  EXPECT_EQ(v.brightness, 0.0f);
  EXPECT_EQ(v.random_h, 0);
  EXPECT_EQ(v.resize, 320);
  EXPECT_EQ(v.width, 299);
}

TEST(OptionsTest, AspectRatioRangeFollowsMxnet) {
  // Without a minimum (MXNet's None): [1 - max, 1 + max].
  auto r = AspectRatioRange(0, 0.25);
  ASSERT_TRUE(r.ok());
  EXPECT_FLOAT_EQ(r->first, 0.75f);
  EXPECT_FLOAT_EQ(r->second, 1.25f);
  r = AspectRatioRange(0, 0);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, std::make_pair(1.0f, 1.0f));
  r = AspectRatioRange(0.75, 1.33);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, std::make_pair(0.75f, 1.33f));
  EXPECT_THAT(std::string(AspectRatioRange(-1, 0).status().message()),
              HasSubstr("--min_random_aspect_ratio -1"));
  EXPECT_THAT(std::string(AspectRatioRange(0, 1).status().message()),
              HasSubstr("--max_random_aspect_ratio 1: must be in [0, 1)"));
  EXPECT_THAT(std::string(AspectRatioRange(2, 1).status().message()),
              HasSubstr("--max_random_aspect_ratio 1: must be >= "
                        "--min_random_aspect_ratio 2"));
}

TEST(OptionsTest, ParsesListsAndNamesTheFlag) {
  auto g = ParseInts("gpus", "0,1, 2");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(*g, (std::vector<int>{0, 1, 2}));
  EXPECT_TRUE(ParseInts("gpus", "")->empty());
  EXPECT_THAT(std::string(ParseInts("gpus", "0,x").status().message()),
              HasSubstr("--gpus 0,x: 'x' is not an integer"));
  auto n = ParseNumbers("rgb_mean", "123.68,116.779");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, (std::vector<double>{123.68, 116.779}));
  EXPECT_THAT(std::string(ParseNumbers("rgb_mean", "1,b").status().message()),
              HasSubstr("--rgb_mean 1,b: 'b' is not a number"));
}

TEST(OptionsTest, ChannelValuesRepeatTheLastOrFallBack) {
  float v[3] = {-1, -1, -1};
  ASSERT_TRUE(ParseChannelValues("rgb_mean", "123.68,116.779", 0, v).ok());
  EXPECT_EQ(std::vector<float>(v, v + 3),
            (std::vector<float>{123.68f, 116.779f, 116.779f}));
  ASSERT_TRUE(ParseChannelValues("rgb_std", "58", 1, v).ok());
  EXPECT_EQ(std::vector<float>(v, v + 3), (std::vector<float>{58, 58, 58}));
  ASSERT_TRUE(ParseChannelValues("rgb_std", "", 1, v).ok());
  EXPECT_EQ(std::vector<float>(v, v + 3), (std::vector<float>{1, 1, 1}));
  absl::Status s = ParseChannelValues("rgb_std", "1,x", 1, v);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("--rgb_std 1,x: 'x' is not a number"));
  EXPECT_EQ(std::vector<float>(v, v + 3), (std::vector<float>{1, 1, 1}));
}

TEST(OptionsTest, GpusNeedCuda) {
  TrainerOptions o;
  EXPECT_TRUE(CheckDevices(o).ok());
  o.gpus = {0, 1};
  absl::Status s = CheckDevices(o);
#ifdef PSTRAIN_WORKER_CUDA
  EXPECT_TRUE(s.ok()) << s;
#else
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("--gpus 0,1"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("built without CUDA"));
#endif
}

TEST(OptionsTest, BatchSizeIsBoundedAndMustFitInMemory) {
  TrainerOptions o;
  o.batch_size = kMaxBatchSize + 1;
  EXPECT_EQ(Error(o), "--batch_size 1048577: must be in [1, 1048576]");
  o.batch_size = 1000;
  StepMemory m;
  m.per_sample_bytes = 1000000;  // 1 MB a sample: 1 GB a step, plus 5 MB.
  m.fixed_bytes = 5000000;
  EXPECT_TRUE(CheckBatchMemory(o, m, int64_t{2} << 30).ok());
  absl::Status s = CheckBatchMemory(o, m, 500000000);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(s.message(),
            "--batch_size 1000: a training step needs at least 1.0 GB of "
            "memory (1.0 MB per sample, plus 5.0 MB of parameters), more than "
            "the 500.0 MB this machine has");
  // No overflow for the largest batch of large samples.
  o.batch_size = kMaxBatchSize;
  m.per_sample_bytes = int64_t{1} << 40;
  EXPECT_FALSE(CheckBatchMemory(o, m, int64_t{1} << 50).ok());
}

TEST(OptionsTest, BenchmarkAndEmulationErrorsNameTheFlag) {
  const std::vector<
      std::pair<std::function<void(TrainerOptions*)>, std::string>>
      cases = {
          {[](TrainerOptions* o) { o->kvstore_mode = "byteps"; },
           "--kvstore_mode byteps: use pstrain or mxnet"},
          {[](TrainerOptions* o) { o->kvstore_mode = ""; }, "--kvstore_mode"},
          {[](TrainerOptions* o) { o->local_reduce = "ring"; },
           "--local_reduce ring: use one_device or partitioned"},
          {[](TrainerOptions* o) { o->emulate_copies = "stall"; },
           "--emulate_copies stall: use overlap, per_device or stall_all"},
          {[](TrainerOptions* o) { o->emulate_device = "k80.json"; },
           "--emulate_device k80.json: emulated devices run --benchmark "
           "only"},
          {[](TrainerOptions* o) {
             o->benchmark = true, o->emulate_device = "k80.json";
             o->time_dilation = 0.5;
           },
           "--time_dilation 0.5: must be >= 1"},
          {[](TrainerOptions* o) {
             o->benchmark = true;
             o->time_dilation = 4;
           },
           "--time_dilation 4: must be >= 1, and 1 without --emulate_device"},
          {[](TrainerOptions* o) { o->warmup_batches = -1; },
           "--warmup_batches -1: must be >= 0"},
      };
  for (const auto& [set, error] : cases) {
    TrainerOptions o;
    set(&o);
    EXPECT_THAT(Error(o), HasSubstr(error));
  }
}

TEST(OptionsTest, EmulatedBenchmarksPass) {
  TrainerOptions o;
  o.benchmark = true;
  o.emulate_device = "configs/profiles/k80_resnet152.json";
  o.time_dilation = 10;
  o.kvstore_mode = "mxnet";
  o.local_reduce = "partitioned";
  o.warmup_batches = 0;
  o.gpus = {0, 1, 2, 3};
  o.batch_size = 128;
  EXPECT_EQ(Error(o), "");
  o.local_reduce = "one_device";
  o.emulate_copies = "stall_all";
  o.kvstore_mode = "pstrain";
  o.time_dilation = 1;
  EXPECT_EQ(Error(o), "");
  // --benchmark alone (real devices) needs no profile.
  o.emulate_device.clear();
  EXPECT_EQ(Error(o), "");
}

TEST(ParseSlowWorker, RankAndMillisecondsOrAnErrorNamingTheFlag) {
  TrainerOptions o;
  ASSERT_TRUE(ParseSlowWorker("", &o).ok());
  EXPECT_EQ(o.slow_worker_rank, -1);
  ASSERT_TRUE(ParseSlowWorker("2:50", &o).ok());
  EXPECT_EQ(o.slow_worker_rank, 2);
  EXPECT_EQ(o.slow_worker_ms, 50);
  for (const char* bad : {"2", "2:", "a:5", "1:-3", "1:2:3"}) {
    const absl::Status s = ParseSlowWorker(bad, &o);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(s.message()), HasSubstr("--test_slow_worker"))
        << bad;
  }
}

}  // namespace
}  // namespace worker
}  // namespace pstrain
