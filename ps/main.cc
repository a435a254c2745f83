// plexus-ps: one parameter-server shard.
#include <gflags/gflags.h>
#include <glog/logging.h>

#include "absl/strings/str_cat.h"

#include "common/daemon.h"
#include "common/daemon_flags.h"
#include "common/dir_lock.h"
#include "common/init.h"
#include "ps/service/data_plane.h"
#include "ps/service/ps_service.h"

DEFINE_string(data_dir, "",
              "Folder for this shard's checkpoints and cold rows (required; "
              "created if missing; one shard per folder).");
DEFINE_int32(shard, 0, "This shard's index in the cluster (0-based).");
DEFINE_bool(await_restore, true,
            "On a restart (the folder holds a committed or published "
            "checkpoint), serve no pull or push and report NOT_SERVING "
            "until the coordinator's Restore; false: serve the empty state "
            "at once.");
DEFINE_int32(data_port, 0,
             "Port of the direct data plane: Pull/Push/PushPull as plain TCP "
             "frames, without gRPC's per-call cost (PS clients use it unless "
             "PsClientOptions::direct_data_plane is false). 0 (default) picks "
             "a free port, -1 turns it off. Plaintext, so it is off with TLS "
             "(and an explicit port with TLS is refused).");
DEFINE_int32(engine_threads, -1,
             "Threads that help one sparse pull or push of thousands of ids, "
             "or a dense push of 512 K elements or more (each takes a share "
             "of the stripes), on top of the thread serving the call. -1 "
             "(default): one per core but one, at most 7; 0: none.");

int main(int argc, char** argv) {
  plexus::InitProcess(&argc, &argv,
                      "plexus-ps: a Plexus parameter-server shard.\n"
                      "Usage: plexus-ps --data_dir=DIR [--port=N] [--shard=I]");
  if (FLAGS_data_dir.empty()) {
    LOG(ERROR) << "--data_dir is required";
    return 1;
  }
  if (FLAGS_shard < 0) {
    LOG(ERROR) << "--shard must be >= 0, got " << FLAGS_shard;
    return 1;
  }
  if (FLAGS_engine_threads < -1) {
    LOG(ERROR) << "--engine_threads must be >= -1, got "
               << FLAGS_engine_threads;
    return 1;
  }
  auto lock = plexus::DirLock::Acquire(FLAGS_data_dir);
  if (!lock.ok()) {
    LOG(ERROR) << lock.status().message();
    return 1;
  }
  auto engine =
      plexus::ps::CreateEngine({.parallel_threads = FLAGS_engine_threads});
  if (!engine.ok()) {
    LOG(ERROR) << engine.status();
    return 1;
  }
  plexus::DaemonOptions options = plexus::DaemonOptionsFromFlags("plexus-ps");
  plexus::ps::PsService service(FLAGS_shard, std::move(*engine),
                                options.max_message_bytes);
  // The direct data plane listens now and serves once the daemon has
  // blocked its signals (threads inherit the mask).
  std::unique_ptr<plexus::ps::DataPlaneServer> data_plane;
  const bool tls = !options.tls.cert_file.empty();
  if (tls && FLAGS_data_port >= 0) {
    if (!gflags::GetCommandLineFlagInfoOrDie("data_port").is_default) {
      LOG(ERROR) << "--data_port serves plaintext frames; it cannot be used "
                    "with --tls_cert_file";
      return 1;
    }
    LOG(INFO) << "TLS is on: no direct data plane (its frames are plaintext); "
                 "clients use gRPC";
  }
  if (FLAGS_data_port >= 0 && !tls) {
    auto dp = plexus::ps::DataPlaneServer::Listen(
        &service, {.host = options.host,
                   .port = FLAGS_data_port,
                   .max_message_bytes = options.max_message_bytes});
    if (!dp.ok()) {
      LOG(ERROR) << dp.status().message();
      return 1;
    }
    data_plane = std::move(*dp);
    // An empty host: the host clients reach the gRPC port on.
    service.SetDataPlane(absl::StrCat(":", data_plane->port()),
                         data_plane->key());
  }
  options.on_drain = [&service, dp = data_plane.get()] {
    if (dp != nullptr) dp->Drain();
    service.Drain();
  };
  // Checkpoints live in <data_dir>/checkpoints; opening removes staging
  // leftovers and half-built checkpoints of an earlier incarnation.
  absl::Status ck = service.OpenCheckpoints(FLAGS_data_dir + "/checkpoints",
                                            FLAGS_await_restore);
  if (!ck.ok()) {
    LOG(ERROR) << ck;
    return 1;
  }
  auto daemon = plexus::Daemon::Start(options, {&service});
  if (!daemon.ok()) {
    LOG(ERROR) << daemon.status().message();
    return 1;
  }
  if (data_plane != nullptr) data_plane->Serve();
  plexus::Daemon* d = daemon->get();
  service.SetServingCallback([d](bool serving) { d->SetServing(serving); });
  if (service.awaiting_restore()) d->SetServing(false);
  LOG(INFO) << "plexus-ps: shard " << FLAGS_shard << ", data in "
            << FLAGS_data_dir << ", incarnation " << service.incarnation();
  absl::Status st = (*daemon)->Run();
  // gRPC's calls are drained; the direct plane's calls get the same grace.
  if (data_plane != nullptr &&
      !data_plane->WaitForCalls(absl::Now() + options.grace)) {
    LOG(WARNING) << "direct data-plane calls still in flight after the grace "
                    "period; closing their connections";
  }
  if (!st.ok()) {
    LOG(ERROR) << st;
    return 1;
  }
  return 0;
}
