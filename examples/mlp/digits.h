// The handwritten-digits data set the dense example trains on: scikit-learn's
// sklearn/datasets/data/digits.csv.gz (1797 images of 8x8 pixels with values
// 0..16, then the label 0..9; one image a line, comma-separated). It is read
// as shipped (gzip) or decompressed; scripts/fetch_data.sh puts a copy in the
// data cache.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace plexus::examples {

inline constexpr int kDigitsFeatures = 64;
inline constexpr int kDigitsClasses = 10;

struct Dataset {
  // Row-major [size() x kDigitsFeatures], pixel / 16 (so in [0, 1]).
  std::vector<float> features;
  std::vector<int32_t> labels;
  size_t size() const { return labels.size(); }
};

struct DigitsSplit {
  Dataset train;
  Dataset test;
};

// Reads the CSV (gzip-compressed or not). NOT_FOUND when the file cannot be
// opened (the message says how to fetch it); INVALID_ARGUMENT, naming the
// line, when a line does not hold 64 pixels in 0..16 and a label in 0..9.
absl::StatusOr<Dataset> LoadDigits(const std::string& path);

// Where the data set is when no path is given: the first readable file of
// DigitsSearchPath(). NOT_FOUND listing the places looked at, and how to
// fetch it, when there is none.
absl::StatusOr<std::string> FindDigits();

// $PLEXUS_DATA_DIR/digits.csv.gz (when set), then
// ${XDG_CACHE_HOME:-$HOME/.cache}/plexus/digits.csv.gz (where
// scripts/fetch_data.sh puts it), then the installed python3-sklearn's file.
std::vector<std::string> DigitsSearchPath();

// The fixed split: the last round(test_fraction * size) images of the file
// are the test set, the others train. No shuffling, so every run, mode and
// worker count sees the same split. REQUIRES: 0 < test_fraction < 1.
DigitsSplit SplitDigits(const Dataset& all, double test_fraction);

}  // namespace plexus::examples
