// Random and mutated requests straight into the PS service's handlers
// (in-process, real engine): every one gets a status, none crashes, and the
// service still answers a well-formed request afterwards. A bounded, seeded
// stand-in for the libFuzzer target of the fault-suite issue.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <random>

#include "ps/service/ps_service.h"

namespace plexus::ps {
namespace {

v1::PushRequest ValidPush(std::mt19937_64& rng) {
  v1::PushRequest req;
  auto* u = req.add_sparse();
  u->set_table("emb");
  int n = 1 + static_cast<int>(rng() % 8);
  for (int i = 0; i < n; ++i) u->add_ids(rng() % 1000);
  u->mutable_grads()->mutable_spec()->set_dtype(v1::DTYPE_FLOAT32);
  u->mutable_grads()->mutable_spec()->add_shape(n);
  u->mutable_grads()->mutable_spec()->add_shape(4);
  std::string data(n * 4 * sizeof(float), '\0');
  for (int i = 0; i < n * 4; ++i) {
    float f = static_cast<float>(rng() % 100) / 10.0f;
    std::memcpy(&data[i * sizeof(float)], &f, sizeof(float));
  }
  u->mutable_grads()->set_data(data);
  auto* d = req.add_dense();
  d->set_variable("w");
  d->mutable_rows()->set_row_begin(0);
  d->mutable_rows()->set_row_end(2);
  d->mutable_tensor()->mutable_spec()->set_dtype(v1::DTYPE_FLOAT32);
  d->mutable_tensor()->mutable_spec()->add_shape(2);
  d->mutable_tensor()->mutable_spec()->add_shape(3);
  d->mutable_tensor()->set_data(std::string(24, '\0'));
  return req;
}

// Byte-level mutation: flips, insertions, deletions, truncation.
std::string Mutate(std::string s, std::mt19937_64& rng) {
  int edits = 1 + static_cast<int>(rng() % 6);
  for (int e = 0; e < edits && !s.empty(); ++e) {
    size_t at = rng() % s.size();
    switch (rng() % 4) {
      case 0:
        s[at] ^= static_cast<char>(1 << (rng() % 8));
        break;
      case 1:
        s.insert(at, 1, static_cast<char>(rng()));
        break;
      case 2:
        s.erase(at, 1);
        break;
      case 3:
        s.resize(at);
        break;
    }
  }
  return s;
}

// Field-level mutation: hostile shapes, dtypes, ranges and lengths.
void Hostile(v1::PushRequest* req, std::mt19937_64& rng) {
  const int64_t dims[] = {-1,      0,         1,         3,
                          1 << 20, INT64_MAX, INT64_MIN, 1LL << 40};
  for (auto& u : *req->mutable_sparse()) {
    auto* spec = u.mutable_grads()->mutable_spec();
    if (rng() % 2) spec->set_shape(0, dims[rng() % 8]);
    if (rng() % 3 == 0) spec->add_shape(dims[rng() % 8]);
    if (rng() % 4 == 0) spec->set_dtype(static_cast<v1::DType>(rng() % 10));
    if (rng() % 4 == 0) u.set_table(rng() % 2 ? "" : "../etc/passwd");
  }
  for (auto& d : *req->mutable_dense()) {
    if (rng() % 2) d.mutable_rows()->set_row_begin(dims[rng() % 8]);
    if (rng() % 2) d.mutable_rows()->set_row_end(dims[rng() % 8]);
    if (rng() % 3 == 0)
      d.mutable_tensor()->set_data(std::string(rng() % 64, 'x'));
  }
  req->set_num_chunks(static_cast<uint32_t>(rng()));
  req->set_chunk_index(static_cast<uint32_t>(rng()));
}

TEST(PsServiceFuzz, RandomAndMutatedRequestsNeverCrash) {
  auto engine = CreateEngine();
  ASSERT_TRUE(engine.ok());
  PsService service(0, std::move(*engine), 64 << 20);
  {
    v1::CreateTableRequest t;
    t.mutable_config()->set_name("emb");
    t.mutable_config()->set_dim(4);
    t.mutable_config()->mutable_optimizer()->mutable_adam()->set_learning_rate(
        0.1);
    t.mutable_config()->mutable_optimizer()->mutable_adam()->set_beta1(0.9);
    t.mutable_config()->mutable_optimizer()->mutable_adam()->set_beta2(0.99);
    t.mutable_config()->mutable_optimizer()->mutable_adam()->set_epsilon(1e-8);
    t.mutable_config()->mutable_consistency()->set_mode(
        v1::CONSISTENCY_MODE_ASYNC);
    v1::CreateTableResponse r;
    grpc::ServerContext ctx;
    ASSERT_TRUE(service.CreateTable(&ctx, &t, &r).ok());
    v1::CreateVariableRequest v;
    v.mutable_config()->set_name("w");
    v.mutable_config()->mutable_spec()->set_dtype(v1::DTYPE_FLOAT32);
    v.mutable_config()->mutable_spec()->add_shape(4);
    v.mutable_config()->mutable_spec()->add_shape(3);
    *v.mutable_config()->mutable_optimizer() = t.config().optimizer();
    *v.mutable_config()->mutable_consistency() = t.config().consistency();
    v1::CreateVariableResponse vr;
    grpc::ServerContext ctx2;
    ASSERT_TRUE(service.CreateVariable(&ctx2, &v, &vr).ok());
  }
  std::mt19937_64 rng(20261125);
  int parsed = 0, ok = 0;
  for (int iter = 0; iter < 200000; ++iter) {
    v1::PushRequest push = ValidPush(rng);
    if (iter % 3 == 0) {
      Hostile(&push, rng);
    } else if (!push.ParseFromString(Mutate(push.SerializeAsString(), rng))) {
      continue;
    }
    ++parsed;
    grpc::ServerContext ctx;
    v1::PushResponse resp;
    if (service.Push(&ctx, &push, &resp).ok()) ++ok;
    // The same bytes as a pull and as table/variable creation.
    v1::PullRequest pull;
    if (pull.ParseFromString(Mutate(push.SerializeAsString(), rng))) {
      grpc::ServerContext pctx;
      v1::PullResponse presp;
      (void)service.Pull(&pctx, &pull, &presp);
    }
    v1::CreateTableRequest create;
    if (create.ParseFromString(Mutate(push.SerializeAsString(), rng))) {
      grpc::ServerContext cctx;
      v1::CreateTableResponse cresp;
      (void)service.CreateTable(&cctx, &create, &cresp);
    }
  }
  EXPECT_GT(parsed, 50000);
  EXPECT_GT(ok, 0) << "the mutations should leave some pushes valid";
  // Still serving a well-formed request.
  v1::PullRequest pull;
  auto* l = pull.add_sparse();
  l->set_table("emb");
  l->add_ids(1);
  grpc::ServerContext ctx;
  v1::PullResponse resp;
  EXPECT_TRUE(service.Pull(&ctx, &pull, &resp).ok());
}

}  // namespace
}  // namespace plexus::ps
