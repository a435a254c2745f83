// The bad-input table of ../shared/FAULTS.md for the coordinator's RPCs that
// the per-service tests (coordinator_service_test, auth_test) leave out:
// rendezvous keys and groups, job control, checkpoints and failpoints, the
// message size limit, and calls during shutdown. Each case asserts the
// code, that the coordinator (a real plexus-coordinator process) still
// serves afterwards, that no state changed, and that the error was counted
// (plexus_rpc_requests_total{method,code}).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "plexus/v1/coordinator.grpc.pb.h"
#include "tests/fault/fault_cluster.h"
#include "tests/util/test_env.h"

namespace plexus::fault {
namespace {

using ::plexus::testing::TempDir;

class CoordinatorBadInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    FaultClusterOptions o;
    o.root_dir = dir_.Sub("cluster");
    o.create_golden_variable = false;
    o.coordinator_flags = {"--max_message_bytes=1048576"};
    auto c = FaultCluster::Start(o);
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = std::move(*c);
    stub_ = cluster_->coordinator_stub();
  }

  template <typename F>
  absl::Status Call(F rpc) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    return FromGrpcStatus(rpc(&ctx));
  }

  absl::Status Set(const std::string& group, const std::string& key,
                   const std::string& value, uint64_t epoch = 0) {
    v1::RendezvousSetRequest req;
    req.set_group(group);
    req.set_group_epoch(epoch);
    req.mutable_entry()->set_key(key);
    req.mutable_entry()->set_value(value);
    v1::RendezvousSetResponse resp;
    return Call([&](auto* c) { return stub_->RendezvousSet(c, req, &resp); });
  }

  absl::StatusOr<std::string> Get(const std::string& group,
                                  const std::string& key) {
    v1::RendezvousGetRequest req;
    req.set_group(group);
    req.set_key(key);
    v1::RendezvousGetResponse resp;
    absl::Status st =
        Call([&](auto* c) { return stub_->RendezvousGet(c, req, &resp); });
    if (!st.ok()) return st;
    return resp.entry().value();
  }

  // plexus_rpc_requests_total for the method and code (0 if absent).
  double Counted(const std::string& method, const std::string& code) {
    httplib::Client http("127.0.0.1", cluster_->coordinator().admin_port);
    httplib::Result r = http.Get("/metrics");
    if (!r) return -1;
    for (absl::string_view line : absl::StrSplit(r->body, '\n')) {
      if (absl::StartsWith(line, "plexus_rpc_requests_total{") &&
          absl::StrContains(line, absl::StrCat(method, "\"")) &&
          absl::StrContains(line, absl::StrCat("code=\"", code, "\""))) {
        double v = 0;
        if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &v)) return v;
      }
    }
    return 0;
  }

  // Still serving: a well-formed rendezvous round trip works.
  void ExpectServing() {
    ASSERT_TRUE(Set("alive", "k", "v").ok());
    auto v = Get("alive", "k");
    ASSERT_TRUE(v.ok()) << v.status();
    EXPECT_EQ(*v, "v");
  }

  TempDir dir_;
  std::unique_ptr<FaultCluster> cluster_;
  v1::Coordinator::Stub* stub_ = nullptr;
};

