#include "coordinator/membership/cluster_spec.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "coordinator/membership/json.h"

namespace plexus::coordinator::membership {

absl::string_view RoleName(Role role) {
  switch (role) {
    case Role::kChief:
      return "chief";
    case Role::kWorker:
      return "worker";
    case Role::kPs:
      return "ps";
  }
  return "?";
}

absl::StatusOr<Role> ParseRole(absl::string_view name) {
  if (name == "chief" || name == "master") return Role::kChief;
  if (name == "worker") return Role::kWorker;
  if (name == "ps") return Role::kPs;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown role \"", name, "\" (expected chief, worker or ps)"));
}

absl::Status ValidateAddress(absl::string_view address,
                             absl::string_view what) {
  size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": \"", address, "\" is not host:port"));
  }
  absl::string_view host = address.substr(0, colon);
  for (char c : host) {
    if (absl::ascii_isspace(static_cast<unsigned char>(c)) || c == '/' ||
        c == ',') {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": \"", address, "\" has a bad character in its host"));
    }
  }
  absl::string_view port_text = address.substr(colon + 1);
  uint32_t port = 0;
  bool digits_only = !port_text.empty() && port_text.size() <= 5;
  for (char c : port_text) digits_only = digits_only && absl::ascii_isdigit(c);
  if (!digits_only || !absl::SimpleAtoi(port_text, &port) || port == 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": \"", address, "\" needs a port in 1..65535"));
  }
  return absl::OkStatus();
}

const std::vector<std::string>& ClusterSpec::tasks(Role role) const {
  switch (role) {
    case Role::kChief:
      return chief;
    case Role::kWorker:
      return worker;
    case Role::kPs:
      return ps;
  }
  return worker;
}

std::vector<std::string>& ClusterSpec::mutable_tasks(Role role) {
  return const_cast<std::vector<std::string>&>(
      static_cast<const ClusterSpec*>(this)->tasks(role));
}

std::optional<std::string> ClusterSpec::AddressOf(TaskId task) const {
  const std::vector<std::string>& list = tasks(task.role);
  if (task.index < 0 || static_cast<size_t>(task.index) >= list.size()) {
    return std::nullopt;
  }
  return list[task.index];
}

namespace {

absl::Status ValidateSpec(const ClusterSpec& spec) {
  if (spec.chief.size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("cluster: at most one chief, got ", spec.chief.size()));
  }
  for (Role role : kAllRoles) {
    const std::vector<std::string>& list = spec.tasks(role);
    for (size_t i = 0; i < list.size(); ++i) {
      PLEXUS_RETURN_IF_ERROR(ValidateAddress(
          list[i], absl::StrCat("cluster.", RoleName(role), "[", i, "]")));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseList(absl::string_view text, Role role,
                       std::vector<std::string>* out) {
  text = absl::StripAsciiWhitespace(text);
  if (text.empty()) return absl::OkStatus();
  for (absl::string_view entry : absl::StrSplit(text, ',')) {
    entry = absl::StripAsciiWhitespace(entry);
    if (entry.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cluster.", RoleName(role), ": empty entry in \"", text, "\""));
    }
    out->emplace_back(entry);
  }
  return absl::OkStatus();
}

// Reads the cluster object {"chief": [...], ...}.
absl::StatusOr<ClusterSpec> ClusterFromJson(const Json& json) {
  if (!json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cluster: expected an object, got ", Json::TypeName(json.type())));
  }
  ClusterSpec spec;
  for (const auto& [name, value] : json.object()) {
    PLEXUS_ASSIGN_OR_RETURN(Role role, ParseRole(name), "cluster");
    std::vector<std::string>& list = spec.mutable_tasks(role);
    if (!list.empty()) {
      return absl::InvalidArgumentError(
          "cluster: both \"chief\" and \"master\" are present");
    }
    if (!value.is_array()) {
      return absl::InvalidArgumentError(
          absl::StrCat("cluster.", name, ": expected an array, got ",
                       Json::TypeName(value.type())));
    }
    for (size_t i = 0; i < value.array().size(); ++i) {
      const Json& entry = value.array()[i];
      if (!entry.is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat("cluster.", name, "[", i, "]: expected a string, got ",
                         Json::TypeName(entry.type())));
      }
      list.push_back(entry.string_value());
    }
  }
  PLEXUS_RETURN_IF_ERROR(ValidateSpec(spec));
  return spec;
}

