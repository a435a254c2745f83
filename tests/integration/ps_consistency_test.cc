// Two real plexus-ps shards, three clients (each its own PsClient and
// channels, on its own thread): training-like loops in each consistency mode,
// with final values checked against a single-process computation of the same
// updates.
#include <gtest/gtest.h>

#include <thread>

#include "absl/synchronization/barrier.h"
#include "plexus/worker/ps_client.h"
#include "tests/util/test_env.h"
#include "tools/local/local_cluster.h"

namespace plexus {
namespace {

using ::plexus::testing::BinDir;
using ::plexus::testing::TempDir;
using worker::PsClient;
using worker::StepOptions;

constexpr int kClients = 3;
constexpr int kSteps = 6;
constexpr int64_t kDim = 4;
constexpr int kRows = 10;  // dense variable rows, kDim columns
constexpr float kLr = 0.5f;

// Client c's gradient at step s for sparse id `id`, element j: small
// integers, so sums are exact in any order (a golden workload).
float SparseGrad(int c, int s, uint64_t id, int64_t j) {
  return static_cast<float>((c + 1) * (s + static_cast<int>(id % 5) + j) % 7 -
                            3);
}
float DenseGrad(int c, int s, int64_t i) {
  return static_cast<float>((c * 3 + s * 5 + i) % 9 - 4);
}
// The ids client c touches at step s: some shared by all clients.
std::vector<uint64_t> Ids(int c, int s) {
  std::vector<uint64_t> ids = {1, 2, 3};
  for (int k = 0; k < 5; ++k) ids.push_back(100 + c * 1000 + s * 10 + k);
  return ids;
}

// Test parameter: whether the clients' pulls and pushes go over the shards'
// direct data plane (plexus-ps --data_port) rather than gRPC; each semantics
// must hold on both.
class PsConsistencyTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    local::LocalClusterOptions o;
    o.bin_dir = BinDir();
    o.root_dir = dir_.Sub("cluster");
    o.num_ps = 2;
    o.ps_flags = {"--data_port=0"};
    auto c = local::LocalCluster::Start(o);
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = std::move(*c);
    std::vector<std::string> shards;
    for (const auto& m : cluster_->members()) {
      if (m.role == "ps") shards.push_back(m.address);
    }
    for (int c = 0; c < kClients; ++c) {
      worker::PsClientOptions co;
      co.shards = shards;
      co.direct_data_plane = GetParam();
      auto client =
          PsClient::Connect(co, {.job_id = "job",
                                 .worker_id = static_cast<uint64_t>(c + 1),
                                 .worker_incarnation = 1});
      ASSERT_TRUE(client.ok()) << client.status();
      clients_.push_back(std::move(*client));
    }
  }

  void Create(v1::ConsistencyMode mode, uint32_t staleness = 0) {
    v1::TableConfig t;
    t.set_name("emb");
    t.set_dim(kDim);
    t.mutable_optimizer()->mutable_sgd()->set_learning_rate(kLr);
    t.mutable_consistency()->set_mode(mode);
    t.mutable_consistency()->set_num_workers(kClients);
    t.mutable_consistency()->set_staleness_bound(staleness);
    ASSERT_TRUE(clients_[0]->CreateTable(t).ok());
    v1::VariableConfig v;
    v.set_name("w");
    v.mutable_spec()->set_dtype(v1::DTYPE_FLOAT32);
    v.mutable_spec()->add_shape(kRows);
    v.mutable_spec()->add_shape(kDim);
    *v.mutable_optimizer() = t.optimizer();
    *v.mutable_consistency() = t.consistency();
    ASSERT_TRUE(clients_[0]->CreateVariable(v).ok());
  }

