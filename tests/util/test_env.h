// Helpers shared by tests: where the built binaries are, temporary folders
// that clean up after themselves, reading files and polling for conditions.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/process.h"

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

// Runs `argv` to completion, its stdout and stderr into `log_file` (replaced),
// for at most `timeout` (then it is killed). Returns its exit status, or -1
// if it could not start or ran past the timeout; its output in *output when
// not null.
int RunProgram(const std::vector<std::string>& argv,
               const std::string& log_file, absl::Duration timeout,
               std::string* output = nullptr);

// A daemon (plexus-ps, plexus-coordinator) started by StartDaemon.
struct StartedDaemon {
  std::unique_ptr<Subprocess> process;
  std::string address;  // "127.0.0.1:port"
  std::string log;      // its stdout and stderr
};

// Runs `argv` plus --data_dir=<dir>/<name>-data and --port_file (port 0 is
// the daemons' default), logging to <dir>/<name>.log, and waits up to 30 s
// for the port. The error carries the log.
absl::StatusOr<StartedDaemon> StartDaemon(const TempDir& dir,
                                          const std::string& name,
                                          std::vector<std::string> argv);

}  // namespace plexus::testing
