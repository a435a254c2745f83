#include "common/data_frame.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/thread_pool.h"

namespace plexus {
namespace {

constexpr size_t kPrefixBytes = 12;
// A header is a few ids, a key and an error message.
constexpr uint32_t kMaxHeaderBytes = 64 << 10;
// A FrameReader's buffer: a 4 KiB pull's reply, or a push of a few rows,
// with room to spare.
constexpr size_t kReadBufferBytes = 16 << 10;

// Waits until `fd` is ready for `events` or the deadline passes. It looks
// without sleeping for up to PoolSpin() first: a reply or the next request
// usually comes within a few microseconds, and a sleeping thread's wake-up
// costs tens of them on a virtual machine, several times per call (the
// request, each part of a large reply, the next request).
absl::Status WaitFd(int fd, short events, absl::Time deadline) {
  if (SpinUntil(std::min(PoolSpin(), deadline - absl::Now()), [&] {
        pollfd p{fd, events, 0};
        return poll(&p, 1, 0) != 0;  // ready, or an error to see below
      })) {
    return absl::OkStatus();
  }
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

// Drops the first `done` bytes of the n pieces at *iov.
void Advance(size_t done, iovec** iov, int* n) {
  while (*n > 0 && done >= (*iov)->iov_len) {
    done -= (*iov)->iov_len;
    ++*iov;
    --*n;
  }
  if (*n > 0) {
    (*iov)->iov_base = static_cast<char*>((*iov)->iov_base) + done;
    (*iov)->iov_len -= done;
  }
}

absl::Status WriteAll(int fd, iovec* iov, int n, absl::Time deadline) {
  while (n > 0) {
    ssize_t w = writev(fd, iov, std::min(n, IOV_MAX));
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        absl::Status st = WaitFd(fd, POLLOUT, deadline);
        if (!st.ok()) return st;
        continue;
      }
      return Lost("write", errno);
    }
    Advance(static_cast<size_t>(w), &iov, &n);
  }
  return absl::OkStatus();
}

// The data fields of the Tensor messages in `m`, depth first in declaration
// order (the order DataFrameHeader.attachment_bytes documents).
void CollectTensorData(google::protobuf::Message* m,
                       std::vector<std::string*>* out) {
  const google::protobuf::Descriptor* desc = m->GetDescriptor();
  if (desc == v1::Tensor::descriptor()) {
    out->push_back(static_cast<v1::Tensor*>(m)->mutable_data());
    return;
  }
  const google::protobuf::Reflection* refl = m->GetReflection();
  for (int i = 0; i < desc->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* f = desc->field(i);
    if (f->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) {
      continue;
    }
    if (f->is_repeated()) {
      const int n = refl->FieldSize(*m, f);
      for (int j = 0; j < n; ++j) {
        CollectTensorData(refl->MutableRepeatedMessage(m, f, j), out);
      }
    } else if (refl->HasField(*m, f)) {
      CollectTensorData(refl->MutableMessage(m, f), out);
    }
  }
}

// Writes the prefix and `header` followed by `parts`.
absl::Status WriteParts(int fd, const v1::DataFrameHeader& header,
                        const std::vector<absl::string_view>& parts,
                        absl::Time deadline) {
  std::string head(kPrefixBytes, '\0');
  if (!header.AppendToString(&head)) {
    return absl::InternalError("data plane: cannot serialize a frame header");
  }
  const uint32_t head_len = static_cast<uint32_t>(head.size() - kPrefixBytes);
  uint64_t body_len = 0;
  for (absl::string_view p : parts) body_len += p.size();
  // Little-endian on every machine this builds for (x86-64, aarch64).
  std::memcpy(head.data(), &head_len, 4);
  std::memcpy(head.data() + 4, &body_len, 8);
  std::vector<iovec> iov;
  iov.reserve(parts.size() + 1);
  iov.push_back({head.data(), head.size()});
  for (absl::string_view p : parts) {
    if (!p.empty()) iov.push_back({const_cast<char*>(p.data()), p.size()});
  }
  // writev takes at most IOV_MAX pieces at a time; WriteAll goes on from
  // where a short write stopped.
  return WriteAll(fd, iov.data(), static_cast<int>(iov.size()), deadline);
}

}  // namespace

