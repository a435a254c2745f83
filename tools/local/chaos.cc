#include "tools/local/chaos.h"

#include <signal.h>

#include <cstdio>
#include <filesystem>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "tools/local/local_cluster.h"

namespace plexus::local {
namespace {

bool Running(pid_t pid) {
  if (kill(pid, 0) != 0) return false;
  // A zombie (killed, not yet reaped by its parent) is not running.
  FILE* f = std::fopen(absl::StrCat("/proc/", pid, "/stat").c_str(), "r");
  if (f == nullptr) return false;
  char buf[512];
  size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  const char* paren = std::strrchr(buf, ')');
  return paren == nullptr || paren[1] == '\0' || paren[2] != 'Z';
}

// Sleeps until `until`, returning false early when the cluster is gone or
// `stop` says so.
bool SleepUntil(absl::Time until, const std::string& state,
                const std::function<bool()>& stop) {
  while (absl::Now() < until) {
    if (stop() || !std::filesystem::exists(state)) return false;
    absl::SleepFor(std::min(absl::Milliseconds(100), until - absl::Now()));
  }
  return !stop() && std::filesystem::exists(state);
}

}  // namespace

absl::Status RunChaos(const ChaosOptions& options,
                      const std::function<bool()>& stop) {
  if (options.every <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("chaos: the kill interval must be > 0");
  }
  const std::string state = StatePath(options.root_dir);
  std::mt19937_64 rng(options.seed);
  int kills = 0;
  while (SleepUntil(absl::Now() + options.every, state, stop)) {
    auto members = ReadState(state);
    if (!members.ok()) {
      if (!std::filesystem::exists(state)) break;  // `local down` ran
      return members.status();
    }
    std::vector<Member> workers;
    for (const Member& m : *members) {
      if (m.role == "worker" && Running(m.pid)) workers.push_back(m);
    }
    if (workers.empty()) continue;
    const Member victim = workers[rng() % workers.size()];
    if (kill(victim.pid, SIGKILL) != 0) continue;  // it just exited
    ++kills;
    const absl::Time killed_at = absl::Now();
    std::printf("chaos: killed worker %d (pid %d), kill #%d\n", victim.index,
                victim.pid, kills);
    std::fflush(stdout);
    // The worker is not our child: wait for it to be gone before its
    // replacement starts, so the two never overlap.
    while (Running(victim.pid)) absl::SleepFor(absl::Milliseconds(5));
    if (stop() || !std::filesystem::exists(state)) break;
    auto pid =
        RestartWorker(options.root_dir, victim.index, options.restart_timeout);
    if (!pid.ok()) {
      if (!std::filesystem::exists(state)) break;  // torn down meanwhile
      return pid.status();
    }
    std::printf(
        "chaos: worker %d back as pid %d, registered with the coordinator "
        "%.1f s after the kill\n",
        victim.index, *pid, absl::ToDoubleSeconds(absl::Now() - killed_at));
    std::fflush(stdout);
  }
  std::printf("chaos: stopped after %d kill(s)\n", kills);
  std::fflush(stdout);
  return absl::OkStatus();
}

}  // namespace plexus::local
