#include "common/metrics.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace plexus {
namespace {

TEST(Metrics, RendersCountersAndGaugesInTheTextFormat) {
  MetricsRegistry r;
  r.GetCounter("plexus_x_total", "Things done.", {{"kind", "a"}})->Increment(2);
  r.GetCounter("plexus_x_total", "Things done.", {{"kind", "b"}})->Increment();
  r.GetGauge("plexus_up", "Up.")->Set(1);
  EXPECT_EQ(r.Render(),
            "# HELP plexus_up Up.\n"
            "# TYPE plexus_up gauge\n"
            "plexus_up 1\n"
            "# HELP plexus_x_total Things done.\n"
            "# TYPE plexus_x_total counter\n"
            "plexus_x_total{kind=\"a\"} 2\n"
            "plexus_x_total{kind=\"b\"} 1\n");
}

TEST(Metrics, SameNameAndLabelsIsTheSameMetric) {
  MetricsRegistry r;
  Counter* a = r.GetCounter("plexus_c_total", "C.", {{"k", "v"}});
  Counter* b = r.GetCounter("plexus_c_total", "C.", {{"k", "v"}});
  EXPECT_EQ(a, b);
  EXPECT_NE(a, r.GetCounter("plexus_c_total", "C.", {{"k", "w"}}));
}

TEST(Metrics, HistogramBucketsAreCumulative) {
  MetricsRegistry r;
  Histogram* h = r.GetHistogram("plexus_lat_seconds", "Latency.",
                                {{"method", "Pull"}}, {0.1, 1});
  h->Observe(0.05);
  h->Observe(0.5);
  h->Observe(0.5);
  h->Observe(7);
  EXPECT_EQ(h->CumulativeCounts(), (std::vector<uint64_t>{1, 3, 4}));
  std::string text = r.Render();
  EXPECT_NE(
      text.find("plexus_lat_seconds_bucket{method=\"Pull\",le=\"0.1\"} 1\n"),
      std::string::npos)
      << text;
  EXPECT_NE(
      text.find("plexus_lat_seconds_bucket{method=\"Pull\",le=\"+Inf\"} 4\n"),
      std::string::npos);
  EXPECT_NE(text.find("plexus_lat_seconds_sum{method=\"Pull\"} 8.05\n"),
            std::string::npos);
  EXPECT_NE(text.find("plexus_lat_seconds_count{method=\"Pull\"} 4\n"),
            std::string::npos);
}

TEST(Metrics, LabelValuesAreEscaped) {
  MetricsRegistry r;
  r.GetGauge("plexus_g", "G.", {{"path", "a\"b\\c\nd"}})->Set(3);
  EXPECT_NE(r.Render().find("plexus_g{path=\"a\\\"b\\\\c\\nd\"} 3\n"),
            std::string::npos)
      << r.Render();
}

TEST(Metrics, CollectorsRunAtScrapeTime) {
  MetricsRegistry r;
  int scrapes = 0;
  r.AddCollector(
      [&] { r.GetGauge("plexus_scrapes", "Scrapes.")->Set(++scrapes); });
  r.Render();
  EXPECT_NE(r.Render().find("plexus_scrapes 2\n"), std::string::npos);
}

TEST(Metrics, ConcurrentIncrementsAreNotLost) {
  MetricsRegistry r;
  Counter* c = r.GetCounter("plexus_n_total", "N.");
  Histogram* h = r.GetHistogram("plexus_h_seconds", "H.");
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c->Increment();
        h->Observe(0.001);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c->Value(), 40000);
  EXPECT_EQ(h->Count(), 40000u);
}

TEST(MetricsDeathTest, BadNamesAreProgrammingErrors) {
  MetricsRegistry r;
  EXPECT_DEATH(r.GetCounter("bad-name", "x"), "bad metric name");
  r.GetCounter("plexus_t_total", "x");
  EXPECT_DEATH(r.GetGauge("plexus_t_total", "x"), "another type");
}

}  // namespace
}  // namespace plexus
