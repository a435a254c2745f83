#include "examples/mlp/gpu_kernels.h"

#include <cuda_runtime.h>

namespace plexus::examples::gpu {
namespace {

constexpr int kF = 64;  // features
constexpr int kC = 10;  // classes
constexpr int kThreads = 256;

int Blocks(long long n) {
  return static_cast<int>((n + kThreads - 1) / kThreads);
}

struct Layout {
  size_t w1, b1, w2, b2;
  __host__ __device__ explicit Layout(int hidden)
      : w1(0),
        b1(static_cast<size_t>(hidden) * kF),
        w2(b1 + hidden),
        b2(w2 + static_cast<size_t>(kC) * hidden) {}
};

// h[e][j] = relu(b1[j] + W1[j] . x[row(e)]), row(e) = index ? index[e] : e.
__global__ void HiddenKernel(const float* p, int hidden, const float* x,
                             const int* index, int n, float* h) {
  const long long t =
      blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (t >= static_cast<long long>(n) * hidden) return;
  const int e = static_cast<int>(t / hidden), j = static_cast<int>(t % hidden);
  const Layout L(hidden);
  const float* xe = x + static_cast<size_t>(index ? index[e] : e) * kF;
  const float* row = p + L.w1 + static_cast<size_t>(j) * kF;
  float s = p[L.b1 + j];
  for (int i = 0; i < kF; ++i) s += row[i] * xe[i];
  h[t] = s > 0 ? s : 0;
}

// logits[e][k] = b2[k] + W2[k] . h[e].
__global__ void LogitsKernel(const float* p, int hidden, const float* h, int n,
                             float* logits) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= n * kC) return;
  const int e = t / kC, k = t % kC;
  const Layout L(hidden);
  const float* row = p + L.w2 + static_cast<size_t>(k) * hidden;
  const float* he = h + static_cast<size_t>(e) * hidden;
  float s = p[L.b2 + k];
  for (int j = 0; j < hidden; ++j) s += row[j] * he[j];
  logits[t] = s;
}

// Softmax cross-entropy per example: loss[e], dlogits[e] = scale * (p - y).
__global__ void SoftmaxKernel(const float* logits, const int* labels,
                              const int* index, int n, float scale,
                              float* dlogits, float* loss) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= n) return;
  const float* l = logits + e * kC;
  const int y = labels[index[e]];
  float m = l[0];
  for (int k = 1; k < kC; ++k) m = fmaxf(m, l[k]);
  double z = 0;
  for (int k = 0; k < kC; ++k) z += exp(static_cast<double>(l[k] - m));
  loss[e] = static_cast<float>(log(z) - (l[y] - m));
  for (int k = 0; k < kC; ++k) {
    const float pk = static_cast<float>(exp(static_cast<double>(l[k] - m)) / z);
    dlogits[e * kC + k] = (pk - (k == y ? 1.0f : 0.0f)) * scale;
  }
}

// dh[e][j] = (h[e][j] > 0) * sum_k dlogits[e][k] * W2[k][j].
__global__ void BackHiddenKernel(const float* p, int hidden, const float* h,
                                 const float* dlogits, int n, float* dh) {
  const long long t =
      blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (t >= static_cast<long long>(n) * hidden) return;
  const int e = static_cast<int>(t / hidden), j = static_cast<int>(t % hidden);
  if (h[t] <= 0) {
    dh[t] = 0;
    return;
  }
  const Layout L(hidden);
  float s = 0;
  for (int k = 0; k < kC; ++k) {
    s += dlogits[e * kC + k] * p[L.w2 + static_cast<size_t>(k) * hidden + j];
  }
  dh[t] = s;
}

