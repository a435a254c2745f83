#include "coordinator/state/codec.h"

#include <string>

#include <gtest/gtest.h>

#include "common/clock.h"

namespace plexus::coordinator::state {
namespace {

using membership::MembershipSnapshot;
using membership::ProcessRecord;
using scheduling::ClosureRecord;
using scheduling::ClosureSpec;
using scheduling::JobRecord;
using scheduling::SchedulerSnapshot;
using scheduling::StepLoop;

MembershipSnapshot SampleMembership() {
  MembershipSnapshot s;
  s.coordinator_epoch = 7;
  s.next_worker_id = 4;
  ProcessRecord a;
  a.worker_id = 1;
  a.incarnation = (uint64_t{7} << 32) | 3;
  a.role = membership::Role::kPs;
  a.task_index = 0;
  a.address = "10.0.0.1:5000";
  a.hostname = "node-1";
  a.pid = 4242;
  a.has_gpu = true;
  a.state = membership::ProcessState::kAlive;
  a.restarts = 2;
  a.registered_at = absl::FromUnixMillis(1700000000123);
  ProcessRecord b;
  b.worker_id = 3;
  b.incarnation = 9;
  b.task_index = -1;
  b.step_functions = {"train", "eval"};
  b.state = membership::ProcessState::kDead;
  b.reason = "no heartbeat for 15s";
  s.processes = {a, b};
  return s;
}

SchedulerSnapshot SampleScheduler() {
  SchedulerSnapshot s;
  s.next_closure_id = 10;
  s.next_job_number = 2;
  JobRecord loop;
  loop.spec.job_id = "loop";
  loop.spec.work = StepLoop{.function_name = "train",
                            .num_steps = 2,
                            .first_step_id = 5,
                            .args = std::string("a\0b", 3),
                            .replicas_per_step = 1};
  loop.spec.no_worker_timeout = absl::Seconds(30);
  loop.spec.max_attempts = 4;
  loop.spec.closure_timeout = absl::Minutes(2);
  loop.state = scheduling::JobState::kRunning;
  loop.requeues = 1;
  loop.max_step_id = 6;
  loop.submitted_at = absl::FromUnixSeconds(1700000000);
  ClosureRecord c1{.closure_id = 1,
                   .function_name = "train",
                   .args = std::string("a\0b", 3),
                   .step_id = 5,
                   .state = scheduling::ClosureState::kSucceeded,
                   .attempts = 2,
                   .failures = 1,
                   .min_valid_attempt = 2,
                   .result = "r"};
  ClosureRecord c2{.closure_id = 2,
                   .function_name = "train",
                   .step_id = 6,
                   .state = scheduling::ClosureState::kRunning,
                   .attempts = 1};
  loop.closures = {c1, c2};
  JobRecord list;
  list.spec.job_id = "list";
  list.spec.work = std::vector<ClosureSpec>{{"f", "x", 0}};
  list.state = scheduling::JobState::kFailed;
  list.error = absl::InvalidArgumentError("shape mismatch");
  list.finished_at = absl::FromUnixSeconds(1700000100);
  list.closures = {ClosureRecord{.closure_id = 3,
                                 .function_name = "f",
                                 .args = "x",
                                 .step_id = 1,
                                 .state = scheduling::ClosureState::kFailed,
                                 .attempts = 1,
                                 .error = absl::InvalidArgumentError("bad")}};
  JobRecord empty;
  empty.spec.job_id = "interactive";
  s.jobs = {loop, list, empty};
  return s;
}

void ExpectSame(const MembershipSnapshot& a, const MembershipSnapshot& b) {
  EXPECT_EQ(a.coordinator_epoch, b.coordinator_epoch);
  EXPECT_EQ(a.next_worker_id, b.next_worker_id);
  ASSERT_EQ(a.processes.size(), b.processes.size());
  for (size_t i = 0; i < a.processes.size(); ++i) {
    const ProcessRecord& x = a.processes[i];
    const ProcessRecord& y = b.processes[i];
    EXPECT_EQ(x.worker_id, y.worker_id);
    EXPECT_EQ(x.incarnation, y.incarnation);
    EXPECT_EQ(x.role, y.role);
    EXPECT_EQ(x.task_index, y.task_index);
    EXPECT_EQ(x.address, y.address);
    EXPECT_EQ(x.hostname, y.hostname);
    EXPECT_EQ(x.pid, y.pid);
    EXPECT_EQ(x.step_functions, y.step_functions);
    EXPECT_EQ(x.has_gpu, y.has_gpu);
    EXPECT_EQ(x.state, y.state);
    EXPECT_EQ(x.restarts, y.restarts);
    EXPECT_EQ(x.registered_at, y.registered_at);
    EXPECT_EQ(x.reason, y.reason);
  }
}

void ExpectSame(const SchedulerSnapshot& a, const SchedulerSnapshot& b) {
  EXPECT_EQ(a.next_closure_id, b.next_closure_id);
  EXPECT_EQ(a.next_job_number, b.next_job_number);
  ASSERT_EQ(a.jobs.size(), b.jobs.size());
  for (size_t i = 0; i < a.jobs.size(); ++i) {
    const JobRecord& x = a.jobs[i];
    const JobRecord& y = b.jobs[i];
    EXPECT_EQ(x.spec.job_id, y.spec.job_id);
    EXPECT_TRUE(x.spec.work == y.spec.work);
    EXPECT_EQ(x.spec.no_worker_timeout, y.spec.no_worker_timeout);
    EXPECT_EQ(x.spec.max_attempts, y.spec.max_attempts);
    EXPECT_EQ(x.spec.closure_timeout, y.spec.closure_timeout);
    EXPECT_EQ(x.state, y.state);
    EXPECT_EQ(x.error, y.error);
    EXPECT_EQ(x.requeues, y.requeues);
    EXPECT_EQ(x.max_step_id, y.max_step_id);
    EXPECT_EQ(x.submitted_at, y.submitted_at);
    EXPECT_EQ(x.finished_at, y.finished_at);
    ASSERT_EQ(x.closures.size(), y.closures.size());
    for (size_t c = 0; c < x.closures.size(); ++c) {
      const ClosureRecord& p = x.closures[c];
      const ClosureRecord& q = y.closures[c];
      EXPECT_EQ(p.closure_id, q.closure_id);
      EXPECT_EQ(p.function_name, q.function_name);
      EXPECT_EQ(p.args, q.args);
      EXPECT_EQ(p.step_id, q.step_id);
      EXPECT_EQ(p.replica_index, q.replica_index);
      EXPECT_EQ(p.replicas_per_step, q.replicas_per_step);
      EXPECT_EQ(p.state, q.state);
      EXPECT_EQ(p.attempts, q.attempts);
      EXPECT_EQ(p.failures, q.failures);
      EXPECT_EQ(p.min_valid_attempt, q.min_valid_attempt);
      EXPECT_EQ(p.result, q.result);
      EXPECT_EQ(p.error, q.error);
    }
  }
}

TEST(CodecTest, MembershipRoundTrips) {
  MembershipSnapshot s = SampleMembership();
  absl::StatusOr<MembershipSnapshot> back =
      DecodeMembership(EncodeMembership(s));
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSame(s, *back);
}

TEST(CodecTest, SchedulerRoundTrips) {
  SchedulerSnapshot s = SampleScheduler();
  absl::StatusOr<SchedulerSnapshot> back = DecodeScheduler(EncodeScheduler(s));
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSame(s, *back);
}

TEST(CodecTest, EveryTruncationAndTrailingByteIsDataLoss) {
  std::string m = EncodeMembership(SampleMembership());
  std::string s = EncodeScheduler(SampleScheduler());
  for (size_t n = 0; n < m.size(); ++n) {
    EXPECT_EQ(DecodeMembership(m.substr(0, n)).status().code(),
              absl::StatusCode::kDataLoss)
        << n;
  }
  for (size_t n = 0; n < s.size(); ++n) {
    EXPECT_EQ(DecodeScheduler(s.substr(0, n)).status().code(),
              absl::StatusCode::kDataLoss)
        << n;
  }
  EXPECT_EQ(DecodeMembership(m + "x").status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(DecodeScheduler(s + "x").status().code(),
            absl::StatusCode::kDataLoss);
  std::string wrong_version = m;
  wrong_version[0] = 9;
  EXPECT_EQ(DecodeMembership(wrong_version).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(CodecTest, FlippedBytesNeverCrash) {
  std::string s = EncodeScheduler(SampleScheduler());
  for (size_t i = 0; i < s.size(); ++i) {
    std::string damaged = s;
    damaged[i] = static_cast<char>(damaged[i] ^ 0xFF);
    absl::StatusOr<SchedulerSnapshot> r = DecodeScheduler(damaged);
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
    }
  }
}

}  // namespace
}  // namespace plexus::coordinator::state
