// Failure detection for peers on this machine, kept out of the transports
// (CONVENTIONS.md, habit 13): a process is identified by (host, pid, start
// time) so that a recycled pid never passes for the original process, and is
// dead once it has exited (or is a zombie). A stopped (SIGSTOP) process is
// alive: it is slow, not gone, and its peers' deadlines deal with it.
//
// Thread safety: pure functions over /proc; callable from any thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

namespace plexus::collectives {

struct ProcessId {
  std::string host;
  pid_t pid = 0;
  uint64_t start_time = 0;  // /proc/<pid>/stat field 22 (clock ticks)

  // "host pid start_time".
  std::string Serialize() const;
  static std::optional<ProcessId> Parse(const std::string& text);
};

// This process.
ProcessId Self();
// The running process `pid` on this host; nullopt if there is none.
std::optional<ProcessId> ProcessIdOf(pid_t pid);

// Whether `id` (a process on this host) is still running: false once it has
// exited, is a zombie, or its pid now belongs to another process.
bool IsAlive(const ProcessId& id);

}  // namespace plexus::collectives
