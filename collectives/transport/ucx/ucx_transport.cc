#include "collectives/transport/ucx/ucx_transport.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "collectives/transport/ucx/ucx_status.h"
#include "collectives/transport/ucx/ucx_transport_impl.h"
#include "common/status.h"
#include "glog/logging.h"

namespace plexus::collectives::ucx {
namespace {

// Tag layout: bit 63 control, bits 55..62 the group stamp (GroupStamp),
// 40..54 source rank, 32..39 op sequence (mod 256: operations run one at a
// time), 0..31 the algorithm's sub-tag.
constexpr uint64_t kControlBit = uint64_t{1} << 63;
constexpr int kStampShift = 55;
constexpr uint64_t kStampMask = uint64_t{0xFF} << kStampShift;
constexpr int kRankShift = 40;
constexpr uint64_t kRankMask = uint64_t{0x7FFF};
constexpr int kMaxRanks = 1 << 15;
constexpr absl::Duration kCloseTimeout = absl::Seconds(1);
constexpr absl::Duration kNoticeGrace = absl::Milliseconds(250);

constexpr absl::Duration kLivenessPeriod = absl::Milliseconds(100);

std::string AddrKey(int rank) { return absl::StrCat("ucx/addr/", rank); }
std::string ProcKey(int rank) { return absl::StrCat("ucx/proc/", rank); }
std::string GroupKey(int rank) { return absl::StrCat("ucx/group/", rank); }
std::string ReadProbeKey(int rank) { return absl::StrCat("ucx/cma/", rank); }
std::string ReadOkKey(int rank) { return absl::StrCat("ucx/cmaok/", rank); }

}  // namespace

uint8_t GroupStamp(absl::string_view group, uint64_t group_epoch) {
  // FNV-1a of the name, folded to 4 bits.
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : group) h = (h ^ c) * 1099511628211ull;
  h ^= h >> 32;
  h ^= h >> 16;
  h ^= h >> 8;
  h ^= h >> 4;
  return static_cast<uint8_t>(((group_epoch & 0xF) << 4) | (h & 0xF));
}

UcxRequest::~UcxRequest() {
  if (ucp_req != nullptr) {
    ucp_request_cancel(transport->worker_, ucp_req);
    ucp_request_free(ucp_req);
  }
}

UcxTransport::UcxTransport(int rank, int size,
                           const UcxTransportOptions& options)
    : rank_(rank),
      size_(size),
      options_(options),
      stamp_(
          static_cast<uint64_t>(GroupStamp(options.group, options.group_epoch))
          << kStampShift) {}

