// ctr_example: the sparse example. A factorisation-machine click-through
// model (ctr_model.h) trained asynchronously through the PS shards with
// Adagrad on synthetic click logs from a known ground-truth model
// (ctr_data.h).
//
//   --mode=worker    a training worker: registers the "ctr_train" step with
//                    the coordinator and runs the steps it is handed; exit
//                    143 after SIGTERM, 138 when the coordinator cannot be
//                    reached (retryable), 1 for bad flags
//   --mode=train     the driver (chief): creates the embedding table,
//                    submits the job, prints progress (step, examples/s,
//                    held-out loss and AUC against the truth's, ETA) and a
//                    final summary; exit 0 when the job finished and the
//                    held-out AUC is within --target_gap of the truth's
//   --mode=baseline  the same training in one process, no PS (the
//                    time-to-accuracy reference)
//
// --device=gpu runs the forward and backward passes (and the held-out
// scoring) in CUDA kernels (ctr_gpu.h); a worker then pulls rows into and
// pushes gradients from GPU memory. Each process decides for itself: give
// the flag to the workers (plexus local up --worker "...") and, for its
// scoring, to the driver.
#include <gflags/gflags.h>
#include <glog/logging.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "common/init.h"
#include "common/status.h"
#include "common/tls.h"
#include "examples/ctr/ctr_data.h"
#include "examples/ctr/ctr_gpu.h"
#include "examples/ctr/ctr_model.h"
#include "plexus/v1/coordinator.grpc.pb.h"
#include "plexus/worker/ps_client.h"
#include "plexus/worker/runtime.h"
#include "tools/local/local_cluster.h"

DEFINE_string(mode, "train", "worker, train (the driver) or baseline.");
DEFINE_string(coordinator, "", "Coordinator address host:port.");
DEFINE_string(ps, "", "PS shard addresses, comma-separated.");
DEFINE_string(cluster_dir, "",
              "Instead of --coordinator and --ps (train): the folder of a "
              "cluster started with `plexus local up --dir`.");
DEFINE_int32(task_index, -1, "Worker index in the cluster; -1: dynamic.");
DEFINE_string(job, "ctr", "Job id (train).");
DEFINE_int64(steps, 3000, "Training steps (train, baseline).");
DEFINE_int64(batch, 1024, "Examples per step.");
DEFINE_int64(examples, 3072000,
             "Training examples (the stream wraps around after them).");
DEFINE_int64(test_examples, 100000, "Held-out examples.");
DEFINE_int64(vocab, 1 << 20, "Distinct ids per field.");
DEFINE_double(learning_rate, 0.05, "Adagrad learning rate.");
DEFINE_uint64(seed, 1, "Dataset seed.");
DEFINE_string(
    config, "",
    "More dataset/model settings, key=value,... (keys of "
    "CtrConfig in examples/ctr/ctr_data.h, e.g. fields=10,zipf_s=1.2).");
DEFINE_int64(eval_examples, 20000,
             "Held-out examples scored at each progress line (the final "
             "summary scores all of them).");
DEFINE_double(progress_s, 2, "Seconds between progress lines.");
DEFINE_double(target_gap, 0.01,
              "Target: held-out AUC within this of the ground truth's.");
DEFINE_bool(json, false, "Print progress and summary as JSON lines.");
DEFINE_string(device, "cpu",
              "cpu, or gpu: the forward and backward passes and the "
              "held-out scoring in CUDA kernels, rows pulled into GPU "
              "memory; needs a CUDA build and a usable GPU");

