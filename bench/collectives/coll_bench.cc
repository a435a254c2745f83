// nccl-tests-style all-reduce benchmark: Plexus collectives over UCX against
// its peers in the same run -- Gloo (ring_chunked and halving_doubling over
// TCP loopback) and Open MPI's MPI_Allreduce (shared memory, and TCP with
// `--mca btl self,tcp`; mpi_allreduce_bench.cc) -- and this machine's limits
// (a[i] += b[i], memcpy, loopback TCP, UCX tag bandwidth with and without
// CMA from ucx_perftest).
//
//   coll_bench [--n=2] [--progress=busy|blocking] [--min_bytes=4]
//              [--max_bytes=268435456] [--repeats=1] [--gloo=1] [--mpi=1]
//              [--ucx_perftest=1] [--ucx_tls=...] [--pipeline_bytes=262144]
//              [--single_copy_bytes=262144]
//              [--json=FILE] [--png=FILE]
//
// Each round: the launcher starts n copies of itself (--worker) joined by a
// file store in a temporary folder (Plexus, then Gloo; rank 0 prints rows as
// they come), then, once they have exited, `mpirun --allow-run-as-root
// --oversubscribe -np n` for each Open MPI variant, then ucx_perftest. The
// summary is the median over rounds of each row. Per size S (doubling) and
// fp32 sum: time = median per-operation time over back-to-back iterations
// after warm-up; algbw = S / time; busbw = algbw * 2 (n - 1) / n; #wrong
// counts elements differing from the exact expected sum on any rank (MPI) or
// rank 0 (Plexus, Gloo). For S <= 64 KiB also OSU-style blocking latency (the
// implementation's own barrier before each operation), p50 and p99. Ratios
// are Plexus over each peer: busbw for S >= 1 MiB, p50 for S <= 4 KiB. Gloo
// gets its own context per algorithm, warmed up with the largest message
// first (Debian's Gloo never grows a connection's send buffer past its first
// message, see BENCHMARKS.md). --ucx_tls sets UCX_TLS for the Plexus ranks
// only. Peers that are not installed are skipped with a message.
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
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "bench/collectives/png_plot.h"
#include "collectives/rendezvous/store.h"
#include "common/init.h"
#include "common/process.h"
#include "glog/logging.h"
#include "plexus/collectives/communicator.h"

#ifdef PLEXUS_BENCH_WITH_GLOO
#include <gloo/allreduce_halving_doubling.h>
#include <gloo/allreduce_ring_chunked.h>
#include <gloo/barrier_all_to_all.h>
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

constexpr char kUsage[] =
    R"(coll_bench: nccl-tests-style fp32 sum all-reduce benchmark. Starts n ranks
of Plexus collectives (UCX), then Gloo's ring_chunked and halving_doubling
(TCP loopback), then Open MPI's MPI_Allreduce (shared memory and TCP) through
mpirun, then ucx_perftest, and prints per-size busbw and latency tables with
Plexus/peer ratios and this machine's limits (a[i] += b[i], memcpy, loopback
TCP, UCX bandwidth).

usage: coll_bench [--flag=value ...]
  --n=2                    ranks (processes) per group
  --progress=busy          Plexus progress mode: busy or blocking
  --min_bytes=4            smallest message size (doubling up to max)
  --max_bytes=268435456    largest message size
  --repeats=1              rounds; the summary is the median over rounds
  --pipeline_bytes=262144  Plexus pipeline piece size
  --single_copy_bytes=262144  Plexus ring reads peers' memory (one copy) from
                           this size up; 0: messages only
  --gloo=1                 0: skip the Gloo peer
  --mpi=1                  0: skip the Open MPI peer
  --ucx_perftest=1         0: skip the ucx_perftest limit
  --ucx_tls=               UCX_TLS for the Plexus ranks (empty: Plexus' choice)
  --loop_ops=0             first run this many back-to-back all-reduces of
                           --min_bytes (a steady loop for perf record -p)
  --json=                  also write the rows as JSON to this file
  --png=                   also plot busbw against size to this PNG file
  -h, --help               print this and exit
)";

