// The UCX (UCP) host transport: one ucp worker per communicator, worker
// addresses exchanged through the rendezvous Store, tag matching for messages,
// and UCX choosing the transport per peer. Unless UCX_TLS is set, CMA is
// never used (see Init), nor TCP when every rank runs on this host: same-host
// groups then run on shared memory alone (posix, sysv). Large ring
// operations of same-host groups bypass UCX's data path altogether through
// Read (our own process_vm_readv, see UcxTransportOptions::single_copy).
//
// Progress: kBusyPoll spins on ucp_worker_progress (lowest latency, burns a
// core per rank); kBlocking sleeps on the worker's event fd between
// completions (ucp_worker_arm), so ranks may outnumber cores.
//
// Lost peers: endpoints use UCP_ERR_HANDLING_MODE_PEER, so UCX reports a
// peer whose process died (shared memory and CMA check the process, TCP sees
// the reset) within well under a second here. A peer that merely closed its
// endpoint after finishing looks the same, so a lost peer becomes an error
// only when we wait on a request involving it; then this rank records
// UNAVAILABLE naming it and tells every other rank through a control message,
// so ranks that were waiting on someone else fail with the same culprit
// instead of waiting out their deadline.
//
// UCX keepalive declares a peer dead when it does not progress its worker for
// a few intervals: a short interval turns a rank busy computing (or stopped)
// into a "failed" one. The communicator's thread progresses while idle, and
// the interval stays UCX's default (20 s) unless `keepalive` says otherwise.
//
// Thread safety: see Transport.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "collectives/rendezvous/store.h"
#include "collectives/transport/transport.h"

namespace plexus::collectives::ucx {

struct UcxTransportOptions {
  enum class Progress { kBusyPoll, kBlocking };
  // How waiting threads make progress. Default: busy polling.
  Progress progress = Progress::kBusyPoll;
  // How long to wait for every rank's address in the store. Default 60 s.
  absl::Duration connect_timeout = absl::Seconds(60);
  // UCX keepalive interval, unless the UCX_KEEPALIVE_INTERVAL environment
  // variable is set. Zero (default): UCX's own default.
  absl::Duration keepalive = absl::ZeroDuration();
  // The collective group (as formed through the coordinator) and its epoch.
  // Every message's tag carries GroupStamp(group, group_epoch) and a receive
  // matches only messages with this transport's stamp: data from a member of
  // an older epoch of the group, or of another group, that reached this
  // worker never lands in a buffer (it stays unmatched, and the receive waits
  // for the right sender or its deadline). Default "" / 0.
  std::string group;
  uint64_t group_epoch = 0;
  // When every rank runs on this host: offer single-copy reads of peers'
  // memory (Transport::Read, through process_vm_readv) if the kernel allows
  // them towards every peer (checked at Init; keys "ucx/cma/<rank>" and
  // "ucx/cmaok/<rank>"). Our own reads, not UCX's CMA transport, so that a
  // dead peer is an UNAVAILABLE error rather than an abort. Default true.
  bool single_copy = true;
};

// The 8 bits of a tag that name (group, epoch): the low 4 bits of the epoch
// and 4 bits of a hash of the group name. Epochs less than 16 apart always
// differ; two groups differ with probability 15/16 (the store prefix per
// group and epoch, and a UCX worker per communicator, keep groups apart in
// the first place; the stamp catches what gets past them).
uint8_t GroupStamp(absl::string_view group, uint64_t group_epoch);

// Connects rank `rank` of `size` through `store` (borrowed for the call only;
// keys "ucx/addr/<rank>", "ucx/proc/<rank>", "ucx/group/<rank>"). Every rank
// must call it with the same size, group and group epoch: a peer that
// published another group or epoch is FAILED_PRECONDITION naming it, and no
// endpoint is made. At most 32768 ranks.
absl::StatusOr<std::unique_ptr<Transport>> NewUcxTransport(
    Store* store, int rank, int size, const UcxTransportOptions& options);

}  // namespace plexus::collectives::ucx
