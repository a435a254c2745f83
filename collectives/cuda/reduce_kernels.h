// Element-wise reductions of device memory, for the paths that reduce GPU
// buffers outside NCCL (the hierarchical all-reduce combining what arrives
// from other nodes, and ring steps over device buffers). Built only where
// the CUDA toolkit is present (PLEXUS_HAVE_CUDA).
//
// The header needs no CUDA headers: streams travel as void* (a
// cudaStream_t; nullptr is the legacy default stream), so host-only code can
// include it.
//
// Every call only enqueues work on `stream` and returns; errors reported are
// launch errors (INVALID_ARGUMENT for a dtype/op pair that is not
// supported, INTERNAL with CUDA's message otherwise). Supported: sum, avg
// (sum, then ScaleDevice by 1/n), min, max and prod for fp32, fp16 and bf16
// (fp16/bf16 are computed in fp32 and rounded once), and for fp64, int32
// and int64.
//
// Thread safety: calls may come from any thread; work on one stream runs in
// order.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "plexus/collectives/options.h"

namespace plexus::collectives::cuda {

// out[i] = a[i] (op) b[i] for i < n. `out` may alias `a` or `b`. For kAvg
// this is the sum (the caller scales once, after the last operand).
absl::Status ReduceDevice(DataType dtype, ReduceOp op, const void* a,
                          const void* b, void* out, int64_t n, void* stream);

// data[i] *= factor for i < n (floating types only; INVALID_ARGUMENT
// otherwise): what turns a sum of k operands into their average.
absl::Status ScaleDevice(DataType dtype, void* data, int64_t n, double factor,
                         void* stream);

}  // namespace plexus::collectives::cuda