namespace plexus::examples {
namespace {

absl::StatusOr<CtrConfig> ConfigFromFlags() {
  CtrConfig c;
  c.seed = FLAGS_seed;
  c.batch = FLAGS_batch;
  c.num_train = FLAGS_examples;
  c.num_test = FLAGS_test_examples;
  c.vocab = FLAGS_vocab;
  c.learning_rate = FLAGS_learning_rate;
  return ParseCtrConfig(FLAGS_config, c);  // --config keys win
}

absl::Status CheckDevice() {
  if (FLAGS_device != "cpu" && FLAGS_device != "gpu") {
    return absl::InvalidArgumentError(
        absl::StrCat("--device=", FLAGS_device, ": want cpu or gpu"));
  }
  return absl::OkStatus();
}

bool OnGpu() { return FLAGS_device == "gpu"; }

// The forward/backward compute --device asks for.
absl::StatusOr<std::unique_ptr<CtrCompute>> NewCompute() {
  if (OnGpu()) return NewGpuCompute();
  return NewCpuCompute();
}

// Progress lines and the final summary, human or JSON. `where` follows
// `what` in human lines ("" on the CPU); on the GPU the JSON lines end with
// "device":"gpu".
class Reporter {
 public:
  Reporter(const CtrConfig& c, int64_t steps, std::string what,
           std::string where = "")
      : config_(c),
        steps_(steps),
        what_(std::move(what)),
        label_(what_ + where),
        device_json_(OnGpu() ? ",\"device\":\"gpu\"" : ""),
        start_(absl::Now()) {}

  double elapsed() const { return absl::ToDoubleSeconds(absl::Now() - start_); }

  void Progress(int64_t step, const EvalResult& e) {
    double t = elapsed();
    double eps = step * config_.batch / std::max(t, 1e-9);
    double eta = step > 0 ? t * (steps_ - step) / step : 0;
    if (time_to_target_ < 0 && e.auc >= e.truth_auc - FLAGS_target_gap) {
      time_to_target_ = t;
      steps_to_target_ = step;
    }
    if (FLAGS_json) {
      std::printf(
          "{\"event\":\"progress\",\"elapsed_s\":%.3f,\"step\":%lld,"
          "\"steps\":%lld,\"examples_per_s\":%.1f,\"test_logloss\":%.5f,"
          "\"test_auc\":%.5f,\"truth_auc\":%.5f,\"eta_s\":%.1f%s}\n",
          t, static_cast<long long>(step), static_cast<long long>(steps_), eps,
          e.logloss, e.auc, e.truth_auc, eta, device_json_.c_str());
    } else {
      std::printf(
          "[%7.1fs] %s step %6lld/%lld (%3.0f%%)  %8.0f ex/s  held-out loss "
          "%.4f  AUC %.4f (truth %.4f)  ETA %.0fs\n",
          t, label_.c_str(), static_cast<long long>(step),
          static_cast<long long>(steps_), 100.0 * step / steps_, eps, e.logloss,
          e.auc, e.truth_auc, eta);
    }
    std::fflush(stdout);
  }

  // Returns the exit code: 0 when the target was reached.
  int Summary(int64_t steps_done, const EvalResult& e, int workers,
              uint64_t requeues) {
    double t = elapsed();
    bool reached = e.auc >= e.truth_auc - FLAGS_target_gap;
    if (reached && time_to_target_ < 0) {
      time_to_target_ = t;
      steps_to_target_ = steps_done;
    }
    double eps = steps_done * config_.batch / std::max(t, 1e-9);
    if (FLAGS_json) {
      std::printf(
          "{\"event\":\"summary\",\"mode\":\"%s\",\"workers\":%d,"
          "\"steps\":%lld,\"batch\":%lld,\"elapsed_s\":%.3f,"
          "\"examples_per_s\":%.1f,\"steps_per_s\":%.2f,\"test_examples\":%lld,"
          "\"test_logloss\":%.5f,\"test_auc\":%.5f,\"truth_auc\":%.5f,"
          "\"truth_logloss\":%.5f,\"target_gap\":%.4f,\"reached\":%s,"
          "\"time_to_target_s\":%.3f,\"steps_to_target\":%lld,"
          "\"requeues\":%llu%s}\n",
          what_.c_str(), workers, static_cast<long long>(steps_done),
          static_cast<long long>(config_.batch), t, eps, steps_done / t,
          static_cast<long long>(e.examples), e.logloss, e.auc, e.truth_auc,
          e.truth_logloss, FLAGS_target_gap, reached ? "true" : "false",
          time_to_target_, static_cast<long long>(steps_to_target_),
          static_cast<unsigned long long>(requeues), device_json_.c_str());
    } else {
      std::printf("\n== %s summary ==\n", label_.c_str());
      std::printf("  workers            %d\n", workers);
      std::printf(
          "  steps              %lld x %lld examples in %.1f s "
          "(%.0f examples/s, %.1f steps/s)\n",
          static_cast<long long>(steps_done),
          static_cast<long long>(config_.batch), t, eps, steps_done / t);
      std::printf(
          "  held-out AUC       %.4f (ground truth %.4f, gap %.4f; "
          "target gap <= %.3f: %s)\n",
          e.auc, e.truth_auc, e.truth_auc - e.auc, FLAGS_target_gap,
          reached ? "reached" : "NOT reached");
      std::printf(
          "  held-out log loss  %.4f (ground truth %.4f) on %lld "
          "examples\n",
          e.logloss, e.truth_logloss, static_cast<long long>(e.examples));
      if (time_to_target_ >= 0) {
        std::printf("  time to target     %.1f s (step %lld)\n",
                    time_to_target_, static_cast<long long>(steps_to_target_));
      }
      if (requeues > 0) {
        std::printf("  re-queued steps    %llu (worker failures recovered)\n",
                    static_cast<unsigned long long>(requeues));
      }
    }
    std::fflush(stdout);
    return reached ? 0 : 2;
  }

