// engine_bench: throughput of the parameter-server storage engine alone (no
// RPC), per optimizer, single thread, next to memcpy bandwidth.
//
//   engine_bench [--dim 64] [--batch 4096] [--ids 1000000] [--seconds 1]
//                [--threads 1] [--parallel_threads 0] [--pull_only]
//                [--json FILE]
//
// Sparse pull: batches of `batch` uniformly random existing ids through
// Engine::Pull (--pull_only stops after it, for profiling that path).
// --parallel_threads: EngineOptions::parallel_threads (default 0, so the
// figures are per thread; -1 is the engine's default, one per core).
// Sparse push: batches of `batch` uniformly random ids (of `ids`, all rows
// created beforehand) through Engine::Push, fp32 gradients, exactly-once off.
// Dense push: one [rows, dim] slice. Raw: Optimizer::Apply on one contiguous
// array (the math alone). Figures are row-elements (rows x dim) per second
// per thread; the target is Adam >= 20 M row-elements/s per core.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ps/storage/engine.h"
#include "ps/storage/optimizer.h"

namespace plexus::ps {
namespace {

using Clock = std::chrono::steady_clock;
using K = OptimizerConfig::Kind;

struct Flags {
  int64_t dim = 64;
  int64_t batch = 4096;
  int64_t ids = 1000000;
  double seconds = 1.0;
  int threads = 1;
  int parallel_threads = 0;
  bool pull_only = false;
  std::string json;
};

struct Named {
  const char* name;
  OptimizerConfig config;
};

std::vector<Named> Optimizers() {
  return {
      {"sgd", {.kind = K::kSgd, .learning_rate = 0.01}},
      {"momentum",
       {.kind = K::kMomentum, .learning_rate = 0.01, .momentum = 0.9}},
      {"adagrad",
       {.kind = K::kAdagrad,
        .learning_rate = 0.01,
        .initial_accumulator_value = 0.1,
        .epsilon = 1e-7}},
      {"adam",
       {.kind = K::kAdam,
        .learning_rate = 0.001,
        .epsilon = 1e-8,
        .beta1 = 0.9,
        .beta2 = 0.999}},
      {"adamw",
       {.kind = K::kAdamW,
        .learning_rate = 0.001,
        .epsilon = 1e-8,
        .beta1 = 0.9,
        .beta2 = 0.999,
        .weight_decay = 0.01}},
      {"ftrl",
       {.kind = K::kFtrl,
        .learning_rate = 0.05,
        .initial_accumulator_value = 0.1,
        .learning_rate_power = -0.5,
        .l1 = 0.001,
        .l2 = 0.001}},
      {"rmsprop",
       {.kind = K::kRmsProp,
        .learning_rate = 0.001,
        .momentum = 0.9,
        .epsilon = 1e-7,
        .rho = 0.9}},
  };
}

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Runs `fn` (which does `units` of work) until `seconds` pass; returns
// units per second.
template <typename Fn>
double Rate(double seconds, double units, Fn fn) {
  fn();  // warm up
  const auto start = Clock::now();
  int64_t iters = 0;
  double elapsed = 0;
  do {
    fn();
    ++iters;
    elapsed = Seconds(start, Clock::now());
  } while (elapsed < seconds);
  return units * static_cast<double>(iters) / elapsed;
}

double MemcpyGBps(double seconds) {
  const size_t bytes = size_t{256} << 20;
  std::vector<char> a(bytes, 1), b(bytes, 0);
  return Rate(seconds, static_cast<double>(bytes),
              [&] { std::memcpy(b.data(), a.data(), bytes); }) /
         1e9;
}

struct Result {
  std::string optimizer;
  double sparse_rows_per_s = 0;
  double sparse_elems_per_s = 0;
  double dense_elems_per_s = 0;
  double raw_elems_per_s = 0;
};

int Main(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--dim") {
      f.dim = std::atoll(next());
    } else if (a == "--batch") {
      f.batch = std::atoll(next());
    } else if (a == "--ids") {
      f.ids = std::atoll(next());
    } else if (a == "--seconds") {
      f.seconds = std::atof(next());
    } else if (a == "--threads") {
      f.threads = std::max(1, std::atoi(next()));
    } else if (a == "--parallel_threads") {
      f.parallel_threads = std::atoi(next());
    } else if (a == "--pull_only") {
      f.pull_only = true;
    } else if (a == "--json") {
      f.json = next();
    } else {
      std::fprintf(stderr,
                   "usage: engine_bench [--dim N] [--batch N] [--ids N] "
                   "[--seconds S] [--threads N] [--parallel_threads N] "
                   "[--pull_only] [--json FILE]\n");
      return a == "--help" ? 0 : 2;
    }
  }
  if (f.dim <= 0 || f.batch <= 0 || f.ids <= 0) {
    std::fprintf(stderr, "--dim, --batch and --ids must be > 0\n");
    return 2;
  }
  if (f.parallel_threads < -1) {
    std::fprintf(stderr, "--parallel_threads must be >= -1\n");
    return 2;
  }

