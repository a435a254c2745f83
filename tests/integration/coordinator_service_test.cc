// The coordinator's gRPC service in-process behind a real gRPC server on
// 127.0.0.1: error codes and ErrorInfo reasons, the job RPCs end to end,
// rendezvous and groups, and a restart on the same data folder (higher
// epoch, job and identities kept).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <thread>

#include "absl/time/clock.h"
#include "common/error_info.h"
#include "common/grpc_status.h"
#include "coordinator/service/coordinator_service.h"
#include "plexus/v1/coordinator.grpc.pb.h"
#include "tests/integration/in_process_coordinator.h"
#include "tests/util/test_env.h"

namespace plexus {
namespace {

using coordinator::CoordinatorService;
using coordinator::CoordinatorServiceOptions;

class CoordinatorServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(); }
  void TearDown() override { Stop(); }

  void Start() {
    CoordinatorServiceOptions o;
    o.data_dir = dir_.path();
    o.heartbeat_interval = absl::Milliseconds(100);
    o.suspect_timeout = absl::Milliseconds(600);
    o.dead_timeout = absl::Milliseconds(1500);
    auto c = testing::InProcessCoordinator::Start(o);
    ASSERT_TRUE(c.ok()) << c.status();
    coordinator_ = std::move(*c);
    service_ = coordinator_.service.get();
    stub_ = v1::Coordinator::NewStub(grpc::CreateChannel(
        coordinator_.address, grpc::InsecureChannelCredentials()));
  }

  void Stop() {
    coordinator_.Stop();
    service_ = nullptr;
  }

  static void Deadline(grpc::ClientContext* ctx) {
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  }

  absl::StatusOr<v1::RegisterResponse> Register(int task_index) {
    v1::RegisterRequest req;
    req.set_role(v1::ROLE_WORKER);
    req.set_task_index(task_index);
    req.set_hostname("h");
    req.mutable_capabilities()->add_step_functions("f");
    v1::RegisterResponse resp;
    grpc::ClientContext ctx;
    Deadline(&ctx);
    absl::Status st = FromGrpcStatus(stub_->Register(&ctx, req, &resp));
    if (!st.ok()) return st;
    return resp;
  }

  static v1::RequestHeader Who(const v1::RegisterResponse& r) {
    v1::RequestHeader h;
    h.set_worker_id(r.worker_id());
    h.set_worker_incarnation(r.incarnation());
    return h;
  }

  absl::StatusOr<v1::NextTaskResponse> NextTask(const v1::RequestHeader& h,
                                                int64_t wait_ms = 0) {
    v1::NextTaskRequest req;
    *req.mutable_header() = h;
    req.set_wait_ms(wait_ms);
    v1::NextTaskResponse resp;
    grpc::ClientContext ctx;
    Deadline(&ctx);
    absl::Status st = FromGrpcStatus(stub_->NextTask(&ctx, req, &resp));
    if (!st.ok()) return st;
    return resp;
  }

  absl::Status Submit(const std::string& job, uint64_t steps) {
    v1::SubmitJobRequest req;
    req.set_job_id(job);
    if (steps > 0) {
      req.mutable_steps()->set_function_name("f");
      req.mutable_steps()->set_num_steps(steps);
    }
    v1::SubmitJobResponse resp;
    grpc::ClientContext ctx;
    Deadline(&ctx);
    return FromGrpcStatus(stub_->SubmitJob(&ctx, req, &resp));
  }

  absl::StatusOr<v1::JobStatus> JobStatus(const std::string& job) {
    v1::GetJobStatusRequest req;
    req.set_job_id(job);
    v1::GetJobStatusResponse resp;
    grpc::ClientContext ctx;
    Deadline(&ctx);
    absl::Status st = FromGrpcStatus(stub_->GetJobStatus(&ctx, req, &resp));
    if (!st.ok()) return st;
    return resp.status();
  }

  testing::TempDir dir_;
  testing::InProcessCoordinator coordinator_;
  CoordinatorService* service_ = nullptr;  // coordinator_'s
  std::unique_ptr<v1::Coordinator::Stub> stub_;
};

