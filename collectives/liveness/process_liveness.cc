#include "collectives/liveness/process_liveness.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace plexus::collectives {
namespace {

// State letter and start time from /proc/<pid>/stat; false if unreadable.
bool ReadStat(pid_t pid, char* state, uint64_t* start_time) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string stat = ss.str();
  // The command name (field 2) may contain spaces: parse after its ')'.
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return false;
  std::vector<std::string> f =
      absl::StrSplit(stat.substr(close + 2), ' ', absl::SkipEmpty());
  // f[0] is field 3 (state); field 22 (start time) is f[19].
  if (f.size() < 20 || f[0].empty()) return false;
  *state = f[0][0];
  return absl::SimpleAtoi(f[19], start_time);
}

}  // namespace

std::string ProcessId::Serialize() const {
  return absl::StrCat(host, " ", pid, " ", start_time);
}

std::optional<ProcessId> ProcessId::Parse(const std::string& text) {
  std::vector<std::string> f = absl::StrSplit(text, ' ');
  ProcessId id;
  if (f.size() != 3 || !absl::SimpleAtoi(f[1], &id.pid) ||
      !absl::SimpleAtoi(f[2], &id.start_time)) {
    return std::nullopt;
  }
  id.host = f[0];
  return id;
}

std::optional<ProcessId> ProcessIdOf(pid_t pid) {
  ProcessId id;
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  id.host = host;
  id.pid = pid;
  char state;
  if (!ReadStat(pid, &state, &id.start_time)) return std::nullopt;
  return id;
}

ProcessId Self() { return *ProcessIdOf(getpid()); }

bool IsAlive(const ProcessId& id) {
  if (kill(id.pid, 0) != 0 && errno == ESRCH) return false;
  char state = 0;
  uint64_t start = 0;
  if (!ReadStat(id.pid, &state, &start)) return false;
  if (state == 'Z' || state == 'X' || state == 'x') return false;
  return start == id.start_time;
}

}  // namespace plexus::collectives
