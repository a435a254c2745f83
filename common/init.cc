#include "common/init.h"

#include <gflags/gflags.h>
#include <glog/logging.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/failpoint.h"
#include "common/memory.h"
#include "plexus/config.h"

DEFINE_string(
    failpoints, "",
    "Failpoints to enable, 'name=action;...' (see common/failpoint.h). "
    "Also read from the PLEXUS_FAILPOINTS environment variable.");

namespace plexus {
namespace {

// Prints the flags defined in Plexus's own sources (not glog's or gflags').
void PrintOwnFlags() {
  std::vector<gflags::CommandLineFlagInfo> flags;
  gflags::GetAllFlags(&flags);
  for (const auto& f : flags) {
    if (!absl::StartsWith(f.filename, PLEXUS_SOURCE_DIR)) continue;
    std::string type = f.type == "string" ? "string" : f.type;
    std::cout << "  --" << f.name << " (" << f.description << ")\n"
              << "      type: " << type << "  default: "
              << (f.type == "string" ? "\"" + f.default_value + "\""
                                     : f.default_value)
              << "\n";
  }
  std::cout
      << "  --flagfile (read flags from a file, one --name=value a line)\n"
      << "  --v (verbose log level, default 0)\n"
      << "  --helpfull (every flag, including the logging library's)\n"
      << "  --version (print the version and exit)\n";
}

}  // namespace

std::string VersionString(absl::string_view binary) {
  return absl::StrCat(binary, " ", PLEXUS_VERSION, " (commit ",
                      PLEXUS_GIT_COMMIT, ", ", PLEXUS_BUILD_TYPE,
                      PLEXUS_HAVE_CUDA ? ", CUDA" : "",
                      PLEXUS_HAVE_NCCL ? ", NCCL" : "", ")");
}

void TuneProcess() {
  TuneAllocatorForMessages();
#ifdef NDEBUG
  // Debian's abseil checks every absl::Mutex acquisition for lock-order
  // cycles (a graph walk per lock; 8% of a 4-byte all-reduce's time in a
  // coll_bench --loop_ops profile). Debug builds and the unit tests keep it;
  // release programs do not pay for it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
}

void InitProcess(int* argc, char*** argv, absl::string_view usage) {
  std::string binary = (*argv)[0];
  if (auto slash = binary.rfind('/'); slash != std::string::npos) {
    binary = binary.substr(slash + 1);
  }
  // Daemons log to stderr by default; --logtostderr=false restores files.
  FLAGS_logtostderr = true;
  gflags::SetUsageMessage(std::string(usage));
  gflags::SetVersionString(VersionString(binary));

  // --help and --version are answered here, with exit status 0 (gflags' own
  // handlers exit 1). --helpfull is left to gflags.
  for (int i = 1; i < *argc; ++i) {
    absl::string_view a = (*argv)[i];
    if (a == "--") break;
    if (a == "--help" || a == "-help" || a == "-h") {
      std::cout << usage << "\n\nFlags:\n";
      PrintOwnFlags();
      std::exit(0);
    }
    if (a == "--version" || a == "-version") {
      std::cout << VersionString(binary) << "\n";
      std::exit(0);
    }
  }
  gflags::ParseCommandLineFlags(argc, argv, /*remove_flags=*/true);
  google::InitGoogleLogging((*argv)[0]);
  google::InstallFailureSignalHandler();
  TuneProcess();

  const char* env_spec = std::getenv("PLEXUS_FAILPOINTS");
  for (const char* spec : {env_spec, FLAGS_failpoints.c_str()}) {
    if (spec == nullptr || *spec == '\0') continue;
    if (absl::Status st = failpoint::Configure(spec); !st.ok()) {
      std::fprintf(stderr, "%s: %s\n", binary.c_str(),
                   std::string(st.message()).c_str());
      std::exit(1);
    }
    LOG(WARNING) << "failpoints enabled: " << spec;
  }
}

}  // namespace plexus