  const double memcpy_gbps = MemcpyGBps(f.seconds);
  std::printf("engine_bench: dim %lld, batch %lld, ids %lld, %d thread(s)\n",
              static_cast<long long>(f.dim), static_cast<long long>(f.batch),
              static_cast<long long>(f.ids), f.threads);
  std::printf("memcpy: %.2f GB/s (%.0f M fp32/s)\n\n", memcpy_gbps,
              memcpy_gbps * 1e9 / 4 / 1e6);

  std::vector<Result> results;
  std::mt19937_64 rng(1);

  // Sparse pull (no optimizer involved): random existing rows, fp32 out.
  double pull_rows_per_s = 0;
  {
    auto engine = *CreateEngine({.parallel_threads = f.parallel_threads});
    TableConfig tc;
    tc.name = "emb";
    tc.dim = f.dim;
    tc.optimizer = Optimizers()[0].config;
    tc.consistency = {.mode = ConsistencyMode::kAsync};
    if (!engine->CreateTable({tc}).ok()) return 1;
    std::vector<uint64_t> all(static_cast<size_t>(f.ids));
    for (int64_t i = 0; i < f.ids; ++i) all[i] = static_cast<uint64_t>(i);
    SparseRead create{"emb", all, true};
    if (!engine->Pull({}, {}, {&create, 1}).ok()) return 1;
    std::uniform_int_distribution<uint64_t> pick(0, f.ids - 1);
    std::vector<uint64_t> ids(static_cast<size_t>(f.batch));
    for (auto& id : ids) id = pick(rng);
    pull_rows_per_s = Rate(f.seconds, static_cast<double>(f.batch), [&] {
      SparseRead r{"emb", ids, false};
      if (!engine->Pull({}, {}, {&r, 1}).ok()) std::abort();
    });
  }
  std::printf("sparse pull: %.0f rows/s (%.2f GB/s of fp32 values)\n\n",
              pull_rows_per_s,
              pull_rows_per_s * static_cast<double>(f.dim) * 4 / 1e9);
  if (f.pull_only) return 0;
  std::printf("%-9s %14s %16s %16s %16s\n", "optimizer", "sparse rows/s",
              "sparse Melem/s", "dense Melem/s", "raw Melem/s");
  for (const Named& opt : Optimizers()) {
    Result r;
    r.optimizer = opt.name;
    auto engine = *CreateEngine({.parallel_threads = f.parallel_threads});
    TableConfig tc;
    tc.name = "emb";
    tc.dim = f.dim;
    tc.optimizer = opt.config;
    tc.consistency = {.mode = ConsistencyMode::kAsync};
    if (!engine->CreateTable({tc}).ok()) return 1;
    // Create every row first so the timed loop measures updates.
    {
      std::vector<uint64_t> all(static_cast<size_t>(f.ids));
      for (int64_t i = 0; i < f.ids; ++i) all[i] = static_cast<uint64_t>(i);
      SparseRead read{"emb", all, true};
      if (!engine->Pull({}, {}, {&read, 1}).ok()) return 1;
    }
    // Per thread: a few prepared batches, cycled.
    const int kBatches = 8;
    std::vector<float> grads(static_cast<size_t>(f.batch * f.dim), 0.001f);
    const std::vector<int64_t> shape = {f.batch, f.dim};
    std::string bytes(grads.size() * 4, '\0');
    std::memcpy(bytes.data(), grads.data(), bytes.size());
    std::vector<std::vector<uint64_t>> batches(kBatches);
    std::uniform_int_distribution<uint64_t> pick(0, f.ids - 1);
    for (auto& b : batches) {
      b.resize(static_cast<size_t>(f.batch));
      for (auto& id : b) id = pick(rng);
    }
    std::vector<double> rates(f.threads);
    std::vector<std::thread> threads;
    for (int t = 0; t < f.threads; ++t) {
      threads.emplace_back([&, t] {
        int k = t;
        rates[t] = Rate(f.seconds, static_cast<double>(f.batch), [&] {
          SparseGradient g{
              "emb", batches[k++ % kBatches], {DType::kFloat32, shape, bytes}};
          auto res = engine->Push({.exactly_once = false}, {}, {&g, 1});
          if (!res.ok()) std::abort();
        });
      });
    }
    for (auto& th : threads) th.join();
    double rows = 0;
    for (double x : rates) rows += x;
    r.sparse_rows_per_s = rows / f.threads;
    r.sparse_elems_per_s = r.sparse_rows_per_s * static_cast<double>(f.dim);

    // Dense: one slice of batch x dim.
    VariableConfig vc;
    vc.name = "w";
    vc.shape = {f.batch, f.dim};
    vc.optimizer = opt.config;
    vc.consistency = {.mode = ConsistencyMode::kAsync};
    if (!engine->CreateVariable({.config = vc}).ok()) return 1;
    r.dense_elems_per_s =
        Rate(f.seconds, static_cast<double>(f.batch * f.dim), [&] {
          DenseGradient g{"w", {0, f.batch}, {DType::kFloat32, shape, bytes}};
          if (!engine->Push({.exactly_once = false}, {&g, 1}, {}).ok()) {
            std::abort();
          }
        });

    // Raw math: Optimizer::Apply over the same number of elements.
    auto o = *CreateOptimizer(opt.config);
    const size_t n = grads.size();
    std::vector<float> w(n, 0.1f);
    std::vector<std::vector<float>> slots(o->num_slots(),
                                          std::vector<float>(n, 0.1f));
    std::vector<float*> sp;
    for (auto& s : slots) sp.push_back(s.data());
    int64_t step = 0;
    r.raw_elems_per_s = Rate(f.seconds, static_cast<double>(n), [&] {
      o->Apply(w.data(), sp.data(), grads.data(), static_cast<int64_t>(n),
               ++step);
    });
    std::printf("%-9s %14.0f %16.1f %16.1f %16.1f\n", opt.name,
                r.sparse_rows_per_s, r.sparse_elems_per_s / 1e6,
                r.dense_elems_per_s / 1e6, r.raw_elems_per_s / 1e6);
    results.push_back(r);
  }
  for (const Result& r : results) {
    if (r.optimizer == "adam") {
      std::printf(
          "\nadam sparse: %.1f M row-elements/s per thread (target "
          ">= 20): %s\n",
          r.sparse_elems_per_s / 1e6,
          r.sparse_elems_per_s >= 20e6 ? "met" : "NOT met");
    }
  }