absl::Status UcxTransport::Init(Store* store) {
  // Where the peers run decides the transports (below), so process ids are
  // exchanged before UCX starts.
  const ProcessId self = Self();
  PLEXUS_RETURN_IF_ERROR(store->Set(ProcKey(rank_), self.Serialize()),
                         "publishing the process id");
  bool all_local = true;
  {
    const absl::Time deadline = absl::Now() + options_.connect_timeout;
    for (int p = 0; p < size_ && all_local; ++p) {
      if (p == rank_) continue;
      PLEXUS_ASSIGN_OR_RETURN(
          std::string proc, store->Get(ProcKey(p), deadline),
          absl::StrCat("waiting for rank ", p, "'s process"));
      std::optional<ProcessId> id = ProcessId::Parse(proc);
      all_local = id.has_value() && id->host == self.host;
    }
  }
  ucp_config_t* config = nullptr;
  PLEXUS_RETURN_IF_ERROR(
      FromUcs(ucp_config_read(nullptr, nullptr, &config), "ucp_config_read"));
  if (options_.keepalive > absl::ZeroDuration() &&
      std::getenv("UCX_KEEPALIVE_INTERVAL") == nullptr) {
    std::string ka =
        absl::StrCat(absl::ToInt64Milliseconds(options_.keepalive), "ms");
    ucs_status_t st =
        ucp_config_modify(config, "KEEPALIVE_INTERVAL", ka.c_str());
    if (st != UCS_OK) LOG(WARNING) << "UCX: cannot set KEEPALIVE_INTERVAL";
  }
  // Transports, unless UCX_TLS says otherwise. CMA is left out: same-host
  // endpoints run without UCX peer error handling (see ucx_transport.h), and
  // UCX 1.13 aborts the whole process when a CMA read hits a dead peer
  // (cma_ep.c: process_vm_readv ... No such process); a dead peer must be an
  // error, never a crash. When every rank is on this host TCP is left out
  // too: without CMA, UCX puts its rendezvous lanes (messages from 16 KiB
  // up, so every piece of a ring) on TCP, over any interface it finds --
  // loopback or another program's veth pair -- and polls TCP's epoll set on
  // every progress call. Shared memory alone carries rendezvous through its
  // own active messages: several times the bandwidth from 16 KiB up and a
  // lower small-message latency here (bench/collectives/coll_bench).
  if (std::getenv("UCX_TLS") == nullptr) {
    const char* tls = all_local ? "^cma,tcp" : "^cma";
    ucs_status_t st = ucp_config_modify(config, "TLS", tls);
    if (st != UCS_OK) LOG(WARNING) << "UCX: cannot set TLS to " << tls;
  }
  ucp_params_t params{};
  params.field_mask =
      UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
  params.features = UCP_FEATURE_TAG;
  if (options_.progress == UcxTransportOptions::Progress::kBlocking) {
    params.features |= UCP_FEATURE_WAKEUP;
  }
  params.mt_workers_shared = 0;
  ucs_status_t st = ucp_init(&params, config, &context_);
  ucp_config_release(config);
  PLEXUS_RETURN_IF_ERROR(FromUcs(st, "ucp_init"));

  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  // One thread at a time, not always the same one (a waiting caller may run
  // the operation itself): SERIALIZED, not SINGLE.
  wp.thread_mode = UCS_THREAD_MODE_SERIALIZED;
  PLEXUS_RETURN_IF_ERROR(
      FromUcs(ucp_worker_create(context_, &wp, &worker_), "ucp_worker_create"));
  if (options_.progress == UcxTransportOptions::Progress::kBlocking) {
    PLEXUS_RETURN_IF_ERROR(FromUcs(ucp_worker_get_efd(worker_, &worker_fd_),
                                   "ucp_worker_get_efd"));
  }
  abort_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (abort_fd_ < 0) return absl::InternalError("eventfd failed");

  ucp_address_t* addr = nullptr;
  size_t addr_len = 0;
  PLEXUS_RETURN_IF_ERROR(
      FromUcs(ucp_worker_get_address(worker_, &addr, &addr_len),
              "ucp_worker_get_address"));
  absl::Status set = store->Set(
      AddrKey(rank_), std::string(reinterpret_cast<char*>(addr), addr_len));
  ucp_worker_release_address(worker_, addr);
  PLEXUS_RETURN_IF_ERROR(set, "publishing the UCX address");
  const std::string membership = absl::StrCat(
      "epoch ", options_.group_epoch, " of group '", options_.group, "'");
  PLEXUS_RETURN_IF_ERROR(store->Set(GroupKey(rank_), membership),
                         "publishing the group and epoch");

  const absl::Time deadline = absl::Now() + options_.connect_timeout;
  for (int p = 0; p < size_; ++p) {
    auto peer = std::make_unique<Peer>();
    peer->self = this;
    peer->rank = p;
    peers_.push_back(std::move(peer));
  }
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) continue;
    PLEXUS_ASSIGN_OR_RETURN(std::string remote,
                            store->Get(AddrKey(p), deadline),
                            absl::StrCat("waiting for rank ", p, "'s address"));
    PLEXUS_ASSIGN_OR_RETURN(std::string proc, store->Get(ProcKey(p), deadline),
                            absl::StrCat("waiting for rank ", p, "'s process"));
    // Only members of this group's epoch are connected: a peer that
    // published another one (a stale member, a store shared by mistake) is
    // refused before any endpoint exists.
    PLEXUS_ASSIGN_OR_RETURN(std::string theirs,
                            store->Get(GroupKey(p), deadline),
                            absl::StrCat("waiting for rank ", p, "'s group"));
    if (theirs != membership) {
      return absl::FailedPreconditionError(
          absl::StrCat("rank ", p, " is in ", theirs, ", this rank in ",
                       membership, ": not connecting to it"));
    }
    std::optional<ProcessId> id = ProcessId::Parse(proc);
    if (!id) {
      return absl::InvalidArgumentError(
          absl::StrCat("rank ", p, ": bad process id '", proc, "'"));
    }
    peers_[p]->process = *id;
    peers_[p]->local = id->host == self.host;
    // UCX 1.13's shared-memory transports have no peer failure handler:
    // asking for UCP_ERR_HANDLING_MODE_PEER would push same-host traffic onto
    // TCP. Same-host peers are watched through process liveness instead;
    // remote peers through UCX's error handling.
    ucp_ep_params_t ep{};
    ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS |
                    UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
    ep.address = reinterpret_cast<const ucp_address_t*>(remote.data());
    ep.err_mode = UCP_ERR_HANDLING_MODE_NONE;
    if (!peers_[p]->local) {
      ep.field_mask |= UCP_EP_PARAM_FIELD_ERR_HANDLER;
      ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
      ep.err_handler.cb = &UcxTransport::OnEpError;
      ep.err_handler.arg = peers_[p].get();
    }
    PLEXUS_RETURN_IF_ERROR(FromUcs(ucp_ep_create(worker_, &ep, &peers_[p]->ep),
                                   absl::StrCat("connecting to rank ", p)));
  }
  notice_payload_.assign(size_, 0);
  for (int p = 0; p < size_; ++p) notice_payload_[p] = p;
  PostControlRecv();
  if (all_local && options_.single_copy && size_ > 1) {
    PLEXUS_RETURN_IF_ERROR(ProbeReads(store, deadline));
  }
  return status();
}

