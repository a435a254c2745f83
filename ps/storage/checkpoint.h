// The shard's side of global checkpoints: consistent cuts of the engine
// written to RocksDB, hard-linked into place with rocksdb::Checkpoint, listed
// with per-file CRC-32C, restored after verification. No gRPC, no protos;
// the calls map one to one onto ps.proto:
//
//   PrepareCheckpoint   -> CheckpointStore::Prepare   (cut + background write)
//   CommitCheckpoint    -> CheckpointStore::Commit    (wait; files + crc32c)
//   FinalizeCheckpoint  -> CheckpointStore::Finalize  (publish/abort, trim,
//                                                      retention)
//   Restore             -> CheckpointStore::Restore   (verify, replace state)
//   ListCheckpoints     -> CheckpointStore::List
//
// and ShardCheckpointInfo <-> plexus.v1.ShardCheckpoint, CheckpointFileInfo
// <-> plexus.v1.CheckpointFile, CheckpointListing <-> ShardCheckpointInfo,
// CheckpointState <-> ShardCheckpointState.
//
// On disk, under the checkpoint root (the service passes
// <data_dir>/checkpoints):
//   .staging/<name>/db     the RocksDB being written (removed when done)
//   <directory>/           the checkpoint: a RocksDB made by
//                          rocksdb::Checkpoint (SST files hard-linked) plus
//     PLEXUS_SHARD_MANIFEST  id, step, base and every file with size and
//                          crc32c; written (fsynced, renamed) last: a
//                          directory without it is a half checkpoint and is
//                          deleted by Open
//     PUBLISHED            marker written by Finalize(published)
//     PLEXUS_VERIFIED      this shard's record of the files it checksummed
//                          and their identity then (a cache: Restore skips
//                          re-reading files unchanged since; not listed)
// The database has one column family per table ("t/<name>") and per dense
// variable ("v/<name>") plus "meta" (configs, step, applied keys,
// incarnations). WAL on; opened with WALRecoveryMode::kPointInTimeRecovery.
//
// Incremental checkpoints: Prepare with base_checkpoint_id = the previous
// checkpoint writes only the rows changed since that cut: the staging
// database starts as a copy of the base (SST files hard-linked, the small
// files copied), the changed rows are put and removed rows deleted, then it
// is checkpointed again; unchanged data stays shared by hard links. If the
// engine cannot cut against that base (it was abandoned, or the engine was
// restored from another one) the checkpoint is complete instead
// (PrepareResult::incremental says which).
//
// Failpoints (common/failpoint.h): "ps.checkpoint.write" (each write batch;
// error(RESOURCE_EXHAUSTED) simulates a full disk),
// "ps.checkpoint.before_link", "ps.checkpoint.after_link_before_manifest",
// "ps.checkpoint.restore.load".
//
// Thread safety: every method may be called from any thread; one checkpoint
// is written at a time (Prepare while one is writing: FAILED_PRECONDITION).
// The engine must outlive the store.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ps/storage/engine.h"

