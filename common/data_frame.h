// Frames of the parameter server's direct data plane over a TCP connection
// (ps.proto, "Direct data plane"): a 12-byte little-endian prefix (header
// length u32, body length u64), a serialized v1::DataFrameHeader, then the
// body bytes. The shard (ps/service/data_plane.h) and the PS client
// (worker/ps_client.cc) both use these, so the wire format lives in one place.
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

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "plexus/v1/ps.pb.h"

namespace plexus {

// A received body: bytes without the zero-fill a std::string resize would
// cost (a pull's reply may be tens of MiB).
struct FrameBody {
  std::unique_ptr<char[]> data;
  size_t size = 0;
};

// Writes one frame: `header` then `body` (already serialized).
absl::Status WriteDataFrame(int fd, const v1::DataFrameHeader& header,
                            absl::string_view body, absl::Time deadline);

// Reads one frame whose body is at most `max_body` bytes. At a clean end of
// stream before the first byte, UNAVAILABLE with "closed".
absl::Status ReadDataFrame(int fd, absl::Time deadline, int64_t max_body,
                           v1::DataFrameHeader* header, FrameBody* body);

// Connects to "host:port" (IPv4 or a name), TCP_NODELAY, non-blocking.
// UNAVAILABLE when nothing listens there.
absl::StatusOr<int> ConnectTcp(const std::string& host_port,
                               absl::Time deadline);

// Splits "host:port". INVALID_ARGUMENT when it is not of that form.
absl::Status SplitHostPort(absl::string_view host_port, std::string* host,
                           int* port);

}  // namespace plexus
