#include "common/id_index.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <random>
#include <vector>

namespace plexus {
namespace {

// Every id gets the value of its first Insert, against a std::map.
void CheckAgainstMap(const std::vector<uint64_t>& ids) {
  IdIndex index(ids.size());
  std::map<uint64_t, uint32_t> first;
  for (size_t i = 0; i < ids.size(); ++i) {
    const auto [it, fresh] =
        first.try_emplace(ids[i], static_cast<uint32_t>(i));
    const auto [value, inserted] =
        index.Insert(ids[i], static_cast<uint32_t>(i));
    EXPECT_EQ(inserted, fresh) << "id " << ids[i] << " at " << i;
    EXPECT_EQ(value, it->second) << "id " << ids[i] << " at " << i;
  }
}

TEST(IdIndexTest, RepeatedIdsKeepTheirFirstValue) {
  CheckAgainstMap({7, 3, 7, 0, 3, 3, ~uint64_t{0}, 0, ~uint64_t{0}, 11});
}

TEST(IdIndexTest, StridedAndRandomIdsAtFullCapacity) {
  std::vector<uint64_t> strided;
  for (uint64_t i = 0; i < 4096; ++i) strided.push_back(i << 20);
  CheckAgainstMap(strided);
  std::mt19937_64 rng(5);
  std::vector<uint64_t> random(10000);
  for (auto& id : random) id = rng() % 3000;  // many repeats
  CheckAgainstMap(random);
}

TEST(IdIndexTest, OneId) {
  IdIndex index(1);
  EXPECT_EQ(index.Insert(42, 0), std::make_pair(uint32_t{0}, true));
  EXPECT_EQ(index.Insert(42, 5), std::make_pair(uint32_t{0}, false));
}

}  // namespace
}  // namespace plexus
