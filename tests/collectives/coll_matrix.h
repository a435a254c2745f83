// The correctness matrix run by every rank of a group: every operation x
// dtype x reduction x element count (all-reduce also with every forced
// algorithm for counts <= small_limit), alternating in-place and
// out-of-place, each result checked against coll_check.h's reference.
#pragma once

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "plexus/collectives/communicator.h"
#include "tests/collectives/coll_check.h"

namespace plexus::collectives::testing {

struct MatrixResult {
  int checks = 0;
  std::vector<std::string> failures;
  absl::Status error;  // first operation error (stops the run)
};

inline MatrixResult RunMatrix(Communicator* comm,
                              const std::vector<size_t>& counts,
                              size_t small_limit = 1000) {
  MatrixResult res;
  const int n = comm->size();
  const int r = comm->rank();
  int seed = 0;
  auto fail = [&](const std::string& what, const absl::Status& s) {
    res.error = s;
    res.failures.push_back(absl::StrCat(what, ": ", s.ToString()));
  };
  auto check = [&](const std::string& what, const std::string& mismatch) {
    ++res.checks;
    if (!mismatch.empty()) res.failures.push_back(what + ": " + mismatch);
  };
  // Per-rank block for reduce-scatter and all-gather: the count itself, or
  // the count split over the group for the big counts (bounded memory).
  auto block_of = [&](size_t count) {
    return count <= small_limit ? count : (count + n - 1) / n;
  };
  for (DataType type : AllTypes()) {
    for (ReduceOp op : AllOps()) {
      for (size_t count : counts) {
        std::vector<Algorithm> algos = {Algorithm::kAuto};
        if (count <= small_limit) {
          algos.insert(algos.end(), {Algorithm::kRing, Algorithm::kTree,
                                     Algorithm::kRecursiveDoubling});
        }
        const std::string tag =
            absl::StrCat(DataTypeName(type), "/", ReduceOpName(op), "/", count);
        for (Algorithm algo : algos) {
          ++seed;
          auto in = MakeInput(type, op, r, count, seed);
          const bool in_place = seed % 2 == 0;
          std::vector<char> out(in_place ? 0 : in.size());
          void* result = in_place ? in.data() : out.data();
          OpOptions opts;
          opts.algorithm = algo;
          const std::string what =
              absl::StrCat("all-reduce ", tag, " ", AlgorithmName(algo));
          absl::Status s =
              comm->AllReduce(in.data(), result, count, type, op, opts);
          if (!s.ok()) return fail(what, s), res;
          check(what, CheckReduced(type, op, n, result, count, seed));
        }
        {
          ++seed;
          const size_t block = block_of(count);
          auto in = MakeInput(type, op, r, block * n, seed);
          std::vector<char> out(block * DataTypeSize(type));
          const std::string what = "reduce-scatter " + tag;
          absl::Status s =
              comm->ReduceScatter(in.data(), out.data(), block, type, op);
          if (!s.ok()) return fail(what, s), res;
          check(what,
                CheckReduced(type, op, n, out.data(), block, seed, r * block));
        }
        {
          ++seed;
          const int root = n - 1;
          auto in = MakeInput(type, op, r, count, seed);
          std::vector<char> out(r == root ? in.size() : 0);
          const std::string what = "reduce " + tag;
          absl::Status s =
              comm->Reduce(in.data(), out.data(), count, type, op, root);
          if (!s.ok()) return fail(what, s), res;
          if (r == root) {
            check(what, CheckReduced(type, op, n, out.data(), count, seed));
          }
        }
      }
    }
    for (size_t count : counts) {
      const std::string tag = absl::StrCat(DataTypeName(type), "/", count);
      {
        ++seed;
        const size_t block = block_of(count);
        auto in = MakeInput(type, ReduceOp::kSum, r, block, seed, r * block);
        std::vector<char> out(block * n * DataTypeSize(type));
        const std::string what = "all-gather " + tag;
        absl::Status s = comm->AllGather(in.data(), out.data(), block, type);
        if (!s.ok()) return fail(what, s), res;
        std::string mismatch;
        for (int b = 0; b < n && mismatch.empty(); ++b) {
          for (size_t j = b * block; j < (b + 1) * block; ++j) {
            const double want = InputValue(ReduceOp::kSum, b, j, seed);
            if (Load(type, out.data(), j) != want) {
              mismatch = absl::StrCat("element ", j, " want ", want);
              break;
            }
          }
        }
        check(what, mismatch);
      }
      for (int root : {0, n - 1}) {
        ++seed;
        auto buf = r == root
                       ? MakeInput(type, ReduceOp::kSum, root, count, seed)
                       : std::vector<char>(count * DataTypeSize(type));
        const std::string what =
            absl::StrCat("broadcast ", tag, " root ", root);
        absl::Status s = comm->Broadcast(buf.data(), count, type, root);
        if (!s.ok()) return fail(what, s), res;
        std::string mismatch;
        for (size_t i = 0; i < count; ++i) {
          if (Load(type, buf.data(), i) !=
              InputValue(ReduceOp::kSum, root, i, seed)) {
            mismatch = absl::StrCat("element ", i);
            break;
          }
        }
        check(what, mismatch);
      }
    }
  }
  for (int i = 0; i < 3; ++i) {
    absl::Status s = comm->Barrier();
    if (!s.ok()) return fail("barrier", s), res;
    ++res.checks;
  }
  return res;
}

}  // namespace plexus::collectives::testing