// Returns -1 to go on, else the exit code: 0 after --help, 2 after an unknown
// flag or a bad value (said on stderr). --worker, --rank and --dir are the
// launcher's own arguments to its ranks.
int CheckFlags(int argc, char** argv) {
  struct Flag {
    const char* name;
    bool numeric;
  };
  static constexpr Flag kFlags[] = {{"n", true},
                                    {"min_bytes", true},
                                    {"max_bytes", true},
                                    {"repeats", true},
                                    {"gloo", true},
                                    {"mpi", true},
                                    {"ucx_perftest", true},
                                    {"pipeline_bytes", true},
                                    {"single_copy_bytes", true},
                                    {"loop_ops", true},
                                    {"rank", true},
                                    {"progress", false},
                                    {"ucx_tls", false},
                                    {"json", false},
                                    {"png", false},
                                    {"dir", false}};
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      fputs(kUsage, stdout);
      return 0;
    }
    if (arg == "--worker") continue;
    const size_t eq = arg.find('=');
    const Flag* flag = nullptr;
    if (absl::StartsWith(arg, "--") && eq != absl::string_view::npos) {
      for (const Flag& f : kFlags) {
        if (arg.substr(2, eq - 2) == f.name) flag = &f;
      }
    }
    const char* why = nullptr;
    int64_t number;
    if (flag == nullptr) {
      why = "unknown flag";
    } else if (flag->numeric &&
               !absl::SimpleAtoi(arg.substr(eq + 1), &number)) {
      why = "not a number";
    } else if (absl::StartsWith(arg, "--progress=") &&
               arg != "--progress=busy" && arg != "--progress=blocking") {
      why = "expected busy or blocking";
    }
    if (why != nullptr) {
      fprintf(stderr,
              "coll_bench: %s: '%s' (flags are --name=value; see --help)\n",
              why, argv[i]);
      return 2;
    }
  }
  return -1;
}

// A benchmark has no caller to hand an error to: a failed collective ends the
// run, saying why.
void CheckOk(const absl::Status& status) { CHECK(status.ok()) << status; }

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