namespace plexus::ps {

struct CheckpointFileInfo {
  // Relative to the checkpoint directory, e.g. "000012.sst".
  std::string path;
  int64_t size_bytes = 0;
  uint32_t crc32c = 0;
  friend bool operator==(const CheckpointFileInfo&,
                         const CheckpointFileInfo&) = default;
};

// This shard's part of a checkpoint (plexus.v1.ShardCheckpoint without the
// shard index and server incarnation, which the service fills in).
struct ShardCheckpointInfo {
  uint64_t checkpoint_id = 0;
  uint64_t step_id = 0;
  // The checkpoint it shares files with; 0: complete.
  uint64_t base_checkpoint_id = 0;
  // Relative to the checkpoint root.
  std::string directory;
  // Sorted by path; PLEXUS_SHARD_MANIFEST and PUBLISHED are not listed.
  std::vector<CheckpointFileInfo> files;
  // Sparse rows plus dense rows held by the checkpoint.
  int64_t num_rows = 0;
  // Sum of the files' sizes, and the part not shared with the base.
  int64_t total_bytes = 0;
  int64_t new_bytes = 0;
};

enum class CheckpointState {
  kStaging,    // being written
  kCommitted,  // written, waiting for Finalize
  kPublished,  // Finalize(published)
  kAborted,    // failed or Finalize(!published); being deleted
};

struct CheckpointListing {
  uint64_t checkpoint_id = 0;
  uint64_t step_id = 0;
  CheckpointState state = CheckpointState::kStaging;
  // Files empty while staging.
  ShardCheckpointInfo info;
};

struct CheckpointStoreOptions {
  // The checkpoint root (created if missing); the service uses
  // <data_dir>/checkpoints. Required.
  std::string root;
  // Threads copying rows out of the engine (the stripes not copied on
  // write after the cut) and partitioning them among the SST files of a
  // bulk write; 0: one per core. A bulk write uses twice as many writer
  // threads: each O_DIRECT write blocks its thread until the disk has the
  // bytes.
  int cut_threads = 0;
  // Bytes per RocksDB write batch. Default 4 MiB.
  int64_t write_batch_bytes = int64_t{4} << 20;
  // Tests only: key complete tables' rows by id alone, as checkpoints
  // written before the row key led with the row's stripe were.
  bool TEST_id_only_row_keys = false;
};

// PrepareCheckpointRequest.
struct PrepareOptions {
  // Never 0; a new id (ALREADY_EXISTS if this store knows it).
  uint64_t checkpoint_id = 0;
  // Step C; FAILED_PRECONDITION if an update of a step > C was applied.
  uint64_t step_id = 0;
  // Checkpoint to write incrementally against; 0: complete.
  uint64_t base_checkpoint_id = 0;
  // Relative to the root. Empty: "<checkpoint_id>" and
  // ".staging/<checkpoint_id>". The staging directory must lie under
  // ".staging/"; neither may be absolute or contain "." / ".." components
  // (INVALID_ARGUMENT: paths outside the root are refused).
  std::string directory;
  std::string staging_directory;
};

struct PrepareResult {
  // How long pushes were held back for the cut.
  absl::Duration cut_pause;
  // Rows (sparse present + removed, dense of changed variables) to write.
  int64_t dirty_rows = 0;
  // False if the checkpoint is complete although a base was asked for.
  bool incremental = false;
};

// Where a checkpoint's write time went (wall clock of the writer thread;
// the phases add up to about CommitResult::write_time).
struct CheckpointWritePhases {
  // Copying the sparse rows nobody changed since the cut out of the engine
  // before writing them (a bulk write in the cut's own key order copies
  // each stripe just before writing it, inside sst_write).
  absl::Duration copy;
  // Sorting rows into key order for the bulk (SST) path where the cut's
  // order is not the keys' (and the tombstones).
  absl::Duration sort;
  // Writing the bulk SST files (parallel threads, wall clock), and the CPU
  // time those threads used (the rest of their time they waited for the
  // disk or for a core).
  absl::Duration sst_write;
  absl::Duration sst_write_cpu;
  // IngestExternalFiles of those files.
  absl::Duration ingest;
  // Write batches (small changes, dense variables, metadata), the memtable
  // flush and hard-linking the database into the checkpoint directory.
  absl::Duration batches_and_link;
  // Checksumming files not checksummed while written, fsyncs, manifest.
  absl::Duration sync;
};

struct CommitResult {
  ShardCheckpointInfo info;
  // Time from the end of the cut to the manifest being fsynced.
  absl::Duration write_time;
  CheckpointWritePhases phases;
};

// RestoreRequest.
struct RestoreOptions {
  // The checkpoint's directory relative to the root (as in the manifest's
  // ShardCheckpoint.directory); empty: the directory this store knows for
  // checkpoint_id.
  std::string directory;
  uint64_t checkpoint_id = 0;
  // The files to verify (from the coordinator's manifest); empty: those of
  // the directory's PLEXUS_SHARD_MANIFEST.
  std::vector<CheckpointFileInfo> files;
  // Skip the crc32c check (sizes are still checked).
  bool skip_checksum_verification = false;
  // False (default): a file this shard checksummed before (when it wrote
  // the checkpoint, or in an earlier restore) and that is unchanged since
  // (same device, inode, size, mtime and ctime; see PLEXUS_VERIFIED in
  // checkpoint.cc) is not read again. True: every file is read and
  // checksummed.
  bool full_verification = false;
  // True (default): sparse rows are faulted in from the checkpoint on first
  // access and loaded in the background, so serving starts after the
  // metadata and dense variables are read, whatever the table size. The
  // checkpoint's database stays open (read-only) until every row is loaded.
  // False: every row is loaded before Restore returns.
  bool lazy = true;
};

struct RestoreResult {
  uint64_t checkpoint_id = 0;
  uint64_t step_id = 0;
  int64_t num_rows = 0;
  // Verification, and reading + installing the state (for a lazy restore:
  // metadata and dense variables only).
  absl::Duration verify_time;
  absl::Duration load_time;
  // Bytes read and checksummed, and files trusted as unchanged since this
  // shard checksummed them (RestoreOptions::full_verification).
  int64_t bytes_verified = 0;
  int64_t files_trusted = 0;
};

class CheckpointStore {
 public:
  // Creates the root if needed, removes staging leftovers (.staging/*) and
  // half checkpoints (directories without PLEXUS_SHARD_MANIFEST, and
  // rocksdb::Checkpoint's *.tmp directories), and learns the checkpoints
  // present. `engine` is borrowed and must outlive the store.
  static absl::StatusOr<std::unique_ptr<CheckpointStore>> Open(
      Engine* engine, const CheckpointStoreOptions& options);

