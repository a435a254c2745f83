#include "common/hash.h"

#include <gtest/gtest.h>

#include <set>

namespace plexus {
namespace {

// The values are part of the wire contract (routing, initializer seeds): a
// change here reshuffles every deployed table.
TEST(Hash, IsStableAcrossBuilds) {
  EXPECT_EQ(Mix64(0), 0u);
  EXPECT_EQ(Mix64(1), 0x5692161d100b05e5ULL);
  EXPECT_EQ(HashName(""), Mix64(0xcbf29ce484222325ULL));
  EXPECT_EQ(HashRow(HashName("emb"), 7), 0x6954e5e4ee6b5b18ULL);
}

TEST(Hash, SpreadsRowsOverShards) {
  uint64_t t = HashName("user_embedding");
  int counts[8] = {0};
  for (uint64_t id = 0; id < 80000; ++id) ++counts[HashRow(t, id) % 8];
  for (int c : counts) {
    EXPECT_GT(c, 9000);
    EXPECT_LT(c, 11000);
  }
  std::set<uint64_t> tables = {HashName("a"), HashName("b"), HashName("ab")};
  EXPECT_EQ(tables.size(), 3u);
}

}  // namespace
}  // namespace plexus
