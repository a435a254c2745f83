// libFuzzer target: random bytes as a request to every data-plane and
// admin RPC of the PS service (in-process, real engine, handlers called as
// gRPC would). The first byte picks the RPC, the rest is the serialized
// request. Every input must get a status back, never a crash, a sanitizer
// report or a hang. The checkpoint RPCs are left out: they write files
// (their path checks are in ps_bad_input_test).
#include <grpcpp/grpcpp.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "ps/service/ps_service.h"
#include "tests/fault/fuzz/fuzz_call.h"

namespace {

plexus::ps::PsService* Service() {
  static plexus::ps::PsService* service = [] {
    auto engine = plexus::ps::CreateEngine();
    if (!engine.ok()) abort();
    auto* s = new plexus::ps::PsService(0, std::move(*engine), 64 << 20);
    // Something to hit: a table and a variable.
    plexus::v1::CreateTableRequest t;
    t.mutable_config()->set_name("emb");
    t.mutable_config()->set_dim(4);
    t.mutable_config()->mutable_optimizer()->mutable_sgd()->set_learning_rate(
        0.5);
    plexus::v1::CreateTableResponse tr;
    grpc::ServerContext c1;
    (void)s->CreateTable(&c1, &t, &tr);
    plexus::v1::CreateVariableRequest v;
    v.mutable_config()->set_name("w");
    v.mutable_config()->mutable_spec()->set_dtype(plexus::v1::DTYPE_FLOAT32);
    v.mutable_config()->mutable_spec()->add_shape(4);
    v.mutable_config()->mutable_spec()->add_shape(3);
    *v.mutable_config()->mutable_optimizer() = t.config().optimizer();
    plexus::v1::CreateVariableResponse vr;
    grpc::ServerContext c2;
    (void)s->CreateVariable(&c2, &v, &vr);
    return s;
  }();
  return service;
}

template <typename Req, typename Resp, typename... Fix>
void Call(const uint8_t* data, size_t size, auto method, Fix... fix) {
  plexus::fuzz::CallHandler<Req, Resp>(Service(), data, size, method, fix...);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  namespace v1 = plexus::v1;
  using S = plexus::ps::PsService;
  const uint8_t* body = data + 1;
  const size_t n = size - 1;
  switch (data[0] % 9) {
    case 0:
      Call<v1::PullRequest, v1::PullResponse>(body, n, &S::Pull);
      break;
    case 1:
      Call<v1::PushRequest, v1::PushResponse>(body, n, &S::Push);
      break;
    case 2:
      Call<v1::PushPullRequest, v1::PushPullResponse>(body, n, &S::PushPull);
      break;
    case 3:
      Call<v1::CreateVariableRequest, v1::CreateVariableResponse>(
          body, n, &S::CreateVariable);
      break;
    case 4:
      Call<v1::CreateTableRequest, v1::CreateTableResponse>(body, n,
                                                            &S::CreateTable);
      break;
    case 5:
      Call<v1::DescribeRequest, v1::DescribeResponse>(body, n, &S::Describe);
      break;
    case 6:
      Call<v1::UpdateShardMapRequest, v1::UpdateShardMapResponse>(
          body, n, &S::UpdateShardMap);
      break;
    case 7:
      Call<v1::DeleteVariableRequest, v1::DeleteVariableResponse>(
          body, n, &S::DeleteVariable);
      break;
    case 8:
      Call<v1::DeleteTableRequest, v1::DeleteTableResponse>(body, n,
                                                            &S::DeleteTable);
      break;
  }
  return 0;
}
