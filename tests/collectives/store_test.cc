#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "collectives/rendezvous/store.h"
#include "gtest/gtest.h"
#include "tests/util/test_env.h"

namespace plexus::collectives {
namespace {

enum class Kind { kMemory, kFile };

class StoreTest : public ::testing::TestWithParam<Kind> {
 protected:
  void SetUp() override {
    if (GetParam() == Kind::kMemory) {
      store_ = NewMemoryStore();
    } else {
      auto s = NewFileStore(dir_.path());
      ASSERT_TRUE(s.ok()) << s.status();
      store_ = std::move(*s);
    }
  }
  plexus::testing::TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_P(StoreTest, SetThenGet) {
  ASSERT_TRUE(store_->Set("a/b c", std::string("x\0y", 3)).ok());
  auto v = store_->Get("a/b c", absl::Now() + absl::Seconds(5));
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, std::string("x\0y", 3));
}

TEST_P(StoreTest, GetOfMissingKeyTimesOutNamingIt) {
  auto v = store_->Get("missing", absl::Now() + absl::Milliseconds(30));
  EXPECT_EQ(v.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(v.status().message().find("missing"), std::string::npos);
}

TEST_P(StoreTest, WaitReturnsWhenAnotherThreadSetsTheKeys) {
  std::thread setter([&] {
    ASSERT_TRUE(store_->Set("k1", "1").ok());
    ASSERT_TRUE(store_->Set("k2", "2").ok());
  });
  std::vector<std::string> keys = {"k1", "k2"};
  EXPECT_TRUE(store_->Wait(keys, absl::Now() + absl::Seconds(10)).ok());
  setter.join();
}

TEST_P(StoreTest, AddIsAtomicAcrossThreads) {
  constexpr int kThreads = 4, kAdds = 25;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kAdds; ++i) ASSERT_TRUE(store_->Add("ctr", 1).ok());
    });
  }
  for (auto& t : threads) t.join();
  auto v = store_->Add("ctr", 0);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, kThreads * kAdds);
  EXPECT_EQ(*store_->Get("ctr", absl::Now()), "100");
}

TEST_P(StoreTest, AddOnNonCounterIsInvalidArgument) {
  ASSERT_TRUE(store_->Set("text", "abc").ok());
  EXPECT_EQ(store_->Add("text", 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_P(StoreTest, PrefixStoresAreIsolated) {
  auto g1 = NewPrefixStore(store_.get(), GroupEpochPrefix("g", 1));
  auto g2 = NewPrefixStore(store_.get(), GroupEpochPrefix("g", 2));
  ASSERT_TRUE(g1->Set("addr", "one").ok());
  EXPECT_EQ(*g1->Get("addr", absl::Now() + absl::Seconds(1)), "one");
  EXPECT_EQ(
      g2->Get("addr", absl::Now() + absl::Milliseconds(20)).status().code(),
      absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(*store_->Get("group/g/epoch/1/addr", absl::Now()), "one");
  std::vector<std::string> keys = {"addr"};
  EXPECT_TRUE(g1->Wait(keys, absl::Now()).ok());
  EXPECT_EQ(*g2->Add("n", 3), 3);
}

INSTANTIATE_TEST_SUITE_P(Stores, StoreTest,
                         ::testing::Values(Kind::kMemory, Kind::kFile),
                         [](const auto& info) {
                           return info.param == Kind::kMemory ? "Memory"
                                                              : "File";
                         });

TEST(FileStoreTest, RejectsMissingFolder) {
  EXPECT_EQ(NewFileStore("/nonexistent/plexus").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace plexus::collectives
