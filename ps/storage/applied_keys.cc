#include "ps/storage/applied_keys.h"

#include "absl/strings/str_cat.h"
#include "common/tsan.h"

namespace plexus::ps {

AppliedKeys::AppliedKeys() : stripes_(new Stripe[kStripes]) {}

AppliedKeys::Stripe& AppliedKeys::StripeOf(const UpdateKey& key) const {
  return stripes_[absl::Hash<UpdateKey>{}(key) % kStripes];
}

absl::Status AppliedKeys::CheckIncarnation(uint64_t worker,
                                           uint64_t incarnation) {
  if (worker == 0) return absl::OkStatus();
  MutexLock lock(&incarnation_mu_);
  uint64_t& newest = incarnations_[worker];
  if (incarnation < newest) {
    return absl::FailedPreconditionError(
        absl::StrCat("stale incarnation ", incarnation, " of worker ", worker,
                     "; the newest seen is ", newest));
  }
  newest = incarnation;
  return absl::OkStatus();
}

bool AppliedKeys::Insert(const UpdateKey& key, uint64_t step) {
  Stripe& s = StripeOf(key);
  MutexLock lock(&s.mu);
  const bool inserted = s.keys.try_emplace(key, step).second;
  if (inserted) size_.fetch_add(1, std::memory_order_relaxed);
  return inserted;
}

void AppliedKeys::Erase(const UpdateKey& key) {
  Stripe& s = StripeOf(key);
  MutexLock lock(&s.mu);
  if (s.keys.erase(key) > 0) size_.fetch_sub(1, std::memory_order_relaxed);
}

void AppliedKeys::TrimUpTo(uint64_t step) {
  for (int i = 0; i < kStripes; ++i) {
    Stripe& s = stripes_[i];
    MutexLock lock(&s.mu);
    for (auto it = s.keys.begin(); it != s.keys.end();) {
      if (it->second <= step) {
        s.keys.erase(it++);
        size_.fetch_sub(1, std::memory_order_relaxed);
      } else {
        ++it;
      }
    }
  }
}

void AppliedKeys::Export(
    std::vector<std::pair<UpdateKey, uint64_t>>* keys,
    std::vector<std::pair<uint64_t, uint64_t>>* incarnations) const {
  keys->clear();
  incarnations->clear();
  keys->reserve(static_cast<size_t>(size()));
  for (int i = 0; i < kStripes; ++i) {
    Stripe& s = stripes_[i];
    MutexLock lock(&s.mu);
    for (const auto& [k, step] : s.keys) keys->emplace_back(k, step);
  }
  MutexLock lock(&incarnation_mu_);
  incarnations->assign(incarnations_.begin(), incarnations_.end());
}

void AppliedKeys::Replace(
    const std::vector<std::pair<UpdateKey, uint64_t>>& keys,
    const std::vector<std::pair<uint64_t, uint64_t>>& incarnations) {
  for (int i = 0; i < kStripes; ++i) {
    Stripe& s = stripes_[i];
    MutexLock lock(&s.mu);
    size_.fetch_sub(static_cast<int64_t>(s.keys.size()),
                    std::memory_order_relaxed);
    s.keys.clear();
  }
  for (const auto& [k, step] : keys) Insert(k, step);
  MutexLock lock(&incarnation_mu_);
  incarnations_.clear();
  for (const auto& [w, inc] : incarnations) incarnations_[w] = inc;
}

}  // namespace plexus::ps
