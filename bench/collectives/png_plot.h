// A small log-log line plot written as PNG, for coll_bench's busbw-vs-size
// figure. Self-contained on purpose: zlib for the PNG's deflate stream and a
// built-in 5x7 bitmap font for labels, so the benchmark needs no plotting
// package (gnuplot) on the machines it runs on.
//
// Thread safety: none; one plot per thread.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace plexus::collectives::bench {

struct PlotSeries {
  std::string label;
  uint32_t rgb = 0;  // 0xRRGGBB
  // (x, y) points, both > 0 (log axes); others are skipped.
  std::vector<std::pair<double, double>> points;
};

// A horizontal reference line (a physical limit), drawn dashed.
struct PlotLimit {
  std::string label;
  uint32_t rgb = 0;
  double y = 0;
};

struct PlotSpec {
  std::string title;
  std::string x_label;  // x is a size in bytes: ticks read 4, 1K, 1M, 256M
  std::string y_label;
  int width = 1000;
  int height = 640;
  std::vector<PlotSeries> series;
  std::vector<PlotLimit> limits;
};

// Draws `spec` (log2 x axis, log10 y axis) and writes it to `path` as an
// 8-bit RGB PNG.
absl::Status WritePlotPng(const PlotSpec& spec, const std::string& path);

}  // namespace plexus::collectives::bench
