#include <algorithm>
#include <memory>
#include <vector>

#include "collectives/algorithms/algorithms.h"
#include "collectives/algorithms/reduce_ops.h"
#include "collectives/patterns/ring.h"
#include "common/status.h"

namespace plexus::collectives {
namespace {

using patterns::Range;
using patterns::RingStep;
using Requests = std::vector<std::unique_ptr<Request>>;

uint32_t SubTag(int step, size_t piece) {
  return (static_cast<uint32_t>(step) << 16) | static_cast<uint32_t>(piece);
}

absl::Status WaitAll(const AlgoContext& ctx, const Requests& reqs) {
  std::vector<Request*> raw;
  for (const auto& r : reqs) raw.push_back(r.get());
  return ctx.transport->Wait(raw, ctx.deadline);
}

// The ring pipeline (see patterns/ring.h for the step schedule): reduce-scatter
// steps (if `rs`) then all-gather steps (if `ag`), 2(n - 1) at most. Receives
// of step g + 1 are posted when step g starts (reduce-scatter receives land in
// tmp[(g + 1) % 2], all-gather receives directly in buf); each piece of step g
// is reduced and sent on as step g + 1 as soon as it arrives. Overwriting a
// buffer region whose send may still be in flight cannot happen before the
// peer has received it: data for a region only arrives after the ring has
// carried our send of it onward.
absl::Status RunRing(const AlgoContext& ctx, char* buf,
                     const std::vector<Range>& chunks, DataType type,
                     ReduceOp op, bool rs, bool ag) {
  Transport* t = ctx.transport;
  const int n = t->size();
  const int r = t->rank();
  if (n == 1) return absl::OkStatus();
  const size_t esz = DataTypeSize(type);
  const size_t max_elems = std::max<size_t>(1, ctx.pipeline_bytes / esz);
  const int rs_steps = rs ? n - 1 : 0;
  const int total = rs_steps + (ag ? n - 1 : 0);
  const int next = patterns::RingNext(r, n);
  const int prev = patterns::RingPrev(r, n);
  auto step_of = [&](int g) {
    return g < rs_steps ? patterns::ReduceScatterStep(r, n, g)
                        : patterns::AllGatherStep(r, n, g - rs_steps);
  };
  size_t max_chunk = 0;
  for (const Range& c : chunks) max_chunk = std::max(max_chunk, c.size());
  std::vector<char> local;
  char* tmp[2] = {nullptr, nullptr};
  if (rs) {
    tmp[0] = Scratch(ctx, 2 * max_chunk * esz, &local);
    tmp[1] = tmp[0] + max_chunk * esz;
  }

  struct Posted {
    Requests reqs;
    std::vector<Range> subs;
  };
  auto post_recvs = [&](int g, Posted* p) -> absl::Status {
    const Range c = chunks[step_of(g).recv_chunk];
    p->subs = patterns::SubChunks(c, max_elems);
    p->reqs.clear();
    for (size_t j = 0; j < p->subs.size(); ++j) {
      const Range s = p->subs[j];
      char* dst = g < rs_steps ? tmp[g % 2] + (s.begin - c.begin) * esz
                               : buf + s.begin * esz;
      PLEXUS_ASSIGN_OR_RETURN(
          auto req,
          t->IRecv(prev, Tag{ctx.op, SubTag(g, j)}, dst, s.size() * esz));
      p->reqs.push_back(std::move(req));
    }
    return absl::OkStatus();
  };

  Posted cur, nxt;
  PLEXUS_RETURN_IF_ERROR(post_recvs(0, &cur));
  Requests sends_cur;  // sends of the current step
  {
    const auto subs =
        patterns::SubChunks(chunks[step_of(0).send_chunk], max_elems);
    for (size_t j = 0; j < subs.size(); ++j) {
      PLEXUS_ASSIGN_OR_RETURN(
          auto req, t->ISend(next, Tag{ctx.op, SubTag(0, j)},
                             buf + subs[j].begin * esz, subs[j].size() * esz));
      sends_cur.push_back(std::move(req));
    }
  }
  for (int g = 0; g < total; ++g) {
    if (g + 1 < total) PLEXUS_RETURN_IF_ERROR(post_recvs(g + 1, &nxt));
    const Range c = chunks[step_of(g).recv_chunk];
    Requests sends_next;
    for (size_t j = 0; j < cur.subs.size(); ++j) {
      Request* one[] = {cur.reqs[j].get()};
      PLEXUS_RETURN_IF_ERROR(t->Wait(one, ctx.deadline));
      const Range s = cur.subs[j];
      char* piece = buf + s.begin * esz;
      if (g < rs_steps) {
        ReduceInto(type, op, piece, tmp[g % 2] + (s.begin - c.begin) * esz,
                   s.size());
        if (g == rs_steps - 1 && op == ReduceOp::kAvg) {
          FinishAvg(type, piece, s.size(), n);
        }
      }
      if (g + 1 < total) {
        PLEXUS_ASSIGN_OR_RETURN(
            auto req, t->ISend(next, Tag{ctx.op, SubTag(g + 1, j)}, piece,
                               s.size() * esz));
        sends_next.push_back(std::move(req));
      }
    }
    PLEXUS_RETURN_IF_ERROR(WaitAll(ctx, sends_cur));
    sends_cur = std::move(sends_next);
    cur = std::move(nxt);
  }
  return WaitAll(ctx, sends_cur);
}

}  // namespace

char* Scratch(const AlgoContext& ctx, size_t bytes, std::vector<char>* local) {
  std::vector<char>* v = ctx.scratch != nullptr ? ctx.scratch : local;
  if (v->size() < bytes) v->resize(bytes);
  return v->data();
}

absl::Status RingAllReduce(const AlgoContext& ctx, void* buf, size_t count,
                           DataType type, ReduceOp op) {
  return RunRing(ctx, static_cast<char*>(buf),
                 patterns::BalancedChunks(count, ctx.transport->size()), type,
                 op, /*rs=*/true, /*ag=*/true);
}

absl::Status RingReduceScatter(const AlgoContext& ctx, void* buf, size_t block,
                               DataType type, ReduceOp op) {
  return RunRing(ctx, static_cast<char*>(buf),
                 patterns::EqualChunks(block, ctx.transport->size()), type, op,
                 /*rs=*/true, /*ag=*/false);
}

absl::Status RingAllGather(const AlgoContext& ctx, void* buf, size_t block,
                           DataType type) {
  return RunRing(ctx, static_cast<char*>(buf),
                 patterns::EqualChunks(block, ctx.transport->size()), type,
                 ReduceOp::kSum, /*rs=*/false, /*ag=*/true);
}

}  // namespace plexus::collectives