  if (!f.json.empty()) {
    std::string j = absl::StrCat(
        "{\n  \"benchmark\": \"engine_bench\",\n  \"dim\": ", f.dim,
        ",\n  \"batch\": ", f.batch, ",\n  \"ids\": ", f.ids,
        ",\n  \"threads\": ", f.threads,
        ",\n  \"memcpy_gb_per_s\": ", memcpy_gbps,
        ",\n  \"sparse_pull_rows_per_s\": ", pull_rows_per_s,
        ",\n  \"optimizers\": [\n");
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      absl::StrAppend(&j, "    {\"optimizer\": \"", r.optimizer,
                      "\", \"sparse_rows_per_s\": ", r.sparse_rows_per_s,
                      ", \"sparse_row_elements_per_s\": ", r.sparse_elems_per_s,
                      ", \"dense_elements_per_s\": ", r.dense_elems_per_s,
                      ", \"raw_elements_per_s\": ", r.raw_elems_per_s, "}",
                      i + 1 < results.size() ? ",\n" : "\n");
    }
    j += "  ]\n}\n";
    FILE* out = std::fopen(f.json.c_str(), "w");
    if (out == nullptr || std::fwrite(j.data(), 1, j.size(), out) != j.size() ||
        std::fclose(out) != 0) {
      std::fprintf(stderr, "cannot write %s\n", f.json.c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace plexus::ps

int main(int argc, char** argv) { return plexus::ps::Main(argc, argv); }
