// Helpers shared by tests: where the built binaries are, and temporary folders
// that clean up after themselves.
#pragma once

#include <string>

namespace plexus::testing {

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
