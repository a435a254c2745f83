// nccl_bench: the device paths of the collectives, against their limits,
// measured in the same run.
//
//   nccl_bench [--mode overhead|hier|all] [--max_mb 256] [--iters 20]
//              [--gpus N] [--nodes 2] [--inplace]
//
// overhead: all-reduce (fp32 sum, out of place unless --inplace) on --gpus
//   GPUs (default: all), one rank per GPU on threads of this process: raw
//   ncclAllReduce + cudaStreamSynchronize, the NCCL backend
//   (NcclCommunicator), and the public Communicator on device buffers
//   (backend nccl); each one's extra time over raw, in us and in per cent.
//   The target: the Communicator within 3% of raw NCCL at >= 1 MiB.
//   With one GPU there is one rank: an in-place all-reduce is then a no-op
//   (every size costs the same launch), an out-of-place one a device copy,
//   so only the absolute overhead carries over to a multi-GPU group.
// hier: the hierarchical all-reduce over --nodes "nodes" of one rank each
//   (rank r on GPU r % gpus: on a one-GPU machine every node shares it),
//   joined by UCX through pinned memory, against the staging limit: pinned
//   device -> host and host -> device copy bandwidth measured here (each
//   leader copies the buffer both ways, so with perfect overlap its algbw is
//   at most min(D2H, H2D)), and the host UCX all-reduce of the same bytes
//   (the cross-node part alone).
// Times are medians of --iters (after one warm-up) of rank 0; busbw =
// 2 (n - 1) / n x bytes / time, algbw = bytes / time. Prints why and exits 0
// without a GPU.
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <barrier>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "collectives/nccl/nccl_communicator.h"
#include "collectives/rendezvous/store.h"
#include "plexus/collectives/communicator.h"

