// TLS for every gRPC endpoint. Servers: a certificate and key, and for mutual
// TLS a CA that client certificates must chain to (then a client without one
// is refused). Clients: the CA that server certificates must chain to, and for
// mutual TLS their own certificate and key. All PEM files; nothing set means
// plaintext.
//
// Thread safety: pure functions.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace grpc {
class ChannelCredentials;
class ServerCredentials;
}  // namespace grpc

namespace plexus {

struct ServerTlsOptions {
  // Server certificate chain and private key. Both empty: plaintext.
  std::string cert_file;
  std::string key_file;
  // If set, clients must present a certificate signed by this CA (mTLS).
  std::string client_ca_file;
  bool enabled() const { return !cert_file.empty() || !key_file.empty(); }
};

struct ClientTlsOptions {
  // CA that server certificates must chain to. Empty (and no cert): plaintext.
  std::string ca_file;
  // The client's own certificate and key, for servers that require mTLS.
  std::string cert_file;
  std::string key_file;
  bool enabled() const { return !ca_file.empty(); }
};

// INVALID_ARGUMENT for half-set options; NOT_FOUND/PERMISSION_DENIED naming a
// file that cannot be read.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsOptions& options);
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
MakeChannelCredentials(const ClientTlsOptions& options);

// Client TLS options from the --tls_ca_file, --tls_client_cert_file and
// --tls_client_key_file flags (for binaries that talk to daemons).
ClientTlsOptions ClientTlsOptionsFromFlags();

}  // namespace plexus
