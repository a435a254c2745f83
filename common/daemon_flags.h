// Flags every daemon takes: --host, --port, --port_file, --admin_port,
// --admin_port_file, --shutdown_grace_s, --max_message_bytes, --tls_cert_file,
// --tls_key_file, --tls_client_ca_file (and --auth_token_file, from
// common/auth.cc). Defined once here
// so that every binary names them the same way.
#pragma once

#include <string>

#include "common/daemon.h"

namespace plexus {

// Daemon options from the flags above, with `name` for logs.
DaemonOptions DaemonOptionsFromFlags(const std::string& name);

}  // namespace plexus
