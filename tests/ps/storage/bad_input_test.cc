// Bad input at the engine boundary (../shared/FAULTS.md): each case asserts
// the exact code, that nothing changed, and that the engine still serves.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "ps/storage/engine.h"
#include "tests/ps/storage/test_util.h"

namespace plexus::ps {
namespace {

using testing::F32;
using testing::NewEngine;
using testing::OwnedTensor;
using testing::PullDense;
using testing::PullRows;
using testing::PushRows;
using testing::SimpleTable;
using testing::SimpleVariable;

constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;

class BadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    e_ = NewEngine();
    ASSERT_TRUE(e_->CreateTable({SimpleTable("t", 2)}).ok());
    ASSERT_TRUE(
        e_->CreateVariable({.config = SimpleVariable("w", {4, 2})}).ok());
    ASSERT_TRUE(PushRows(*e_, "t", {1}, {1, 1}).ok());
    before_t_ = PullRows(*e_, "t", {1, 2});
    before_w_ = PullDense(*e_, "w");
  }
  // Nothing changed and the engine still serves.
  void ExpectUnchanged() {
    EXPECT_EQ(PullRows(*e_, "t", {1, 2}), before_t_);
    EXPECT_EQ(PullDense(*e_, "w"), before_w_);
    EXPECT_EQ(e_->DescribeTable("t")->rows_in_memory, 1);
    EXPECT_TRUE(PushRows(*e_, "t", {1}, {0, 0}).ok());
  }
  absl::Status PushSparse(const std::vector<uint64_t>& ids,
                          const OwnedTensor& g, std::string table = "t") {
    SparseGradient sg{table, ids, g.view()};
    return e_->Push({.exactly_once = false}, {}, {&sg, 1}).status();
  }
  absl::Status PushDense(RowRange rows, const OwnedTensor& g,
                         std::string var = "w") {
    DenseGradient dg{var, rows, g.view()};
    return e_->Push({.exactly_once = false}, {&dg, 1}, {}).status();
  }
  std::unique_ptr<Engine> e_;
  std::vector<float> before_t_, before_w_;
};

