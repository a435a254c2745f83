#include "common/admin_http.h"

#include <httplib.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "common/metrics.h"

namespace plexus {
namespace {

class AdminHttpServerImpl : public AdminHttpServer {
 public:
  AdminHttpServerImpl(std::function<bool()> serving,
                      const AdminHttpHandlers& extra)
      : serving_(std::move(serving)) {
    server_.new_task_queue = [] { return new httplib::ThreadPool(2); };
    server_.Get(
        "/metrics", [](const httplib::Request&, httplib::Response& res) {
          res.set_content(Metrics()->Render(), "text/plain; version=0.0.4");
        });
    server_.Get(
        "/healthz", [this](const httplib::Request&, httplib::Response& res) {
          bool ok = serving_();
          res.status = ok ? 200 : 503;
          res.set_content(ok ? "SERVING\n" : "NOT_SERVING\n", "text/plain");
        });
    for (const auto& [path, handler] : extra) {
      if (path == "/metrics" || path == "/healthz") continue;
      server_.Get(path,
                  [handler](const httplib::Request&, httplib::Response& res) {
                    AdminHttpResponse r = handler();
                    res.status = r.status;
                    if (!r.location.empty())
                      res.set_header("Location", r.location);
                    res.set_content(r.body, r.content_type);
                  });
    }
  }

  ~AdminHttpServerImpl() override {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }

  absl::Status Bind(const std::string& host, int port) {
    if (port == 0) {
      port_ = server_.bind_to_any_port(host);
      if (port_ < 0) port_ = 0;
    } else if (server_.bind_to_port(host, port)) {
      port_ = port;
    }
    if (port_ <= 0) {
      return absl::UnavailableError(
          absl::StrCat("admin HTTP: cannot listen on ", host, ":", port));
    }
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    return absl::OkStatus();
  }

  int port() const override { return port_; }

 private:
  std::function<bool()> serving_;
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<AdminHttpServer>> AdminHttpServer::Start(
    const std::string& host, int port, std::function<bool()> serving,
    const AdminHttpHandlers& extra) {
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("admin port must be in 0..65535, got ", port));
  }
  auto s = std::make_unique<AdminHttpServerImpl>(std::move(serving), extra);
  absl::Status st = s->Bind(host, port);
  if (!st.ok()) return st;
  return s;
}

}  // namespace plexus
