#include "common/tls.h"

#include <gflags/gflags.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/process.h"
#include "common/status.h"

DEFINE_string(tls_ca_file, "",
              "Client side: PEM CA that servers' certificates must chain to; "
              "empty: plaintext.");
DEFINE_string(tls_client_cert_file, "",
              "Client side: PEM certificate chain to present to servers that "
              "require mutual TLS.");
DEFINE_string(tls_client_key_file, "",
              "Client side: PEM private key of --tls_client_cert_file.");

namespace plexus {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* what) {
  PLEXUS_ASSIGN_OR_RETURN(std::string pem, ReadWholeFile(path, what));
  if (pem.find("-----BEGIN") == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", path, " is not PEM"));
  }
  return pem;
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsOptions& o) {
  if (!o.enabled()) {
    if (!o.client_ca_file.empty()) {
      return absl::InvalidArgumentError(
          "a client CA (mutual TLS) needs a server certificate and key");
    }
    return grpc::InsecureServerCredentials();
  }
  if (o.cert_file.empty() || o.key_file.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs both a certificate and a key file");
  }
  grpc::SslServerCredentialsOptions ssl(
      o.client_ca_file.empty()
          ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
          : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  PLEXUS_ASSIGN_OR_RETURN(pair.cert_chain, ReadPem(o.cert_file, "certificate"));
  PLEXUS_ASSIGN_OR_RETURN(pair.private_key, ReadPem(o.key_file, "private key"));
  ssl.pem_key_cert_pairs.push_back(pair);
  if (!o.client_ca_file.empty()) {
    PLEXUS_ASSIGN_OR_RETURN(ssl.pem_root_certs,
                            ReadPem(o.client_ca_file, "client CA"));
  }
  return grpc::SslServerCredentials(ssl);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
MakeChannelCredentials(const ClientTlsOptions& o) {
  if (!o.enabled()) {
    if (!o.cert_file.empty() || !o.key_file.empty()) {
      return absl::InvalidArgumentError(
          "a client certificate needs the CA of the servers (--tls_ca_file)");
    }
    return grpc::InsecureChannelCredentials();
  }
  if (o.cert_file.empty() != o.key_file.empty()) {
    return absl::InvalidArgumentError(
        "a client certificate needs its key, and a key its certificate");
  }
  grpc::SslCredentialsOptions ssl;
  PLEXUS_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPem(o.ca_file, "CA"));
  if (!o.cert_file.empty()) {
    PLEXUS_ASSIGN_OR_RETURN(ssl.pem_cert_chain,
                            ReadPem(o.cert_file, "certificate"));
    PLEXUS_ASSIGN_OR_RETURN(ssl.pem_private_key,
                            ReadPem(o.key_file, "private key"));
  }
  return grpc::SslCredentials(ssl);
}

ClientTlsOptions ClientTlsOptionsFromFlags() {
  return {FLAGS_tls_ca_file, FLAGS_tls_client_cert_file,
          FLAGS_tls_client_key_file};
}

}  // namespace plexus
