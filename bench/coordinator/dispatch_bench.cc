// dispatch_bench: the coordinator's dispatch path end to end, with real
// processes on 127.0.0.1 (a plexus-coordinator and worker processes running
// this binary in --mode=worker).
//
//   dispatch_bench [--workers 1,2,4] [--closures 3000] [--reps 5]
//                  [--heartbeat_interval_ms 1000 --suspect_timeout_ms 5000
//                   --dead_timeout_ms 15000 --disconnect_timeout_ms 3000]
//                  [--json FILE]
//
// 1. Dispatch throughput: a job of --closures empty closures (a step
//    function that returns at once) through the coordinator with W worker
//    processes; closures/s from SubmitJob to Join's return, median of
//    --reps.
// 2. Failover: a worker is SIGKILLed while it runs a closure; the time from
//    the kill until that closure starts on another worker, median and max
//    of --reps, printed beside the coordinator's heartbeat and timeouts. A
//    killed process's heartbeat stream closes at once, and the coordinator
//    declares it dead when it has not reconnected within the disconnect
//    timeout; the suspect/dead timeouts bound a process that hangs with its
//    connection open (SIGSTOP), which this benchmark does not measure.
#include <gflags/gflags.h>
#include <glog/logging.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "common/health_client.h"
#include "common/init.h"
#include "common/process.h"
#include "common/status.h"
#include "plexus/v1/coordinator.grpc.pb.h"
#include "plexus/worker/runtime.h"
#include "tools/local/local_cluster.h"

DEFINE_string(mode, "bench", "bench, or worker (what the benchmark starts).");
DEFINE_string(workers, "1,2,4", "Worker counts for the throughput table.");
DEFINE_int64(closures, 3000, "Empty closures per throughput job.");
DEFINE_int32(reps, 5, "Repetitions of each measurement.");
DEFINE_int64(heartbeat_interval_ms, 1000, "Coordinator flag, passed on.");
DEFINE_int64(suspect_timeout_ms, 5000, "Coordinator flag, passed on.");
DEFINE_int64(dead_timeout_ms, 15000, "Coordinator flag, passed on.");
DEFINE_int64(disconnect_timeout_ms, 3000, "Coordinator flag, passed on.");
DEFINE_string(bin_dir, "",
              "Folder with plexus-coordinator (default: next to this binary).");
DEFINE_string(json, "", "Also write the results as JSON here.");
// --mode=worker
DEFINE_string(coordinator, "", "(worker) coordinator address.");
DEFINE_string(role, "noop",
              "(worker) noop: closures return at once; victim: the closure "
              "runs until the process is killed; survivor: the closure writes "
              "the wall-clock time (ns) to --record_file and returns.");
DEFINE_string(record_file, "", "(worker, survivor) where to record.");

namespace plexus {
namespace {

int64_t NowNs() { return absl::ToUnixNanos(absl::Now()); }

std::string SelfPath() {
  return std::filesystem::read_symlink("/proc/self/exe").string();
}

int RunWorker() {
  worker::RuntimeOptions o;
  o.coordinator = FLAGS_coordinator;
  o.next_task_wait = absl::Milliseconds(500);
  auto rt = worker::Runtime::Create(o);
  if (!rt.ok()) {
    LOG(ERROR) << rt.status();
    return 1;
  }
  const std::string role = FLAGS_role;
  const std::string record = FLAGS_record_file;
  absl::Status st = (*rt)->RegisterStep(
      role == "noop" ? "noop" : "hold",
      [&](absl::string_view,
          worker::StepContext& ctx) -> absl::StatusOr<std::string> {
        if (role == "victim") {
          // Runs until killed (or told to stop).
          while (!ctx.cancelled()) absl::SleepFor(absl::Milliseconds(5));
          return absl::AbortedError("stopped");
        }
        if (role == "survivor") {
          PLEXUS_RETURN_IF_ERROR(
              WriteFileAtomically(record, absl::StrCat(NowNs())));
        }
        return std::string();
      });
  if (!st.ok()) {
    LOG(ERROR) << st;
    return 1;
  }
  st = (*rt)->Run();
  if (!st.ok()) {
    LOG(ERROR) << st;
    return 1;
  }
  return (*rt)->exit_code();
}

struct Bench {
  std::string dir;
  std::unique_ptr<Subprocess> coordinator;
  std::string address;
  std::unique_ptr<v1::Coordinator::Stub> stub;
  int job_seq = 0;