  // One client's loop: push sparse + dense for each step (closure id unique
  // per (step, client)), and, if `pull_each_step`, pull at step s+1.
  absl::Status Loop(int c, bool pull_each_step,
                    std::vector<std::vector<float>>* dense_seen) {
    for (int s = 1; s <= kSteps; ++s) {
      StepOptions step{.step_id = static_cast<uint64_t>(s),
                       .closure_id = static_cast<uint64_t>(s * 100 + c),
                       .push_seq = 0};
      std::vector<uint64_t> ids = Ids(c, s);
      std::vector<float> g(ids.size() * kDim);
      for (size_t i = 0; i < ids.size(); ++i) {
        for (int64_t j = 0; j < kDim; ++j)
          g[i * kDim + j] = SparseGrad(c, s, ids[i], j);
      }
      auto p = clients_[c]->PushSparse("emb", ids, kDim, g, step);
      if (!p.ok()) return p.status();
      std::vector<float> dg(kRows * kDim);
      for (int64_t i = 0; i < kRows * kDim; ++i) dg[i] = DenseGrad(c, s, i);
      step.push_seq = 1;
      auto d = clients_[c]->PushDense("w", dg, step);
      if (!d.ok()) return d.status();
      if (pull_each_step) {
        std::vector<float> w(kRows * kDim);
        absl::Status st = clients_[c]->PullDense(
            "w", absl::MakeSpan(w), {.step_id = static_cast<uint64_t>(s + 1)});
        if (!st.ok()) return st;
        dense_seen->push_back(w);
      }
    }
    return absl::OkStatus();
  }

  void RunAll(bool pull_each_step,
              std::vector<std::vector<std::vector<float>>>* seen) {
    seen->resize(kClients);
    std::vector<absl::Status> status(kClients);
    std::vector<std::thread> threads;
    for (int c = 0; c < kClients; ++c) {
      threads.emplace_back(
          [&, c] { status[c] = Loop(c, pull_each_step, &(*seen)[c]); });
    }
    for (auto& t : threads) t.join();
    for (int c = 0; c < kClients; ++c) ASSERT_TRUE(status[c].ok()) << status[c];
  }

  std::vector<float> PullAllIds() {
    std::vector<uint64_t> ids = AllIds();
    std::vector<float> out(ids.size() * kDim);
    EXPECT_TRUE(
        clients_[0]->PullSparse("emb", ids, kDim, absl::MakeSpan(out)).ok());
    return out;
  }
  static std::vector<uint64_t> AllIds() {
    std::vector<uint64_t> ids;
    for (int c = 0; c < kClients; ++c) {
      for (int s = 1; s <= kSteps; ++s) {
        for (uint64_t id : Ids(c, s)) {
          if (std::find(ids.begin(), ids.end(), id) == ids.end())
            ids.push_back(id);
        }
      }
    }
    return ids;
  }

  TempDir dir_;
  std::unique_ptr<local::LocalCluster> cluster_;
  std::vector<std::unique_ptr<PsClient>> clients_;
};

TEST_P(PsConsistencyTest, AsyncAppliesEveryUpdateExactlyOnce) {
  Create(v1::CONSISTENCY_MODE_ASYNC);
  std::vector<std::vector<std::vector<float>>> seen;
  RunAll(/*pull_each_step=*/false, &seen);
  // Reference: SGD from zeros, every gradient applied once; exact because the
  // gradients are small integers and kLr a power of two.
  std::vector<uint64_t> ids = AllIds();
  std::vector<float> want(ids.size() * kDim, 0.0f);
  for (int c = 0; c < kClients; ++c) {
    for (int s = 1; s <= kSteps; ++s) {
      for (uint64_t id : Ids(c, s)) {
        size_t i = std::find(ids.begin(), ids.end(), id) - ids.begin();
        for (int64_t j = 0; j < kDim; ++j) {
          want[i * kDim + j] -= kLr * SparseGrad(c, s, id, j);
        }
      }
    }
  }
  EXPECT_EQ(PullAllIds(), want);
  std::vector<float> w(kRows * kDim), wwant(kRows * kDim, 0.0f);
  ASSERT_TRUE(clients_[0]->PullDense("w", absl::MakeSpan(w)).ok());
  for (int c = 0; c < kClients; ++c) {
    for (int s = 1; s <= kSteps; ++s) {
      for (int64_t i = 0; i < kRows * kDim; ++i)
        wwant[i] -= kLr * DenseGrad(c, s, i);
    }
  }
  EXPECT_EQ(w, wwant);
}

