// Frames of the parameter server's direct data plane over a TCP connection
// (ps.proto, "Direct data plane"): a 12-byte little-endian prefix (header
// length u32, body length u64), a serialized v1::DataFrameHeader, then the
// body bytes. The shard (ps/service/data_plane.h) and the PS client
// (worker/ps_client.cc) both use these, so the wire format lives in one place.
//
// Tensor bytes travel beside the message, not inside it (DataFrameHeader.
// attachment_bytes): the sender hands the kernel the bytes it holds, and the
// receiver reads them straight into the string the message then owns.
//
// Sockets are non-blocking; every read and write waits with poll() until the
// deadline. Errors: UNAVAILABLE when the peer closed or reset the connection
// (the caller retries elsewhere or later), DEADLINE_EXCEEDED when the deadline
// passed mid-frame (the connection is then unusable: part of a frame is out),
// DATA_LOSS for a malformed frame, RESOURCE_EXHAUSTED for a frame over the
// size limit.
//
// Thread safety: one thread at a time per file descriptor.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "google/protobuf/message.h"
#include "plexus/v1/ps.pb.h"

namespace plexus {

// Writes one frame: `header`, then the serialized `msg` (null: no body)
// followed by its tensors' bytes as attachments (DataFrameHeader.
// attachment_bytes, which this fills). The tensor bytes are moved out of
// `msg` for the write and back after it, so `msg` is unchanged on return.
// `tensor_bytes`, when not empty, are the bytes of msg's tensors (whose data
// fields are then empty) in TensorDataFields order: sent from where the
// caller holds them, without a copy into the message.
absl::Status WriteDataFrame(
    int fd, v1::DataFrameHeader header, google::protobuf::Message* msg,
    absl::Time deadline, absl::Span<const absl::string_view> tensor_bytes = {});

// The data fields of the v1::Tensor messages inside `msg`, depth first in
// declaration order (DataFrameHeader.attachment_bytes' order).
std::vector<std::string*> TensorDataFields(google::protobuf::Message* msg);
// Writes one frame whose body is `body` as is (no attachments).
absl::Status WriteRawDataFrame(int fd, const v1::DataFrameHeader& header,
                               absl::string_view body, absl::Time deadline);

// The reading side of one connection. Frames are read through a small
// buffer, so that a small frame (prefix, header, body and attachments) comes
// in with one read(2) after one poll(2) instead of five reads; an
// attachment larger than what is buffered is read straight into its
// destination. Bytes read past the end of a frame stay in the buffer for the
// next one, so keep one reader per connection for as long as it is used.
// Thread safety: one thread at a time.
class FrameReader {
 public:
  explicit FrameReader(int fd);
  FrameReader(const FrameReader&) = delete;
  FrameReader& operator=(const FrameReader&) = delete;

  // Reads a frame's header. The body (*body_bytes long, at most `max_body`)
  // follows; read it with ReadBody before the next frame. At a clean end of
  // stream before the first byte, UNAVAILABLE with "closed".
  absl::Status ReadHeader(absl::Time deadline, int64_t max_body,
                          v1::DataFrameHeader* header, uint64_t* body_bytes);
  // Reads the body that `header` announced into `msg` (null: read and drop
  // it), its attachments moved into the message's tensors. INVALID_ARGUMENT
  // when the bytes are not a `msg` (the stream stays in step).
  // With `into` given and the attachments exactly as long as its buffers
  // together, they are read straight into those instead, filling them in
  // turn (the message's data fields stay empty), and *landed is set true;
  // otherwise *landed is false.
  absl::Status ReadBody(const v1::DataFrameHeader& header, uint64_t body_bytes,
                        absl::Time deadline, google::protobuf::Message* msg,
                        absl::Span<const absl::Span<char>> into = {},
                        bool* landed = nullptr);

 private:
  // Reads exactly `n` bytes, from the buffer first. `at_start`: an end of
  // stream before the first byte is a clean close.
  absl::Status Read(char* out, size_t n, absl::Time deadline, bool at_start);
  // Reads exactly as many bytes as `into` holds, filling it in turn.
  absl::Status ReadInto(absl::Span<const absl::Span<char>> into,
                        absl::Time deadline);

  const int fd_;
  std::unique_ptr<char[]> buffer_;
  size_t begin_ = 0;  // unread bytes are [begin_, end_)
  size_t end_ = 0;
};

// Connects to "host:port" (IPv4 or a name), TCP_NODELAY, non-blocking.
// UNAVAILABLE when nothing listens there.
absl::StatusOr<int> ConnectTcp(const std::string& host_port,
                               absl::Time deadline);

// Splits "host:port". INVALID_ARGUMENT when it is not of that form.
absl::Status SplitHostPort(absl::string_view host_port, std::string* host,
                           int* port);

}  // namespace plexus
