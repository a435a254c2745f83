#include "collectives/nccl/hierarchical_allreduce.h"

#include <cuda_runtime.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "collectives/algorithms/algorithms.h"
#include "collectives/cuda/reduce_kernels.h"
#include "common/status.h"

namespace plexus::collectives::nccl {
namespace {

cudaStream_t AsStream(void* s) { return static_cast<cudaStream_t>(s); }
cudaEvent_t AsEvent(void* e) { return static_cast<cudaEvent_t>(e); }

bool IsFloating(DataType t) {
  return t == DataType::kFloat32 || t == DataType::kFloat64 ||
         t == DataType::kFloat16 || t == DataType::kBFloat16;
}

absl::StatusOr<void*> NewEvent() {
  cudaEvent_t e = nullptr;
  PLEXUS_RETURN_IF_ERROR(
      cuda::CudaStatus(cudaEventCreateWithFlags(&e, cudaEventDisableTiming),
                       "hierarchical all-reduce: creating an event"));
  return static_cast<void*>(e);
}

}  // namespace

HierarchicalAllReduce::HierarchicalAllReduce(
    std::unique_ptr<NcclCommunicator> local, std::unique_ptr<Transport> cross,
    int group_size, const HierarchicalOptions& options)
    : local_(std::move(local)),
      cross_(std::move(cross)),
      group_size_(group_size),
      options_(options) {}

HierarchicalAllReduce::~HierarchicalAllReduce() {
  for (void* e : chunk_events_) cudaEventDestroy(AsEvent(e));
  if (ready_ != nullptr) cudaEventDestroy(AsEvent(ready_));
  if (done_ != nullptr) cudaEventDestroy(AsEvent(done_));
  if (legacy_done_ != nullptr) cudaEventDestroy(AsEvent(legacy_done_));
  if (own_ != nullptr) cudaStreamDestroy(AsStream(own_));
  if (copy_in_ != nullptr) cudaStreamDestroy(AsStream(copy_in_));
  if (copy_out_ != nullptr) cudaStreamDestroy(AsStream(copy_out_));
}

absl::StatusOr<std::unique_ptr<HierarchicalAllReduce>>
HierarchicalAllReduce::Create(std::unique_ptr<NcclCommunicator> local,
                              std::unique_ptr<Transport> cross, int group_size,
                              const HierarchicalOptions& options) {
  if (local == nullptr) {
    return absl::InvalidArgumentError(
        "hierarchical all-reduce: no node communicator");
  }
  if (options.stage_chunk_bytes == 0) {
    return absl::InvalidArgumentError(
        "hierarchical all-reduce: stage_chunk_bytes must be positive");
  }
  std::unique_ptr<HierarchicalAllReduce> h(new HierarchicalAllReduce(
      std::move(local), std::move(cross), group_size, options));
  PLEXUS_RETURN_IF_ERROR(h->Init());
  return h;
}

absl::Status HierarchicalAllReduce::Init() {
  // The node communicator set the device it runs on current.
  PLEXUS_RETURN_IF_ERROR(cuda::CudaStatus(
      cudaGetDevice(&device_), "hierarchical all-reduce: current device"));
  PLEXUS_ASSIGN_OR_RETURN(legacy_done_, NewEvent());
  std::vector<void**> streams = {&own_};
  if (cross_ != nullptr) {
    streams.push_back(&copy_in_);
    streams.push_back(&copy_out_);
  }
  for (void** s : streams) {
    cudaStream_t stream = nullptr;
    PLEXUS_RETURN_IF_ERROR(cuda::CudaStatus(
        cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
        "hierarchical all-reduce: creating a copy stream"));
    *s = stream;
  }
  if (cross_ == nullptr) return absl::OkStatus();
  PLEXUS_ASSIGN_OR_RETURN(ready_, NewEvent());
  PLEXUS_ASSIGN_OR_RETURN(done_, NewEvent());
  return absl::OkStatus();
}

absl::Status HierarchicalAllReduce::AllReduce(const void* send, void* recv,
                                              int64_t count, DataType type,
                                              ReduceOp op, absl::Time deadline,
                                              void* stream) {
  if (count < 0) return absl::InvalidArgumentError("negative count");
  if (op == ReduceOp::kAvg && !IsFloating(type)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "hierarchical all-reduce: avg of ", DataTypeName(type),
        " is not supported on device buffers (use sum and divide)"));
  }
  const ReduceOp inner = op == ReduceOp::kAvg ? ReduceOp::kSum : op;
  PLEXUS_RETURN_IF_ERROR(
      cuda::CudaStatus(cudaSetDevice(device_), "selecting the device"));
  void* s = stream;
  if (s == nullptr) {
    // Our own stream, after the work on the legacy default stream (which
    // NCCL is never given).
    PLEXUS_RETURN_IF_ERROR(cuda::CudaStatus(
        cudaEventRecord(AsEvent(legacy_done_), cudaStreamLegacy),
        "ordering after the default stream"));
    PLEXUS_RETURN_IF_ERROR(cuda::CudaStatus(
        cudaStreamWaitEvent(AsStream(own_), AsEvent(legacy_done_), 0),
        "ordering after the default stream"));
    s = own_;
  }
  const bool leader = local_->rank() == 0;
  PLEXUS_RETURN_IF_ERROR(
      local_->Reduce(send, recv, count, type, inner, 0, deadline, s),
      "hierarchical all-reduce, step 1 (reduce inside the node)");
  if (leader && cross_ != nullptr) {
    PLEXUS_RETURN_IF_ERROR(CrossNodes(recv, count, type, inner, deadline, s),
                           "hierarchical all-reduce, step 2 (across nodes)");
  }
  if (leader && op == ReduceOp::kAvg && count > 0) {
    PLEXUS_RETURN_IF_ERROR(
        cuda::ScaleDevice(type, recv, count, 1.0 / group_size_, s),
        "hierarchical all-reduce: scaling the sum to the average");
  }
  return Annotate(local_->Broadcast(recv, count, type, 0, deadline, s),
                  "hierarchical all-reduce, step 3 (broadcast in the node)");
}

