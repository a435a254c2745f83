// What GPU tests share: whether a GPU can be used here, and why not.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

namespace plexus::testing {

// Empty when a GPU is usable, else the reason it is not (the tests skip
// with it).
inline std::string NoGpuReason() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    return std::string("no usable GPU: ") + cudaGetErrorString(e);
  }
  if (n == 0) return "no usable GPU: the CUDA runtime reports 0 devices";
  return "";
}

}  // namespace plexus::testing
