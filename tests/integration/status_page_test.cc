// The coordinator's status page (GET /status on its admin port) over a real
// cluster: LocalCluster's coordinator (checkpointing its shard every 10
// steps) and PS shard, two golden_worker processes training a job. Mid-job
// worker 1 is killed (SIGKILL) and started again, so the page has a death, a
// return, re-queued closures and checkpoints to show.
//
// Plain HTTP: /status answers 200 text/html with every section, / redirects
// to it. Then Debian's headless Chromium loads the page (--dump-dom: the DOM
// holds the processes, the job's progress, the failure and the
// checkpoints) and takes a 1280x900 screenshot, kept under the test's temp
// dir and copied to /tmp/plexus_status.png.
//
// The Chromium half is skipped, saying so, where /usr/bin/chromium is not
// installed (scripts/setup.sh installs it from deploy/packages.txt).
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/process.h"
#include "plexus/worker/ps_client.h"
#include "tests/integration/golden.h"
#include "tests/util/test_env.h"
#include "tools/local/local_cluster.h"

namespace plexus {
namespace {

using ::plexus::testing::BinDir;
using ::plexus::testing::GoldenVariableConfig;
using ::plexus::testing::kGoldenElements;
using ::plexus::testing::ReadFile;
using ::plexus::testing::TempDir;
using ::plexus::testing::WaitFor;

constexpr char kChromium[] = "/usr/bin/chromium";
constexpr int kSteps = 120;
constexpr char kJob[] = "status-job";

struct Page {
  int status = 0;
  std::string content_type;
  std::string location;
  std::string body;
};

Page Get(int port, const std::string& path) {
  httplib::Client http("127.0.0.1", port);
  http.set_connection_timeout(5, 0);
  http.set_read_timeout(10, 0);
  httplib::Result r = http.Get(path.c_str());
  Page p;
  if (!r) return p;
  p.status = r->status;
  p.content_type = r->get_header_value("Content-Type");
  p.location = r->get_header_value("Location");
  p.body = r->body;
  return p;
}

// Runs Chromium headless with `args` then `url`, bounded in time; its
// stdout and stderr go to `log`.
absl::StatusOr<int> RunChromium(const TempDir& dir,
                                std::vector<std::string> args,
                                const std::string& url,
                                const std::string& log) {
  SubprocessOptions o;
  o.argv = {kChromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--user-data-dir=" + dir.Sub("chromium-profile")};
  o.argv.insert(o.argv.end(), args.begin(), args.end());
  o.argv.push_back(url);
  o.env = {{"HOME", dir.path()}};
  o.log_file = log;
  auto p = Subprocess::Start(o);
  if (!p.ok()) return p.status();
  return (*p)->Wait(absl::Seconds(90));
}

TEST(StatusPageTest, ShowsProcessesJobFailureAndCheckpoints) {
  TempDir dir;
  local::LocalClusterOptions o;
  o.bin_dir = BinDir();
  o.root_dir = dir.Sub("cluster");
  o.num_ps = 1;
  o.coordinator_watches_shards = true;
  o.coordinator_flags = {"--checkpoint_every_steps=10",
                         "--disconnect_timeout_ms=1000"};
  o.extra_flags = {"--heartbeat_interval_ms=100",
                   "--undefok=heartbeat_interval_ms"};
  o.num_workers = 2;
  o.worker_argv = {BinDir() + "/golden_worker", "--pause_after_pull_ms=40"};
  auto cluster = local::LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  std::string shard, coordinator_log;
  int admin = 0;
  size_t worker1 = 0;
  for (size_t i = 0; i < (*cluster)->members().size(); ++i) {
    const local::Member& m = (*cluster)->members()[i];
    if (m.role == "ps") shard = m.address;
    if (m.role == "coordinator") {
      admin = m.admin_port;
      coordinator_log = m.log_file;
    }
    if (m.role == "worker" && m.index == 1) worker1 = i;
  }
  ASSERT_NE(admin, 0);
  ASSERT_NE(worker1, 0u);

  // Plain HTTP first: the page answers before any job.
  Page first = Get(admin, "/status");
  ASSERT_EQ(first.status, 200);
  EXPECT_TRUE(absl::StartsWith(first.content_type, "text/html"))
      << first.content_type;
  EXPECT_TRUE(absl::StrContains(first.body, "No job submitted."));
  Page root = Get(admin, "/");
  EXPECT_EQ(root.status, 302);
  EXPECT_EQ(root.location, "/status");

  worker::PsClientOptions pco;
  pco.shards = {shard};
  auto ps = worker::PsClient::Connect(pco);
  ASSERT_TRUE(ps.ok()) << ps.status();
  v1::VariableConfig v = GoldenVariableConfig();
  ASSERT_TRUE((*ps)->CreateVariable(v).ok());

  SubprocessOptions submit;
  submit.argv = {BinDir() + "/plexus",
                 "job",
                 "submit",
                 "--coordinator=" + (*cluster)->coordinator_address(),
                 "--function=golden",
                 absl::StrCat("--steps=", kSteps),
                 absl::StrCat("--job=", kJob)};
  submit.log_file = dir.Sub("submit.log");
  auto submitted = Subprocess::Start(submit);
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  absl::StatusOr<int> code = (*submitted)->Wait(absl::Seconds(30));
  ASSERT_TRUE(code.ok() && *code == 0) << ReadFile(submit.log_file);

  // Mid-job (a checkpoint published): kill worker 1, wait for the
  // coordinator to declare it dead, start it again from its command line.
  ASSERT_TRUE(WaitFor(
      [&] {
        return absl::StrContains(Get(admin, "/status").body, "published (");
      },
      absl::Seconds(60)))
      << ReadFile(coordinator_log);
  ASSERT_TRUE((*cluster)->process(worker1)->Signal(SIGKILL).ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        return absl::StrContains(Get(admin, "/status").body, "declared dead");
      },
      absl::Seconds(30)))
      << ReadFile(coordinator_log);
  const local::Member& w1 = (*cluster)->members()[worker1];
  SubprocessOptions again;
  again.argv =
      absl::StrSplit(ReadFile(w1.dir + "/argv"), '\n', absl::SkipEmpty());
  again.log_file = dir.Sub("worker-1-again.log");
  auto restarted = Subprocess::Start(again);
  ASSERT_TRUE(restarted.ok()) << restarted.status();

