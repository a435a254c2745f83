#include "examples/ctr/ctr_gpu_kernels.h"

#include <cuda_runtime.h>

namespace plexus::examples::gpu {
namespace {

constexpr int kThreads = 256;

int Blocks(long long n) {
  return static_cast<int>((n + kThreads - 1) / kThreads);
}

// One thread per example. z and sq run over the ids as the CPU's loop does,
// each sum[d] over the ids in id order; products are rounded on their own
// (__dmul_rn: no fused multiply-add, which the CPU build does not use).
__global__ void ForwardKernel(const float* rows, int64_t dim,
                              const int32_t* slot, int features, int n,
                              const float* labels, double* sum, double* logit,
                              double* dlogit, double* loss) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= n) return;
  const int32_t* s = slot + static_cast<int64_t>(e) * features;
  const int64_t k = dim - 1;
  double* se = sum + static_cast<int64_t>(e) * k;
  double z = 0, sq = 0;
  for (int j = 0; j < features; ++j) {
    const float* r = rows + s[j] * dim;
    z += r[0];
    for (int64_t d = 1; d < dim; ++d) {
      sq += __dmul_rn(static_cast<double>(r[d]), r[d]);
    }
  }
  double pairs = 0;
  for (int64_t d = 0; d < k; ++d) {
    double v = 0;
    for (int j = 0; j < features; ++j) v += rows[s[j] * dim + 1 + d];
    se[d] = v;
    pairs += __dmul_rn(v, v);
  }
  const double zz = z + 0.5 * (pairs - sq);
  logit[e] = zz;
  if (labels == nullptr) return;
  const double y = labels[e];
  loss[e] = (zz > 0 ? zz + log1p(exp(-zz)) : log1p(exp(zz))) - y * zz;
  dlogit[e] = 1.0 / (1.0 + exp(-zz)) - y;
}

// One thread per (row, element): the element's gradient summed over the
// row's occurrences in the order listed.
__global__ void BackwardKernel(const float* rows, int64_t dim, int u,
                               const int32_t* occ_begin, const int32_t* occ,
                               int features, const double* sum,
                               const double* dlogit, float* grads) {
  const long long t =
      blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (t >= static_cast<long long>(u) * dim) return;
  const int r = static_cast<int>(t / dim);
  const int64_t d = t % dim;
  const int64_t k = dim - 1;
  const double v = rows[t];
  float acc = 0;
  for (int32_t o = occ_begin[r]; o < occ_begin[r + 1]; ++o) {
    const int e = occ[o] / features;
    const double g = dlogit[e];
    acc += d == 0 ? static_cast<float>(g)
                  : static_cast<float>(__dmul_rn(
                        g, sum[static_cast<int64_t>(e) * k + d - 1] - v));
  }
  grads[t] = acc;
}

}  // namespace

cudaError_t LaunchForward(const float* rows, int64_t dim, const int32_t* slot,
                          int features, int n, const float* labels, double* sum,
                          double* logit, double* dlogit, double* loss,
                          cudaStream_t stream) {
  ForwardKernel<<<Blocks(n), kThreads, 0, stream>>>(
      rows, dim, slot, features, n, labels, sum, logit, dlogit, loss);
  return cudaGetLastError();
}

cudaError_t LaunchBackward(const float* rows, int64_t dim, int u,
                           const int32_t* occ_begin, const int32_t* occ,
                           int features, const double* sum,
                           const double* dlogit, float* grads,
                           cudaStream_t stream) {
  BackwardKernel<<<Blocks(static_cast<long long>(u) * dim), kThreads, 0,
                   stream>>>(rows, dim, u, occ_begin, occ, features, sum,
                             dlogit, grads);
  return cudaGetLastError();
}

}  // namespace plexus::examples::gpu
