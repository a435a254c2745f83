#include <algorithm>
#include <memory>
#include <vector>

#include "collectives/algorithms/algorithms.h"
#include "collectives/algorithms/reduce_ops.h"
#include "collectives/patterns/ring.h"
#include "collectives/patterns/tree.h"
#include "common/status.h"

namespace plexus::collectives {
namespace {

using patterns::Range;
using Requests = std::vector<std::unique_ptr<Request>>;

constexpr uint32_t kUp = 0;
constexpr uint32_t kDown = 1;
uint32_t SubTag(uint32_t phase, size_t piece) {
  return (phase << 16) | static_cast<uint32_t>(piece);
}

absl::Status WaitAll(const AlgoContext& ctx, const Requests& reqs) {
  std::vector<Request*> raw;
  for (const auto& r : reqs) raw.push_back(r.get());
  return ctx.transport->Wait(raw, ctx.deadline);
}

// Pipelined reduce towards `root`: every piece from the children is posted up
// front; piece j is reduced (own, then children in fixed order) and sent to
// the parent as soon as both children's piece j arrived.
absl::Status TreeUp(const AlgoContext& ctx, char* buf, size_t count,
                    DataType type, ReduceOp op, int root) {
  Transport* t = ctx.transport;
  const int n = t->size();
  const patterns::TreeNode node = patterns::BinaryTree(t->rank(), n, root);
  const size_t esz = DataTypeSize(type);
  const auto subs = patterns::SubChunks(
      Range{0, count}, std::max<size_t>(1, ctx.pipeline_bytes / esz));
  std::vector<char> local;
  char* base = Scratch(ctx, node.children.size() * count * esz, &local);
  std::vector<char*> tmp(node.children.size());
  std::vector<Requests> recvs(node.children.size());
  for (size_t c = 0; c < node.children.size(); ++c) {
    tmp[c] = base + c * count * esz;
    for (size_t j = 0; j < subs.size(); ++j) {
      PLEXUS_ASSIGN_OR_RETURN(
          auto req,
          t->IRecv(node.children[c], Tag{ctx.op, SubTag(kUp, j)},
                   tmp[c] + subs[j].begin * esz, subs[j].size() * esz));
      recvs[c].push_back(std::move(req));
    }
  }
  Requests sends;
  for (size_t j = 0; j < subs.size(); ++j) {
    char* piece = buf + subs[j].begin * esz;
    for (size_t c = 0; c < node.children.size(); ++c) {
      Request* one[] = {recvs[c][j].get()};
      PLEXUS_RETURN_IF_ERROR(t->Wait(one, ctx.deadline));
      ReduceInto(type, op, piece, tmp[c] + subs[j].begin * esz, subs[j].size());
    }
    if (node.parent < 0) {
      if (op == ReduceOp::kAvg) FinishAvg(type, piece, subs[j].size(), n);
    } else {
      PLEXUS_ASSIGN_OR_RETURN(
          auto req, t->ISend(node.parent, Tag{ctx.op, SubTag(kUp, j)}, piece,
                             subs[j].size() * esz));
      sends.push_back(std::move(req));
    }
  }
  return WaitAll(ctx, sends);
}

// Pipelined broadcast from `root`: piece j goes on to the children as soon as
// it arrives from the parent.
absl::Status TreeDown(const AlgoContext& ctx, char* buf, size_t count,
                      DataType type, int root) {
  Transport* t = ctx.transport;
  const patterns::TreeNode node =
      patterns::BinaryTree(t->rank(), t->size(), root);
  const size_t esz = DataTypeSize(type);
  const auto subs = patterns::SubChunks(
      Range{0, count}, std::max<size_t>(1, ctx.pipeline_bytes / esz));
  Requests recvs, sends;
  if (node.parent >= 0) {
    for (size_t j = 0; j < subs.size(); ++j) {
      PLEXUS_ASSIGN_OR_RETURN(
          auto req, t->IRecv(node.parent, Tag{ctx.op, SubTag(kDown, j)},
                             buf + subs[j].begin * esz, subs[j].size() * esz));
      recvs.push_back(std::move(req));
    }
  }
  for (size_t j = 0; j < subs.size(); ++j) {
    if (node.parent >= 0) {
      Request* one[] = {recvs[j].get()};
      PLEXUS_RETURN_IF_ERROR(t->Wait(one, ctx.deadline));
    }
    for (int child : node.children) {
      PLEXUS_ASSIGN_OR_RETURN(
          auto req, t->ISend(child, Tag{ctx.op, SubTag(kDown, j)},
                             buf + subs[j].begin * esz, subs[j].size() * esz));
      sends.push_back(std::move(req));
    }
  }
  return WaitAll(ctx, sends);
}

}  // namespace

absl::Status TreeAllReduce(const AlgoContext& ctx, void* buf, size_t count,
                           DataType type, ReduceOp op) {
  if (ctx.transport->size() == 1) return absl::OkStatus();
  char* b = static_cast<char*>(buf);
  PLEXUS_RETURN_IF_ERROR(TreeUp(ctx, b, count, type, op, /*root=*/0));
  return TreeDown(ctx, b, count, type, /*root=*/0);
}

absl::Status TreeReduce(const AlgoContext& ctx, void* buf, size_t count,
                        DataType type, ReduceOp op, int root) {
  if (ctx.transport->size() == 1) return absl::OkStatus();
  return TreeUp(ctx, static_cast<char*>(buf), count, type, op, root);
}

absl::Status TreeBroadcast(const AlgoContext& ctx, void* buf, size_t count,
                           DataType type, int root) {
  if (ctx.transport->size() == 1) return absl::OkStatus();
  return TreeDown(ctx, static_cast<char*>(buf), count, type, root);
}

}  // namespace plexus::collectives
