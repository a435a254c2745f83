// Item 5: the CTR example's GPU compute (examples/ctr/ctr_gpu.h).
//   - on real batches of the synthetic data, the CUDA kernels' loss, logits
//     and per-row gradients (ids repeated within the batch included) match
//     the CPU reference's;
//   - two GPU baseline runs end with the same bits, close to the CPU's run;
//   - through a real plexus-ps, rows pulled into and gradients pushed from
//     device memory (DevicePsParams) train the table as the host path reads
//     it.
// Skips, saying why, without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "examples/ctr/ctr_data.h"
#include "examples/ctr/ctr_gpu.h"
#include "examples/ctr/ctr_model.h"
#include "plexus/worker/ps_client.h"
#include "tests/gpu/gpu_util.h"
#include "tests/util/test_env.h"

namespace plexus::examples {
namespace {

using ::plexus::testing::BinDir;
using ::plexus::testing::NoGpuReason;
using ::plexus::testing::StartDaemon;
using ::plexus::testing::StartedDaemon;
using ::plexus::testing::TempDir;

// Rows that are a fixed function of the id, large enough (|x| <~ 0.5) for
// the interactions to matter; pushes are recorded.
class FixedParams final : public CtrParams {
 public:
  explicit FixedParams(int64_t dim) : dim_(dim) {}
  absl::Status Pull(absl::Span<const uint64_t> ids,
                    absl::Span<float> out) override {
    for (size_t i = 0; i < ids.size(); ++i) {
      uint64_t x = ids[i];
      for (int64_t d = 0; d < dim_; ++d) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        out[i * dim_ + d] = static_cast<float>((x >> 40) * 0x1.0p-24 - 0.5);
      }
    }
    return absl::OkStatus();
  }
  absl::Status Push(absl::Span<const uint64_t> ids,
                    absl::Span<const float> grads) override {
    pushed_ids.assign(ids.begin(), ids.end());
    pushed.assign(grads.begin(), grads.end());
    return absl::OkStatus();
  }

  std::vector<uint64_t> pushed_ids;
  std::vector<float> pushed;

 private:
  int64_t dim_;
};

struct Computed {
  double loss = 0;
  std::vector<double> logits;
  std::vector<uint64_t> ids;
  std::vector<float> grads;
};

Computed Compute(CtrCompute& compute, const CtrBatch& b) {
  FixedParams params(b.dim);
  Computed c;
  EXPECT_TRUE(compute.Load(b).ok());
  EXPECT_TRUE(compute.Pull(params).ok());
  auto loss = compute.ForwardBackward();
  EXPECT_TRUE(loss.ok()) << loss.status();
  c.loss = loss.value_or(0);
  EXPECT_TRUE(compute.Push(params).ok());
  auto logits = compute.Logits();
  EXPECT_TRUE(logits.ok()) << logits.status();
  c.logits = logits.value_or(std::vector<double>());
  c.ids = params.pushed_ids;
  c.grads = params.pushed;
  return c;
}

class CtrGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = NoGpuReason(); !why.empty()) GTEST_SKIP() << why;
  }
};

TEST_F(CtrGpuTest, ForwardBackwardMatchesTheCpu) {
  struct Case {
    int model_k;
    int64_t batch;
    int64_t first;
  };
  // The demo's shape, k = 0 (linear terms only), a single example, an odd
  // batch and k.
  for (const Case& t : {Case{8, 1024, 7 * 1024}, Case{0, 256, 0}, Case{8, 1, 5},
                        Case{3, 777, 31}}) {
    SCOPED_TRACE(absl::StrCat("model_k ", t.model_k, " batch ", t.batch));
    CtrConfig config;
    config.vocab = 1 << 16;
    config.model_k = t.model_k;
    config.batch = t.batch;
    auto data = CtrDataset::Create(config);
    ASSERT_TRUE(data.ok()) << data.status();
    CtrBatch b = MakeCtrBatch(*data, Split::kTrain, t.first, t.batch);
    if (t.batch >= 256) {
      // Zipf: the batch repeats ids (and the bias id is in every example).
      ASSERT_LT(b.unique_ids.size(), b.slot.size());
    }
    auto gpu_compute = NewGpuCompute();
    ASSERT_TRUE(gpu_compute.ok()) << gpu_compute.status();
    EXPECT_EQ((*gpu_compute)->device(), "GPU");
    auto cpu_compute = NewCpuCompute();
    Computed gpu = Compute(**gpu_compute, b);
    Computed cpu = Compute(*cpu_compute, b);
    EXPECT_NEAR(gpu.loss, cpu.loss, 1e-5 * std::abs(cpu.loss));
    ASSERT_EQ(gpu.logits.size(), cpu.logits.size());
    for (size_t e = 0; e < cpu.logits.size(); ++e) {
      ASSERT_NEAR(gpu.logits[e], cpu.logits[e],
                  1e-9 * std::max(1.0, std::abs(cpu.logits[e])))
          << "example " << e;
    }
    ASSERT_EQ(gpu.ids, cpu.ids);
    ASSERT_EQ(gpu.grads.size(), cpu.grads.size());
    ASSERT_EQ(gpu.grads.size(), b.unique_ids.size() * b.dim);
    for (size_t i = 0; i < cpu.grads.size(); ++i) {
      ASSERT_NEAR(gpu.grads[i], cpu.grads[i],
                  1e-5 * std::max(1.0f, std::abs(cpu.grads[i])))
          << "row " << i / b.dim << " element " << i % b.dim;
    }
  }
}

