// The CUDA reduction kernels (collectives/cuda/reduce_kernels.h) against a
// host reference: every dtype x every reduction x counts 0, 1, 7, 1000,
// 1 Mi + 3, aligned (vector path) and misaligned by one element (scalar
// path), in place and out of place. Skips, saying why, without a GPU.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "collectives/cuda/reduce_kernels.h"
#include "tests/gpu/gpu_util.h"

namespace plexus::collectives::cuda {
namespace {

using ::plexus::testing::NoGpuReason;

// Host-side views of each storage type as double, and back.
template <typename T>
double ToD(T x) {
  return static_cast<double>(x);
}
template <>
double ToD(__half x) {
  return __half2float(x);
}
template <>
double ToD(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
template <typename T>
T FromD(double x) {
  return static_cast<T>(x);
}
template <>
__half FromD(double x) {
  return __float2half_rn(static_cast<float>(x));
}
template <>
__nv_bfloat16 FromD(double x) {
  return __float2bfloat16_rn(static_cast<float>(x));
}

double Ref(ReduceOp op, double a, double b) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      return a + b;
    case ReduceOp::kProd:
      return a * b;
    case ReduceOp::kMin:
      return std::min(a, b);
    case ReduceOp::kMax:
      return std::max(a, b);
  }
  return 0;
}

template <typename T>
void Check(DataType dtype, ReduceOp op, int64_t n, int64_t offset,
           bool in_place) {
  std::mt19937 rng(static_cast<uint32_t>(n * 31 + offset));
  std::uniform_int_distribution<int> small(-8, 8);
  const int64_t total = n + offset;
  std::vector<T> a(total), b(total), out(total);
  // Small integers: exact in every type, so fp sums and products are exact
  // (fp16/bf16 round once, as the host reference does).
  for (int64_t i = 0; i < total; ++i) {
    a[i] = FromD<T>(small(rng));
    b[i] = FromD<T>(small(rng));
  }
  T *da = nullptr, *db = nullptr, *dout = nullptr;
  const size_t bytes = std::max<int64_t>(total, 1) * sizeof(T);
  ASSERT_EQ(cudaMalloc(&da, bytes), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&db, bytes), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dout, bytes), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(da, a.data(), total * sizeof(T), cudaMemcpyHostToDevice),
            cudaSuccess);
  ASSERT_EQ(cudaMemcpy(db, b.data(), total * sizeof(T), cudaMemcpyHostToDevice),
            cudaSuccess);
  T* target = in_place ? da : dout;
  ASSERT_TRUE(ReduceDevice(dtype, op, da + offset, db + offset, target + offset,
                           n, nullptr)
                  .ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ASSERT_EQ(
      cudaMemcpy(out.data(), target, total * sizeof(T), cudaMemcpyDeviceToHost),
      cudaSuccess);
  for (int64_t i = offset; i < total; ++i) {
    double want = ToD(FromD<T>(Ref(op, ToD(a[i]), ToD(b[i]))));
    ASSERT_EQ(ToD(out[i]), want) << "element " << i << " of " << n;
  }
  cudaFree(da);
  cudaFree(db);
  cudaFree(dout);
}

template <typename T>
void CheckAll(DataType dtype) {
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kProd,
                      ReduceOp::kMin, ReduceOp::kMax}) {
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{1000},
                      int64_t{(1 << 20) + 3}}) {
      for (int64_t offset : {0, 1}) {
        for (bool in_place : {false, true}) {
          SCOPED_TRACE(::testing::Message()
                       << "op " << static_cast<int>(op) << " n " << n
                       << " offset " << offset << " in_place " << in_place);
          Check<T>(dtype, op, n, offset, in_place);
        }
      }
    }
  }
}

class ReduceKernelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = NoGpuReason(); !why.empty()) GTEST_SKIP() << why;
  }
};

TEST_F(ReduceKernelsTest, Float32) { CheckAll<float>(DataType::kFloat32); }
TEST_F(ReduceKernelsTest, Float64) { CheckAll<double>(DataType::kFloat64); }
TEST_F(ReduceKernelsTest, Float16) { CheckAll<__half>(DataType::kFloat16); }
TEST_F(ReduceKernelsTest, BFloat16) {
  CheckAll<__nv_bfloat16>(DataType::kBFloat16);
}
TEST_F(ReduceKernelsTest, Int32) { CheckAll<int32_t>(DataType::kInt32); }
TEST_F(ReduceKernelsTest, Int64) { CheckAll<int64_t>(DataType::kInt64); }

TEST_F(ReduceKernelsTest, ScaleTurnsASumIntoAnAverage) {
  std::vector<float> host = {2, 4, 6, 8, 10};
  float* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, host.size() * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(d, host.data(), host.size() * sizeof(float),
                       cudaMemcpyHostToDevice),
            cudaSuccess);
  ASSERT_TRUE(ScaleDevice(DataType::kFloat32, d, 5, 0.5, nullptr).ok());
  ASSERT_EQ(cudaMemcpy(host.data(), d, host.size() * sizeof(float),
                       cudaMemcpyDeviceToHost),
            cudaSuccess);
  EXPECT_EQ(host, (std::vector<float>{1, 2, 3, 4, 5}));
  EXPECT_EQ(ScaleDevice(DataType::kInt32, d, 5, 0.5, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      ReduceDevice(DataType::kFloat32, ReduceOp::kSum, d, d, d, -1, nullptr)
          .code(),
      absl::StatusCode::kInvalidArgument);
  cudaFree(d);
}

}  // namespace
}  // namespace plexus::collectives::cuda
