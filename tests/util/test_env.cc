#include "tests/util/test_env.h"

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <glog/logging.h>

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

}  // namespace plexus::testing
