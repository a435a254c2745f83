#include "examples/mlp/digits.h"

#include <zlib.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "glog/logging.h"

namespace plexus::examples {
namespace {

constexpr char kFetchHint[] =
    "run scripts/fetch_data.sh (it puts digits.csv.gz in the data cache), or "
    "pass --data=PATH to sklearn/datasets/data/digits.csv.gz";

// The whole file, decompressed if it is gzip (zlib reads plain files as they
// are).
absl::StatusOr<std::string> ReadMaybeGzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) {
    return absl::NotFoundError(absl::StrCat("cannot open digits data ", path,
                                            ": ", std::strerror(errno), "; ",
                                            kFetchHint));
  }
  std::string out;
  char buf[1 << 16];
  while (true) {
    const int n = gzread(f, buf, sizeof(buf));
    if (n < 0) {
      int err = 0;
      std::string msg = gzerror(f, &err);
      gzclose(f);
      return absl::InvalidArgumentError(
          absl::StrCat("reading ", path, ": ", msg));
    }
    if (n == 0) break;
    out.append(buf, n);
  }
  gzclose(f);
  return out;
}

}  // namespace

absl::StatusOr<Dataset> LoadDigits(const std::string& path) {
  auto text = ReadMaybeGzip(path);
  if (!text.ok()) return text.status();
  Dataset d;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    ++line_no;
    line = absl::StripTrailingAsciiWhitespace(line);
    if (line.empty()) continue;
    std::vector<absl::string_view> cells = absl::StrSplit(line, ',');
    if (cells.size() != kDigitsFeatures + 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, " line ", line_no, ": ", cells.size(),
                       " values, want ", kDigitsFeatures + 1,
                       " (64 pixels and a label); is this digits.csv?"));
    }
    for (int i = 0; i <= kDigitsFeatures; ++i) {
      double v = 0;
      const int max = i < kDigitsFeatures ? 16 : kDigitsClasses - 1;
      if (!absl::SimpleAtod(absl::StripAsciiWhitespace(cells[i]), &v) ||
          v != std::floor(v) || v < 0 || v > max) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, " line ", line_no, " value ", i + 1, ": '",
                         cells[i], "' is not an integer in 0..", max));
      }
      if (i < kDigitsFeatures) {
        d.features.push_back(static_cast<float>(v / 16.0));
      } else {
        d.labels.push_back(static_cast<int32_t>(v));
      }
    }
  }
  if (d.size() < 10) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " holds ", d.size(), " images; the digits data set has 1797"));
  }
  return d;
}

std::vector<std::string> DigitsSearchPath() {
  std::vector<std::string> paths;
  if (const char* dir = std::getenv("PLEXUS_DATA_DIR"); dir && *dir) {
    paths.push_back(absl::StrCat(dir, "/digits.csv.gz"));
  }
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) {
    paths.push_back(absl::StrCat(xdg, "/plexus/digits.csv.gz"));
  } else if (const char* home = std::getenv("HOME"); home && *home) {
    paths.push_back(absl::StrCat(home, "/.cache/plexus/digits.csv.gz"));
  }
  paths.push_back(
      "/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz");
  return paths;
}

absl::StatusOr<std::string> FindDigits() {
  const std::vector<std::string> paths = DigitsSearchPath();
  for (const std::string& p : paths) {
    gzFile f = gzopen(p.c_str(), "rb");
    if (f != nullptr) {
      gzclose(f);
      return p;
    }
  }
  return absl::NotFoundError(absl::StrCat("digits data not found (looked at ",
                                          absl::StrJoin(paths, ", "), "); ",
                                          kFetchHint));
}

DigitsSplit SplitDigits(const Dataset& all, double test_fraction) {
  CHECK(test_fraction > 0 && test_fraction < 1) << test_fraction;
  const size_t n_test =
      static_cast<size_t>(std::lround(test_fraction * all.size()));
  const size_t n_train = all.size() - n_test;
  DigitsSplit s;
  auto copy = [&](size_t begin, size_t end, Dataset* out) {
    out->features.assign(all.features.begin() + begin * kDigitsFeatures,
                         all.features.begin() + end * kDigitsFeatures);
    out->labels.assign(all.labels.begin() + begin, all.labels.begin() + end);
  };
  copy(0, n_train, &s.train);
  copy(n_train, all.size(), &s.test);
  return s;
}

}  // namespace plexus::examples
