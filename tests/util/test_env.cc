#include "tests/util/test_env.h"

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <glog/logging.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace plexus::testing {

std::string BinDir() {
  const char* d = std::getenv("PLEXUS_BIN_DIR");
  CHECK(d != nullptr && *d != '\0')
      << "PLEXUS_BIN_DIR is not set; run the tests through ctest";
  return d;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool WaitFor(const std::function<bool()>& cond, absl::Duration timeout,
             absl::Duration poll) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (cond()) return true;
    absl::SleepFor(poll);
  }
  return cond();
}

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl =
      std::string(base && *base ? base : "/tmp") + "/plexus-test-XXXXXX";
  CHECK(mkdtemp(tmpl.data()) != nullptr) << "mkdtemp " << tmpl;
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

int RunProgram(const std::vector<std::string>& argv,
               const std::string& log_file, absl::Duration timeout,
               std::string* output) {
  std::error_code ec;
  std::filesystem::remove(log_file, ec);
  SubprocessOptions so;
  so.argv = argv;
  so.log_file = log_file;
  absl::StatusOr<std::unique_ptr<Subprocess>> p = Subprocess::Start(so);
  int code = -1;
  if (p.ok()) {
    absl::StatusOr<int> c = (*p)->Wait(timeout);
    code = c.ok() ? *c : -1;
  }
  if (output != nullptr) *output = ReadFile(log_file);
  return code;
}

absl::StatusOr<StartedDaemon> StartDaemon(const TempDir& dir,
                                          const std::string& name,
                                          std::vector<std::string> argv) {
  const std::string port_file = dir.Sub(name + ".port");
  argv.push_back("--data_dir=" + dir.Sub(name + "-data"));
  argv.push_back("--port_file=" + port_file);
  SubprocessOptions so;
  so.argv = std::move(argv);
  so.log_file = dir.Sub(name + ".log");
  StartedDaemon d;
  d.log = so.log_file;
  absl::StatusOr<std::unique_ptr<Subprocess>> p = Subprocess::Start(so);
  if (!p.ok()) return p.status();
  d.process = std::move(*p);
  absl::StatusOr<int> port =
      WaitForPortFile(port_file, absl::Seconds(30), d.process.get());
  if (!port.ok()) {
    return absl::Status(port.status().code(),
                        absl::StrCat(name, ": ", port.status().message(), "\n",
                                     ReadFile(d.log)));
  }
  d.address = absl::StrCat("127.0.0.1:", *port);
  return d;
}

}  // namespace plexus::testing