absl::Status HierarchicalAllReduce::CrossNodes(void* buf, int64_t count,
                                               DataType type, ReduceOp op,
                                               absl::Time deadline,
                                               void* stream) {
  const size_t esz = DataTypeSize(type);
  const size_t bytes = static_cast<size_t>(count) * esz;
  if (bytes == 0) return absl::OkStatus();
  const size_t chunk_elems =
      std::max<size_t>(1, options_.stage_chunk_bytes / esz);
  const size_t chunks =
      (static_cast<size_t>(count) + chunk_elems - 1) / chunk_elems;
  PLEXUS_RETURN_IF_ERROR(
      cuda::CudaStatus(cudaSetDevice(device_), "selecting the device"));
  PLEXUS_ASSIGN_OR_RETURN(char* host, staging_.Reserve(bytes));
  while (chunk_events_.size() < chunks) {
    PLEXUS_ASSIGN_OR_RETURN(void* e, NewEvent());
    chunk_events_.push_back(e);
  }
  char* dev = static_cast<char*>(buf);
  cudaStream_t in = AsStream(copy_in_), out = AsStream(copy_out_);
  // Copies start once the caller's stream has produced buf.
  PLEXUS_RETURN_IF_ERROR(cuda::CudaStatus(
      cudaEventRecord(AsEvent(ready_), AsStream(stream)), "recording ready"));
  PLEXUS_RETURN_IF_ERROR(cuda::CudaStatus(
      cudaStreamWaitEvent(in, AsEvent(ready_), 0), "ordering the copies"));
  PLEXUS_RETURN_IF_ERROR(cuda::CudaStatus(
      cudaStreamWaitEvent(out, AsEvent(ready_), 0), "ordering the copies"));
  for (size_t c = 0; c < chunks; ++c) {
    const size_t off = c * chunk_elems * esz;
    const size_t len = std::min(bytes - off, chunk_elems * esz);
    PLEXUS_RETURN_IF_ERROR(cuda::CudaStatus(
        cudaMemcpyAsync(host + off, dev + off, len, cudaMemcpyDeviceToHost, in),
        absl::StrCat("copying chunk ", c, " to pinned memory")));
    PLEXUS_RETURN_IF_ERROR(cuda::CudaStatus(
        cudaEventRecord(AsEvent(chunk_events_[c]), in), "recording a copy"));
  }
  for (size_t c = 0; c < chunks; ++c) {
    const size_t off = c * chunk_elems * esz;
    const size_t elems =
        std::min(static_cast<size_t>(count) - c * chunk_elems, chunk_elems);
    PLEXUS_RETURN_IF_ERROR(cuda::WaitEvent(
        chunk_events_[c], deadline,
        absl::StrCat("copying chunk ", c, " of ", chunks, " to the host")));
    AlgoContext ctx;
    ctx.transport = cross_.get();
    ctx.op = next_op_++;
    ctx.deadline = deadline;
    ctx.pipeline_bytes = options_.pipeline_bytes;
    ctx.scratch = &scratch_;
    PLEXUS_RETURN_IF_ERROR(
        RingAllReduce(ctx, host + off, elems, type, op),
        absl::StrCat("ring all-reduce of chunk ", c, " of ", chunks, " among ",
                     cross_->size(), " nodes"));
    PLEXUS_RETURN_IF_ERROR(cuda::CudaStatus(
        cudaMemcpyAsync(dev + off, host + off, elems * esz,
                        cudaMemcpyHostToDevice, out),
        absl::StrCat("copying chunk ", c, " back to the device")));
  }
  // The caller's stream (and the broadcast on it) waits for the last copy.
  PLEXUS_RETURN_IF_ERROR(cuda::CudaStatus(cudaEventRecord(AsEvent(done_), out),
                                          "recording the copies' end"));
  PLEXUS_RETURN_IF_ERROR(
      cuda::CudaStatus(cudaStreamWaitEvent(AsStream(stream), AsEvent(done_), 0),
                       "ordering the broadcast after the copies"));
  // The staging memory is reused by the next operation: wait for the copies
  // here rather than rely on the broadcast's stream.
  return cuda::WaitStream(copy_out_, deadline, "copying back to the device");
}

void HierarchicalAllReduce::Abort(const absl::Status& why) {
  local_->Abort();
  if (cross_ != nullptr) cross_->Abort(why);
}

}  // namespace plexus::collectives::nccl
