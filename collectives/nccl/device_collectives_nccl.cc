// The device support of plexus::collectives_gpu: NCCL when every member has a
// GPU, hierarchical NCCL + UCX when the members span nodes. See
// collectives/device_collectives.h.
#include <cuda_runtime.h>
#include <unistd.h>

#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "collectives/cuda/cuda_util.h"
#include "collectives/device_collectives.h"
#include "collectives/nccl/hierarchical_allreduce.h"
#include "collectives/nccl/nccl_communicator.h"
#include "collectives/patterns/device_plan.h"
#include "collectives/transport/ucx/ucx_transport.h"
#include "common/status.h"
#include "glog/logging.h"

namespace plexus::collectives {
namespace {

std::string InfoKey(int rank) { return absl::StrCat("device/", rank); }

std::string NodeOf(const CommunicatorOptions& options) {
  if (!options.node.empty()) return options.node;
  if (const char* env = std::getenv("PLEXUS_NODE"); env && *env) return env;
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') {
    return "localhost";
  }
  return host;
}

// The PCI bus id of the GPU this rank would use (options.device, else the
// current one); empty when there is none.
std::string GpuId(const CommunicatorOptions& options) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return "";
  }
  int device = options.device;
  if (device < 0 && cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return "";
  }
  if (n == 0 || device >= n) return "";
  char bus[64] = {};
  if (cudaDeviceGetPCIBusId(bus, sizeof(bus) - 1, device) != cudaSuccess) {
    cudaGetLastError();
    return "";
  }
  return bus;
}

// NCCL communicators here are non-blocking: NCCL may launch from its own
// thread, where cudaStreamPerThread names another stream (NVIDIA/nccl#1976).
absl::Status NcclStream(void* stream) {
  if (stream == static_cast<void*>(cudaStreamPerThread)) {
    return absl::InvalidArgumentError(
        "cudaStreamPerThread cannot carry NCCL operations here; pass a "
        "stream you created (or none)");
  }
  return absl::OkStatus();
}

// Recognises device buffers and refuses them: this process has a GPU, but
// the group does not use NCCL (backend kUcx, or a member without a GPU).
class NoDevice : public DeviceCollectives {
 public:
  explicit NoDevice(std::string why) : why_(std::move(why)) {}
  absl::string_view name() const override { return "none"; }
  bool IsDevice(const void* p) const override {
    return cuda::IsDeviceMemory(p);
  }
  absl::Status AllReduce(const void*, void*, size_t, DataType, ReduceOp,
                         absl::Time, void*) override {
    return Refuse();
  }
  absl::Status ReduceScatter(const void*, void*, size_t, DataType, ReduceOp,
                             absl::Time, void*) override {
    return Refuse();
  }
  absl::Status AllGather(const void*, void*, size_t, DataType, absl::Time,
                         void*) override {
    return Refuse();
  }
  absl::Status Broadcast(void*, size_t, DataType, int, absl::Time,
                         void*) override {
    return Refuse();
  }
  absl::Status Reduce(const void*, void*, size_t, DataType, ReduceOp, int,
                      absl::Time, void*) override {
    return Refuse();
  }
  void Abort(const absl::Status&) override {}

 private:
  absl::Status Refuse() const {
    return absl::FailedPreconditionError(absl::StrCat(
        "device buffers need a device backend, and this communicator has "
        "none (",
        why_, "); pass host buffers"));
  }
  const std::string why_;
};

// What the two NCCL backends share: device-buffer detection and the streams
// NCCL can take.
class NcclBacked : public DeviceCollectives {
 public:
  absl::Status CheckStream(void* stream) const override {
    return NcclStream(stream);
  }
  bool IsDevice(const void* p) const override {
    return cuda::IsDeviceMemory(p);
  }
};

// One NCCL communicator over the whole group. A null stream stays null: the
// NCCL communicator's own stream, ordered after the legacy default stream.
class FlatNccl : public NcclBacked {
 public:
  explicit FlatNccl(std::unique_ptr<nccl::NcclCommunicator> comm)
      : comm_(std::move(comm)) {}
  absl::string_view name() const override { return "nccl"; }
  absl::Status AllReduce(const void* send, void* recv, size_t count,
                         DataType type, ReduceOp op, absl::Time deadline,
                         void* stream) override {
    return comm_->AllReduce(send, recv, count, type, op, deadline, stream);
  }
  absl::Status ReduceScatter(const void* send, void* recv, size_t recv_count,
                             DataType type, ReduceOp op, absl::Time deadline,
                             void* stream) override {
    return comm_->ReduceScatter(send, recv, recv_count, type, op, deadline,
                                stream);
  }
  absl::Status AllGather(const void* send, void* recv, size_t send_count,
                         DataType type, absl::Time deadline,
                         void* stream) override {
    return comm_->AllGather(send, recv, send_count, type, deadline, stream);
  }
  absl::Status Broadcast(void* buf, size_t count, DataType type, int root,
                         absl::Time deadline, void* stream) override {
    return comm_->Broadcast(buf, count, type, root, deadline, stream);
  }
  absl::Status Reduce(const void* send, void* recv, size_t count, DataType type,
                      ReduceOp op, int root, absl::Time deadline,
                      void* stream) override {
    return comm_->Reduce(send, recv, count, type, op, root, deadline, stream);
  }
  void Abort(const absl::Status&) override { comm_->Abort(); }

