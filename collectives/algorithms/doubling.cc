#include <memory>
#include <vector>

#include "collectives/algorithms/algorithms.h"
#include "collectives/algorithms/reduce_ops.h"
#include "collectives/patterns/tree.h"
#include "common/status.h"

namespace plexus::collectives {
namespace {

constexpr uint32_t kFoldTag = 0;
constexpr uint32_t kResultTag = 0xFFFF;
uint32_t RoundTag(size_t k) { return static_cast<uint32_t>(k + 1); }

}  // namespace

// See patterns/tree.h for the schedule. Partners each compute
// mine op theirs; the ops are commutative, so both hold the same bits.
absl::Status DoublingAllReduce(const AlgoContext& ctx, void* buf, size_t count,
                               DataType type, ReduceOp op) {
  Transport* t = ctx.transport;
  const int n = t->size();
  if (n == 1) return absl::OkStatus();
  using Role = patterns::DoublingPlan::Role;
  const patterns::DoublingPlan plan = patterns::RecursiveDoubling(t->rank(), n);
  const size_t bytes = count * DataTypeSize(type);
  // Sends `send` (if `do_send`) and receives into `recv` (if `do_recv`).
  auto exchange = [&](int peer, bool do_send, uint32_t send_tag,
                      const void* send, bool do_recv, uint32_t recv_tag,
                      void* recv) -> absl::Status {
    std::unique_ptr<Request> rq, sq;
    if (do_recv) {
      PLEXUS_ASSIGN_OR_RETURN(
          rq, t->IRecv(peer, Tag{ctx.op, recv_tag}, recv, bytes));
    }
    if (do_send) {
      PLEXUS_ASSIGN_OR_RETURN(
          sq, t->ISend(peer, Tag{ctx.op, send_tag}, send, bytes));
    }
    Request* reqs[] = {rq.get(), sq.get()};
    return t->Wait(reqs, ctx.deadline);
  };
  if (plan.role == Role::kExtra) {
    PLEXUS_RETURN_IF_ERROR(
        exchange(plan.partner, true, kFoldTag, buf, false, 0, nullptr));
    return exchange(plan.partner, false, 0, nullptr, true, kResultTag, buf);
  }
  std::vector<char> local;
  char* tmp = Scratch(ctx, bytes, &local);
  if (plan.role == Role::kProxy) {
    PLEXUS_RETURN_IF_ERROR(
        exchange(plan.partner, false, 0, nullptr, true, kFoldTag, tmp));
    ReduceInto(type, op, buf, tmp, count);
  }
  for (size_t k = 0; k < plan.round_peers.size(); ++k) {
    PLEXUS_RETURN_IF_ERROR(exchange(plan.round_peers[k], true, RoundTag(k), buf,
                                    true, RoundTag(k), tmp));
    ReduceInto(type, op, buf, tmp, count);
  }
  if (op == ReduceOp::kAvg) FinishAvg(type, buf, count, n);
  if (plan.role == Role::kProxy) {
    return exchange(plan.partner, true, kResultTag, buf, false, 0, nullptr);
  }
  return absl::OkStatus();
}

}  // namespace plexus::collectives
