// golden_driver: the driver of the golden workload, for deployment tests: it
// plays the part ctr_example --mode=train plays in the manifests. It creates
// the golden variable on the shards, submits --steps golden steps, waits for
// the job and checks the variable against the golden values bit for bit.
//
// Flags: --coordinator, --ps (as plexus-launch passes them), --steps, --job.
// Exit: 0 when the job succeeded and the variable is golden; 1 otherwise.
#include <gflags/gflags.h>
#include <glog/logging.h>
#include <grpcpp/grpcpp.h>

#include <cstring>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "common/init.h"
#include "plexus/v1/coordinator.grpc.pb.h"
#include "plexus/worker/ps_client.h"
#include "tests/integration/golden.h"

DEFINE_string(coordinator, "", "Coordinator address host:port (required).");
DEFINE_string(ps, "", "PS shard addresses, comma-separated (required).");
DEFINE_uint64(steps, 40, "Golden steps to run.");
DEFINE_string(job, "golden-job", "Job id.");
DEFINE_int64(timeout_s, 120, "How long the job may take, seconds.");

namespace {

int Fail(const absl::Status& st, const char* what) {
  LOG(ERROR) << "golden_driver: " << what << ": " << st;
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  plexus::InitProcess(&argc, &argv,
                      "golden_driver: creates the golden variable, runs the "
                      "golden job, checks the result.");
  namespace v1 = plexus::v1;
  plexus::worker::PsClientOptions po;
  po.shards = absl::StrSplit(FLAGS_ps, ',', absl::SkipEmpty());
  auto ps = plexus::worker::PsClient::Connect(po);
  if (!ps.ok()) return Fail(ps.status(), "connect to the shards");
  v1::VariableConfig v = plexus::testing::GoldenVariableConfig();
  if (absl::Status st = (*ps)->CreateVariable(v); !st.ok()) {
    return Fail(st, "create the variable");
  }

  auto stub = v1::Coordinator::NewStub(grpc::CreateChannel(
      FLAGS_coordinator, grpc::InsecureChannelCredentials()));
  v1::SubmitJobRequest req;
  req.set_job_id(FLAGS_job);
  req.mutable_steps()->set_function_name("golden");
  req.mutable_steps()->set_num_steps(FLAGS_steps);
  v1::SubmitJobResponse submitted;
  grpc::ClientContext sctx;
  sctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  if (absl::Status st =
          plexus::FromGrpcStatus(stub->SubmitJob(&sctx, req, &submitted));
      !st.ok()) {
    return Fail(st, "submit");
  }

  v1::JoinRequest join;
  join.set_job_id(FLAGS_job);
  join.set_timeout_ms(FLAGS_timeout_s * 1000);
  v1::JoinResponse done;
  grpc::ClientContext jctx;
  jctx.set_deadline(
      absl::ToChronoTime(absl::Now() + absl::Seconds(FLAGS_timeout_s + 10)));
  if (absl::Status st = plexus::FromGrpcStatus(stub->Join(&jctx, join, &done));
      !st.ok()) {
    return Fail(st, "join");
  }
  if (done.status().state() != v1::JOB_STATE_SUCCEEDED ||
      done.status().closures_succeeded() != FLAGS_steps) {
    LOG(ERROR) << "golden_driver: job ended "
               << v1::JobState_Name(done.status().state()) << " with "
               << done.status().closures_succeeded() << "/" << FLAGS_steps
               << " steps";
    return 1;
  }

  std::vector<float> w(plexus::testing::kGoldenElements);
  if (absl::Status st = (*ps)->PullDense("golden", absl::MakeSpan(w));
      !st.ok()) {
    return Fail(st, "pull");
  }
  std::vector<float> golden = plexus::testing::GoldenValues(
      FLAGS_steps, plexus::testing::kGoldenElements);
  if (std::memcmp(w.data(), golden.data(), w.size() * sizeof(float)) != 0) {
    LOG(ERROR) << "golden_driver: not golden: element 0 is " << w[0]
               << ", golden " << golden[0];
    return 1;
  }
  LOG(INFO) << "golden_driver: " << FLAGS_steps
            << " steps applied exactly once (golden)";
  return 0;
}
