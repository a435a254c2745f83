// ps_bench: the parameter server's data plane end to end (PsClient -> gRPC
// or the direct data plane -> plexus-ps processes on 127.0.0.1), next to this
// machine's limits measured in the same run (loopback TCP stream and round
// trip, memcpy) and gRPC's own floor (an empty unary call).
//
//   ps_bench [--bin_dir DIR] [--shards 1,2] [--data_plane grpc,direct]
//            [--seconds 0.3] [--max_calls 1000] [--max_mb 256]
//            [--dense_kb 4,1024]
//            [--dims 8,64,256] [--batches 1,16,256,4096,65536]
//            [--no_dense] [--no_sparse] [--sparse_ops pull]
//            [--chunk_kb N] [--min_pieces N] [--json FILE]
//
// Each row names its data plane: "grpc" (every call a gRPC call) or
// "direct" (PsClientOptions::direct_data_plane: Pull and Push as frames over
// plain TCP, plexus-ps --data_port).
//
// Dense: push, pull and push-pull (PsClient::PushPullDense, one call that
// pushes then reads; bytes of both directions count)
// of one fp32 variable of 1 KiB .. max_mb MiB (or the --dense_kb sizes),
// GB/s from the median call.
// Sparse: pull and push of B ids (1 .. 65,536) of dim 8/64/256, uniform and
// Zipf(1.1) ids over 1 M, rows/s from the median and p50/p99 latency.
// Targets (issue 4): dense >= 1 MiB at >= 75% of loopback TCP; sparse pull
// of 4,096 x 64 at >= 50% of it; p50 of a 4 KiB dense pull < 100 us.
// Beside each row: srv_us, the shards' mean time per piece served (from
// their /metrics, plexus_rpc_duration_seconds: the request read to the reply
// ready), and pieces, the calls the shards saw per client call. A row whose
// srv_us is close to its p50 is bound by the shard; one far below it by the
// client or the transfer.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/init.h"
#include "common/thread_pool.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "plexus/worker/ps_client.h"
#include "tools/local/local_cluster.h"

