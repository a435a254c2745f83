#include "ps/service/data_plane.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/data_frame.h"
#include "common/error_info.h"
#include "common/metrics.h"
#include "common/status.h"
#include "glog/logging.h"
#include "ps/service/ps_service.h"

namespace plexus::ps {
namespace {

// A reply that the client stops reading for this long is abandoned.
constexpr absl::Duration kWriteTimeout = absl::Seconds(60);

const char* MethodName(v1::DataFrameHeader::Method m) {
  switch (m) {
    case v1::DataFrameHeader::METHOD_PULL:
      return "Pull";
    case v1::DataFrameHeader::METHOD_PUSH:
      return "Push";
    case v1::DataFrameHeader::METHOD_PUSH_PULL:
      return "PushPull";
    default:
      return "unknown";
  }
}

bool SameKey(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;  // constant time: no early exit on a mismatch
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i];
  return diff == 0;
}

// A connection's buffer for the tensor bytes of its requests, kept from one
// request to the next: a fresh megabyte per push would be page-faulted in
// (and, freed, given back to the kernel) every time.
class Scratch {
 public:
  // Room for `n` bytes; what an earlier Get returned is no longer valid.
  char* Get(size_t n) {
    if (n > capacity_) {
      buffer_.reset(new char[n]);
      capacity_ = n;
    }
    return buffer_.get();
  }
  // Gives back a buffer larger than is worth keeping between requests.
  void Trim() {
    if (capacity_ > kKeepBytes) {
      buffer_.reset();
      capacity_ = 0;
    }
  }

 private:
  // Up to 1,024 connections each keep this much at most: the default 1 MiB
  // dense chunks and sparse pushes of a few thousand rows fit; a larger
  // request allocates for itself.
  static constexpr size_t kKeepBytes = size_t{4} << 20;
  std::unique_ptr<char[]> buffer_;
  size_t capacity_ = 0;
};

// Reads the request body into a `Req`, runs it, and leaves the response in
// *resp (when OK). *in_step is false when the body could not be read whole:
// the stream is then out of step and the connection must close unanswered.
// The request's tensor bytes are read into the connection's scratch (no
// zero-filled strings), each at a 64-byte boundary, and handed to `serve` as
// views.
template <typename Req, typename Resp, typename Serve>
absl::Status Run(FrameReader* reader, const v1::DataFrameHeader& h,
                 uint64_t body_bytes, Scratch* scratch,
                 std::unique_ptr<google::protobuf::Message>* resp,
                 bool* in_step, Serve serve) {
  Req req;
  auto aligned = [](uint64_t n) { return (n + 63) & ~uint64_t{63}; };
  uint64_t total = 0;
  for (uint64_t n : h.attachment_bytes()) total += aligned(n);
  char* at = scratch->Get(total);
  std::vector<absl::Span<char>> into;
  std::vector<absl::string_view> tensors;
  for (uint64_t n : h.attachment_bytes()) {
    into.emplace_back(at, n);
    tensors.emplace_back(at, n);
    at += aligned(n);
  }
  bool landed = false;
  absl::Status read = reader->ReadBody(h, body_bytes, absl::InfiniteFuture(),
                                       &req, into, &landed);
  // Bytes that are not a Req were read whole (INVALID_ARGUMENT).
  *in_step = read.ok() || absl::IsInvalidArgument(read);
  PLEXUS_RETURN_IF_ERROR(read);
  if (!landed) tensors.clear();  // none, or inside the message
  auto out = std::make_unique<Resp>();
  PLEXUS_RETURN_IF_ERROR(serve(req, absl::MakeConstSpan(tensors), out.get()));
  *resp = std::move(out);
  return absl::OkStatus();
}

// Reads and runs one request (its header is read); see Run for *in_step.
absl::Status Dispatch(PsService* service, FrameReader* reader,
                      const v1::DataFrameHeader& h, uint64_t body_bytes,
                      Scratch* scratch,
                      std::unique_ptr<google::protobuf::Message>* resp,
                      bool* in_step) {
  const absl::Time deadline = h.deadline_unix_us() > 0
                                  ? absl::FromUnixMicros(h.deadline_unix_us())
                                  : absl::InfiniteFuture();
  switch (h.method()) {
    case v1::DataFrameHeader::METHOD_PULL:
      return Run<v1::PullRequest, v1::PullResponse>(
          reader, h, body_bytes, scratch, resp, in_step,
          [&](const auto& req, auto tensors, auto* out) {
            // A pull carries no tensors.
            return service->ServePull(req, deadline, out);
          });
    case v1::DataFrameHeader::METHOD_PUSH:
      return Run<v1::PushRequest, v1::PushResponse>(
          reader, h, body_bytes, scratch, resp, in_step,
          [&](const auto& req, auto tensors, auto* out) {
            return service->ServePush(req, out, tensors);
          });
    case v1::DataFrameHeader::METHOD_PUSH_PULL:
      return Run<v1::PushPullRequest, v1::PushPullResponse>(
          reader, h, body_bytes, scratch, resp, in_step,
          [&](const auto& req, auto tensors, auto* out) {
            return service->ServePushPull(req, deadline, out, tensors);
          });
    default: {
      absl::Status read =
          reader->ReadBody(h, body_bytes, absl::InfiniteFuture(), nullptr);
      *in_step = read.ok();
      PLEXUS_RETURN_IF_ERROR(read);
      return absl::UnimplementedError(absl::StrCat(
          "data plane: method ", static_cast<int>(h.method()), " unknown"));
    }
  }
}

// A connection's calls are counted with the gRPC calls under the same
// method names (the metrics do not depend on the plane), and by plane in a
// counter of its own. The connection keeps its handles on those metrics by
// method and code: looked up (label strings rendered, the registry locked)
// once per pair rather than on every call.
class CallMetrics {
 public:
  void Record(v1::DataFrameHeader::Method m, absl::StatusCode code,
              absl::Time start) {
    const size_t method = static_cast<size_t>(m) < kMethods
                              ? static_cast<size_t>(m)
                              : 0;  // "unknown"
    // (A code beyond absl's is not one a call ends with.)
    if (static_cast<size_t>(code) >= kCodes) code = absl::StatusCode::kUnknown;
    Handles& h = handles_[method][static_cast<size_t>(code)];
    if (h.requests == nullptr) {
      const char* name = MethodName(m);
      const std::string code_name = absl::StatusCodeToString(code);
      h.rpc = GetRpcMetrics(absl::StrCat("/plexus.v1.ParameterServer/", name),
                            code_name);
      h.requests = Metrics()->GetCounter(
          "plexus_ps_data_plane_requests_total",
          "Calls served by the direct data plane (also counted in "
          "plexus_rpc_requests_total), by method and code.",
          {{"method", name}, {"code", code_name}});
    }
    h.rpc.requests->Increment();
    h.rpc.duration->Observe(absl::ToDoubleSeconds(absl::Now() - start));
    h.requests->Increment();
  }

