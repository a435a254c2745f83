// One rank of a multi-process collectives test (see multiprocess_test.cc).
//
//   coll_rank --store=DIR --rank=R --size=N [--progress=busy|blocking]
//             [--mode=matrix|loop] [--timeout_ms=T]
//
// matrix: runs testing::RunMatrix over counts {0, 1, 7, 1000, 1Mi+3}, prints
//   every mismatch, exits 0 when all checks pass.
// loop: all-reduces 1 Mi floats with a per-operation deadline of T ms until an
//   operation fails; after the first success sets store key "ready/R". On
//   failure writes "result/R" = "<code>\n<message>\n<next code>", where the
//   next code is that of one more operation (the sticky error), waits for the
//   store key "exit", and exits 0.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "collectives/rendezvous/store.h"
#include "glog/logging.h"
#include "plexus/collectives/communicator.h"
#include "tests/collectives/coll_matrix.h"

namespace plexus::collectives {
namespace {

std::string Flag(int argc, char** argv, const std::string& name,
                 const std::string& def) {
  const std::string prefix = "--" + name + "=";
  for (int i = 1; i < argc; ++i) {
    if (absl::StartsWith(argv[i], prefix)) return argv[i] + prefix.size();
  }
  return def;
}

constexpr char kUsage[] =
    R"(coll_rank: one rank of a multi-process collectives test
(tests/collectives/multiprocess_test.cc starts several).

usage: coll_rank --store=DIR --rank=R --size=N [flags]
  --store=DIR          file store folder shared by the ranks (required)
  --rank=R             this rank, 0..N-1 (required)
  --size=N             number of ranks (required)
  --progress=busy      busy or blocking
  --mode=matrix        matrix: all-reduce checks over counts {0, 1, 7, 1000,
                       1Mi+3}, exit 0 when all pass; loop: all-reduce 1 Mi
                       floats until one fails, then report it in the store
  --timeout_ms=60000   per-operation deadline
  -h, --help           print this and exit
)";

// Returns -1 to go on, else the exit code: 0 after --help, 2 after an unknown
// flag or a missing or bad value (said on stderr).
int CheckFlags(int argc, char** argv) {
  static const char* const kFlags[] = {"store",    "rank", "size",
                                       "progress", "mode", "timeout_ms"};
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      fputs(kUsage, stdout);
      return 0;
    }
    bool known = false;
    for (const char* f : kFlags) {
      known |= absl::StartsWith(arg, absl::StrCat("--", f, "="));
    }
    if (!known) {
      fprintf(stderr, "coll_rank: unknown flag '%s' (see --help)\n", argv[i]);
      return 2;
    }
  }
  int rank = -1, size = 0, timeout_ms = 0;
  const std::string progress = Flag(argc, argv, "progress", "busy");
  const std::string mode = Flag(argc, argv, "mode", "matrix");
  const char* why = nullptr;
  if (Flag(argc, argv, "store", "").empty()) {
    why = "--store=DIR is required";
  } else if (!absl::SimpleAtoi(Flag(argc, argv, "size", ""), &size) ||
             size < 1) {
    why = "--size=N (N >= 1) is required";
  } else if (!absl::SimpleAtoi(Flag(argc, argv, "rank", ""), &rank) ||
             rank < 0 || rank >= size) {
    why = "--rank=R (0 <= R < size) is required";
  } else if (!absl::SimpleAtoi(Flag(argc, argv, "timeout_ms", "60000"),
                               &timeout_ms) ||
             timeout_ms <= 0) {
    why = "--timeout_ms must be a positive number";
  } else if (progress != "busy" && progress != "blocking") {
    why = "--progress must be busy or blocking";
  } else if (mode != "matrix" && mode != "loop") {
    why = "--mode must be matrix or loop";
  }
  if (why != nullptr) {
    fprintf(stderr, "coll_rank: %s (see --help)\n", why);
    return 2;
  }
  return -1;
}

int Main(int argc, char** argv) {
  if (int rc = CheckFlags(argc, argv); rc >= 0) return rc;
  const std::string dir = Flag(argc, argv, "store", "");
  int rank = -1, size = 0, timeout_ms = 60000;
  // Checked by CheckFlags.
  CHECK(absl::SimpleAtoi(Flag(argc, argv, "rank", ""), &rank));
  CHECK(absl::SimpleAtoi(Flag(argc, argv, "size", ""), &size));
  CHECK(absl::SimpleAtoi(Flag(argc, argv, "timeout_ms", "60000"), &timeout_ms));
  const std::string mode = Flag(argc, argv, "mode", "matrix");
  auto store = NewFileStore(dir);
  CHECK(store.ok()) << store.status();
  auto group = NewPrefixStore(store->get(), GroupEpochPrefix("test", 0));

  CommunicatorOptions options;
  options.progress = Flag(argc, argv, "progress", "busy") == "blocking"
                         ? ProgressMode::kBlocking
                         : ProgressMode::kBusyPoll;
  options.default_timeout = absl::Milliseconds(timeout_ms);
  auto comm = Communicator::Create(group.get(), rank, size, options);
  if (!comm.ok()) {
    fprintf(stderr, "rank %d: create: %s\n", rank,
            comm.status().ToString().c_str());
    return 2;
  }

  if (mode == "matrix") {
    const absl::Time start = absl::Now();
    auto res = testing::RunMatrix(comm->get(), {0, 1, 7, 1000, (1 << 20) + 3});
    for (const auto& f : res.failures) {
      fprintf(stderr, "rank %d: FAIL %s\n", rank, f.c_str());
    }
    absl::Status done = (*comm)->Barrier();
    fprintf(stderr, "rank %d: %d checks, %zu failures, %s, %.1f s\n", rank,
            res.checks, res.failures.size(), done.ToString().c_str(),
            absl::ToDoubleSeconds(absl::Now() - start));
    return res.failures.empty() && done.ok() ? 0 : 1;
  }

  // loop
  std::vector<float> buf(1 << 20, 1.0f);
  bool ready = false;
  while (true) {
    absl::Status s = (*comm)->AllReduce(buf.data(), buf.data(), buf.size(),
                                        DataType::kFloat32, ReduceOp::kMax);
    if (!s.ok()) {
      absl::Status next = (*comm)->Barrier();
      fprintf(stderr, "rank %d: failed: %s; then: %s\n", rank,
              s.ToString().c_str(), next.ToString().c_str());
      CHECK(
          group
              ->Set(absl::StrCat("result/", rank),
                    absl::StrCat(static_cast<int>(s.code()), "\n", s.message(),
                                 "\n", static_cast<int>(next.code())))
              .ok());
      return 0;
    }
    if (!ready) {
      CHECK(group->Set(absl::StrCat("ready/", rank), "1").ok());
      ready = true;
    }
  }
}

}  // namespace
}  // namespace plexus::collectives

int main(int argc, char** argv) {
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  return plexus::collectives::Main(argc, argv);
}
