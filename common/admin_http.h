// A daemon's plaintext admin HTTP port: GET /metrics (Prometheus text format
// from Metrics()) and GET /healthz (200 "SERVING" or 503 "NOT_SERVING"), for
// scrapers and for kubelet probes, which cannot speak gRPC over TLS. A daemon
// may add GET pages of its own (the coordinator's /status).
//
// Thread safety: all methods may be called from any thread.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace plexus {

// What an extra page answers.
struct AdminHttpResponse {
  // HTTP status. Default 200.
  int status = 200;
  // Content-Type. Default "text/plain".
  std::string content_type = "text/plain";
  std::string body;
  // If not empty, sent as the Location header (for a redirect status).
  std::string location;
};

// Extra GET pages by exact path ("/status"). A handler runs on one of the
// server's threads, possibly on two at once, and must not block for long.
using AdminHttpHandlers =
    std::map<std::string, std::function<AdminHttpResponse()>>;

class AdminHttpServer {
 public:
  // Binds host:port (port 0: a free one) and serves on a thread of its own.
  // `serving` is asked on every /healthz. `extra` adds pages; /metrics and
  // /healthz cannot be replaced.
  static absl::StatusOr<std::unique_ptr<AdminHttpServer>> Start(
      const std::string& host, int port, std::function<bool()> serving,
      const AdminHttpHandlers& extra = {});
  virtual ~AdminHttpServer() = default;  // stops serving
  virtual int port() const = 0;
};

}  // namespace plexus