 private:
  // Methods 0..3 (0: unspecified, reported as unknown); codes 0..16.
  static constexpr size_t kMethods = 4;
  static constexpr size_t kCodes = 17;
  struct Handles {
    RpcMetrics rpc;
    Counter* requests = nullptr;
  };
  Handles handles_[kMethods][kCodes];
};

}  // namespace

absl::StatusOr<std::unique_ptr<DataPlaneServer>> DataPlaneServer::Listen(
    PsService* service, const DataPlaneOptions& options) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(options.port));
  if (inet_pton(AF_INET, options.host.c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data plane: --host '", options.host, "' is not an IPv4 address"));
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat("data plane: socket: ", std::strerror(errno)));
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(fd, 128) != 0) {
    const int err = errno;
    close(fd);
    return absl::UnavailableError(absl::StrCat("data plane: cannot listen on ",
                                               options.host, ":", options.port,
                                               ": ", std::strerror(err)));
  }
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  std::string key(16, '\0');
  if (getrandom(key.data(), key.size(), 0) !=
      static_cast<ssize_t>(key.size())) {
    close(fd);
    return absl::InternalError("data plane: getrandom failed");
  }
  return std::unique_ptr<DataPlaneServer>(new DataPlaneServer(
      service, options, fd, ntohs(addr.sin_port), std::move(key)));
}

DataPlaneServer::DataPlaneServer(PsService* service,
                                 const DataPlaneOptions& options, int listen_fd,
                                 int port, std::string key)
    : service_(service),
      options_(options),
      listen_fd_(listen_fd),
      port_(port),
      key_(std::move(key)),
      stop_fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}

DataPlaneServer::~DataPlaneServer() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    // Wakes every connection's read (and write) with an error.
    for (Connection& c : connections_) shutdown(c.fd, SHUT_RDWR);
  }
  const uint64_t one = 1;
  if (write(stop_fd_, &one, sizeof(one)) < 0) {
    LOG(WARNING) << "data plane: cannot wake the accept loop";
  }
  if (accept_thread_.joinable()) accept_thread_.join();
  std::list<Connection> left;
  {
    absl::MutexLock lock(&mu_);
    left.swap(connections_);
  }
  for (Connection& c : left) {
    c.thread.join();
    close(c.fd);
  }
  close(listen_fd_);
  close(stop_fd_);
}