TEST_F(CoordinatorServiceTest, BadInputGetsTheDocumentedCodes) {
  {
    v1::RegisterRequest req;  // no role
    v1::RegisterResponse resp;
    grpc::ClientContext ctx;
    Deadline(&ctx);
    EXPECT_EQ(stub_->Register(&ctx, req, &resp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  EXPECT_EQ(Submit("../x", 3).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Submit("", 0).code(), absl::StatusCode::kOk);  // interactive
  EXPECT_EQ(JobStatus("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(NextTask(v1::RequestHeader()).status().code(),
            absl::StatusCode::kInvalidArgument);
  {
    v1::JoinRequest req;
    req.set_job_id("nope");
    v1::JoinResponse resp;
    grpc::ClientContext ctx;
    Deadline(&ctx);
    EXPECT_EQ(stub_->Join(&ctx, req, &resp).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  absl::StatusOr<v1::RegisterResponse> w = Register(0);
  ASSERT_TRUE(w.ok()) << w.status();
  {
    v1::ReportResultRequest req;  // no outcome
    *req.mutable_header() = Who(*w);
    req.set_closure_id(1);
    v1::ReportResultResponse resp;
    grpc::ClientContext ctx;
    Deadline(&ctx);
    EXPECT_EQ(stub_->ReportResult(&ctx, req, &resp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    v1::RendezvousGetRequest req;
    req.set_group("g");
    req.set_key("missing");
    v1::RendezvousGetResponse resp;
    grpc::ClientContext ctx;
    Deadline(&ctx);
    EXPECT_EQ(stub_->RendezvousGet(&ctx, req, &resp).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  {
    v1::RendezvousWaitRequest req;
    req.set_group("g");
    req.add_keys("missing");
    req.set_timeout_ms(100);
    v1::RendezvousWaitResponse resp;
    grpc::ClientContext ctx;
    Deadline(&ctx);
    EXPECT_EQ(stub_->RendezvousWait(&ctx, req, &resp).error_code(),
              grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  // Still serving.
  EXPECT_TRUE(Register(1).ok());
}

TEST_F(CoordinatorServiceTest, StaleIncarnationIsFencedWithErrorInfo) {
  absl::StatusOr<v1::RegisterResponse> first = Register(0);
  ASSERT_TRUE(first.ok());
  absl::StatusOr<v1::RegisterResponse> second = Register(0);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->worker_id(), first->worker_id());
  EXPECT_GT(second->incarnation(), first->incarnation());
  absl::Status stale = NextTask(Who(*first)).status();
  EXPECT_EQ(stale.code(), absl::StatusCode::kFailedPrecondition);
  std::optional<v1::ErrorInfo> info = GetErrorInfo(stale);
  ASSERT_TRUE(info.has_value()) << stale;
  EXPECT_EQ(info->reason(), v1::ErrorInfo::REASON_STALE_INCARNATION);
  // The stale heartbeat stream ends with the same error.
  grpc::ClientContext ctx;
  auto stream = stub_->Heartbeat(&ctx);
  v1::HeartbeatRequest hb;
  *hb.mutable_header() = Who(*first);
  hb.set_seq(1);
  stream->Write(hb);
  v1::HeartbeatResponse resp;
  EXPECT_FALSE(stream->Read(&resp));
  stream->WritesDone();
  EXPECT_EQ(stream->Finish().error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  // The current one is acknowledged.
  grpc::ClientContext ctx2;
  auto live = stub_->Heartbeat(&ctx2);
  *hb.mutable_header() = Who(*second);
  ASSERT_TRUE(live->Write(hb));
  ASSERT_TRUE(live->Read(&resp));
  EXPECT_EQ(resp.ack_seq(), 1u);
  EXPECT_EQ(resp.header().coordinator_epoch(), service_->epoch());
  live->WritesDone();
  EXPECT_TRUE(live->Finish().ok());
}

TEST_F(CoordinatorServiceTest, ScheduleRunReportFetch) {
  ASSERT_TRUE(Submit("inter", 0).ok());
  v1::ScheduleRequest sreq;
  sreq.set_job_id("inter");
  sreq.mutable_closure()->set_function_name("f");
  sreq.mutable_closure()->set_args("args");
  v1::ScheduleResponse sresp;
  {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    ASSERT_TRUE(stub_->Schedule(&ctx, sreq, &sresp).ok());
  }
  absl::StatusOr<v1::RegisterResponse> w = Register(0);
  ASSERT_TRUE(w.ok());
  absl::StatusOr<v1::NextTaskResponse> t = NextTask(Who(*w), 2000);
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_TRUE(t->has_task());
  EXPECT_EQ(t->task().closure_id(), sresp.remote_value_id());
  EXPECT_EQ(t->task().args(), "args");
  v1::ReportResultRequest rreq;
  *rreq.mutable_header() = Who(*w);
  rreq.set_closure_id(t->task().closure_id());
  rreq.set_attempt(t->task().attempt());
  rreq.set_result("value");
  v1::ReportResultResponse rresp;
  {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    ASSERT_TRUE(stub_->ReportResult(&ctx, rreq, &rresp).ok());
  }
  EXPECT_EQ(rresp.disposition(), v1::REPORT_DISPOSITION_ACCEPTED);
  v1::FetchRequest freq;
  freq.set_remote_value_id(sresp.remote_value_id());
  freq.set_timeout_ms(1000);
  v1::FetchResponse fresp;
  {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    ASSERT_TRUE(stub_->Fetch(&ctx, freq, &fresp).ok());
  }
  EXPECT_EQ(fresp.state(), v1::CLOSURE_STATE_SUCCEEDED);
  EXPECT_EQ(fresp.result(), "value");
  v1::CancelJobRequest creq;
  creq.set_job_id("inter");
  v1::CancelJobResponse cresp;
  {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    ASSERT_TRUE(stub_->CancelJob(&ctx, creq, &cresp).ok());
  }
  EXPECT_EQ(cresp.status().closures_succeeded(), 1u);
}

TEST_F(CoordinatorServiceTest, RendezvousAndGroups) {
  absl::StatusOr<v1::RegisterResponse> w = Register(0);
  ASSERT_TRUE(w.ok());
  std::thread setter([&] {
    v1::RendezvousSetRequest req;
    req.set_group("g");
    req.mutable_entry()->set_key("k");
    req.mutable_entry()->set_value("v");
    v1::RendezvousSetResponse resp;
    grpc::ClientContext ctx;
    Deadline(&ctx);
    EXPECT_TRUE(stub_->RendezvousSet(&ctx, req, &resp).ok());
  });
  v1::RendezvousWaitRequest wreq;
  wreq.set_group("g");
  wreq.add_keys("k");
  wreq.set_timeout_ms(5000);
  v1::RendezvousWaitResponse wresp;
  {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    ASSERT_TRUE(stub_->RendezvousWait(&ctx, wreq, &wresp).ok());
  }
  setter.join();
  ASSERT_EQ(wresp.entries_size(), 1);
  EXPECT_EQ(wresp.entries(0).value(), "v");

  v1::JoinGroupRequest jreq;
  *jreq.mutable_header() = Who(*w);
  jreq.set_group("ring");
  jreq.set_size(1);
  jreq.set_timeout_ms(1000);
  v1::JoinGroupResponse jresp;
  {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    ASSERT_TRUE(stub_->JoinGroup(&ctx, jreq, &jresp).ok());
  }
  EXPECT_EQ(jresp.group().my_rank(), 0);
  EXPECT_EQ(jresp.group().epoch(), 1u);
  v1::BumpGroupEpochRequest breq;
  breq.set_group("ring");
  breq.set_expected_epoch(1);
  breq.set_failed_rank(-1);
  v1::BumpGroupEpochResponse bresp;
  {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    ASSERT_TRUE(stub_->BumpGroupEpoch(&ctx, breq, &bresp).ok());
  }
  EXPECT_EQ(bresp.group().epoch(), 2u);
  // A key of the old epoch is refused now.
  v1::RendezvousSetRequest old;
  old.set_group("ring");
  old.set_group_epoch(1);
  old.mutable_entry()->set_key("k");
  v1::RendezvousSetResponse oresp;
  grpc::ClientContext ctx;
  Deadline(&ctx);
  grpc::Status st = stub_->RendezvousSet(&ctx, old, &oresp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  std::optional<v1::ErrorInfo> info = GetErrorInfo(FromGrpcStatus(st));
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->reason(), v1::ErrorInfo::REASON_STALE_GROUP_EPOCH);
}

// F9 in-process: a restart on the same folder bumps the epoch and keeps the
// job and the live workers' identities.
TEST_F(CoordinatorServiceTest, RestartKeepsJobAndIdentitiesUnderAHigherEpoch) {
  const uint64_t epoch = service_->epoch();
  absl::StatusOr<v1::RegisterResponse> w = Register(0);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(Submit("job", 5).ok());
  absl::StatusOr<v1::NextTaskResponse> t = NextTask(Who(*w), 1000);
  ASSERT_TRUE(t.ok() && t->has_task());
  Stop();
  Start();
  EXPECT_GT(service_->epoch(), epoch);
  absl::StatusOr<v1::JobStatus> job = JobStatus("job");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->closures_total(), 5u);
  // The worker carries on with its old identity; the closure it held runs
  // again (its report would also be accepted: first result wins).
  absl::StatusOr<v1::NextTaskResponse> again = NextTask(Who(*w), 1000);
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_TRUE(again->has_task());
  EXPECT_EQ(again->header().coordinator_epoch(), service_->epoch());
}

}  // namespace
}  // namespace plexus
