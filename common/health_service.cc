#include "common/health_service.h"

namespace plexus {

// One Watch stream. Writes are serialised: a status that arrives while a
// write is in flight waits in pending_ and only the latest one is sent.
class HealthService::Watcher : public grpc::ServerWriteReactor<Response> {
 public:
  Watcher(HealthService* service, bool known)
      : service_(service), known_(known) {}

  // Called with service_->mu_ held (lock order: service, then watcher).
  void Update(Response::ServingStatus status) {
    absl::MutexLock lock(&mu_);
    if (!known_) status = Response::SERVICE_UNKNOWN;
    if (writing_) {
      pending_ = status;
      has_pending_ = true;
      return;
    }
    WriteLocked(status);
  }

  void RequestFinish() {
    absl::MutexLock lock(&mu_);
    finish_requested_ = true;
    if (!writing_ && !has_pending_) FinishLocked(grpc::Status::OK);
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "write failed"));
    } else if (has_pending_) {
      has_pending_ = false;
      WriteLocked(pending_);
    } else if (finish_requested_) {
      FinishLocked(grpc::Status::OK);
    }
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    if (!writing_) FinishLocked(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    service_->Remove(this);
    delete this;
  }

 private:
  void WriteLocked(Response::ServingStatus status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    response_.set_status(status);
    writing_ = true;
    StartWrite(&response_);
  }
  void FinishLocked(const grpc::Status& st) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    Finish(st);
  }

  HealthService* const service_;
  const bool known_;
  absl::Mutex mu_;
  Response response_ ABSL_GUARDED_BY(mu_);
  Response::ServingStatus pending_ ABSL_GUARDED_BY(mu_) = Response::UNKNOWN;
  bool has_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

void HealthService::SetServing(bool serving) {
  absl::MutexLock lock(&mu_);
  if (shutdown_) return;
  status_ = serving ? Response::SERVING : Response::NOT_SERVING;
  for (Watcher* w : watchers_) w->Update(status_);
}

void HealthService::Shutdown() {
  absl::MutexLock lock(&mu_);
  shutdown_ = true;
  status_ = Response::NOT_SERVING;
  for (Watcher* w : watchers_) {
    w->Update(status_);
    w->RequestFinish();
  }
}

bool HealthService::serving() {
  absl::MutexLock lock(&mu_);
  return status_ == Response::SERVING;
}

grpc::ServerUnaryReactor* HealthService::Check(grpc::CallbackServerContext* ctx,
                                               const Request* request,
                                               Response* response) {
  auto* reactor = ctx->DefaultReactor();
  if (!request->service().empty()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                 "unknown service '" + request->service() +
                                     "'; ask for the empty name"));
    return reactor;
  }
  {
    absl::MutexLock lock(&mu_);
    response->set_status(status_);
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<HealthService::Response>* HealthService::Watch(
    grpc::CallbackServerContext* ctx, const Request* request) {
  auto* w = new Watcher(this, request->service().empty());
  absl::MutexLock lock(&mu_);
  watchers_.insert(w);
  w->Update(status_);
  if (shutdown_) w->RequestFinish();
  return w;
}

void HealthService::Remove(Watcher* w) {
  absl::MutexLock lock(&mu_);
  watchers_.erase(w);
}

}  // namespace plexus
