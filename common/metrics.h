// Metrics: counters, gauges and histograms with labels, rendered in the
// Prometheus text exposition format (version 0.0.4) for a daemon's /metrics.
//
// Names follow Prometheus conventions: snake_case, base units in the name
// (`_seconds`, `_bytes`), counters end in `_total`. Every Plexus metric starts
// with `plexus_`.
//
//   Counter* pushes = Metrics()->GetCounter(
//       "plexus_ps_pushes_total", "Pushes applied.", {{"table", name}});
//   pushes->Increment();
//
// A metric is created on first Get and lives as long as its registry; the
// returned pointer stays valid, so hot paths look it up once.
//
// Thread safety: every method of every class here may be called from any
// thread. Increment/Set/Observe are lock-free.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace plexus {

// Label name/value pairs, e.g. {{"method", "Pull"}, {"code", "OK"}}.
using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  // REQUIRES: v >= 0 (a counter never goes down).
  void Increment(double v = 1);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double v);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Histogram {
 public:
  // `bounds` are the buckets' upper bounds, strictly increasing; +Inf is
  // implied.
  explicit Histogram(std::vector<double> bounds);
  void Observe(double v);
  // Cumulative count per bucket (last entry: +Inf), sum and count.
  std::vector<uint64_t> CumulativeCounts() const;
  double Sum() const { return sum_.load(std::memory_order_relaxed); }
  uint64_t Count() const { return count_.load(std::memory_order_relaxed); }
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_.size() + 1
  std::atomic<double> sum_{0};
  std::atomic<uint64_t> count_{0};
};

// Latency buckets in seconds, 50 us to 60 s.
std::vector<double> LatencyBuckets();

class MetricsRegistry {
 public:
  // Get-or-create. A name reused with another type or help text is a
  // programming error (CHECK). Names and label names must match
  // [a-zA-Z_][a-zA-Z0-9_]* (CHECK).
  Counter* GetCounter(const std::string& name, const std::string& help,
                      const Labels& labels = {});
  Gauge* GetGauge(const std::string& name, const std::string& help,
                  const Labels& labels = {});
  Histogram* GetHistogram(const std::string& name, const std::string& help,
                          const Labels& labels = {},
                          std::vector<double> bounds = LatencyBuckets());
  // A function run at every scrape, to set gauges from state that is
  // cheaper to read than to track (rows per table, workers alive).
  void AddCollector(std::function<void()> collect);

  // The whole registry in the Prometheus text format.
  std::string Render();

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Family {
    Type type;
    std::string help;
    // Rendered label set ("{a=\"1\"}" or "") -> metric.
    std::map<std::string, std::unique_ptr<Counter>> counters;
    std::map<std::string, std::unique_ptr<Gauge>> gauges;
    std::map<std::string, std::unique_ptr<Histogram>> histograms;
  };
  Family& GetFamily(const std::string& name, const std::string& help, Type type)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  std::map<std::string, Family> families_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void()>> collectors_ ABSL_GUARDED_BY(mu_);
};

// The process-wide registry that /metrics serves. Never null.
MetricsRegistry* Metrics();

// Records one served call in plexus_rpc_requests_total{method,code} and
// plexus_rpc_duration_seconds{method}: gRPC calls (the daemon's interceptor)
// and the PS's direct data plane alike, under gRPC's full method name
// ("/plexus.v1.ParameterServer/Push"). `code` is a status code name ("OK").
void RecordRpc(const std::string& method, const std::string& code,
               absl::Duration took);

// The two metrics RecordRpc updates for (method, code), for a caller that
// records many calls and keeps them rather than look them up every time.
struct RpcMetrics {
  Counter* requests = nullptr;
  Histogram* duration = nullptr;
};
RpcMetrics GetRpcMetrics(const std::string& method, const std::string& code);

}  // namespace plexus
