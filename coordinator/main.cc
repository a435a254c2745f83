// plexus-coordinator: the cluster coordinator.
#include <gflags/gflags.h>
#include <glog/logging.h>
#include <pthread.h>
#include <signal.h>

#include "absl/strings/str_split.h"
#include "common/daemon.h"
#include "common/daemon_flags.h"
#include "common/dir_lock.h"
#include "common/init.h"
#include "common/tls.h"
#include "coordinator/membership/cluster_spec.h"
#include "coordinator/service/coordinator_service.h"

DEFINE_string(data_dir, "",
              "Folder for the coordinator's state (required; created if "
              "missing). A coordinator restarted on the same folder continues "
              "the job with a higher epoch.");
DEFINE_string(cluster_spec, "",
              "JSON file with the cluster (a bare {\"chief\": [...], "
              "\"worker\": [...], \"ps\": [...]} object or a whole TF_CONFIG "
              "document). Empty: TF_CONFIG from the environment, or none "
              "(every process registers dynamically).");
DEFINE_int64(heartbeat_interval_ms, 1000,
             "How often processes send a heartbeat, ms.");
DEFINE_int64(suspect_timeout_ms, 5000,
             "Silence after which a process is suspected, ms.");
DEFINE_int64(dead_timeout_ms, 15000,
             "Silence after which a process is declared dead and its work "
             "re-queued, ms.");
DEFINE_int64(disconnect_timeout_ms, 3000,
             "A worker whose heartbeat stream closed without saying goodbye "
             "(its process died) is declared dead if it does not reconnect "
             "within this, ms, instead of after --dead_timeout_ms; 0: off. "
             "Must exceed --heartbeat_interval_ms.");
DEFINE_int32(max_restarts_per_worker, -1,
             "Restarts allowed per worker before its job fails; -1: "
             "unlimited (a job may set its own).");
DEFINE_int64(no_worker_timeout_ms, 60000,
             "Join fails with UNAVAILABLE when no worker able to run a job "
             "was alive for this long, ms (a job may set its own).");

DEFINE_string(ps_shards, "",
              "PS shard addresses (host:port, comma-separated, in shard "
              "order) the coordinator checkpoints, restores and watches "
              "(a restarted shard makes every shard restore the newest "
              "checkpoint). Empty: the cluster spec's ps list.");
DEFINE_uint64(checkpoint_every_steps, 0,
              "Take a global checkpoint every this many completed steps of "
              "the running job; 0: off.");
DEFINE_int64(checkpoint_every_s, 0,
             "Take a global checkpoint every this many seconds while a job "
             "makes progress; 0: off.");
DEFINE_uint32(checkpoint_keep, 3,
              "Published checkpoints kept (older ones deleted on the "
              "coordinator and every shard); 0: keep all.");
DEFINE_int64(checkpoint_timeout_s, 600,
             "How long a checkpoint may wait for its steps and writes.");

namespace {

absl::StatusOr<plexus::coordinator::membership::ClusterSpec>
ClusterFromFlags() {
  namespace m = plexus::coordinator::membership;
  if (!FLAGS_cluster_spec.empty()) {
    absl::StatusOr<m::TfConfig> c = m::ReadClusterSpecFile(FLAGS_cluster_spec);
    if (!c.ok()) return c.status();
    return c->cluster;
  }
  absl::StatusOr<std::optional<m::TfConfig>> env = m::TfConfigFromEnvironment();
  if (!env.ok()) return env.status();
  if (env->has_value()) return (*env)->cluster;
  return m::ClusterSpec{};
}

}  // namespace

int main(int argc, char** argv) {
  plexus::InitProcess(&argc, &argv,
                      "plexus-coordinator: the Plexus cluster coordinator.\n"
                      "Usage: plexus-coordinator --data_dir=DIR [--port=N]");
  if (FLAGS_data_dir.empty()) {
    LOG(ERROR) << "--data_dir is required";
    return 1;
  }
  auto lock = plexus::DirLock::Acquire(FLAGS_data_dir);
  if (!lock.ok()) {
    LOG(ERROR) << lock.status().message();
    return 1;
  }
  // Daemon::Start receives SIGTERM/SIGINT through sigwait, which needs them
  // blocked in every thread; the state store starts RocksDB's threads before
  // it, so block them here first.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  auto cluster = ClusterFromFlags();
  if (!cluster.ok()) {
    LOG(ERROR) << "cluster spec: " << cluster.status().message();
    return 1;
  }
  plexus::coordinator::CoordinatorServiceOptions so;
  so.data_dir = FLAGS_data_dir;
  so.cluster = std::move(*cluster);
  so.heartbeat_interval = absl::Milliseconds(FLAGS_heartbeat_interval_ms);
  so.suspect_timeout = absl::Milliseconds(FLAGS_suspect_timeout_ms);
  so.dead_timeout = absl::Milliseconds(FLAGS_dead_timeout_ms);
  so.disconnect_timeout = absl::Milliseconds(FLAGS_disconnect_timeout_ms);
  so.ps_tls = plexus::ClientTlsOptionsFromFlags();
  so.max_restarts_per_worker = FLAGS_max_restarts_per_worker;
  so.no_worker_timeout = absl::Milliseconds(FLAGS_no_worker_timeout_ms);
  so.ps_shards = absl::StrSplit(FLAGS_ps_shards, ',', absl::SkipEmpty());
  if (FLAGS_checkpoint_every_s < 0 || FLAGS_checkpoint_timeout_s <= 0) {
    LOG(ERROR) << "--checkpoint_every_s must be >= 0 and "
                  "--checkpoint_timeout_s > 0";
    return 1;
  }
  so.checkpoint.every_steps = FLAGS_checkpoint_every_steps;
  so.checkpoint.every = absl::Seconds(FLAGS_checkpoint_every_s);
  so.checkpoint.keep = FLAGS_checkpoint_keep;
  so.checkpoint.timeout = absl::Seconds(FLAGS_checkpoint_timeout_s);
  auto service = plexus::coordinator::CoordinatorService::Create(std::move(so));
  if (!service.ok()) {
    LOG(ERROR) << service.status();
    return 1;
  }
  plexus::DaemonOptions options =
      plexus::DaemonOptionsFromFlags("plexus-coordinator");
  plexus::coordinator::CoordinatorService* svc = service->get();
  options.on_drain = [svc] { svc->Shutdown(); };
  // The status page; "/" sends a browser there.
  options.admin_pages["/status"] = [svc] {
    return plexus::AdminHttpResponse{.content_type = "text/html; charset=utf-8",
                                     .body = svc->StatusPage()};
  };
  options.admin_pages["/"] = [] {
    return plexus::AdminHttpResponse{
        .status = 302, .body = "see /status\n", .location = "/status"};
  };
  auto daemon = plexus::Daemon::Start(options, {svc});
  if (!daemon.ok()) {
    LOG(ERROR) << daemon.status().message();
    return 1;
  }
  svc->Start();
  LOG(INFO) << "plexus-coordinator: data in " << FLAGS_data_dir << ", epoch "
            << svc->epoch();
  absl::Status st = (*daemon)->Run();
  svc->Shutdown();
  if (!st.ok()) {
    LOG(ERROR) << st;
    return 1;
  }
  return 0;
}