  absl::Status Start() {
    dir = std::filesystem::temp_directory_path() /
          absl::StrCat("dispatch-bench-", getpid());
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    std::string bin_dir =
        FLAGS_bin_dir.empty()
            ? std::filesystem::path(SelfPath()).parent_path().string()
            : FLAGS_bin_dir;
    SubprocessOptions so;
    so.argv = {
        bin_dir + "/plexus-coordinator",
        "--data_dir=" + dir + "/coordinator",
        "--port=0",
        "--port_file=" + dir + "/port",
        "--admin_port=-1",
        absl::StrCat("--heartbeat_interval_ms=", FLAGS_heartbeat_interval_ms),
        absl::StrCat("--suspect_timeout_ms=", FLAGS_suspect_timeout_ms),
        absl::StrCat("--dead_timeout_ms=", FLAGS_dead_timeout_ms),
        absl::StrCat("--disconnect_timeout_ms=", FLAGS_disconnect_timeout_ms),
        "--max_restarts_per_worker=-1"};
    so.log_file = dir + "/coordinator.log";
    PLEXUS_ASSIGN_OR_RETURN(coordinator, Subprocess::Start(so));
    PLEXUS_ASSIGN_OR_RETURN(
        int port,
        WaitForPortFile(dir + "/port", absl::Seconds(30), coordinator.get()));
    address = absl::StrCat("127.0.0.1:", port);
    PLEXUS_RETURN_IF_ERROR(WaitUntilServing(address, absl::Seconds(30)));
    stub = v1::Coordinator::NewStub(
        grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<Subprocess>> StartWorker(
      const std::string& role, const std::string& record_file = "") {
    SubprocessOptions so;
    so.argv = {SelfPath(), "--mode=worker", "--coordinator=" + address,
               "--role=" + role, "--record_file=" + record_file};
    so.log_file = dir + "/workers.log";
    PLEXUS_ASSIGN_OR_RETURN(auto p, Subprocess::Start(so));
    PLEXUS_RETURN_IF_ERROR(
        local::WaitForWorker(address, p->pid(), absl::Seconds(30), p.get()));
    return p;
  }

  absl::StatusOr<std::string> Submit(const std::string& fn, int64_t steps) {
    v1::SubmitJobRequest req;
    req.set_job_id(absl::StrCat(fn, "-", ++job_seq));
    req.mutable_steps()->set_function_name(fn);
    req.mutable_steps()->set_num_steps(steps);
    v1::SubmitJobResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(30));
    PLEXUS_RETURN_IF_ERROR(FromGrpcStatus(stub->SubmitJob(&ctx, req, &resp)));
    return resp.job_id();
  }

  absl::Status Join(const std::string& job) {
    v1::JoinRequest req;
    req.set_job_id(job);
    v1::JoinResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(600));
    return FromGrpcStatus(stub->Join(&ctx, req, &resp));
  }

