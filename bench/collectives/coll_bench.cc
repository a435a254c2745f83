// nccl-tests-style all-reduce benchmark: Plexus collectives over UCX against
// Gloo (ring_chunked and halving_doubling over TCP loopback) in the same run,
// with this machine's limits (memory bandwidth, memcpy, loopback TCP).
//
//   coll_bench [--n=2] [--progress=busy|blocking] [--min_bytes=4]
//              [--max_bytes=268435456] [--gloo=1] [--json=FILE]
//              [--pipeline_bytes=262144]
//
// The launcher starts n copies of itself (--worker) joined by a file store in
// a temporary folder; rank 0 prints the table. Per size S (doubling) and fp32
// sum: time = median per-operation time over back-to-back iterations after
// warm-up; algbw = S / time; busbw = algbw * 2 (n - 1) / n; #wrong counts
// elements differing from the exact expected sum. For S <= 64 KiB also
// OSU-style blocking latency (a barrier before each operation), p50 and p99.
// Gloo gets its own context per algorithm, warmed up with the largest message
// first (Debian's Gloo never grows a connection's send buffer past its first
// message, see BENCHMARKS.md).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "collectives/rendezvous/store.h"
#include "common/process.h"
#include "glog/logging.h"
#include "plexus/collectives/communicator.h"

#ifdef PLEXUS_BENCH_WITH_GLOO
#include <gloo/allreduce_halving_doubling.h>
#include <gloo/allreduce_ring_chunked.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/file_store.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/transport/tcp/device.h>
#endif

