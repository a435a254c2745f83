// plexus-coordinator: the cluster coordinator.
#include <gflags/gflags.h>
#include <glog/logging.h>

#include "common/daemon.h"
#include "common/daemon_flags.h"
#include "common/dir_lock.h"
#include "common/init.h"
#include "coordinator/service/coordinator_service.h"

DEFINE_string(data_dir, "",
              "Folder for the coordinator's state (required; created if "
              "missing).");

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
  plexus::coordinator::CoordinatorService service;
  auto daemon = plexus::Daemon::Start(
      plexus::DaemonOptionsFromFlags("plexus-coordinator"), {&service});
  if (!daemon.ok()) {
    LOG(ERROR) << daemon.status().message();
    return 1;
  }
  LOG(INFO) << "plexus-coordinator: data in " << FLAGS_data_dir << ", epoch "
            << service.epoch();
  absl::Status st = (*daemon)->Run();
  if (!st.ok()) {
    LOG(ERROR) << st;
    return 1;
  }
  return 0;
}