absl::Status UcxTransport::ProbeReads(Store* store, absl::Time deadline) {
  // Each rank reads every peer's probe word (its pid) once: reads need the
  // peer's permission (same user, no ptrace restriction), which only trying
  // tells. The answers are then exchanged, so that every rank uses reads
  // only if all pairs can.
  read_probe_ = Self().pid;
  PLEXUS_RETURN_IF_ERROR(
      store->Set(ReadProbeKey(rank_),
                 absl::StrCat(reinterpret_cast<uintptr_t>(&read_probe_))),
      "publishing the read probe");
  bool ok = true;
  for (int p = 0; p < size_ && ok; ++p) {
    if (p == rank_) continue;
    PLEXUS_ASSIGN_OR_RETURN(
        std::string addr, store->Get(ReadProbeKey(p), deadline),
        absl::StrCat("waiting for rank ", p, "'s read probe"));
    uint64_t remote = 0;
    int64_t value = 0;
    iovec local_iov{&value, sizeof(value)};
    ok = absl::SimpleAtoi(addr, &remote);
    iovec remote_iov{reinterpret_cast<void*>(remote), sizeof(value)};
    ok = ok &&
         process_vm_readv(peers_[p]->process.pid, &local_iov, 1, &remote_iov, 1,
                          0) == sizeof(value) &&
         value == peers_[p]->process.pid;
    if (!ok) {
      LOG(INFO) << "rank " << rank_ << ": cannot read rank " << p
                << "'s memory (" << std::strerror(errno)
                << "): collectives use messages only";
    }
  }
  PLEXUS_RETURN_IF_ERROR(store->Set(ReadOkKey(rank_), ok ? "1" : "0"),
                         "publishing the read probe's result");
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) continue;
    absl::StatusOr<std::string> answer = store->Get(ReadOkKey(p), deadline);
    PLEXUS_RETURN_IF_ERROR(
        answer.status(),
        absl::StrCat("waiting for rank ", p, "'s read probe result"));
    ok = ok && *answer == "1";
  }
  can_read_ = ok;
  return absl::OkStatus();
}

absl::Status UcxTransport::Read(int peer, uint64_t remote, void* local,
                                size_t bytes) {
  PLEXUS_RETURN_IF_ERROR(CheckPeer(peer));
  if (!can_read_) {
    return absl::FailedPreconditionError(
        absl::StrCat("rank ", rank_, ": reads from peers are off"));
  }
  char* dst = static_cast<char*>(local);
  // The kernel may copy less than asked (it pins the peer's pages in
  // batches): go on from where it stopped.
  for (size_t done = 0; done < bytes;) {
    iovec l{dst + done, bytes - done};
    iovec r{reinterpret_cast<void*>(remote + done), bytes - done};
    const ssize_t k =
        process_vm_readv(peers_[peer]->process.pid, &l, 1, &r, 1, 0);
    if (k > 0) {
      done += static_cast<size_t>(k);
      continue;
    }
    if (k < 0 && errno == EINTR) continue;
    const int err = k < 0 ? errno : EFAULT;
    // A peer that is gone (its pid unused, or recycled by another process)
    // is UNAVAILABLE; a bad address from a live peer is a bug.
    if (err == ESRCH || !IsAlive(peers_[peer]->process)) {
      return FailForPeer(peer, absl::UnavailableError(absl::StrCat(
                                   "process ", peers_[peer]->process.pid,
                                   " exited (reading its memory)")));
    }
    return Fail(absl::InternalError(absl::StrCat(
        "rank ", rank_, ": reading ", bytes, " bytes at ", absl::Hex(remote),
        " of rank ", peer, ": ", std::strerror(err))));
  }
  return absl::OkStatus();
}

