// The worker's client for the parameter-server shards.
//
// It routes sparse ids and dense row ranges to shards through a versioned
// shard map (common/shard_map.h), de-duplicates ids per request, sends the
// per-shard pieces in parallel, splits pieces that would exceed the shards'
// message limit, retries UNAVAILABLE with jittered exponential backoff until
// the call's deadline, and refreshes the shard map when a shard answers that
// the client's map is stale.
//
// Values travel as fp32 here; tables may store fp16/bf16 (the server
// converts).
//
// Thread safety: every method may be called from many threads at once.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "plexus/v1/ps.pb.h"

namespace plexus::worker {

// Where the shard map comes from: the coordinator in a cluster, or a map the
// client makes itself for a standalone set of shards.
class ShardMapSource {
 public:
  virtual ~ShardMapSource() = default;
  // The newest map. Called at connect and after a stale-map error.
  virtual absl::StatusOr<v1::ShardMap> Fetch() = 0;
};

struct PsClientOptions {
  // Standalone mode: the shards' addresses, shard i at shards[i]. The client
  // then owns the map (version 1), installs it on every shard at Connect
  // and places dense variables itself. Ignored when map_source is set.
  std::vector<std::string> shards;
  // Cluster mode: where maps come from (not owned; must outlive the client).
  ShardMapSource* map_source = nullptr;
  // Deadline of one call, retries included. Default 30 s.
  absl::Duration timeout = absl::Seconds(30);
  // First retry delay; doubles up to max_backoff, each with +-50% jitter.
  absl::Duration initial_backoff = absl::Milliseconds(10);
  absl::Duration max_backoff = absl::Seconds(1);
  // Largest message sent or received, bytes. Default 64 MiB.
  int64_t max_message_bytes = 64 << 20;
  // Pushes and pulls, dense and sparse, are split by rows into pieces of at
  // most this many bytes of rows (at least one row each; a shard's pieces
  // as even as they can be), sent to their shard in parallel, so that the
  // client's and the shard's work and the transfer overlap. Each piece of a
  // push is its own exactly-once key.
  // ps_bench on this project's 2-core machines, one shard, direct plane,
  // runs alternated: pieces of 512 KiB against 1 MiB took a 1 MiB push /
  // pull / push-pull from a median 56 / 58 / 62% of loopback TCP to 98 /
  // 91 / 114% (4 and 64 MiB gained too), a uniform 4,096 x 64 sparse pull
  // from 45 to 57%, a uniform sparse push from 1,090 to 938 us; 256 KiB
  // pieces did worse than 512 KiB (more threads than cores), gRPC the same.
  // The default is a little over 512 KiB so that a shard's half of a
  // 1 MiB sparse call (512 KiB give or take a few rows) stays one piece.
  // <= 0: one message per shard, up to max_message_bytes. Default 640 KiB.
  int64_t chunk_bytes = 640 << 10;
  // A shard's rows of one call also go in at least this many pieces where
  // each piece still holds 128 KiB or more, so that a machine with cores to
  // spare moves a 1 MiB call in parallel pieces smaller than chunk_bytes.
  // ps_bench on a 16-core H200 host, direct plane, two runs each, worst
  // 1 MiB dense row as % of loopback TCP (1 shard; 2 shards) and the uniform
  // 4,096 x 64 sparse pull: min_pieces 1 (chunk_bytes alone): 62-70%;
  // 65-77%; 29-38%. 4: 78-79%; 93-99%; 37-38%. 8: 110-114%; 117-125%;
  // 46-54%.
  // 0 (default): one per 2 CPUs this process may run on, at most 8 (1 on
  // 2-3 CPUs, which leaves chunk_bytes alone); 1: chunk_bytes alone.
  int min_pieces = 0;
  // Pull and Push go over the shards' direct data plane (plain TCP frames,
  // ps.proto "Direct data plane"; plexus-ps --data_port, on by default)
  // where a shard offers one, and over gRPC where it does not (TLS, an older
  // shard, --data_port=-1) or cannot be reached for a few seconds; everything
  // else is gRPC. It saves gRPC's per-call cost (bench/ps/ps_bench
  // --data_plane=grpc,direct). Default true.
  bool direct_data_plane = true;
  // Threads that carry per-shard RPCs. 0: 2 per shard, at least 4.
  int num_threads = 0;
  // TLS to the shards (PEM files): the CA their certificates chain to, and
  // this client's certificate and key where they require mutual TLS. All
  // empty (default): plaintext.
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  // Token sent to shards that require one ("authorization: Bearer ...").
  // Empty (default): --token_file, $PLEXUS_TOKEN_FILE or $PLEXUS_TOKEN, else
  // none (common/auth.h).
  std::string token;
};

// Who sends: copied into every request header.
struct CallerIdentity {
  std::string job_id;
  uint64_t coordinator_epoch = 0;
  uint64_t worker_id = 0;
  uint64_t worker_incarnation = 0;
};

// Per-call context for data-plane requests.
struct StepOptions {
  // Training step (from 1); 0: not part of a step (no sync waits, no
  // exactly-once key beyond worker/push_seq).
  uint64_t step_id = 0;
  // Closure run for this call; 0: none.
  uint64_t closure_id = 0;
  // Ordinal of this push within the closure or step (exactly-once key).
  uint32_t push_seq = 0;
};

// What the shards said about a push, summed over shards and pieces.
struct PushResult {
  int64_t rows_applied = 0;
  int64_t rows_not_admitted = 0;
  int64_t skipped_non_finite = 0;
  int duplicate_pieces = 0;   // pieces acknowledged as duplicates
  int aggregated_pieces = 0;  // SYNC tables: pieces waiting for the step
};

// A handle on an asynchronous call.
class PsFuture {
 public:
  virtual ~PsFuture() = default;
  // Waits until the call ends or `deadline` passes (then DEADLINE_EXCEEDED,
  // and the call goes on).
  virtual absl::Status Wait(absl::Time deadline) = 0;
  // Waits until the call ends.
  virtual absl::Status Wait() = 0;
};

class PsClient {
 public:
  // Connects to the shards named by `options` (checks each with
  // GetShardInfo; in standalone mode installs the map). UNAVAILABLE naming
  // the shard that cannot be reached.
  static absl::StatusOr<std::unique_ptr<PsClient>> Connect(
      const PsClientOptions& options, const CallerIdentity& identity = {});
  virtual ~PsClient() = default;