// One row as the line the launcher parses (ParseLines).
std::string RowLine(const Row& r) {
  return absl::StrFormat("ROW %s %s %d %.3f %.3f %.3f %d", r.impl, r.algo,
                         r.bytes, r.time_us, r.p50, r.p99, r.wrong);
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
  options.single_copy_bytes = args.Int("single_copy_bytes", 256 << 10);
  auto comm_or = Communicator::Create(file_store->get(), rank, n, options);
  CHECK(comm_or.ok()) << comm_or.status();
  Communicator* comm = comm_or->get();
  CheckOk(comm->Barrier());

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
  // --loop_ops=N: N back-to-back blocking all-reduces of --min_bytes first,
  // a steady loop to profile (`perf record -p` on a rank).
  if (const int64_t loop = args.Int("loop_ops", 0); loop > 0) {
    const size_t count = std::max<size_t>(1, min_bytes / 4);
    const double s = NowUs();
    for (int64_t i = 0; i < loop; ++i) {
      CheckOk(comm->AllReduce(send.data(), recv.data(), count,
                              DataType::kFloat32, ReduceOp::kSum));
    }
    if (rank == 0) {
      printf("# loop: %lld all-reduces of %zu B, mean %.3f us\n",
             static_cast<long long>(loop), count * 4,
             (NowUs() - s) / static_cast<double>(loop));
    }
  }
  for (size_t bytes = min_bytes; bytes <= max_bytes; bytes *= 2) {
    const size_t count = std::max<size_t>(1, bytes / 4);
    CheckOk(comm->Barrier());
    std::fill(recv.begin(), recv.begin() + count, 0.0f);
    Algorithm algo = Algorithm::kAuto;
    // The blocking form (what training loops call); the algorithm comes from
    // one asynchronous call's handle.
    {
      auto w = comm->AllReduceAsync(send.data(), recv.data(), count,
                                    DataType::kFloat32, ReduceOp::kSum);
      CheckOk(w->Wait());
      algo = w->algorithm();
    }
    auto times = TimeOps(Iterations(bytes), [&] {
      CheckOk(comm->AllReduce(send.data(), recv.data(), count,
                              DataType::kFloat32, ReduceOp::kSum));
    });
    Row row{"plexus", std::string(AlgorithmName(algo)), count * 4};
    row.time_us = Percentile(times, 0.5);
    row.algbw = row.bytes / row.time_us / 1e3;
    row.busbw = row.algbw * bus;
    row.wrong = count_wrong(recv, count);
    if (bytes <= (64 << 10)) {
      std::vector<double> lat;
      for (int i = 0; i < 200; ++i) {
        CheckOk(comm->Barrier());
        double s = NowUs();
        CheckOk(comm->AllReduce(send.data(), recv.data(), count,
                                DataType::kFloat32, ReduceOp::kSum));
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
    // A fresh context (fresh connections) per algorithm, all connected up
    // front: Gloo's file store gives up on a key after 30 s, less than a
    // slow rank's whole ring run takes when oversubscribed.
    const std::vector<std::string> names = {"ring_chunked", "halving_doubling"};
    std::vector<std::shared_ptr<gloo::rendezvous::Context>> contexts;
    for (const std::string& name : names) {
      gloo::rendezvous::PrefixStore pstore(name, gstore);
      auto ctx = std::make_shared<gloo::rendezvous::Context>(rank, n);
      ctx->setTimeout(std::chrono::seconds(300));
      ctx->connectFullMesh(pstore, dev);
      contexts.push_back(std::move(ctx));
    }
    for (size_t a = 0; a < names.size(); ++a) {
      const std::string& name = names[a];
      std::shared_ptr<gloo::rendezvous::Context> ctx = contexts[a];
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
          // Blocking latency: Gloo's own barrier before each run (with
          // Plexus' busy-polling barrier Gloo's sleeping threads measured
          // milliseconds, which is not Gloo's latency).
          gloo::BarrierAllToAll barrier(ctx);
          std::vector<double> lat;
          for (int i = 0; i < 200; ++i) {
            barrier.run();
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
    // The launcher merges these rows with the MPI peer's and reports.
    std::string out;
    for (const auto& [name, v] : limits) {
      absl::StrAppend(&out, "LIMIT\t", name, "\t", v, "\n");
    }
    for (const Row& r : rows) absl::StrAppend(&out, RowLine(r), "\n");
    CHECK(WriteFileAtomically(dir + "/rows.txt", out).ok());
  }
  CheckOk(comm->Barrier());
  return 0;
}

// --- Launcher
// -----------------------------------------------------------------

// What one round measured: rows and limits (name -> GB/s).
struct Round {
  std::vector<Row> rows;
  std::vector<std::pair<std::string, double>> limits;
};

// Parses ROW / LIMIT lines (RowLine's format, and the MPI program's).
void ParseLines(const std::string& text, Round* round) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    std::vector<std::string> f =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (f.size() == 8 && f[0] == "ROW") {
      Row r{f[1], f[2]};
      double t = 0, p50 = 0, p99 = 0;
      int64_t wrong = 0;
      if (!absl::SimpleAtoi(f[3], &r.bytes) || !absl::SimpleAtod(f[4], &t) ||
          !absl::SimpleAtod(f[5], &p50) || !absl::SimpleAtod(f[6], &p99) ||
          !absl::SimpleAtoi(f[7], &wrong)) {
        continue;
      }
      r.time_us = t;
      r.p50 = p50;
      r.p99 = p99;
      r.wrong = wrong;
      round->rows.push_back(r);
    }
  }
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    std::vector<std::string> f = absl::StrSplit(line, '\t');
    double v = 0;
    if (f.size() == 3 && f[0] == "LIMIT" && absl::SimpleAtod(f[2], &v)) {
      round->limits.push_back({f[1], v});
    }
  }
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// `name` found on PATH; empty if none.
std::string FindProgram(const std::string& name) {
  const char* path = std::getenv("PATH");
  for (absl::string_view d : absl::StrSplit(path ? path : "", ':')) {
    std::string p = absl::StrCat(d, "/", name);
    if (!d.empty() && access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

std::string SelfPath() {
  return std::filesystem::read_symlink("/proc/self/exe").string();
}

// Runs argv with its output in `log`; true when it exits 0 within `timeout`.
bool RunLogged(std::vector<std::string> argv,
               std::vector<std::pair<std::string, std::string>> env,
               const std::string& log, absl::Duration timeout) {
  SubprocessOptions o;
  o.argv = std::move(argv);
  o.env = std::move(env);
  o.log_file = log;
  auto p = Subprocess::Start(o);
  if (!p.ok()) {
    fprintf(stderr, "# cannot start %s: %s\n", o.argv[0].c_str(),
            p.status().ToString().c_str());
    return false;
  }
  auto code = (*p)->Wait(timeout);
  if (!code.ok() || *code != 0) {
    fprintf(stderr, "# %s failed (%s); output in %s\n", o.argv[0].c_str(),
            code.ok() ? absl::StrCat("exit ", *code).c_str()
                      : code.status().ToString().c_str(),
            log.c_str());
    return false;
  }
  return true;
}

// Open MPI's MPI_Allreduce over the same sizes, n processes (mpirun), once
// with Open MPI's defaults (shared memory: vader, with CMA single-copy) and
// once over TCP loopback (`--mca pml ob1 --mca btl self,tcp`), as
// BENCHMARKS.md asks.
void RunMpi(const Args& args, const std::string& dir, int n, Round* round) {
  const std::string mpirun = FindProgram("mpirun");
  const std::string bin =
      std::filesystem::path(SelfPath()).parent_path() / "mpi_allreduce_bench";
  if (mpirun.empty() || access(bin.c_str(), X_OK) != 0) {
    printf("# Open MPI peer skipped: %s not found\n",
           mpirun.empty() ? "mpirun" : bin.c_str());
    return;
  }
  struct Variant {
    std::string label;
    std::vector<std::string> mca;
  };
  const std::vector<Variant> variants = {
      {"shm", {}},
      {"tcp", {"--mca", "pml", "ob1", "--mca", "btl", "self,tcp"}},
  };
  for (const Variant& v : variants) {
    std::vector<std::string> argv = {mpirun, "--allow-run-as-root",
                                     "--oversubscribe", "-np", absl::StrCat(n)};
    argv.insert(argv.end(), v.mca.begin(), v.mca.end());
    argv.insert(argv.end(),
                {bin, absl::StrCat("--min_bytes=", args.Int("min_bytes", 4)),
                 absl::StrCat("--max_bytes=", args.Int("max_bytes", 256 << 20)),
                 "--label=" + v.label});
    const std::string log = dir + "/mpi_" + v.label + ".txt";
    if (!RunLogged(argv, {}, log, absl::Minutes(30))) {
      continue;
    }
    Round r;
    ParseLines(ReadFile(log), &r);
    for (Row& row : r.rows) {
      row.algbw = row.bytes / row.time_us / 1e3;
      row.busbw = row.algbw * 2.0 * (n - 1) / n;
      Print(row);
      round->rows.push_back(row);
    }
  }
}

// UCX's own point-to-point bandwidth between two processes (ucx_perftest,
// tag_bw, 1 MiB messages), with CMA (UCX's defaults) and without it (what
// Plexus' transport runs with): the shared-memory limit for the ring.
void RunUcxPerftest(const std::string& dir, Round* round) {
  const std::string bin = FindProgram("ucx_perftest");
  if (bin.empty()) {
    printf(
        "# UCX shared-memory limit skipped: ucx_perftest not found "
        "(Debian's ucx-utils)\n");
    return;
  }
  struct Variant {
    std::string name;
    std::vector<std::pair<std::string, std::string>> env;
  };
  const std::vector<Variant> variants = {
      {"UCX tag_bw 1 MiB, shm+cma (GB/s)", {}},
      {"UCX tag_bw 1 MiB, no cma (GB/s)", {{"UCX_TLS", "^cma"}}},
  };
  int port = 20000 + getpid() % 20000;
  for (const Variant& v : variants) {
    ++port;
    SubprocessOptions so;
    so.argv = {bin, "-p", absl::StrCat(port)};
    so.env = v.env;
    so.log_file = dir + "/perftest_server.txt";
    auto server = Subprocess::Start(so);
    if (!server.ok()) continue;
    absl::SleepFor(absl::Milliseconds(300));
    const std::string log = dir + "/perftest.txt";
    std::filesystem::remove(log);
    if (!RunLogged({bin, "127.0.0.1", "-p", absl::StrCat(port), "-t", "tag_bw",
                    "-s", "1048576", "-n", "2000"},
                   v.env, log, absl::Minutes(2))) {
      continue;
    }
    (*server)->Wait(absl::Seconds(5)).IgnoreError();
    // "Final: iters 50%ile avg overall bw_avg(MB/s) bw_overall msgrate..."
    for (absl::string_view line : absl::StrSplit(ReadFile(log), '\n')) {
      std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
      double mbs = 0;
      if (f.size() >= 6 && f[0] == "Final:" && absl::SimpleAtod(f[5], &mbs)) {
        round->limits.push_back({v.name, mbs * 1048576 / 1e9});
      }
    }
  }
}

std::string Key(const Row& r) {
  return absl::StrCat(r.impl == "plexus" ? "plexus" : r.impl + " " + r.algo);
}

double Median(std::vector<double> v) { return Percentile(std::move(v), 0.5); }

int Launcher(const Args& args) {
  const int n = static_cast<int>(args.Int("n", 2));
  const int repeats =
      static_cast<int>(std::max<int64_t>(1, args.Int("repeats", 1)));
  const bool blocking = args.Get("progress", "busy") == "blocking";
  const std::string ucx_tls = args.Get("ucx_tls", "");
  std::vector<Round> rounds;
  int rc = 0;
  for (int round = 0; round < repeats; ++round) {
    char tmpl[] = "/tmp/plexus-bench-XXXXXX";
    CHECK(mkdtemp(tmpl) != nullptr);
    const std::string dir = tmpl;
    std::filesystem::create_directory(dir + "/store");
    std::filesystem::create_directory(dir + "/gloo");
    if (repeats > 1) printf("# round %d of %d\n", round + 1, repeats);
    std::vector<std::unique_ptr<Subprocess>> procs;
    for (int r = 0; r < n; ++r) {
      SubprocessOptions o;
      o.argv = {SelfPath()};
      for (int i = 1; i < args.argc; ++i) o.argv.push_back(args.argv[i]);
      o.argv.push_back("--worker");
      o.argv.push_back(absl::StrCat("--rank=", r));
      o.argv.push_back("--dir=" + dir);
      if (r > 0) o.log_file = dir + absl::StrCat("/rank", r, ".log");
      // UCX_TLS for Plexus (and Gloo) ranks only: mpirun's ranks read it too
      // when Open MPI runs over UCX.
      if (!ucx_tls.empty()) o.env.push_back({"UCX_TLS", ucx_tls});
      auto p = Subprocess::Start(o);
      CHECK(p.ok()) << p.status();
      procs.push_back(std::move(*p));
    }
    bool ok = true;
    for (int r = 0; r < n; ++r) {
      auto code = procs[r]->Wait(absl::Minutes(30));
      if (!code.ok() || *code != 0) {
        fprintf(stderr, "rank %d failed (%s); log in %s\n", r,
                code.ok() ? absl::StrCat("exit ", *code).c_str()
                          : code.status().ToString().c_str(),
                dir.c_str());
        ok = false;
      }
    }
    if (!ok) {
      rc = 1;
      continue;
    }
    Round result;
    ParseLines(ReadFile(dir + "/rows.txt"), &result);
    // The peers run after the workers have exited: a busy-polling rank
    // would otherwise take a core from them.
    if (args.Int("mpi", 1) != 0) RunMpi(args, dir, n, &result);
    if (args.Int("ucx_perftest", 1) != 0) RunUcxPerftest(dir, &result);
    rounds.push_back(std::move(result));
    std::filesystem::remove_all(dir);
  }
  if (rounds.empty()) return 1;

  // Medians over rounds, per (implementation, algorithm, size).
  std::map<std::pair<std::string, size_t>, std::vector<Row>> by_key;
  std::vector<std::string> order;
  std::map<std::string, std::vector<double>> limit_values;
  std::vector<std::string> limit_order;
  for (const Round& r : rounds) {
    for (const Row& row : r.rows) {
      const std::string k = Key(row);
      if (std::find(order.begin(), order.end(), k) == order.end()) {
        order.push_back(k);
      }
      by_key[{k, row.bytes}].push_back(row);
    }
    for (const auto& [name, v] : r.limits) {
      if (!limit_values.count(name)) limit_order.push_back(name);
      limit_values[name].push_back(v);
    }
  }
  const double bus = 2.0 * (n - 1) / n;
  std::map<std::string, std::vector<Row>> series;
  for (const auto& [key, rows] : by_key) {
    Row m = rows.back();
    std::vector<double> t, p50, p99;
    m.wrong = 0;
    for (const Row& r : rows) {
      t.push_back(r.time_us);
      p50.push_back(r.p50);
      p99.push_back(r.p99);
      m.wrong += r.wrong;
    }
    m.time_us = Median(t);
    m.p50 = Median(p50);
    m.p99 = Median(p99);
    m.algbw = m.bytes / m.time_us / 1e3;
    m.busbw = m.algbw * bus;
    series[key.first].push_back(m);
  }
  std::vector<std::pair<std::string, double>> limits;
  for (const std::string& name : limit_order) {
    limits.push_back({name, Median(limit_values[name])});
  }

  printf(
      "\n# Summary: all-reduce fp32 sum, n=%d, Plexus progress=%s%s, "
      "medians over %d round(s)%s\n",
      n, blocking ? "blocking" : "busy-poll",
      ucx_tls.empty() ? "" : (" UCX_TLS=" + ucx_tls).c_str(),
      static_cast<int>(rounds.size()),
      n > static_cast<int>(std::thread::hardware_concurrency())
          ? " (oversubscribed: more ranks than cores)"
          : "");
  for (const auto& [name, v] : limits) {
    printf("# limit: %s = %.2f\n", name.c_str(), v);
  }
  printf("%-7s %-5s %11s %10s %5s %11s %8s %8s %6s %9s %9s\n", "impl", "algo",
         "size(B)", "count", "type", "time(us)", "algbw", "busbw", "#wrong",
         "p50(us)", "p99(us)");
  for (const std::string& k : order) {
    for (const Row& r : series[k]) Print(r);
  }

  // Ratios at the sizes the targets name: busbw for >= 1 MiB, p50 for
  // <= 4 KiB (lower is better for latency ratios).
  auto find = [&](const std::string& k, size_t bytes) -> const Row* {
    for (const Row& r : series[k]) {
      if (r.bytes == bytes) return &r;
    }
    return nullptr;
  };
  std::vector<std::string> peers;
  for (const std::string& k : order) {
    if (k != "plexus") peers.push_back(k);
  }
  std::string json_ratios;
  printf(
      "\n# ratios: plexus / peer (busbw: higher is better; p50 latency: "
      "lower is better)\n# %10s %7s",
      "size(B)", "metric");
  for (const std::string& p : peers) printf(" %12s", p.c_str());
  printf(" %12s\n", "best-gloo");
  for (const Row& p : series["plexus"]) {
    const bool big = p.bytes >= (1 << 20), small = p.bytes <= 4096;
    if (!big && !small) continue;
    printf("# %10zu %7s", p.bytes, big ? "busbw" : "p50");
    double best_gloo = big ? 0 : 1e30;
    std::string json_row = absl::StrFormat("{\"bytes\": %d, \"metric\": \"%s\"",
                                           p.bytes, big ? "busbw" : "p50");
    for (const std::string& k : peers) {
      const Row* g = find(k, p.bytes);
      double ratio = 0;
      if (g != nullptr) {
        ratio = big ? p.busbw / g->busbw : (g->p50 > 0 ? p.p50 / g->p50 : 0);
        if (absl::StartsWith(k, "gloo")) {
          best_gloo = big ? std::max(best_gloo, g->busbw)
                          : std::min(best_gloo, g->p50 > 0 ? g->p50 : 1e30);
        }
      }
      printf(" %12.2f", ratio);
      absl::StrAppend(&json_row, ", \"", k, "\": ", ratio);
    }
    double r = 0;
    if (big && best_gloo > 0) r = p.busbw / best_gloo;
    if (small && best_gloo < 1e30) r = p.p50 / best_gloo;
    printf(" %12.2f\n", r);
    absl::StrAppend(&json_row, ", \"best gloo\": ", r, "}");
    absl::StrAppend(&json_ratios, json_ratios.empty() ? "\n  " : ",\n  ",
                    json_row);
  }

  const std::string json = args.Get("json", "");
  if (!json.empty()) {
    std::string out = absl::StrCat(
        "{\"n\": ", n, ", \"progress\": \"", blocking ? "blocking" : "busy",
        "\", \"rounds\": ", rounds.size(),
        ", \"cores\": ", std::thread::hardware_concurrency(),
        ", \"limits_GBps\": {");
    for (size_t i = 0; i < limits.size(); ++i) {
      absl::StrAppend(&out, i ? ", " : "", "\"", limits[i].first,
                      "\": ", limits[i].second);
    }
    absl::StrAppend(&out, "}, \"rows\": [");
    bool first = true;
    for (const std::string& k : order) {
      for (const Row& r : series[k]) {
        absl::StrAppend(
            &out, first ? "\n  " : ",\n  ",
            absl::StrFormat(
                "{\"impl\": \"%s\", \"algo\": \"%s\", \"bytes\": %d, "
                "\"count\": %d, \"dtype\": \"fp32\", \"time_us\": %.3f, "
                "\"algbw_GBps\": %.4f, \"busbw_GBps\": %.4f, \"wrong\": %d, "
                "\"p50_us\": %.3f, \"p99_us\": %.3f}",
                r.impl, r.algo, r.bytes, r.bytes / 4, r.time_us, r.algbw,
                r.busbw, r.wrong, r.p50, r.p99));
        first = false;
      }
    }
    absl::StrAppend(&out, "\n], \"ratios\": [", json_ratios, "\n]}\n");
    CHECK(WriteFileAtomically(json, out).ok());
    printf("# wrote %s\n", json.c_str());
  }

  const std::string png = args.Get("png", "");
  if (!png.empty()) {
    PlotSpec spec;
    spec.title = absl::StrFormat("all-reduce busbw, fp32, n=%d%s", n,
                                 blocking ? ", plexus blocking" : "");
    spec.x_label = "message size (bytes)";
    spec.y_label = "busbw (GB/s)";
    const uint32_t colors[] = {0x1F77B4, 0xFF7F0E, 0x8C564B,
                               0x2CA02C, 0x9467BD, 0x17BECF};
    int c = 0;
    for (const std::string& k : order) {
      PlotSeries s{k, colors[c++ % 6]};
      for (const Row& r : series[k]) {
        s.points.push_back({static_cast<double>(r.bytes), r.busbw});
      }
      spec.series.push_back(std::move(s));
    }
    const uint32_t limit_colors[] = {0xD62728, 0x7F7F7F, 0xBCBD22, 0xE377C2,
                                     0x000000};
    int lc = 0;
    for (const auto& [name, v] : limits) {
      std::string label = name;
      const size_t cut = label.find(" (GB/s");
      if (cut != std::string::npos) label.resize(cut);
      spec.limits.push_back({label, limit_colors[lc++ % 5], v});
    }
    absl::Status st = WritePlotPng(spec, png);
    if (st.ok()) {
      printf("# wrote %s\n", png.c_str());
    } else {
      fprintf(stderr, "# plot: %s\n", st.ToString().c_str());
      rc = 1;
    }
  }
  return rc;
}

}  // namespace
}  // namespace plexus::collectives::bench

int main(int argc, char** argv) {
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  if (int rc = plexus::collectives::bench::CheckFlags(argc, argv); rc >= 0) {
    return rc;
  }
  // What Plexus's programs run with (their InitProcess does this).
  plexus::TuneProcess();
  plexus::collectives::bench::Args args{argc, argv};
  return args.Has("--worker") ? plexus::collectives::bench::Worker(args)
                              : plexus::collectives::bench::Launcher(args);
}
