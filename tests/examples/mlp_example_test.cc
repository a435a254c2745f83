// The dense example end to end: build/bin/mlp_example as real processes (a
// launcher and its workers joined by UCX on this machine) on the digits data.
//   - 1, 2 and 4 workers reach the single-process baseline's test accuracy
//     within 1 point (same global batches, so they should);
//   - a 1-worker run ends with the baseline's exact parameters, and two
//     deterministic 2-worker runs with bitwise-identical parameters (hash);
//   - workers that meet through a real plexus-coordinator (rank assignment
//     and rendezvous) train the same bits as through a file store;
//   - a missing or malformed data file is a clear error, exit status 1.
// Needs the digits data (scripts/setup.sh runs scripts/fetch_data.sh).
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/process.h"
#include "examples/mlp/digits.h"
#include "gtest/gtest.h"
#include "tests/util/test_env.h"

namespace plexus::examples {
namespace {

using ::plexus::testing::BinDir;
using ::plexus::testing::ReadFile;
using ::plexus::testing::RunProgram;
using ::plexus::testing::TempDir;

struct ExampleRun {
  int exit_code = -1;
  std::string output;   // stdout and stderr of the launcher and its workers
  std::string summary;  // the {"event":"summary",...} line, if any
};

// Runs mlp_example with `args` (plus --json) and waits up to 60 s.
ExampleRun RunExample(std::vector<std::string> args) {
  TempDir dir;
  SubprocessOptions o;
  o.argv = {BinDir() + "/mlp_example", "--json"};
  o.argv.insert(o.argv.end(), args.begin(), args.end());
  o.log_file = dir.Sub("out.log");
  ExampleRun run;
  run.exit_code =
      RunProgram(o.argv, o.log_file, absl::Seconds(60), &run.output);
  for (absl::string_view line : absl::StrSplit(run.output, '\n')) {
    if (absl::StartsWith(line, "{\"event\":\"summary\"")) {
      run.summary = std::string(line);
    }
  }
  return run;
}

// The raw text of `key`'s value in a flat JSON object (no nesting, no
// escaped quotes in strings: what mlp_example prints).
std::optional<std::string> JsonField(const std::string& json,
                                     const std::string& key) {
  const std::string k = "\"" + key + "\":";
  size_t at = json.find(k);
  if (at == std::string::npos) return std::nullopt;
  at += k.size();
  if (at < json.size() && json[at] == '"') {
    const size_t end = json.find('"', at + 1);
    if (end == std::string::npos) return std::nullopt;
    return json.substr(at + 1, end - at - 1);
  }
  const size_t end = json.find_first_of(",}", at);
  if (end == std::string::npos) return std::nullopt;
  return json.substr(at, end - at);
}

double JsonNumber(const std::string& json, const std::string& key) {
  auto v = JsonField(json, key);
  double d = -1;
  EXPECT_TRUE(v && absl::SimpleAtod(*v, &d))
      << "no number '" << key << "' in: " << json;
  return d;
}

// Few epochs keep each run well under a second; the accuracy has passed the
// 0.90 target by then. A stuck collective fails the run after 20 s rather
// than the default 60.
const std::vector<std::string> kTraining = {
    "--epochs=15", "--target_accuracy=0.9", "--timeout_s=20"};

std::vector<std::string> Args(std::vector<std::string> extra) {
  std::vector<std::string> a = kTraining;
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

class MlpExampleTest : public ::testing::Test {
 protected:
  // The data set must be there: say how to get it rather than fail obscurely.
  static void SetUpTestSuite() {
    auto path = FindDigits();
    ASSERT_TRUE(path.ok())
        << path.status()
        << "\n(the dense example's test needs scikit-learn's digits data: run "
           "scripts/fetch_data.sh, which scripts/setup.sh also runs)";
    baseline_ = new ExampleRun(RunExample(Args({"--mode=baseline"})));
  }
  static void TearDownTestSuite() {
    delete baseline_;
    baseline_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(baseline_, nullptr);
    ASSERT_EQ(baseline_->exit_code, 0) << baseline_->output;
    ASSERT_FALSE(baseline_->summary.empty()) << baseline_->output;
  }
  static ExampleRun* baseline_;
};
ExampleRun* MlpExampleTest::baseline_ = nullptr;

TEST_F(MlpExampleTest, BaselineLearns) {
  // Chance is 10%; the MLP gets above 90% on the held-out last 20%.
  EXPECT_GE(JsonNumber(baseline_->summary, "test_accuracy"), 0.9)
      << baseline_->output;
  EXPECT_EQ(JsonNumber(baseline_->summary, "steps"), 15 * 23);
  EXPECT_NE(JsonField(baseline_->summary, "time_to_target_s"), "null");
  // People get progress lines with examples/s, loss, accuracy and an ETA.
  EXPECT_TRUE(absl::StrContains(baseline_->output, "\"event\":\"progress\""));
  EXPECT_TRUE(absl::StrContains(baseline_->output, "\"eta_s\""));
}

class MlpWorkersTest : public MlpExampleTest,
                       public ::testing::WithParamInterface<int> {};

TEST_P(MlpWorkersTest, ReachBaselineAccuracyWithinOnePoint) {
  const int workers = GetParam();
  // Blocking progress: ctest runs other tests on the same 2 cores, where
  // busy-polling ranks would starve each other.
  ExampleRun run =
      RunExample(Args({"--mode=local", absl::StrCat("--workers=", workers),
                       "--progress=blocking"}));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  ASSERT_FALSE(run.summary.empty()) << run.output;
  EXPECT_EQ(JsonNumber(run.summary, "workers"), workers);
  EXPECT_EQ(JsonNumber(run.summary, "steps"),
            JsonNumber(baseline_->summary, "steps"));
  const double base = JsonNumber(baseline_->summary, "test_accuracy");
  const double acc = JsonNumber(run.summary, "test_accuracy");
  EXPECT_NEAR(acc, base, 0.01) << run.output;
  EXPECT_NE(JsonField(run.summary, "time_to_target_s"), "null") << run.output;
  // With several workers some step time goes to the all-reduce.
  const double share = JsonNumber(run.summary, "comm_share");
  EXPECT_GE(share, 0.0);
  EXPECT_LE(share, 1.0);
  if (workers > 1) {
    EXPECT_GT(share, 0.0);
  }
}

INSTANTIATE_TEST_SUITE_P(Workers, MlpWorkersTest, ::testing::Values(1, 2, 4));

TEST_F(MlpExampleTest, OneWorkerEndsWithTheBaselinesParameters) {
  // A group of one all-reduces nothing away: the same floats in the same
  // order as the baseline.
  ExampleRun run = RunExample(Args({"--mode=local", "--workers=1"}));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_EQ(JsonField(run.summary, "param_hash"),
            JsonField(baseline_->summary, "param_hash"));
}

TEST_F(MlpExampleTest, DeterministicRunsEndBitwiseIdentical) {
  const auto args = Args({"--mode=local", "--workers=2", "--deterministic",
                          "--progress=blocking"});
  ExampleRun a = RunExample(args);
  ExampleRun b = RunExample(args);
  ASSERT_EQ(a.exit_code, 0) << a.output;
  ASSERT_EQ(b.exit_code, 0) << b.output;
  auto ha = JsonField(a.summary, "param_hash");
  auto hb = JsonField(b.summary, "param_hash");
  ASSERT_TRUE(ha.has_value()) << a.output;
  EXPECT_EQ(ha->size(), 16u);
  EXPECT_EQ(ha, hb);
  // Another seed trains other parameters: the hash is not a constant.
  ExampleRun c =
      RunExample(Args({"--mode=local", "--workers=2", "--deterministic",
                       "--progress=blocking", "--seed=2"}));
  ASSERT_EQ(c.exit_code, 0) << c.output;
  EXPECT_NE(JsonField(c.summary, "param_hash"), ha);
}

// The production bootstrap: the workers register with a real
// plexus-coordinator, which assigns their ranks in a collective group and
// carries the communicator's rendezvous keys. Same training, so the same
// bits as the file-store run.
TEST_F(MlpExampleTest, WorkersMeetThroughTheCoordinator) {
  TempDir dir;
  SubprocessOptions so;
  so.argv = {BinDir() + "/plexus-coordinator", "--data_dir=" + dir.Sub("data"),
             "--port_file=" + dir.Sub("port"), "--admin_port=-1"};
  so.log_file = dir.Sub("coordinator.log");
  auto coordinator = Subprocess::Start(so);
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();
  auto port =
      WaitForPortFile(dir.Sub("port"), absl::Seconds(30), coordinator->get());
  ASSERT_TRUE(port.ok()) << port.status() << ReadFile(so.log_file);

  const auto args = Args({"--mode=local", "--workers=2", "--deterministic",
                          "--progress=blocking"});
  auto with_coordinator = args;
  with_coordinator.push_back(absl::StrCat("--coordinator=127.0.0.1:", *port));
  ExampleRun via_coordinator = RunExample(with_coordinator);
  ASSERT_EQ(via_coordinator.exit_code, 0) << via_coordinator.output;
  EXPECT_TRUE(absl::StrContains(via_coordinator.output, "via the coordinator"))
      << via_coordinator.output;
  ExampleRun via_files = RunExample(args);
  ASSERT_EQ(via_files.exit_code, 0) << via_files.output;
  EXPECT_EQ(JsonField(via_coordinator.summary, "param_hash"),
            JsonField(via_files.summary, "param_hash"));
  EXPECT_NEAR(JsonNumber(via_coordinator.summary, "test_accuracy"),
              JsonNumber(baseline_->summary, "test_accuracy"), 0.01);
}

// --device=gpu: CUDA kernels (and NCCL between ranks). Skips, saying why,
// where the build has no CUDA or the machine no usable GPU.
TEST_F(MlpExampleTest, GpuBaselineReachesTheCpuBaselinesAccuracy) {
  ExampleRun run = RunExample(Args({"--mode=baseline", "--device=gpu"}));
  if (run.exit_code != 0 &&
      (absl::StrContains(run.output, "no usable GPU") ||
       absl::StrContains(run.output, "built without CUDA"))) {
    GTEST_SKIP() << run.output;
  }
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NEAR(JsonNumber(run.summary, "test_accuracy"),
              JsonNumber(baseline_->summary, "test_accuracy"), 0.01)
      << run.output;
  // The kernels sum in a fixed order: a second run gives the same bits.
  ExampleRun again = RunExample(Args({"--mode=baseline", "--device=gpu"}));
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_EQ(JsonField(run.summary, "param_hash"),
            JsonField(again.summary, "param_hash"));
}

TEST(MlpExampleDataTest, MissingDataFileIsAClearError) {
  for (const std::string mode : {"--mode=baseline", "--mode=local"}) {
    ExampleRun run = RunExample({mode, "--data=/nonexistent/digits.csv.gz"});
    EXPECT_EQ(run.exit_code, 1) << mode << ": " << run.output;
    EXPECT_TRUE(absl::StrContains(
        run.output, "cannot open digits data /nonexistent/digits.csv.gz"))
        << mode << ": " << run.output;
    EXPECT_TRUE(absl::StrContains(run.output, "scripts/fetch_data.sh"))
        << mode << ": " << run.output;
    EXPECT_TRUE(run.summary.empty());
  }
}

TEST(MlpExampleDataTest, MalformedDataFileNamesTheLine) {
  TempDir dir;
  const std::string path = dir.Sub("digits.csv");
  {
    std::ofstream out(path);
    std::string row;
    for (int i = 0; i < 64; ++i) row += "0,";
    out << row << "3\n" << row << "12\n";  // label 12 is not a digit
  }
  ExampleRun run = RunExample({"--mode=baseline", "--data=" + path});
  EXPECT_EQ(run.exit_code, 1) << run.output;
  EXPECT_TRUE(absl::StrContains(run.output, "line 2")) << run.output;
  EXPECT_TRUE(absl::StrContains(run.output, "not an integer in 0..9"))
      << run.output;
}

}  // namespace
}  // namespace plexus::examples
