// Private to ps/storage. The exactly-once record: update keys of applied
// pushes, and the newest incarnation seen per worker.
//
// Keys are kept in striped hash sets (one mutex each) with the step they
// belong to, so TrimUpTo(C) can drop those of steps <= C.
//
// Thread safety: every method may be called concurrently.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace plexus::ps {

struct UpdateKey {
  std::string job_id;
  // closure_id when by_closure, else worker_id.
  uint64_t owner = 0;
  bool by_closure = false;
  // 0 when by_closure (a re-run closure may carry another step id).
  uint64_t step_id = 0;
  uint32_t push_seq = 0;
  uint32_t chunk_index = 0;

  friend bool operator==(const UpdateKey&, const UpdateKey&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const UpdateKey& k) {
    return H::combine(std::move(h), k.job_id, k.owner, k.by_closure, k.step_id,
                      k.push_seq, k.chunk_index);
  }
};

class AppliedKeys {
 public:
  AppliedKeys();

  // FAILED_PRECONDITION if `incarnation` is older than the newest seen for
  // `worker`; otherwise records it as the newest if newer. worker 0: no check.
  absl::Status CheckIncarnation(uint64_t worker, uint64_t incarnation);

  // Records `key` (pushed at `step`). Returns false if it was already there.
  bool Insert(const UpdateKey& key, uint64_t step);
  // Removes `key` (a push that failed after Insert).
  void Erase(const UpdateKey& key);
  // Drops keys recorded with step <= `step`.
  void TrimUpTo(uint64_t step);
  int64_t size() const { return size_.load(std::memory_order_relaxed); }

  // Checkpoints: every key with its step, and every worker's newest
  // incarnation (unordered). Consistent only while no Insert/Erase/
  // CheckIncarnation runs (the engine's cut barrier).
  void Export(std::vector<std::pair<UpdateKey, uint64_t>>* keys,
              std::vector<std::pair<uint64_t, uint64_t>>* incarnations) const;
  // Replaces the whole record by `keys` and `incarnations` (restore).
  void Replace(const std::vector<std::pair<UpdateKey, uint64_t>>& keys,
               const std::vector<std::pair<uint64_t, uint64_t>>& incarnations);

 private:
  static constexpr int kStripes = 16;
  struct Stripe {
    absl::Mutex mu;
    absl::flat_hash_map<UpdateKey, uint64_t> keys ABSL_GUARDED_BY(mu);
  };
  Stripe& StripeOf(const UpdateKey& key) const;

  std::unique_ptr<Stripe[]> stripes_;
  std::atomic<int64_t> size_{0};
  mutable absl::Mutex incarnation_mu_;
  absl::flat_hash_map<uint64_t, uint64_t> incarnations_
      ABSL_GUARDED_BY(incarnation_mu_);
};

}  // namespace plexus::ps
