// CUDA kernels of the dense example's GPU replica (gpu_replica.h), behind
// plain launch functions so that only gpu_kernels.cu goes through nvcc.
//
// Every sum is one thread's loop in a fixed order (no atomics), so a replica
// given the same inputs computes the same bits run after run.
//
// All pointers are device pointers; the parameter layout is Mlp's (mlp.h):
// W1 [hidden x 64], b1 [hidden], W2 [10 x hidden], b2 [10]. Each function
// enqueues on `stream` and returns the launch's error (cudaGetLastError).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

namespace plexus::examples::gpu {

// Scratch for n examples: h and dh [n x hidden], logits and dlogits
// [n x 10], loss [n].
struct Scratch {
  float* h;
  float* dh;
  float* logits;
  float* dlogits;
  float* loss;
};

// grad (num_params floats) = scale * the gradient of the summed softmax
// cross-entropy of examples index[0..n) of (x [rows x 64], labels);
// *loss_sum (device) = their summed loss. REQUIRES: n > 0.
cudaError_t LaunchGradient(const float* params, int hidden, const float* x,
                           const int* labels, const int* index, int n,
                           float scale, Scratch scratch, float* grad,
                           float* loss_sum, cudaStream_t stream);

// velocity = momentum * velocity + grad + weight_decay * params;
// params -= lr * velocity (element-wise, n elements).
cudaError_t LaunchMomentumSgd(float* params, float* velocity, const float* grad,
                              size_t n, float lr, float momentum,
                              float weight_decay, cudaStream_t stream);

// pred[e] = the argmax class of example e of x [n x 64]. REQUIRES: n > 0.
cudaError_t LaunchPredict(const float* params, int hidden, const float* x,
                          int n, Scratch scratch, int* pred,
                          cudaStream_t stream);

}  // namespace plexus::examples::gpu
