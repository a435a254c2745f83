// The coordinator's side of global checkpoints and restores (DESIGN.md
// "Checkpoints", FAULTS.md F7, F8, F18). Pure protocol logic: the PS shards
// are driven through ShardDriver and manifests are kept by ManifestStore,
// both implemented by coordinator/service over gRPC and files; dispatch is
// held back through the Scheduler.
//
// Taking checkpoint C (Take):
//   1. pause dispatch, pick C (the highest step dispatched so far, or the
//      requested one), hold back every step > C, resume dispatch;
//   2. wait until every step <= C is done and nothing runs;
//   3. PrepareCheckpoint on every shard (each cuts its values, slots and
//      applied-update record at C), then lift the hold: training paused only
//      for the cut;
//   4. CommitCheckpoint on every shard (written, hard-linked, checksummed);
//   5. ManifestStore::Publish (write, fsync, rename): only now is the
//      checkpoint real;
//   6. FinalizeCheckpoint(published) on every shard (trim, retention).
// Any failure before 5 calls FinalizeCheckpoint(aborted) on every shard and
// publishes nothing, so the previous checkpoint stays the newest, with one
// exception: a shard that does not answer its CommitCheckpoint (UNAVAILABLE:
// it died or is going away) may have committed its part durably before it
// went. The checkpoint is then in doubt: the other shards' parts are
// collected and kept, and once every shard answers again (Poll, or the next
// Take) the missing part is asked for again. A restarted shard still has
// its committed part on disk and hands it over: the checkpoint is published
// (steps 5 and 6) and a lost shard is restored from it. A shard that never
// finished its part (NOT_FOUND) or any other error abandons it everywhere.
// While it is in doubt and a shard restarted, Poll keeps dispatch paused
// and restores nothing (the restarted shard's part may be what makes it
// publishable).
// Like the shards' own vote in two-phase commit, a committed part is
// durable, so asking again is safe; this is what makes a shard lost right
// after committing the *first* checkpoint recoverable.
//
// Restoring (Restore): pause dispatch, Restore every shard from the manifest
// (DATA_LOSS on a shard: with fall_back, the next older manifest is tried on
// every shard), re-queue every step after C of the manifest's job, resume.
//
// Recovery (Poll, called periodically): every shard is probed for its
// incarnation. A shard that does not answer pauses dispatch; when every
// shard answers again and one has a new incarnation (it restarted, or a
// replacement took its address) or says it waits for a restore (a restart
// this coordinator did not see) the cluster is restored to the newest
// manifest (falling back past damaged ones) and dispatch resumes. Before
// that, every shard's committed-but-unpublished checkpoints newer than the
// newest manifest (a checkpoint this coordinator, or an earlier incarnation
// of it, aborted while the shard was away) are abandoned on it
// (FinalizeCheckpoint(aborted)): an unpublished checkpoint never counts. A
// restarted shard that then holds no checkpoint at all stops waiting and
// serves its empty state: with nothing published there is nothing to
// restore, and what it held is lost (logged as an error). Poll also
// takes the periodic checkpoints (every K steps and/or T seconds).
//
// Thread safety: every method may be called from any thread; checkpoints,
// restores and recoveries run one at a time.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "coordinator/scheduling/scheduler.h"

