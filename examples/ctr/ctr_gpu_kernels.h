// CUDA kernels of the CTR example's GPU compute (ctr_gpu.h), behind plain
// launch functions so that only ctr_gpu_kernels.cu goes through nvcc.
//
// The arithmetic is the CPU reference's (ctr_model.cc), in the same order:
// per example in double, a row's gradient summed in float over the
// occurrences of its id in example order. Every sum is one thread's loop in
// a fixed order (no atomics), so the same inputs give the same bits run
// after run.
//
// All pointers are device pointers. A batch of n examples with `features`
// ids each: slot [n x features] indexes rows [u x dim] (dim = 1 + k). Each
// function enqueues on `stream` and returns the launch's error
// (cudaGetLastError).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace plexus::examples::gpu {

// Per example e: logit[e]; sum[e * k + d] = the sum of v[d] over its ids
// (what the backward pass needs). With labels (may be null: then dlogit and
// loss are not written): loss[e] = its log loss, dlogit[e] = d loss / d
// logit. REQUIRES: n > 0.
cudaError_t LaunchForward(const float* rows, int64_t dim, const int32_t* slot,
                          int features, int n, const float* labels, double* sum,
                          double* logit, double* dlogit, double* loss,
                          cudaStream_t stream);

// grads [u x dim]: row r's gradient summed over its occurrences
// occ[occ_begin[r] .. occ_begin[r + 1]), each a position e * features + j
// of slot, in the order listed (the caller lists them in example order).
// REQUIRES: u > 0.
cudaError_t LaunchBackward(const float* rows, int64_t dim, int u,
                           const int32_t* occ_begin, const int32_t* occ,
                           int features, const double* sum,
                           const double* dlogit, float* grads,
                           cudaStream_t stream);

}  // namespace plexus::examples::gpu