TEST_P(PsConsistencyTest, SyncAppliesTheMeanOncePerStepAndPullsSeeTheStep) {
  Create(v1::CONSISTENCY_MODE_SYNC);
  std::vector<std::vector<std::vector<float>>> seen;
  RunAll(/*pull_each_step=*/true, &seen);
  // Reference: per step, the mean of the three closures' gradients (summed in
  // ascending closure-id order = client order), applied once.
  std::vector<std::vector<float>> after_step;
  std::vector<float> w(kRows * kDim, 0.0f);
  for (int s = 1; s <= kSteps; ++s) {
    for (int64_t i = 0; i < kRows * kDim; ++i) {
      float sum = 0;
      for (int c = 0; c < kClients; ++c) sum += DenseGrad(c, s, i);
      w[i] -= kLr * (sum / kClients);
    }
    after_step.push_back(w);
  }
  // Every client's pull at step s+1 saw exactly (bit for bit) the state
  // after step s.
  for (int c = 0; c < kClients; ++c) {
    ASSERT_EQ(seen[c].size(), static_cast<size_t>(kSteps));
    for (int s = 0; s < kSteps; ++s) {
      for (int64_t i = 0; i < kRows * kDim; ++i) {
        EXPECT_EQ(seen[c][s][i], after_step[s][i])
            << "client " << c << " step " << s + 1 << " element " << i;
      }
    }
  }
}

TEST_P(PsConsistencyTest, BoundedStalenessHoldsBackAFastWorker) {
  Create(v1::CONSISTENCY_MODE_BOUNDED_STALENESS, /*staleness=*/1);
  // Clients 1 and 2 push step 1 only; client 0 pushes steps 1..3.
  auto push = [&](int c, int s) {
    std::vector<float> g(kRows * kDim, 1.0f);
    return clients_[c]
        ->PushDense("w", g,
                    {.step_id = static_cast<uint64_t>(s),
                     .closure_id = static_cast<uint64_t>(s * 100 + c)})
        .status();
  };
  for (int c = 0; c < kClients; ++c) ASSERT_TRUE(push(c, 1).ok());
  ASSERT_TRUE(push(0, 2).ok());
  ASSERT_TRUE(push(0, 3).ok());
  std::vector<float> w(kRows * kDim);
  // A pull at step 3 may run: the slowest worker (step 1) is within s = 1.
  ASSERT_TRUE(
      clients_[0]->PullDense("w", absl::MakeSpan(w), {.step_id = 3}).ok());
  // A pull at step 4 would be more than one step ahead of the slowest: it
  // waits, here until the client's deadline.
  worker::PsClientOptions co;
  co.shards = {cluster_->members()[1].address, cluster_->members()[2].address};
  co.timeout = absl::Milliseconds(300);
  co.direct_data_plane = GetParam();
  auto impatient =
      PsClient::Connect(co, {.worker_id = 1, .worker_incarnation = 1});
  ASSERT_TRUE(impatient.ok());
  EXPECT_EQ(
      (*impatient)->PullDense("w", absl::MakeSpan(w), {.step_id = 4}).code(),
      absl::StatusCode::kDeadlineExceeded);
  // Once the slow workers catch up, it goes through.
  for (int c = 1; c < kClients; ++c) ASSERT_TRUE(push(c, 2).ok());
  ASSERT_TRUE(
      clients_[0]->PullDense("w", absl::MakeSpan(w), {.step_id = 4}).ok());
  // 5 pushes of all-ones at lr 0.5 so far.
  for (float v : w) EXPECT_EQ(v, -0.5f * 7);
}

INSTANTIATE_TEST_SUITE_P(Planes, PsConsistencyTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Direct" : "Grpc";
                         });

}  // namespace
}  // namespace plexus
