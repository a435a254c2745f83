// Test certificates, made with OpenSSL at test time.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace plexus::testing {

// Makes, under `dir`: ca.pem (+ .key) and other_ca.pem; server.pem/.key for
// 127.0.0.1 and localhost, and client.pem/.key, both signed by ca;
// rogue.pem/.key signed by other_ca. EC keys: fast to generate. The error
// carries OpenSSL's output.
absl::Status MakeTestCertificates(const std::string& dir);

}  // namespace plexus::testing
