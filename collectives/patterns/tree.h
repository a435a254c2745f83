// Tree and recursive-doubling schedule math. Pure functions, no I/O.
//
// Binary tree: ranks are renumbered relative to the root (v = (r - root) mod
// n); node v has parent (v - 1) / 2 and children 2v + 1, 2v + 2 when < n. Depth
// is floor(log2 n), so a pipelined reduce or broadcast of S bytes in k pieces
// costs about (log2 n + k) piece-times. We use a single binary tree rather
// than NCCL's double binary tree: with the group sizes run here (n <= 16 on
// one host) the second tree buys little and the single tree keeps the
// reduction order fixed (deterministic mode) in the simplest way.
//
// Recursive doubling with non-power-of-two n (the MPICH scheme): let p be the
// largest power of two <= n and r = n - p. Among the first 2r ranks, each even
// rank ("extra") hands its data to rank + 1 ("proxy") before the exchange
// rounds and receives the result from it afterwards. The remaining p ranks
// (proxies and ranks >= 2r) get virtual ranks 0..p-1 and run log2 p rounds;
// in round k virtual rank v exchanges with v XOR 2^k.
//
// Thread safety: all functions are pure.
#pragma once

#include <vector>

namespace plexus::collectives::patterns {

struct TreeNode {
  int parent = -1;            // -1 at the root
  std::vector<int> children;  // 0, 1 or 2 ranks, in a fixed order
};

// REQUIRES: n >= 1, 0 <= rank, root < n.
TreeNode BinaryTree(int rank, int n, int root);
// Depth of the binary tree over n ranks (0 for n == 1).
int BinaryTreeDepth(int n);

struct DoublingPlan {
  enum class Role { kExtra, kProxy, kMember };
  Role role = Role::kMember;
  // kExtra: the proxy's rank; kProxy: the extra's rank; kMember: -1.
  int partner = -1;
  // Peer (real rank) of each exchange round; empty for kExtra.
  std::vector<int> round_peers;
  // p (a power of two): ranks that take part in the exchange rounds.
  int p = 1;
};

// REQUIRES: n >= 1, 0 <= rank < n.
DoublingPlan RecursiveDoubling(int rank, int n);

}  // namespace plexus::collectives::patterns
