// The coordinator's status page (GET /status on the admin HTTP port): one
// self-contained HTML document (inline CSS, no scripts) that reloads itself
// every `refresh_s` seconds, showing the processes and their health, the
// jobs' progress and throughput, recent events (joins, deaths, returns,
// checkpoints, restores) and the published checkpoints.
//
// RenderStatusPage is a pure function of its input: the service fills a
// StatusPageData from what it knows (membership, health, scheduler,
// checkpointer, its event ring) and this turns it into text. Every string
// that comes from outside (addresses, job ids, error messages, event text)
// is HTML-escaped.
//
// Thread safety: the functions keep no state; call them from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace plexus::coordinator {

// One process as ListProcesses shows it.
struct StatusProcess {
  uint64_t worker_id = 0;
  uint64_t incarnation = 0;
  std::string role;  // "worker", "ps", "chief"
  int task_index = 0;
  std::string address;
  std::string hostname;
  int64_t pid = 0;
  // "IDLE", "BUSY", "SUSPECTED", "DEAD", "LEFT".
  std::string state;
  uint32_t restarts = 0;
  // InfinitePast: no heartbeat yet.
  absl::Time last_heartbeat = absl::InfinitePast();
  uint64_t current_step_id = 0;
  uint64_t last_finished_step_id = 0;
};

// One job as GetJobStatus shows it.
struct StatusJob {
  std::string job_id;
  // "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED".
  std::string state;
  uint64_t closures_total = 0;
  uint64_t closures_succeeded = 0;
  uint64_t closures_running = 0;
  uint64_t closures_queued = 0;
  uint64_t closures_failed = 0;
  uint64_t requeues = 0;
  uint64_t completed_through_step_id = 0;
  // Succeeded closures per second since submission (until it finished).
  double closures_per_second = 0;
  uint32_t workers_alive = 0;
  uint64_t last_checkpoint_id = 0;
  uint64_t last_checkpoint_step_id = 0;
  // Why it failed or was cancelled; empty otherwise.
  std::string error;
  absl::Time submitted_at = absl::InfinitePast();
  // InfiniteFuture: not finished.
  absl::Time finished_at = absl::InfiniteFuture();
};

// One published global checkpoint.
struct StatusCheckpoint {
  uint64_t checkpoint_id = 0;
  uint64_t step_id = 0;
  std::string job_id;
  uint64_t base_checkpoint_id = 0;  // 0: full
  int shards = 0;
  absl::Time started_at = absl::InfinitePast();
  absl::Time published_at = absl::InfinitePast();
};

enum class EventSeverity { kInfo, kWarning, kError };

// Something a person cares about, as it was logged.
struct StatusEvent {
  absl::Time time;
  EventSeverity severity = EventSeverity::kInfo;
  // Short class: "joined", "died", "returned", "left", "suspected",
  // "job", "checkpoint", "restore", "recovery".
  std::string kind;
  // The log line's text (ids included).
  std::string text;
};

struct StatusPageData {
  // Shown in the title. Default "plexus-coordinator".
  std::string title = "plexus-coordinator";
  uint64_t epoch = 0;
  absl::Time now;
  // <meta http-equiv="refresh">; 0: none. Default 2 s.
  int refresh_s = 2;
  std::vector<StatusProcess> processes;
  // The PS shards the coordinator checkpoints and watches, in shard order,
  // and whether dispatch is paused while one is restored.
  std::vector<std::string> ps_shards;
  bool ps_recovering = false;
  std::vector<StatusJob> jobs;
  // False: the coordinator has no data_dir or no shards (shown as such).
  bool checkpoints_enabled = false;
  // Newest first.
  std::vector<StatusCheckpoint> checkpoints;
  // Newest first.
  std::vector<StatusEvent> events;
};

// &, <, >, " and ' replaced by character references.
std::string HtmlEscape(absl::string_view s);

// The whole page, "<!DOCTYPE html>" to "</html>".
std::string RenderStatusPage(const StatusPageData& data);

}  // namespace plexus::coordinator