  const std::string done = absl::StrCat("job &#39;", kJob, "&#39; succeeded");
  Page page;
  ASSERT_TRUE(WaitFor(
      [&] {
        page = Get(admin, "/status");
        return absl::StrContains(page.body, done) &&
               absl::StrContains(page.body, "came back");
      },
      absl::Seconds(120)))
      << page.body << "\n"
      << ReadFile(coordinator_log);
  EXPECT_EQ(page.status, 200);
  EXPECT_TRUE(absl::StartsWith(page.content_type, "text/html"));
  for (const char* want :
       {"<meta http-equiv=\"refresh\" content=\"2\">", "id=\"processes\"",
        "id=\"jobs\"", "id=\"events\"", "id=\"checkpoints\"", kJob, "SUCCEEDED",
        "100.0%", "closures/s", "declared dead", "came back", "published (",
        "came back as worker id", "PS shards watched"}) {
    EXPECT_TRUE(absl::StrContains(page.body, want)) << want << "\n"
                                                    << page.body;
  }
  EXPECT_TRUE(absl::StrContains(page.body, absl::StrCat(kSteps, " / ", kSteps)))
      << page.body;

  // The log has one line per event, with the ids.
  std::string log = ReadFile(coordinator_log);
  EXPECT_TRUE(absl::StrContains(log, "declared dead")) << log;
  EXPECT_TRUE(absl::StrContains(log, "worker 1 came back as worker id"));
  EXPECT_TRUE(absl::StrContains(log, "' succeeded: "));
  EXPECT_TRUE(absl::StrContains(log, "' submitted: "));

  if (access(kChromium, X_OK) != 0) {
    GTEST_SKIP() << kChromium
                 << " is not installed: the browser half of this test needs "
                    "Debian's `chromium` package (scripts/setup.sh, or "
                    "apt-get install --no-install-recommends chromium); the "
                    "plain-HTTP checks above passed";
  }
  const std::string url = absl::StrCat("http://127.0.0.1:", admin, "/");
  const std::string dom_log = dir.Sub("dom.html");
  absl::StatusOr<int> rc = RunChromium(dir, {"--dump-dom"}, url, dom_log);
  ASSERT_TRUE(rc.ok()) << rc.status();
  std::string dom = ReadFile(dom_log);
  ASSERT_EQ(*rc, 0) << dom;
  for (const char* want :
       {"status-job", "Processes (", "SUCCEEDED", "100.0%", "declared dead",
        "came back", "job 'status-job' succeeded", "Checkpoints (",
        "published (", "closures/s"}) {
    EXPECT_TRUE(absl::StrContains(dom, want)) << want << "\n" << dom;
  }

  const std::string png = dir.Sub("status.png");
  rc = RunChromium(dir, {"--screenshot=" + png, "--window-size=1280,900"}, url,
                   dir.Sub("screenshot.log"));
  ASSERT_TRUE(rc.ok()) << rc.status();
  ASSERT_EQ(*rc, 0) << ReadFile(dir.Sub("screenshot.log"));
  std::string image = ReadFile(png);
  ASSERT_GT(image.size(), 20'000u) << "screenshot too small";
  EXPECT_EQ(image.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  RecordProperty("screenshot_bytes", static_cast<int>(image.size()));
  std::error_code ec;
  std::filesystem::copy_file(png, "/tmp/plexus_status.png",
                             std::filesystem::copy_options::overwrite_existing,
                             ec);
  EXPECT_FALSE(ec) << ec.message();
}

}  // namespace
}  // namespace plexus
