// health_rtt: times gRPC health checks (grpc.health.v1.Health/Check) against
// daemons, for the multi-host rehearsal's link-delay test, which runs it
// inside a worker's host to see the delay that host's connections meet.
//
//   health_rtt --count=N TARGET ...
//
// For each TARGET (host:port, resolved as the workers resolve their spec
// addresses): connects, makes one check to warm the connection up, then N
// checks one after another, and prints one line
//   "health_rtt: TARGET min=A median=B max=C ms"
// Exit 0 when every check answered SERVING, 1 otherwise.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"

namespace {

namespace health = ::grpc::health::v1;

bool Check(health::Health::Stub* stub) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  health::HealthCheckRequest req;
  health::HealthCheckResponse resp;
  grpc::Status st = stub->Check(&ctx, req, &resp);
  if (!st.ok()) {
    fprintf(stderr, "health_rtt: check failed: %s\n",
            st.error_message().c_str());
    return false;
  }
  return resp.status() == health::HealthCheckResponse::SERVING;
}

constexpr char kUsage[] =
    R"(health_rtt: times gRPC health checks (grpc.health.v1.Health/Check) to
daemons. For each target: connects, makes one untimed check, then N timed
checks one after another, and prints
  health_rtt: TARGET min=A median=B max=C ms
Exits 0 when every check answered SERVING, 1 otherwise, 2 on bad arguments.

usage: health_rtt [--count=5] HOST:PORT ...
  --count=5    timed checks per target
  -h, --help   print this and exit
)";

}  // namespace

int main(int argc, char** argv) {
  int count = 5;
  std::vector<std::string> targets;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      fputs(kUsage, stdout);
      return 0;
    }
    if (arg.rfind("--count=", 0) == 0) {
      char* end = nullptr;
      count = static_cast<int>(strtol(arg.c_str() + 8, &end, 10));
      if (end == arg.c_str() + 8 || *end != '\0') count = 0;
    } else if (arg.rfind("-", 0) == 0) {
      fprintf(stderr, "health_rtt: unknown flag '%s' (see --help)\n",
              arg.c_str());
      return 2;
    } else {
      targets.push_back(arg);
    }
  }
  if (count < 1 || targets.empty()) {
    fprintf(stderr,
            "health_rtt: need --count >= 1 and at least one HOST:PORT\n"
            "usage: health_rtt [--count=N] HOST:PORT ... (see --help)\n");
    return 2;
  }
  for (const std::string& target : targets) {
    auto stub = health::Health::NewStub(
        grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
    if (!Check(stub.get())) {  // connects; not timed
      fprintf(stderr, "health_rtt: %s is not serving\n", target.c_str());
      return 1;
    }
    std::vector<double> ms;
    for (int i = 0; i < count; ++i) {
      auto start = std::chrono::steady_clock::now();
      if (!Check(stub.get())) return 1;
      ms.push_back(std::chrono::duration<double, std::milli>(
                       std::chrono::steady_clock::now() - start)
                       .count());
    }
    std::sort(ms.begin(), ms.end());
    printf("health_rtt: %s min=%.1f median=%.1f max=%.1f ms\n", target.c_str(),
           ms.front(), ms[ms.size() / 2], ms.back());
  }
  return 0;
}
