// The cluster spec: which processes the job expects, by role and task index,
// and where they serve. Three sources, one result:
//
//   * flags-like lists: ParseClusterSpecLists("c0:2222", "w0:2222,w1:2222",
//     "ps0:2222,ps1:2222") (empty string: none of that role);
//   * a JSON file: ReadClusterSpecFile(path), holding either a bare cluster
//     object {"chief": [...], "worker": [...], "ps": [...]} or a whole
//     TF_CONFIG document;
//   * TF_CONFIG exactly as Kubeflow's TFJob sets it:
//     {"cluster": {"chief": [...], "worker": [...], "ps": [...]},
//      "task": {"type": "worker", "index": 0}, "environment": "cloud"}.
//
// Strictness: every address is "host:port" with a port in 1..65535; role
// names are "chief", "worker", "ps" ("master", TFJob's older name for the
// chief, is read as "chief"; "evaluator" and any other role are rejected);
// at most one chief; the task must name a role present in the cluster and an
// index inside it. Top-level TF_CONFIG keys other than "cluster" and "task"
// ("environment", "rpc_layer", ...) are ignored, as TensorFlow does. Every
// problem is INVALID_ARGUMENT naming the offending field.
//
// Thread safety: plain values and pure functions.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace plexus::coordinator::membership {

// A process's role in the cluster (TF_CONFIG task types).
enum class Role { kChief = 0, kWorker = 1, kPs = 2 };
inline constexpr Role kAllRoles[] = {Role::kChief, Role::kWorker, Role::kPs};

// "chief", "worker", "ps".
absl::string_view RoleName(Role role);
// Inverse of RoleName; also accepts "master" for the chief. INVALID_ARGUMENT
// for anything else.
absl::StatusOr<Role> ParseRole(absl::string_view name);

// (role, index): one entry of the spec.
struct TaskId {
  Role role = Role::kWorker;
  int index = 0;
  friend bool operator==(const TaskId&, const TaskId&) = default;
};

// Checks "host:port". INVALID_ARGUMENT naming `what` otherwise.
absl::Status ValidateAddress(absl::string_view address, absl::string_view what);

// Addresses per role, in task-index order.
struct ClusterSpec {
  std::vector<std::string> chief;
  std::vector<std::string> worker;
  std::vector<std::string> ps;

  const std::vector<std::string>& tasks(Role role) const;
  std::vector<std::string>& mutable_tasks(Role role);
  // Number of processes of every role together.
  size_t size() const { return chief.size() + worker.size() + ps.size(); }
  bool empty() const { return size() == 0; }
  // The address of (role, index), or nullopt when the spec has no such task.
  std::optional<std::string> AddressOf(TaskId task) const;
  friend bool operator==(const ClusterSpec&, const ClusterSpec&) = default;
};

// A parsed TF_CONFIG: the cluster and, when present, this process's task.
struct TfConfig {
  ClusterSpec cluster;
  std::optional<TaskId> task;
};

// From comma-separated address lists (one per role; empty: none). Spaces
// around entries are trimmed; empty entries are INVALID_ARGUMENT.
absl::StatusOr<ClusterSpec> ParseClusterSpecLists(absl::string_view chief,
                                                  absl::string_view worker,
                                                  absl::string_view ps);

// From a TF_CONFIG document. "cluster" is required; "task" is optional.
absl::StatusOr<TfConfig> ParseTfConfig(absl::string_view json);

// From JSON text holding a TF_CONFIG document (it has a "cluster" key) or a
// bare cluster object.
absl::StatusOr<TfConfig> ParseClusterSpecJson(absl::string_view json);

// Reads `path` and parses it with ParseClusterSpecJson. NOT_FOUND if the file
// does not exist; the path is named in every error.
absl::StatusOr<TfConfig> ReadClusterSpecFile(const std::string& path);

// The TF_CONFIG environment variable parsed, or nullopt when it is unset or
// empty.
absl::StatusOr<std::optional<TfConfig>> TfConfigFromEnvironment();

}  // namespace plexus::coordinator::membership
