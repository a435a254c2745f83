// Hierarchical all-reduce over device buffers, for groups whose members span
// nodes: NCCL inside a node, UCX across nodes.
//
//   1. NCCL reduce of every member's buffer to the node's leader (local rank
//      0), into its recv buffer;
//   2. the leaders all-reduce across nodes over UCX (ring), through pinned
//      host memory: the device -> host copies of all chunks are enqueued at
//      once on a copy stream; chunk c's ring all-reduce starts as soon as its
//      copy has landed, and its host -> device copy is enqueued on a second
//      stream right after, so PCIe copies in both directions overlap the
//      network chunk by chunk;
//   3. NCCL broadcast from the leader to its node.
// kAvg runs as a sum and the leader scales once by 1/group size (floating
// types only: an integer kAvg is INVALID_ARGUMENT here).
//
// The node's NCCL communicator may have one rank (one GPU per node; that is
// also how a one-GPU machine tests this: two "nodes" on the same GPU, each a
// one-rank NCCL communicator, joined by UCX).
//
// Thread safety: one operation at a time; Abort from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "collectives/cuda/cuda_util.h"
#include "collectives/nccl/nccl_communicator.h"
#include "collectives/transport/transport.h"
#include "plexus/collectives/options.h"

namespace plexus::collectives::nccl {

struct HierarchicalOptions {
  // Bytes per staged chunk (the unit of copy/network overlap). Default 4 MiB.
  size_t stage_chunk_bytes = size_t{4} << 20;
  // Pipelining of the ring inside one chunk (AlgoContext::pipeline_bytes).
  size_t pipeline_bytes = 256 * 1024;
};

class HierarchicalAllReduce {
 public:
  // `local`: this node's NCCL communicator (its rank 0 leads the node).
  // `cross`: on leaders of a group with more than one node, the transport
  // among the leaders (rank = node index); null otherwise. `group_size`:
  // members in the whole group (for kAvg).
  static absl::StatusOr<std::unique_ptr<HierarchicalAllReduce>> Create(
      std::unique_ptr<NcclCommunicator> local, std::unique_ptr<Transport> cross,
      int group_size, const HierarchicalOptions& options = {});
  ~HierarchicalAllReduce();
  HierarchicalAllReduce(const HierarchicalAllReduce&) = delete;
  HierarchicalAllReduce& operator=(const HierarchicalAllReduce&) = delete;

  // recv = op over every member's send (count elements), on every member.
  // `stream`: a cudaStream_t; nullptr: an own stream, ordered after the work
  // on the legacy default stream.
  absl::Status AllReduce(const void* send, void* recv, int64_t count,
                         DataType type, ReduceOp op, absl::Time deadline,
                         void* stream);
  void Abort(const absl::Status& why);

  NcclCommunicator* local() const { return local_.get(); }

 private:
  HierarchicalAllReduce(std::unique_ptr<NcclCommunicator> local,
                        std::unique_ptr<Transport> cross, int group_size,
                        const HierarchicalOptions& options);
  absl::Status Init();
  // Step 2 on a leader: buf (device, count elements) all-reduced across
  // nodes through pinned memory.
  absl::Status CrossNodes(void* buf, int64_t count, DataType type, ReduceOp op,
                          absl::Time deadline, void* stream);

  // Constant after construction.
  const std::unique_ptr<NcclCommunicator> local_;
  const std::unique_ptr<Transport> cross_;
  const int group_size_;
  const HierarchicalOptions options_;
  int device_ = 0;
  // CUDA objects (cudaStream_t / cudaEvent_t as void*).
  void* own_ = nullptr;          // the stream when the caller gives none
  void* legacy_done_ = nullptr;  // the legacy default stream reached the op
  void* copy_in_ = nullptr;      // device -> host copies
  void* copy_out_ = nullptr;     // host -> device copies
  void* ready_ = nullptr;        // the caller's stream reached the operation
  void* done_ = nullptr;         // every host -> device copy landed
  std::vector<void*> chunk_events_;  // one per chunk, grown on demand

  // Used by the one operation in flight.
  cuda::PinnedBuffer staging_;
  std::vector<char> scratch_;
  uint32_t next_op_ = 0;
};

}  // namespace plexus::collectives::nccl
