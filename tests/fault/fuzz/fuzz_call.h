// What the service fuzzers share: random bytes parsed as a request and handed
// to a gRPC handler in-process, as the server would (a fresh ServerContext;
// the status is ignored: any status is fine, a crash or sanitizer report is
// not). Inputs that do not parse are skipped.
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstddef>
#include <cstdint>

namespace plexus::fuzz {

// `fix` may adjust the parsed request first (e.g. clamp waits to 1 ms so no
// input blocks the fuzzer).
template <typename Req, typename Resp, typename Service, typename Method,
          typename Fix>
void CallHandler(Service* service, const uint8_t* data, size_t size,
                 Method method, Fix fix) {
  Req req;
  if (!req.ParseFromArray(data, static_cast<int>(size))) return;
  fix(req);
  Resp resp;
  grpc::ServerContext ctx;
  (void)(service->*method)(&ctx, &req, &resp);
}

template <typename Req, typename Resp, typename Service, typename Method>
void CallHandler(Service* service, const uint8_t* data, size_t size,
                 Method method) {
  CallHandler<Req, Resp>(service, data, size, method, [](Req&) {});
}

}  // namespace plexus::fuzz
