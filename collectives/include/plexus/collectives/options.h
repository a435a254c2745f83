// Options and vocabulary types of the public collectives API (see
// communicator.h): data types, reductions, algorithms, progress modes, and the
// per-communicator and per-operation options.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace plexus::collectives {

enum class DataType { kFloat32, kFloat64, kFloat16, kBFloat16, kInt32, kInt64 };
// Bytes per element.
size_t DataTypeSize(DataType type);
absl::string_view DataTypeName(DataType type);

// kAvg sums, then divides by the group size (integer division for integers).
enum class ReduceOp { kSum, kAvg, kMin, kMax, kProd };
absl::string_view ReduceOpName(ReduceOp op);

// kAuto lets the cost model choose. Forcing applies to all-reduce; the other
// operations have one algorithm each (ring reduce-scatter and all-gather, tree
// broadcast and reduce, recursive-doubling barrier).
enum class Algorithm { kAuto, kRing, kTree, kRecursiveDoubling };
absl::string_view AlgorithmName(Algorithm algorithm);
// "ring", "tree", "rd" (or "recursive_doubling"), "auto"; nullopt otherwise.
std::optional<Algorithm> ParseAlgorithm(absl::string_view name);

// Who carries operations on GPU (device) buffers. Host buffers always go
// through UCX.
//   kAuto: NCCL when every member has a GPU of its own (and the program links
//     plexus::collectives_gpu): one NCCL communicator when all members are
//     on one node, kHierarchical when they span nodes; otherwise none.
//   kUcx: never NCCL; device buffers are refused (FAILED_PRECONDITION).
//   kNccl: one NCCL communicator over all members, whatever the nodes.
//   kHierarchical: NCCL inside each node, UCX across nodes.
// Forcing kNccl or kHierarchical fails Create (FAILED_PRECONDITION) when a
// member has no GPU or the program was built without NCCL. Every rank must
// resolve the same backend (a rank forcing kNccl while another picks
// kHierarchical fails Create after connect_timeout).
enum class Backend { kAuto, kUcx, kNccl, kHierarchical };
absl::string_view BackendName(Backend backend);
// "auto", "ucx", "nccl", "hierarchical" (or "hier"); nullopt otherwise.
std::optional<Backend> ParseBackend(absl::string_view name);

// How a waiting rank makes progress: kBusyPoll spins (lowest latency, one core
// per rank); kBlocking sleeps on the transport's event fd (use it when ranks
// outnumber cores).
enum class ProgressMode { kBusyPoll, kBlocking };

// Alpha-beta-gamma cost model: a message of S bytes costs alpha + S * beta,
// reducing S bytes costs S * gamma. Defaults are this project's 2-core
// machine over UCX shared memory.
struct CostModel {
  double alpha_us = 2.0;              // per message, microseconds
  double beta_us_per_byte = 1e-4;     // 10 GB/s
  double gamma_us_per_byte = 1.6e-4;  // a[i] += b[i] at ~6 GB/s
};

struct CommunicatorOptions {
  // Progress mode of the transport. Default: busy polling.
  ProgressMode progress = ProgressMode::kBusyPoll;
  // Deadline of an operation submitted without one, counted from submission.
  // Default 60 s.
  absl::Duration default_timeout = absl::Seconds(60);
  // How long Create waits for every rank to appear in the store. Default 60 s.
  absl::Duration connect_timeout = absl::Seconds(60);
  // Forces the all-reduce algorithm. kAuto (default): the environment
  // variable PLEXUS_COLL_ALGO (ring, tree, rd) if set, else the cost model.
  Algorithm algorithm = Algorithm::kAuto;
  // Fixed reduction order: results are bitwise identical run to run. Turns
  // off calibration (the algorithm then depends only on size and group size).
  // Default off. (Every algorithm here reduces in a fixed order; what varies
  // without this is which algorithm a calibration picks.)
  bool deterministic = false;
  // Cost model constants used for algorithm selection.
  CostModel cost_model;
  // Measure alpha and beta at creation (a few small and one 1 MiB all-reduce;
  // rank 0's figures are used by all). Default off; ignored when
  // deterministic.
  bool calibrate = false;
  // Pipelining granularity: messages are cut into pieces of at most this many
  // bytes so that sending, receiving and reducing overlap. Default 256 KiB.
  size_t pipeline_bytes = 256 * 1024;
  // Ranks on one host: ring operations (all-reduce, reduce-scatter,
  // all-gather) on at least this many bytes read each other's memory
  // directly (one copy, process_vm_readv) instead of passing messages
  // through shared memory (two copies), when the kernel allows it between
  // every pair of ranks. 0 turns reads off. Every rank must give the same
  // value. Results are the same bits either way. Default 256 KiB.
  size_t single_copy_bytes = 256 * 1024;
  // Name used in logs. Default "comm".
  std::string name = "comm";
  // The collective group this communicator serves (as formed through the
  // coordinator: worker Runtime::JoinGroup) and its epoch. Every message
  // carries them (a stamp in the transport's tag) and only messages of this
  // group and epoch are received, so a stale member of an older epoch or a
  // peer of another group cannot put data into this one's buffers. Every
  // rank must give the same values. Default "" / 0.
  std::string group;
  uint64_t group_epoch = 0;
  // Device buffers: who carries them (see Backend). kAuto (default): the
  // environment variable PLEXUS_COLL_BACKEND (auto, ucx, nccl,
  // hierarchical) if set, else chosen as Backend says.
  Backend backend = Backend::kAuto;
  // The node this rank runs on, for the hierarchical backend: members with
  // the same node share NCCL. Empty (default): $PLEXUS_NODE if set, else the
  // host name. (Tests give two ranks on one machine different nodes.)
  std::string node;
  // The CUDA device of this rank. -1 (default): the device current on the
  // thread that calls Create.
  int device = -1;
};

struct OpOptions {
  // When the operation fails with DEADLINE_EXCEEDED. InfiniteFuture (default)
  // means submission time + CommunicatorOptions::default_timeout.
  absl::Time deadline = absl::InfiniteFuture();
  // Per-operation algorithm override for all-reduce (kAuto: communicator's).
  Algorithm algorithm = Algorithm::kAuto;
  // Device buffers only: the CUDA stream (a cudaStream_t) the operation is
  // ordered after and runs on; it completes (Wait returns) once the result
  // is in the buffers. nullptr (default): the communicator's own stream,
  // after the work already on the legacy default stream. Not
  // cudaStreamPerThread (INVALID_ARGUMENT). Ignored for host buffers.
  void* stream = nullptr;
};

}  // namespace plexus::collectives
