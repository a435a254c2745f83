// Checks that the CUDA runtime sees a usable GPU. Skips, saying why, on
// machines without one (the development and CI machines).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <string>

namespace {

// Returns an empty string when a GPU is usable, else the reason it is not.
std::string NoGpuReason() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    return std::string("no usable GPU: ") + cudaGetErrorString(e);
  }
  if (n == 0) return "no usable GPU: the CUDA runtime reports 0 devices";
  return "";
}

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
