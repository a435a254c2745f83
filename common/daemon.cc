#include "common/daemon.h"

#include <pthread.h>
#include <signal.h>

#include <glog/logging.h>
#include <grpc/grpc.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/support/server_interceptor.h>

#include <atomic>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/admin_http.h"
#include "common/auth.h"
#include "common/health_service.h"
#include "common/metrics.h"
#include "common/process.h"
#include "common/status.h"
#include "plexus/config.h"

namespace plexus {
namespace {

// Counts the calls in flight, so that a drain can end as soon as the last one
// finishes: gRPC's Shutdown(deadline) otherwise waits for every connected
// client to hang up, which clients that keep channels open never do.
class InflightCalls {
 public:
  void Add(int delta) {
    absl::MutexLock lock(&mu_);
    n_ += delta;
    gauge_->Set(n_);
  }
  // Waits until no call is in flight or `deadline` passes; returns the count.
  int WaitForZero(absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    auto zero = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return n_ == 0; };
    mu_.AwaitWithDeadline(absl::Condition(&zero), deadline);
    return n_;
  }

 private:
  absl::Mutex mu_;
  int n_ ABSL_GUARDED_BY(mu_) = 0;
  Gauge* const gauge_ =
      Metrics()->GetGauge("plexus_rpc_in_flight", "RPCs being served now.");
};

// Counts a call while it is in flight and records it in the metrics when it
// ends: plexus_rpc_requests_total{method,code} and
// plexus_rpc_duration_seconds{method}.
class CountingInterceptor : public grpc::experimental::Interceptor {
 public:
  CountingInterceptor(InflightCalls* calls, const char* method)
      : calls_(calls),
        method_(method ? method : "unknown"),
        start_(absl::Now()) {
    calls_->Add(1);
  }
  ~CountingInterceptor() override {
    // A call that never sent a status was cancelled.
    if (!recorded_) Record("CANCELLED");
    calls_->Add(-1);
  }
  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    // Recorded before the status leaves, so a client that has its answer
    // also finds the call counted.
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      Record(absl::StatusCodeToString(static_cast<absl::StatusCode>(
          methods->GetSendStatus().error_code())));
    }
    methods->Proceed();
  }

 private:
  InflightCalls* const calls_;
  const std::string method_;
  const absl::Time start_;
  bool recorded_ = false;

  void Record(const std::string& code) {
    recorded_ = true;
    RecordRpc(method_, code, absl::Now() - start_);
  }
};

class CountingInterceptorFactory
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit CountingInterceptorFactory(InflightCalls* calls) : calls_(calls) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new CountingInterceptor(calls_, info->method());
  }

 private:
  InflightCalls* const calls_;
};

