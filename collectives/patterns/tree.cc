#include "collectives/patterns/tree.h"

#include "glog/logging.h"

namespace plexus::collectives::patterns {

TreeNode BinaryTree(int rank, int n, int root) {
  CHECK_GE(n, 1);
  CHECK(rank >= 0 && rank < n && root >= 0 && root < n);
  const int v = (rank - root + n) % n;
  TreeNode node;
  if (v != 0) node.parent = ((v - 1) / 2 + root) % n;
  for (int c = 2 * v + 1; c <= 2 * v + 2 && c < n; ++c) {
    node.children.push_back((c + root) % n);
  }
  return node;
}

int BinaryTreeDepth(int n) {
  int depth = 0;
  while ((2 << depth) - 1 < n) ++depth;
  return depth;
}

DoublingPlan RecursiveDoubling(int rank, int n) {
  CHECK_GE(n, 1);
  CHECK(rank >= 0 && rank < n);
  DoublingPlan plan;
  int p = 1;
  while (p * 2 <= n) p *= 2;
  const int r = n - p;
  plan.p = p;
  int v;  // virtual rank among the p members
  if (rank < 2 * r) {
    if (rank % 2 == 0) {
      plan.role = DoublingPlan::Role::kExtra;
      plan.partner = rank + 1;
      return plan;
    }
    plan.role = DoublingPlan::Role::kProxy;
    plan.partner = rank - 1;
    v = rank / 2;
  } else {
    v = rank - r;
  }
  auto real = [r](int virt) { return virt < r ? 2 * virt + 1 : virt + r; };
  for (int mask = 1; mask < p; mask <<= 1) {
    plan.round_peers.push_back(real(v ^ mask));
  }
  return plan;
}

}  // namespace plexus::collectives::patterns
