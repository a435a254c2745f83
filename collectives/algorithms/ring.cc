#include <algorithm>
#include <cstring>
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

// What both ring variants derive from the call: the group and this rank's
// neighbours, the element and piece sizes, and the number of steps (`rs`:
// reduce-scatter steps, `ag`: all-gather steps).
struct RingShape {
  RingShape(const AlgoContext& ctx, DataType type, bool rs, bool ag)
      : t(ctx.transport),
        n(t->size()),
        r(t->rank()),
        esz(DataTypeSize(type)),
        max_elems(std::max<size_t>(1, ctx.pipeline_bytes / esz)),
        rs_steps(rs ? n - 1 : 0),
        total(rs_steps + (ag ? n - 1 : 0)),
        next(patterns::RingNext(r, n)),
        prev(patterns::RingPrev(r, n)) {}
  Transport* t;
  int n;
  int r;
  size_t esz;
  size_t max_elems;
  int rs_steps;
  int total;
  int next;
  int prev;
};

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
//
// `send` is this rank's input (may be buf): the first send and every
// reduction read it, and every chunk of buf is written (reduced, or received
// in the all-gather), so an out-of-place call needs no copy of send into buf.
absl::Status RunRing(const AlgoContext& ctx, const char* send, char* buf,
                     const std::vector<Range>& chunks, DataType type,
                     ReduceOp op, bool rs, bool ag) {
  const auto [t, n, r, esz, max_elems, rs_steps, total, next, prev] =
      RingShape(ctx, type, rs, ag);
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
                             send + subs[j].begin * esz, subs[j].size() * esz));
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
        ReduceInto(type, op, piece, send + s.begin * esz,
                   tmp[g % 2] + (s.begin - c.begin) * esz, s.size());
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

// The same schedule with single-copy reads (Transport::Read) instead of
// messages, for ranks on one host: at step g a rank reads the chunk it would
// have received from prev's memory -- prev's input at the first step, prev's
// buf after -- through an L2-sized scratch piece that it reduces into buf
// (reduce-scatter), or straight into buf (all-gather). The peers exchange
// only 16-byte notes: at step g, "my data for your step g is ready" (the first
// one carries the addresses of send and buf), and at the end "done reading
// you", which lets prev return (its buffers must stay put until then). Each
// byte crosses once (the kernel copies from prev's pages) instead of twice
// through a shared-memory queue, and a rank works through a step at its own
// pace instead of in lockstep with its peer (which on an oversubscribed
// machine meant a scheduler time slice per queue-full of pieces).
//
// Bits equal RunRing's: every element is reduced in the same order (own
// input op the partial from prev), only the data moves differently. Prev's
// memory read at step g is not written again before we read it: its buf
// chunk is next written with the chunk's final value, which is only made
// after our contribution, i.e. after our read.
absl::Status RunRingReads(const AlgoContext& ctx, const char* send, char* buf,
                          const std::vector<Range>& chunks, DataType type,
                          ReduceOp op, bool rs, bool ag) {
  const auto [t, n, r, esz, max_elems, rs_steps, total, next, prev] =
      RingShape(ctx, type, rs, ag);
  constexpr uint32_t kDoneTag = 0xFFFFFFFF;
  struct Note {
    uint64_t send = 0, buf = 0;
  };
  const Note mine{reinterpret_cast<uint64_t>(send),
                  reinterpret_cast<uint64_t>(buf)};
  // Notes from prev, one per step, and the final one from next: all posted
  // up front.
  std::vector<Note> in(total + 1);
  Requests recvs, sends;
  for (int g = 0; g < total; ++g) {
    PLEXUS_ASSIGN_OR_RETURN(auto req, t->IRecv(prev, Tag{ctx.op, SubTag(g, 0)},
                                               &in[g], sizeof(Note)));
    recvs.push_back(std::move(req));
  }
  PLEXUS_ASSIGN_OR_RETURN(auto done_req, t->IRecv(next, Tag{ctx.op, kDoneTag},
                                                  &in[total], sizeof(Note)));
  auto note = [&](int peer, uint32_t sub) -> absl::Status {
    PLEXUS_ASSIGN_OR_RETURN(
        auto req, t->ISend(peer, Tag{ctx.op, sub}, &mine, sizeof(Note)));
    sends.push_back(std::move(req));
    return absl::OkStatus();
  };
  PLEXUS_RETURN_IF_ERROR(note(next, SubTag(0, 0)));
  std::vector<char> local;
  char* tmp =
      rs_steps > 0
          ? Scratch(ctx, std::min(max_elems, chunks[0].size() + 1) * esz,
                    &local)
          : nullptr;
  for (int g = 0; g < total; ++g) {
    Request* one[] = {recvs[g].get()};
    PLEXUS_RETURN_IF_ERROR(t->Wait(one, ctx.deadline));
    const bool reduce = g < rs_steps;
    const Range c =
        chunks[reduce ? patterns::ReduceScatterStep(r, n, g).recv_chunk
                      : patterns::AllGatherStep(r, n, g - rs_steps).recv_chunk];
    const uint64_t theirs = g == 0 ? in[0].send : in[0].buf;
    if (reduce) {
      for (const Range& s : patterns::SubChunks(c, max_elems)) {
        char* piece = buf + s.begin * esz;
        PLEXUS_RETURN_IF_ERROR(
            t->Read(prev, theirs + s.begin * esz, tmp, s.size() * esz));
        ReduceInto(type, op, piece, send + s.begin * esz, tmp, s.size());
        if (g == rs_steps - 1 && op == ReduceOp::kAvg) {
          FinishAvg(type, piece, s.size(), n);
        }
      }
    } else if (c.size() > 0) {
      PLEXUS_RETURN_IF_ERROR(t->Read(prev, theirs + c.begin * esz,
                                     buf + c.begin * esz, c.size() * esz));
    }
    if (g + 1 < total) PLEXUS_RETURN_IF_ERROR(note(next, SubTag(g + 1, 0)));
  }
  PLEXUS_RETURN_IF_ERROR(note(prev, kDoneTag));
  recvs.push_back(std::move(done_req));
  PLEXUS_RETURN_IF_ERROR(WaitAll(ctx, recvs));
  return WaitAll(ctx, sends);
}

