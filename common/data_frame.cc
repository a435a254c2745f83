#include "common/data_frame.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace plexus {
namespace {

constexpr size_t kPrefixBytes = 12;
// A header is a few ids, a key and an error message.
constexpr uint32_t kMaxHeaderBytes = 64 << 10;

// Waits until `fd` is ready for `events` or the deadline passes.
absl::Status WaitFd(int fd, short events, absl::Time deadline) {
  while (true) {
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError("data plane: deadline passed");
    }
    pollfd p{fd, events, 0};
    int ms = left == absl::InfiniteDuration()
                 ? -1
                 : static_cast<int>(std::min<int64_t>(
                       absl::ToInt64Milliseconds(left) + 1, 1 << 30));
    int r = poll(&p, 1, ms);
    if (r > 0) return absl::OkStatus();
    if (r < 0 && errno != EINTR) {
      return absl::UnavailableError(
          absl::StrCat("data plane: poll: ", std::strerror(errno)));
    }
  }
}

absl::Status Lost(const char* what, int err) {
  return absl::UnavailableError(absl::StrCat(
      "data plane connection lost (", what, ": ", std::strerror(err), ")"));
}

absl::Status WriteAll(int fd, iovec* iov, int n, absl::Time deadline) {
  while (n > 0) {
    ssize_t w = writev(fd, iov, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        absl::Status st = WaitFd(fd, POLLOUT, deadline);
        if (!st.ok()) return st;
        continue;
      }
      return Lost("write", errno);
    }
    size_t done = static_cast<size_t>(w);
    while (n > 0 && done >= iov->iov_len) {
      done -= iov->iov_len;
      ++iov;
      --n;
    }
    if (n > 0) {
      iov->iov_base = static_cast<char*>(iov->iov_base) + done;
      iov->iov_len -= done;
    }
  }
  return absl::OkStatus();
}

// Reads exactly `n` bytes. `at_start`: an end of stream before the first
// byte is a clean close.
absl::Status ReadAll(int fd, char* out, size_t n, absl::Time deadline,
                     bool at_start) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, out + got, n - got);
    if (r > 0) {
      got += static_cast<size_t>(r);
      continue;
    }
    if (r == 0) {
      return absl::UnavailableError(
          at_start && got == 0 ? "data plane connection closed by the peer"
                               : "data plane connection closed mid-frame");
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return Lost("read", errno);
    absl::Status st = WaitFd(fd, POLLIN, deadline);
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteDataFrame(int fd, const v1::DataFrameHeader& header,
                            absl::string_view body, absl::Time deadline) {
  std::string head(kPrefixBytes, '\0');
  if (!header.AppendToString(&head)) {
    return absl::InternalError("data plane: cannot serialize a frame header");
  }
  const uint32_t head_len = static_cast<uint32_t>(head.size() - kPrefixBytes);
  const uint64_t body_len = body.size();
  // Little-endian on every machine this builds for (x86-64, aarch64).
  std::memcpy(head.data(), &head_len, 4);
  std::memcpy(head.data() + 4, &body_len, 8);
  iovec iov[2] = {{head.data(), head.size()},
                  {const_cast<char*>(body.data()), body.size()}};
  return WriteAll(fd, iov, body.empty() ? 1 : 2, deadline);
}

absl::Status ReadDataFrame(int fd, absl::Time deadline, int64_t max_body,
                           v1::DataFrameHeader* header, FrameBody* body) {
  char prefix[kPrefixBytes];
  absl::Status st = ReadAll(fd, prefix, kPrefixBytes, deadline, true);
  if (!st.ok()) return st;
  uint32_t head_len;
  uint64_t body_len;
  std::memcpy(&head_len, prefix, 4);
  std::memcpy(&body_len, prefix + 4, 8);
  if (head_len > kMaxHeaderBytes) {
    return absl::DataLossError(absl::StrCat("data plane: a frame header of ",
                                            head_len, " bytes (at most ",
                                            kMaxHeaderBytes, ")"));
  }
  if (body_len > static_cast<uint64_t>(max_body)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("data plane: a frame of ", body_len,
                     " bytes, over the limit of ", max_body));
  }
  std::string head(head_len, '\0');
  st = ReadAll(fd, head.data(), head_len, deadline, false);
  if (!st.ok()) return st;
  if (!header->ParseFromString(head)) {
    return absl::DataLossError("data plane: a malformed frame header");
  }
  body->data.reset(new char[body_len == 0 ? 1 : body_len]);
  body->size = body_len;
  return ReadAll(fd, body->data.get(), body_len, deadline, false);
}

absl::Status SplitHostPort(absl::string_view host_port, std::string* host,
                           int* port) {
  size_t colon = host_port.rfind(':');
  if (colon == absl::string_view::npos ||
      !absl::SimpleAtoi(host_port.substr(colon + 1), port) || *port <= 0 ||
      *port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", host_port, "' is not host:port"));
  }
  *host = std::string(host_port.substr(0, colon));
  return absl::OkStatus();
}

absl::StatusOr<int> ConnectTcp(const std::string& host_port,
                               absl::Time deadline) {
  std::string host;
  int port = 0;
  absl::Status st = SplitHostPort(host_port, &host, &port);
  if (!st.ok()) return st;
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int gai =
      getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (gai != 0 || res == nullptr) {
    return absl::UnavailableError(absl::StrCat("data plane: cannot resolve ",
                                               host, ": ", gai_strerror(gai)));
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(res);
    return absl::UnavailableError(
        absl::StrCat("data plane: socket: ", std::strerror(errno)));
  }
  int r = connect(fd, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  if (r < 0 && errno == EINPROGRESS) {
    st = WaitFd(fd, POLLOUT, deadline);
    int err = 0;
    socklen_t len = sizeof(err);
    if (st.ok() && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 &&
        err == 0) {
      r = 0;
    } else if (st.ok()) {
      errno = err;
    }
  }
  if (r < 0 || !st.ok()) {
    const int err = errno;
    close(fd);
    if (!st.ok()) return st;
    return absl::UnavailableError(absl::StrCat(
        "data plane: cannot connect to ", host_port, ": ", std::strerror(err)));
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

}  // namespace plexus
