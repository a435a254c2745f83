// Transport: point-to-point messaging between the ranks of one communicator,
// the only thing collective algorithms see. Implementations: ucx/ (host).
//
// Model:
//   - Ranks 0..size-1 are connected at creation through a rendezvous Store.
//   - ISend/IRecv post a tagged message; the buffer is borrowed until the
//     returned Request completes (Wait returns) or is destroyed. Destroying an
//     incomplete Request cancels it as far as the implementation can.
//   - A receive matches a send from `peer` with the same Tag; messages with one
//     (peer, tag) pair match in posting order. Sizes must agree exactly.
//   - Errors are sticky: the first failure (a peer lost, a deadline missed,
//     Abort) is recorded and every later call returns it. Error messages name
//     the peer rank involved.
//
// Thread safety: one thread drives a Transport (posts and waits); Abort() and
// status() may be called from any thread, and Abort wakes that thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace plexus::collectives {

// Identifies a message within a communicator: `op` is the operation's sequence
// number (wraps; only operations in flight together must differ), `sub` the
// message within it (algorithm-defined, e.g. step << 16 | sub-chunk).
struct Tag {
  uint32_t op = 0;
  uint32_t sub = 0;
};

// A posted send or receive. Owned by the caller; see Transport.
class Request {
 public:
  virtual ~Request() = default;
};

class Transport {
 public:
  virtual ~Transport() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Posts a send of `bytes` bytes at `data` to `peer` (!= rank()).
  virtual absl::StatusOr<std::unique_ptr<Request>> ISend(int peer, Tag tag,
                                                         const void* data,
                                                         size_t bytes) = 0;
  // Posts a receive of exactly `bytes` bytes from `peer` into `data`.
  virtual absl::StatusOr<std::unique_ptr<Request>> IRecv(int peer, Tag tag,
                                                         void* data,
                                                         size_t bytes) = 0;

  // Drives progress until every request in `requests` (null entries are
  // skipped) completes. DEADLINE_EXCEEDED (naming the peer waited on) once
  // `deadline` passes; UNAVAILABLE naming the rank when a peer is lost;
  // ABORTED after Abort(). Any error is sticky.
  virtual absl::Status Wait(absl::Span<Request* const> requests,
                            absl::Time deadline) = 0;

  // Single-copy reads from a peer's memory, for ranks that share a host
  // (cross-memory attach). True when Read works towards every peer; every
  // rank of the communicator gets the same answer, so algorithms may choose
  // between reads and messages on it without talking. Default: false.
  virtual bool CanRead() const { return false; }
  // Copies `bytes` from address `remote` of `peer`'s address space into
  // `local`, synchronously. The peer names `remote` in a message and keeps
  // that memory alive and unchanged until the reader tells it (by message)
  // that it is done. UNAVAILABLE naming the peer when its process is gone;
  // sticky like every error. REQUIRES: CanRead().
  virtual absl::Status Read(int peer, uint64_t remote, void* local,
                            size_t bytes) {
    return absl::UnimplementedError("this transport cannot read peers");
  }

  // One round of progress without waiting for anything: the owner's thread
  // calls it periodically while idle, so that the transport answers its
  // peers' keepalives between operations.
  virtual void ProgressIdle() = 0;

  // The sticky error, or OK.
  virtual absl::Status status() const = 0;

  // Records `why` as the sticky error (unless one is recorded) and wakes the
  // driving thread. Returns promptly; may be called from any thread.
  virtual void Abort(const absl::Status& why) = 0;
};

}  // namespace plexus::collectives