  // ---- admin ----

  // Creates a sparse table on every shard (idempotent).
  virtual absl::Status CreateTable(const v1::TableConfig& config) = 0;
  // Creates a dense variable, its slices placed across shards. In standalone
  // mode the client places it; `initial` (row-major, all elements of
  // config.spec) or the config's initializer give its value.
  virtual absl::Status CreateVariable(const v1::VariableConfig& config,
                                      absl::Span<const float> initial = {}) = 0;

  // ---- sparse ----

  // Reads rows `ids` of `table` (dim elements each) into `out`
  // (ids.size() * dim floats). Missing rows are created (create_missing).
  // A repeated id is pulled once and copied to its other positions. Rows
  // land in `out` as they arrive, so after an error it may hold some.
  virtual absl::Status PullSparse(const std::string& table,
                                  absl::Span<const uint64_t> ids, int64_t dim,
                                  absl::Span<float> out,
                                  const StepOptions& step = {}) = 0;
  // Pushes gradients `grads` (ids.size() * dim) for rows `ids`; duplicate
  // ids are summed client-side before sending.
  virtual absl::StatusOr<PushResult> PushSparse(
      const std::string& table, absl::Span<const uint64_t> ids, int64_t dim,
      absl::Span<const float> grads, const StepOptions& step = {}) = 0;

  // ---- dense ----

  // Reads the whole variable (row-major) into `out`; as PullSparse, after an
  // error `out` may hold part of it.
  virtual absl::Status PullDense(const std::string& variable,
                                 absl::Span<float> out,
                                 const StepOptions& step = {}) = 0;
  // Pushes a gradient of the whole variable.
  virtual absl::StatusOr<PushResult> PushDense(
      const std::string& variable, absl::Span<const float> grads,
      const StepOptions& step = {}) = 0;
  // Pushes a gradient of the whole variable and reads the values after it,
  // in one round trip per piece (the PushPull call) instead of a push's and
  // a pull's. A duplicate push (the same step key again) is not applied but
  // still reads. `grads` and `out` have the variable's size and must not
  // overlap; after an error `out` may hold part of the values.
  virtual absl::StatusOr<PushResult> PushPullDense(
      const std::string& variable, absl::Span<const float> grads,
      absl::Span<float> out, const StepOptions& step = {}) = 0;

  // Asynchronous forms: `out` / `grads` must stay valid until the future
  // completes.
  virtual std::unique_ptr<PsFuture> PullSparseAsync(
      const std::string& table, absl::Span<const uint64_t> ids, int64_t dim,
      absl::Span<float> out, const StepOptions& step = {}) = 0;
  virtual std::unique_ptr<PsFuture> PushSparseAsync(
      const std::string& table, absl::Span<const uint64_t> ids, int64_t dim,
      absl::Span<const float> grads, const StepOptions& step = {}) = 0;

  // The map in use.
  virtual v1::ShardMap shard_map() const = 0;
  // Per-shard information (memory, rows, counters).
  virtual absl::StatusOr<std::vector<v1::GetShardInfoResponse>> ShardInfo() = 0;
};

}  // namespace plexus::worker
