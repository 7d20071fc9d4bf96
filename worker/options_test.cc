#include "worker/options.h"

#include <functional>
#include <string>

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
  struct Case {
    std::function<void(TrainerOptions*)> set;
    std::string error;
  };
  const std::vector<Case> cases = {
      {[](TrainerOptions* o) { o->top_k = 1; },
       "--top_k 1: must be 0 (off) or in [2, --num_classes 10]"},
      {[](TrainerOptions* o) { o->top_k = 11; }, "--top_k 11"},
      {[](TrainerOptions* o) { o->initializer = "orthogonal"; },
       "--initializer orthogonal: unknown"},
      {[](TrainerOptions* o) { o->min_random_area = 0; },
       "--min_random_area 0"},
      {[](TrainerOptions* o) {
         o->min_random_area = 0.5f, o->max_random_area = 0.2f;
       },
       "--max_random_area 0.2"},
      {[](TrainerOptions* o) { o->max_random_area = 1.5f; },
       "--max_random_area 1.5"},
      {[](TrainerOptions* o) { o->max_random_aspect_ratio = 1.0f; },
       "--max_random_aspect_ratio 1"},
      {[](TrainerOptions* o) {
         o->min_random_aspect_ratio = 2, o->max_random_aspect_ratio = 1;
       },
       "--max_random_aspect_ratio 1: must be >= --min_random_aspect_ratio 2"},
      {[](TrainerOptions* o) { o->min_random_aspect_ratio = -1; },
       "--min_random_aspect_ratio -1"},
      {[](TrainerOptions* o) { o->brightness = -0.1f; }, "--brightness -0.1"},
      {[](TrainerOptions* o) { o->contrast = 2; }, "--contrast 2"},
      {[](TrainerOptions* o) { o->saturation = -1; }, "--saturation -1"},
      {[](TrainerOptions* o) { o->max_random_h = 200; },
       "--max_random_h 200: must be in [0, 180]"},
      {[](TrainerOptions* o) { o->max_random_s = -1; }, "--max_random_s -1"},
      {[](TrainerOptions* o) { o->max_random_l = 256; }, "--max_random_l 256"},
      {[](TrainerOptions* o) { o->fill_value = 300; }, "--fill_value 300"},
      {[](TrainerOptions* o) { o->resize = -5; }, "--resize -5"},
      {[](TrainerOptions* o) { o->pad = -1; }, "--pad -1"},
      {[](TrainerOptions* o) { o->cpu_devices = 0; }, "--cpu_devices 0"},
      {[](TrainerOptions* o) { o->cpu_devices = 3; },
       "--batch_size 64: does not split evenly over 3 devices (--cpu_devices)"},
      {[](TrainerOptions* o) {
         o->gpus = {0, 1, 2};
       },
       "--batch_size 64: does not split evenly over 3 devices (--gpus)"},
      {[](TrainerOptions* o) {
         o->gpus = {0, 0};
       },
       "--gpus 0,0"},
      {[](TrainerOptions* o) {
         o->gpus = {0, 1}, o->cpu_devices = 2;
       },
       "--cpu_devices 2: cannot be combined with --gpus 0,1"},
      {[](TrainerOptions* o) {
         o->image_shape = {2, 28, 28};
       },
       "--image_shape 2,28,28"},
      {[](TrainerOptions* o) {
         o->image_shape = {28, 28};
       },
       "--image_shape 28,28"},
      {[](TrainerOptions* o) { o->kv_store = "dist"; }, "--kv_store dist"},
      {[](TrainerOptions* o) { o->optimizer = "rmsprop"; },
       "--optimizer rmsprop"},
      {[](TrainerOptions* o) { o->load_epoch = 3; },
       "--load_epoch 3: needs --model_prefix"},
      {[](TrainerOptions* o) { o->num_classes = 1; }, "--num_classes 1"},
      {[](TrainerOptions* o) { o->lr = 0; }, "--lr 0"},
      {[](TrainerOptions* o) { o->mom = 1; }, "--mom 1"},
      {[](TrainerOptions* o) { o->disp_batches = 0; }, "--disp_batches 0"},
      {[](TrainerOptions* o) { o->rgb_std[1] = 0; }, "--rgb_std 0"},
  };
  for (const Case& c : cases) {
    TrainerOptions o;
    c.set(&o);
    EXPECT_THAT(Error(o), HasSubstr(c.error));
  }
}

TEST(OptionsTest, GoodValuesPass) {
  TrainerOptions o;
  o.image_shape = {3, 299, 299};
  o.num_classes = 1000;
  o.top_k = 5;
  o.initializer = "msra";
  o.random_resized_crop = true;
  o.min_random_area = 0.08f;
  o.min_random_aspect_ratio = 0.75f;
  o.max_random_aspect_ratio = 1.33f;
  o.brightness = o.contrast = o.saturation = 0.4f;
  o.max_random_h = 36;
  o.max_random_s = o.max_random_l = 50;
  o.gpus = {0, 1, 2, 3};
  o.batch_size = 128;
  EXPECT_EQ(Error(o), "");
  data::AugmentOptions a = AugmentFor(o, true);
  EXPECT_TRUE(data::ValidateAugmentOptions(a).ok());
  EXPECT_EQ(a.min_aspect_ratio, 0.75f);
  EXPECT_EQ(a.random_h, 36);
  EXPECT_TRUE(a.random_resized_crop);
  // Validation is deterministic.
  data::AugmentOptions v = AugmentFor(o, false);
  EXPECT_FALSE(v.random_resized_crop || v.rand_crop || v.rand_mirror);
  EXPECT_EQ(v.brightness, 0.0f);
  EXPECT_EQ(v.height, 299);
}

TEST(OptionsTest, AspectRatioWithoutMinimumIsOneMinusToOnePlusMax) {
  TrainerOptions o;
  o.random_resized_crop = true;
  o.max_random_aspect_ratio = 0.25f;
  ASSERT_EQ(Error(o), "");
  data::AugmentOptions a = AugmentFor(o, true);
  EXPECT_FLOAT_EQ(a.min_aspect_ratio, 0.75f);
  EXPECT_FLOAT_EQ(a.max_aspect_ratio, 1.25f);
}

TEST(OptionsTest, ParsesListsAndNamesTheFlag) {
  auto g = ParseInts("gpus", "0,1, 2");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(*g, (std::vector<int>{0, 1, 2}));
  EXPECT_TRUE(ParseInts("gpus", "")->empty());
  EXPECT_THAT(std::string(ParseInts("gpus", "0,x").status().message()),
              HasSubstr("--gpus 0,x: 'x' is not an integer"));
  EXPECT_THAT(std::string(ParseNumbers("rgb_mean", "1,b").status().message()),
              HasSubstr("--rgb_mean 1,b"));
}

TEST(OptionsTest, GpusNeedCuda) {
  TrainerOptions o;
  EXPECT_TRUE(CheckDevices(o).ok());
  o.gpus = {0, 1};
  absl::Status s = CheckDevices(o);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("--gpus 0,1"));
#ifndef PSTRAIN_WORKER_CUDA
  EXPECT_THAT(std::string(s.message()), HasSubstr("built without CUDA"));
#endif
}

}  // namespace
}  // namespace worker
}  // namespace pstrain
