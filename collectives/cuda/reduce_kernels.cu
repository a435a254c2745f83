#include "collectives/cuda/reduce_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

namespace plexus::collectives::cuda {
namespace {

// The arithmetic type of a storage type: half types compute in float.
template <typename T>
struct Compute {
  using type = T;
  __device__ static T In(T x) { return x; }
  __device__ static T Out(T x) { return x; }
};
template <>
struct Compute<__half> {
  using type = float;
  __device__ static float In(__half x) { return __half2float(x); }
  __device__ static __half Out(float x) { return __float2half_rn(x); }
};
template <>
struct Compute<__nv_bfloat16> {
  using type = float;
  __device__ static float In(__nv_bfloat16 x) { return __bfloat162float(x); }
  __device__ static __nv_bfloat16 Out(float x) {
    return __float2bfloat16_rn(x);
  }
};

struct SumOp {
  template <typename C>
  __device__ C operator()(C a, C b) const {
    return a + b;
  }
};
struct ProdOp {
  template <typename C>
  __device__ C operator()(C a, C b) const {
    return a * b;
  }
};
struct MinOp {
  template <typename C>
  __device__ C operator()(C a, C b) const {
    return b < a ? b : a;
  }
};
struct MaxOp {
  template <typename C>
  __device__ C operator()(C a, C b) const {
    return a < b ? b : a;
  }
};

template <typename T, typename Op>
__device__ __forceinline__ T Apply(T a, T b, Op op) {
  using C = Compute<T>;
  return C::Out(op(C::In(a), C::In(b)));
}

// 16-byte vectors: each thread loads 16 bytes of a and of b per iteration,
// which is what it takes to approach copy bandwidth (one 4-byte load per
// thread leaves a third of it on the table on Hopper).
constexpr int kVecBytes = 16;

template <typename T, typename Op>
__global__ void ReduceVec(const T* __restrict__ a, const T* __restrict__ b,
                          T* __restrict__ out, int64_t vecs, Op op) {
  constexpr int kPer = kVecBytes / sizeof(T);
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t v = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; v < vecs;
       v += stride) {
    uint4 va = reinterpret_cast<const uint4*>(a)[v];
    uint4 vb = reinterpret_cast<const uint4*>(b)[v];
    uint4 vo;
    const T* ea = reinterpret_cast<const T*>(&va);
    const T* eb = reinterpret_cast<const T*>(&vb);
    T* eo = reinterpret_cast<T*>(&vo);
#pragma unroll
    for (int k = 0; k < kPer; ++k) eo[k] = Apply(ea[k], eb[k], op);
    reinterpret_cast<uint4*>(out)[v] = vo;
  }
}

template <typename T, typename Op>
__global__ void ReduceTail(const T* __restrict__ a, const T* __restrict__ b,
                           T* __restrict__ out, int64_t begin, int64_t n,
                           Op op) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = begin + int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
       i < n; i += stride) {
    out[i] = Apply(a[i], b[i], op);
  }
}

template <typename T>
__global__ void Scale(T* data, int64_t n, float factor) {
  using C = Compute<T>;
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    data[i] = C::Out(C::In(data[i]) * factor);
  }
}
__global__ void ScaleF64(double* data, int64_t n, double factor) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    data[i] *= factor;
  }
}

constexpr int kThreads = 256;

// Enough blocks to fill the device twice over, no more (grid-stride loops do
// the rest).
int Blocks(int64_t work) {
  static const int max_blocks = [] {
    int dev = 0, sms = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) !=
            cudaSuccess ||
        sms <= 0) {
      sms = 132;
    }
    return sms * 2 * (2048 / kThreads);  // two waves of resident blocks
  }();
  int64_t need = (work + kThreads - 1) / kThreads;
  if (need < 1) need = 1;
  return static_cast<int>(need < max_blocks ? need : max_blocks);
}

