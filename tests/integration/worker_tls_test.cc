// The worker runtime reaches a coordinator that requires mutual TLS
// (golden_worker with --tls_ca_file / --tls_client_cert_file /
// --tls_client_key_file): it registers, heartbeats, and leaves with 143 on
// SIGTERM. Certificates are made with OpenSSL (EC keys: fast).
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "common/process.h"
#include "tests/util/certs.h"
#include "tests/util/test_env.h"

namespace plexus {
namespace {

using ::plexus::testing::BinDir;
using ::plexus::testing::MakeTestCertificates;
using ::plexus::testing::ReadFile;
using ::plexus::testing::TempDir;

TEST(WorkerTlsTest, RegistersWithMutualTlsAndLeaves) {
  TempDir dir;
  absl::Status made_certs = MakeTestCertificates(dir.path());
  ASSERT_TRUE(made_certs.ok()) << made_certs;

  SubprocessOptions co;
  co.argv = {BinDir() + "/plexus-coordinator",
             "--data_dir=" + dir.Sub("data"),
             "--port_file=" + dir.Sub("port"),
             "--admin_port=-1",
             "--heartbeat_interval_ms=100",
             "--tls_cert_file=" + dir.Sub("server.pem"),
             "--tls_key_file=" + dir.Sub("server.key"),
             "--tls_client_ca_file=" + dir.Sub("ca.pem")};
  co.log_file = dir.Sub("coordinator.log");
  auto coordinator = Subprocess::Start(co);
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();
  absl::StatusOr<int> port =
      WaitForPortFile(dir.Sub("port"), absl::Seconds(30), coordinator->get());
  ASSERT_TRUE(port.ok()) << port.status() << ReadFile(co.log_file);

  SubprocessOptions wo;
  wo.argv = {BinDir() + "/golden_worker",
             "--coordinator=127.0.0.1:" + std::to_string(*port),
             "--ps=127.0.0.1:1",  // never used: no job
             "--tls_ca_file=" + dir.Sub("ca.pem"),
             "--tls_client_cert_file=" + dir.Sub("client.pem"),
             "--tls_client_key_file=" + dir.Sub("client.key")};
  wo.log_file = dir.Sub("worker.log");
  auto worker = Subprocess::Start(wo);
  ASSERT_TRUE(worker.ok()) << worker.status();
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (!absl::StrContains(ReadFile(wo.log_file), "registered as worker id") &&
         absl::Now() < deadline && (*worker)->Running()) {
    absl::SleepFor(absl::Milliseconds(20));  // polling interval
  }
  ASSERT_TRUE(
      absl::StrContains(ReadFile(wo.log_file), "registered as worker id"))
      << ReadFile(wo.log_file);
  ASSERT_TRUE((*worker)->Signal(SIGTERM).ok());
  absl::StatusOr<int> code = (*worker)->Wait(absl::Seconds(20));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 143) << ReadFile(wo.log_file);
}

}  // namespace
}  // namespace plexus
