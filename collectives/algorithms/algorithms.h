// Collective algorithms over the Transport interface (and nothing else).
// Each function is one rank's part; all ranks call the same function with
// matching arguments and the same AlgoContext::op. Buffers are raw bytes of
// `count` elements of `type`; the functions work in place.
//
// Pipelining: messages are cut into sub-chunks of at most
// AlgoContext::pipeline_bytes (patterns::SubChunks); a piece is forwarded as
// soon as it is received and reduced, and the next step's receives are posted
// before the current step's are waited on, so that sending, receiving and
// reducing overlap.
//
// Determinism: every algorithm reduces in an order fixed by (rank, size,
// count, pipeline_bytes) alone, and every rank ends with bitwise the same
// result (one rank computes each element and the others copy it, or partners
// compute a op b and b op a, which IEEE makes equal for these ops).
//
// Thread safety: one call at a time per transport (the communicator's thread).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "collectives/transport/transport.h"
#include "plexus/collectives/options.h"

namespace plexus::collectives {

struct AlgoContext {
  Transport* transport = nullptr;  // borrowed for the call
  uint32_t op = 0;                 // the operation's sequence number (tags)
  absl::Time deadline = absl::InfiniteFuture();
  size_t pipeline_bytes = 256 * 1024;
  // Reusable scratch memory (grown, never shrunk), owned by the caller and
  // used by one operation at a time; null: algorithms allocate their own.
  std::vector<char>* scratch = nullptr;
  // Ring operations on at least this many bytes move data with single-copy
  // reads (Transport::Read) where the transport offers them; 0: never.
  size_t single_copy_bytes = 0;
};

// `bytes` of scratch memory from ctx.scratch (or from `local`). Valid until
// the next call with the same context.
char* Scratch(const AlgoContext& ctx, size_t bytes, std::vector<char>* local);

// Ring all-reduce: reduce-scatter then all-gather over balanced chunks, one
// pipeline of 2(n - 1) steps. Bandwidth-optimal: each rank sends
// 2 (n - 1) / n of the buffer.
absl::Status RingAllReduce(const AlgoContext& ctx, void* buf, size_t count,
                           DataType type, ReduceOp op);
// The same from `send` into `recv` (which may be equal), without copying send
// into recv first: the ring reads its input where it lies.
absl::Status RingAllReduce(const AlgoContext& ctx, const void* send, void* recv,
                           size_t count, DataType type, ReduceOp op);
// Ring reduce-scatter: buf holds n blocks of `block` elements; afterwards
// block rank() holds the reduction (other blocks are scratch).
absl::Status RingReduceScatter(const AlgoContext& ctx, void* buf, size_t block,
                               DataType type, ReduceOp op);
// Ring all-gather: buf holds n blocks; block rank() is this rank's input.
absl::Status RingAllGather(const AlgoContext& ctx, void* buf, size_t block,
                           DataType type);

// Binary-tree all-reduce: pipelined reduce to rank 0, then pipelined
// broadcast. Latency grows with log2 n rather than n.
absl::Status TreeAllReduce(const AlgoContext& ctx, void* buf, size_t count,
                           DataType type, ReduceOp op);
// Pipelined binary-tree reduce to `root`; buf on non-roots is scratch.
absl::Status TreeReduce(const AlgoContext& ctx, void* buf, size_t count,
                        DataType type, ReduceOp op, int root);
// Pipelined binary-tree broadcast from `root`.
absl::Status TreeBroadcast(const AlgoContext& ctx, void* buf, size_t count,
                           DataType type, int root);

// Recursive doubling all-reduce (non-powers of two folded in first):
// ceil(log2 n) (+2) messages of the whole buffer; best for small messages.
absl::Status DoublingAllReduce(const AlgoContext& ctx, void* buf, size_t count,
                               DataType type, ReduceOp op);

}  // namespace plexus::collectives
