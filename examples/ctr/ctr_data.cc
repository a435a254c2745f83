#include "examples/ctr/ctr_data.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>
#include <variant>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace plexus::examples {
namespace {

// SplitMix64's finaliser: a bijective 64-bit mix.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

double Uniform01(uint64_t bits) {  // [0, 1), 53 bits
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

// A standard normal draw from two hashed words (Box-Muller).
double Gaussian(uint64_t key) {
  double u1 = Uniform01(Mix(key ^ 0x5bd1e995ULL));
  double u2 = Uniform01(Mix(key ^ 0x1b873593ULL));
  return std::sqrt(-2.0 * std::log1p(-u1)) * std::cos(2.0 * M_PI * u2);
}

using FieldRef = std::variant<uint64_t*, int*, int64_t*, double*>;

// Every CtrConfig field by name: the one list FormatCtrConfig and
// ParseCtrConfig share.
std::vector<std::pair<const char*, FieldRef>> Fields(CtrConfig& c) {
  return {{"seed", &c.seed},         {"fields", &c.fields},
          {"vocab", &c.vocab},       {"zipf_s", &c.zipf_s},
          {"head", &c.head},         {"weight_scale", &c.weight_scale},
          {"fm_scale", &c.fm_scale}, {"truth_k", &c.truth_k},
          {"bias", &c.bias},         {"num_train", &c.num_train},
          {"num_test", &c.num_test}, {"model_k", &c.model_k},
          {"batch", &c.batch},       {"learning_rate", &c.learning_rate}};
}

}  // namespace

std::string FormatCtrConfig(const CtrConfig& config) {
  CtrConfig c = config;
  std::vector<std::string> parts;
  for (auto& [name, ref] : Fields(c)) {
    std::visit(
        [&, n = name](auto* p) { parts.push_back(absl::StrCat(n, "=", *p)); },
        ref);
  }
  return absl::StrJoin(parts, ",");
}

absl::StatusOr<CtrConfig> ParseCtrConfig(absl::string_view text,
                                         CtrConfig base) {
  CtrConfig c = base;
  auto fields = Fields(c);
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(part, absl::MaxSplits('=', 1));
    auto it = std::find_if(fields.begin(), fields.end(),
                           [&](const auto& f) { return kv.first == f.first; });
    if (it == fields.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown CTR config key '", kv.first, "'"));
    }
    bool ok = std::visit(
        [&](auto* p) {
          using T = std::remove_pointer_t<decltype(p)>;
          if constexpr (std::is_same_v<T, double>) {
            return absl::SimpleAtod(kv.second, p);
          } else {
            return absl::SimpleAtoi(kv.second, p);
          }
        },
        it->second);
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "CTR config key '", kv.first, "': bad value '", kv.second, "'"));
    }
  }
  return c;
}

absl::StatusOr<CtrDataset> CtrDataset::Create(const CtrConfig& c) {
  auto bad = [](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("CTR config: ", what));
  };
  if (c.fields < 1 || c.fields > 64) return bad("fields must be 1..64");
  if (c.vocab < 1 || c.vocab > (int64_t{1} << 26)) {
    return bad("vocab must be 1..2^26");
  }
  if (!(c.zipf_s > 0 && c.zipf_s < 4)) return bad("zipf_s must be in (0, 4)");
  if (!(c.head > 0)) return bad("head must be > 0");
  if (c.truth_k < 0 || c.truth_k > 64 || c.model_k < 0 || c.model_k > 256) {
    return bad("truth_k must be 0..64 and model_k 0..256");
  }
  if (c.num_train < 1 || c.num_test < 1) {
    return bad("num_train and num_test must be >= 1");
  }
  if (c.batch < 1 || c.batch > (1 << 20)) return bad("batch must be 1..2^20");
  if (!(c.learning_rate > 0)) return bad("learning_rate must be > 0");
  CtrDataset d(c);
  d.cdf_.resize(c.vocab);
  double total = 0;
  for (int64_t r = 0; r < c.vocab; ++r) {
    total += std::pow(static_cast<double>(r + 1), -c.zipf_s);
    d.cdf_[r] = total;
  }
  for (double& x : d.cdf_) x /= total;
  return d;
}

int64_t CtrDataset::SampleRank(uint64_t bits) const {
  double u = Uniform01(bits);
  auto it = std::upper_bound(cdf_.begin(), cdf_.end(), u);
  return std::min<int64_t>(it - cdf_.begin(), config_.vocab - 1);
}

double CtrDataset::RankScale(int64_t rank) const {
  return 1.0 / (1.0 + static_cast<double>(rank) / config_.head);
}

uint64_t CtrDataset::FeatureId(int field, int64_t rank) const {
  return Mix(Mix(config_.seed) ^ (static_cast<uint64_t>(field + 1) << 40) ^
             static_cast<uint64_t>(rank));
}

CtrExample CtrDataset::Example(Split split, int64_t i) const {
  const CtrConfig& c = config_;
  i %= size(split);
  uint64_t key = Mix(c.seed * 0x2545f4914f6cdd1dULL ^
                     (split == Split::kTest ? 0x8000000000000000ULL : 0) ^
                     static_cast<uint64_t>(i));
  CtrExample ex;
  ex.ids.reserve(c.fields + 1);
  std::vector<int64_t> ranks(c.fields);
  double logit = c.bias;
  std::vector<double> fm_sum(c.truth_k, 0.0);
  double fm_sq = 0;
  for (int f = 0; f < c.fields; ++f) {
    key = Mix(key);
    int64_t r = SampleRank(key);
    uint64_t id = FeatureId(f, r);
    ex.ids.push_back(id);
    double scale = RankScale(r);
    logit += c.weight_scale * scale * Gaussian(id);
    for (int d = 0; d < c.truth_k; ++d) {
      double v = c.fm_scale * scale * Gaussian(id ^ Mix(d + 1));
      fm_sum[d] += v;
      fm_sq += v * v;
    }
  }
  ex.ids.push_back(FeatureId(c.fields, 0));
  // Pairwise interactions: sum over pairs of <v_i, v_j>.
  double pairs = 0;
  for (double s : fm_sum) pairs += s * s;
  logit += 0.5 * (pairs - fm_sq);
  ex.truth_logit = logit;
  double p = 1.0 / (1.0 + std::exp(-logit));
  ex.label = Uniform01(Mix(key ^ 0x7f4a7c15ULL)) < p ? 1.0f : 0.0f;
  return ex;
}

double Auc(const std::vector<double>& scores,
           const std::vector<float>& labels) {
  std::vector<size_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  // Rank-sum (Mann-Whitney U) with average ranks for ties.
  double pos = 0, rank_sum = 0;
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j < order.size() && scores[order[j]] == scores[order[i]]) ++j;
    double avg_rank = 0.5 * static_cast<double>(i + j + 1);  // 1-based
    for (size_t k = i; k < j; ++k) {
      if (labels[order[k]] > 0.5f) {
        pos += 1;
        rank_sum += avg_rank;
      }
    }
    i = j;
  }
  double neg = static_cast<double>(scores.size()) - pos;
  if (pos == 0 || neg == 0) return 0.5;
  return (rank_sum - pos * (pos + 1) / 2) / (pos * neg);
}

double LogLoss(const std::vector<double>& logits,
               const std::vector<float>& labels) {
  double sum = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    double z = logits[i];
    // log(1 + e^z) - y z, computed stably.
    double softplus =
        z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z));
    sum += softplus - labels[i] * z;
  }
  return logits.empty() ? 0 : sum / static_cast<double>(logits.size());
}

}  // namespace plexus::examples