UcxTransport::~UcxTransport() {
  if (control_req_ != nullptr) {
    ucp_request_cancel(worker_, control_req_);
    ucp_request_free(control_req_);
  }
  // Force-close: a flush would talk to peers that may already be gone (and
  // wire up endpoints never used). Completed sends are already delivered or
  // in the receiver's hands (rendezvous sends complete on the receiver's ack).
  std::vector<void*> closing;
  for (auto& peer : peers_) {
    if (peer->ep == nullptr) continue;
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_EP_CLOSE_FLAG_FORCE;
    void* req = ucp_ep_close_nbx(peer->ep, &p);
    if (UCS_PTR_IS_PTR(req)) closing.push_back(req);
  }
  const absl::Time deadline = absl::Now() + kCloseTimeout;
  for (void* req : closing) {
    while (ucp_request_check_status(req) == UCS_INPROGRESS &&
           absl::Now() < deadline) {
      ucp_worker_progress(worker_);
    }
    ucp_request_free(req);
  }
  if (worker_ != nullptr) ucp_worker_destroy(worker_);
  if (context_ != nullptr) ucp_cleanup(context_);
  if (abort_fd_ >= 0) close(abort_fd_);
}

uint64_t UcxTransport::EncodeTag(int src, Tag tag) const {
  return stamp_ | (static_cast<uint64_t>(src) << kRankShift) |
         (static_cast<uint64_t>(tag.op & 0xFF) << 32) | tag.sub;
}

absl::Status UcxTransport::CheckPeer(int peer) const {
  if (peer < 0 || peer >= size_ || peer == rank_) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank_, ": bad peer rank ", peer));
  }
  return status();
}

absl::Status UcxTransport::status() const {
  if (!has_error_.load(std::memory_order_acquire)) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  return error_;
}

absl::Status UcxTransport::Fail(absl::Status error) {
  absl::MutexLock lock(&mu_);
  if (error_.ok()) {
    error_ = std::move(error);
    has_error_.store(true, std::memory_order_release);
  }
  return error_;
}

void UcxTransport::Abort(const absl::Status& why) {
  (void)Fail(why);
  uint64_t one = 1;
  if (abort_fd_ >= 0) {
    ssize_t n = write(abort_fd_, &one, sizeof(one));
    (void)n;
  }
}

void UcxTransport::OnEpError(void* arg, ucp_ep_h ep, ucs_status_t status) {
  Peer* peer = static_cast<Peer*>(arg);
  peer->self->MarkLost(
      peer->rank,
      FromUcs(status, absl::StrCat("endpoint to rank ", peer->rank)));
}

void UcxTransport::MarkLost(int peer, const absl::Status& why) {
  if (peers_[peer]->failed) return;
  peers_[peer]->failed = true;
  peers_[peer]->error = why;
}

absl::Status UcxTransport::FailForPeer(int peer, const absl::Status& why) {
  MarkLost(peer, why);
  // A peer that closes its endpoints after failing itself looks lost too. Give
  // the others a moment to report the rank that actually failed: a notice
  // proves its sender alive, and its culprit wins over ours.
  const absl::Time grace = absl::Now() + kNoticeGrace;
  while (!has_error_.load(std::memory_order_acquire) && absl::Now() < grace) {
    ucp_worker_progress(worker_);
    PollControl();
  }
  if (has_error_.load(std::memory_order_acquire)) return status();
  absl::Status s = Fail(absl::UnavailableError(absl::StrCat(
      "rank ", rank_, ": peer rank ", peer, " failed: ", why.message())));
  notices_to_send_.push_back(peer);
  PollControl();
  // Push the notices out (fire and forget) before the caller gives up.
  for (int i = 0; i < 100 && ucp_worker_progress(worker_) != 0; ++i) {
  }
  return s;
}

void UcxTransport::NoticeReceived(int peer, int reported_by) {
  if (peer < 0 || peer >= size_) return;
  (void)Fail(absl::UnavailableError(
      absl::StrCat("rank ", rank_, ": peer rank ", peer,
                   " failed (reported by rank ", reported_by, ")")));
}

