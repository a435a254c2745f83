// reduce_bench: the CUDA reduction kernels (collectives/cuda) against a
// device-to-device copy of the same bytes, measured in the same run.
//
//   reduce_bench [--max_mb 1024] [--iters 20]
//
// A reduction out = a (op) b reads two buffers and writes one: 3 x bytes of
// traffic; a copy reads one and writes one: 2 x bytes. Both are reported as
// GB/s of traffic (so the figures compare memory bandwidth used), and the
// ratio reduce/copy is the target (>= 90%). Median of --iters,
// timed with CUDA events. Prints why and exits 0 without a GPU.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "collectives/cuda/reduce_kernels.h"

namespace {

using plexus::collectives::DataType;
using plexus::collectives::ReduceOp;

#define CHECK_CUDA(x)                                    \
  do {                                                   \
    cudaError_t e_ = (x);                                \
    if (e_ != cudaSuccess) {                             \
      std::fprintf(stderr, "reduce_bench: %s: %s\n", #x, \
                   cudaGetErrorString(e_));              \
      std::exit(1);                                      \
    }                                                    \
  } while (0)

template <typename F>
float MedianMs(int iters, F f) {
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  f();  // warm-up
  std::vector<float> ms;
  for (int i = 0; i < iters; ++i) {
    CHECK_CUDA(cudaEventRecord(start));
    f();
    CHECK_CUDA(cudaEventRecord(stop));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float t = 0;
    CHECK_CUDA(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int64_t max_mb = 1024;
  int iters = 20;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--max_mb" && i + 1 < argc) {
      max_mb = std::atoll(argv[++i]);
    } else if (a == "--iters" && i + 1 < argc) {
      iters = std::atoi(argv[++i]);
    } else if (a == "--help" || a == "-h") {
      std::printf(
          "reduce_bench [--max_mb 1024] [--iters 20]: CUDA reduction "
          "kernels vs a device-to-device copy of the same bytes\n");
      return 0;
    } else {
      std::fprintf(stderr, "reduce_bench: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("reduce_bench: no usable GPU here; nothing measured\n");
    return 0;
  }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("# reduce_bench on %s\n", prop.name);
  std::printf("%-6s %-5s %12s %10s %10s %8s\n", "dtype", "op", "bytes",
              "copy GB/s", "red GB/s", "ratio");
  const size_t max_bytes = static_cast<size_t>(max_mb) << 20;
  void *a = nullptr, *b = nullptr, *out = nullptr;
  CHECK_CUDA(cudaMalloc(&a, max_bytes));
  CHECK_CUDA(cudaMalloc(&b, max_bytes));
  CHECK_CUDA(cudaMalloc(&out, max_bytes));
  CHECK_CUDA(cudaMemset(a, 0, max_bytes));
  CHECK_CUDA(cudaMemset(b, 0, max_bytes));
  struct Type {
    const char* name;
    DataType dtype;
    size_t size;
  };
  const Type types[] = {{"fp32", DataType::kFloat32, 4},
                        {"fp16", DataType::kFloat16, 2},
                        {"bf16", DataType::kBFloat16, 2}};
  const std::pair<const char*, ReduceOp> ops[] = {{"sum", ReduceOp::kSum},
                                                  {"max", ReduceOp::kMax},
                                                  {"prod", ReduceOp::kProd}};
  for (const Type& t : types) {
    for (const auto& [op_name, op] : ops) {
      for (size_t bytes = size_t{1} << 20; bytes <= max_bytes; bytes *= 4) {
        const int64_t n = bytes / t.size;
        float copy_ms = MedianMs(iters, [&] {
          CHECK_CUDA(cudaMemcpyAsync(out, a, bytes, cudaMemcpyDeviceToDevice));
        });
        float red_ms = MedianMs(iters, [&] {
          if (!plexus::collectives::cuda::ReduceDevice(t.dtype, op, a, b, out,
                                                       n, nullptr)
                   .ok()) {
            std::fprintf(stderr, "reduce_bench: launch failed\n");
            std::exit(1);
          }
        });
        double copy_gbs = 2.0 * bytes / (copy_ms * 1e-3) / 1e9;
        double red_gbs = 3.0 * bytes / (red_ms * 1e-3) / 1e9;
        std::printf("%-6s %-5s %12zu %10.1f %10.1f %7.0f%%\n", t.name, op_name,
                    bytes, copy_gbs, red_gbs, 100.0 * red_gbs / copy_gbs);
      }
    }
  }
  cudaFree(a);
  cudaFree(b);
  cudaFree(out);
  return 0;
}
