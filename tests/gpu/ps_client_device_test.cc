// Item 5: the PS client with device buffers (DevicePsClient) against a real
// plexus-ps on 127.0.0.1: dense and sparse pulls land in device memory,
// pushes from device memory are applied (checked through the host client),
// host pointers are refused. Skips, saying why, without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "plexus/worker/ps_client.h"
#include "plexus/worker/ps_client_device.h"
#include "tests/gpu/gpu_util.h"
#include "tests/util/test_env.h"

namespace plexus::worker {
namespace {

using ::plexus::testing::BinDir;
using ::plexus::testing::NoGpuReason;
using ::plexus::testing::StartDaemon;
using ::plexus::testing::StartedDaemon;
using ::plexus::testing::TempDir;

v1::VariableConfig SgdVariable(const std::string& name, int64_t rows,
                               int64_t cols) {
  v1::VariableConfig v;
  v.set_name(name);
  v.mutable_spec()->set_dtype(v1::DTYPE_FLOAT32);
  v.mutable_spec()->add_shape(rows);
  v.mutable_spec()->add_shape(cols);
  v.mutable_optimizer()->mutable_sgd()->set_learning_rate(1.0);
  v.mutable_consistency()->set_mode(v1::CONSISTENCY_MODE_ASYNC);
  return v;
}

std::vector<float> FromDevice(const void* d, size_t n) {
  std::vector<float> out(n);
  EXPECT_EQ(
      cudaMemcpy(out.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost),
      cudaSuccess);
  return out;
}

float* ToDevice(const std::vector<float>& v) {
  float* d = nullptr;
  EXPECT_EQ(cudaMalloc(&d, std::max<size_t>(v.size(), 1) * sizeof(float)),
            cudaSuccess);
  EXPECT_EQ(
      cudaMemcpy(d, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice),
      cudaSuccess);
  return d;
}

class DevicePsClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = NoGpuReason(); !why.empty()) GTEST_SKIP() << why;
    absl::StatusOr<StartedDaemon> ps =
        StartDaemon(dir_, "ps", {BinDir() + "/plexus-ps", "--admin_port=-1"});
    ASSERT_TRUE(ps.ok()) << ps.status();
    ps_ = std::move(*ps);
    PsClientOptions o;
    o.shards = {ps_.address};
    auto client = PsClient::Connect(
        o, {.job_id = "job", .worker_id = 1, .worker_incarnation = 1});
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
    DevicePsClientOptions d;
    d.piece_bytes = 4096;  // many pieces, so that copies and RPCs overlap
    auto device = DevicePsClient::Create(client_.get(), d);
    ASSERT_TRUE(device.ok()) << device.status();
    device_ = std::move(*device);
  }

  TempDir dir_;
  StartedDaemon ps_;
  std::unique_ptr<PsClient> client_;
  std::unique_ptr<DevicePsClient> device_;
};

TEST_F(DevicePsClientTest, DenseVariablesRoundTripThroughDeviceMemory) {
  std::vector<std::vector<float>> init(3);
  std::vector<DeviceDense> vars, grads;
  std::vector<float*> grad_buffers;
  for (int v = 0; v < 3; ++v) {
    const int64_t rows = 100 + 37 * v, cols = 33;
    std::string name = "w" + std::to_string(v);
    init[v].resize(rows * cols);
    std::iota(init[v].begin(), init[v].end(), v * 1000.0f);
    ASSERT_TRUE(
        client_->CreateVariable(SgdVariable(name, rows, cols), init[v]).ok());
    vars.push_back(
        {name, ToDevice(std::vector<float>(rows * cols, -1.0f)), rows * cols});
    std::vector<float> g(rows * cols);
    for (size_t i = 0; i < g.size(); ++i) g[i] = static_cast<float>(i % 5);
    grad_buffers.push_back(ToDevice(g));
    grads.push_back({name, grad_buffers.back(), rows * cols});
  }
  ASSERT_TRUE(device_->PullDense(vars).ok());
  for (int v = 0; v < 3; ++v) {
    EXPECT_EQ(FromDevice(vars[v].data, vars[v].count), init[v]) << "var " << v;
  }
  auto pushed = device_->PushDense(grads, {.step_id = 1, .push_seq = 0});
  ASSERT_TRUE(pushed.ok()) << pushed.status();
  EXPECT_EQ(pushed->rows_applied, 100 + 137 + 174);
  for (int v = 0; v < 3; ++v) {
    std::vector<float> now(vars[v].count);
    ASSERT_TRUE(client_->PullDense(vars[v].variable, absl::MakeSpan(now)).ok());
    for (size_t i = 0; i < now.size(); ++i) {
      ASSERT_FLOAT_EQ(now[i], init[v][i] - static_cast<float>(i % 5))
          << "var " << v << " element " << i;
    }
  }
  // The same push again (same step and push_seq): acknowledged, not applied.
  auto again = device_->PushDense(grads, {.step_id = 1, .push_seq = 0});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->duplicate_pieces, 3);
  for (auto& v : vars) cudaFree(v.data);
  for (float* g : grad_buffers) cudaFree(g);
}

TEST_F(DevicePsClientTest, SparseRowsRoundTripThroughDeviceMemory) {
  const int64_t dim = 16;
  v1::TableConfig t;
  t.set_name("emb");
  t.set_dim(dim);
  t.mutable_optimizer()->mutable_sgd()->set_learning_rate(0.5);
  t.mutable_consistency()->set_mode(v1::CONSISTENCY_MODE_ASYNC);
  ASSERT_TRUE(client_->CreateTable(t).ok());
  std::vector<uint64_t> ids(1000);
  std::iota(ids.begin(), ids.end(), 7);
  std::vector<float> g(ids.size() * dim);
  for (size_t i = 0; i < g.size(); ++i) g[i] = static_cast<float>(i % 9);
  float* dgrads = ToDevice(g);
  auto pushed = device_->PushSparse("emb", ids, dim, dgrads, {.step_id = 1});
  ASSERT_TRUE(pushed.ok()) << pushed.status();
  EXPECT_EQ(pushed->rows_applied, 1000);
  float* dout = ToDevice(std::vector<float>(ids.size() * dim, 99.0f));
  // 4 KiB pieces: 64 rows each, 16 pieces.
  ASSERT_TRUE(device_->PullSparse("emb", ids, dim, dout).ok());
  std::vector<float> got = FromDevice(dout, ids.size() * dim);
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_FLOAT_EQ(got[i], -0.5f * g[i]) << "element " << i;
  }
  // Host memory is refused, and nothing is sent.
  std::vector<float> host(ids.size() * dim);
  EXPECT_EQ(device_->PullSparse("emb", ids, dim, host.data()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(device_->PushSparse("emb", ids, dim, host.data()).status().code(),
            absl::StatusCode::kInvalidArgument);
  got = FromDevice(dout, ids.size() * dim);
  EXPECT_FLOAT_EQ(got[0], -0.5f * g[0]);
  cudaFree(dgrads);
  cudaFree(dout);
}

TEST(DevicePsClientCreateTest, WithoutAGpuCreateSaysWhy) {
  if (NoGpuReason().empty()) {
    GTEST_SKIP() << "this test is about a machine without a usable GPU";
  }
  // The GPU is checked before anything else.
  auto device = DevicePsClient::Create(nullptr);
  ASSERT_FALSE(device.ok());
  EXPECT_EQ(device.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(device.status().message().find("no usable GPU"), std::string::npos)
      << device.status();
}

}  // namespace
}  // namespace plexus::worker