namespace plexus::coordinator::checkpointing {

// plexus.v1.CheckpointFile / ShardCheckpoint / CheckpointManifest as the
// logic sees them (the service converts).
struct ShardFile {
  std::string path;
  int64_t size_bytes = 0;
  uint32_t crc32c = 0;
};

struct ShardPart {
  uint32_t shard_index = 0;
  std::string directory;
  std::vector<ShardFile> files;
  uint64_t server_incarnation = 0;
  int64_t num_rows = 0;
  int64_t total_bytes = 0;
  int64_t new_bytes = 0;
};

struct Manifest {
  uint64_t checkpoint_id = 0;
  uint64_t step_id = 0;
  std::string job_id;
  uint64_t coordinator_epoch = 0;
  uint64_t base_checkpoint_id = 0;
  int64_t started_unix_ms = 0;
  int64_t published_unix_ms = 0;
  // One per shard, by shard index.
  std::vector<ShardPart> shards;
};

struct PrepareArgs {
  uint64_t checkpoint_id = 0;
  uint64_t step_id = 0;
  uint64_t base_checkpoint_id = 0;
};

struct ShardProbe {
  uint64_t incarnation = 0;
  bool awaiting_restore = false;
  // The shard's newest committed or published checkpoint (0: none).
  uint64_t last_checkpoint_id = 0;
};

// One PS shard's checkpoint RPCs. Errors are the shard's (UNAVAILABLE when
// it cannot be reached).
class ShardDriver {
 public:
  virtual ~ShardDriver() = default;
  virtual int num_shards() const = 0;
  // Returns how long the shard paused pushes for its cut.
  virtual absl::StatusOr<absl::Duration> Prepare(int shard,
                                                 const PrepareArgs& args) = 0;
  virtual absl::StatusOr<ShardPart> Commit(int shard, uint64_t checkpoint_id,
                                           absl::Duration timeout) = 0;
  // `job_id`: the checkpoint's job (a published one tells the shard that
  // every step <= C of that job is done).
  virtual absl::Status Finalize(int shard, uint64_t checkpoint_id,
                                bool published, uint32_t keep_last,
                                const std::string& job_id) = 0;
  virtual absl::Status Restore(int shard, const Manifest& manifest) = 0;
  // The shard process's incarnation and whether it waits for a restore (a
  // restarted shard); UNAVAILABLE if it does not answer.
  virtual absl::StatusOr<ShardProbe> Probe(int shard) = 0;
};

// Durable home of published manifests.
class ManifestStore {
 public:
  virtual ~ManifestStore() = default;
  // Reserves a checkpoint id larger than every id handed out before (also
  // across restarts), durably.
  virtual absl::StatusOr<uint64_t> NextId() = 0;
  // Makes the manifest durable and visible at once (write, fsync, rename).
  virtual absl::Status Publish(const Manifest& manifest) = 0;
  // Every published manifest, newest (highest id) first.
  virtual absl::StatusOr<std::vector<Manifest>> List() = 0;
  virtual absl::Status Remove(uint64_t checkpoint_id) = 0;
};

struct CheckpointerOptions {
  // Published checkpoints kept (older ones deleted on the coordinator and
  // every shard); 0: keep all. Default 3.
  uint32_t keep = 3;
  // Periodic checkpoints (Poll): every this many completed steps of the
  // running job, and/or every this long. 0: off.
  uint64_t every_steps = 0;
  absl::Duration every = absl::ZeroDuration();
  // How long a Take waits for the steps <= C and for the shards' writes.
  absl::Duration timeout = absl::Minutes(10);
  // How long Poll's probes and a recovery's waits may take.
  absl::Duration probe_timeout = absl::Seconds(2);
  // Coordinator epoch written into manifests.
  uint64_t coordinator_epoch = 0;
  // Called after the cut and before the manifest is published: must make
  // the coordinator's record of the steps <= C durable. (Publishing lets
  // the shards forget which pushes of those steps they applied; a
  // coordinator that crashed and re-ran one would apply it twice.) Null:
  // nothing to save.
  std::function<absl::Status()> save_state;
};

struct TakeResult {
  Manifest manifest;
  // The slowest shard's cut.
  absl::Duration pause;
};

struct RestoreOutcome {
  Manifest manifest;
  // Checkpoints skipped because they failed verification (DATA_LOSS naming
  // the file).
  std::vector<absl::Status> skipped;
  absl::Duration duration;
};

class Checkpointer {
 public:
  // Borrows everything; all must outlive it.
  Checkpointer(CheckpointerOptions options, ShardDriver* shards,
               ManifestStore* manifests, scheduling::Scheduler* scheduler,
               Clock* clock);

