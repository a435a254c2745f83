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

int Main(int argc, char** argv) {
  const std::string dir = Flag(argc, argv, "store", "");
  int rank = -1, size = 0, timeout_ms = 60000;
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
