#include <algorithm>
#include <cstdint>
#include <set>
#include <vector>

#include "collectives/patterns/ring.h"
#include "collectives/patterns/tree.h"
#include "gtest/gtest.h"

namespace plexus::collectives::patterns {
namespace {

const int kSizes[] = {1, 2, 3, 5, 8, 11, 16};
const size_t kCounts[] = {0, 1, 2, 3, 7, 16, 17, 1000, 1001, 65537};

TEST(RingTest, BalancedChunksTileTheRange) {
  for (int n : kSizes) {
    for (size_t count : kCounts) {
      auto chunks = BalancedChunks(count, n);
      ASSERT_EQ(chunks.size(), static_cast<size_t>(n));
      size_t pos = 0;
      for (const Range& c : chunks) {
        EXPECT_EQ(c.begin, pos);
        EXPECT_LE(c.size(), count / n + 1);
        EXPECT_GE(c.size(), count / n);
        pos = c.end;
      }
      EXPECT_EQ(pos, count) << "n=" << n;
    }
  }
}

TEST(RingTest, EqualChunks) {
  auto c = EqualChunks(7, 3);
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[2], (Range{14, 21}));
}

// Simulates the ring: each rank holds, per chunk, the set of ranks whose
// contribution it has reduced in (a bitmask). Checks that every receive pairs
// with the predecessor's send and that the phases end in the promised state.
TEST(RingTest, ReduceScatterThenAllGatherSimulation) {
  for (int n : kSizes) {
    if (n < 2) continue;
    std::vector<std::vector<uint32_t>> have(n, std::vector<uint32_t>(n));
    for (int r = 0; r < n; ++r) {
      for (int c = 0; c < n; ++c) have[r][c] = 1u << r;
    }
    for (int s = 0; s < n - 1; ++s) {
      auto next = have;
      for (int r = 0; r < n; ++r) {
        RingStep st = ReduceScatterStep(r, n, s);
        int prev = RingPrev(r, n);
        RingStep pst = ReduceScatterStep(prev, n, s);
        ASSERT_EQ(st.recv_chunk, pst.send_chunk) << "n=" << n << " s=" << s;
        if (s + 1 < n - 1) {
          EXPECT_EQ(ReduceScatterStep(r, n, s + 1).send_chunk, st.recv_chunk);
        }
        // No contribution is counted twice.
        ASSERT_EQ(have[r][st.recv_chunk] & have[prev][st.recv_chunk], 0u);
        next[r][st.recv_chunk] |= have[prev][st.recv_chunk];
      }
      have = next;
    }
    const uint32_t all = (n == 32) ? ~0u : ((1u << n) - 1);
    for (int r = 0; r < n; ++r) {
      EXPECT_EQ(have[r][r], all) << "n=" << n << " r=" << r;
      // The first all-gather send is the chunk the reduce-scatter finished.
      EXPECT_EQ(AllGatherStep(r, n, 0).send_chunk, r);
    }
    // All-gather: rank r holds only chunk r complete.
    std::vector<std::vector<bool>> done(n, std::vector<bool>(n));
    for (int r = 0; r < n; ++r) done[r][r] = true;
    for (int s = 0; s < n - 1; ++s) {
      auto next = done;
      for (int r = 0; r < n; ++r) {
        RingStep st = AllGatherStep(r, n, s);
        int prev = RingPrev(r, n);
        ASSERT_EQ(st.recv_chunk, AllGatherStep(prev, n, s).send_chunk);
        ASSERT_TRUE(done[prev][st.recv_chunk]);
        ASSERT_FALSE(done[r][st.recv_chunk]);
        if (s + 1 < n - 1) {
          EXPECT_EQ(AllGatherStep(r, n, s + 1).send_chunk, st.recv_chunk);
        }
        next[r][st.recv_chunk] = true;
      }
      done = next;
    }
    for (int r = 0; r < n; ++r) {
      for (int c = 0; c < n; ++c) EXPECT_TRUE(done[r][c]);
    }
  }
}

TEST(RingTest, SubChunksTileAndRespectLimits) {
  for (size_t count : kCounts) {
    for (size_t max_elems : {1ul, 3ul, 64ul, 1000ul}) {
      Range range{5, 5 + count};
      auto subs = SubChunks(range, max_elems);
      ASSERT_GE(subs.size(), 1u);
      size_t pos = range.begin;
      for (const Range& s : subs) {
        EXPECT_EQ(s.begin, pos);
        EXPECT_LE(s.size(), std::max(max_elems, count / 65535 + 1));
        pos = s.end;
      }
      EXPECT_EQ(pos, range.end);
    }
  }
  auto capped = SubChunks(Range{0, 100}, 1, 7);
  EXPECT_EQ(capped.size(), 7u);
  EXPECT_EQ(capped.back().end, 100u);
}

TEST(TreeTest, BinaryTreeIsASpanningTreeForEveryRoot) {
  for (int n : kSizes) {
    for (int root = 0; root < n; ++root) {
      int edges = 0;
      for (int r = 0; r < n; ++r) {
        TreeNode node = BinaryTree(r, n, root);
        EXPECT_LE(node.children.size(), 2u);
        if (r == root) {
          EXPECT_EQ(node.parent, -1);
        } else {
          ASSERT_GE(node.parent, 0);
          TreeNode p = BinaryTree(node.parent, n, root);
          EXPECT_EQ(std::count(p.children.begin(), p.children.end(), r), 1);
          ++edges;
        }
        for (int c : node.children) {
          EXPECT_EQ(BinaryTree(c, n, root).parent, r);
        }
        // Every rank reaches the root within the depth.
        int hops = 0;
        for (int x = r; x != root; x = BinaryTree(x, n, root).parent) {
          ASSERT_LE(++hops, BinaryTreeDepth(n));
        }
      }
      EXPECT_EQ(edges, n - 1);
    }
  }
  EXPECT_EQ(BinaryTreeDepth(1), 0);
  EXPECT_EQ(BinaryTreeDepth(2), 1);
  EXPECT_EQ(BinaryTreeDepth(3), 1);
  EXPECT_EQ(BinaryTreeDepth(4), 2);
  EXPECT_EQ(BinaryTreeDepth(16), 4);
}

// Simulates recursive doubling with contribution bitmasks: every rank must end
// with every contribution exactly once.
TEST(DoublingTest, EveryRankGetsEveryContributionOnce) {
  for (int n : kSizes) {
    std::vector<DoublingPlan> plans;
    for (int r = 0; r < n; ++r) plans.push_back(RecursiveDoubling(r, n));
    std::vector<uint32_t> have(n);
    for (int r = 0; r < n; ++r) have[r] = 1u << r;
    int members = 0;
    for (int r = 0; r < n; ++r) {
      using Role = DoublingPlan::Role;
      if (plans[r].role == Role::kExtra) {
        ASSERT_EQ(plans[plans[r].partner].role, Role::kProxy);
        ASSERT_EQ(plans[plans[r].partner].partner, r);
        have[plans[r].partner] |= have[r];
        EXPECT_TRUE(plans[r].round_peers.empty());
      } else {
        ++members;
      }
    }
    EXPECT_EQ(members, plans[0].p);
    const size_t rounds = plans[n - 1].round_peers.size();
    for (size_t k = 0; k < rounds; ++k) {
      auto next = have;
      for (int r = 0; r < n; ++r) {
        if (plans[r].role == DoublingPlan::Role::kExtra) continue;
        ASSERT_EQ(plans[r].round_peers.size(), rounds);
        int peer = plans[r].round_peers[k];
        ASSERT_EQ(plans[peer].round_peers[k], r) << "n=" << n;
        ASSERT_EQ(have[r] & have[peer], 0u);
        next[r] |= have[peer];
      }
      have = next;
    }
    for (int r = 0; r < n; ++r) {
      if (plans[r].role == DoublingPlan::Role::kExtra) {
        have[r] = have[plans[r].partner];
      }
    }
    for (int r = 0; r < n; ++r) {
      EXPECT_EQ(have[r], (1u << n) - 1) << "n=" << n << " r=" << r;
    }
  }
}

}  // namespace
}  // namespace plexus::collectives::patterns
