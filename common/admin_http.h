// A daemon's plaintext admin HTTP port: GET /metrics (Prometheus text format
// from Metrics()) and GET /healthz (200 "SERVING" or 503 "NOT_SERVING"), for
// scrapers and for kubelet probes, which cannot speak gRPC over TLS.
//
// Thread safety: all methods may be called from any thread.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace plexus {

class AdminHttpServer {
 public:
  // Binds host:port (port 0: a free one) and serves on a thread of its own.
  // `serving` is asked on every /healthz.
  static absl::StatusOr<std::unique_ptr<AdminHttpServer>> Start(
      const std::string& host, int port, std::function<bool()> serving);
  virtual ~AdminHttpServer() = default;  // stops serving
  virtual int port() const = 0;
};

}  // namespace plexus
