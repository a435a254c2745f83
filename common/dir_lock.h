// An exclusive lock on a data folder, so that two daemons never share one
// (FAULTS.md F16). The lock is an flock(2) on <dir>/LOCK: the kernel drops it
// when the holder dies, so a crash never leaves a stale lock behind.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace plexus {

class DirLock {
 public:
  // Creates `dir` (and parents) if missing and locks it. FAILED_PRECONDITION,
  // naming the holder's pid, when another process holds the lock.
  static absl::StatusOr<std::unique_ptr<DirLock>> Acquire(
      const std::string& dir);
  ~DirLock();
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

  const std::string& dir() const { return dir_; }

 private:
  DirLock(std::string dir, int fd) : dir_(std::move(dir)), fd_(fd) {}
  std::string dir_;
  int fd_;
};

}  // namespace plexus
