// Process start-up shared by every Plexus binary.
//
// InitProcess parses gflags (so every binary takes --flagfile, --v, ...), sends
// glog to stderr unless told otherwise, installs glog's failure signal handler
// (a stack trace on SIGSEGV/SIGABRT), and applies failpoints from --failpoints
// and the PLEXUS_FAILPOINTS environment variable. It handles these itself and
// exits 0: --help (this binary's own flags), --helpfull (every flag) and
// --version. A bad failpoint spec exits 1 with a message.
#pragma once

#include <string>
#include "absl/strings/string_view.h"

namespace plexus {

// REQUIRES: called once, first thing in main(). `usage` is one or more lines
// that describe the binary; it is printed by --help.
void InitProcess(int* argc, char*** argv, absl::string_view usage);

// The process-wide settings InitProcess makes for speed, for programs that
// parse their own flags (the benchmarks, so they measure what Plexus's
// programs run with): the allocator keeps large message buffers
// (common/memory.h), and release builds turn off Debian abseil's lock-order
// check on every absl::Mutex acquisition.
void TuneProcess();

// "<binary> <version> (commit <hash>, <build type>[, CUDA][, NCCL])".
std::string VersionString(absl::string_view binary);

}  // namespace plexus
