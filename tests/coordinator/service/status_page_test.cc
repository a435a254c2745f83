// RenderStatusPage: a pure function; the page escapes what it shows, refreshes
// itself, and holds every section with the data it was given.
#include "coordinator/service/status_page.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace plexus::coordinator {
namespace {

TEST(HtmlEscapeTest, EscapesTheFiveCharacters) {
  EXPECT_EQ(HtmlEscape(""), "");
  EXPECT_EQ(HtmlEscape("plain text 123"), "plain text 123");
  EXPECT_EQ(HtmlEscape("<a href=\"x\">it's & more</a>"),
            "&lt;a href=&quot;x&quot;&gt;it&#39;s &amp; more&lt;/a&gt;");
  EXPECT_EQ(HtmlEscape("&amp;"), "&amp;amp;");
}

StatusPageData Sample() {
  StatusPageData d;
  d.epoch = 7;
  d.now = absl::FromUnixSeconds(1'800'000'000);
  d.processes.push_back({.worker_id = 3,
                         .incarnation = 0xabc,
                         .role = "worker",
                         .task_index = 1,
                         .address = "127.0.0.1:4242",
                         .pid = 1234,
                         .state = "DEAD",
                         .restarts = 2,
                         .last_heartbeat = d.now - absl::Seconds(4)});
  d.processes.push_back({.worker_id = 4, .role = "ps", .state = "IDLE"});
  StatusJob j;
  j.job_id = "<script>alert(1)</script>";
  j.state = "RUNNING";
  j.closures_total = 200;
  j.closures_succeeded = 50;
  j.closures_per_second = 12.5;
  j.requeues = 3;
  j.last_checkpoint_id = 9;
  j.last_checkpoint_step_id = 40;
  j.error = "bad & worse";
  j.submitted_at = d.now - absl::Seconds(10);
  d.jobs.push_back(j);
  d.checkpoints_enabled = true;
  d.checkpoints.push_back({.checkpoint_id = 9,
                           .step_id = 40,
                           .job_id = "job-a",
                           .base_checkpoint_id = 8,
                           .shards = 2,
                           .started_at = d.now - absl::Milliseconds(1300),
                           .published_at = d.now - absl::Seconds(1)});
  d.events.push_back({.time = d.now - absl::Seconds(2),
                      .severity = EventSeverity::kWarning,
                      .kind = "died",
                      .text = "worker id 3 incarnation 0abc declared dead "
                              "(stream <closed>)"});
  return d;
}

TEST(RenderStatusPageTest, HasEverySectionAndRefreshes) {
  std::string page = RenderStatusPage(Sample());
  EXPECT_TRUE(absl::StartsWith(page, "<!DOCTYPE html>")) << page;
  EXPECT_TRUE(absl::EndsWith(page, "</html>\n"));
  EXPECT_TRUE(
      absl::StrContains(page, "<meta http-equiv=\"refresh\" content=\"2\">"));
  for (const char* id : {"processes", "jobs", "events", "checkpoints"}) {
    EXPECT_TRUE(absl::StrContains(page, absl::StrCat("id=\"", id, "\""))) << id;
  }
  EXPECT_TRUE(absl::StrContains(page, "epoch 7"));
  EXPECT_TRUE(absl::StrContains(page, "<style>"));
  EXPECT_FALSE(absl::StrContains(page, "<script"));
}

TEST(RenderStatusPageTest, ShowsTheData) {
  std::string page = RenderStatusPage(Sample());
  EXPECT_TRUE(absl::StrContains(page, "Processes (1 alive of 2)"));
  EXPECT_TRUE(absl::StrContains(page, "0000000000000abc"));
  EXPECT_TRUE(absl::StrContains(page, "127.0.0.1:4242"));
  EXPECT_TRUE(absl::StrContains(page, "badge bad\">DEAD"));
  EXPECT_TRUE(absl::StrContains(page, "4.0 s ago"));
  EXPECT_TRUE(absl::StrContains(page, "25.0%"));
  EXPECT_TRUE(absl::StrContains(page, "50 / 200"));
  EXPECT_TRUE(absl::StrContains(page, "12.5 closures/s"));
  EXPECT_TRUE(absl::StrContains(page, "#9 (step 40)"));
  EXPECT_TRUE(absl::StrContains(page, "incremental on #8"));
  EXPECT_TRUE(absl::StrContains(page, "300 ms"));
  EXPECT_TRUE(absl::StrContains(page, "Checkpoints (1 kept)"));
  EXPECT_TRUE(absl::StrContains(page, "class=\"warning\""));
  EXPECT_FALSE(absl::StrContains(page, "PS shards watched"));
}

TEST(RenderStatusPageTest, ShowsTheShardsAndARecovery) {
  StatusPageData d = Sample();
  d.ps_shards = {"127.0.0.1:1111", "127.0.0.1:2222"};
  std::string page = RenderStatusPage(d);
  EXPECT_TRUE(absl::StrContains(
      page, "shard 0 127.0.0.1:1111, shard 1 127.0.0.1:2222"));
  EXPECT_TRUE(absl::StrContains(page, "badge ok\">SERVING"));
  d.ps_recovering = true;
  page = RenderStatusPage(d);
  EXPECT_TRUE(absl::StrContains(page, "badge warn\">RECOVERING"));
  EXPECT_TRUE(absl::StrContains(page, "dispatch paused"));
}

TEST(RenderStatusPageTest, EscapesEverythingFromOutside) {
  std::string page = RenderStatusPage(Sample());
  EXPECT_FALSE(absl::StrContains(page, "<script>alert(1)</script>"));
  EXPECT_TRUE(absl::StrContains(page, "&lt;script&gt;alert(1)&lt;/script&gt;"));
  EXPECT_TRUE(absl::StrContains(page, "bad &amp; worse"));
  EXPECT_TRUE(absl::StrContains(page, "(stream &lt;closed&gt;)"));
}

TEST(RenderStatusPageTest, EmptyAndOff) {
  StatusPageData d;
  d.now = absl::FromUnixSeconds(1'800'000'000);
  d.refresh_s = 0;
  std::string page = RenderStatusPage(d);
  EXPECT_FALSE(absl::StrContains(page, "http-equiv"));
  EXPECT_TRUE(absl::StrContains(page, "No process registered."));
  EXPECT_TRUE(absl::StrContains(page, "No job submitted."));
  EXPECT_TRUE(absl::StrContains(page, "Nothing yet."));
  EXPECT_TRUE(absl::StrContains(page, "Checkpoints are off"));
  d.checkpoints_enabled = true;
  EXPECT_TRUE(
      absl::StrContains(RenderStatusPage(d), "No checkpoint published yet."));
}

}  // namespace
}  // namespace plexus::coordinator