struct BaselineRun {
  std::vector<double> losses;
  EvalResult eval;
};

// The baseline: `steps` steps against an in-process table, then scoring.
BaselineRun Baseline(CtrCompute& compute, const CtrDataset& data, int steps) {
  BaselineRun run;
  auto params = NewLocalParams(data.config());
  EXPECT_TRUE(params.ok()) << params.status();
  if (!params.ok()) return run;
  for (int s = 1; s <= steps; ++s) {
    auto st = TrainStep(data, s, **params, compute);
    EXPECT_TRUE(st.ok()) << st.status();
    if (!st.ok()) return run;
    run.losses.push_back(st->loss);
  }
  auto e = Evaluate(data, 5000, **params, compute);
  EXPECT_TRUE(e.ok()) << e.status();
  if (e.ok()) run.eval = *e;
  return run;
}

TEST_F(CtrGpuTest, BaselineRunsAreDeterministicAndMatchTheCpu) {
  CtrConfig config;
  config.vocab = 1 << 16;
  config.zipf_s = 1.3;
  config.num_test = 5000;
  auto data = CtrDataset::Create(config);
  ASSERT_TRUE(data.ok()) << data.status();
  constexpr int kSteps = 60;
  auto gpu1 = NewGpuCompute();
  auto gpu2 = NewGpuCompute();
  ASSERT_TRUE(gpu1.ok() && gpu2.ok());
  BaselineRun a = Baseline(**gpu1, *data, kSteps);
  BaselineRun b = Baseline(**gpu2, *data, kSteps);
  BaselineRun cpu = Baseline(*NewCpuCompute(), *data, kSteps);
  ASSERT_EQ(a.losses.size(), static_cast<size_t>(kSteps));
  // Same bits, step after step.
  EXPECT_EQ(a.losses, b.losses);
  EXPECT_EQ(a.eval.logloss, b.eval.logloss);
  EXPECT_EQ(a.eval.auc, b.eval.auc);
  // And the CPU's numbers to rounding.
  for (int s = 0; s < kSteps; ++s) {
    EXPECT_NEAR(a.losses[s], cpu.losses[s], 1e-5 * cpu.losses[s])
        << "step " << s + 1;
  }
  EXPECT_NEAR(a.eval.logloss, cpu.eval.logloss, 1e-5 * cpu.eval.logloss);
  EXPECT_NEAR(a.eval.auc, cpu.eval.auc, 1e-4);
  // It learnt something.
  EXPECT_LT(a.losses.back(), a.losses.front());
}

TEST_F(CtrGpuTest, DevicePsParamsTrainThroughDeviceMemory) {
  TempDir dir;
  absl::StatusOr<StartedDaemon> ps =
      StartDaemon(dir, "ps", {BinDir() + "/plexus-ps", "--admin_port=-1"});
  ASSERT_TRUE(ps.ok()) << ps.status();
  worker::PsClientOptions o;
  o.shards = {ps->address};
  auto client = worker::PsClient::Connect(
      o, {.job_id = "ctr", .worker_id = 1, .worker_incarnation = 1});
  ASSERT_TRUE(client.ok()) << client.status();
  CtrConfig config;
  config.vocab = 1 << 16;
  config.zipf_s = 1.3;
  config.num_test = 5000;
  config.learning_rate = 0.1;
  auto data = CtrDataset::Create(config);
  ASSERT_TRUE(data.ok()) << data.status();
  ASSERT_TRUE((*client)->CreateTable(CtrTableConfig(config)).ok());

  auto device_params = NewDevicePsParams();
  ASSERT_TRUE(device_params.ok()) << device_params.status();
  EXPECT_TRUE((*device_params)->reaches_device());
  auto gpu = NewGpuCompute();
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  auto cpu = NewCpuCompute();
  auto host_params = NewPsParams(config, client->get(), 0);

  (*device_params)->Bind(client->get(), config, 0);
  auto before = Evaluate(*data, 0, **device_params, **gpu);
  ASSERT_TRUE(before.ok()) << before.status();
  auto before_host = Evaluate(*data, 0, *host_params, *cpu);
  ASSERT_TRUE(before_host.ok()) << before_host.status();
  EXPECT_NEAR(before->logloss, before_host->logloss, 1e-9);

  for (uint64_t s = 1; s <= 100; ++s) {
    (*device_params)->Bind(client->get(), config, s);
    auto st = TrainStep(*data, s, **device_params, **gpu);
    ASSERT_TRUE(st.ok()) << "step " << s << ": " << st.status();
  }
  (*device_params)->Bind(client->get(), config, 0);
  auto after = Evaluate(*data, 0, **device_params, **gpu);
  ASSERT_TRUE(after.ok()) << after.status();
  auto after_host = Evaluate(*data, 0, *host_params, *cpu);
  ASSERT_TRUE(after_host.ok()) << after_host.status();
  // The pushes from device memory reached the table: the host path reads
  // the trained rows, which score as the device path reads them.
  EXPECT_NEAR(after->logloss, after_host->logloss, 1e-9);
  EXPECT_NEAR(after->auc, after_host->auc, 1e-6);
  EXPECT_LT(after->logloss, before->logloss - 0.01);
  EXPECT_GT(after->auc, before->auc + 0.05);
}

}  // namespace
}  // namespace plexus::examples
