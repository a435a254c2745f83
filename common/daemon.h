// The gRPC server shell shared by plexus-ps and plexus-coordinator.
//
// Start() binds the given address (port 0 picks a free port), serves the given
// services plus the standard gRPC health service, logs where it listens and
// writes the port to --port_file (atomically) for launchers. It also serves
// /metrics and /healthz on a plaintext admin HTTP port, and records every RPC
// in the metrics (plexus_rpc_requests_total, plexus_rpc_duration_seconds).
// Run() blocks until SIGTERM or SIGINT (or Shutdown()), then drains: health
// turns NOT_SERVING, new calls are refused with UNAVAILABLE, in-flight calls
// get up to the grace period to finish, and Run() returns OK so main() exits 0.
//
// Thread safety: SetServing() and Shutdown() may be called from any thread;
// Start() and Run() from main().
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/admin_http.h"
#include "common/tls.h"

namespace grpc {
class Service;
}  // namespace grpc

namespace plexus {

struct DaemonOptions {
  // Name used in logs ("plexus-ps"). Required.
  std::string name;
  // Address to bind. Default "127.0.0.1"; "0.0.0.0" for every interface.
  std::string host = "127.0.0.1";
  // Port to bind; 0 picks a free one. Default 0.
  int port = 0;
  // If not empty, the bound port is written here once serving.
  std::string port_file;
  // How long in-flight calls may run after SIGTERM. Default 10 s.
  absl::Duration grace = absl::Seconds(10);
  // Largest message accepted or sent, in bytes. Default 64 MiB.
  int max_message_bytes = 64 << 20;
  // Plaintext admin HTTP port (/metrics, /healthz) on `host`; 0 picks a free
  // one, -1 turns it off. Default 0.
  int admin_port = 0;
  // If not empty, the bound admin port is written here once serving.
  std::string admin_port_file;
  // Extra GET pages on the admin port (plexus-coordinator's /status).
  // Default none.
  AdminHttpHandlers admin_pages;
  // TLS (and mutual TLS) for the gRPC port; default plaintext. The admin HTTP
  // port is always plaintext (metrics and probes only).
  ServerTlsOptions tls;
  // File of "role token" lines that every gRPC call must present one of
  // (common/auth.h). Empty: $PLEXUS_AUTH_TOKEN_FILE, else no tokens.
  std::string auth_token_file;
  // Called when a drain starts, after health turns NOT_SERVING and new calls
  // are refused: wake calls that wait (e.g. consistency waits) so they end.
  std::function<void()> on_drain;
};

class Daemon {
 public:
  // REQUIRES: called before any other thread is started, because it blocks
  // SIGTERM and SIGINT for the whole process (they are received by Run()).
  // `services` are borrowed and must outlive the Daemon.
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(
      const DaemonOptions& options,
      const std::vector<grpc::Service*>& services);
  virtual ~Daemon() = default;

  // The port the server listens on.
  virtual int port() const = 0;
  // "host:port" the server listens on.
  virtual std::string address() const = 0;
  // The admin HTTP port; 0 when it is off.
  virtual int admin_port() const = 0;
  // Sets the overall health status.
  virtual void SetServing(bool serving) = 0;
  // Blocks until a termination signal or Shutdown(), then drains (see above).
  virtual absl::Status Run() = 0;
  // Makes Run() drain and return.
  virtual void Shutdown() = 0;
};

}  // namespace plexus
