#include "checkpoint/ndarray_list.h"

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pstrain {
namespace checkpoint {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

template <typename T>
void Put(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(v));
}

std::string Header(uint64_t n) {
  std::string s;
  Put<uint64_t>(&s, 0x112);
  Put<uint64_t>(&s, 0);
  Put<uint64_t>(&s, n);
  return s;
}

std::vector<NDArray> Sample() {
  NDArray w = NDArray::FromFloats("arg:conv0_weight", {2, 1, 2, 2},
                                  {1, 2, 3, 4, 5, 6, 7, 8});
  NDArray mean = NDArray::FromFloats("aux:bn0_moving_mean", {3}, {0.5f, -1, 2});
  NDArray none;
  none.name = "arg:nothing";
  none.none = true;
  NDArray ints;
  ints.name = "arg:counts";
  ints.shape = {2};
  ints.dtype = DType::kInt64;
  Put<int64_t>(&ints.data, 7);
  Put<int64_t>(&ints.data, -9);
  return {w, mean, none, ints};
}

TEST(NDArrayListTest, RoundTrip) {
  const std::string bytes = SerializeNDArrayList(Sample());
  auto back = ParseNDArrayList(bytes, "mem");
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->size(), 4u);
  EXPECT_EQ((*back)[0].name, "arg:conv0_weight");
  EXPECT_THAT((*back)[0].shape, ElementsAre(2, 1, 2, 2));
  EXPECT_THAT((*back)[0].ToFloats().value(),
              ElementsAre(1, 2, 3, 4, 5, 6, 7, 8));
  EXPECT_EQ((*back)[1].name, "aux:bn0_moving_mean");
  EXPECT_TRUE((*back)[2].none);
  EXPECT_EQ((*back)[3].dtype, DType::kInt64);
  EXPECT_EQ((*back)[3].data, Sample()[3].data);
  EXPECT_EQ(SerializeNDArrayList(*back), bytes);
}

TEST(NDArrayListTest, UnnamedListHasNameCountZero) {
  std::vector<NDArray> arrays = {NDArray::FromFloats("", {1}, {3.0f})};
  const std::string bytes = SerializeNDArrayList(arrays);
  auto back = ParseNDArrayList(bytes, "mem");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ((*back)[0].name, "");
  // The last 8 bytes are the name count.
  uint64_t k;
  std::memcpy(&k, bytes.data() + bytes.size() - 8, 8);
  EXPECT_EQ(k, 0u);
}

TEST(NDArrayListTest, ReadsV1V3AndLegacyArrays) {
  std::string s = Header(4);
  // V1: magic, u32 ndim, i64 dims, ctx, dtype, data.
  Put<uint32_t>(&s, 0xF993FAC8);
  Put<uint32_t>(&s, 1);
  Put<int64_t>(&s, 2);
  Put<int32_t>(&s, 1);
  Put<int32_t>(&s, 0);
  Put<int32_t>(&s, 0);
  Put<float>(&s, 1.5f);
  Put<float>(&s, 2.5f);
  // V3 scalar: ndim 0 holds one element.
  Put<uint32_t>(&s, 0xF993FACA);
  Put<int32_t>(&s, 0);
  Put<int32_t>(&s, 0);
  Put<int32_t>(&s, 1);
  Put<int32_t>(&s, 0);
  Put<int32_t>(&s, 0);
  Put<float>(&s, 9.0f);
  // V3 none: ndim -1.
  Put<uint32_t>(&s, 0xF993FACA);
  Put<int32_t>(&s, 0);
  Put<int32_t>(&s, -1);
  // Legacy: u32 ndim, u32 dims.
  Put<uint32_t>(&s, 2);
  Put<uint32_t>(&s, 1);
  Put<uint32_t>(&s, 1);
  Put<int32_t>(&s, 1);
  Put<int32_t>(&s, 0);
  Put<int32_t>(&s, 3);  // uint8
  s.push_back('\x2a');
  Put<uint64_t>(&s, 0);
  auto a = ParseNDArrayList(s, "mixed");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT((*a)[0].ToFloats().value(), ElementsAre(1.5f, 2.5f));
  EXPECT_TRUE((*a)[1].shape.empty());
  EXPECT_THAT((*a)[1].ToFloats().value(), ElementsAre(9.0f));
  EXPECT_TRUE((*a)[2].none);
  EXPECT_THAT((*a)[3].shape, ElementsAre(1, 1));
  EXPECT_EQ((*a)[3].data, "\x2a");
}

TEST(NDArrayTest, ToFloatsOfAnotherDTypeIsAnErrorNamingTheArray) {
  NDArray a;
  a.name = "arg:fc1_weight";
  a.shape = {1};
  a.dtype = DType::kUint8;
  a.data = "\x2a";
  auto v = a.ToFloats();
  ASSERT_FALSE(v.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(v.status()));
  EXPECT_NE(v.status().message().find("arg:fc1_weight"), std::string::npos)
      << v.status();
}

TEST(NDArrayListTest, EveryTruncationIsDataLoss) {
  const std::string bytes = SerializeNDArrayList(Sample());
  for (size_t n = 0; n < bytes.size(); ++n) {
    auto r = ParseNDArrayList(absl::string_view(bytes.data(), n), "cut.params");
    ASSERT_FALSE(r.ok()) << "prefix of " << n << " bytes parsed";
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << n;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("cut.params"));
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("byte offset"));
  }
}

