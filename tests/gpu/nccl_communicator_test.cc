// The NCCL backend on one GPU: a one-rank communicator bootstrapped through
// a rendezvous store runs every operation on device buffers with the right
// results; bad arguments are refused before NCCL sees them; after Abort, or
// an operation past its deadline, every call fails with the sticky error. (NCCL
// refuses two ranks on one GPU, so multi-rank runs need a multi-GPU machine;
// see bench/gpu.) Skips, saying why, without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "collectives/nccl/nccl_communicator.h"
#include "collectives/rendezvous/store.h"
#include "tests/gpu/gpu_util.h"

namespace plexus::collectives::nccl {
namespace {

using ::plexus::testing::NoGpuReason;

class NcclCommunicatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = NoGpuReason(); !why.empty()) GTEST_SKIP() << why;
    store_ = NewMemoryStore();
    auto c = NcclCommunicator::Create(store_.get(), 0, 1);
    ASSERT_TRUE(c.ok()) << c.status();
    comm_ = std::move(*c);
  }
  absl::Time Deadline() { return absl::Now() + absl::Seconds(30); }

  std::unique_ptr<Store> store_;
  std::unique_ptr<NcclCommunicator> comm_;
};

TEST_F(NcclCommunicatorTest, EveryOperationOnDeviceBuffers) {
  const int n = 1 << 16;
  std::vector<float> host(n);
  for (int i = 0; i < n; ++i) host[i] = static_cast<float>(i % 97) - 40.0f;
  float *send = nullptr, *recv = nullptr;
  ASSERT_EQ(cudaMalloc(&send, n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&recv, n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(
      cudaMemcpy(send, host.data(), n * sizeof(float), cudaMemcpyHostToDevice),
      cudaSuccess);
  std::vector<float> back(n);
  auto fetch = [&] {
    ASSERT_EQ(cudaMemcpy(back.data(), recv, n * sizeof(float),
                         cudaMemcpyDeviceToHost),
              cudaSuccess);
  };
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMin,
                      ReduceOp::kMax, ReduceOp::kProd}) {
    ASSERT_EQ(cudaMemset(recv, 0, n * sizeof(float)), cudaSuccess);
    ASSERT_TRUE(
        comm_->AllReduce(send, recv, n, DataType::kFloat32, op, Deadline())
            .ok());
    fetch();
    EXPECT_EQ(back, host);  // one rank: every reduction is the identity
  }
  ASSERT_EQ(cudaMemset(recv, 0, n * sizeof(float)), cudaSuccess);
  ASSERT_TRUE(
      comm_->AllGather(send, recv, n, DataType::kFloat32, Deadline()).ok());
  fetch();
  EXPECT_EQ(back, host);
  ASSERT_EQ(cudaMemset(recv, 0, n * sizeof(float)), cudaSuccess);
  ASSERT_TRUE(comm_
                  ->ReduceScatter(send, recv, n, DataType::kFloat32,
                                  ReduceOp::kSum, Deadline())
                  .ok());
  fetch();
  EXPECT_EQ(back, host);
  ASSERT_EQ(cudaMemset(recv, 0, n * sizeof(float)), cudaSuccess);
  ASSERT_TRUE(comm_
                  ->Reduce(send, recv, n, DataType::kFloat32, ReduceOp::kSum, 0,
                           Deadline())
                  .ok());
  fetch();
  EXPECT_EQ(back, host);
  ASSERT_TRUE(
      comm_->Broadcast(send, n, DataType::kFloat32, 0, Deadline()).ok());
  // Bad arguments never reach NCCL.
  EXPECT_EQ(comm_->Broadcast(send, n, DataType::kFloat32, 1, Deadline()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(comm_
                ->AllReduce(send, recv, -1, DataType::kFloat32, ReduceOp::kSum,
                            Deadline())
                .code(),
            absl::StatusCode::kInvalidArgument);
  // fp16 / bf16 go through too.
  ASSERT_TRUE(comm_
                  ->AllReduce(send, recv, n, DataType::kFloat16, ReduceOp::kSum,
                              Deadline())
                  .ok());
  ASSERT_TRUE(comm_
                  ->AllReduce(send, recv, n, DataType::kBFloat16,
                              ReduceOp::kSum, Deadline())
                  .ok());
  comm_->Abort();
  absl::Status after = comm_->AllReduce(send, recv, n, DataType::kFloat32,
                                        ReduceOp::kSum, Deadline());
  EXPECT_EQ(after.code(), absl::StatusCode::kAborted) << after;
  cudaFree(send);
  cudaFree(recv);
}

// An operation that cannot finish by its deadline ends in DEADLINE_EXCEEDED
// naming the operation; the communicator is aborted and later calls get that
// error. A late peer is played by a host function that holds the stream
// until 2 s after the deadline (ncclCommAbort can stop NCCL's own kernels,
// not a host function, so the hold must end by itself). In place with one
// rank, NCCL queues no GPU work that could outlive the aborted communicator.
TEST_F(NcclCommunicatorTest, AnOperationPastItsDeadlineAbortsTheCommunicator) {
  const int n = 1024;
  float* buf = nullptr;
  ASSERT_EQ(cudaMalloc(&buf, n * sizeof(float)), cudaSuccess);
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
            cudaSuccess);
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + absl::Milliseconds(300);
  static absl::Time hold_until;
  hold_until = deadline + absl::Seconds(2);
  ASSERT_EQ(cudaLaunchHostFunc(
                stream,
                [](void*) {
                  while (absl::Now() < hold_until) std::this_thread::yield();
                },
                nullptr),
            cudaSuccess);
  absl::Status st = comm_->AllReduce(buf, buf, n, DataType::kFloat32,
                                     ReduceOp::kSum, deadline, stream);
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  cudaStreamDestroy(stream);
  EXPECT_EQ(st.code(), absl::StatusCode::kDeadlineExceeded) << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "NCCL all-reduce of 1024")) << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "communicator aborted")) << st;
  absl::Status later = comm_->AllReduce(buf, buf, n, DataType::kFloat32,
                                        ReduceOp::kSum, Deadline());
  EXPECT_EQ(later.code(), absl::StatusCode::kDeadlineExceeded) << later;
  cudaFree(buf);
}

TEST(NcclCreateTest, BadRankAndMissingStoreAreRefused) {
  auto store = NewMemoryStore();
  EXPECT_EQ(NcclCommunicator::Create(store.get(), 2, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(NcclCommunicator::Create(nullptr, 0, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(NcclCreateTest, AMissingUniqueIdTimesOut) {
  if (std::string why = NoGpuReason(); !why.empty()) GTEST_SKIP() << why;
  auto store = NewMemoryStore();
  NcclOptions o;
  o.init_timeout = absl::Milliseconds(200);
  // Rank 1 of 2 waits for rank 0's id, which never comes.
  absl::Status st = NcclCommunicator::Create(store.get(), 1, 2, o).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kDeadlineExceeded) << st;
}

}  // namespace
}  // namespace plexus::collectives::nccl