// Reads when the transport offers them and the message is large enough for
// a read's fixed cost (a system call, pinning the peer's pages) to pay off;
// every rank decides alike (same count, same CanRead).
absl::Status Ring(const AlgoContext& ctx, const void* send, void* buf,
                  const std::vector<Range>& chunks, DataType type, ReduceOp op,
                  bool rs, bool ag) {
  const int n = ctx.transport->size();
  const char* in = static_cast<const char*>(send);
  char* out = static_cast<char*>(buf);
  size_t bytes = 0;
  for (const Range& c : chunks) bytes += c.size() * DataTypeSize(type);
  if (n == 1) {
    if (in != out && bytes > 0) std::memcpy(out, in, bytes);
    return absl::OkStatus();
  }
  if (ctx.single_copy_bytes > 0 && bytes >= ctx.single_copy_bytes &&
      ctx.transport->CanRead()) {
    return RunRingReads(ctx, in, out, chunks, type, op, rs, ag);
  }
  return RunRing(ctx, in, out, chunks, type, op, rs, ag);
}

}  // namespace

char* Scratch(const AlgoContext& ctx, size_t bytes, std::vector<char>* local) {
  std::vector<char>* v = ctx.scratch != nullptr ? ctx.scratch : local;
  if (v->size() < bytes) v->resize(bytes);
  return v->data();
}

absl::Status RingAllReduce(const AlgoContext& ctx, void* buf, size_t count,
                           DataType type, ReduceOp op) {
  return RingAllReduce(ctx, buf, buf, count, type, op);
}

absl::Status RingAllReduce(const AlgoContext& ctx, const void* send, void* recv,
                           size_t count, DataType type, ReduceOp op) {
  return Ring(ctx, send, recv,
              patterns::BalancedChunks(count, ctx.transport->size()), type, op,
              /*rs=*/true, /*ag=*/true);
}

absl::Status RingReduceScatter(const AlgoContext& ctx, void* buf, size_t block,
                               DataType type, ReduceOp op) {
  return Ring(ctx, buf, buf,
              patterns::EqualChunks(block, ctx.transport->size()), type, op,
              /*rs=*/true, /*ag=*/false);
}

absl::Status RingAllGather(const AlgoContext& ctx, void* buf, size_t block,
                           DataType type) {
  return Ring(ctx, buf, buf,
              patterns::EqualChunks(block, ctx.transport->size()), type,
              ReduceOp::kSum, /*rs=*/false, /*ag=*/true);
}

}  // namespace plexus::collectives