  absl::StatusOr<v1::JobStatus> Status(const std::string& job) {
    v1::GetJobStatusRequest req;
    req.set_job_id(job);
    v1::GetJobStatusResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(10));
    PLEXUS_RETURN_IF_ERROR(
        FromGrpcStatus(stub->GetJobStatus(&ctx, req, &resp)));
    return resp.status();
  }
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  if (v.empty()) return 0;
  return v.size() % 2 ? v[v.size() / 2]
                      : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

// Closures per second through the coordinator with `n` workers.
absl::StatusOr<std::vector<double>> Throughput(Bench& b, int n) {
  std::vector<std::unique_ptr<Subprocess>> workers;
  for (int i = 0; i < n; ++i) {
    PLEXUS_ASSIGN_OR_RETURN(auto w, b.StartWorker("noop"));
    workers.push_back(std::move(w));
  }
  std::vector<double> rates;
  for (int r = 0; r < FLAGS_reps; ++r) {
    absl::Time t0 = absl::Now();
    PLEXUS_ASSIGN_OR_RETURN(std::string job, b.Submit("noop", FLAGS_closures));
    PLEXUS_RETURN_IF_ERROR(b.Join(job));
    rates.push_back(FLAGS_closures / absl::ToDoubleSeconds(absl::Now() - t0));
  }
  for (auto& w : workers) w->Signal(SIGTERM).IgnoreError();
  for (auto& w : workers) w->Wait(absl::Seconds(30)).IgnoreError();
  return rates;
}

// Seconds from SIGKILL of a busy worker until its closure starts elsewhere.
absl::StatusOr<double> Failover(Bench& b, int rep) {
  std::string record = absl::StrCat(b.dir, "/record-", rep);
  PLEXUS_ASSIGN_OR_RETURN(auto victim, b.StartWorker("victim"));
  PLEXUS_ASSIGN_OR_RETURN(std::string job, b.Submit("hold", 1));
  // Wait until the victim runs the closure.
  for (absl::Duration d = absl::Milliseconds(1);;
       d = std::min(d * 2, absl::Milliseconds(20))) {
    PLEXUS_ASSIGN_OR_RETURN(v1::JobStatus s, b.Status(job));
    if (s.closures_running() == 1) break;
    absl::SleepFor(d);
  }
  PLEXUS_ASSIGN_OR_RETURN(auto survivor, b.StartWorker("survivor", record));
  int64_t killed_ns = NowNs();
  PLEXUS_RETURN_IF_ERROR(victim->Signal(SIGKILL));
  PLEXUS_RETURN_IF_ERROR(b.Join(job));
  std::ifstream in(record);
  std::string text;
  int64_t started_ns = 0;
  if (!std::getline(in, text) || !absl::SimpleAtoi(text, &started_ns)) {
    return absl::InternalError("the survivor did not record the closure");
  }
  survivor->Signal(SIGTERM).IgnoreError();
  survivor->Wait(absl::Seconds(30)).IgnoreError();
  victim->Wait(absl::Seconds(10)).IgnoreError();
  return (started_ns - killed_ns) / 1e9;
}

int RunBench() {
  Bench b;
  if (absl::Status st = b.Start(); !st.ok()) {
    std::fprintf(stderr, "dispatch_bench: %s\n", st.ToString().c_str());
    return 1;
  }
  std::printf(
      "dispatch_bench: %u cores, coordinator %s, %lld empty closures "
      "per job, %d reps (medians)\n\n",
      std::thread::hardware_concurrency(), b.address.c_str(),
      static_cast<long long>(FLAGS_closures), FLAGS_reps);
  std::printf("%-8s %12s %12s %14s\n", "workers", "closures/s", "min",
              "us/closure");
  std::string json = "{\"throughput\":[";
  bool first = true;
  for (absl::string_view w : absl::StrSplit(FLAGS_workers, ',')) {
    int n = 0;
    if (!absl::SimpleAtoi(w, &n) || n < 1) {
      std::fprintf(stderr, "dispatch_bench: bad --workers entry '%s'\n",
                   std::string(w).c_str());
      return 1;
    }
    auto rates = Throughput(b, n);
    if (!rates.ok()) {
      std::fprintf(stderr, "dispatch_bench: %s\n",
                   rates.status().ToString().c_str());
      return 1;
    }
    double med = Median(*rates);
    double mn = *std::min_element(rates->begin(), rates->end());
    std::printf("%-8d %12.0f %12.0f %14.1f\n", n, med, mn, 1e6 / med);
    absl::StrAppend(&json, first ? "" : ",", "{\"workers\":", n,
                    ",\"closures_per_s\":", med, ",\"min\":", mn, "}");
    first = false;
  }
  std::vector<double> failover;
  for (int r = 0; r < FLAGS_reps; ++r) {
    auto s = Failover(b, r);
    if (!s.ok()) {
      std::fprintf(stderr, "dispatch_bench: failover: %s\n",
                   s.status().ToString().c_str());
      return 1;
    }
    failover.push_back(*s);
  }
  double fmed = Median(failover);
  double fmax = *std::max_element(failover.begin(), failover.end());
  std::printf(
      "\nfailover (SIGKILL of a busy worker -> its closure starts on another):"
      "\n  median %.1f ms, max %.1f ms over %d kills\n"
      "  coordinator: heartbeat every %lld ms, suspect after %lld ms, dead "
      "after %lld ms of silence or %lld ms after a closed heartbeat stream\n",
      fmed * 1e3, fmax * 1e3, FLAGS_reps,
      static_cast<long long>(FLAGS_heartbeat_interval_ms),
      static_cast<long long>(FLAGS_suspect_timeout_ms),
      static_cast<long long>(FLAGS_dead_timeout_ms),
      static_cast<long long>(FLAGS_disconnect_timeout_ms));
  absl::StrAppend(&json, "],\"failover_ms\":{\"median\":", fmed * 1e3,
                  ",\"max\":", fmax * 1e3,
                  "},\"heartbeat_interval_ms\":", FLAGS_heartbeat_interval_ms,
                  ",\"suspect_timeout_ms\":", FLAGS_suspect_timeout_ms,
                  ",\"dead_timeout_ms\":", FLAGS_dead_timeout_ms,
                  ",\"disconnect_timeout_ms\":", FLAGS_disconnect_timeout_ms,
                  "}\n");
  if (!FLAGS_json.empty()) {
    if (absl::Status st = WriteFileAtomically(FLAGS_json, json); !st.ok()) {
      std::fprintf(stderr, "dispatch_bench: %s\n", st.ToString().c_str());
      return 1;
    }
  }
  b.coordinator->Signal(SIGTERM).IgnoreError();
  b.coordinator->Wait(absl::Seconds(30)).IgnoreError();
  std::filesystem::remove_all(b.dir);
  return 0;
}

}  // namespace
}  // namespace plexus

int main(int argc, char** argv) {
  plexus::InitProcess(
      &argc, &argv,
      "dispatch_bench: closures per second through plexus-coordinator with "
      "1..N worker processes, and the failover time after a worker dies.");
  if (FLAGS_mode == "worker") return plexus::RunWorker();
  if (FLAGS_mode != "bench") {
    std::fprintf(stderr, "dispatch_bench: --mode must be bench or worker\n");
    return 1;
  }
  return plexus::RunBench();
}
