// Child processes: the local launcher (`plexus local up`) and the process-level
// tests start daemons with this, so tests exercise what users run.
//
// Thread safety: a Subprocess is used by one thread at a time.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace plexus {

struct SubprocessOptions {
  // Program and arguments; argv[0] is the path to execute. Required.
  std::vector<std::string> argv;
  // Extra environment variables (NAME, value) on top of this process's.
  std::vector<std::pair<std::string, std::string>> env;
  // Where the child's stdout and stderr go (appended). Empty: inherit ours.
  std::string log_file;
  // Kill the child with SIGKILL when the thread that started it exits (a test
  // that dies takes its daemons with it). Off for daemons meant to outlive
  // their launcher.
  bool kill_with_parent = true;
  // Start the child in its own session, so terminal signals (Ctrl-C) do not
  // reach it. Default off.
  bool new_session = false;
};

class Subprocess {
 public:
  // Forks and execs. Fails if the program cannot be executed.
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(
      const SubprocessOptions& options);

  // Kills the child with SIGKILL and reaps it if it is still running.
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }
  // Sends a signal. FAILED_PRECONDITION once the child has been reaped.
  absl::Status Signal(int sig);
  // Waits up to `timeout` for the child to exit. Returns its exit status: the
  // exit code (0..255), or 128 + signal number when a signal killed it (as a
  // shell reports it). DEADLINE_EXCEEDED if it is still running.
  absl::StatusOr<int> Wait(absl::Duration timeout);
  // Whether the child is still running (reaps it if it has exited).
  bool Running();
  // Lets the child run on after this object is destroyed (a daemon that
  // outlives its launcher). Later calls fail with FAILED_PRECONDITION.
  void Detach() { reaped_ = true; }

 private:
  explicit Subprocess(pid_t pid) : pid_(pid) {}
  absl::StatusOr<int> TryReap(bool block);

  pid_t pid_;
  bool reaped_ = false;
  int exit_status_ = 0;
};

// Waits until `path` holds a port number (written atomically by a daemon
// started with --port_file) and returns it. Fails early if `process` (when not
// null) exits first, and with DEADLINE_EXCEEDED after `timeout`.
absl::StatusOr<int> WaitForPortFile(const std::string& path,
                                    absl::Duration timeout,
                                    Subprocess* process);

// The whole of the file at `path`. NOT_FOUND or PERMISSION_DENIED (when it
// cannot be opened) naming `what` and the path, e.g. "cannot read token file
// /etc/plexus/tokens: No such file or directory".
absl::StatusOr<std::string> ReadWholeFile(const std::string& path,
                                          absl::string_view what = "file");

// Writes `contents` to `path` atomically (temporary file, fsync, rename).
absl::Status WriteFileAtomically(const std::string& path,
                                 const std::string& contents);

}  // namespace plexus
