#include "coordinator/membership/membership.h"

#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/clock.h"
#include "coordinator/membership/names.h"

namespace plexus::coordinator::membership {
namespace {

using ::testing::HasSubstr;

RegisterRequest Worker(int index, std::string host = "h") {
  RegisterRequest r;
  r.role = Role::kWorker;
  r.task_index = index;
  r.hostname = std::move(host);
  r.step_functions = {"train"};
  return r;
}

class MembershipTest : public ::testing::Test {
 protected:
  MembershipOptions Options() {
    MembershipOptions o;
    o.coordinator_epoch = 3;
    o.cluster = *ParseClusterSpecLists("c:1", "w0:1,w1:1", "p0:1");
    return o;
  }
  FakeClock clock_;
};

TEST_F(MembershipTest, RegistrationGivesIdsIncarnationsAndEpoch) {
  Membership m(Options(), &clock_);
  absl::StatusOr<Registration> a = m.Register(Worker(0));
  absl::StatusOr<Registration> b = m.Register(Worker(1));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->worker_id, 0u);
  EXPECT_NE(a->worker_id, b->worker_id);
  EXPECT_GT(b->incarnation, a->incarnation);
  EXPECT_EQ(a->coordinator_epoch, 3u);
  EXPECT_EQ(a->replaced_incarnation, 0u);
  EXPECT_TRUE(a->budget_status.ok());
  EXPECT_TRUE(m.IsCurrent(a->worker_id, a->incarnation));
  absl::StatusOr<ProcessRecord> r = m.Get(a->worker_id);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->address, "w0:1");  // taken from the spec
  EXPECT_EQ(r->registered_at, clock_.Now());
}

TEST_F(MembershipTest, ReturningProcessGetsNewIncarnationAndOldIsStale) {
  Membership m(Options(), &clock_);
  Registration first = *m.Register(Worker(1));
  Registration second = *m.Register(Worker(1));
  EXPECT_EQ(second.worker_id, first.worker_id);
  EXPECT_GT(second.incarnation, first.incarnation);
  EXPECT_EQ(second.replaced_incarnation, first.incarnation);
  EXPECT_EQ(second.restarts, 1u);
  absl::Status stale = m.CheckCurrent(first.worker_id, first.incarnation);
  EXPECT_EQ(stale.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(stale.message()), HasSubstr("stale incarnation"));
  EXPECT_EQ(GetReason(stale), ErrorReason::kStaleIncarnation);
  EXPECT_TRUE(m.IsCurrent(second.worker_id, second.incarnation));
  // A late MarkDead for the old incarnation changes nothing.
  EXPECT_FALSE(m.MarkDead(first.worker_id, first.incarnation, "late"));
  EXPECT_TRUE(m.IsCurrent(second.worker_id, second.incarnation));
}

TEST_F(MembershipTest, DeadIncarnationIsFencedUntilItRegistersAgain) {
  Membership m(Options(), &clock_);
  Registration a = *m.Register(Worker(0));
  EXPECT_TRUE(m.MarkDead(a.worker_id, a.incarnation, "no heartbeat for 10s"));
  EXPECT_FALSE(m.MarkDead(a.worker_id, a.incarnation, "again"));
  absl::Status s = m.CheckCurrent(a.worker_id, a.incarnation);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("no heartbeat for 10s"));
  EXPECT_TRUE(m.List().empty());
  EXPECT_EQ(m.List(/*include_dead=*/true).size(), 1u);
  Registration b = *m.Register(Worker(0));
  EXPECT_EQ(b.replaced_incarnation, 0u);  // the dead one was already handled
  EXPECT_EQ(b.restarts, 1u);
  EXPECT_TRUE(m.IsCurrent(b.worker_id, b.incarnation));
}

TEST_F(MembershipTest, LeavingCleanlyIsNotARestart) {
  Membership m(Options(), &clock_);
  Registration a = *m.Register(Worker(0));
  EXPECT_TRUE(m.MarkLeft(a.worker_id, a.incarnation, "done"));
  Registration b = *m.Register(Worker(0));
  EXPECT_EQ(b.restarts, 0u);
}

