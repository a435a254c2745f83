// The shard's direct data plane: Pull, Push and PushPull as frames over plain
// TCP (common/data_frame.h; ps.proto "Direct data plane"), served by the same
// PsService handlers as gRPC, without gRPC's per-call cost (bench/ps/ps_bench
// measures both planes side by side: --data_plane=grpc,direct).
//
// Why TCP and not UCX here: a shard must survive any client dying at any
// moment, and Debian's UCX 1.13 offers no peer-failure handling on its
// shared-memory transports and aborts the process when a CMA read hits a dead
// peer (collectives/transport/ucx/ucx_transport.cc); a socket reports a dead
// peer as an error, on one host or across hosts.
//
// Who may call: GetShardInfo hands the address and a random key (per shard
// incarnation) to callers the worker token admits; every request frame must
// carry that key, else UNAUTHENTICATED and the connection closes. Frames are
// plaintext: plexus-ps refuses --data_port together with TLS.
//
// One thread per connection, serving one call at a time: a client opens as
// many connections to a shard as it has calls in flight to it, and keeps them
// for reuse. A call's consistency wait blocks only its own connection.
//
// Thread safety: Drain() may be called from any thread; the rest from the
// owner's.
#pragma once

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace plexus::ps {

class PsService;

struct DataPlaneOptions {
  // Address to bind ("127.0.0.1", "0.0.0.0") and port (0: a free one).
  std::string host = "127.0.0.1";
  int port = 0;
  // Largest request body accepted, bytes (the shard's message limit).
  int64_t max_message_bytes = 64 << 20;
  // Connections beyond this many are closed at once (the client falls back
  // to retrying). Default 1024.
  int max_connections = 1024;
};

class DataPlaneServer {
 public:
  // Binds and listens; no thread runs yet (Serve starts them), so it may be
  // called before the daemon blocks its signals. `service` is borrowed.
  static absl::StatusOr<std::unique_ptr<DataPlaneServer>> Listen(
      PsService* service, const DataPlaneOptions& options);
  // Closes the listener and every connection, then joins their threads:
  // calls being served end (their replies are lost; clients retry, pushes
  // are exactly-once).
  ~DataPlaneServer();

  // Starts accepting connections.
  void Serve();
  // From now on new requests are answered UNAVAILABLE (REASON_NOT_SERVING)
  // and no connection is accepted; calls being served finish.
  void Drain();

  // Waits until no call is being served, or until `deadline`; true when
  // none is. A drain calls it before the server goes (as gRPC's shutdown
  // waits for its calls), so that a call already running is answered.
  bool WaitForCalls(absl::Time deadline);

  int port() const { return port_; }
  // The key requests must carry (16 random bytes).
  const std::string& key() const { return key_; }

 private:
  struct Connection {
    int fd = -1;
    std::thread thread;
    std::atomic<bool> done{false};
  };

  DataPlaneServer(PsService* service, const DataPlaneOptions& options,
                  int listen_fd, int port, std::string key);
  void AcceptLoop();
  void ServeConnection(Connection* c);
  // Joins connections whose threads have ended.
  void Reap() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  PsService* const service_;
  const DataPlaneOptions options_;
  const int listen_fd_;
  const int port_;
  const std::string key_;
  // Wakes the accept loop when stopping.
  const int stop_fd_;
  std::atomic<bool> draining_{false};
  std::thread accept_thread_;

  absl::Mutex calls_mu_;
  int calls_ ABSL_GUARDED_BY(calls_mu_) = 0;

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::list<Connection> connections_ ABSL_GUARDED_BY(mu_);
};

}  // namespace plexus::ps
