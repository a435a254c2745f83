// Checks that the CUDA runtime sees a usable GPU. Skips, saying why, on
// machines without one (the development and CI machines).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include "tests/gpu/gpu_util.h"

#include <string>

namespace {

using ::plexus::testing::NoGpuReason;

TEST(GpuEnv, DeviceMemoryRoundTrip) {
  if (std::string why = NoGpuReason(); !why.empty()) GTEST_SKIP() << why;
  const int n = 1 << 20;
  std::vector<float> host(n), back(n, 0.0f);
  for (int i = 0; i < n; ++i) host[i] = static_cast<float>(i) * 0.5f;
  void* dev = nullptr;
  ASSERT_EQ(cudaMalloc(&dev, n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(
      cudaMemcpy(dev, host.data(), n * sizeof(float), cudaMemcpyHostToDevice),
      cudaSuccess);
  ASSERT_EQ(
      cudaMemcpy(back.data(), dev, n * sizeof(float), cudaMemcpyDeviceToHost),
      cudaSuccess);
  ASSERT_EQ(cudaFree(dev), cudaSuccess);
  EXPECT_EQ(host, back);
}

}  // namespace