TEST_F(MembershipTest, UnknownWorkerIsFailedPrecondition) {
  Membership m(Options(), &clock_);
  EXPECT_EQ(m.CheckCurrent(42, 1).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(m.Get(42).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(MembershipTest, RestartBudgetExceededNamesTheWorker) {
  MembershipOptions o = Options();
  o.max_restarts_per_worker = 2;
  Membership m(std::move(o), &clock_);
  ASSERT_TRUE(m.Register(Worker(1, "node-7")).ok());
  EXPECT_TRUE(m.Register(Worker(1, "node-7"))->budget_status.ok());
  EXPECT_TRUE(m.Register(Worker(1, "node-7"))->budget_status.ok());
  absl::StatusOr<Registration> over = m.Register(Worker(1, "node-7"));
  ASSERT_TRUE(over.ok());  // the registration itself succeeds
  EXPECT_EQ(over->budget_status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(GetReason(over->budget_status),
            ErrorReason::kRestartBudgetExceeded);
  EXPECT_THAT(std::string(over->budget_status.message()),
              HasSubstr("worker 1 (id"));
  EXPECT_THAT(std::string(over->budget_status.message()), HasSubstr("node-7"));
  EXPECT_THAT(std::string(over->budget_status.message()),
              HasSubstr("restart budget"));
  // Other workers have their own budget.
  EXPECT_TRUE(m.Register(Worker(0))->budget_status.ok());
  m.SetMaxRestartsPerWorker(-1);
  EXPECT_TRUE(m.Register(Worker(1))->budget_status.ok());
}

TEST_F(MembershipTest, DynamicWorkersUsePreviousWorkerId) {
  Membership m(Options(), &clock_);
  Registration a = *m.Register(Worker(-1));
  Registration b = *m.Register(Worker(-1));
  EXPECT_NE(a.worker_id, b.worker_id);
  EXPECT_EQ(a.task_index, -1);
  RegisterRequest again = Worker(-1);
  again.previous_worker_id = a.worker_id;
  Registration c = *m.Register(again);
  EXPECT_EQ(c.worker_id, a.worker_id);
  EXPECT_EQ(c.replaced_incarnation, a.incarnation);
  // An unknown previous id gets a fresh one.
  again.previous_worker_id = 999;
  EXPECT_NE(m.Register(again)->worker_id, 999u);
}

TEST_F(MembershipTest, ValidatesRequests) {
  Membership m(Options(), &clock_);
  EXPECT_EQ(m.Register(Worker(2)).status().code(),
            absl::StatusCode::kInvalidArgument);  // spec has 2 workers
  EXPECT_EQ(m.Register(Worker(-2)).status().code(),
            absl::StatusCode::kInvalidArgument);
  RegisterRequest ps;
  ps.role = Role::kPs;
  EXPECT_EQ(m.Register(ps).status().code(), absl::StatusCode::kInvalidArgument);
  ps.address = "nonsense";
  EXPECT_EQ(m.Register(ps).status().code(), absl::StatusCode::kInvalidArgument);
  ps.address = "127.0.0.1:4000";
  EXPECT_TRUE(m.Register(ps).ok());
  ps.task_index = 0;  // in the spec: its address wins only when none is sent
  EXPECT_EQ(m.Get(m.Register(ps)->worker_id)->address, "127.0.0.1:4000");
}

TEST_F(MembershipTest, ListsInRoleOrderWithUnclaimedSpecEntries) {
  Membership m(Options(), &clock_);
  RegisterRequest ps;
  ps.role = Role::kPs;
  ps.task_index = 0;
  ASSERT_TRUE(m.Register(ps).ok());
  ASSERT_TRUE(m.Register(Worker(1)).ok());
  std::vector<ProcessRecord> live = m.List();
  ASSERT_EQ(live.size(), 2u);
  EXPECT_EQ(live[0].role, Role::kWorker);
  EXPECT_EQ(live[1].role, Role::kPs);
  std::vector<ProcessRecord> all = m.List(false, /*include_unclaimed=*/true);
  ASSERT_EQ(all.size(), 4u);  // chief 0 and worker 0 unclaimed
  EXPECT_EQ(all[0].role, Role::kChief);
  EXPECT_EQ(all[0].worker_id, 0u);
  EXPECT_EQ(all[1].task_index, 0);
  EXPECT_EQ(all[1].worker_id, 0u);
  EXPECT_EQ(m.LiveWorkersWithFunction("train").size(), 1u);
  EXPECT_TRUE(m.LiveWorkersWithFunction("eval").empty());
}

TEST_F(MembershipTest, RestoreNeedsNewerEpochAndKeepsIdentities) {
  Membership m(Options(), &clock_);
  Registration a = *m.Register(Worker(0));
  MembershipSnapshot snap = m.Snapshot();
  EXPECT_EQ(Membership::Restore(snap, Options(), &clock_).status().code(),
            absl::StatusCode::kInvalidArgument);
  MembershipOptions newer = Options();
  newer.coordinator_epoch = 4;
  absl::StatusOr<std::unique_ptr<Membership>> r =
      Membership::Restore(snap, newer, &clock_);
  ASSERT_TRUE(r.ok()) << r.status();
  // Live processes keep their ids and incarnations across the restart.
  EXPECT_TRUE((*r)->IsCurrent(a.worker_id, a.incarnation));
  Registration b = *(*r)->Register(Worker(0));
  EXPECT_EQ(b.worker_id, a.worker_id);
  EXPECT_GT(b.incarnation, a.incarnation);
  EXPECT_EQ(b.coordinator_epoch, 4u);
  EXPECT_NE((*r)->Register(Worker(-1))->worker_id, a.worker_id);
}

}  // namespace
}  // namespace plexus::coordinator::membership