void UcxTransport::PostControlRecv() {
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_DATATYPE;
  p.datatype = ucp_dt_make_contig(1);
  void* req =
      ucp_tag_recv_nbx(worker_, &control_buf_, sizeof(control_buf_),
                       kControlBit | stamp_, kControlBit | kStampMask, &p);
  if (UCS_PTR_IS_ERR(req)) {
    (void)Fail(FromUcs(UCS_PTR_STATUS(req), "posting the control receive"));
    return;
  }
  control_req_ = req;
}

void UcxTransport::PollControl() {
  if (control_req_ != nullptr) {
    ucp_tag_recv_info_t info{};
    ucs_status_t st = ucp_tag_recv_request_test(control_req_, &info);
    if (st != UCS_INPROGRESS) {
      ucp_request_free(control_req_);
      control_req_ = nullptr;
      if (st == UCS_OK) {
        int from =
            static_cast<int>((info.sender_tag >> kRankShift) & kRankMask);
        NoticeReceived(static_cast<int>(control_buf_), from);
        PostControlRecv();
      }
    }
  }
  while (!notices_to_send_.empty()) {
    int failed = notices_to_send_.back();
    notices_to_send_.pop_back();
    for (int p = 0; p < size_; ++p) {
      if (p == rank_ || p == failed || peers_[p]->failed) continue;
      ucp_request_param_t param{};
      param.op_attr_mask = UCP_OP_ATTR_FIELD_DATATYPE;
      param.datatype = ucp_dt_make_contig(1);
      void* req = ucp_tag_send_nbx(
          peers_[p]->ep, &notice_payload_[failed], sizeof(int64_t),
          kControlBit | stamp_ | (static_cast<uint64_t>(rank_) << kRankShift),
          &param);
      if (UCS_PTR_IS_PTR(req)) ucp_request_free(req);
    }
  }
}

absl::StatusOr<std::unique_ptr<Request>> UcxTransport::ISend(int peer, Tag tag,
                                                             const void* data,
                                                             size_t bytes) {
  PLEXUS_RETURN_IF_ERROR(CheckPeer(peer));
  if (peers_[peer]->failed) return FailForPeer(peer, peers_[peer]->error);
  auto req = std::make_unique<UcxRequest>();
  req->transport = this;
  req->peer = peer;
  req->bytes = bytes;
  req->tag = EncodeTag(rank_, tag);
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_DATATYPE;
  p.datatype = ucp_dt_make_contig(1);
  void* r = ucp_tag_send_nbx(peers_[peer]->ep, data, bytes,
                             EncodeTag(rank_, tag), &p);
  if (UCS_PTR_IS_ERR(r)) {
    absl::Status e =
        FromUcs(UCS_PTR_STATUS(r),
                absl::StrCat("rank ", rank_, ": send to rank ", peer));
    return absl::IsUnavailable(e) ? FailForPeer(peer, e) : Fail(e);
  }
  req->ucp_req = r;
  req->done = (r == nullptr);
  return req;
}

absl::StatusOr<std::unique_ptr<Request>> UcxTransport::IRecv(int peer, Tag tag,
                                                             void* data,
                                                             size_t bytes) {
  PLEXUS_RETURN_IF_ERROR(CheckPeer(peer));
  if (peers_[peer]->failed) return FailForPeer(peer, peers_[peer]->error);
  auto req = std::make_unique<UcxRequest>();
  req->transport = this;
  req->peer = peer;
  req->bytes = bytes;
  req->tag = EncodeTag(peer, tag);
  req->is_recv = true;
  // NO_IMM_CMPL: always get a request, whose test fills in the length.
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_DATATYPE | UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
  p.datatype = ucp_dt_make_contig(1);
  void* r = ucp_tag_recv_nbx(worker_, data, bytes, EncodeTag(peer, tag),
                             ~uint64_t{0}, &p);
  if (UCS_PTR_IS_ERR(r)) {
    absl::Status e =
        FromUcs(UCS_PTR_STATUS(r),
                absl::StrCat("rank ", rank_, ": receive from rank ", peer));
    return absl::IsUnavailable(e) ? FailForPeer(peer, e) : Fail(e);
  }
  req->ucp_req = r;
  req->done = (r == nullptr);
  return req;
}

