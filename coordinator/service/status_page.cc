#include "coordinator/service/status_page.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace plexus::coordinator {
namespace {

constexpr absl::string_view kStyle = R"css(
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;
background:#f4f6f8;color:#1d2430;font-size:14px}
header{background:#1d2430;color:#fff;padding:12px 24px;display:flex;
justify-content:space-between;align-items:baseline}
header h1{font-size:20px;margin:0}
header span{color:#aab4c3;font-size:13px}
main{padding:8px 24px 24px}
section{background:#fff;border-radius:6px;box-shadow:0 1px 3px rgba(0,0,0,.12);
margin:16px 0;padding:12px 16px}
h2{font-size:16px;margin:0 0 8px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 6px;border-bottom:1px solid #e3e7ec;
white-space:nowrap}
td.text{white-space:normal}
section{overflow-x:auto}
th{color:#5b6778;font-weight:600;font-size:12px;text-transform:uppercase}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;
font-weight:600;color:#fff}
.ok{background:#2e9e5b}.busy{background:#2f6fd6}.warn{background:#d98b00}
.bad{background:#c9372c}.gone{background:#7d8796}
.bar{background:#e3e7ec;border-radius:4px;height:14px;width:120px;
display:inline-block;vertical-align:middle;overflow:hidden}
.bar div{background:#2e9e5b;height:100%}
.muted{color:#7d8796}
tr.warning td{background:#fff6e0}tr.error td{background:#fde8e6}
)css";

std::string Badge(absl::string_view state) {
  absl::string_view cls = "gone";
  if (state == "IDLE" || state == "SUCCEEDED" || state == "SERVING") {
    cls = "ok";
  } else if (state == "BUSY" || state == "RUNNING") {
    cls = "busy";
  } else if (state == "SUSPECTED" || state == "CANCELLED" ||
             state == "RECOVERING") {
    cls = "warn";
  } else if (state == "DEAD" || state == "FAILED") {
    cls = "bad";
  }
  return absl::StrCat("<span class=\"badge ", cls, "\">", HtmlEscape(state),
                      "</span>");
}

// "3.2 s ago", "—" for never.
std::string Ago(absl::Time now, absl::Time t) {
  if (t == absl::InfinitePast() || t == absl::InfiniteFuture())
    return "&mdash;";
  double s = absl::ToDoubleSeconds(now - t);
  if (s < 0) s = 0;
  if (s < 120) return absl::StrFormat("%.1f s ago", s);
  if (s < 7200) return absl::StrFormat("%.0f min ago", s / 60);
  return absl::StrFormat("%.1f h ago", s / 3600);
}

std::string Clock(absl::Time t) {
  if (t == absl::InfinitePast() || t == absl::InfiniteFuture())
    return "&mdash;";
  return absl::FormatTime("%H:%M:%E3S", t, absl::UTCTimeZone());
}

std::string Td(absl::string_view escaped, bool num = false) {
  return absl::StrCat(num ? "<td class=\"num\">" : "<td>", escaped, "</td>");
}

void Processes(const StatusPageData& d, std::string* out) {
  int alive = 0;
  for (const StatusProcess& p : d.processes) {
    if (p.state != "DEAD" && p.state != "LEFT") ++alive;
  }
  absl::StrAppend(out, "<section id=\"processes\"><h2>Processes (", alive,
                  " alive of ", d.processes.size(), ")</h2>");
  if (!d.ps_shards.empty()) {
    absl::StrAppend(out, "<p id=\"ps-shards\">PS shards watched: ");
    for (size_t i = 0; i < d.ps_shards.size(); ++i) {
      absl::StrAppend(out, i == 0 ? "" : ", ", "shard ", i, " ",
                      HtmlEscape(d.ps_shards[i]));
    }
    absl::StrAppend(out, " ",
                    d.ps_recovering
                        ? Badge("RECOVERING") +
                              " a shard was lost or restarted: dispatch "
                              "paused until every shard is restored"
                        : Badge("SERVING"),
                    "</p>");
  }
  if (d.processes.empty()) {
    absl::StrAppend(out, "<p class=\"muted\">No process registered.</p>",
                    "</section>");
    return;
  }
  absl::StrAppend(out,
                  "<table><tr><th>worker id</th><th>incarnation</th>"
                  "<th>role</th><th>address</th><th>pid</th><th>health</th>"
                  "<th>last heartbeat</th><th>step</th>"
                  "<th>last finished step</th><th>restarts</th></tr>");
  for (const StatusProcess& p : d.processes) {
    absl::StrAppend(
        out, "<tr>", Td(absl::StrCat(p.worker_id), true),
        Td(absl::StrFormat("%016x", p.incarnation)),
        Td(absl::StrCat(HtmlEscape(p.role), " ", p.task_index)),
        Td(HtmlEscape(p.address.empty() ? p.hostname : p.address)),
        Td(absl::StrCat(p.pid), true), Td(Badge(p.state)),
        Td(Ago(d.now, p.last_heartbeat)),
        Td(p.current_step_id ? absl::StrCat(p.current_step_id) : "&mdash;",
           true),
        Td(absl::StrCat(p.last_finished_step_id), true),
        Td(absl::StrCat(p.restarts), true), "</tr>");
  }
  absl::StrAppend(out, "</table></section>");
}

void Jobs(const StatusPageData& d, std::string* out) {
  absl::StrAppend(out, "<section id=\"jobs\"><h2>Jobs</h2>");
  if (d.jobs.empty()) {
    absl::StrAppend(out, "<p class=\"muted\">No job submitted.</p></section>");
    return;
  }
  absl::StrAppend(out,
                  "<table><tr><th>job</th><th>state</th><th>progress</th>"
                  "<th>steps done</th><th>throughput</th><th>running</th>"
                  "<th>queued</th><th>failed</th><th>re-queued</th>"
                  "<th>workers</th><th>last checkpoint</th>"
                  "</tr>");
  for (const StatusJob& j : d.jobs) {
    double frac = j.closures_total == 0
                      ? 0
                      : static_cast<double>(j.closures_succeeded) /
                            static_cast<double>(j.closures_total);
    frac = std::clamp(frac, 0.0, 1.0);
    std::string progress = absl::StrFormat(
        "<span class=\"bar\"><div style=\"width:%.1f%%\"></div></span> "
        "%.1f%%",
        frac * 100, frac * 100);
    std::string ckpt = j.last_checkpoint_id == 0
                           ? "&mdash;"
                           : absl::StrCat("#", j.last_checkpoint_id, " (step ",
                                          j.last_checkpoint_step_id, ")");
    absl::StrAppend(
        out, "<tr>", Td(HtmlEscape(j.job_id)), Td(Badge(j.state)), Td(progress),
        Td(absl::StrCat(j.closures_succeeded, " / ", j.closures_total,
                        " (through step ", j.completed_through_step_id, ")"),
           true),
        Td(absl::StrFormat("%.1f closures/s", j.closures_per_second), true),
        Td(absl::StrCat(j.closures_running), true),
        Td(absl::StrCat(j.closures_queued), true),
        Td(absl::StrCat(j.closures_failed), true),
        Td(absl::StrCat(j.requeues), true),
        Td(absl::StrCat(j.workers_alive), true), Td(ckpt), "</tr>");
    if (!j.error.empty()) {
      absl::StrAppend(out,
                      "<tr class=\"error\"><td class=\"text\" colspan=\"11\">",
                      HtmlEscape(j.error), "</td></tr>");
    }
  }
  absl::StrAppend(out, "</table></section>");
}

void Events(const StatusPageData& d, std::string* out) {
  absl::StrAppend(out,
                  "<section id=\"events\"><h2>Recent failures, recoveries "
                  "and events</h2>");
  if (d.events.empty()) {
    absl::StrAppend(out, "<p class=\"muted\">Nothing yet.</p></section>");
    return;
  }
  absl::StrAppend(out,
                  "<table><tr><th>time (UTC)</th><th>age</th><th>kind</th>"
                  "<th>event</th></tr>");
  for (const StatusEvent& e : d.events) {
    absl::string_view cls = e.severity == EventSeverity::kError     ? "error"
                            : e.severity == EventSeverity::kWarning ? "warning"
                                                                    : "info";
    absl::StrAppend(out, "<tr class=\"", cls, "\">", Td(Clock(e.time)),
                    Td(Ago(d.now, e.time)), Td(HtmlEscape(e.kind)),
                    "<td class=\"text\">", HtmlEscape(e.text), "</td></tr>");
  }
  absl::StrAppend(out, "</table></section>");
}

void Checkpoints(const StatusPageData& d, std::string* out) {
  absl::StrAppend(out, "<section id=\"checkpoints\"><h2>Checkpoints (",
                  d.checkpoints.size(), " kept)</h2>");
  if (!d.checkpoints_enabled) {
    absl::StrAppend(out,
                    "<p class=\"muted\">Checkpoints are off (the coordinator "
                    "needs --data_dir and PS shards).</p></section>");
    return;
  }
  if (d.checkpoints.empty()) {
    absl::StrAppend(out,
                    "<p class=\"muted\">No checkpoint published yet.</p>"
                    "</section>");
    return;
  }
  absl::StrAppend(out,
                  "<table><tr><th>checkpoint</th><th>step</th><th>job</th>"
                  "<th>kind</th><th>shards</th><th>published (UTC)</th>"
                  "<th>age</th><th>took</th></tr>");
  for (const StatusCheckpoint& c : d.checkpoints) {
    std::string took = "&mdash;";
    if (c.started_at != absl::InfinitePast() &&
        c.published_at != absl::InfinitePast()) {
      took = absl::StrFormat(
          "%.0f ms", absl::ToDoubleMilliseconds(c.published_at - c.started_at));
    }
    absl::StrAppend(
        out, "<tr>", Td(absl::StrCat("#", c.checkpoint_id)),
        Td(absl::StrCat(c.step_id), true), Td(HtmlEscape(c.job_id)),
        Td(c.base_checkpoint_id == 0
               ? std::string("full")
               : absl::StrCat("incremental on #", c.base_checkpoint_id)),
        Td(absl::StrCat(c.shards), true), Td(Clock(c.published_at)),
        Td(Ago(d.now, c.published_at)), Td(took, true), "</tr>");
  }
  absl::StrAppend(out, "</table></section>");
}

}  // namespace

std::string HtmlEscape(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string RenderStatusPage(const StatusPageData& d) {
  std::string out =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">";
  if (d.refresh_s > 0) {
    absl::StrAppend(&out, "<meta http-equiv=\"refresh\" content=\"",
                    d.refresh_s, "\">");
  }
  absl::StrAppend(&out, "<title>", HtmlEscape(d.title), " status</title>",
                  "<style>", kStyle, "</style></head><body><header><h1>",
                  HtmlEscape(d.title), " status</h1><span>epoch ", d.epoch,
                  " &middot; ", Clock(d.now), " UTC");
  if (d.refresh_s > 0) {
    absl::StrAppend(&out, " &middot; refreshes every ", d.refresh_s, " s");
  }
  absl::StrAppend(&out, "</span></header><main>");
  Processes(d, &out);
  Jobs(d, &out);
  Events(d, &out);
  Checkpoints(d, &out);
  absl::StrAppend(&out, "</main></body></html>\n");
  return out;
}

}  // namespace plexus::coordinator
