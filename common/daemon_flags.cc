#include "common/daemon_flags.h"

#include <gflags/gflags.h>

// Defined with the rest of token authentication in common/auth.cc.
DECLARE_string(auth_token_file);

DEFINE_string(host, "127.0.0.1",
              "Address to listen on; 0.0.0.0 for every interface.");
DEFINE_int32(port, 0, "gRPC port; 0 picks a free port (see --port_file).");
DEFINE_string(port_file, "",
              "If set, the bound port is written to this file once serving.");
DEFINE_double(shutdown_grace_s, 10,
              "Seconds in-flight calls may run after SIGTERM before they are "
              "cancelled.");
DEFINE_int32(admin_port, 0,
             "Plaintext admin HTTP port for /metrics and /healthz; 0 picks a "
             "free port, -1 turns it off.");
DEFINE_string(admin_port_file, "",
              "If set, the bound admin port is written to this file.");
DEFINE_string(tls_cert_file, "",
              "PEM certificate chain for the gRPC port; with --tls_key_file "
              "turns TLS on.");
DEFINE_string(tls_key_file, "", "PEM private key of --tls_cert_file.");
DEFINE_string(
    tls_client_ca_file, "",
    "If set, clients must present a certificate signed by this PEM CA "
    "(mutual TLS).");
DEFINE_int32(max_message_bytes, 64 << 20,
             "Largest gRPC message sent or received, in bytes.");

namespace plexus {

DaemonOptions DaemonOptionsFromFlags(const std::string& name) {
  DaemonOptions o;
  o.name = name;
  o.host = FLAGS_host;
  o.port = FLAGS_port;
  o.port_file = FLAGS_port_file;
  o.grace = absl::Seconds(FLAGS_shutdown_grace_s);
  o.max_message_bytes = FLAGS_max_message_bytes;
  o.admin_port = FLAGS_admin_port;
  o.admin_port_file = FLAGS_admin_port_file;
  o.tls = {FLAGS_tls_cert_file, FLAGS_tls_key_file, FLAGS_tls_client_ca_file};
  o.auth_token_file = FLAGS_auth_token_file;
  return o;
}

}  // namespace plexus
