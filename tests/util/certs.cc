#include "tests/util/certs.h"

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/process.h"
#include "common/status.h"
#include "tests/util/test_env.h"

namespace plexus::testing {

absl::Status MakeTestCertificates(const std::string& dir) {
  std::string script = R"(set -e
cd ")" + dir + R"("
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$1.key" 2>/dev/null; }
ca() { key "$1"; openssl req -x509 -new -key "$1.key" -out "$1.pem" -days 2 -subj "/CN=$1"; }
leaf() { key "$1"; openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$1"
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial \
    -out "$1.pem" -days 2 -extfile "$1.ext" 2>/dev/null; }
ca ca; ca other_ca
leaf server ca; leaf client ca; leaf rogue other_ca
)";
  SubprocessOptions o;
  o.argv = {"/bin/sh", "-c", script};
  o.log_file = dir + "/openssl.log";
  PLEXUS_ASSIGN_OR_RETURN(auto p, Subprocess::Start(o));
  PLEXUS_ASSIGN_OR_RETURN(int code, p->Wait(absl::Seconds(60)));
  if (code != 0) {
    return absl::InternalError(
        absl::StrCat("openssl exited with ", code, ": ", ReadFile(o.log_file)));
  }
  return absl::OkStatus();
}

}  // namespace plexus::testing