TEST_F(BadInput, UnknownNamesAreNotFound) {
  auto g = F32({1, 2}, {1, 1});
  EXPECT_EQ(PushSparse({1}, g, "nope").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(PushDense({0, 1}, g, "nope").code(), absl::StatusCode::kNotFound);
  // A variable's name is not a table and vice versa.
  EXPECT_EQ(PushSparse({1}, g, "w").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(e_->DeleteTable("w").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(e_->DeleteVariable("t").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(e_->DescribeTable("x").status().code(),
            absl::StatusCode::kNotFound);
  std::vector<uint64_t> ids = {1};
  SparseRead r{"nope", ids, true};
  EXPECT_EQ(e_->Pull({}, {}, {&r, 1}).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_GE(e_->counters().rejected_pushes, 3);
  ExpectUnchanged();
}

TEST_F(BadInput, ShapeDtypeAndLengthMismatches) {
  // ids/grads length mismatch.
  EXPECT_EQ(PushSparse({1, 2}, F32({1, 2}, {1, 1})).code(), kInvalid);
  // Wrong dim.
  EXPECT_EQ(PushSparse({1}, F32({1, 3}, {1, 1, 1})).code(), kInvalid);
  // Byte length does not match the shape.
  OwnedTensor short_bytes = F32({1, 2}, {1, 1});
  short_bytes.bytes.pop_back();
  EXPECT_EQ(PushSparse({1}, short_bytes).code(), kInvalid);
  // Unsupported dtype.
  OwnedTensor f64 = F32({1, 2}, {1, 1});
  f64.dtype = DType::kFloat64;
  EXPECT_EQ(PushSparse({1}, f64).code(), kInvalid);
  // Negative and overflowing dims (no allocation happens).
  OwnedTensor neg{DType::kFloat32, {-1, 2}, ""};
  EXPECT_EQ(PushSparse({1}, neg).code(), kInvalid);
  OwnedTensor huge{DType::kFloat32, {int64_t{1} << 62, 1 << 20}, ""};
  EXPECT_EQ(PushDense({0, 1}, huge).code(), kInvalid);
  // Dense: rows outside the slice, inverted range, wrong row count.
  EXPECT_EQ(PushDense({3, 5}, F32({2, 2}, {1, 1, 1, 1})).code(), kInvalid);
  EXPECT_EQ(PushDense({2, 1}, F32({0, 2}, {})).code(), kInvalid);
  EXPECT_EQ(PushDense({0, 2}, F32({1, 2}, {1, 1})).code(), kInvalid);
  // Pull: bad dtype and range.
  DenseRead r{"w", {2, 9}};
  EXPECT_EQ(e_->Pull({}, {&r, 1}, {}).status().code(), kInvalid);
  r.rows = {};
  EXPECT_EQ(
      e_->Pull({.value_dtype = DType::kFloat64}, {&r, 1}, {}).status().code(),
      kInvalid);
  ExpectUnchanged();
}

TEST_F(BadInput, NonFiniteGradientsAreRejectedWithACounter) {
  EXPECT_EQ(PushSparse({1, 2}, F32({2, 2}, {1, 1, NAN, 1})).code(), kInvalid);
  EXPECT_EQ(PushDense({0, 1}, F32({1, 2}, {INFINITY, 1})).code(), kInvalid);
  EXPECT_EQ(e_->counters().non_finite_rejected, 2);
  ExpectUnchanged();
}

TEST_F(BadInput, SkipPolicyDropsOnlyNonFiniteRows) {
  TableConfig c = SimpleTable("skip", 1, 1.0);
  c.non_finite_policy = NonFinitePolicy::kSkip;
  ASSERT_TRUE(e_->CreateTable({c}).ok());
  auto r = PushRows(*e_, "skip", {1, 2, 3}, {1, NAN, -INFINITY});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->rows_applied, 1);
  EXPECT_EQ(r->skipped_non_finite, 2);
  EXPECT_EQ(e_->counters().non_finite_skipped, 2);
  EXPECT_EQ(PullRows(*e_, "skip", {1}), std::vector<float>{-1});
  EXPECT_EQ(e_->ReadRow("skip", 2).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(BadInput, SkipPolicyDropsANonFiniteDenseItem) {
  VariableConfig c = SimpleVariable("ws", {2}, 1.0);
  c.non_finite_policy = NonFinitePolicy::kSkip;
  ASSERT_TRUE(e_->CreateVariable({.config = c}).ok());
  auto bad = F32({2}, {1, NAN});
  auto good = F32({2}, {1, 1});
  DenseGradient items[2] = {{"ws", {0, 2}, bad.view()},
                            {"ws", {0, 2}, good.view()}};
  auto r = e_->Push({.exactly_once = false}, items, {});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->skipped_non_finite, 1);
  EXPECT_EQ(r->rows_applied, 2);
  EXPECT_EQ(PullDense(*e_, "ws"), (std::vector<float>{-1, -1}));
  EXPECT_EQ(e_->counters().non_finite_skipped, 1);
}

TEST_F(BadInput, BatchIsAllOrNothing) {
  // A valid sparse item plus an invalid dense item: nothing applied.
  auto good = F32({1, 2}, {5, 5});
  auto bad = F32({1, 3}, {1, 1, 1});
  std::vector<uint64_t> ids = {1};
  SparseGradient sg{"t", ids, good.view()};
  DenseGradient dg{"w", {0, 1}, bad.view()};
  EXPECT_EQ(e_->Push({.worker_id = 1, .step_id = 1}, {&dg, 1}, {&sg, 1})
                .status()
                .code(),
            kInvalid);
  EXPECT_EQ(e_->counters().applied_keys, 0) << "no key recorded on error";
  ExpectUnchanged();
}

TEST_F(BadInput, BadConfigsAreRefusedAtCreation) {
  for (const char* name : {"", ".", "a/../b", "sp ace", "x\n"}) {
    EXPECT_EQ(e_->CreateTable({SimpleTable(name, 2)}).status().code(), kInvalid)
        << name;
  }
  EXPECT_EQ(
      e_->CreateTable({SimpleTable(std::string(257, 'a'), 2)}).status().code(),
      kInvalid);
  EXPECT_EQ(e_->CreateTable({SimpleTable("d0", 0)}).status().code(), kInvalid);
  TableConfig no_lr = SimpleTable("lr", 2, 0.0);
  EXPECT_EQ(e_->CreateTable({no_lr}).status().code(), kInvalid);
  TableConfig no_mode = SimpleTable("m", 2);
  no_mode.consistency = {};
  EXPECT_EQ(e_->CreateTable({no_mode}).status().code(), kInvalid);
  TableConfig cap = SimpleTable("cap", 2);
  cap.capacity_rows = 10;
  EXPECT_EQ(e_->CreateTable({cap}).status().code(), kInvalid);
  TableConfig sync0 = SimpleTable("s", 2);
  sync0.consistency = {.mode = ConsistencyMode::kSync, .num_workers = 0};
  EXPECT_EQ(e_->CreateTable({sync0}).status().code(), kInvalid);
  TableConfig f64 = SimpleTable("f64", 2);
  f64.storage_dtype = DType::kFloat64;
  EXPECT_EQ(e_->CreateTable({f64}).status().code(), kInvalid);

  EXPECT_EQ(e_->CreateVariable({.config = SimpleVariable("neg", {4, -2})})
                .status()
                .code(),
            kInvalid);
  EXPECT_EQ(
      e_->CreateVariable({.config = SimpleVariable("r0", {})}).status().code(),
      kInvalid);
  EXPECT_EQ(e_->CreateVariable({.config = SimpleVariable(
                                    "big", {int64_t{1} << 40, 1 << 20})})
                .status()
                .code(),
            kInvalid);
  EXPECT_EQ(e_->CreateVariable(
                  {.config = SimpleVariable("rows", {4, 2}), .rows = {2, 9}})
                .status()
                .code(),
            kInvalid);
  auto init = F32({3, 2}, {1, 2, 3, 4, 5, 6});
  EXPECT_EQ(e_->CreateVariable({.config = SimpleVariable("iv", {4, 2}),
                                .initial_value = init.view()})
                .status()
                .code(),
            kInvalid);
  // A name taken by the other kind.
  EXPECT_EQ(e_->CreateTable({SimpleTable("w", 2)}).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(e_->CreateTable({SimpleTable("t", 3)}).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(e_->ListTables().size(), 1u);
  EXPECT_EQ(e_->ListVariables().size(), 1u);
  ExpectUnchanged();
}

TEST_F(BadInput, ChunkIndexOutOfRange) {
  EXPECT_EQ(
      PushRows(
          *e_, "t", {1}, {1, 1},
          {.worker_id = 1, .step_id = 1, .chunk_index = 2, .num_chunks = 2})
          .status()
          .code(),
      kInvalid);
  ExpectUnchanged();
}

TEST_F(BadInput, SyncTargetNeedsAStep) {
  TableConfig c = SimpleTable("s", 2);
  c.consistency = {.mode = ConsistencyMode::kSync, .num_workers = 1};
  ASSERT_TRUE(e_->CreateTable({c}).ok());
  EXPECT_EQ(PushRows(*e_, "s", {1}, {1, 1}).status().code(), kInvalid);
}

}  // namespace
}  // namespace plexus::ps