class DaemonImpl : public Daemon {
 public:
  DaemonImpl(DaemonOptions options, std::unique_ptr<InflightCalls> inflight,
             std::unique_ptr<HealthService> health,
             std::unique_ptr<grpc::Server> server, int port)
      : options_(std::move(options)),
        inflight_(std::move(inflight)),
        health_(std::move(health)),
        server_(std::move(server)),
        port_(port) {
    Metrics()
        ->GetGauge("plexus_build_info", "Build of this binary (value 1).",
                   {{"binary", options_.name},
                    {"version", PLEXUS_VERSION},
                    {"commit", PLEXUS_GIT_COMMIT}})
        ->Set(1);
    Metrics()
        ->GetGauge("plexus_process_start_time_seconds",
                   "When this process started, seconds since the Unix epoch.")
        ->Set(absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()));
    signal_thread_ = std::thread([this] { WaitForSignal(); });
  }

  ~DaemonImpl() override {
    Shutdown();
    if (signal_thread_.joinable()) signal_thread_.join();
  }

  int port() const override { return port_; }
  int admin_port() const override { return admin_ ? admin_->port() : 0; }

  absl::Status StartAdmin() {
    if (options_.admin_port < 0) return absl::OkStatus();
    PLEXUS_ASSIGN_OR_RETURN(admin_, AdminHttpServer::Start(
                                        options_.host, options_.admin_port,
                                        [this] { return health_->serving(); },
                                        options_.admin_pages));
    if (!options_.admin_port_file.empty()) {
      PLEXUS_RETURN_IF_ERROR(
          WriteFileAtomically(options_.admin_port_file,
                              absl::StrCat(admin_->port(), "\n")),
          "writing --admin_port_file");
    }
    std::string pages = "/metrics, /healthz";
    for (const auto& [path, handler] : options_.admin_pages) {
      absl::StrAppend(&pages, ", ", path);
    }
    LOG(INFO) << options_.name << ": admin HTTP (" << pages << ") on "
              << options_.host << ":" << admin_->port();
    return absl::OkStatus();
  }
  std::string address() const override {
    return absl::StrCat(options_.host, ":", port_);
  }

  void SetServing(bool serving) override { health_->SetServing(serving); }

  absl::Status Run() override {
    stop_.WaitForNotification();
    LOG(INFO) << options_.name << ": draining (" << stop_reason_
              << "); health NOT_SERVING, grace "
              << absl::FormatDuration(options_.grace);
    // New calls are refused from here on; watchers see NOT_SERVING, then
    // their streams end so that they do not hold the drain open.
    RefuseNewCalls(absl::StrCat(options_.name, " is draining (", stop_reason_,
                                "); retry elsewhere or after its restart"));
    health_->Shutdown();
    // Shutdown() refuses new calls at once and returns when every call has
    // finished and every client has hung up, or at the deadline, cancelling
    // what is left. Clients that keep their channels open never hang up, so
    // once the calls in flight are done the connections are closed here.
    absl::Time deadline = absl::Now() + options_.grace;
    absl::Notification shutting_down;
    std::thread shutdown([this, deadline, &shutting_down] {
      shutting_down.Notify();
      server_->Shutdown(absl::ToChronoTime(deadline));
    });
    shutting_down.WaitForNotification();
    if (options_.on_drain) options_.on_drain();
    int left = inflight_->WaitForZero(deadline);
    if (left > 0) {
      LOG(WARNING) << options_.name << ": " << left
                   << " call(s) still in flight after the grace period; "
                      "cancelling them";
    }
    grpc_server_cancel_all_calls(server_->c_server());
    shutdown.join();
    server_->Wait();
    LOG(INFO) << options_.name << ": stopped";
    return absl::OkStatus();
  }

  void Shutdown() override {
    if (!stopping_.exchange(true)) {
      stop_reason_ = "shutdown requested";
      // Wake the signal thread so it can be joined.
      pthread_kill(signal_thread_.native_handle(), SIGTERM);
    }
  }

 private:
  void WaitForSignal() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    int sig = 0;
    while (sigwait(&set, &sig) != 0) {
    }
    if (!stopping_.exchange(true)) {
      stop_reason_ = sig == SIGTERM ? "SIGTERM" : "SIGINT";
    }
    stop_.Notify();
  }

  const DaemonOptions options_;
  // Both outlive server_.
  const std::unique_ptr<InflightCalls> inflight_;
  const std::unique_ptr<HealthService> health_;
  const std::unique_ptr<grpc::Server> server_;
  const int port_;
  std::unique_ptr<AdminHttpServer> admin_;
  std::atomic<bool> stopping_{false};
  // Written once, by whoever sets stopping_ first, before stop_ is notified.
  const char* stop_reason_ = "";
  absl::Notification stop_;
  std::thread signal_thread_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(
    const DaemonOptions& options, const std::vector<grpc::Service*>& services) {
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("port must be in 0..65535, got ", options.port));
  }
  // Termination signals are taken by the signal thread alone (sigwait), so
  // they must be blocked before gRPC starts its threads.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  PLEXUS_RETURN_IF_ERROR(InstallServerAuth(options.auth_token_file),
                         "--auth_token_file");
  auto inflight = std::make_unique<InflightCalls>();
  auto health = std::make_unique<HealthService>();
  grpc::ServerBuilder builder;
  std::vector<
      std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(
      std::make_unique<CountingInterceptorFactory>(inflight.get()));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  builder.RegisterService(health.get());
  int port = 0;
  std::string bind = absl::StrCat(options.host, ":", options.port);
  PLEXUS_ASSIGN_OR_RETURN(auto credentials, MakeServerCredentials(options.tls),
                          "TLS");
  builder.AddListeningPort(bind, credentials, &port);
  // Sync-API pollers notice a shutdown only when their poll times out
  // (default 10 s): keep that short so a drain ends promptly.
  builder.SetSyncServerOption(
      grpc::ServerBuilder::SyncServerOption::CQ_TIMEOUT_MSEC, 100);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  for (grpc::Service* s : services) builder.RegisterService(s);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(
        absl::StrCat(options.name, ": cannot listen on ", bind,
                     " (address in use or not available on this host)"));
  }
  health->SetServing(true);
  auto daemon = std::make_unique<DaemonImpl>(
      options, std::move(inflight), std::move(health), std::move(server), port);
  PLEXUS_RETURN_IF_ERROR(daemon->StartAdmin());
  if (!options.port_file.empty()) {
    PLEXUS_RETURN_IF_ERROR(
        WriteFileAtomically(options.port_file, absl::StrCat(port, "\n")),
        "writing --port_file");
  }
  LOG(INFO) << options.name << ": listening on " << daemon->address()
            << (options.tls.enabled()
                    ? (options.tls.client_ca_file.empty() ? " (TLS)"
                                                          : " (mutual TLS)")
                    : " (plaintext)")
            << (ServerAuthEnabled() ? ", tokens required" : "");
  return daemon;
}

}  // namespace plexus