  // Takes a global checkpoint of `job_id` (empty: the oldest running job,
  // else the newest job, or none) at `step_id` (0: the highest step dispatched
  // so far). A step below that is FAILED_PRECONDITION; UNAVAILABLE while a
  // recovery runs; the shards' errors (RESOURCE_EXHAUSTED for a full disk)
  // otherwise, with nothing published.
  absl::StatusOr<TakeResult> Take(const std::string& job_id, uint64_t step_id);

  // Restores every shard to checkpoint `checkpoint_id` (0: the newest) and
  // re-runs the steps after it. NOT_FOUND: no such checkpoint.
  absl::StatusOr<RestoreOutcome> Restore(uint64_t checkpoint_id,
                                         bool fall_back);

  // Published manifests, newest first (`checkpoint_id` 0: all).
  absl::StatusOr<std::vector<Manifest>> List(uint64_t checkpoint_id);

  // Probes the shards, recovers a restarted one, takes periodic
  // checkpoints. Call every few hundred ms from one thread.
  void Poll();

  // True while dispatch is paused for a lost shard.
  bool recovering() const;

  // Shutdown: a checkpoint waiting for its steps gives up (UNAVAILABLE) and
  // no new one starts. Idempotent.
  void Stop();

 private:
  absl::StatusOr<TakeResult> TakeLocked(const std::string& job_id,
                                        uint64_t step_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(op_mu_);
  absl::StatusOr<RestoreOutcome> RestoreLocked(uint64_t checkpoint_id,
                                               bool fall_back)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(op_mu_);
  // Tells every shard in `shards` to drop checkpoint `id`.
  void Abort(uint64_t id, int shards);
  // Steps 5 and 6 of Take: saves the coordinator's state, publishes `*m`
  // (setting its published_unix_ms), finalizes it on every shard and
  // applies retention. Aborts it on every shard if it cannot be published.
  absl::Status PublishLocked(Manifest* m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(op_mu_);
  // Settles the checkpoint in doubt, if any: asks the shards whose part is
  // missing for it again and publishes it when every part is there, or
  // abandons it everywhere. UNAVAILABLE (still in doubt) while a shard
  // does not answer, for a bounded number of tries.
  absl::Status ResolveInDoubtLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(op_mu_);
  // Abandons on every shard the committed checkpoints newer than the newest
  // published one (unpublished ones never count).
  void AbandonUnpublishedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(op_mu_);
  // The job a checkpoint is taken of ("" if none) and its highest
  // dispatched step.
  std::pair<std::string, uint64_t> JobAndHighestStep(
      const std::string& job_id) const;

  const CheckpointerOptions options_;
  ShardDriver* const shards_;
  ManifestStore* const manifests_;
  scheduling::Scheduler* const scheduler_;
  Clock* const clock_;

  // Held for a whole checkpoint, restore or recovery.
  absl::Mutex op_mu_;
  // Incarnation last seen per shard (0: not yet).
  std::vector<uint64_t> incarnations_ ABSL_GUARDED_BY(op_mu_);
  absl::Time last_periodic_ ABSL_GUARDED_BY(op_mu_);
  uint64_t last_periodic_step_ ABSL_GUARDED_BY(op_mu_) = 0;
  // The checkpoint in doubt (see the top of this file): its manifest, with
  // a part per shard where the shard's commit was heard (an empty
  // directory where it was not).
  std::optional<Manifest> in_doubt_ ABSL_GUARDED_BY(op_mu_);
  // Failed tries to settle it (it is abandoned after a bound).
  int in_doubt_tries_ ABSL_GUARDED_BY(op_mu_) = 0;

  mutable absl::Mutex mu_;
  bool recovering_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> stopped_{false};
};

}  // namespace plexus::coordinator::checkpointing