namespace plexus::collectives::bench {
namespace {

struct Args {
  int argc;
  char** argv;
  std::string Get(const std::string& name, const std::string& def) const {
    const std::string prefix = "--" + name + "=";
    for (int i = 1; i < argc; ++i) {
      if (absl::StartsWith(argv[i], prefix)) return argv[i] + prefix.size();
    }
    return def;
  }
  int64_t Int(const std::string& name, int64_t def) const {
    int64_t v = def;
    if (!absl::SimpleAtoi(Get(name, absl::StrCat(def)), &v)) v = def;
    return v;
  }
  bool Has(const std::string& flag) const {
    for (int i = 1; i < argc; ++i) {
      if (flag == argv[i]) return true;
    }
    return false;
  }
};

double NowUs() {
  return std::chrono::duration<double, std::micro>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * (v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

struct Row {
  std::string impl, algo;
  size_t bytes = 0;
  double time_us = 0, algbw = 0, busbw = 0, p50 = 0, p99 = 0;
  int64_t wrong = 0;
};

int Iterations(size_t bytes) {
  return static_cast<int>(std::clamp<double>(4e8 / (bytes + 4096.0), 5, 300));
}

// Runs op() `iters` times after warm-up; per-op times in us.
std::vector<double> TimeOps(int iters, const std::function<void()>& op) {
  for (int i = 0; i < std::min(iters, 5); ++i) op();
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    double s = NowUs();
    op();
    t.push_back(NowUs() - s);
  }
  return t;
}

void Print(const Row& r) {
  printf("%-7s %-5s %11zu %10zu  fp32 %11.1f %8.3f %8.3f %6lld", r.impl.c_str(),
         r.algo.c_str(), r.bytes, r.bytes / 4, r.time_us, r.algbw, r.busbw,
         static_cast<long long>(r.wrong));
  if (r.p50 > 0) printf(" %9.1f %9.1f", r.p50, r.p99);
  printf("\n");
  fflush(stdout);
}

// --- Limits -----------------------------------------------------------------

void Limits(std::vector<std::pair<std::string, double>>* out) {
  const size_t n = 16 << 20;  // 64 MiB of floats
  std::vector<float> a(n, 1.0f), b(n, 2.0f), c(n);
  auto best = [](const std::function<void()>& f) {
    double t = 1e30;
    for (int i = 0; i < 5; ++i) {
      double s = NowUs();
      f();
      t = std::min(t, NowUs() - s);
    }
    return t;
  };
  double t_add = best([&] {
    float* __restrict pa = a.data();
    const float* __restrict pb = b.data();
    for (size_t i = 0; i < n; ++i) pa[i] += pb[i];
  });
  out->push_back({"a[i] += b[i] (GB/s of a)", n * 4 / t_add / 1e3});
  double t_cpy = best([&] { std::memcpy(c.data(), a.data(), n * 4); });
  out->push_back({"memcpy (GB/s)", n * 4 / t_cpy / 1e3});

  // Loopback TCP: one stream of 512 MiB in 1 MiB writes.
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (ls < 0 || bind(ls, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      listen(ls, 1) != 0 ||
      getsockname(ls, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return;
  }
  const size_t total = 512ul << 20, chunk = 1 << 20;
  std::thread sender([&] {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, reinterpret_cast<sockaddr*>(&addr), len) != 0) return;
    std::vector<char> buf(chunk, 'x');
    for (size_t sent = 0; sent < total;) {
      ssize_t k = write(s, buf.data(), chunk);
      if (k <= 0) break;
      sent += k;
    }
    close(s);
  });
  int r = accept(ls, nullptr, nullptr);
  std::vector<char> buf(chunk);
  double s = NowUs();
  size_t got = 0;
  while (true) {
    ssize_t k = read(r, buf.data(), chunk);
    if (k <= 0) break;
    got += k;
  }
  double t = NowUs() - s;
  sender.join();
  close(r);
  close(ls);
  out->push_back({"loopback TCP (GB/s)", got / t / 1e3});
}

// --- Worker
// -------------------------------------------------------------------

int Worker(const Args& args) {
  const int rank = static_cast<int>(args.Int("rank", 0));
  const int n = static_cast<int>(args.Int("n", 2));
  const size_t min_bytes = args.Int("min_bytes", 4);
  const size_t max_bytes = args.Int("max_bytes", 256 << 20);
  const std::string dir = args.Get("dir", "");
  const bool blocking = args.Get("progress", "busy") == "blocking";
  std::vector<Row> rows;
  std::vector<std::pair<std::string, double>> limits;
  if (rank == 0) Limits(&limits);

  auto file_store = NewFileStore(dir + "/store");
  CHECK(file_store.ok()) << file_store.status();
  CommunicatorOptions options;
  options.progress =
      blocking ? ProgressMode::kBlocking : ProgressMode::kBusyPoll;
  options.default_timeout = absl::Seconds(120);
  options.pipeline_bytes = args.Int("pipeline_bytes", 256 << 10);
  auto comm_or = Communicator::Create(file_store->get(), rank, n, options);
  CHECK(comm_or.ok()) << comm_or.status();
  Communicator* comm = comm_or->get();
  CHECK(comm->Barrier().ok());

  if (rank == 0) {
    printf("# Plexus collectives all-reduce benchmark: n=%d progress=%s\n", n,
           blocking ? "blocking" : "busy-poll");
    for (const auto& [name, v] : limits)
      printf("# limit: %s = %.2f\n", name.c_str(), v);
    printf("%-7s %-5s %11s %10s %5s %11s %8s %8s %6s %9s %9s\n", "impl", "algo",
           "size(B)", "count", "type", "time(us)", "algbw", "busbw", "#wrong",
           "p50(us)", "p99(us)");
  }
  const double bus = 2.0 * (n - 1) / n;
  const float expect = n * (n + 1) / 2.0f;
  auto count_wrong = [&](const std::vector<float>& v, size_t count) {
    int64_t w = 0;
    for (size_t i = 0; i < count; ++i) w += v[i] != expect;
    return w;
  };

  // Plexus.
  std::vector<float> send(max_bytes / 4 + 1, rank + 1.0f), recv(send.size());
  for (size_t bytes = min_bytes; bytes <= max_bytes; bytes *= 2) {
    const size_t count = std::max<size_t>(1, bytes / 4);
    CHECK(comm->Barrier().ok());
    std::fill(recv.begin(), recv.begin() + count, 0.0f);
    Algorithm algo = Algorithm::kAuto;
    // The blocking form (what training loops call); the algorithm comes from
    // one asynchronous call's handle.
    {
      auto w = comm->AllReduceAsync(send.data(), recv.data(), count,
                                    DataType::kFloat32, ReduceOp::kSum);
      CHECK(w->Wait().ok());
      algo = w->algorithm();
    }
    auto times = TimeOps(Iterations(bytes), [&] {
      CHECK(comm->AllReduce(send.data(), recv.data(), count, DataType::kFloat32,
                            ReduceOp::kSum)
                .ok());
    });
    Row row{"plexus", std::string(AlgorithmName(algo)), count * 4};
    row.time_us = Percentile(times, 0.5);
    row.algbw = row.bytes / row.time_us / 1e3;
    row.busbw = row.algbw * bus;
    row.wrong = count_wrong(recv, count);
    if (bytes <= (64 << 10)) {
      std::vector<double> lat;
      for (int i = 0; i < 200; ++i) {
        CHECK(comm->Barrier().ok());
        double s = NowUs();
        CHECK(comm->AllReduce(send.data(), recv.data(), count,
                              DataType::kFloat32, ReduceOp::kSum)
                  .ok());
        lat.push_back(NowUs() - s);
      }
      row.p50 = Percentile(lat, 0.5);
      row.p99 = Percentile(lat, 0.99);
    }
    if (rank == 0) Print(row);
    rows.push_back(row);
  }

#ifdef PLEXUS_BENCH_WITH_GLOO
  if (args.Int("gloo", 1) != 0) {
    gloo::transport::tcp::attr attr;
    attr.hostname = "127.0.0.1";
    auto dev = gloo::transport::tcp::CreateDevice(attr);
    gloo::rendezvous::FileStore gstore(dir + "/gloo");
    for (std::string name : {"ring_chunked", "halving_doubling"}) {
      // A fresh context (fresh connections) per algorithm.
      gloo::rendezvous::PrefixStore pstore(name, gstore);
      auto ctx = std::make_shared<gloo::rendezvous::Context>(rank, n);
      ctx->setTimeout(std::chrono::seconds(300));
      ctx->connectFullMesh(pstore, dev);
      auto make = [&](float* buf,
                      size_t count) -> std::unique_ptr<gloo::Algorithm> {
        std::vector<float*> ptrs = {buf};
        if (name == "ring_chunked") {
          return std::make_unique<gloo::AllreduceRingChunked<float>>(
              ctx, ptrs, static_cast<int>(count));
        }
        return std::make_unique<gloo::AllreduceHalvingDoubling<float>>(
            ctx, ptrs, static_cast<int>(count));
      };
      {
        // Warm-up with the largest message first.
        auto warm = make(recv.data(), max_bytes / 4);
        warm->run();
      }
      const std::string short_name = name == "ring_chunked" ? "ring" : "hd";
      for (size_t bytes = min_bytes; bytes <= max_bytes; bytes *= 2) {
        const size_t count = std::max<size_t>(1, bytes / 4);
        std::fill(recv.begin(), recv.begin() + count, rank + 1.0f);
        auto algo = make(recv.data(), count);
        algo->run();
        Row row{"gloo", short_name, count * 4};
        row.wrong = count_wrong(recv, count);
        auto times = TimeOps(Iterations(bytes), [&] { algo->run(); });
        row.time_us = Percentile(times, 0.5);
        row.algbw = row.bytes / row.time_us / 1e3;
        row.busbw = row.algbw * bus;
        if (bytes <= (64 << 10)) {
          // Blocking latency: Plexus' barrier (UCX) before each run.
          std::vector<double> lat;
          for (int i = 0; i < 200; ++i) {
            CHECK(comm->Barrier().ok());
            double s = NowUs();
            algo->run();
            lat.push_back(NowUs() - s);
          }
          row.p50 = Percentile(lat, 0.5);
          row.p99 = Percentile(lat, 0.99);
        }
        if (rank == 0) Print(row);
        rows.push_back(row);
      }
    }
  }
#endif

  if (rank == 0) {
    // Ratios: Plexus busbw vs the best Gloo algorithm per size >= 1 MiB, and
    // p50 latency at <= 4 KiB.
    printf("# ratios (plexus / best gloo): size busbw_ratio p50_ratio\n");
    for (const Row& p : rows) {
      if (p.impl != "plexus") continue;
      double gbw = 0, glat = 1e30;
      for (const Row& g : rows) {
        if (g.impl == "gloo" && g.bytes == p.bytes) {
          gbw = std::max(gbw, g.busbw);
          if (g.p50 > 0) glat = std::min(glat, g.p50);
        }
      }
      if (gbw == 0) continue;
      if (p.bytes >= (1 << 20) || p.bytes <= 4096) {
        printf("# %11zu  busbw x%.2f", p.bytes, p.busbw / gbw);
        if (p.p50 > 0 && glat < 1e30)
          printf("  p50 x%.2f (lower is better)", p.p50 / glat);
        printf("\n");
      }
    }
    const std::string json = args.Get("json", "");
    if (!json.empty()) {
      std::string out =
          absl::StrCat("{\"n\": ", n, ", \"progress\": \"",
                       blocking ? "blocking" : "busy", "\", \"limits\": {");
      for (size_t i = 0; i < limits.size(); ++i) {
        absl::StrAppend(&out, i ? ", " : "", "\"", limits[i].first,
                        "\": ", limits[i].second);
      }
      absl::StrAppend(&out, "}, \"rows\": [");
      for (size_t i = 0; i < rows.size(); ++i) {
        const Row& r = rows[i];
        absl::StrAppend(
            &out, i ? ",\n  " : "\n  ",
            absl::StrFormat(
                "{\"impl\": \"%s\", \"algo\": \"%s\", \"bytes\": %d, "
                "\"dtype\": \"fp32\", \"time_us\": %.3f, \"algbw_GBps\": "
                "%.4f, \"busbw_GBps\": %.4f, \"wrong\": %d, \"p50_us\": %.3f, "
                "\"p99_us\": %.3f}",
                r.impl, r.algo, r.bytes, r.time_us, r.algbw, r.busbw, r.wrong,
                r.p50, r.p99));
      }
      absl::StrAppend(&out, "\n]}\n");
      CHECK(WriteFileAtomically(json, out).ok());
    }
  }
  CHECK(comm->Barrier().ok());
  return 0;
}

// --- Launcher
// -----------------------------------------------------------------

int Launcher(const Args& args) {
  const int n = static_cast<int>(args.Int("n", 2));
  char tmpl[] = "/tmp/plexus-bench-XXXXXX";
  CHECK(mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl;
  std::filesystem::create_directory(dir + "/store");
  std::filesystem::create_directory(dir + "/gloo");
  std::vector<std::unique_ptr<Subprocess>> procs;
  for (int r = 0; r < n; ++r) {
    SubprocessOptions o;
    o.argv = {"/proc/self/exe"};
    o.argv[0] = std::filesystem::read_symlink("/proc/self/exe").string();
    for (int i = 1; i < args.argc; ++i) o.argv.push_back(args.argv[i]);
    o.argv.push_back("--worker");
    o.argv.push_back(absl::StrCat("--rank=", r));
    o.argv.push_back("--dir=" + dir);
    if (r > 0) o.log_file = dir + absl::StrCat("/rank", r, ".log");
    auto p = Subprocess::Start(o);
    CHECK(p.ok()) << p.status();
    procs.push_back(std::move(*p));
  }
  int rc = 0;
  for (int r = 0; r < n; ++r) {
    auto code = procs[r]->Wait(absl::Minutes(30));
    if (!code.ok() || *code != 0) {
      fprintf(stderr, "rank %d failed (%s); log in %s\n", r,
              code.ok() ? absl::StrCat("exit ", *code).c_str()
                        : code.status().ToString().c_str(),
              dir.c_str());
      rc = 1;
    }
  }
  if (rc == 0) std::filesystem::remove_all(dir);
  return rc;
}

}  // namespace
}  // namespace plexus::collectives::bench

int main(int argc, char** argv) {
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  plexus::collectives::bench::Args args{argc, argv};
  return args.Has("--worker") ? plexus::collectives::bench::Worker(args)
                              : plexus::collectives::bench::Launcher(args);
}