void DataPlaneServer::Serve() {
  accept_thread_ = std::thread([this] { AcceptLoop(); });
  LOG(INFO) << "data plane: serving Pull/Push/PushPull on " << options_.host
            << ":" << port_;
}

void DataPlaneServer::Drain() { draining_.store(true); }

bool DataPlaneServer::WaitForCalls(absl::Time deadline) {
  absl::MutexLock lock(&calls_mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(calls_mu_) {
    return calls_ == 0;
  };
  return calls_mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
}

void DataPlaneServer::Reap() {
  for (auto it = connections_.begin(); it != connections_.end();) {
    if (it->done.load()) {
      it->thread.join();
      close(it->fd);
      it = connections_.erase(it);
    } else {
      ++it;
    }
  }
}

void DataPlaneServer::AcceptLoop() {
  Gauge* open = Metrics()->GetGauge("plexus_ps_data_plane_connections",
                                    "Direct data-plane connections open now.");
  while (true) {
    pollfd p[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      LOG(ERROR) << "data plane: poll: " << std::strerror(errno);
      return;
    }
    if (p[1].revents != 0) return;
    int fd =
        accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) continue;  // EAGAIN, a peer that gave up, EMFILE (retried)
    absl::MutexLock lock(&mu_);
    Reap();
    if (stopping_ || draining_.load() ||
        static_cast<int>(connections_.size()) >= options_.max_connections) {
      close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    Connection& c = connections_.emplace_back();
    c.fd = fd;
    c.thread = std::thread([this, &c] { ServeConnection(&c); });
    open->Set(static_cast<double>(connections_.size()));
  }
}

void DataPlaneServer::ServeConnection(Connection* c) {
  Scratch scratch;
  FrameReader reader(c->fd);
  CallMetrics metrics;
  while (true) {
    scratch.Trim();
    v1::DataFrameHeader h;
    uint64_t body_bytes = 0;
    absl::Status st = reader.ReadHeader(
        absl::InfiniteFuture(), options_.max_message_bytes, &h, &body_bytes);
    if (!st.ok()) {
      // A client that hangs up (or a shutdown) is the normal end; a
      // malformed frame is worth a line.
      if (!absl::IsUnavailable(st)) LOG(WARNING) << st;
      break;
    }
    const absl::Time start = absl::Now();
    {
      absl::MutexLock lock(&calls_mu_);
      ++calls_;
    }
    // Counted until its reply is out, however the call ends.
    struct CallDone {
      DataPlaneServer* self;
      ~CallDone() {
        absl::MutexLock lock(&self->calls_mu_);
        --self->calls_;
      }
    } call_done{this};
    v1::DataFrameHeader reply;
    reply.set_request_id(h.request_id());
    std::unique_ptr<google::protobuf::Message> resp;
    // Whether the connection must close after the reply: the caller has no
    // right to it, or the shard is going away.
    bool close_after = false;
    if (!SameKey(h.key(), key_)) {
      st = absl::UnauthenticatedError(
          "data plane: wrong key (fetch it again with GetShardInfo: the "
          "shard may have restarted)");
      close_after = true;
    } else if (draining_.load()) {
      v1::ErrorInfo info;
      info.set_reason(v1::ErrorInfo::REASON_NOT_SERVING);
      st = WithErrorInfo(absl::UnavailableError("the shard is draining"), info);
      close_after = true;
    } else {
      bool in_step = true;
      st =
          Dispatch(service_, &reader, h, body_bytes, &scratch, &resp, &in_step);
      if (!in_step) {
        if (!absl::IsUnavailable(st)) LOG(WARNING) << st;
        metrics.Record(h.method(), st.code(), start);
        break;
      }
    }
    if (!st.ok()) {
      resp.reset();
      reply.set_code(static_cast<int>(st.code()));
      reply.set_message(std::string(st.message()));
      if (auto info = GetErrorInfo(st)) *reply.mutable_error_info() = *info;
    }
    metrics.Record(h.method(), st.code(), start);
    absl::Status w = WriteDataFrame(c->fd, std::move(reply), resp.get(),
                                    absl::Now() + kWriteTimeout);
    if (!w.ok() || close_after) break;
  }
  // The thread and the descriptor are reclaimed by Reap or the destructor;
  // the peer sees the end of the stream now.
  shutdown(c->fd, SHUT_RDWR);
  c->done.store(true);
}

}  // namespace plexus::ps
