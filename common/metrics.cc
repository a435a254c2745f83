#include "common/metrics.h"

#include <glog/logging.h>

#include <charconv>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace plexus {
namespace {

void AtomicAdd(std::atomic<double>& a, double v) {
  double cur = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(cur, cur + v, std::memory_order_relaxed)) {
  }
}

bool ValidName(const std::string& s) {
  if (s.empty() || absl::ascii_isdigit(s[0])) return false;
  for (char c : s) {
    if (!absl::ascii_isalnum(c) && c != '_') return false;
  }
  return true;
}

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // Shortest text that reads back as the same double (never 1.79563e+09
  // for a timestamp).
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

std::string EscapeLabelValue(const std::string& v) {
  return absl::StrReplaceAll(v,
                             {{"\\", "\\\\"}, {"\"", "\\\""}, {"\n", "\\n"}});
}

// "{a=\"1\",b=\"2\"}" or "" for no labels; `extra` is appended (le=...).
std::string RenderLabels(const Labels& labels, const std::string& extra = "") {
  if (labels.empty() && extra.empty()) return "";
  std::string out = "{";
  for (const auto& [k, v] : labels) {
    CHECK(ValidName(k)) << "bad label name '" << k << "'";
    absl::StrAppend(&out, out.size() > 1 ? "," : "", k, "=\"",
                    EscapeLabelValue(v), "\"");
  }
  if (!extra.empty()) absl::StrAppend(&out, out.size() > 1 ? "," : "", extra);
  return out + "}";
}

// Inserts `extra` into an already rendered label set.
std::string WithExtraLabel(const std::string& rendered,
                           const std::string& extra) {
  if (rendered.empty()) return "{" + extra + "}";
  return rendered.substr(0, rendered.size() - 1) + "," + extra + "}";
}

}  // namespace

void Counter::Increment(double v) {
  DCHECK_GE(v, 0);
  AtomicAdd(value_, v);
}

void Gauge::Add(double v) { AtomicAdd(value_, v); }

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)),
      buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 1; i < bounds_.size(); ++i)
    CHECK_LT(bounds_[i - 1], bounds_[i]);
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i] = 0;
}

void Histogram::Observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  AtomicAdd(sum_, v);
  count_.fetch_add(1, std::memory_order_relaxed);
}

std::vector<uint64_t> Histogram::CumulativeCounts() const {
  std::vector<uint64_t> out(bounds_.size() + 1);
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    out[i] = running;
  }
  return out;
}

std::vector<double> LatencyBuckets() {
  return {50e-6, 100e-6, 250e-6, 500e-6, 1e-3,   2.5e-3, 5e-3,
          10e-3, 25e-3,  50e-3,  100e-3, 250e-3, 500e-3, 1,
          2.5,   5,      10,     30,     60};
}

MetricsRegistry::Family& MetricsRegistry::GetFamily(const std::string& name,
                                                    const std::string& help,
                                                    Type type) {
  CHECK(ValidName(name)) << "bad metric name '" << name << "'";
  auto [it, fresh] = families_.try_emplace(name);
  if (fresh) {
    it->second.type = type;
    it->second.help = help;
  }
  CHECK(it->second.type == type)
      << "metric " << name << " reused with another type";
  return it->second;
}

Counter* MetricsRegistry::GetCounter(const std::string& name,
                                     const std::string& help,
                                     const Labels& labels) {
  absl::MutexLock lock(&mu_);
  auto& slot =
      GetFamily(name, help, Type::kCounter).counters[RenderLabels(labels)];
  if (slot == nullptr) slot = std::make_unique<Counter>();
  return slot.get();
}

Gauge* MetricsRegistry::GetGauge(const std::string& name,
                                 const std::string& help,
                                 const Labels& labels) {
  absl::MutexLock lock(&mu_);
  auto& slot = GetFamily(name, help, Type::kGauge).gauges[RenderLabels(labels)];
  if (slot == nullptr) slot = std::make_unique<Gauge>();
  return slot.get();
}

Histogram* MetricsRegistry::GetHistogram(const std::string& name,
                                         const std::string& help,
                                         const Labels& labels,
                                         std::vector<double> bounds) {
  absl::MutexLock lock(&mu_);
  auto& slot =
      GetFamily(name, help, Type::kHistogram).histograms[RenderLabels(labels)];
  if (slot == nullptr) slot = std::make_unique<Histogram>(std::move(bounds));
  return slot.get();
}

void MetricsRegistry::AddCollector(std::function<void()> collect) {
  absl::MutexLock lock(&mu_);
  collectors_.push_back(std::move(collect));
}

std::string MetricsRegistry::Render() {
  std::vector<std::function<void()>> collectors;
  {
    absl::MutexLock lock(&mu_);
    collectors = collectors_;
  }
  for (auto& c : collectors) c();  // may create or set metrics: no lock held
  absl::MutexLock lock(&mu_);
  std::string out;
  for (const auto& [name, f] : families_) {
    const char* type = f.type == Type::kCounter ? "counter"
                       : f.type == Type::kGauge ? "gauge"
                                                : "histogram";
    absl::StrAppend(
        &out, "# HELP ", name, " ",
        absl::StrReplaceAll(f.help, {{"\\", "\\\\"}, {"\n", "\\n"}}),
        "\n# TYPE ", name, " ", type, "\n");
    for (const auto& [labels, c] : f.counters) {
      absl::StrAppend(&out, name, labels, " ", FormatValue(c->Value()), "\n");
    }
    for (const auto& [labels, g] : f.gauges) {
      absl::StrAppend(&out, name, labels, " ", FormatValue(g->Value()), "\n");
    }
    for (const auto& [labels, h] : f.histograms) {
      std::vector<uint64_t> counts = h->CumulativeCounts();
      for (size_t i = 0; i < counts.size(); ++i) {
        std::string le =
            i < h->bounds().size() ? FormatValue(h->bounds()[i]) : "+Inf";
        absl::StrAppend(&out, name, "_bucket",
                        WithExtraLabel(labels, absl::StrCat("le=\"", le, "\"")),
                        " ", counts[i], "\n");
      }
      absl::StrAppend(&out, name, "_sum", labels, " ", FormatValue(h->Sum()),
                      "\n");
      absl::StrAppend(&out, name, "_count", labels, " ", h->Count(), "\n");
    }
  }
  return out;
}

MetricsRegistry* Metrics() {
  static MetricsRegistry* r = new MetricsRegistry();
  return r;
}

RpcMetrics GetRpcMetrics(const std::string& method, const std::string& code) {
  RpcMetrics m;
  m.requests = Metrics()->GetCounter("plexus_rpc_requests_total",
                                     "RPCs served, by method and code.",
                                     {{"method", method}, {"code", code}});
  m.duration = Metrics()->GetHistogram(
      "plexus_rpc_duration_seconds",
      "Time from a call's arrival to its status, by method.",
      {{"method", method}});
  return m;
}

void RecordRpc(const std::string& method, const std::string& code,
               absl::Duration took) {
  const RpcMetrics m = GetRpcMetrics(method, code);
  m.requests->Increment();
  m.duration->Observe(absl::ToDoubleSeconds(took));
}

}  // namespace plexus
