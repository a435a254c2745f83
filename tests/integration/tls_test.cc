// TLS and mutual TLS on a real daemon, with a CA and certificates made by
// OpenSSL at test time.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "common/health_client.h"
#include "common/process.h"
#include "tests/util/test_env.h"

namespace plexus {
namespace {

using ::plexus::testing::BinDir;
using ::plexus::testing::TempDir;

// Makes, under `dir`: ca.pem (+ key), other_ca.pem, server.pem/key for
// 127.0.0.1 signed by ca, client.pem/key signed by ca, rogue.pem/key signed by
// other_ca. EC keys: fast to generate.
void MakeCertificates(const std::string& dir) {
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
  auto p = Subprocess::Start(o);
  ASSERT_TRUE(p.ok()) << p.status();
  auto code = (*p)->Wait(absl::Seconds(60));
  ASSERT_TRUE(code.ok());
  std::ifstream log(o.log_file);
  std::stringstream ss;
  ss << log.rdbuf();
  ASSERT_EQ(*code, 0) << ss.str();
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override { MakeCertificates(dir_.path()); }

  // Starts plexus-coordinator with TLS (and mTLS if `mutual`).
  void Start(bool mutual) {
    SubprocessOptions o;
    o.argv = {BinDir() + "/plexus-coordinator",
              "--data_dir=" + dir_.Sub("data"),
              "--port_file=" + dir_.Sub("port"),
              "--tls_cert_file=" + dir_.Sub("server.pem"),
              "--tls_key_file=" + dir_.Sub("server.key")};
    if (mutual) o.argv.push_back("--tls_client_ca_file=" + dir_.Sub("ca.pem"));
    o.log_file = dir_.Sub("log");
    auto p = Subprocess::Start(o);
    ASSERT_TRUE(p.ok()) << p.status();
    daemon_ = std::move(*p);
    auto port =
        WaitForPortFile(dir_.Sub("port"), absl::Seconds(30), daemon_.get());
    ASSERT_TRUE(port.ok()) << port.status();
    address_ = "127.0.0.1:" + std::to_string(*port);
  }

  ClientTlsOptions Tls(const std::string& ca, const std::string& leaf = "") {
    ClientTlsOptions t;
    t.ca_file = dir_.Sub(ca + ".pem");
    if (!leaf.empty()) {
      t.cert_file = dir_.Sub(leaf + ".pem");
      t.key_file = dir_.Sub(leaf + ".key");
    }
    return t;
  }

  bool Serving(const ClientTlsOptions& tls) {
    auto h = CheckHealth(address_, absl::Seconds(5), tls);
    return h.ok() && *h == Health::kServing;
  }

  TempDir dir_;
  std::unique_ptr<Subprocess> daemon_;
  std::string address_;
};

TEST_F(TlsTest, OnlyClientsThatTrustTheServerGetIn) {
  Start(/*mutual=*/false);
  EXPECT_TRUE(Serving(Tls("ca")));
  // A plaintext client cannot talk to a TLS port...
  auto plain = CheckHealth(address_, absl::Seconds(5));
  EXPECT_FALSE(plain.ok());
  // ...nor one that trusts another CA...
  EXPECT_FALSE(Serving(Tls("other_ca")));
  // ...and the server keeps serving the good ones.
  EXPECT_TRUE(Serving(Tls("ca")));
  EXPECT_TRUE(daemon_->Running());
}

TEST_F(TlsTest, MutualTlsRequiresAClientCertificateFromTheCa) {
  Start(/*mutual=*/true);
  EXPECT_TRUE(Serving(Tls("ca", "client")));
  EXPECT_FALSE(Serving(Tls("ca")));           // no client certificate
  EXPECT_FALSE(Serving(Tls("ca", "rogue")));  // signed by another CA
  EXPECT_TRUE(Serving(Tls("ca", "client")));
  EXPECT_TRUE(daemon_->Running());
}

TEST_F(TlsTest, HalfConfiguredTlsIsRefusedAtStart) {
  SubprocessOptions o;
  o.argv = {BinDir() + "/plexus-coordinator", "--data_dir=" + dir_.Sub("data"),
            "--tls_cert_file=" + dir_.Sub("server.pem")};
  o.log_file = dir_.Sub("half.log");
  auto p = Subprocess::Start(o);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(*(*p)->Wait(absl::Seconds(30)), 1);
  std::ifstream log(o.log_file);
  std::stringstream ss;
  ss << log.rdbuf();
  EXPECT_NE(ss.str().find("both a certificate and a key"), std::string::npos)
      << ss.str();
  EXPECT_EQ(
      MakeChannelCredentials({.ca_file = "", .cert_file = "x"}).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeChannelCredentials({.ca_file = dir_.Sub("missing.pem")})
                .status()
                .code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace plexus