namespace plexus {
namespace {

using Clock = std::chrono::steady_clock;

struct Flags {
  std::string bin_dir;
  std::vector<int> shards = {1, 2};
  double seconds = 0.3;
  size_t max_calls = 1000;  // per row
  int64_t max_mb = 256;
  std::vector<int64_t> dims = {8, 64, 256};
  std::vector<int64_t> batches = {1, 16, 256, 4096, 65536};
  // Dense sizes, KiB; empty: 1 KiB, 4 KiB, ... up to max_mb.
  std::vector<int64_t> dense_kb;
  bool dense = true;
  bool sparse = true;
  bool sparse_push = true;  // --sparse_ops pull: pulls only (profiles)
  std::vector<std::string> planes = {"grpc", "direct"};
  int64_t chunk_bytes = -1;  // -1: PsClientOptions' default
  int min_pieces = 0;        // 0: PsClientOptions' default
  std::string json;
};

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// Runs fn until `budget` seconds pass (at least 3 times, at most
// `max_calls`) and returns the per-call times, sorted.
template <typename F>
std::vector<double> Time(double budget, F fn, size_t max_calls = 1000) {
  std::vector<double> t;
  auto start = Clock::now();
  fn();  // warm-up
  while (t.size() < 3 ||
         (Seconds(Clock::now() - start) < budget && t.size() < max_calls)) {
    auto a = Clock::now();
    fn();
    t.push_back(Seconds(Clock::now() - a));
  }
  std::sort(t.begin(), t.end());
  return t;
}
double Pct(const std::vector<double>& t, double p) {
  return t[std::min(t.size() - 1, static_cast<size_t>(p * t.size()))];
}

// A listening socket on 127.0.0.1 (a free port) and a client connected to
// it; the accepted end is for `serve` (run on its own thread). false if the
// machine refuses.
bool LoopbackPair(int* listener, int* client, sockaddr_in* addr) {
  *listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in& a = *addr;
  a = {};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (bind(*listener, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      listen(*listener, 1) != 0 ||
      getsockname(*listener, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    return false;
  }
  *client = socket(AF_INET, SOCK_STREAM, 0);
  return connect(*client, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
}

bool ReadFull(int fd, char* p, size_t n) {
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

// Loopback TCP round trip (TCP_NODELAY) between this process and a forked
// one, as between a worker and a shard: a 64-byte request answered with
// `bytes` bytes, as a pull is; p50 in seconds. The floor under a PS call's
// latency on this machine. REQUIRES: no other thread runs yet (fork).
double LoopbackTcpRoundTrip(size_t bytes) {
  int ls = -1, c = -1;
  sockaddr_in a;
  if (!LoopbackPair(&ls, &c, &a)) return 0;
  int one = 1;
  setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  pid_t child = fork();
  if (child < 0) return 0;
  if (child == 0) {
    close(c);
    int s = accept(ls, nullptr, nullptr);
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    std::vector<char> req(64), resp(bytes, 'y');
    while (ReadFull(s, req.data(), req.size())) {
      if (write(s, resp.data(), resp.size()) !=
          static_cast<ssize_t>(resp.size())) {
        break;
      }
    }
    _exit(0);
  }
  close(ls);
  std::vector<char> req(64, 'x'), resp(bytes);
  auto t = Time(0.3, [&] {
    if (write(c, req.data(), req.size()) == 64) {
      ReadFull(c, resp.data(), resp.size());
    }
  });
  close(c);  // the child sees EOF and exits
  waitpid(child, nullptr, 0);
  return Pct(t, 0.5);
}

// Loopback TCP: one thread streams 1 GiB in 1 MiB writes to another.
double LoopbackTcpGBps() {
  int ls = -1, c = -1;
  sockaddr_in a;
  if (!LoopbackPair(&ls, &c, &a)) return 0;
  const size_t chunk = 1 << 20, total = size_t{1} << 30;
  std::thread reader([&] {
    int s = accept(ls, nullptr, nullptr);
    std::vector<char> buf(chunk);
    size_t got = 0;
    while (got < total) {
      ssize_t n = read(s, buf.data(), buf.size());
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    close(s);
  });
  std::vector<char> buf(chunk, 'x');
  auto start = Clock::now();
  for (size_t sent = 0; sent < total;) {
    ssize_t n = write(c, buf.data(), buf.size());
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  close(c);
  reader.join();
  double s = Seconds(Clock::now() - start);
  close(ls);
  return total / s / 1e9;
}

double MemcpyGBps() {
  const size_t n = 256 << 20;
  std::vector<char> a(n, 1), b(n, 2);
  auto t = Time(0.3, [&] { std::memcpy(b.data(), a.data(), n); });
  return n / Pct(t, 0.5) / 1e9;
}

// Zipf(s) over [0, n) by inverse CDF.
class Zipf {
 public:
  Zipf(int64_t n, double s) : cdf_(n) {
    double sum = 0;
    for (int64_t i = 0; i < n; ++i)
      cdf_[i] = (sum += 1.0 / std::pow(i + 1.0, s));
    for (double& c : cdf_) c /= sum;
  }
  uint64_t operator()(std::mt19937_64& rng) {
    double u = std::uniform_real_distribution<double>(0, 1)(rng);
    return std::lower_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin();
  }

 private:
  std::vector<double> cdf_;
};

struct Row {
  std::string plane, kind, op, dist;
  int shards = 0;
  int64_t bytes = 0, ids = 0, dim = 0;
  double p50_s = 0, p99_s = 0, gbps = 0, rows_per_s = 0;
  double server_s = 0, pieces = 0;  // per piece served; per client call
};

// The shards' plexus_rpc_duration_seconds for one method, summed over
// their /metrics pages: seconds spent and calls served.
struct ServedTotals {
  double seconds = 0, calls = 0;
};
ServedTotals Served(const std::vector<int>& admin_ports,
                    const std::string& method) {
  ServedTotals t;
  const std::string label =
      absl::StrCat("{method=\"/plexus.v1.ParameterServer/", method, "\"}");
  for (int port : admin_ports) {
    httplib::Client http("127.0.0.1", port);
    http.set_read_timeout(5);
    httplib::Result r = http.Get("/metrics");
    if (!r || r->status != 200) continue;
    for (absl::string_view line : absl::StrSplit(r->body, '\n')) {
      double v = 0;
      for (auto [suffix, into] :
           {std::pair{"_sum", &t.seconds}, std::pair{"_count", &t.calls}}) {
        const std::string key =
            absl::StrCat("plexus_rpc_duration_seconds", suffix, label, " ");
        if (absl::StartsWith(line, key) &&
            absl::SimpleAtod(line.substr(key.size()), &v)) {
          *into += v;
        }
      }
    }
  }
  return t;
}

// Times fn as Time does and fills the row's p50, p99 and what the shards
// saw meanwhile (server_s, pieces) for `method`.
template <typename F>
void Measure(const Flags& f, const std::vector<int>& admin_ports,
             const std::string& method, F fn, Row* r) {
  const ServedTotals before = Served(admin_ports, method);
  const std::vector<double> t = Time(f.seconds, fn, f.max_calls);
  const ServedTotals after = Served(admin_ports, method);
  r->p50_s = Pct(t, 0.5);
  r->p99_s = Pct(t, 0.99);
  const double calls = after.calls - before.calls;
  if (calls > 0) {
    r->server_s = (after.seconds - before.seconds) / calls;
    r->pieces = calls / static_cast<double>(t.size() + 1);  // + the warm-up
  }
}

std::string JsonRow(const Row& r) {
  return absl::StrCat(
      "{\"plane\":\"", r.plane, "\",\"kind\":\"", r.kind, "\",\"op\":\"", r.op,
      "\",\"dist\":\"", r.dist, "\",\"shards\":", r.shards,
      ",\"bytes\":", r.bytes, ",\"ids\":", r.ids, ",\"dim\":", r.dim,
      ",\"p50_s\":", r.p50_s, ",\"p99_s\":", r.p99_s, ",\"gbps\":", r.gbps,
      ",\"rows_per_s\":", r.rows_per_s, ",\"server_s\":", r.server_s,
      ",\"pieces\":", r.pieces, "}");
}

int Run(const Flags& f) {
  std::printf("# ps_bench: PsClient -> %s -> plexus-ps on 127.0.0.1\n",
              absl::StrJoin(f.planes, " | ").c_str());
  const worker::PsClientOptions defaults;
  std::printf(
      "# client pieces: at most %lld KiB, at least %s per shard (%d CPUs)\n",
      static_cast<long long>(
          (f.chunk_bytes >= 0 ? f.chunk_bytes : defaults.chunk_bytes) >> 10),
      f.min_pieces > 0 ? absl::StrCat(f.min_pieces).c_str()
                       : "one per 2 CPUs, at most 8",
      UsableCpus());
  // A limit is what the machine can do: the best of three samples (a busy
  // moment only lowers one).
  double tcp = 0;
  for (int i = 0; i < 3; ++i) tcp = std::max(tcp, LoopbackTcpGBps());
  double mem = MemcpyGBps();
  double rtt = LoopbackTcpRoundTrip(4096);
  std::printf(
      "# limits: loopback TCP %.2f GB/s (best of 3), memcpy %.2f GB/s, "
      "loopback TCP "
      "round trip (64 B -> 4 KiB) p50 %.1f us\n\n",
      tcp, mem, rtt * 1e6);
  std::vector<Row> rows;
  double grpc_floor = 0;
  for (int shards : f.shards) {
    std::string root = std::filesystem::temp_directory_path() /
                       absl::StrCat("plexus-bench-", getpid(), "-", shards);
    local::LocalClusterOptions o;
    o.bin_dir = f.bin_dir;
    o.root_dir = root;
    o.num_ps = shards;
    o.ps_flags = {"--data_port=0"};
    auto cluster = local::LocalCluster::Start(o);
    if (!cluster.ok()) {
      std::fprintf(stderr, "ps_bench: %s\n",
                   cluster.status().ToString().c_str());
      return 1;
    }
    std::vector<std::string> addrs;
    std::vector<int> admin_ports;
    for (const auto& m : (*cluster)->members()) {
      if (m.role == "ps") {
        addrs.push_back(m.address);
        admin_ports.push_back(m.admin_port);
      }
    }
    // The gRPC floor on the same shard, same process: an empty unary call
    // (grpc.health.v1.Health/Check) on one warm channel. What a pull costs
    // above it is the PS's own; the floor itself is gRPC's.
    {
      auto channel =
          grpc::CreateChannel(addrs[0], grpc::InsecureChannelCredentials());
      auto stub = grpc::health::v1::Health::NewStub(channel);
      auto t = Time(f.seconds, [&] {
        grpc::ClientContext ctx;
        grpc::health::v1::HealthCheckRequest req;
        grpc::health::v1::HealthCheckResponse resp;
        (void)stub->Check(&ctx, req, &resp);
      });
      grpc_floor = Pct(t, 0.5);
      std::printf(
          "# gRPC floor (%d shard(s)): empty unary call to shard 0 "
          "p50 %.1f us, p99 %.1f us\n",
          shards, grpc_floor * 1e6, Pct(t, 0.99) * 1e6);
    }

    for (const std::string& plane : f.planes) {
      worker::PsClientOptions co;
      co.shards = addrs;
      co.timeout = absl::Seconds(120);
      co.direct_data_plane = plane == "direct";
      if (f.chunk_bytes >= 0) co.chunk_bytes = f.chunk_bytes;
      co.min_pieces = f.min_pieces;
      auto client = worker::PsClient::Connect(co);
      if (!client.ok()) {
        std::fprintf(stderr, "ps_bench: %s\n",
                     client.status().ToString().c_str());
        return 1;
      }
      worker::PsClient& c = **client;
      std::printf("\n# data plane: %s\n", plane.c_str());
      std::printf("%-6s %-9s %6s %12s %10s %10s %9s %7s %8s %6s\n", "dense",
                  "op", "shards", "bytes", "p50_us", "p99_us", "GB/s", "%tcp",
                  "srv_us", "pieces");
      std::vector<int64_t> sizes;
      for (int64_t kb : f.dense_kb) sizes.push_back(kb << 10);
      for (int64_t bytes = 1024; f.dense_kb.empty() && bytes <= f.max_mb << 20;
           bytes *= 4) {
        sizes.push_back(bytes);
      }
      for (int64_t bytes : sizes) {
        if (!f.dense) break;
        int64_t cols = std::min<int64_t>(256, bytes / 4);
        int64_t nrows = bytes / 4 / cols;
        std::string name = absl::StrCat("w", bytes);
        v1::VariableConfig v;
        v.set_name(name);
        v.mutable_spec()->set_dtype(v1::DTYPE_FLOAT32);
        v.mutable_spec()->add_shape(nrows);
        v.mutable_spec()->add_shape(cols);
        v.mutable_optimizer()->mutable_sgd()->set_learning_rate(1e-3);
        v.mutable_consistency()->set_mode(v1::CONSISTENCY_MODE_ASYNC);
        if (auto st = c.CreateVariable(v); !st.ok()) {
          std::fprintf(stderr, "ps_bench: %s\n", st.ToString().c_str());
          return 1;
        }
        std::vector<float> buf(nrows * cols, 1e-3f);
        std::vector<float> values(buf.size());
        for (const char* op : {"push", "pull", "push-pull"}) {
          std::string sop = op;
          Row r{plane, "dense", sop, "-", shards, bytes, 0, cols};
          Measure(
              f, admin_ports,
              sop == "push"   ? "Push"
              : sop == "pull" ? "Pull"
                              : "PushPull",
              [&] {
                if (sop == "push") (void)c.PushDense(name, buf);
                if (sop == "pull") (void)c.PullDense(name, absl::MakeSpan(buf));
                if (sop == "push-pull") {
                  (void)c.PushPullDense(name, buf, absl::MakeSpan(values));
                }
              },
              &r);
          r.gbps = (sop == "push-pull" ? 2.0 : 1.0) * bytes / r.p50_s / 1e9;
          std::printf(
              "%-6s %-9s %6d %12lld %10.1f %10.1f %9.3f %6.0f%% %8.1f %6.1f\n",
              "dense", op, shards, static_cast<long long>(bytes), r.p50_s * 1e6,
              r.p99_s * 1e6, r.gbps, 100 * r.gbps / tcp, r.server_s * 1e6,
              r.pieces);
          rows.push_back(r);
        }
        (void)v;
      }
      std::printf(
          "\n%-6s %-5s %-7s %6s %6s %4s %10s %10s %12s %9s %7s %8s %6s\n",
          "sparse", "op", "dist", "shards", "ids", "dim", "p50_us", "p99_us",
          "rows/s", "GB/s", "%tcp", "srv_us", "pieces");
      std::mt19937_64 rng(42);
      Zipf zipf(1000000, 1.1);
      for (int64_t dim : f.sparse ? f.dims : std::vector<int64_t>{}) {
        std::string table = absl::StrCat("emb", dim);
        v1::TableConfig t;
        t.set_name(table);
        t.set_dim(dim);
        t.mutable_optimizer()->mutable_adagrad()->set_learning_rate(0.01);
        t.mutable_optimizer()->mutable_adagrad()->set_initial_accumulator_value(
            0.1);
        t.mutable_consistency()->set_mode(v1::CONSISTENCY_MODE_ASYNC);
        if (auto st = c.CreateTable(t); !st.ok()) {
          std::fprintf(stderr, "ps_bench: %s\n", st.ToString().c_str());
          return 1;
        }
        for (int64_t b : f.batches) {
          for (const char* dist : {"uniform", "zipf"}) {
            std::vector<uint64_t> ids(b);
            for (auto& id : ids) {
              id =
                  std::string(dist) == "zipf"
                      ? zipf(rng)
                      : std::uniform_int_distribution<uint64_t>(0, 999999)(rng);
            }
            std::vector<float> vals(b * dim, 1e-3f);
            for (const char* op : {"pull", "push"}) {
              std::string sop = op;
              if (sop == "push" && !f.sparse_push) continue;
              Row r{plane, "sparse", sop, dist, shards, b * dim * 4, b, dim};
              Measure(
                  f, admin_ports, sop == "pull" ? "Pull" : "Push",
                  [&] {
                    if (sop == "pull") {
                      (void)c.PullSparse(table, ids, dim, absl::MakeSpan(vals));
                    } else {
                      (void)c.PushSparse(table, ids, dim, vals);
                    }
                  },
                  &r);
              r.rows_per_s = b / r.p50_s;
              r.gbps = r.bytes / r.p50_s / 1e9;
              std::printf(
                  "%-6s %-5s %-7s %6d %6lld %4lld %10.1f %10.1f %12.0f %9.3f "
                  "%6.0f%% %8.1f %6.1f\n",
                  "sparse", op, dist, shards, static_cast<long long>(b),
                  static_cast<long long>(dim), r.p50_s * 1e6, r.p99_s * 1e6,
                  r.rows_per_s, r.gbps, 100 * r.gbps / tcp, r.server_s * 1e6,
                  r.pieces);
              rows.push_back(r);
            }
          }
        }
      }
    }
    std::printf("\n");
    (void)(*cluster)->Stop(absl::Seconds(30));
    std::error_code ec;
    std::filesystem::remove_all(root, ec);
  }
  // Issue 4's targets, per data plane and shard count, from the rows above.
  std::printf(
      "# targets: dense >= 1 MiB >= 75%% of TCP; sparse pull 4096 x 64 "
      ">= 50%%; 4 KiB dense pull p50 < 100 us\n");
  for (const std::string& plane : f.planes) {
    for (int shards : f.shards) {
      double dense_min = 1e9, sparse_min = 1e9, pull4k = 0;
      for (const Row& r : rows) {
        if (r.plane != plane || r.shards != shards) continue;
        if (r.kind == "dense" && r.bytes >= (1 << 20)) {
          dense_min = std::min(dense_min, 100 * r.gbps / tcp);
        }
        if (r.kind == "sparse" && r.op == "pull" && r.ids == 4096 &&
            r.dim == 64) {
          sparse_min = std::min(sparse_min, 100 * r.gbps / tcp);
        }
        if (r.kind == "dense" && r.op == "pull" && r.bytes == 4096) {
          pull4k = r.p50_s * 1e6;
        }
      }
      // A figure whose rows were not run says so.
      auto pct = [](double v) {
        return v == 1e9 ? std::string("not run") : absl::StrFormat("%.0f%%", v);
      };
      std::printf(
          "# %-6s %d shard(s): dense >= 1 MiB worst %s of TCP; sparse "
          "4096x64 pull worst %s; 4 KiB pull p50 %s\n",
          plane.c_str(), shards, pct(dense_min).c_str(),
          pct(sparse_min).c_str(),
          pull4k == 0 ? "not run" : absl::StrFormat("%.1f us", pull4k).c_str());
    }
  }
  if (!f.json.empty()) {
    std::vector<std::string> items;
    for (const auto& r : rows) items.push_back(JsonRow(r));
    std::ofstream out(f.json);
    out << "{\"limits\":{\"loopback_tcp_gbps\":" << tcp
        << ",\"memcpy_gbps\":" << mem << ",\"loopback_tcp_rtt_4k_s\":" << rtt
        << ",\"grpc_floor_s\":" << grpc_floor << "},\"rows\":["
        << absl::StrJoin(items, ",\n") << "]}\n";
  }
  return 0;
}

}  // namespace
}  // namespace plexus

int main(int argc, char** argv) {
  plexus::Flags f;
  std::error_code ec;
  f.bin_dir = std::filesystem::read_symlink("/proc/self/exe", ec)
                  .parent_path()
                  .string();
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "ps_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::printf(
          "ps_bench: parameter-server data plane benchmark (dense GB/s, sparse "
          "rows/s\n"
          "and latency) next to loopback TCP and memcpy limits.\n"
          "  --bin_dir DIR   folder with plexus-ps (default: next to "
          "ps_bench)\n"
          "  --shards 1,2    shard counts to run\n"
          "  --data_plane grpc,direct  client data planes to run (gRPC; "
          "the\n"
          "                  direct TCP frames of plexus-ps --data_port)\n"
          "  --seconds 0.3   time budget per row\n"
          "  --max_calls 1000  most calls per row (raise it with --seconds\n"
          "                  for a profile)\n"
          "  --chunk_kb N    PsClientOptions::chunk_bytes in KiB (default: "
          "the\n"
          "                  client's, 640; 0: one message per shard)\n"
          "  --min_pieces N  PsClientOptions::min_pieces (default: the\n"
          "                  client's, one per 2 CPUs up to 8; 1: chunk_kb "
          "alone)\n"
          "  --max_mb 256    largest dense variable, MiB\n"
          "  --dense_kb 4,1024  dense sizes to run, KiB (default: 1 KiB,\n"
          "                  4 KiB, ... up to --max_mb)\n"
          "  --dims 8,64,256 sparse row widths\n"
          "  --batches 1,16,256,4096,65536  sparse ids per call\n"
          "  --no_dense, --no_sparse  skip a part\n"
          "  --sparse_ops pull  sparse pulls only (default pull,push)\n"
          "  --json FILE     also write the rows as JSON\n");
      return 0;
    } else if (a == "--bin_dir") {
      f.bin_dir = next();
    } else if (a == "--shards") {
      f.shards.clear();
      for (auto s : absl::StrSplit(next(), ',')) {
        int n = 0;
        if (!absl::SimpleAtoi(s, &n) || n < 1) {
          std::fprintf(stderr, "ps_bench: bad --shards\n");
          return 2;
        }
        f.shards.push_back(n);
      }
    } else if (a == "--data_plane") {
      f.planes.clear();
      for (auto s : absl::StrSplit(next(), ',')) {
        if (s != "grpc" && s != "direct") {
          std::fprintf(stderr, "ps_bench: --data_plane takes grpc,direct\n");
          return 2;
        }
        f.planes.emplace_back(s);
      }
    } else if (a == "--chunk_kb") {
      f.chunk_bytes = std::stoll(next()) << 10;
    } else if (a == "--min_pieces") {
      f.min_pieces = std::stoi(next());
    } else if (a == "--seconds") {
      f.seconds = std::stod(next());
    } else if (a == "--max_calls") {
      f.max_calls = std::stoull(next());
    } else if (a == "--dims" || a == "--batches" || a == "--dense_kb") {
      std::vector<int64_t>& v = a == "--dims"      ? f.dims
                                : a == "--batches" ? f.batches
                                                   : f.dense_kb;
      v.clear();
      for (auto s : absl::StrSplit(next(), ',')) {
        int64_t n = 0;
        if (!absl::SimpleAtoi(s, &n) || n < 1) {
          std::fprintf(stderr, "ps_bench: bad %s\n", a.c_str());
          return 2;
        }
        v.push_back(n);
      }
    } else if (a == "--no_dense") {
      f.dense = false;
    } else if (a == "--no_sparse") {
      f.sparse = false;
    } else if (a == "--sparse_ops") {
      const std::string ops = next();
      if (ops != "pull" && ops != "pull,push" && ops != "push,pull") {
        std::fprintf(stderr, "ps_bench: --sparse_ops is pull or pull,push\n");
        return 2;
      }
      f.sparse_push = ops != "pull";
    } else if (a == "--max_mb") {
      f.max_mb = std::stoll(next());
    } else if (a == "--json") {
      f.json = next();
    } else {
      std::fprintf(stderr, "ps_bench: unknown flag %s (see --help)\n",
                   a.c_str());
      return 2;
    }
  }
  // What Plexus's programs run with (their InitProcess does this).
  plexus::TuneProcess();
  return plexus::Run(f);
}
