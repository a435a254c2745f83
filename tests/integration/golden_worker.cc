// golden_worker: a worker program for process tests. It registers the
// "golden" step of ../shared/FAULTS.md: pull the dense variable, then push a
// gradient whose SGD (learning rate 1) update adds GoldenDelta(step, i) to
// element i. Every delta is a multiple of 1/16 in [1/16, 1], so sums of up
// to 2^19 of them are exact in fp32 and the final value is independent of
// the order in which steps are applied.
//
// Flags: --coordinator, --ps (comma-separated shard addresses), --task_index,
// --variable, --elements, --pause_after_pull_ms (a window in which the test
// can act "mid-step"; the step logs "golden: step S pulled" when it opens),
// --drain_grace_ms.
// Failpoint "golden.after_pull" fires in that place too. SIGTERM: finishes
// the running step, exits 143.
#include <gflags/gflags.h>
#include <glog/logging.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/failpoint.h"
#include "common/init.h"
#include "common/tls.h"
#include "plexus/worker/ps_client.h"
#include "plexus/worker/runtime.h"
#include "tests/integration/golden.h"

DEFINE_string(coordinator, "", "Coordinator address host:port (required).");
DEFINE_string(ps, "", "PS shard addresses, comma-separated (required).");
DEFINE_int32(task_index, -1, "Worker index in the cluster; -1: dynamic.");
DEFINE_string(variable, "golden", "Dense variable the step updates.");
DEFINE_int64(elements, plexus::testing::kGoldenElements,
             "Elements of the variable.");
DEFINE_int64(pause_after_pull_ms, 0,
             "Time the step spends between its pull and its push.");
DEFINE_int64(drain_grace_ms, 0,
             "After SIGTERM, how long the running step may go on before it "
             "is told to stop (it then hands its closure back); 0: it "
             "finishes.");

int main(int argc, char** argv) {
  plexus::InitProcess(&argc, &argv,
                      "golden_worker: the golden workload for process tests.");
  plexus::worker::RuntimeOptions o;
  o.coordinator = FLAGS_coordinator;
  o.task_index = FLAGS_task_index;
  o.ps_shards = absl::StrSplit(FLAGS_ps, ',', absl::SkipEmpty());
  o.next_task_wait = absl::Milliseconds(500);
  o.drain_grace = absl::Milliseconds(FLAGS_drain_grace_ms);
  plexus::ClientTlsOptions tls = plexus::ClientTlsOptionsFromFlags();
  o.tls_ca_file = tls.ca_file;
  o.tls_cert_file = tls.cert_file;
  o.tls_key_file = tls.key_file;
  auto rt = plexus::worker::Runtime::Create(o);
  if (!rt.ok()) {
    LOG(ERROR) << rt.status();
    return 1;
  }
  const std::string variable = FLAGS_variable;
  const int64_t n = FLAGS_elements;
  const absl::Duration pause = absl::Milliseconds(FLAGS_pause_after_pull_ms);
  absl::Status reg = (*rt)->RegisterStep(
      "golden",
      [&](absl::string_view,
          plexus::worker::StepContext& ctx) -> absl::StatusOr<std::string> {
        std::vector<float> w(n);
        if (absl::Status st = ctx.ps()->PullDense(variable, absl::MakeSpan(w));
            !st.ok()) {
          return st;
        }
        LOG(INFO) << "golden: step " << ctx.step_id() << " pulled (closure "
                  << ctx.closure_id() << ", attempt " << ctx.attempt()
                  << ", incarnation " << ctx.incarnation() << ")";
        if (absl::Status fp = PLEXUS_FAILPOINT("golden.after_pull"); !fp.ok()) {
          return fp;
        }
        // The workload's compute time; a step told to stop hands back.
        absl::Time until = absl::Now() + pause;
        while (absl::Now() < until) {
          if (ctx.cancelled()) {
            LOG(INFO) << "golden: step " << ctx.step_id() << " handed back";
            return absl::AbortedError("stopped before the push");
          }
          absl::SleepFor(std::min(absl::Milliseconds(5), until - absl::Now()));
        }
        std::vector<float> g(n);
        for (int64_t i = 0; i < n; ++i) {
          g[i] = -plexus::testing::GoldenDelta(ctx.step_id(), i);
        }
        absl::StatusOr<plexus::worker::PushResult> pushed =
            ctx.ps()->PushDense(variable, g);
        if (!pushed.ok()) {
          LOG(WARNING) << "golden: step " << ctx.step_id()
                       << " push refused: " << pushed.status();
          return pushed.status();
        }
        LOG(INFO) << "golden: step " << ctx.step_id() << " pushed"
                  << (pushed->duplicate_pieces > 0 ? " (duplicate)" : "");
        return absl::StrCat(ctx.step_id());
      });
  if (!reg.ok()) {
    LOG(ERROR) << reg;
    return 1;
  }
  absl::Status st = (*rt)->Run();
  if (!st.ok()) {
    LOG(ERROR) << st;
    return 1;
  }
  return (*rt)->exit_code();
}