 private:
  CtrConfig config_;
  int64_t steps_;
  std::string what_;
  std::string label_;        // what_ and where
  std::string device_json_;  // "" or ,"device":"gpu"
  absl::Time start_;
  double time_to_target_ = -1;
  int64_t steps_to_target_ = 0;
};

int Fail(const absl::Status& st) {
  LOG(ERROR) << st;
  std::fprintf(stderr, "ctr_example: %s\n", st.ToString().c_str());
  return 1;
}

int RunBaseline(const CtrConfig& c) {
  auto data = CtrDataset::Create(c);
  if (!data.ok()) return Fail(data.status());
  auto params = NewLocalParams(c);
  if (!params.ok()) return Fail(params.status());
  auto compute = NewCompute();
  if (!compute.ok()) return Fail(compute.status());
  Reporter rep(c, FLAGS_steps, "baseline", OnGpu() ? " on the GPU" : "");
  double next = FLAGS_progress_s;
  double comm = 0, total = 0;
  for (int64_t s = 1; s <= FLAGS_steps; ++s) {
    auto st = TrainStep(*data, s, **params, **compute);
    if (!st.ok()) return Fail(st.status());
    comm += st->comm_seconds;
    total += st->total_seconds;
    if (rep.elapsed() >= next || s == FLAGS_steps) {
      auto e = Evaluate(*data, FLAGS_eval_examples, **params, **compute);
      if (!e.ok()) return Fail(e.status());
      rep.Progress(s, *e);
      next = rep.elapsed() + FLAGS_progress_s;
    }
  }
  auto e = Evaluate(*data, 0, **params, **compute);
  if (!e.ok()) return Fail(e.status());
  return rep.Summary(FLAGS_steps, *e, 0, 0);
}

int RunWorker(const CtrConfig&) {
  worker::RuntimeOptions o;
  o.coordinator = FLAGS_coordinator;
  o.task_index = FLAGS_task_index;
  o.ps_shards = absl::StrSplit(FLAGS_ps, ',', absl::SkipEmpty());
  o.next_task_wait = absl::Milliseconds(500);
  ClientTlsOptions tls = ClientTlsOptionsFromFlags();
  o.tls_ca_file = tls.ca_file;
  o.tls_cert_file = tls.cert_file;
  o.tls_key_file = tls.key_file;
  if (o.ps_shards.empty()) {
    return Fail(absl::InvalidArgumentError("--ps is required"));
  }
  auto rt = worker::Runtime::Create(o);
  if (!rt.ok()) return Fail(rt.status());
  // After Runtime::Create (the CUDA runtime starts threads, which must see
  // SIGTERM blocked). Steps run one at a time on Run's thread: one compute
  // (and on the GPU one device PS client) serves them all.
  auto compute = NewCompute();
  if (!compute.ok()) return Fail(compute.status());
  std::unique_ptr<DevicePsParams> device_params;
  if (OnGpu()) {
    auto p = NewDevicePsParams();
    if (!p.ok()) return Fail(p.status());
    device_params = std::move(*p);
  }
  if (OnGpu()) LOG(INFO) << "ctr: the worker computes on the GPU";
  // Datasets by job arguments: building one computes the Zipf tables.
  std::mutex mu;
  std::map<std::string, std::shared_ptr<const CtrDataset>> datasets;
  std::atomic<int64_t> done{0};
  double comm = 0, total = 0;
  absl::Status reg = (*rt)->RegisterStep(
      "ctr_train",
      [&](absl::string_view args,
          worker::StepContext& ctx) -> absl::StatusOr<std::string> {
        std::shared_ptr<const CtrDataset> data;
        {
          std::lock_guard<std::mutex> l(mu);
          auto& slot = datasets[std::string(args)];
          if (slot == nullptr) {
            PLEXUS_ASSIGN_OR_RETURN(CtrConfig c, ParseCtrConfig(args));
            PLEXUS_ASSIGN_OR_RETURN(CtrDataset d, CtrDataset::Create(c));
            slot = std::make_shared<const CtrDataset>(std::move(d));
          }
          data = slot;
        }
        std::unique_ptr<CtrParams> host_params;
        CtrParams* params = device_params.get();
        if (params != nullptr) {
          device_params->Bind(ctx.ps(), data->config(), ctx.step_id());
        } else {
          host_params = NewPsParams(data->config(), ctx.ps(), ctx.step_id());
          params = host_params.get();
        }
        PLEXUS_ASSIGN_OR_RETURN(
            StepStats st, TrainStep(*data, ctx.step_id(), *params, **compute));
        int64_t n = ++done;
        {
          std::lock_guard<std::mutex> l(mu);
          comm += st.comm_seconds;
          total += st.total_seconds;
          if (n % 200 == 0) {
            LOG(INFO) << "ctr: " << n << " steps done; communication "
                      << absl::StrFormat("%.0f%%", 100 * comm / total)
                      << " of step time; last loss " << st.loss;
          }
        }
        return absl::StrFormat("%.6f", st.loss);
      });
  if (!reg.ok()) return Fail(reg);
  absl::Status st = (*rt)->Run();
  if (absl::IsUnavailable(st) || absl::IsDeadlineExceeded(st)) {
    // The coordinator could not be reached: retryable (TFJob's ExitCode
    // policy and Kubernetes restart exit codes above 127).
    Fail(st);
    return 138;
  }
  if (!st.ok()) return Fail(st);
  // One line a benchmark can read: the share of step time spent in pulls
  // and pushes (waiting on the PS) over the worker's life.
  LOG(INFO) << "ctr: worker exits after " << done.load()
            << " steps; comm_share "
            << absl::StrFormat("%.3f", total > 0 ? comm / total : 0.0);
  return (*rt)->exit_code();
}

absl::StatusOr<v1::JobStatus> JobStatus(v1::Coordinator::Stub& stub) {
  v1::GetJobStatusRequest req;
  req.set_job_id(FLAGS_job);
  v1::GetJobStatusResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  PLEXUS_RETURN_IF_ERROR(FromGrpcStatus(stub.GetJobStatus(&ctx, req, &resp)));
  return resp.status();
}

// --coordinator and --ps from the local cluster in --cluster_dir.
absl::Status AddressesFromClusterDir() {
  PLEXUS_ASSIGN_OR_RETURN(
      std::vector<local::Member> members,
      local::ReadState(local::StatePath(FLAGS_cluster_dir)));
  std::vector<std::string> ps;
  for (const local::Member& m : members) {
    if (m.role == "coordinator") FLAGS_coordinator = m.address;
    if (m.role == "ps") ps.push_back(m.address);
  }
  FLAGS_ps = absl::StrJoin(ps, ",");
  return absl::OkStatus();
}

int RunDriver(const CtrConfig& c) {
  if (!FLAGS_cluster_dir.empty()) {
    if (absl::Status st = AddressesFromClusterDir(); !st.ok()) return Fail(st);
  }
  if (FLAGS_coordinator.empty() || FLAGS_ps.empty()) {
    return Fail(absl::InvalidArgumentError(
        "--mode=train needs --cluster_dir, or --coordinator and --ps"));
  }
  auto data = CtrDataset::Create(c);
  if (!data.ok()) return Fail(data.status());
  worker::PsClientOptions po;
  po.shards = absl::StrSplit(FLAGS_ps, ',', absl::SkipEmpty());
  auto ps = worker::PsClient::Connect(po);
  if (!ps.ok()) return Fail(ps.status());
  if (auto st = (*ps)->CreateTable(CtrTableConfig(c)); !st.ok()) {
    return Fail(st);
  }
  auto creds = MakeChannelCredentials(ClientTlsOptionsFromFlags());
  if (!creds.ok()) return Fail(creds.status());
  auto stub =
      v1::Coordinator::NewStub(grpc::CreateChannel(FLAGS_coordinator, *creds));
  {
    v1::SubmitJobRequest req;
    req.set_job_id(FLAGS_job);
    req.mutable_steps()->set_function_name("ctr_train");
    req.mutable_steps()->set_num_steps(FLAGS_steps);
    req.mutable_steps()->set_args(FormatCtrConfig(c));
    v1::SubmitJobResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(30));
    absl::Status st = FromGrpcStatus(stub->SubmitJob(&ctx, req, &resp));
    if (!st.ok()) return Fail(st);
    if (!FLAGS_json) {
      std::printf(
          "%s job %s: %lld steps of %lld examples, %d fields, %lld "
          "ids per field, Adagrad on %zu PS shards\n",
          resp.created() ? "submitted" : "resumed", FLAGS_job.c_str(),
          static_cast<long long>(FLAGS_steps), static_cast<long long>(c.batch),
          c.fields, static_cast<long long>(c.vocab), po.shards.size());
    }
  }
  auto compute = NewCompute();
  if (!compute.ok()) return Fail(compute.status());
  std::unique_ptr<CtrParams> params;
  if (OnGpu()) {
    auto p = NewDevicePsParams();
    if (!p.ok()) return Fail(p.status());
    (*p)->Bind(ps->get(), c, 0);
    params = std::move(*p);
  } else {
    params = NewPsParams(c, ps->get(), 0);
  }
  Reporter rep(c, FLAGS_steps, "train",
               OnGpu() ? " (held-out scoring on the GPU)" : "");
  v1::JobStatus js;
  while (true) {
    absl::SleepFor(absl::Seconds(FLAGS_progress_s));
    auto s = JobStatus(*stub);
    if (!s.ok()) return Fail(s.status());
    js = *s;
    auto e = Evaluate(*data, FLAGS_eval_examples, *params, **compute);
    if (!e.ok()) return Fail(e.status());
    rep.Progress(js.closures_succeeded(), *e);
    if (js.state() == v1::JOB_STATE_SUCCEEDED) break;
    if (js.state() == v1::JOB_STATE_FAILED ||
        js.state() == v1::JOB_STATE_CANCELLED) {
      return Fail(absl::AbortedError(absl::StrCat("job ", FLAGS_job, " ended ",
                                                  v1::JobState_Name(js.state()),
                                                  ": ", js.error().message())));
    }
  }
  auto e = Evaluate(*data, 0, *params, **compute);
  if (!e.ok()) return Fail(e.status());
  return rep.Summary(js.closures_succeeded(), *e, js.workers_alive(),
                     js.requeues());
}

}  // namespace
}  // namespace plexus::examples

int main(int argc, char** argv) {
  plexus::InitProcess(
      &argc, &argv,
      "ctr_example: the sparse example (a click-through-rate model trained "
      "through the PS).\n  --mode=worker | train | baseline; see --help.");
  auto c = plexus::examples::ConfigFromFlags();
  if (!c.ok()) return plexus::examples::Fail(c.status());
  if (auto st = plexus::examples::CheckDevice(); !st.ok()) {
    return plexus::examples::Fail(st);
  }
  if (FLAGS_mode == "baseline") return plexus::examples::RunBaseline(*c);
  if (FLAGS_mode == "worker") return plexus::examples::RunWorker(*c);
  if (FLAGS_mode == "train") return plexus::examples::RunDriver(*c);
  return plexus::examples::Fail(absl::InvalidArgumentError(absl::StrCat(
      "--mode must be worker, train or baseline, not '", FLAGS_mode, "'")));
}
