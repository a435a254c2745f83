// Rendezvous store: the key/value bootstrap through which the members of a
// collective group find each other (worker addresses, counters). Tests use
// MemoryStore (threads of one process) or FileStore (processes on one
// machine); the coordinator will implement the same interface in production.
// PrefixStore namespaces one store by group and epoch.
//
// Keys are non-empty strings of printable characters; values are arbitrary
// bytes. A key is written once per epoch in normal use; Set on an existing key
// replaces its value.
//
// Thread safety: every implementation may be called from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace plexus::collectives {

class Store {
 public:
  virtual ~Store() = default;

  // Sets `key` to `value`, visible to every later Get/Wait.
  virtual absl::Status Set(absl::string_view key, absl::string_view value) = 0;

  // Waits until `key` exists and returns its value. DEADLINE_EXCEEDED (naming
  // the key) once `deadline` passes.
  virtual absl::StatusOr<std::string> Get(absl::string_view key,
                                          absl::Time deadline) = 0;

  // Waits until every key in `keys` exists. DEADLINE_EXCEEDED (naming the
  // missing keys) once `deadline` passes.
  virtual absl::Status Wait(absl::Span<const std::string> keys,
                            absl::Time deadline) = 0;

  // Atomically adds `delta` to the integer counter `key` (absent = 0) and
  // returns the new value. Counters and Set/Get keys share one namespace; a
  // counter reads through Get as its decimal text.
  virtual absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) = 0;
};

// A store for threads of one process.
std::unique_ptr<Store> NewMemoryStore();

// A store for processes on one machine: one file per key under `dir` (which
// must exist), written by atomic rename; waiting polls the folder with
// exponential backoff (1 ms .. 20 ms). Add takes an flock(2) on a lock file.
absl::StatusOr<std::unique_ptr<Store>> NewFileStore(const std::string& dir);

// Prefixes every key with "<prefix>/" before passing it to `base`, which is
// borrowed and must outlive the returned store. Build the prefix with
// GroupEpochPrefix so that groups and re-formations never see each other's
// keys.
std::unique_ptr<Store> NewPrefixStore(Store* base, std::string prefix);

// "group/<group>/epoch/<epoch>".
std::string GroupEpochPrefix(absl::string_view group, int64_t epoch);

}  // namespace plexus::collectives
