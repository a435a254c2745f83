// The public Communicator on device buffers (plexus::collectives_gpu):
//   - item 2: device buffers go to NCCL when every member has a GPU, host
//     buffers to UCX, without the caller choosing; Backend::kUcx (or
//     PLEXUS_COLL_BACKEND=ucx) forces UCX and device buffers are refused;
//     a forced NCCL backend without a GPU fails Create;
//   - item 4: members on different nodes go hierarchical (NCCL inside a
//     node, UCX across, staged through pinned memory chunk by chunk): two
//     one-GPU "nodes" on the same GPU, results checked against a host
//     reference for several types, reductions and sizes (including 0, odd,
//     and several staging chunks).
// Tests that need a GPU skip, saying why, without one.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "collectives/rendezvous/store.h"
#include "plexus/collectives/communicator.h"
#include "tests/collectives/coll_check.h"
#include "tests/gpu/gpu_util.h"

namespace plexus::collectives {
namespace {

using ::plexus::testing::GpuCount;
using ::plexus::testing::NoGpuReason;
using ::plexus::testing::RunRanks;

CommunicatorOptions Options(Backend backend, std::string node = "",
                            int device = -1) {
  CommunicatorOptions o;
  o.backend = backend;
  o.node = std::move(node);
  o.device = device;
  o.connect_timeout = absl::Seconds(60);
  o.default_timeout = absl::Seconds(60);
  o.progress = ProgressMode::kBlocking;  // ranks may outnumber cores
  return o;
}

// Device memory with `bytes` from `host`.
void* ToDevice(const void* host, size_t bytes) {
  void* d = nullptr;
  EXPECT_EQ(cudaMalloc(&d, std::max<size_t>(bytes, 1)), cudaSuccess);
  if (bytes > 0) {
    EXPECT_EQ(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice), cudaSuccess);
  }
  return d;
}

std::vector<char> FromDevice(const void* d, size_t bytes) {
  std::vector<char> out(bytes);
  if (bytes > 0) {
    EXPECT_EQ(cudaMemcpy(out.data(), d, bytes, cudaMemcpyDeviceToHost),
              cudaSuccess);
  }
  return out;
}

// Every rank all-reduces device buffers of `count` elements; each checks
// its result against the host reference of tests/collectives/coll_check.h.
void CheckAllReduce(Communicator* comm, int size, DataType type, ReduceOp op,
                    size_t count) {
  constexpr int kSeed = 9;
  const size_t bytes = count * DataTypeSize(type);
  std::vector<char> in =
      testing::MakeInput(type, op, comm->rank(), count, kSeed);
  void* send = ToDevice(in.data(), bytes);
  void* recv = ToDevice(in.data(), bytes);
  absl::Status st = comm->AllReduce(send, recv, count, type, op);
  EXPECT_TRUE(st.ok()) << st;
  std::vector<char> got = FromDevice(recv, bytes);
  EXPECT_EQ(testing::CheckReduced(type, op, size, got.data(), count, kSeed), "")
      << "rank " << comm->rank() << " " << DataTypeName(type) << " "
      << ReduceOpName(op) << " count " << count;
  cudaFree(send);
  cudaFree(recv);
}

TEST(DeviceCommunicatorTest, ABadBackendVariableIsRefused) {
  auto store = NewMemoryStore();
  setenv("PLEXUS_COLL_BACKEND", "infiniband", 1);
  auto comm = Communicator::Create(store.get(), 0, 1, Options(Backend::kAuto));
  unsetenv("PLEXUS_COLL_BACKEND");
  ASSERT_FALSE(comm.ok());
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(comm.status().message().find("PLEXUS_COLL_BACKEND"),
            std::string::npos)
      << comm.status();
}

TEST(DeviceCommunicatorTest, WithoutAGpuForcedNcclFailsAndAutoServesHosts) {
  if (NoGpuReason().empty()) {
    GTEST_SKIP() << "this test is about a machine without a usable GPU";
  }
  auto store = NewMemoryStore();
  auto forced =
      Communicator::Create(store.get(), 0, 1, Options(Backend::kNccl));
  ASSERT_FALSE(forced.ok());
  EXPECT_EQ(forced.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(forced.status().message().find("ranks without one: 0"),
            std::string::npos)
      << forced.status();
  auto store2 = NewMemoryStore();
  auto comm = Communicator::Create(store2.get(), 0, 1, Options(Backend::kAuto));
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_EQ((*comm)->device_backend(), "none");
  std::vector<float> host = {1, 2, 3};
  ASSERT_TRUE((*comm)
                  ->AllReduce(host.data(), host.data(), 3, DataType::kFloat32,
                              ReduceOp::kSum)
                  .ok());
  EXPECT_EQ(host, (std::vector<float>{1, 2, 3}));
}

TEST(DeviceCommunicatorTest, DeviceBuffersGoToNcclHostBuffersToUcx) {
  if (std::string why = NoGpuReason(); !why.empty()) GTEST_SKIP() << why;
  auto store = NewMemoryStore();
  auto comm = Communicator::Create(store.get(), 0, 1, Options(Backend::kAuto));
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_EQ((*comm)->device_backend(), "nccl");
  for (DataType t :
       {DataType::kFloat32, DataType::kFloat16, DataType::kBFloat16}) {
    CheckAllReduce(comm->get(), 1, t, ReduceOp::kSum, 100003);
  }
  // Host buffers still go through UCX on the same communicator.
  std::vector<float> host = {1, 2, 3};
  ASSERT_TRUE((*comm)
                  ->AllReduce(host.data(), host.data(), 3, DataType::kFloat32,
                              ReduceOp::kSum)
                  .ok());
  EXPECT_EQ(host, (std::vector<float>{1, 2, 3}));
  // Mixing host and device buffers is the caller's mistake, and not sticky.
  void* dev = ToDevice(host.data(), 12);
  EXPECT_EQ(
      (*comm)
          ->AllReduce(host.data(), dev, 3, DataType::kFloat32, ReduceOp::kSum)
          .code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE((*comm)->status().ok());
  // So is a stream NCCL cannot use here.
  OpOptions per_thread;
  per_thread.stream = static_cast<void*>(cudaStreamPerThread);
  EXPECT_EQ((*comm)
                ->AllReduce(dev, dev, 3, DataType::kFloat32, ReduceOp::kSum,
                            per_thread)
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE((*comm)->status().ok());
  // An explicit stream works.
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  OpOptions on_stream;
  on_stream.stream = stream;
  EXPECT_TRUE((*comm)
                  ->AllReduce(dev, dev, 3, DataType::kFloat32, ReduceOp::kSum,
                              on_stream)
                  .ok());
  cudaStreamDestroy(stream);
  // The other operations on device buffers.
  EXPECT_TRUE((*comm)->Broadcast(dev, 3, DataType::kFloat32, 0).ok());
  EXPECT_TRUE((*comm)->AllGather(dev, dev, 3, DataType::kFloat32).ok());
  std::vector<char> back = FromDevice(dev, 12);
  EXPECT_EQ(std::memcmp(back.data(), host.data(), 12), 0);
  cudaFree(dev);
}

TEST(DeviceCommunicatorTest, ForcedUcxRefusesDeviceBuffers) {
  if (std::string why = NoGpuReason(); !why.empty()) GTEST_SKIP() << why;
  auto store = NewMemoryStore();
  setenv("PLEXUS_COLL_BACKEND", "ucx", 1);
  auto comm = Communicator::Create(store.get(), 0, 1, Options(Backend::kAuto));
  unsetenv("PLEXUS_COLL_BACKEND");
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_EQ((*comm)->device_backend(), "none");
  std::vector<float> host = {1, 2, 3};
  void* dev = ToDevice(host.data(), 12);
  absl::Status st =
      (*comm)->AllReduce(dev, dev, 3, DataType::kFloat32, ReduceOp::kSum);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  cudaFree(dev);
}

// Two ranks of one node on one GPU: NCCL would refuse them, so auto serves
// no device buffers (saying why) and a forced NCCL fails Create.
TEST(DeviceCommunicatorTest, RanksSharingAGpuGetNoNccl) {
  if (std::string why = NoGpuReason(); !why.empty()) GTEST_SKIP() << why;
  const int n = 2;
  auto store = NewMemoryStore();
  RunRanks(n, [&](int rank) {
    auto comm = Communicator::Create(store.get(), rank, n,
                                     Options(Backend::kAuto, "same", 0));
    ASSERT_TRUE(comm.ok()) << comm.status();
    EXPECT_EQ((*comm)->device_backend(), "none");
    void* dev = ToDevice(std::vector<float>(4).data(), 16);
    absl::Status st =
        (*comm)->AllReduce(dev, dev, 4, DataType::kFloat32, ReduceOp::kSum);
    EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
    EXPECT_NE(st.message().find("share GPU"), std::string::npos) << st;
    cudaFree(dev);
  });
  auto store2 = NewMemoryStore();
  RunRanks(n, [&](int rank) {
    auto comm = Communicator::Create(store2.get(), rank, n,
                                     Options(Backend::kNccl, "same", 0));
    EXPECT_EQ(comm.status().code(), absl::StatusCode::kFailedPrecondition)
        << comm.status();
  });
}

// Item 4 on one GPU: two nodes of one rank each.
TEST(DeviceCommunicatorTest, HierarchicalAcrossTwoNodesMatchesTheHost) {
  if (std::string why = NoGpuReason(); !why.empty()) GTEST_SKIP() << why;
  const int n = 2;
  auto store = NewMemoryStore();
  RunRanks(n, [&](int rank) {
    auto comm = Communicator::Create(
        store.get(), rank, n,
        Options(Backend::kAuto, absl::StrCat("node", rank), 0));
    ASSERT_TRUE(comm.ok()) << comm.status();
    EXPECT_EQ((*comm)->device_backend(), "hierarchical");
    // 0, 1, odd, and 3+ staging chunks of 4 MiB (fp32).
    for (size_t count :
         {size_t{0}, size_t{1}, size_t{100003}, size_t{3} * (1 << 20) + 7}) {
      for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax,
                          ReduceOp::kMin, ReduceOp::kProd}) {
        CheckAllReduce(comm->get(), n, DataType::kFloat32, op, count);
      }
    }
    CheckAllReduce(comm->get(), n, DataType::kFloat16, ReduceOp::kSum, 100003);
    CheckAllReduce(comm->get(), n, DataType::kBFloat16, ReduceOp::kAvg, 100003);
    // Other operations are not hierarchical yet: a clear error, on every
    // rank (and sticky, as every failed operation).
    void* dev = ToDevice(std::vector<float>(4).data(), 16);
    absl::Status st = (*comm)->Broadcast(dev, 4, DataType::kFloat32, 0);
    EXPECT_EQ(st.code(), absl::StatusCode::kUnimplemented) << st;
    cudaFree(dev);
  });
}

// Item 4 with two GPUs: two nodes of two ranks each (one GPU per rank in a
// node, as NCCL wants).
TEST(DeviceCommunicatorTest, HierarchicalWithTwoRanksPerNode) {
  if (std::string why = NoGpuReason(); !why.empty()) GTEST_SKIP() << why;
  if (GpuCount() < 2)
    GTEST_SKIP() << "needs 2 GPUs; this machine has " << GpuCount();
  const int n = 4;
  auto store = NewMemoryStore();
  RunRanks(n, [&](int rank) {
    auto comm = Communicator::Create(
        store.get(), rank, n,
        Options(Backend::kAuto, absl::StrCat("node", rank / 2), rank % 2));
    ASSERT_TRUE(comm.ok()) << comm.status();
    EXPECT_EQ((*comm)->device_backend(), "hierarchical");
    ASSERT_EQ(cudaSetDevice(rank % 2), cudaSuccess);
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax}) {
      CheckAllReduce(comm->get(), n, DataType::kFloat32, op, 1000003);
    }
  });
}

}  // namespace
}  // namespace plexus::collectives
