// F17 end to end: the dense example's workers (mlp_example --mode=worker
// --coordinator) form a collective group through a real plexus-coordinator
// and all-reduce their gradients every step. One rank is SIGKILLed in the
// middle of training (every step is a collective): the survivor must fail
// with an error naming the dead rank within the op deadline (--timeout_s),
// the group must re-form (a new pair joins at a higher group epoch), and the
// re-formed group's training (deterministic, from the same seed) must end
// with the failure-free run's parameters bit for bit (param_hash).
//
// mlp_example keeps no model checkpoint, so the re-formed group trains from
// the start rather than resuming; what re-forms is the group (ranks, epoch,
// rendezvous keys), which is the coordinator's part of F17.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <iostream>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/process.h"
#include "tests/fault/fault_cluster.h"
#include "tests/util/test_env.h"

namespace plexus::fault {
namespace {

using ::plexus::testing::BinDir;
using ::plexus::testing::TempDir;

std::optional<std::string> ParamHash(const std::string& output) {
  for (absl::string_view line : absl::StrSplit(output, '\n')) {
    if (!absl::StartsWith(line, "{\"event\":\"summary\"")) continue;
    const std::string k = "\"param_hash\":\"";
    size_t at = line.find(k);
    if (at == absl::string_view::npos) return std::nullopt;
    at += k.size();
    return std::string(line.substr(at, line.find('"', at) - at));
  }
  return std::nullopt;
}

class F17Test : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access((BinDir() + "/mlp_example").c_str(), X_OK) != 0) {
      GTEST_SKIP() << "no mlp_example built";
    }
    FaultClusterOptions o;
    o.root_dir = dir_.Sub("cluster");
    o.create_golden_variable = false;
    auto c = FaultCluster::Start(o);
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = std::move(*c);
  }

  struct Rank {
    std::unique_ptr<Subprocess> process;
    std::string log;
  };

  // One rank of group `group`: long enough training (150 epochs, a few
  // seconds) to be killed in the middle.
  Rank StartRank(const std::string& group, int timeout_s) {
    Rank r;
    r.log = dir_.Sub(absl::StrCat("rank-", ++runs_, ".log"));
    SubprocessOptions so;
    so.argv = {BinDir() + "/mlp_example",
               "--mode=worker",
               "--world=2",
               "--coordinator=" + cluster_->coordinator().address,
               "--group=" + group,
               "--json",
               "--deterministic",
               "--progress=blocking",
               "--epochs=150",
               "--target_accuracy=2",
               "--eval_every_steps=200",
               absl::StrCat("--timeout_s=", timeout_s)};
    so.log_file = r.log;
    auto p = Subprocess::Start(so);
    EXPECT_TRUE(p.ok()) << p.status();
    if (p.ok()) r.process = std::move(*p);
    return r;
  }

  TempDir dir_;
  std::unique_ptr<FaultCluster> cluster_;
  int runs_ = 0;
};

TEST_F(F17Test, KilledRankIsNamedAndTheGroupReforms) {
  // The failure-free result of this training.
  std::string golden;
  {
    Rank a = StartRank("clean", 20), b = StartRank("clean", 20);
    ASSERT_TRUE(a.process && b.process);
    for (Rank* r : {&a, &b}) {
      absl::StatusOr<int> code = r->process->Wait(absl::Seconds(90));
      ASSERT_TRUE(code.ok()) << code.status() << ReadFile(r->log);
      ASSERT_EQ(*code, 0) << ReadFile(r->log);
    }
    std::optional<std::string> h = ParamHash(ReadFile(a.log) + ReadFile(b.log));
    ASSERT_TRUE(h.has_value()) << ReadFile(a.log) << ReadFile(b.log);
    golden = *h;
  }
  // Kill rank 1 mid-training: rank 0 prints progress, so the one that does
  // not is rank 1.
  constexpr int kTimeoutS = 5;
  Rank a = StartRank("ring", kTimeoutS), b = StartRank("ring", kTimeoutS);
  ASSERT_TRUE(a.process && b.process);
  Rank* rank0 = nullptr;
  ASSERT_TRUE(WaitFor(
      [&] {
        for (Rank* r : {&a, &b}) {
          if (absl::StrContains(ReadFile(r->log), "\"event\":\"progress\"")) {
            rank0 = r;
          }
        }
        return rank0 != nullptr;
      },
      absl::Seconds(60)))
      << ReadFile(a.log) << ReadFile(b.log);
  Rank* rank1 = rank0 == &a ? &b : &a;
  ASSERT_TRUE(rank1->process->Running()) << "training ended too soon";
  const absl::Time kill = absl::Now();
  ASSERT_TRUE(rank1->process->Signal(SIGKILL).ok());
  ASSERT_TRUE(rank1->process->Wait(absl::Seconds(10)).ok());
  absl::StatusOr<int> code = rank0->process->Wait(absl::Seconds(30));
  ASSERT_TRUE(code.ok()) << code.status();
  const absl::Duration took = absl::Now() - kill;
  const std::string out = ReadFile(rank0->log);
  EXPECT_NE(*code, 0) << out;
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    if (absl::StrContains(line, "rank 1")) {
      std::cerr << "survivor failed " << absl::FormatDuration(took)
                << " after the kill: " << line << "\n";
      break;
    }
  }
  EXPECT_TRUE(absl::StrContains(out, "rank 1")) << out;
  // Within the op deadline (plus process exit and scheduling slack).
  EXPECT_LT(took, absl::Seconds(kTimeoutS + 3)) << out;
  // Once the coordinator has declared both dead (their ranks are free; a
  // JoinGroup before that is refused: no free rank), the group re-forms at a
  // higher epoch and trains to the golden result.
  ASSERT_TRUE(WaitFor(
      [&] {
        v1::ListProcessesRequest req;
        req.set_role(v1::ROLE_WORKER);
        v1::ListProcessesResponse resp;
        grpc::ClientContext ctx;
        ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
        return cluster_->coordinator_stub()
                   ->ListProcesses(&ctx, req, &resp)
                   .ok() &&
               resp.processes_size() == 0;
      },
      absl::Seconds(20)));
  Rank c = StartRank("ring", 20), d = StartRank("ring", 20);
  ASSERT_TRUE(c.process && d.process);
  for (Rank* r : {&c, &d}) {
    absl::StatusOr<int> done = r->process->Wait(absl::Seconds(90));
    ASSERT_TRUE(done.ok()) << done.status() << ReadFile(r->log);
    ASSERT_EQ(*done, 0) << ReadFile(r->log);
  }
  const std::string reformed = ReadFile(c.log) + ReadFile(d.log);
  EXPECT_FALSE(absl::StrContains(reformed, "group ring epoch 1 "))
      << "the re-formed group must be a new epoch:\n"
      << reformed;
  EXPECT_EQ(ParamHash(reformed), golden) << reformed;
}

}  // namespace
}  // namespace plexus::fault