// One thread per parameter, summing over the examples in order:
// W2[k][j] += dlogits[e][k] h[e][j]; b2[k]; W1[j][i] += dh[e][j] x[e][i];
// b1[j].
__global__ void ParamGradKernel(int hidden, const float* x, const int* index,
                                int n, const float* h, const float* dh,
                                const float* dlogits, float* g) {
  const Layout L(hidden);
  const long long total = static_cast<long long>(L.b2) + kC;
  const long long t =
      blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (t >= total) return;
  float s = 0;
  if (t < static_cast<long long>(L.b1)) {  // W1
    const int j = static_cast<int>(t / kF), i = static_cast<int>(t % kF);
    for (int e = 0; e < n; ++e) {
      s += dh[static_cast<size_t>(e) * hidden + j] *
           x[static_cast<size_t>(index[e]) * kF + i];
    }
  } else if (t < static_cast<long long>(L.w2)) {  // b1
    const int j = static_cast<int>(t - L.b1);
    for (int e = 0; e < n; ++e) s += dh[static_cast<size_t>(e) * hidden + j];
  } else if (t < static_cast<long long>(L.b2)) {  // W2
    const int k = static_cast<int>((t - L.w2) / hidden);
    const int j = static_cast<int>((t - L.w2) % hidden);
    for (int e = 0; e < n; ++e) {
      s += dlogits[e * kC + k] * h[static_cast<size_t>(e) * hidden + j];
    }
  } else {  // b2
    const int k = static_cast<int>(t - L.b2);
    for (int e = 0; e < n; ++e) s += dlogits[e * kC + k];
  }
  g[t] = s;
}

__global__ void SumKernel(const float* v, int n, float* out) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  double s = 0;
  for (int i = 0; i < n; ++i) s += v[i];
  *out = static_cast<float>(s);
}

__global__ void SgdKernel(float* w, float* v, const float* g, size_t n,
                          float lr, float momentum, float weight_decay) {
  const size_t t = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (t >= n) return;
  v[t] = momentum * v[t] + g[t] + weight_decay * w[t];
  w[t] -= lr * v[t];
}

__global__ void ArgmaxKernel(const float* logits, int n, int* pred) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= n) return;
  int best = 0;
  for (int k = 1; k < kC; ++k) {
    if (logits[e * kC + k] > logits[e * kC + best]) best = k;
  }
  pred[e] = best;
}

}  // namespace

cudaError_t LaunchGradient(const float* params, int hidden, const float* x,
                           const int* labels, const int* index, int n,
                           float scale, Scratch s, float* grad, float* loss_sum,
                           cudaStream_t stream) {
  const long long nh = static_cast<long long>(n) * hidden;
  HiddenKernel<<<Blocks(nh), kThreads, 0, stream>>>(params, hidden, x, index, n,
                                                    s.h);
  LogitsKernel<<<Blocks(n * kC), kThreads, 0, stream>>>(params, hidden, s.h, n,
                                                        s.logits);
  SoftmaxKernel<<<Blocks(n), kThreads, 0, stream>>>(s.logits, labels, index, n,
                                                    scale, s.dlogits, s.loss);
  BackHiddenKernel<<<Blocks(nh), kThreads, 0, stream>>>(params, hidden, s.h,
                                                        s.dlogits, n, s.dh);
  const Layout L(hidden);
  ParamGradKernel<<<Blocks(static_cast<long long>(L.b2) + kC), kThreads, 0,
                    stream>>>(hidden, x, index, n, s.h, s.dh, s.dlogits, grad);
  SumKernel<<<1, 1, 0, stream>>>(s.loss, n, loss_sum);
  return cudaGetLastError();
}

cudaError_t LaunchMomentumSgd(float* params, float* velocity, const float* grad,
                              size_t n, float lr, float momentum,
                              float weight_decay, cudaStream_t stream) {
  SgdKernel<<<Blocks(static_cast<long long>(n)), kThreads, 0, stream>>>(
      params, velocity, grad, n, lr, momentum, weight_decay);
  return cudaGetLastError();
}

cudaError_t LaunchPredict(const float* params, int hidden, const float* x,
                          int n, Scratch s, int* pred, cudaStream_t stream) {
  HiddenKernel<<<Blocks(static_cast<long long>(n) * hidden), kThreads, 0,
                 stream>>>(params, hidden, x, nullptr, n, s.h);
  LogitsKernel<<<Blocks(n * kC), kThreads, 0, stream>>>(params, hidden, s.h, n,
                                                        s.logits);
  ArgmaxKernel<<<Blocks(n), kThreads, 0, stream>>>(s.logits, n, pred);
  return cudaGetLastError();
}

}  // namespace plexus::examples::gpu