TEST_F(CoordinatorBadInputTest, RendezvousNamesKeysAndSizes) {
  const std::string long_name(4096, 'g');
  struct Case {
    std::string group, key;
  };
  for (const Case& c : std::vector<Case>{{"", "k"},
                                         {"g", ""},
                                         {"../etc", "k"},
                                         {"g", "../k"},
                                         {"a b", "k"},
                                         {"g", "k\n"},
                                         {long_name, "k"},
                                         {"g", long_name}}) {
    SCOPED_TRACE(absl::StrCat("group '", c.group.substr(0, 16), "' key '",
                              c.key.substr(0, 16), "'"));
    EXPECT_EQ(Set(c.group, c.key, "v").code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(Get(c.group, c.key).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  EXPECT_GE(Counted("RendezvousSet", "INVALID_ARGUMENT"), 8);
  EXPECT_GE(Counted("RendezvousGet", "INVALID_ARGUMENT"), 8);
  // Over the message limit (1 MiB here): RESOURCE_EXHAUSTED, nothing stored.
  const absl::Time big_start = absl::Now();
  EXPECT_EQ(Set("g", "big", std::string(2 << 20, 'x')).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_LT(absl::Now() - big_start, absl::Seconds(5));
  EXPECT_EQ(Get("g", "big").status().code(), absl::StatusCode::kNotFound);
  // A negative wait is refused (it used to wait until the gRPC deadline:
  // for ever for a client without one), for rendezvous, Join and JoinGroup.
  {
    v1::RendezvousWaitRequest req;
    req.set_group("g");
    req.add_keys("k");
    req.set_timeout_ms(-5);
    v1::RendezvousWaitResponse resp;
    EXPECT_EQ(Call([&](auto* c) {
                return stub_->RendezvousWait(c, req, &resp);
              }).code(),
              absl::StatusCode::kInvalidArgument);
    v1::JoinRequest jreq;
    jreq.set_job_id("any");
    jreq.set_timeout_ms(-1);
    v1::JoinResponse jresp;
    EXPECT_EQ(
        Call([&](auto* c) { return stub_->Join(c, jreq, &jresp); }).code(),
        absl::StatusCode::kInvalidArgument);
  }
  // Wait for no keys.
  {
    v1::RendezvousWaitRequest req;
    req.set_group("g");
    req.set_timeout_ms(100);
    v1::RendezvousWaitResponse resp;
    EXPECT_EQ(Call([&](auto* c) {
                return stub_->RendezvousWait(c, req, &resp);
              }).code(),
              absl::StatusCode::kInvalidArgument);
  }
  ASSERT_NO_FATAL_FAILURE(ExpectServing());
}

TEST_F(CoordinatorBadInputTest, GroupsJobsCheckpointsAndFailpoints) {
  // Groups: unknown group, bad names and sizes.
  {
    v1::GetGroupRequest req;
    req.set_group("nope");
    v1::GetGroupResponse resp;
    EXPECT_EQ(
        Call([&](auto* c) { return stub_->GetGroup(c, req, &resp); }).code(),
        absl::StatusCode::kNotFound);
  }
  {
    v1::BumpGroupEpochRequest req;
    req.set_group("nope");
    req.set_expected_epoch(1);
    v1::BumpGroupEpochResponse resp;
    EXPECT_EQ(Call([&](auto* c) {
                return stub_->BumpGroupEpoch(c, req, &resp);
              }).code(),
              absl::StatusCode::kNotFound);
  }
  for (uint32_t size : {0u, 1u << 30}) {
    for (const char* group : {"", "../g", "ring"}) {
      if (std::string(group) == "ring" && size == 0) continue;
      v1::JoinGroupRequest req;
      req.set_group(group);
      req.set_size(size == 0 ? 2 : size);
      if (std::string(group) == "ring") req.set_size(size);
      req.set_timeout_ms(100);
      v1::JoinGroupResponse resp;
      SCOPED_TRACE(absl::StrCat("group '", group, "' size ", req.size()));
      EXPECT_EQ(
          Call([&](auto* c) { return stub_->JoinGroup(c, req, &resp); }).code(),
          absl::StatusCode::kInvalidArgument);
    }
  }
  // Jobs: unknown, bad ids, overflowing steps.
  {
    v1::CancelJobRequest req;
    req.set_job_id("nope");
    v1::CancelJobResponse resp;
    EXPECT_EQ(
        Call([&](auto* c) { return stub_->CancelJob(c, req, &resp); }).code(),
        absl::StatusCode::kNotFound);
  }
  {
    v1::FetchRequest req;
    req.set_remote_value_id(123456);
    req.set_timeout_ms(100);
    v1::FetchResponse resp;
    EXPECT_EQ(Call([&](auto* c) { return stub_->Fetch(c, req, &resp); }).code(),
              absl::StatusCode::kNotFound);
  }
  for (const std::string& id : {std::string(4096, 'j'), std::string("a b"),
                                std::string("a/../b"), std::string("..")}) {
    v1::SubmitJobRequest req;
    req.set_job_id(id);
    req.mutable_steps()->set_function_name("golden");
    req.mutable_steps()->set_num_steps(3);
    v1::SubmitJobResponse resp;
    EXPECT_EQ(
        Call([&](auto* c) { return stub_->SubmitJob(c, req, &resp); }).code(),
        absl::StatusCode::kInvalidArgument)
        << id.substr(0, 16);
  }
  {
    v1::SubmitJobRequest req;
    req.set_job_id("huge");
    req.mutable_steps()->set_function_name("");
    req.mutable_steps()->set_num_steps(3);
    v1::SubmitJobResponse resp;
    EXPECT_EQ(
        Call([&](auto* c) { return stub_->SubmitJob(c, req, &resp); }).code(),
        absl::StatusCode::kInvalidArgument)
        << "empty step function";
    v1::GetJobStatusRequest sreq;
    sreq.set_job_id("huge");
    v1::GetJobStatusResponse sresp;
    EXPECT_EQ(Call([&](auto* c) {
                return stub_->GetJobStatus(c, sreq, &sresp);
              }).code(),
              absl::StatusCode::kNotFound)
        << "a refused job must leave no state";
  }
  // Checkpoints on a coordinator that knows no shards; an unknown id.
  {
    v1::RestoreCheckpointRequest req;
    req.set_checkpoint_id(99);
    v1::RestoreCheckpointResponse resp;
    absl::Status st =
        Call([&](auto* c) { return stub_->Restore(c, req, &resp); });
    EXPECT_TRUE(st.code() == absl::StatusCode::kNotFound ||
                st.code() == absl::StatusCode::kFailedPrecondition)
        << st;
  }
  // Failpoints: a bad action is refused, nothing armed.
  {
    v1::SetFailpointRequest req;
    req.set_name("coordinator.after_dispatch_before_record");
    req.set_action("explode");
    v1::SetFailpointResponse resp;
    EXPECT_EQ(Call([&](auto* c) {
                return stub_->SetFailpoint(c, req, &resp);
              }).code(),
              absl::StatusCode::kInvalidArgument);
    req.set_name("bad name");
    req.set_action("crash");
    EXPECT_EQ(Call([&](auto* c) {
                return stub_->SetFailpoint(c, req, &resp);
              }).code(),
              absl::StatusCode::kInvalidArgument);
    req.set_name("x");
    req.set_action("off");
    ASSERT_TRUE(
        Call([&](auto* c) { return stub_->SetFailpoint(c, req, &resp); }).ok());
    EXPECT_EQ(resp.active_size(), 0);
  }
  EXPECT_GE(Counted("GetGroup", "NOT_FOUND"), 1);
  EXPECT_GE(Counted("SubmitJob", "INVALID_ARGUMENT"), 3);
  ASSERT_NO_FATAL_FAILURE(ExpectServing());
}

// Any RPC during shutdown: UNAVAILABLE. A RendezvousWait holds the drain
// open while new calls arrive.
TEST_F(CoordinatorBadInputTest, CallsDuringShutdownAreUnavailable) {
  std::thread waiter([&] {
    v1::RendezvousWaitRequest req;
    req.set_group("g");
    req.add_keys("never");
    req.set_timeout_ms(3000);
    v1::RendezvousWaitResponse resp;
    (void)Call([&](auto* c) { return stub_->RendezvousWait(c, req, &resp); });
  });
  Proc& co = cluster_->coordinator();
  ASSERT_TRUE(co.process->Signal(SIGTERM).ok());
  ASSERT_TRUE(WaitFor(
      [&] { return absl::StrContains(ReadFile(co.log), "draining (SIGTERM)"); },
      absl::Seconds(10)));
  auto fresh = v1::Coordinator::NewStub(
      grpc::CreateChannel(co.address, grpc::InsecureChannelCredentials()));
  v1::RendezvousSetRequest req;
  req.set_group("g");
  req.mutable_entry()->set_key("k");
  v1::RendezvousSetResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  absl::Status st = FromGrpcStatus(fresh->RendezvousSet(&ctx, req, &resp));
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  waiter.join();
  absl::StatusOr<int> code = co.process->Wait(absl::Seconds(10));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
}

}  // namespace
}  // namespace plexus::fault