absl::StatusOr<TaskId> TaskFromJson(const Json& json,
                                    const ClusterSpec& cluster) {
  if (!json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "task: expected an object, got ", Json::TypeName(json.type())));
  }
  const Json* type = json.Find("type");
  if (type == nullptr || !type->is_string()) {
    return absl::InvalidArgumentError("task.type: required string");
  }
  PLEXUS_ASSIGN_OR_RETURN(Role role, ParseRole(type->string_value()),
                          "task.type");
  int index = 0;
  if (const Json* idx = json.Find("index"); idx != nullptr) {
    double d = idx->is_number() ? idx->number_value() : -1;
    if (!idx->is_number() || d < 0 || d != std::floor(d) || d > 1e9) {
      return absl::InvalidArgumentError(
          "task.index: expected a non-negative integer");
    }
    index = static_cast<int>(d);
  }
  for (const auto& [key, unused] : json.object()) {
    if (key != "type" && key != "index") {
      return absl::InvalidArgumentError(
          absl::StrCat("task: unknown field \"", key, "\""));
    }
  }
  TaskId task{role, index};
  if (!cluster.AddressOf(task).has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "task: ", RoleName(role), " ", index, " is not in the cluster (it has ",
        cluster.tasks(role).size(), " ", RoleName(role), " tasks)"));
  }
  return task;
}

absl::StatusOr<TfConfig> TfConfigFromJson(const Json& json) {
  if (!json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "TF_CONFIG: expected an object, got ", Json::TypeName(json.type())));
  }
  const Json* cluster = json.Find("cluster");
  if (cluster == nullptr) {
    return absl::InvalidArgumentError("TF_CONFIG: \"cluster\" is required");
  }
  TfConfig config;
  PLEXUS_ASSIGN_OR_RETURN(config.cluster, ClusterFromJson(*cluster));
  if (const Json* task = json.Find("task");
      task != nullptr && !(task->is_object() && task->object().empty())) {
    PLEXUS_ASSIGN_OR_RETURN(config.task, TaskFromJson(*task, config.cluster));
  }
  return config;
}

}  // namespace

absl::StatusOr<ClusterSpec> ParseClusterSpecLists(absl::string_view chief,
                                                  absl::string_view worker,
                                                  absl::string_view ps) {
  ClusterSpec spec;
  PLEXUS_RETURN_IF_ERROR(ParseList(chief, Role::kChief, &spec.chief));
  PLEXUS_RETURN_IF_ERROR(ParseList(worker, Role::kWorker, &spec.worker));
  PLEXUS_RETURN_IF_ERROR(ParseList(ps, Role::kPs, &spec.ps));
  PLEXUS_RETURN_IF_ERROR(ValidateSpec(spec));
  return spec;
}

absl::StatusOr<TfConfig> ParseTfConfig(absl::string_view json) {
  PLEXUS_ASSIGN_OR_RETURN(Json doc, ParseJson(json), "TF_CONFIG");
  return TfConfigFromJson(doc);
}

absl::StatusOr<TfConfig> ParseClusterSpecJson(absl::string_view json) {
  PLEXUS_ASSIGN_OR_RETURN(Json doc, ParseJson(json));
  if (doc.Find("cluster") != nullptr) return TfConfigFromJson(doc);
  TfConfig config;
  PLEXUS_ASSIGN_OR_RETURN(config.cluster, ClusterFromJson(doc));
  return config;
}

absl::StatusOr<TfConfig> ReadClusterSpecFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::string why = std::strerror(errno);
    if (errno == ENOENT) {
      return absl::NotFoundError(
          absl::StrCat("cluster spec file ", path, ": ", why));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("cluster spec file ", path, ": ", why));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  absl::StatusOr<TfConfig> config = ParseClusterSpecJson(buffer.str());
  if (!config.ok()) {
    return Annotate(config.status(), absl::StrCat("cluster spec file ", path));
  }
  return config;
}

absl::StatusOr<std::optional<TfConfig>> TfConfigFromEnvironment() {
  const char* env = std::getenv("TF_CONFIG");
  if (env == nullptr || absl::StripAsciiWhitespace(env).empty()) {
    return std::optional<TfConfig>();
  }
  PLEXUS_ASSIGN_OR_RETURN(TfConfig config, ParseTfConfig(env));
  return std::optional<TfConfig>(std::move(config));
}

}  // namespace plexus::coordinator::membership