absl::Status WriteRawDataFrame(int fd, const v1::DataFrameHeader& header,
                               absl::string_view body, absl::Time deadline) {
  return WriteParts(fd, header, {body}, deadline);
}

std::vector<std::string*> TensorDataFields(google::protobuf::Message* msg) {
  std::vector<std::string*> fields;
  CollectTensorData(msg, &fields);
  return fields;
}

absl::Status WriteDataFrame(int fd, v1::DataFrameHeader header,
                            google::protobuf::Message* msg, absl::Time deadline,
                            absl::Span<const absl::string_view> tensor_bytes) {
  header.clear_attachment_bytes();
  if (msg == nullptr) return WriteParts(fd, header, {}, deadline);
  std::vector<std::string*> fields = TensorDataFields(msg);
  // The message's own tensor bytes, moved out for the write (its fields
  // empty while it is serialized) and back after it.
  std::vector<std::string> moved;
  std::vector<absl::string_view> tensors(tensor_bytes.begin(),
                                         tensor_bytes.end());
  if (tensors.empty()) {
    for (std::string* f : fields) moved.push_back(std::move(*f));
    for (std::string* f : fields) f->clear();
    tensors.assign(moved.begin(), moved.end());
  } else if (tensors.size() != fields.size()) {
    return absl::InternalError(
        absl::StrCat("data plane: ", tensors.size(), " tensor buffers for a ",
                     msg->GetTypeName(), " with ", fields.size(), " tensors"));
  }
  std::vector<absl::string_view> parts;
  std::string serialized;
  absl::Status st;
  if (msg->SerializeToString(&serialized)) {
    parts.push_back(serialized);
    for (absl::string_view t : tensors) {
      header.add_attachment_bytes(t.size());
      parts.push_back(t);
    }
    st = WriteParts(fd, header, parts, deadline);
  } else {
    st = absl::InternalError("data plane: cannot serialize a body");
  }
  for (size_t i = 0; i < moved.size(); ++i) *fields[i] = std::move(moved[i]);
  return st;
}

FrameReader::FrameReader(int fd)
    : fd_(fd), buffer_(new char[kReadBufferBytes]) {}