bool UcxTransport::Poll(UcxRequest* req, absl::Status* error) {
  if (req->done) return true;
  ucs_status_t st = req->is_recv
                        ? ucp_tag_recv_request_test(req->ucp_req, &req->info)
                        : ucp_request_check_status(req->ucp_req);
  if (st == UCS_INPROGRESS) return false;
  ucp_request_free(req->ucp_req);
  req->ucp_req = nullptr;
  req->done = true;
  if (st == UCS_OK && (!req->is_recv || req->info.length == req->bytes)) {
    return true;
  }
  // Only failures pay for the message (a heap string per completion showed
  // in small-message profiles).
  const std::string what = absl::StrCat(
      "rank ", rank_, ": ", req->is_recv ? "receive from" : "send to", " rank ",
      req->peer);
  if (st != UCS_OK) {
    *error = FromUcs(st, what);
    if (absl::IsUnavailable(*error)) *error = FailForPeer(req->peer, *error);
  } else {
    *error = absl::InvalidArgumentError(absl::StrCat(
        what, ": got ", req->info.length, " bytes, expected ", req->bytes));
  }
  return true;
}

void UcxTransport::CheckLiveness() {
  for (auto& peer : peers_) {
    if (!peer->local || peer->failed || peer->rank == rank_) continue;
    if (!IsAlive(peer->process)) {
      MarkLost(peer->rank, absl::UnavailableError(absl::StrCat(
                               "process ", peer->process.pid, " on ",
                               peer->process.host, " exited")));
    }
  }
}

void UcxTransport::ProgressIdle() {
  while (ucp_worker_progress(worker_) != 0) {
  }
  PollControl();
}

void UcxTransport::Progress(absl::Time deadline) {
  if (ucp_worker_progress(worker_) != 0 ||
      options_.progress == UcxTransportOptions::Progress::kBusyPoll) {
    PollControl();
    return;
  }
  PollControl();
  ucs_status_t st = ucp_worker_arm(worker_);
  if (st == UCS_ERR_BUSY) return;
  if (st != UCS_OK) {
    (void)Fail(FromUcs(st, "ucp_worker_arm"));
    return;
  }
  // Wake at least every 100 ms so that UCX's keepalive (run from progress)
  // notices dead peers while we sleep.
  absl::Duration left = std::clamp(deadline - absl::Now(), absl::ZeroDuration(),
                                   absl::Milliseconds(100));
  pollfd fds[2] = {{worker_fd_, POLLIN, 0}, {abort_fd_, POLLIN, 0}};
  poll(fds, 2, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
}

absl::Status UcxTransport::Wait(absl::Span<Request* const> requests,
                                absl::Time deadline) {
  // Reading the clock costs more than a progress call here (absl::Now about
  // 250 ns on this project's VMs, a third of the samples of a busy-polling
  // rank): busy polling looks at it every kClockEvery rounds only, which
  // leaves deadlines and liveness checks late by microseconds at most.
  constexpr int kClockEvery = 64;
  const bool busy =
      options_.progress == UcxTransportOptions::Progress::kBusyPoll;
  for (int spin = 1;; ++spin) {
    if (has_error_.load(std::memory_order_acquire)) return status();
    bool all_done = true;
    UcxRequest* pending = nullptr;
    for (Request* r : requests) {
      if (r == nullptr) continue;
      auto* req = static_cast<UcxRequest*>(r);
      absl::Status error;
      if (!Poll(req, &error)) {
        if (peers_[req->peer]->failed) {
          return FailForPeer(req->peer, peers_[req->peer]->error);
        }
        all_done = false;
        if (pending == nullptr) pending = req;
      } else if (!error.ok()) {
        return Fail(error);
      }
    }
    if (all_done) return absl::OkStatus();
    if (!busy || spin % kClockEvery == 0) {
      const absl::Time now = absl::Now();
      if (now >= next_liveness_check_) {
        next_liveness_check_ = now + kLivenessPeriod;
        CheckLiveness();
      }
      if (now >= deadline) {
        return Fail(absl::DeadlineExceededError(
            absl::StrCat("rank ", rank_, ": deadline exceeded waiting for ",
                         pending->is_recv ? "a receive from" : "a send to",
                         " rank ", pending->peer, " (", pending->bytes,
                         " bytes, tag ", absl::Hex(pending->tag), ")")));
      }
    }
    Progress(deadline);
  }
}

absl::StatusOr<std::unique_ptr<Transport>> NewUcxTransport(
    Store* store, int rank, int size, const UcxTransportOptions& options) {
  if (size < 1 || size > kMaxRanks || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad rank ", rank, " / size ", size));
  }
  auto t = std::make_unique<UcxTransport>(rank, size, options);
  PLEXUS_RETURN_IF_ERROR(t->Init(store), absl::StrCat("rank ", rank, ": UCX"));
  return t;
}

}  // namespace plexus::collectives::ucx
