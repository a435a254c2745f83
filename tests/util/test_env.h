// Helpers shared by tests: where the built binaries are, temporary folders
// that clean up after themselves, reading files and polling for conditions.
#pragma once

#include <functional>
#include <string>

#include "absl/time/time.h"

namespace plexus::testing {

// The file's contents (bytes as they are); empty if it cannot be read.
std::string ReadFile(const std::string& path);

// Evaluates `cond` every `poll` until it holds or `timeout` passes; returns
// its last value. For conditions no event announces (a file appearing, a
// process state another process changes), not as a sleep.
bool WaitFor(const std::function<bool()>& cond, absl::Duration timeout,
             absl::Duration poll = absl::Milliseconds(20));

// The folder with plexus-ps, plexus-coordinator and plexus (from the
// PLEXUS_BIN_DIR environment variable that ctest sets).
std::string BinDir();

// A fresh folder under $TMPDIR (or /tmp), removed with its contents when the
// object is destroyed.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  // path() + "/" + name.
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace plexus::testing