  virtual ~CheckpointStore() = default;

  // Phase 1: takes the engine's cut (pushes pause only for that) and starts
  // writing it in the background. INVALID_ARGUMENT (bad id or path),
  // ALREADY_EXISTS (id or directory taken), FAILED_PRECONDITION (another
  // checkpoint is being written; step > C applied).
  virtual absl::StatusOr<PrepareResult> Prepare(
      const PrepareOptions& options) = 0;

  // Phase 2: waits up to `timeout` for the write (DEADLINE_EXCEEDED after it;
  // the write goes on) and returns the files. The write's error is sticky:
  // RESOURCE_EXHAUSTED (disk full), INTERNAL (other I/O), with the staging
  // and final directories removed and the engine unaffected. NOT_FOUND for
  // an unknown id.
  virtual absl::StatusOr<CommitResult> Commit(uint64_t checkpoint_id,
                                              absl::Duration timeout) = 0;

  // Phase 3. published: marks it PUBLISHED, trims the engine's applied keys
  // to steps > C and, if keep_last > 0, deletes every checkpoint older than
  // the newest keep_last published ones. Not published: waits for its write
  // and deletes its directories. Returns the ids deleted. Idempotent;
  // NOT_FOUND for an id never seen, FAILED_PRECONDITION to publish one that
  // failed.
  virtual absl::StatusOr<std::vector<uint64_t>> Finalize(
      uint64_t checkpoint_id, bool published, uint32_t keep_last) = 0;

  // Verifies every file (size, then crc32c unless this shard checksummed it
  // before and it is unchanged since; DATA_LOSS naming the first bad file,
  // engine unchanged), reads the checkpoint and replaces the engine's
  // state by it (RestoreOptions::lazy: sparse rows fault in on first access
  // and load in the background).
  // NOT_FOUND if there is no such checkpoint; FAILED_PRECONDITION while a
  // checkpoint is being written.
  virtual absl::StatusOr<RestoreResult> Restore(
      const RestoreOptions& options) = 0;

  // Every checkpoint present or in progress, newest (highest id) first.
  virtual std::vector<CheckpointListing> List() const = 0;

  // Test hook: rows (present + deleted) and dense rows the last finished
  // write put into RocksDB.
  virtual int64_t TEST_rows_written() const = 0;
};

}  // namespace plexus::ps
