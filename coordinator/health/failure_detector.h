// The failure detector: decides from heartbeats, and an injected Clock,
// whether each process is alive, suspected or dead, and records its progress
// (the last step it finished). It never sleeps and owns no thread: the
// service calls Poll() (e.g. at NextDeadline(), or every heartbeat interval)
// and acts on the transitions it returns; tests drive it with FakeClock.
//
// Rules, for the current incarnation of each tracked process:
//   * Track() starts it ALIVE with a heartbeat "now";
//   * no heartbeat for suspect_timeout  -> SUSPECTED (work not yet re-queued);
//   * no heartbeat for dead_timeout     -> DEAD (final for that incarnation:
//     the process must register again, and Track() its new incarnation);
//   * a heartbeat while SUSPECTED       -> ALIVE again;
//   * Leave() (its last heartbeat said LEFT) -> LEFT, final;
//   * MarkDead() (an RPC to it failed for good) -> DEAD at once;
//   * Disconnected() (its heartbeat stream closed without LEFT) and no
//     heartbeat for disconnect_timeout after that -> DEAD. A killed process
//     closes its connection at once, so this finds it in about
//     disconnect_timeout instead of dead_timeout; a live one whose
//     connection broke reconnects and heartbeats again within a heartbeat
//     interval, which cancels it. A hung process (SIGSTOP) keeps its
//     connection and is found by the timeouts.
// (Declaring a live process dead is safe for correctness: its pushes are
// fenced by incarnation and its closures' re-runs de-duplicated by the PS;
// it costs a re-run.)
// Heartbeats from an older incarnation, or for a DEAD/LEFT one, are refused
// with FAILED_PRECONDITION (the zombie must register again).
//
// Events: every transition is queued as a HealthEvent and handed out once by
// Poll(), in the order they happened. Track() of a new incarnation for a
// process that was tracked before also emits an event (to ALIVE, with the
// previous incarnation), so "a process came back" is visible in the stream.
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"

namespace plexus::coordinator::health {

struct FailureDetectorOptions {
  // Silence after which a process is SUSPECTED. > 0.
  absl::Duration suspect_timeout = absl::Seconds(5);
  // Silence after which a process is DEAD. >= suspect_timeout.
  absl::Duration dead_timeout = absl::Seconds(15);
  // After Disconnected(), silence after which a process is DEAD; should
  // exceed the heartbeat interval. Zero: Disconnected() is ignored.
  absl::Duration disconnect_timeout = absl::Seconds(3);
};

enum class Liveness { kAlive = 0, kSuspected = 1, kDead = 2, kLeft = 3 };
absl::string_view LivenessName(Liveness liveness);

// What one heartbeat carries besides "I am alive".
struct HeartbeatInfo {
  // Highest step finished; 0: none. Never goes back (smaller values are kept
  // as the old maximum).
  uint64_t last_finished_step_id = 0;
  // Closure running now and its step; 0: none.
  uint64_t current_closure_id = 0;
  uint64_t current_step_id = 0;
  // Closures finished since it registered.
  uint64_t closures_finished = 0;
};

// A transition of one process's incarnation.
struct HealthEvent {
  uint64_t worker_id = 0;
  uint64_t incarnation = 0;
  Liveness from = Liveness::kAlive;
  Liveness to = Liveness::kAlive;
  // For a Track() that replaced an earlier incarnation: that incarnation.
  uint64_t previous_incarnation = 0;
  absl::Time at;
  // Human-readable cause, e.g. "no heartbeat for 15s".
  std::string reason;
};

// What the detector knows about one process.
struct ProcessHealth {
  uint64_t worker_id = 0;
  uint64_t incarnation = 0;
  Liveness liveness = Liveness::kAlive;
  absl::Time last_heartbeat;
  // When last_finished_step_id or closures_finished last moved (or Track()).
  absl::Time last_progress;
  HeartbeatInfo progress;
  uint64_t heartbeats = 0;
  // When its heartbeat stream closed without LEFT and no heartbeat came
  // since; InfinitePast: connected.
  absl::Time disconnected_at = absl::InfinitePast();
};

class FailureDetector {
 public:
  // `clock` is borrowed and must outlive this object.
  // REQUIRES: 0 < suspect_timeout <= dead_timeout.
  FailureDetector(FailureDetectorOptions options, Clock* clock);

  FailureDetector(const FailureDetector&) = delete;
  FailureDetector& operator=(const FailureDetector&) = delete;

  const FailureDetectorOptions& options() const { return options_; }

  // Starts watching `incarnation` of `worker_id` (after Register), replacing
  // any older incarnation. Tracking an incarnation older than the one tracked
  // is ignored.
  void Track(uint64_t worker_id, uint64_t incarnation);

  // Records a heartbeat. FAILED_PRECONDITION for an untracked worker, an
  // incarnation that is not the tracked one, or one that is DEAD or LEFT.
  absl::Status Heartbeat(uint64_t worker_id, uint64_t incarnation,
                         const HeartbeatInfo& info);

  // The process said goodbye: LEFT. Ignored for a stale incarnation.
  void Leave(uint64_t worker_id, uint64_t incarnation);

  // Its heartbeat stream closed without a LEFT: DEAD after
  // disconnect_timeout unless a heartbeat comes first. Ignored for a stale
  // or final incarnation.
  void Disconnected(uint64_t worker_id, uint64_t incarnation);
  // Declares it DEAD now (e.g. its RPCs fail for good). Ignored for a stale
  // or already final incarnation.
  void MarkDead(uint64_t worker_id, uint64_t incarnation,
                absl::string_view reason);

  // Stops watching a process altogether (no event).
  void Forget(uint64_t worker_id);

  // Applies the timeouts at clock->Now() and returns every transition since
  // the last Poll, oldest first.
  std::vector<HealthEvent> Poll();

  // The earliest time at which Poll() could find a timeout;
  // InfiniteFuture when nothing is alive or suspected.
  absl::Time NextDeadline() const;

  // One process; NOT_FOUND if untracked. (Timeouts are applied by Poll, so
  // call it first for an up-to-date liveness.)
  absl::StatusOr<ProcessHealth> Get(uint64_t worker_id) const;
  // Every tracked process, by worker id.
  std::vector<ProcessHealth> List() const;

 private:
  // The tracked entry of `incarnation` of `worker_id` if it is neither
  // stale nor final (DEAD/LEFT); null otherwise.
  ProcessHealth* Live(uint64_t worker_id, uint64_t incarnation)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Emit(ProcessHealth& p, Liveness to, absl::Time at, std::string reason,
            uint64_t previous_incarnation = 0)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const FailureDetectorOptions options_;
  Clock* const clock_;

  mutable absl::Mutex mu_;
  std::map<uint64_t, ProcessHealth> processes_ ABSL_GUARDED_BY(mu_);
  std::deque<HealthEvent> events_ ABSL_GUARDED_BY(mu_);
};

}  // namespace plexus::coordinator::health