namespace {

using namespace plexus::collectives;  // NOLINT: a benchmark's main file

#define CHECK_CUDA(x)                                  \
  do {                                                 \
    cudaError_t e_ = (x);                              \
    if (e_ != cudaSuccess) {                           \
      std::fprintf(stderr, "nccl_bench: %s: %s\n", #x, \
                   cudaGetErrorString(e_));            \
      std::exit(1);                                    \
    }                                                  \
  } while (0)
#define CHECK_NCCL(x)                                  \
  do {                                                 \
    ncclResult_t r_ = (x);                             \
    if (r_ != ncclSuccess) {                           \
      std::fprintf(stderr, "nccl_bench: %s: %s\n", #x, \
                   ncclGetErrorString(r_));            \
      std::exit(1);                                    \
    }                                                  \
  } while (0)
#define CHECK_OK(x)                                                            \
  do {                                                                         \
    absl::Status s_ = (x);                                                     \
    if (!s_.ok()) {                                                            \
      std::fprintf(stderr, "nccl_bench: %s: %s\n", #x, s_.ToString().c_str()); \
      std::exit(1);                                                            \
    }                                                                          \
  } while (0)

struct Args {
  std::string mode = "all";
  int64_t max_mb = 256;
  int iters = 20;
  int gpus = 0;
  int nodes = 2;
  bool inplace = false;
};

// Median seconds of `iters` calls of `f` (after one warm-up), all ranks
// starting each call together.
template <typename F>
double MedianSeconds(int iters, std::barrier<>& sync, F f) {
  f();
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    sync.arrive_and_wait();
    absl::Time start = absl::Now();
    f();
    t.push_back(absl::ToDoubleSeconds(absl::Now() - start));
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

std::vector<size_t> Sizes(int64_t max_mb) {
  std::vector<size_t> sizes;
  for (size_t b = size_t{1} << 20; b <= (size_t(max_mb) << 20); b *= 4) {
    sizes.push_back(b);
  }
  return sizes;
}

CommunicatorOptions Options(Backend backend, std::string node, int device) {
  CommunicatorOptions o;
  o.backend = backend;
  o.node = std::move(node);
  o.device = device;
  o.default_timeout = absl::Seconds(120);
  return o;
}

void Overhead(const Args& a, int gpus) {
  const int n = a.gpus > 0 ? std::min(a.gpus, gpus) : gpus;
  std::printf(
      "\n## overhead: all-reduce fp32 sum %s, %d rank(s), one per GPU\n",
      a.inplace ? "in place" : "out of place", n);
  std::printf("%12s %10s %11s %10s %11s %9s %8s %8s %11s\n", "bytes", "raw us",
              "backend us", "comm us", "backend +us", "comm +us", "backend%",
              "comm%", "busbw GB/s");
  const std::vector<size_t> sizes = Sizes(a.max_mb);
  std::vector<std::vector<double>> raw(sizes.size()), backend(sizes.size()),
      comm(sizes.size());
  for (auto* v : {&raw, &backend, &comm}) {
    for (auto& x : *v) x.assign(n, 0);
  }
  ncclUniqueId id;
  CHECK_NCCL(ncclGetUniqueId(&id));
  auto store = NewMemoryStore();
  auto comm_store = NewMemoryStore();
  std::barrier sync(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      CHECK_CUDA(cudaSetDevice(r));
      cudaStream_t stream;
      CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
      ncclComm_t raw_comm;
      CHECK_NCCL(ncclCommInitRank(&raw_comm, n, id, r));
      nccl::NcclOptions no;
      no.device = r;
      auto be = nccl::NcclCommunicator::Create(store.get(), r, n, no);
      CHECK_OK(be.status());
      auto c = Communicator::Create(comm_store.get(), r, n,
                                    Options(Backend::kNccl, "", r));
      CHECK_OK(c.status());
      if ((*c)->device_backend() != "nccl") {
        std::fprintf(stderr, "nccl_bench: device backend is %s, not nccl\n",
                     std::string((*c)->device_backend()).c_str());
        std::exit(1);
      }
      void* buf = nullptr;
      CHECK_CUDA(cudaMalloc(&buf, sizes.back()));
      CHECK_CUDA(cudaMemset(buf, 0, sizes.back()));
      void* out = buf;
      if (!a.inplace) {
        CHECK_CUDA(cudaMalloc(&out, sizes.back()));
        CHECK_CUDA(cudaMemset(out, 0, sizes.back()));
      }
      for (size_t i = 0; i < sizes.size(); ++i) {
        const size_t count = sizes[i] / 4;
        raw[i][r] = MedianSeconds(a.iters, sync, [&] {
          CHECK_NCCL(ncclAllReduce(buf, out, count, ncclFloat32, ncclSum,
                                   raw_comm, stream));
          CHECK_CUDA(cudaStreamSynchronize(stream));
        });
        backend[i][r] = MedianSeconds(a.iters, sync, [&] {
          CHECK_OK((*be)->AllReduce(buf, out, count, DataType::kFloat32,
                                    ReduceOp::kSum,
                                    absl::Now() + absl::Seconds(60), stream));
        });
        OpOptions op;
        op.stream = stream;
        comm[i][r] = MedianSeconds(a.iters, sync, [&] {
          CHECK_OK((*c)->AllReduce(buf, out, count, DataType::kFloat32,
                                   ReduceOp::kSum, op));
        });
      }
      sync.arrive_and_wait();
      cudaFree(buf);
      if (out != buf) cudaFree(out);
      ncclCommDestroy(raw_comm);
      cudaStreamDestroy(stream);
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < sizes.size(); ++i) {
    const double r = raw[i][0], b = backend[i][0], c = comm[i][0];
    const double busbw = n > 1 ? 2.0 * (n - 1) / n * sizes[i] / r / 1e9 : 0;
    std::printf(
        "%12zu %10.1f %11.1f %10.1f %11.2f %9.2f %7.1f%% %7.1f%% %11.1f\n",
        sizes[i], r * 1e6, b * 1e6, c * 1e6, (b - r) * 1e6, (c - r) * 1e6,
        100 * (b - r) / r, 100 * (c - r) / r, busbw);
  }
}

// Pinned copy bandwidth, bytes/s, one direction.
double CopyBandwidth(size_t bytes, cudaMemcpyKind kind) {
  void *dev = nullptr, *host = nullptr;
  CHECK_CUDA(cudaMalloc(&dev, bytes));
  CHECK_CUDA(cudaHostAlloc(&host, bytes, cudaHostAllocDefault));
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  std::vector<float> ms;
  for (int i = 0; i < 6; ++i) {
    CHECK_CUDA(cudaEventRecord(start));
    if (kind == cudaMemcpyDeviceToHost) {
      CHECK_CUDA(cudaMemcpyAsync(host, dev, bytes, kind));
    } else {
      CHECK_CUDA(cudaMemcpyAsync(dev, host, bytes, kind));
    }
    CHECK_CUDA(cudaEventRecord(stop));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float t = 0;
    CHECK_CUDA(cudaEventElapsedTime(&t, start, stop));
    if (i > 0) ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaFree(dev);
  cudaFreeHost(host);
  return bytes / (ms[ms.size() / 2] * 1e-3);
}

void Hierarchical(const Args& a, int gpus) {
  const int n = std::max(2, a.nodes);
  CHECK_CUDA(cudaSetDevice(0));
  const double d2h = CopyBandwidth(size_t{256} << 20, cudaMemcpyDeviceToHost);
  const double h2d = CopyBandwidth(size_t{256} << 20, cudaMemcpyHostToDevice);
  const double limit = std::min(d2h, h2d);
  std::printf(
      "\n## hierarchical: %d nodes of one rank each on %d GPU(s), "
      "UCX across\n",
      n, std::min(n, gpus));
  std::printf(
      "# pinned copies (256 MiB): D2H %.1f GB/s, H2D %.1f GB/s; "
      "staging limit on algbw: %.1f GB/s\n",
      d2h / 1e9, h2d / 1e9, limit / 1e9);
  std::printf("%12s %12s %12s %12s %12s %12s %10s\n", "bytes", "hier us",
              "algbw GB/s", "busbw GB/s", "host us", "host busbw", "of limit");
  const std::vector<size_t> sizes = Sizes(a.max_mb);
  std::vector<double> hier(sizes.size()), host(sizes.size());
  auto store = NewMemoryStore();
  std::barrier sync(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      CHECK_CUDA(cudaSetDevice(r % gpus));
      auto c = Communicator::Create(
          store.get(), r, n,
          Options(Backend::kHierarchical, absl::StrCat("node", r), r % gpus));
      CHECK_OK(c.status());
      void* buf = nullptr;
      CHECK_CUDA(cudaMalloc(&buf, sizes.back()));
      CHECK_CUDA(cudaMemset(buf, 0, sizes.back()));
      std::vector<char> hbuf(sizes.back());
      for (size_t i = 0; i < sizes.size(); ++i) {
        const size_t count = sizes[i] / 4;
        double t = MedianSeconds(a.iters, sync, [&] {
          CHECK_OK((*c)->AllReduce(buf, buf, count, DataType::kFloat32,
                                   ReduceOp::kSum));
        });
        double h = MedianSeconds(a.iters, sync, [&] {
          CHECK_OK((*c)->AllReduce(hbuf.data(), hbuf.data(), count,
                                   DataType::kFloat32, ReduceOp::kSum));
        });
        if (r == 0) {
          hier[i] = t;
          host[i] = h;
        }
      }
      sync.arrive_and_wait();
      cudaFree(buf);
    });
  }
  for (auto& t : threads) t.join();
  const double f = 2.0 * (n - 1) / n;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const double algbw = sizes[i] / hier[i];
    std::printf("%12zu %12.1f %12.1f %12.1f %12.1f %12.1f %9.0f%%\n", sizes[i],
                hier[i] * 1e6, algbw / 1e9, f * algbw / 1e9, host[i] * 1e6,
                f * sizes[i] / host[i] / 1e9, 100 * algbw / limit);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "nccl_bench: %s needs a value\n", s.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (s == "--mode") {
      a.mode = next();
    } else if (s == "--max_mb") {
      a.max_mb = std::atoll(next().c_str());
    } else if (s == "--iters") {
      a.iters = std::atoi(next().c_str());
    } else if (s == "--gpus") {
      a.gpus = std::atoi(next().c_str());
    } else if (s == "--nodes") {
      a.nodes = std::atoi(next().c_str());
    } else if (s == "--inplace") {
      a.inplace = true;
    } else if (s == "--help" || s == "-h") {
      std::printf(
          "nccl_bench [--mode overhead|hier|all] [--max_mb 256] [--iters 20] "
          "[--gpus N] [--nodes 2] [--inplace]: NCCL backend vs raw "
          "ncclAllReduce (out of place unless --inplace), "
          "hierarchical all-reduce vs the PCIe staging limit\n");
      return 0;
    } else {
      std::fprintf(stderr, "nccl_bench: unknown argument %s\n", s.c_str());
      return 2;
    }
  }
  if (a.mode != "overhead" && a.mode != "hier" && a.mode != "all") {
    std::fprintf(stderr, "nccl_bench: --mode must be overhead, hier or all\n");
    return 2;
  }
  if (a.max_mb < 1 || a.iters < 1 || a.nodes < 2 || a.gpus < 0) {
    std::fprintf(stderr,
                 "nccl_bench: --max_mb and --iters must be >= 1, --nodes >= "
                 "2, --gpus >= 0\n");
    return 2;
  }
  int gpus = 0;
  if (cudaGetDeviceCount(&gpus) != cudaSuccess || gpus == 0) {
    std::printf("nccl_bench: no usable GPU here; nothing measured\n");
    return 0;
  }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  int nccl_version = 0;
  ncclGetVersion(&nccl_version);
  std::printf("# nccl_bench on %d x %s, NCCL %d\n", gpus, prop.name,
              nccl_version);
  if (a.mode == "overhead" || a.mode == "all") Overhead(a, gpus);
  if (a.mode == "hier" || a.mode == "all") Hierarchical(a, gpus);
  return 0;
}
