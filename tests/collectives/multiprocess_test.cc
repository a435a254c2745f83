// Real processes on 127.0.0.1 joined by UCX through a file store: the
// correctness matrix per group size 1..8 (blocking progress when processes
// outnumber the 2 cores), and failures: SIGKILL and SIGSTOP of a peer.
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "collectives/rendezvous/store.h"
#include "common/process.h"
#include "glog/logging.h"
#include "gtest/gtest.h"
#include "tests/util/test_env.h"

namespace plexus::collectives {
namespace {

using ::plexus::testing::BinDir;
using ::plexus::testing::ReadFile;
using ::plexus::testing::TempDir;

struct Group {
  TempDir dir;
  std::vector<std::unique_ptr<Subprocess>> procs;
  std::string Log(int r) const {
    return dir.Sub(absl::StrCat("rank", r, ".log"));
  }
};

void StartGroup(Group* g, int n, const std::string& mode, bool blocking,
                int timeout_ms) {
  ASSERT_TRUE(std::filesystem::create_directory(g->dir.Sub("store")));
  for (int r = 0; r < n; ++r) {
    SubprocessOptions o;
    o.argv = {BinDir() + "/coll_rank",
              "--store=" + g->dir.Sub("store"),
              absl::StrCat("--rank=", r),
              absl::StrCat("--size=", n),
              "--mode=" + mode,
              std::string("--progress=") + (blocking ? "blocking" : "busy"),
              absl::StrCat("--timeout_ms=", timeout_ms)};
    o.log_file = g->Log(r);
    auto p = Subprocess::Start(o);
    ASSERT_TRUE(p.ok()) << p.status();
    g->procs.push_back(std::move(*p));
  }
}

class MultiProcessMatrixTest : public ::testing::TestWithParam<int> {};

TEST_P(MultiProcessMatrixTest, EveryOpDtypeReductionAndCount) {
  const int n = GetParam();
  Group g;
  StartGroup(&g, n, "matrix", /*blocking=*/n > 2, 120000);
  for (int r = 0; r < n; ++r) {
    auto code = g.procs[r]->Wait(absl::Seconds(240));
    ASSERT_TRUE(code.ok()) << "rank " << r << ": " << code.status();
    EXPECT_EQ(*code, 0) << "rank " << r << " log:\n" << ReadFile(g.Log(r));
  }
}

INSTANTIATE_TEST_SUITE_P(GroupSizes, MultiProcessMatrixTest,
                         ::testing::Range(1, 9));

struct Result {
  absl::StatusCode code;
  std::string message;
  absl::StatusCode next;
};

// Waits for the survivors' "result/R" keys and parses them.
std::vector<Result> Results(Group* g, const std::vector<int>& ranks,
                            absl::Time deadline) {
  auto store = NewFileStore(g->dir.Sub("store"));
  EXPECT_TRUE(store.ok());
  auto group = NewPrefixStore(store->get(), GroupEpochPrefix("test", 0));
  std::vector<Result> out;
  for (int r : ranks) {
    auto v = group->Get(absl::StrCat("result/", r), deadline);
    EXPECT_TRUE(v.ok()) << "rank " << r << ": " << v.status() << "\nlog:\n"
                        << ReadFile(g->Log(r));
    if (!v.ok()) continue;
    std::vector<std::string> parts = absl::StrSplit(*v, '\n');
    int code = 0, next = 0;
    EXPECT_EQ(parts.size(), 3u);
    EXPECT_TRUE(absl::SimpleAtoi(parts[0], &code));
    EXPECT_TRUE(absl::SimpleAtoi(parts[2], &next));
    out.push_back({static_cast<absl::StatusCode>(code), parts[1],
                   static_cast<absl::StatusCode>(next)});
  }
  EXPECT_TRUE(group->Set("exit", "1").ok());
  return out;
}

void WaitReady(Group* g, int n) {
  auto store = NewFileStore(g->dir.Sub("store"));
  ASSERT_TRUE(store.ok());
  auto group = NewPrefixStore(store->get(), GroupEpochPrefix("test", 0));
  std::vector<std::string> keys;
  for (int r = 0; r < n; ++r) keys.push_back(absl::StrCat("ready/", r));
  ASSERT_TRUE(group->Wait(keys, absl::Now() + absl::Seconds(60)).ok());
}

// A peer killed mid-operation: every survivor fails well within its deadline
// (30 s) with UNAVAILABLE naming the dead rank, then refuses further work.
TEST(MultiProcessFailureTest, KilledPeerIsNamedBySurvivors) {
  const int n = 4, victim = 1;
  Group g;
  StartGroup(&g, n, "loop", /*blocking=*/true, 30000);
  WaitReady(&g, n);
  const absl::Time killed = absl::Now();
  ASSERT_TRUE(g.procs[victim]->Signal(SIGKILL).ok());
  auto results = Results(&g, {0, 2, 3}, killed + absl::Seconds(20));
  EXPECT_LT(absl::Now() - killed, absl::Seconds(20));
  for (const Result& r : results) {
    LOG(INFO) << "survivor: " << r.message;
    EXPECT_EQ(r.code, absl::StatusCode::kUnavailable) << r.message;
    EXPECT_NE(r.message.find(absl::StrCat("peer rank ", victim)),
              std::string::npos)
        << r.message;
    EXPECT_EQ(r.next, absl::StatusCode::kFailedPrecondition);
  }
  for (int r : {0, 2, 3}) {
    auto code = g.procs[r]->Wait(absl::Seconds(10));
    ASSERT_TRUE(code.ok());
    EXPECT_EQ(*code, 0);
  }
}

// A peer that stops responding: the survivors' operation fails with
// DEADLINE_EXCEEDED at its deadline (4 s), then the error is sticky.
TEST(MultiProcessFailureTest, StoppedPeerGivesDeadlineExceeded) {
  const int n = 3, victim = 2;
  Group g;
  StartGroup(&g, n, "loop", /*blocking=*/true, 4000);
  WaitReady(&g, n);
  ASSERT_TRUE(g.procs[victim]->Signal(SIGSTOP).ok());
  auto results = Results(&g, {0, 1}, absl::Now() + absl::Seconds(20));
  for (const Result& r : results) {
    LOG(INFO) << "survivor: " << r.message;
    EXPECT_EQ(r.code, absl::StatusCode::kDeadlineExceeded) << r.message;
    EXPECT_EQ(r.next, absl::StatusCode::kFailedPrecondition);
  }
  ASSERT_TRUE(g.procs[victim]->Signal(SIGKILL).ok());
}

}  // namespace
}  // namespace plexus::collectives
