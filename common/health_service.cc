#include "common/health_service.h"

namespace plexus {

void HealthService::SetServing(bool serving) {
  absl::MutexLock lock(&mu_);
  if (shutdown_) return;
  status_ = serving ? Response::SERVING : Response::NOT_SERVING;
  changed_.SignalAll();
}

void HealthService::Shutdown() {
  absl::MutexLock lock(&mu_);
  shutdown_ = true;
  status_ = Response::NOT_SERVING;
  changed_.SignalAll();
}

bool HealthService::serving() {
  absl::MutexLock lock(&mu_);
  return status_ == Response::SERVING;
}

grpc::Status HealthService::Check(grpc::ServerContext*, const Request* request,
                                  Response* response) {
  if (!request->service().empty()) {
    return grpc::Status(
        grpc::StatusCode::NOT_FOUND,
        "unknown service '" + request->service() + "'; ask for the empty name");
  }
  absl::MutexLock lock(&mu_);
  response->set_status(status_);
  return grpc::Status::OK;
}

grpc::Status HealthService::Watch(grpc::ServerContext* ctx,
                                  const Request* request,
                                  grpc::ServerWriter<Response>* writer) {
  const bool known = request->service().empty();
  bool sent_any = false;
  Response::ServingStatus sent = Response::UNKNOWN;
  absl::MutexLock lock(&mu_);
  while (true) {
    const Response::ServingStatus now =
        known ? status_ : Response::SERVICE_UNKNOWN;
    if (!sent_any || now != sent) {
      Response response;
      response.set_status(now);
      mu_.Unlock();
      const bool ok = writer->Write(response);
      mu_.Lock();
      if (!ok) return grpc::Status(grpc::StatusCode::CANCELLED, "write failed");
      sent_any = true;
      sent = now;
      continue;  // the status may have changed while writing
    }
    // Shut down and the watcher has seen NOT_SERVING: end the stream so that
    // it does not hold the drain open.
    if (shutdown_) return grpc::Status::OK;
    if (ctx->IsCancelled()) return grpc::Status::CANCELLED;
    // The bound only makes a cancelled watcher's thread notice promptly;
    // status changes wake it at once.
    changed_.WaitWithTimeout(&mu_, absl::Milliseconds(200));
  }
}

}  // namespace plexus
