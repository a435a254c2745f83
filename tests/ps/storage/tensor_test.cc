#include "ps/storage/tensor.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace plexus::ps {
namespace {

TEST(Half, RoundTripsExactValues) {
  for (float f : {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 6.103515625e-05f,
                  5.960464477539063e-08f /* smallest subnormal */}) {
    EXPECT_EQ(HalfToFloat(FloatToHalf(f)), f) << f;
  }
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);  // overflow rounds to Inf
  EXPECT_TRUE(std::isinf(HalfToFloat(FloatToHalf(1e10f))));
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(NAN))));
  // Round to nearest even: 1 + 2^-11 is halfway between 1 and 1 + 2^-10.
  EXPECT_EQ(FloatToHalf(1.0f + 0x1.0p-11f), 0x3c00);
  EXPECT_EQ(FloatToHalf(1.0f + 0x1.8p-10f), 0x3c02);
}

TEST(Half, EveryHalfRoundTrips) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(FloatToHalf(f), h) << std::hex << h;
  }
}

TEST(BFloat16, RoundsToNearestEven) {
  EXPECT_EQ(FloatToBFloat16(1.0f), 0x3f80);
  EXPECT_EQ(BFloat16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(BFloat16ToFloat(FloatToBFloat16(1.0f + 0x1.0p-8f)), 1.0f);
  EXPECT_EQ(BFloat16ToFloat(FloatToBFloat16(1.0f + 0x1.8p-8f)),
            1.0f + 0x1.0p-7f);
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(NAN))));
}

TEST(Tensor, ElementCountRejectsNegativeAndOverflow) {
  std::vector<int64_t> ok = {3, 4}, neg = {3, -1},
                       big = {int64_t{1} << 40, int64_t{1} << 40};
  EXPECT_EQ(*ElementCount(ok), 12);
  EXPECT_EQ(*ElementCount({}), 1);
  EXPECT_EQ(ElementCount(neg).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ElementCount(big).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(Tensor, CheckTensorMatchesShapeDtypeAndBytes) {
  std::vector<int64_t> shape = {2, 3};
  std::string bytes(24, '\0');
  EXPECT_TRUE(CheckTensor({DType::kFloat32, shape, bytes}, shape, "t").ok());
  EXPECT_EQ(
      CheckTensor({DType::kFloat32, shape, bytes.substr(1)}, shape, "t").code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckTensor({DType::kFloat64, shape, bytes}, shape, "t").code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<int64_t> other = {3, 2};
  EXPECT_EQ(CheckTensor({DType::kFloat32, other, bytes}, shape, "t").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(
      CheckTensor({DType::kFloat16, shape, bytes.substr(12)}, shape, "t").ok());
}

}  // namespace
// Every position of a block of 16 and of the tail, each kind of non-finite
// value, and the largest finite and subnormal values that must pass.
TEST(Tensor, AllFiniteFindsNanAndInfAnywhere) {
  const float bad[] = {std::numeric_limits<float>::quiet_NaN(),
                       std::numeric_limits<float>::infinity(),
                       -std::numeric_limits<float>::infinity()};
  for (int64_t n : {1, 15, 16, 17, 37}) {
    std::vector<float> v(n, 1.0f);
    v[0] = std::numeric_limits<float>::max();
    v[n - 1] = -std::numeric_limits<float>::denorm_min();
    EXPECT_TRUE(AllFinite(v.data(), n)) << n;
    for (int64_t at = 0; at < n; ++at) {
      for (float b : bad) {
        std::vector<float> w = v;
        w[at] = b;
        EXPECT_FALSE(AllFinite(w.data(), n)) << n << " " << at << " " << b;
      }
    }
  }
  EXPECT_TRUE(AllFinite(nullptr, 0));
}

}  // namespace plexus::ps
