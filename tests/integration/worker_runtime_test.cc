// The worker runtime against an in-process coordinator service (a real gRPC
// server on 127.0.0.1): closures run through RegisterStep and come back as
// remote values; rendezvous and collective groups through the runtime; a
// member that leaves makes the coordinator tell the survivor to re-form.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "coordinator/service/coordinator_service.h"
#include "plexus/v1/coordinator.grpc.pb.h"
#include "plexus/worker/runtime.h"
#include "tests/integration/in_process_coordinator.h"
#include "tests/util/test_env.h"

namespace plexus {
namespace {

using ::plexus::testing::WaitFor;

using worker::Runtime;

class WorkerRuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    coordinator::CoordinatorServiceOptions o;
    o.data_dir = dir_.path();
    o.heartbeat_interval = absl::Milliseconds(50);
    o.suspect_timeout = absl::Milliseconds(600);
    o.dead_timeout = absl::Milliseconds(1500);
    auto c = testing::InProcessCoordinator::Start(o);
    ASSERT_TRUE(c.ok()) << c.status();
    coordinator_ = std::move(*c);
    address_ = coordinator_.address;
    stub_ = v1::Coordinator::NewStub(
        grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    for (auto& rt : runtimes_) rt->Stop();
    for (std::thread& t : threads_) t.join();
    runtimes_.clear();
    coordinator_.Stop();
  }

  // A runtime with an "echo" step, running on its own thread.
  Runtime* StartRuntime(
      std::function<void(const v1::ReformGroupCommand&)> on_reform = {},
      bool with_step = true) {
    worker::RuntimeOptions o;
    o.coordinator = address_;
    o.handle_sigterm = false;
    o.next_task_wait = absl::Milliseconds(200);
    auto rt = Runtime::Create(o);
    EXPECT_TRUE(rt.ok()) << rt.status();
    Runtime* r = rt->get();
    EXPECT_TRUE(
        !with_step ||
        r->RegisterStep("echo",
                        [](absl::string_view args, worker::StepContext& ctx)
                            -> absl::StatusOr<std::string> {
                          EXPECT_EQ(ctx.ps(), nullptr);
                          return absl::StrCat(args, "@", ctx.step_id());
                        })
            .ok());
    if (on_reform) r->OnReformGroup(std::move(on_reform));
    runtimes_.push_back(std::move(*rt));
    threads_.emplace_back([r] { EXPECT_TRUE(r->Run().ok()); });
    EXPECT_TRUE(
        WaitFor([r] { return r->worker_id() != 0; }, absl::Seconds(10)));
    return r;
  }

  testing::TempDir dir_;
  testing::InProcessCoordinator coordinator_;
  std::string address_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
  std::vector<std::unique_ptr<Runtime>> runtimes_;
  std::vector<std::thread> threads_;
};

TEST_F(WorkerRuntimeTest, ClosuresRunAndComeBackAsRemoteValues) {
  StartRuntime();
  StartRuntime();
  v1::SubmitJobRequest req;
  req.set_job_id("echo-job");
  for (int i = 0; i < 6; ++i) {
    v1::ClosureSpec* c = req.mutable_closures()->add_closures();
    c->set_function_name("echo");
    c->set_args(absl::StrCat("a", i));
  }
  v1::SubmitJobResponse sresp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->SubmitJob(&ctx, req, &sresp).ok());
  }
  ASSERT_EQ(sresp.remote_value_ids_size(), 6);
  v1::JoinRequest jreq;
  jreq.set_job_id("echo-job");
  jreq.set_timeout_ms(20000);
  v1::JoinResponse jresp;
  {
    grpc::ClientContext ctx;
    grpc::Status st = stub_->Join(&ctx, jreq, &jresp);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  EXPECT_EQ(jresp.status().closures_succeeded(), 6u);
  for (int i = 0; i < 6; ++i) {
    v1::FetchRequest f;
    f.set_remote_value_id(sresp.remote_value_ids(i));
    v1::FetchResponse fresp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->Fetch(&ctx, f, &fresp).ok());
    EXPECT_EQ(fresp.state(), v1::CLOSURE_STATE_SUCCEEDED);
    EXPECT_EQ(fresp.result(), absl::StrCat("a", i, "@", fresp.step_id()));
  }
}

// A worker with no step functions (e.g. one that only joins collective
// groups) registers once and stays registered while it polls for tasks.
TEST_F(WorkerRuntimeTest, AWorkerWithoutStepsStaysRegistered) {
  Runtime* r = StartRuntime({}, /*with_step=*/false);
  const uint64_t incarnation = r->incarnation();
  ASSERT_NE(incarnation, 0u);
  // Wait until it has been registered for over a second: with a 200 ms
  // NextTask wait it has asked for work several times by then.
  absl::StatusOr<v1::ProcessInfo> info;
  ASSERT_TRUE(WaitFor(
      [&] {
        v1::ListProcessesRequest req;
        v1::ListProcessesResponse resp;
        grpc::ClientContext ctx;
        if (!stub_->ListProcesses(&ctx, req, &resp).ok()) return false;
        for (const auto& p : resp.processes()) {
          if (p.worker_id() == r->worker_id()) info = p;
        }
        return info.ok() && info->last_heartbeat_unix_ms() >
                                info->registered_unix_ms() + 1000;
      },
      absl::Seconds(20)));
  EXPECT_EQ(r->incarnation(), incarnation);
  EXPECT_EQ(info->incarnation(), incarnation);
  EXPECT_EQ(info->restarts(), 0u);
}

TEST_F(WorkerRuntimeTest, RendezvousGroupsAndReformAfterAMemberLeaves) {
  absl::Notification reformed;
  v1::ReformGroupCommand notice;
  Runtime* a = StartRuntime([&](const v1::ReformGroupCommand& c) {
    if (!reformed.HasBeenNotified()) {
      notice = c;
      reformed.Notify();
    }
  });
  Runtime* b = StartRuntime();
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  absl::StatusOr<v1::GroupInfo> gb;
  std::thread tb([&] { gb = b->JoinGroup("ring", 2, false, deadline); });
  absl::StatusOr<v1::GroupInfo> ga = a->JoinGroup("ring", 2, false, deadline);
  tb.join();
  ASSERT_TRUE(ga.ok()) << ga.status();
  ASSERT_TRUE(gb.ok()) << gb.status();
  EXPECT_EQ(ga->epoch(), 1u);
  EXPECT_NE(ga->my_rank(), gb->my_rank());

  ASSERT_TRUE(b->RendezvousSet("ring", 1, "addr-b", "bytes-b").ok());
  absl::StatusOr<std::vector<std::string>> got =
      a->RendezvousWait("ring", 1, {"addr-b"}, deadline);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ((*got)[0], "bytes-b");
  absl::StatusOr<std::string> one = a->RendezvousGet("ring", 1, "addr-b");
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(*one, "bytes-b");

  // b leaves: a is told to re-form at epoch 2 without b's rank.
  const int b_rank = gb->my_rank();
  b->Stop();
  ASSERT_TRUE(reformed.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(notice.group(), "ring");
  EXPECT_EQ(notice.new_epoch(), 2u);
  ASSERT_EQ(notice.failed_ranks_size(), 1);
  EXPECT_EQ(notice.failed_ranks(0), b_rank);
  // The old epoch's namespace is refused now.
  EXPECT_EQ(a->RendezvousSet("ring", 1, "k", "v").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(b->exit_code(), 0);
}

}  // namespace
}  // namespace plexus