 private:
  const std::unique_ptr<nccl::NcclCommunicator> comm_;
};

// NCCL inside nodes, UCX across: all-reduce only.
class Hierarchical : public NcclBacked {
 public:
  explicit Hierarchical(std::unique_ptr<nccl::HierarchicalAllReduce> h)
      : h_(std::move(h)) {}
  absl::string_view name() const override { return "hierarchical"; }
  absl::Status AllReduce(const void* send, void* recv, size_t count,
                         DataType type, ReduceOp op, absl::Time deadline,
                         void* stream) override {
    return h_->AllReduce(send, recv, count, type, op, deadline, stream);
  }
  absl::Status ReduceScatter(const void*, void*, size_t, DataType, ReduceOp,
                             absl::Time, void*) override {
    return Unimplemented("reduce-scatter");
  }
  absl::Status AllGather(const void*, void*, size_t, DataType, absl::Time,
                         void*) override {
    return Unimplemented("all-gather");
  }
  absl::Status Broadcast(void*, size_t, DataType, int, absl::Time,
                         void*) override {
    return Unimplemented("broadcast");
  }
  absl::Status Reduce(const void*, void*, size_t, DataType, ReduceOp, int,
                      absl::Time, void*) override {
    return Unimplemented("reduce");
  }
  void Abort(const absl::Status& why) override { h_->Abort(why); }

 private:
  static absl::Status Unimplemented(absl::string_view what) {
    return absl::UnimplementedError(absl::StrCat(
        "the hierarchical backend runs all-reduce only; ", what,
        " of device buffers across nodes needs Backend::kNccl (one NCCL "
        "communicator over all nodes) or host buffers"));
  }
  const std::unique_ptr<nccl::HierarchicalAllReduce> h_;
};

}  // namespace

absl::Status PublishDeviceInfo(Store* store, int rank,
                               const CommunicatorOptions& options,
                               Backend backend) {
  if (backend == Backend::kUcx) return absl::OkStatus();
  return Annotate(
      store->Set(InfoKey(rank),
                 patterns::FormatMemberInfo({GpuId(options), NodeOf(options)})),
      "publishing whether this rank has a GPU");
}

absl::StatusOr<std::unique_ptr<DeviceCollectives>> NewDeviceCollectives(
    Store* store, int rank, int size, const CommunicatorOptions& options,
    Backend backend) {
  const bool have_gpu = !GpuId(options).empty();
  // Every rank published before the host transport connected (see the
  // header): a key missing now means a rank without GPU support.
  std::vector<std::optional<patterns::MemberInfo>> members(size);
  if (backend != Backend::kUcx) {
    for (int r = 0; r < size; ++r) {
      absl::StatusOr<std::string> info = store->Get(InfoKey(r), absl::Now());
      if (info.ok()) members[r] = patterns::ParseMemberInfo(*info);
    }
  }
  PLEXUS_ASSIGN_OR_RETURN(patterns::DevicePlan plan,
                          patterns::PlanDevices(members, rank, backend));
  if (plan.kind == patterns::DevicePlan::Kind::kNone) {
    if (!have_gpu) return nullptr;
    return std::make_unique<NoDevice>(plan.why_none);
  }
  nccl::NcclOptions nopts;
  nopts.device = options.device;
  nopts.init_timeout = options.connect_timeout;
  if (plan.kind == patterns::DevicePlan::Kind::kFlat) {
    auto prefixed = NewPrefixStore(store, "device/nccl");
    PLEXUS_ASSIGN_OR_RETURN(
        auto comm,
        nccl::NcclCommunicator::Create(prefixed.get(), rank, size, nopts),
        "creating the NCCL communicator of the group");
    LOG_IF(INFO, rank == 0) << options.name << ": device buffers go through "
                            << "NCCL (" << size << " ranks)";
    return std::make_unique<FlatNccl>(std::move(comm));
  }
  const int my_node = plan.node, num_nodes = plan.num_nodes;
  const int local_rank = plan.local_rank, local_size = plan.local_size;
  auto node_store =
      NewPrefixStore(store, absl::StrCat("device/node/", my_node));
  PLEXUS_ASSIGN_OR_RETURN(
      auto local,
      nccl::NcclCommunicator::Create(node_store.get(), local_rank, local_size,
                                     nopts),
      absl::StrCat("creating the NCCL communicator of node ",
                   members[rank]->node));
  std::unique_ptr<Transport> cross;
  if (local_rank == 0 && num_nodes > 1) {
    auto leaders = NewPrefixStore(store, "device/leaders");
    const ucx::UcxTransportOptions topts = HostTransportOptions(options);
    PLEXUS_ASSIGN_OR_RETURN(
        cross, ucx::NewUcxTransport(leaders.get(), my_node, num_nodes, topts),
        "connecting the node leaders over UCX");
  }
  nccl::HierarchicalOptions hopts;
  hopts.pipeline_bytes = options.pipeline_bytes;
  PLEXUS_ASSIGN_OR_RETURN(auto h,
                          nccl::HierarchicalAllReduce::Create(
                              std::move(local), std::move(cross), size, hopts));
  LOG_IF(INFO, rank == 0) << options.name << ": device buffers go through "
                          << "hierarchical NCCL + UCX (" << num_nodes
                          << " nodes, " << size << " ranks)";
  return std::make_unique<Hierarchical>(std::move(h));
}

}  // namespace plexus::collectives
