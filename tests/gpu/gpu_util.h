// What GPU tests share: whether a GPU can be used here, and why not (the
// tests skip with it), and running one function per rank on threads.
#pragma once

#include <cuda_runtime_api.h>

#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "collectives/cuda/cuda_util.h"

namespace plexus::testing {

// Empty when a GPU is usable, else the reason it is not.
using ::plexus::collectives::cuda::NoGpuReason;

// The number of usable GPUs (0 without one).
inline int GpuCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

// Runs fn(rank) for rank 0 .. n - 1, each on its own thread, and joins them.
inline void RunRanks(int n, const std::function<void(int)>& fn) {
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) threads.emplace_back(fn, r);
  for (auto& t : threads) t.join();
}

}  // namespace plexus::testing
