// The CTR example on the GPU (--device=gpu): the forward and backward passes
// in CUDA kernels (ctr_gpu_kernels.h) behind the CtrCompute interface that
// TrainStep and Evaluate drive (ctr_model.h), and the embedding table on the
// PS reached from device memory through the worker's DevicePsClient
// (plexus/worker/ps_client_device.h: pulls land in, and pushes leave from,
// GPU memory, staged through pinned host memory).
//
// The compute keeps the batch's rows, the per-example values and the row
// gradients in device memory. With params that reach the device
// (NewDevicePsParams) nothing else crosses PCIe but the batch's index arrays
// and the per-example losses or logits; with host params (the baseline's
// in-process table) the rows and gradients are copied around the kernels.
//
// Compiled where CUDA is found (PLEXUS_HAVE_CUDA); elsewhere (ctr_gpu_stub.cc)
// and on machines without a usable GPU both factories fail with
// FAILED_PRECONDITION saying why ("built without CUDA", "no usable GPU").
// The GPU used is the current device of the calling thread (device 0 unless
// the caller chose another).
//
// Thread safety: as CtrCompute and CtrParams, one thread at a time.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "examples/ctr/ctr_data.h"
#include "examples/ctr/ctr_model.h"

namespace plexus::worker {
class PsClient;
}  // namespace plexus::worker

namespace plexus::examples {

// A CtrCompute on the GPU; device() is "GPU".
absl::StatusOr<std::unique_ptr<CtrCompute>> NewGpuCompute();

// The PS-backed table (as NewPsParams) that also pulls into and pushes from
// device memory (reaches_device() is true). One object serves a worker's
// successive steps, keeping its pinned staging memory: Bind it to each
// step's client first.
class DevicePsParams : public CtrParams {
 public:
  // The client (borrowed until the next Bind or the object's end), table
  // shape and step id of the calls that follow. REQUIRES: before the first
  // Pull or Push.
  virtual void Bind(worker::PsClient* client, const CtrConfig& config,
                    uint64_t step_id) = 0;
};

absl::StatusOr<std::unique_ptr<DevicePsParams>> NewDevicePsParams();

}  // namespace plexus::examples
