#include "common/process.h"

#include <signal.h>

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "common/dir_lock.h"
#include "tests/util/test_env.h"

namespace plexus {
namespace {

using ::plexus::testing::ReadFile;

TEST(Subprocess, ReportsTheExitCode) {
  auto p = Subprocess::Start({.argv = {"/bin/sh", "-c", "exit 7"}});
  ASSERT_TRUE(p.ok()) << p.status();
  auto code = (*p)->Wait(absl::Seconds(10));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 7);
  EXPECT_FALSE((*p)->Running());
  EXPECT_EQ((*p)->Signal(SIGTERM).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(Subprocess, ReportsTheKillingSignal) {
  auto p = Subprocess::Start({.argv = {"/bin/sleep", "600"}});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE((*p)->Running());
  EXPECT_EQ((*p)->Wait(absl::Milliseconds(10)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  ASSERT_TRUE((*p)->Signal(SIGKILL).ok());
  auto code = (*p)->Wait(absl::Seconds(10));
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 128 + SIGKILL);
}

TEST(Subprocess, WritesOutputAndEnvironmentToTheLogFile) {
  testing::TempDir dir;
  std::string log = dir.Sub("log");
  auto p = Subprocess::Start(
      {.argv = {"/bin/sh", "-c", "echo out $PLEXUS_X; echo err >&2"},
       .env = {{"PLEXUS_X", "42"}},
       .log_file = log});
  ASSERT_TRUE(p.ok());
  ASSERT_EQ(*(*p)->Wait(absl::Seconds(10)), 0);
  EXPECT_EQ(ReadFile(log), "out 42\nerr\n");
}

TEST(Subprocess, MissingProgramIsNotFound) {
  auto p = Subprocess::Start({.argv = {"/nonexistent/plexus-nothing"}});
  EXPECT_EQ(p.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Subprocess::Start({}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(PortFile, ReadsWhatTheChildWrites) {
  testing::TempDir dir;
  std::string file = dir.Sub("port");
  auto p =
      Subprocess::Start({.argv = {"/bin/sh", "-c",
                                  "echo 4242 > " + file + ".t; mv " + file +
                                      ".t " + file + "; exec sleep 600"}});
  ASSERT_TRUE(p.ok());
  auto port = WaitForPortFile(file, absl::Seconds(10), p->get());
  ASSERT_TRUE(port.ok()) << port.status();
  EXPECT_EQ(*port, 4242);
}

TEST(PortFile, FailsFastWhenTheChildDies) {
  testing::TempDir dir;
  auto p = Subprocess::Start({.argv = {"/bin/sh", "-c", "exit 1"}});
  ASSERT_TRUE(p.ok());
  auto port = WaitForPortFile(dir.Sub("port"), absl::Seconds(30), p->get());
  EXPECT_EQ(port.status().code(), absl::StatusCode::kUnavailable);
}

TEST(WriteFileAtomically, ReplacesTheWholeFile) {
  testing::TempDir dir;
  std::string f = dir.Sub("f");
  ASSERT_TRUE(WriteFileAtomically(f, "first version, long").ok());
  ASSERT_TRUE(WriteFileAtomically(f, "second").ok());
  EXPECT_EQ(ReadFile(f), "second");
  EXPECT_EQ(WriteFileAtomically(dir.Sub("missing/f"), "x").code(),
            absl::StatusCode::kNotFound);
}

TEST(DirLock, SecondHolderIsRefusedUntilTheFirstLetsGo) {
  testing::TempDir dir;
  std::string data = dir.Sub("data");
  auto first = DirLock::Acquire(data);
  ASSERT_TRUE(first.ok()) << first.status();
  // flock locks belong to open file descriptions: a second open in the same
  // process conflicts exactly as another process would.
  auto second = DirLock::Acquire(data);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find("in use"), std::string::npos);
  first->reset();
  EXPECT_TRUE(DirLock::Acquire(data).ok());
}

}  // namespace
}  // namespace plexus
