#include "coordinator/membership/cluster_spec.h"

#include <cstdlib>
#include <fstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/util/test_env.h"

namespace plexus::coordinator::membership {
namespace {

using ::testing::HasSubstr;

// TF_CONFIG exactly as Kubeflow's TFJob controller writes it.
constexpr char kKubeflowTfConfig[] =
    R"({"cluster":{"chief":["mnist-chief-0.kubeflow.svc:2222"],"ps":["mnist-ps-0.kubeflow.svc:2222","mnist-ps-1.kubeflow.svc:2222"],"worker":["mnist-worker-0.kubeflow.svc:2222","mnist-worker-1.kubeflow.svc:2222","mnist-worker-2.kubeflow.svc:2222"]},"task":{"type":"worker","index":1},"environment":"cloud"})";

TEST(ClusterSpecTest, ParsesKubeflowTfConfig) {
  absl::StatusOr<TfConfig> c = ParseTfConfig(kKubeflowTfConfig);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->cluster.chief.size(), 1u);
  EXPECT_EQ(c->cluster.ps.size(), 2u);
  ASSERT_EQ(c->cluster.worker.size(), 3u);
  EXPECT_EQ(c->cluster.worker[2], "mnist-worker-2.kubeflow.svc:2222");
  ASSERT_TRUE(c->task.has_value());
  EXPECT_EQ(c->task->role, Role::kWorker);
  EXPECT_EQ(c->task->index, 1);
  EXPECT_EQ(c->cluster.AddressOf(*c->task), "mnist-worker-1.kubeflow.svc:2222");
  EXPECT_EQ(c->cluster.size(), 6u);
}

TEST(ClusterSpecTest, MasterIsTheChiefAndTaskIsOptional) {
  absl::StatusOr<TfConfig> c =
      ParseTfConfig(R"({"cluster": {"master": ["m:1"], "worker": ["w:2"]}})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->cluster.chief, std::vector<std::string>{"m:1"});
  EXPECT_FALSE(c->task.has_value());
}

TEST(ClusterSpecTest, RejectsBadTfConfigNamingTheField) {
  struct Case {
    const char* json;
    const char* message;
  } cases[] = {
      {R"({"task": {"type": "worker", "index": 0}})",
       "\"cluster\" is required"},
      {R"({"cluster": {"evaluator": ["e:1"]}})", "unknown role \"evaluator\""},
      {R"({"cluster": {"worker": "w:1"}})",
       "cluster.worker: expected an array"},
      {R"({"cluster": {"worker": [1]}})",
       "cluster.worker[0]: expected a string"},
      {R"({"cluster": {"worker": ["w"]}})", "cluster.worker[0]"},
      {R"({"cluster": {"worker": ["w:0"]}})", "port in 1..65535"},
      {R"({"cluster": {"worker": ["w:70000"]}})", "port in 1..65535"},
      {R"({"cluster": {"chief": ["a:1", "b:1"]}})", "at most one chief"},
      {R"({"cluster": {"worker": ["w:1"]}, "task": {"type": "worker", "index": 1}})",
       "worker 1 is not in the cluster"},
      {R"({"cluster": {"worker": ["w:1"]}, "task": {"type": "ps", "index": 0}})",
       "ps 0 is not in the cluster"},
      {R"({"cluster": {"worker": ["w:1"]}, "task": {"type": "worker", "index": -1}})",
       "task.index"},
      {R"({"cluster": {"worker": ["w:1"]}, "task": {"type": "worker", "index": 0.5}})",
       "task.index"},
      {R"({"cluster": {"worker": ["w:1"]}, "task": {"index": 0}})",
       "task.type"},
      {R"({"cluster": {"chief": ["a:1"], "master": ["b:1"]}})", "both"},
      {R"([1])", "expected an object"},
      {R"({"cluster": {}, )", "invalid JSON"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<TfConfig> r = ParseTfConfig(c.json);
    ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.json;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.message))
        << c.json;
  }
}

TEST(ClusterSpecTest, ParsesFlagLists) {
  absl::StatusOr<ClusterSpec> s =
      ParseClusterSpecLists("", " w0:1 , w1:2", "127.0.0.1:5000");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->chief.empty());
  EXPECT_EQ(s->worker, (std::vector<std::string>{"w0:1", "w1:2"}));
  EXPECT_EQ(s->ps, std::vector<std::string>{"127.0.0.1:5000"});
  EXPECT_EQ(ParseClusterSpecLists("", "w0:1,,w1:2", "").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseClusterSpecLists("", "w0", "").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ClusterSpecTest, ReadsFileWithBareClusterOrTfConfig) {
  testing::TempDir dir;
  {
    std::ofstream(dir.Sub("bare.json"))
        << R"({"worker": ["w:1"], "ps": ["p:2"]})";
    std::ofstream(dir.Sub("tf.json")) << kKubeflowTfConfig;
    std::ofstream(dir.Sub("bad.json")) << R"({"worker": ["w:1"],})";
  }
  absl::StatusOr<TfConfig> bare = ReadClusterSpecFile(dir.Sub("bare.json"));
  ASSERT_TRUE(bare.ok()) << bare.status();
  EXPECT_EQ(bare->cluster.ps, std::vector<std::string>{"p:2"});
  EXPECT_FALSE(bare->task.has_value());
  absl::StatusOr<TfConfig> tf = ReadClusterSpecFile(dir.Sub("tf.json"));
  ASSERT_TRUE(tf.ok()) << tf.status();
  EXPECT_EQ(tf->cluster.worker.size(), 3u);
  absl::StatusOr<TfConfig> bad = ReadClusterSpecFile(dir.Sub("bad.json"));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("bad.json"));
  EXPECT_EQ(ReadClusterSpecFile(dir.Sub("none.json")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(ClusterSpecTest, ReadsTfConfigFromEnvironment) {
  ::unsetenv("TF_CONFIG");
  absl::StatusOr<std::optional<TfConfig>> none = TfConfigFromEnvironment();
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  ::setenv("TF_CONFIG", kKubeflowTfConfig, 1);
  absl::StatusOr<std::optional<TfConfig>> some = TfConfigFromEnvironment();
  ::unsetenv("TF_CONFIG");
  ASSERT_TRUE(some.ok()) << some.status();
  ASSERT_TRUE(some->has_value());
  EXPECT_EQ((*some)->task->index, 1);
}

}  // namespace
}  // namespace plexus::coordinator::membership
