// TLS and mutual TLS on a real daemon, with a CA and certificates made by
// OpenSSL at test time.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "common/health_client.h"
#include "common/process.h"
#include "tests/util/certs.h"
#include "tests/util/test_env.h"

namespace plexus {
namespace {

using ::plexus::testing::BinDir;
using ::plexus::testing::MakeTestCertificates;
using ::plexus::testing::TempDir;

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status made = MakeTestCertificates(dir_.path());
    ASSERT_TRUE(made.ok()) << made;
  }

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