absl::Status FrameReader::Read(char* out, size_t n, absl::Time deadline,
                               bool at_start) {
  size_t got = std::min(n, end_ - begin_);
  std::memcpy(out, buffer_.get() + begin_, got);
  begin_ += got;
  // Between frames nothing is usually in flight yet: wait before reading
  // rather than read in vain first.
  bool wait = at_start && got == 0;
  while (got < n) {
    if (wait) {
      absl::Status st = WaitFd(fd_, POLLIN, deadline);
      if (!st.ok()) return st;
    }
    // What is left of a small frame (and whatever follows it) comes into
    // the buffer in one read; a large remainder goes straight to `out`.
    const bool buffered = n - got < kReadBufferBytes;
    char* dst = buffered ? buffer_.get() : out + got;
    ssize_t r = read(fd_, dst, buffered ? kReadBufferBytes : n - got);
    if (r > 0) {
      size_t take = static_cast<size_t>(r);
      if (buffered) {
        begin_ = 0;
        end_ = take;
        take = std::min(take, n - got);
        std::memcpy(out + got, buffer_.get(), take);
        begin_ = take;
      }
      got += take;
      wait = false;
      continue;
    }
    if (r == 0) {
      return absl::UnavailableError(
          at_start && got == 0 ? "data plane connection closed by the peer"
                               : "data plane connection closed mid-frame");
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return Lost("read", errno);
    wait = true;
  }
  return absl::OkStatus();
}

absl::Status FrameReader::ReadInto(absl::Span<const absl::Span<char>> into,
                                   absl::Time deadline) {
  // What is buffered first, then the rest with readv(2) straight into the
  // buffers (many rows of a sparse pull: one call per IOV_MAX of them).
  std::vector<iovec> left;
  for (absl::Span<char> b : into) {
    const size_t got = std::min(b.size(), end_ - begin_);
    std::memcpy(b.data(), buffer_.get() + begin_, got);
    begin_ += got;
    if (got < b.size()) left.push_back({b.data() + got, b.size() - got});
  }
  iovec* iov = left.data();
  int n = static_cast<int>(left.size());
  while (n > 0) {
    ssize_t r = readv(fd_, iov, std::min(n, IOV_MAX));
    if (r > 0) {
      Advance(static_cast<size_t>(r), &iov, &n);
      continue;
    }
    if (r == 0) {
      return absl::UnavailableError("data plane connection closed mid-frame");
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return Lost("read", errno);
    PLEXUS_RETURN_IF_ERROR(WaitFd(fd_, POLLIN, deadline));
  }
  return absl::OkStatus();
}

absl::Status FrameReader::ReadHeader(absl::Time deadline, int64_t max_body,
                                     v1::DataFrameHeader* header,
                                     uint64_t* body_bytes) {
  char prefix[kPrefixBytes];
  absl::Status st = Read(prefix, kPrefixBytes, deadline, true);
  if (!st.ok()) return st;
  uint32_t head_len;
  std::memcpy(&head_len, prefix, 4);
  std::memcpy(body_bytes, prefix + 4, 8);
  if (head_len > kMaxHeaderBytes) {
    return absl::DataLossError(absl::StrCat("data plane: a frame header of ",
                                            head_len, " bytes (at most ",
                                            kMaxHeaderBytes, ")"));
  }
  if (*body_bytes > static_cast<uint64_t>(max_body)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("data plane: a frame of ", *body_bytes,
                     " bytes, over the limit of ", max_body));
  }
  std::string head(head_len, '\0');
  st = Read(head.data(), head_len, deadline, false);
  if (!st.ok()) return st;
  if (!header->ParseFromString(head)) {
    return absl::DataLossError("data plane: a malformed frame header");
  }
  uint64_t attached = 0;
  for (uint64_t a : header->attachment_bytes()) {
    attached += a;
    if (a > *body_bytes || attached > *body_bytes) {
      return absl::DataLossError(
          "data plane: attachments longer than the frame");
    }
  }
  return absl::OkStatus();
}

absl::Status FrameReader::ReadBody(const v1::DataFrameHeader& header,
                                   uint64_t body_bytes, absl::Time deadline,
                                   google::protobuf::Message* msg,
                                   absl::Span<const absl::Span<char>> into,
                                   bool* landed) {
  const int n = header.attachment_bytes_size();
  uint64_t attached = 0;
  for (uint64_t a : header.attachment_bytes()) attached += a;
  const size_t message_bytes = body_bytes - attached;
  std::unique_ptr<char[]> head(new char[message_bytes + 1]);
  PLEXUS_RETURN_IF_ERROR(Read(head.get(), message_bytes, deadline, false));
  // The attachments go straight into the caller's buffers where they fill
  // them exactly, else each into a string the message then owns.
  uint64_t room = 0;
  for (absl::Span<char> b : into) room += b.size();
  const bool fits = msg != nullptr && n > 0 && room == attached;
  if (landed != nullptr) *landed = fits;
  std::vector<std::string> parts(fits ? 0 : n);
  std::vector<absl::Span<char>> own;
  for (size_t i = 0; i < parts.size(); ++i) {
    parts[i].resize(header.attachment_bytes(static_cast<int>(i)));
    own.push_back(absl::MakeSpan(parts[i]));
  }
  PLEXUS_RETURN_IF_ERROR(ReadInto(fits ? into : own, deadline));
  if (msg == nullptr) return absl::OkStatus();
  if (!msg->ParseFromArray(head.get(), static_cast<int>(message_bytes))) {
    return absl::InvalidArgumentError(
        absl::StrCat("data plane: the body is not a ", msg->GetTypeName()));
  }
  // Landed, or no attachments (any tensor bytes are inside the message).
  if (parts.empty()) return absl::OkStatus();
  std::vector<std::string*> fields = TensorDataFields(msg);
  if (fields.size() != parts.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data plane: a ", msg->GetTypeName(), " with ", fields.size(),
        " tensors and ", parts.size(), " attachments"));
  }
  for (size_t i = 0; i < fields.size(); ++i) *fields[i] = std::move(parts[i]);
  return absl::OkStatus();
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