TEST(NDArrayListTest, CorruptionModesNameWhatAndWhere) {
  const std::string good = SerializeNDArrayList(Sample());
  {
    std::string s = good;
    s[0] = 0x13;
    auto r = ParseNDArrayList(s, "f");
    EXPECT_THAT(std::string(r.status().message()),
                HasSubstr("not an MXNet NDArray list"));
  }
  {
    std::string s = Header(1ull << 60);
    auto r = ParseNDArrayList(s, "f");
    EXPECT_THAT(std::string(r.status().message()),
                HasSubstr("array count 1152921504606846976 impossible"));
  }
  {
    // A huge shape must be refused before any allocation.
    std::string s = Header(1);
    Put<uint32_t>(&s, 0xF993FAC9);
    Put<int32_t>(&s, 0);
    Put<int32_t>(&s, 2);
    Put<int64_t>(&s, 1 << 30);
    Put<int64_t>(&s, 1 << 30);
    auto r = ParseNDArrayList(s, "f");
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("array 0"));
  }
  {
    std::string s = Header(1);
    Put<uint32_t>(&s, 0xF993FAC9);
    Put<int32_t>(&s, 0);
    Put<int32_t>(&s, 1);
    Put<int64_t>(&s, 1);
    Put<int32_t>(&s, 1);
    Put<int32_t>(&s, 0);
    Put<int32_t>(&s, 99);  // No such dtype.
    auto r = ParseNDArrayList(s, "f");
    EXPECT_THAT(std::string(r.status().message()),
                HasSubstr("array 0: unknown dtype 99 at byte offset 24"));
  }
  {
    std::string s = Header(1);
    Put<uint32_t>(&s, 0xF993FAC9);
    Put<int32_t>(&s, 1);  // row_sparse
    auto r = ParseNDArrayList(s, "f");
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnimplemented);
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("sparse"));
  }
  {
    std::string s = good + "x";
    auto r = ParseNDArrayList(s, "f");
    EXPECT_THAT(std::string(r.status().message()),
                HasSubstr("1 unexpected trailing bytes"));
  }
  {
    // Name count 3 for 4 arrays.
    std::string s = SerializeNDArrayList({NDArray::FromFloats("", {1}, {1})});
    s.resize(s.size() - 8);
    Put<uint64_t>(&s, 3);
    auto r = ParseNDArrayList(s, "f");
    EXPECT_THAT(std::string(r.status().message()),
                HasSubstr("name count 3 differs from array count 1"));
  }
}

TEST(NDArrayListTest, FileWriteIsAtomicAndReadable) {
  const std::string dir = std::getenv("TEST_TMPDIR");
  const std::string path = dir + "/model-0001.params";
  ASSERT_TRUE(WriteNDArrayListFile(path, Sample()).ok());
  auto back = ReadNDArrayListFile(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->size(), 4u);
  auto missing = WriteNDArrayListFile(dir + "/no/such/dir/x.params", Sample());
  EXPECT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.message()), HasSubstr("/no/such/dir/"));
  auto absent = ReadNDArrayListFile(dir + "/absent.params");
  EXPECT_EQ(absent.status().code(), absl::StatusCode::kNotFound);
}

TEST(NDArrayListTest, ReadsMxnetLenetCheckpointExactly) {
  const char* shared = std::getenv("PSTRAIN_SHARED_DIR");
  const std::string path =
      shared ? absl::StrCat(shared, "/testdata/mxnet/lenet-0001.params") : "";
  if (!shared || !std::ifstream(path)) {
    GTEST_SKIP() << "MXNet test data not found (PSTRAIN_SHARED_DIR="
                 << (shared ? shared : "unset")
                 << "); compatibility test skipped";
  }
  auto arrays = ReadNDArrayListFile(path);
  ASSERT_TRUE(arrays.ok()) << arrays.status();
  ASSERT_EQ(arrays->size(), 8u);
  const std::vector<std::pair<std::string, std::vector<int64_t>>> want = {
      {"arg:hybridsequential0_conv0_weight", {5, 1, 5, 5}},
      {"arg:hybridsequential0_conv0_bias", {5}},
      {"arg:hybridsequential0_conv1_weight", {5, 5, 5, 5}},
      {"arg:hybridsequential0_conv1_bias", {5}},
      {"arg:hybridsequential0_dense0_weight", {32, 80}},
      {"arg:hybridsequential0_dense0_bias", {32}},
      {"arg:hybridsequential0_dense1_weight", {10, 32}},
      {"arg:hybridsequential0_dense1_bias", {10}}};
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ((*arrays)[i].name, want[i].first);
    EXPECT_EQ((*arrays)[i].shape, want[i].second);
    EXPECT_EQ((*arrays)[i].dtype, DType::kFloat32);
  }
  // The first weight, read straight from the file's bytes 0x3e243258.
  const uint32_t first_bits = 0x3e243258;
  float first;
  std::memcpy(&first, &first_bits, sizeof(first));
  EXPECT_EQ((*arrays)[0].ToFloats().value()[0], first);
  EXPECT_NEAR(first, 0.1603483f, 1e-7f);
  // Writing it back reproduces MXNet's file byte for byte.
  std::ifstream in(path, std::ios::binary);
  std::stringstream raw;
  raw << in.rdbuf();
  EXPECT_EQ(SerializeNDArrayList(*arrays), raw.str());
}

}  // namespace
}  // namespace checkpoint
}  // namespace pstrain