absl::Status LaunchStatus(const char* what) {
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(std::string(what) + ": " + cudaGetErrorString(e));
}

template <typename T, typename Op>
absl::Status Launch(const void* a, const void* b, void* out, int64_t n,
                    cudaStream_t s, Op op) {
  if (n <= 0) return absl::OkStatus();
  const T* pa = static_cast<const T*>(a);
  const T* pb = static_cast<const T*>(b);
  T* po = static_cast<T*>(out);
  constexpr int kPer = kVecBytes / sizeof(T);
  auto aligned = [](const void* p) {
    return reinterpret_cast<uintptr_t>(p) % kVecBytes == 0;
  };
  int64_t vecs = 0;
  if (aligned(a) && aligned(b) && aligned(out)) {
    vecs = n / kPer;
    if (vecs > 0) {
      ReduceVec<T, Op><<<Blocks(vecs), kThreads, 0, s>>>(pa, pb, po, vecs, op);
    }
  }
  const int64_t done = vecs * kPer;
  if (done < n) {
    ReduceTail<T, Op>
        <<<Blocks(n - done), kThreads, 0, s>>>(pa, pb, po, done, n, op);
  }
  return LaunchStatus("reduce kernel launch");
}

template <typename T>
absl::Status ByOp(ReduceOp op, const void* a, const void* b, void* out,
                  int64_t n, cudaStream_t s) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      return Launch<T>(a, b, out, n, s, SumOp{});
    case ReduceOp::kProd:
      return Launch<T>(a, b, out, n, s, ProdOp{});
    case ReduceOp::kMin:
      return Launch<T>(a, b, out, n, s, MinOp{});
    case ReduceOp::kMax:
      return Launch<T>(a, b, out, n, s, MaxOp{});
  }
  return absl::InvalidArgumentError("unknown reduction");
}

}  // namespace

absl::Status ReduceDevice(DataType dtype, ReduceOp op, const void* a,
                          const void* b, void* out, int64_t n, void* stream) {
  if (n < 0) return absl::InvalidArgumentError("negative element count");
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case DataType::kFloat32:
      return ByOp<float>(op, a, b, out, n, s);
    case DataType::kFloat64:
      return ByOp<double>(op, a, b, out, n, s);
    case DataType::kFloat16:
      return ByOp<__half>(op, a, b, out, n, s);
    case DataType::kBFloat16:
      return ByOp<__nv_bfloat16>(op, a, b, out, n, s);
    case DataType::kInt32:
      return ByOp<int32_t>(op, a, b, out, n, s);
    case DataType::kInt64:
      return ByOp<int64_t>(op, a, b, out, n, s);
  }
  return absl::InvalidArgumentError("unknown data type");
}

absl::Status ScaleDevice(DataType dtype, void* data, int64_t n, double factor,
                         void* stream) {
  if (n < 0) return absl::InvalidArgumentError("negative element count");
  if (n == 0) return absl::OkStatus();
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const float f = static_cast<float>(factor);
  switch (dtype) {
    case DataType::kFloat32:
      Scale<float>
          <<<Blocks(n), kThreads, 0, s>>>(static_cast<float*>(data), n, f);
      break;
    case DataType::kFloat16:
      Scale<__half>
          <<<Blocks(n), kThreads, 0, s>>>(static_cast<__half*>(data), n, f);
      break;
    case DataType::kBFloat16:
      Scale<__nv_bfloat16><<<Blocks(n), kThreads, 0, s>>>(
          static_cast<__nv_bfloat16*>(data), n, f);
      break;
    case DataType::kFloat64:
      ScaleF64<<<Blocks(n), kThreads, 0, s>>>(static_cast<double*>(data), n,
                                              factor);
      break;
    default:
      return absl::InvalidArgumentError(
          "scaling (average) needs a floating-point type");
  }
  return LaunchStatus("scale kernel launch");
}

}  // namespace plexus::collectives::cuda
