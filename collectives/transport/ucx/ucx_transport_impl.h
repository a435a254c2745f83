// Private: the UCX transport's implementation class. Include ucx_transport.h.
#pragma once

#include <ucp/api/ucp.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "collectives/liveness/process_liveness.h"
#include "collectives/transport/transport.h"
#include "collectives/transport/ucx/ucx_transport.h"

namespace plexus::collectives::ucx {

class UcxTransport;

// A posted ucp tag operation. `ucp_req` is null once complete.
class UcxRequest : public Request {
 public:
  ~UcxRequest() override;

  UcxTransport* transport = nullptr;
  void* ucp_req = nullptr;
  int peer = -1;
  bool is_recv = false;
  size_t bytes = 0;
  uint64_t tag = 0;
  bool done = false;
  ucp_tag_recv_info_t info{};
};

class UcxTransport : public Transport {
 public:
  UcxTransport(int rank, int size, const UcxTransportOptions& options);
  ~UcxTransport() override;

  // Creates context, worker and endpoints; publishes and reads addresses.
  absl::Status Init(Store* store);

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  absl::StatusOr<std::unique_ptr<Request>> ISend(int peer, Tag tag,
                                                 const void* data,
                                                 size_t bytes) override;
  absl::StatusOr<std::unique_ptr<Request>> IRecv(int peer, Tag tag, void* data,
                                                 size_t bytes) override;
  absl::Status Wait(absl::Span<Request* const> requests,
                    absl::Time deadline) override;
  bool CanRead() const override { return can_read_; }
  absl::Status Read(int peer, uint64_t remote, void* local,
                    size_t bytes) override;
  void ProgressIdle() override;
  absl::Status status() const override;
  void Abort(const absl::Status& why) override;

 private:
  friend class UcxRequest;
  struct Peer {
    UcxTransport* self = nullptr;
    int rank = -1;
    ucp_ep_h ep = nullptr;
    bool failed = false;  // endpoint error seen (may be a clean exit)
    absl::Status error;   // why, when failed
    bool local = false;   // same host: watched through process liveness
    ProcessId process;
  };

  static void OnEpError(void* arg, ucp_ep_h ep, ucs_status_t status);
  uint64_t EncodeTag(int src, Tag tag) const;
  absl::Status CheckPeer(int peer) const;
  // Records `error` as sticky (first one wins); returns the sticky error.
  absl::Status Fail(absl::Status error);
  // Endpoint error: marks `peer` lost. Not yet an error of ours: a peer that
  // finished its part and closed looks the same. It becomes one when we wait
  // on a request involving that peer (FailForPeer).
  void MarkLost(int peer, const absl::Status& why);
  // Records the sticky UNAVAILABLE naming `peer` and tells every other rank.
  absl::Status FailForPeer(int peer, const absl::Status& why);
  // A notice from `reported_by` that `peer` failed: sticky UNAVAILABLE.
  void NoticeReceived(int peer, int reported_by);
  // Reaps the control receive, sends queued failure notices.
  void PollControl();
  void PostControlRecv();
  // Checks one request; fills its final state. Returns false if in progress.
  bool Poll(UcxRequest* req, absl::Status* error);
  // Sets can_read_ when process_vm_readv reads every peer (all on this
  // host), agreed through the store so that every rank answers alike.
  absl::Status ProbeReads(Store* store, absl::Time deadline);
  // Marks local peers whose process has gone as lost.
  void CheckLiveness();
  // One progress round; may block on the event fd until `deadline`.
  void Progress(absl::Time deadline);

  // Constant after Init.
  const int rank_;
  const int size_;
  const UcxTransportOptions options_;
  // GroupStamp(options_.group, options_.group_epoch), shifted into place.
  const uint64_t stamp_;
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  int worker_fd_ = -1;
  int abort_fd_ = -1;  // eventfd written by Abort
  std::vector<std::unique_ptr<Peer>> peers_;
  bool can_read_ = false;
  // What peers read to prove that reads work: this process's pid.
  int64_t read_probe_ = 0;

  // Used by the driving thread only.
  void* control_req_ = nullptr;
  int64_t control_buf_ = -1;
  std::vector<int> notices_to_send_;  // ranks found failed, not yet announced
  std::vector<int64_t> notice_payload_;
  absl::Time next_liveness_check_ = absl::InfinitePast();

  // Shared with Abort().
  std::atomic<bool> has_error_{false};
  mutable absl::Mutex mu_;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
};

}  // namespace plexus::collectives::ucx
