// nemesis: the soak of the fault suite (driven by scripts/nemesis.sh; not
// part of CI). For --minutes it runs rounds of the golden job on a fresh
// cluster (2 PS shards, a checkpointing coordinator, --workers golden
// workers, each worker in its own test host when network namespaces can be
// made) and injects one fault at a time every few seconds, chosen at random:
//
//   kill-worker     SIGKILL a worker, restart it after 0-2 s
//   term-worker     SIGTERM a worker (drains, exits 143), restart it
//   stop-worker     SIGSTOP a worker for 0.5-4 s (past the 1.5 s dead
//                   timeout or not), SIGCONT
//   part-worker-ps  cut a worker from the PS shards (both ways or the
//                   acknowledgements only) for 1-10 s, heal
//   part-worker-co  cut a worker from the coordinator for 1-5 s, heal
//   kill-ps         SIGKILL a PS shard, restart it at its address (only once
//                   a published checkpoint exists: see tests/fault/README.md)
//   term-ps         SIGTERM a PS shard (drains, exits 0), restart it
//   stop-ps         SIGSTOP a PS shard for 0.5-3 s, SIGCONT
//   kill-coord      SIGKILL the coordinator, restart it on its folder
//   stop-coord      SIGSTOP the coordinator for 0.5-3 s, SIGCONT
//
// After each fault is healed it records the time to recover: until the
// job's succeeded-closure count moves again. At the end of each round every
// process is healed and the job must succeed with exactly N closures and
// parameters equal to the golden run's bit for bit (no acknowledged update
// lost or applied twice). Prints one line per fault and a summary; exit 0
// when every round was golden and every fault recovered.
#include <gflags/gflags.h>
#include <glog/logging.h>
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/init.h"
#include "tests/fault/fault_cluster.h"
#include "tests/util/test_env.h"

DEFINE_double(minutes, 30, "How long to inject faults, in minutes.");
DEFINE_double(round_minutes, 5, "Target length of one round (one job).");
DEFINE_int32(workers, 3, "Golden workers.");
DEFINE_double(every_s, 4, "Mean time between faults, seconds.");
DEFINE_uint64(seed, 1, "Seed of the fault choice.");
DEFINE_int64(first_steps, 3000, "Steps of the first round's job.");
DEFINE_string(dir, "/tmp/plexus-nemesis", "Folder for the clusters.");
DEFINE_int32(pause_after_pull_ms, 30, "Workers' compute time per step.");

namespace plexus::fault {
namespace {

struct FaultStats {
  int count = 0;
  int unrecovered = 0;
  std::vector<double> recover_ms;
};

class Nemesis {
 public:
  explicit Nemesis(uint64_t seed) : rng_(seed) {}

  // One round; returns false when the round broke an invariant.
  bool Round(int round, int64_t steps, absl::Time stop_faults,
             absl::Duration* took) {
    const absl::Time start = absl::Now();
    std::string root = absl::StrCat(FLAGS_dir, "/round-", round);
    std::filesystem::remove_all(root);
    hosts_.clear();
    for (int i = 0; i < FLAGS_workers; ++i) {
      auto h = NetHost::Create();
      if (!h.ok()) {
        if (round == 1) {
          std::printf("no test hosts (%s): no partitions\n",
                      std::string(h.status().message()).c_str());
        }
        hosts_.clear();
        break;
      }
      hosts_.push_back(std::move(*h));
    }
    FaultClusterOptions o;
    o.root_dir = root;
    o.num_ps = 2;
    o.coordinator_knows_shards = true;
    o.bind_host = hosts_.empty() ? "127.0.0.1" : "0.0.0.0";
    o.coordinator_flags = {"--checkpoint_every_steps=200",
                           "--no_worker_timeout_ms=600000"};
    auto c = FaultCluster::Start(o);
    if (!c.ok()) {
      std::printf("round %d: cluster did not start: %s\n", round,
                  c.status().ToString().c_str());
      return false;
    }
    cluster_ = std::move(*c);
    for (int i = 0; i < FLAGS_workers; ++i) {
      absl::Status st = cluster_->StartWorker(
          i,
          {absl::StrCat("--pause_after_pull_ms=", FLAGS_pause_after_pull_ms)},
          "", hosts_.empty() ? nullptr : hosts_[i].get());
      if (!st.ok()) {
        std::printf("round %d: worker %d: %s\n", round, i,
                    st.ToString().c_str());
        return false;
      }
    }
    if (absl::Status st = cluster_->Submit(steps); !st.ok()) {
      std::printf("round %d: submit: %s\n", round, st.ToString().c_str());
      return false;
    }
    std::printf("round %d: %lld steps, %d workers%s\n", round,
                static_cast<long long>(steps), FLAGS_workers,
                hosts_.empty() ? "" : " in test hosts");
    std::fflush(stdout);
    bool ok = true;
    std::exponential_distribution<double> gap(1.0 / FLAGS_every_s);
    while (absl::Now() < stop_faults && !Done()) {
      absl::Time next =
          absl::Now() + absl::Seconds(std::min(3 * FLAGS_every_s, gap(rng_)));
      while (absl::Now() < next && !Done())
        absl::SleepFor(absl::Milliseconds(50));
      if (Done() || absl::Now() >= stop_faults) break;
      if (!OneFault(start)) ok = false;
    }
    // Heal everything and let the job finish.
    HealAll();
    absl::Status st = cluster_->CheckJobGolden(steps, absl::Minutes(15));
    *took = absl::Now() - start;
    std::printf("round %d: %s in %s\n", round,
                st.ok() ? "GOLDEN (every step applied exactly once)"
                        : st.ToString().c_str(),
                absl::FormatDuration(*took).c_str());
    if (!st.ok()) {
      ok = false;
      std::printf("%s\n", cluster_->Logs(4000).c_str());
    }
    std::fflush(stdout);
    cluster_.reset();
    hosts_.clear();
    return ok;
  }

  void Summary() {
    std::printf("\n%-16s %6s %7s %10s %10s %10s %10s\n", "fault", "count",
                "unrecov", "min_ms", "median_ms", "p90_ms", "max_ms");
    for (auto& [name, s] : stats_) {
      std::vector<double>& v = s.recover_ms;
      std::sort(v.begin(), v.end());
      auto at = [&](double q) {
        return v.empty() ? 0.0
                         : v[std::min(v.size() - 1, size_t(q * v.size()))];
      };
      std::printf("%-16s %6d %7d %10.0f %10.0f %10.0f %10.0f\n", name.c_str(),
                  s.count, s.unrecovered, v.empty() ? 0.0 : v.front(), at(0.5),
                  at(0.9), v.empty() ? 0.0 : v.back());
    }
    std::fflush(stdout);
  }

 private:
  bool Done() {
    auto s = cluster_->JobStatus();
    return s.ok() && (s->status().state() == v1::JOB_STATE_SUCCEEDED ||
                      s->status().state() == v1::JOB_STATE_FAILED ||
                      s->status().state() == v1::JOB_STATE_CANCELLED);
  }

  bool HasPublishedCheckpoint() {
    v1::ListCheckpointsRequest req;
    v1::ListCheckpointsResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    return cluster_->coordinator_stub()
               ->ListCheckpoints(&ctx, req, &resp)
               .ok() &&
           !resp.manifests().empty();
  }

  int Uniform(int lo, int hi) {
    return std::uniform_int_distribution<int>(lo, hi)(rng_);
  }
  absl::Duration Ms(int lo, int hi) {
    return absl::Milliseconds(Uniform(lo, hi));
  }

  // Brings every process back: SIGCONT to all, restarts the dead, heals
  // every partition.
  void HealAll() {
    for (auto& h : hosts_) (void)h->Heal();
    auto revive = [&](Proc& p) {
      if (p.process == nullptr) return;
      (void)p.process->Signal(SIGCONT);
      if (!p.process->Running()) {
        absl::Status st = cluster_->Restart(p);
        if (!st.ok()) {
          std::printf("restart %s %d: %s\n", p.role.c_str(), p.index,
                      st.ToString().c_str());
        }
      }
    };
    revive(cluster_->coordinator());
    for (int i = 0; i < cluster_->num_ps(); ++i) revive(cluster_->ps(i));
    for (int i = 0; i < cluster_->num_workers(); ++i) {
      revive(cluster_->worker(i));
    }
  }

  // Injects one fault, heals it, waits for progress. False if the job did
  // not move again within 3 minutes.
  bool OneFault(absl::Time round_start) {
    std::vector<std::string> kinds = {
        "kill-worker", "term-worker", "stop-worker", "kill-coord",
        "stop-coord",  "stop-ps",     "term-ps",     "kill-ps"};
    if (!hosts_.empty()) {
      kinds.push_back("part-worker-ps");
      kinds.push_back("part-worker-co");
    }
    std::string kind = kinds[Uniform(0, kinds.size() - 1)];
    const bool ps_fault = kind == "kill-ps" || kind == "term-ps";
    if (ps_fault && !HasPublishedCheckpoint()) kind = "kill-worker";
    const int w = Uniform(0, cluster_->num_workers() - 1);
    const int s = Uniform(0, cluster_->num_ps() - 1);
    Proc& worker = cluster_->worker(w);
    Proc& ps = cluster_->ps(s);
    Proc& co = cluster_->coordinator();
    std::string what = kind;
    const absl::Time t0 = absl::Now();
    absl::Status st;
    if (kind == "kill-worker") {
      what = absl::StrCat(kind, " ", w);
      st = cluster_->Signal(worker, SIGKILL);
      absl::SleepFor(Ms(0, 2000));  // the supervisor's restart delay
      if (st.ok()) st = cluster_->Restart(worker);
    } else if (kind == "term-worker") {
      what = absl::StrCat(kind, " ", w);
      st = worker.process->Signal(SIGTERM);
      if (st.ok()) st = worker.process->Wait(absl::Seconds(60)).status();
      if (st.ok()) st = cluster_->Restart(worker);
    } else if (kind == "stop-worker") {
      absl::Duration d = Ms(500, 4000);
      what = absl::StrCat(kind, " ", w, " ", absl::FormatDuration(d));
      st = worker.process->Signal(SIGSTOP);
      absl::SleepFor(d);  // the fault's length
      (void)worker.process->Signal(SIGCONT);
    } else if (kind == "part-worker-ps") {
      absl::Duration d = Ms(1000, 10000);
      bool ack_only = Uniform(0, 1) == 1;
      what = absl::StrCat(kind, " ", w, ack_only ? " acks" : " both", " ",
                          absl::FormatDuration(d));
      for (int i = 0; i < cluster_->num_ps() && st.ok(); ++i) {
        st = hosts_[w]->Partition(cluster_->ps(i).ports(), !ack_only, true);
      }
      absl::SleepFor(d);  // the fault's length
      absl::Status healed = hosts_[w]->Heal();
      if (st.ok()) st = healed;
    } else if (kind == "part-worker-co") {
      absl::Duration d = Ms(1000, 5000);
      what = absl::StrCat(kind, " ", w, " ", absl::FormatDuration(d));
      st = hosts_[w]->Partition(co.ports());
      absl::SleepFor(d);  // the fault's length
      absl::Status healed = hosts_[w]->Heal();
      if (st.ok()) st = healed;
    } else if (kind == "kill-ps") {
      what = absl::StrCat(kind, " ", s);
      st = cluster_->Signal(ps, SIGKILL);
      if (st.ok()) st = cluster_->Restart(ps);
    } else if (kind == "term-ps") {
      what = absl::StrCat(kind, " ", s);
      st = ps.process->Signal(SIGTERM);
      if (st.ok()) {
        auto code = ps.process->Wait(absl::Seconds(30));
        st = code.status();
        if (st.ok() && *code != 0) {
          st = absl::InternalError(
              absl::StrCat("PS exited ", *code, " after SIGTERM, want 0"));
        }
      }
      if (ps.process != nullptr && !ps.process->Running()) {
        absl::Status r = cluster_->Restart(ps);
        if (st.ok()) st = r;
      }
    } else if (kind == "stop-ps") {
      absl::Duration d = Ms(500, 3000);
      what = absl::StrCat(kind, " ", s, " ", absl::FormatDuration(d));
      st = ps.process->Signal(SIGSTOP);
      absl::SleepFor(d);  // the fault's length
      (void)ps.process->Signal(SIGCONT);
    } else if (kind == "kill-coord") {
      st = cluster_->Signal(co, SIGKILL);
      if (st.ok()) st = cluster_->Restart(co);
    } else if (kind == "stop-coord") {
      absl::Duration d = Ms(500, 3000);
      what = absl::StrCat(kind, " ", absl::FormatDuration(d));
      st = co.process->Signal(SIGSTOP);
      absl::SleepFor(d);  // the fault's length
      (void)co.process->Signal(SIGCONT);
    }
    const absl::Time healed = absl::Now();
    // Recovered: the succeeded count moves (up) between two polls.
    bool recovered = false;
    uint64_t prev = cluster_->Succeeded();
    while (absl::Now() < healed + absl::Minutes(3)) {
      absl::SleepFor(absl::Milliseconds(50));
      uint64_t now = cluster_->Succeeded();
      if (now > prev || Done()) {
        recovered = true;
        break;
      }
      prev = now;
    }
    const double ms = absl::ToDoubleMilliseconds(absl::Now() - healed);
    FaultStats& fs = stats_[kind];
    ++fs.count;
    if (recovered) {
      fs.recover_ms.push_back(ms);
    } else {
      ++fs.unrecovered;
    }
    std::printf("t=%7.1fs %-36s fault %6.0f ms, recovered in %s%s\n",
                absl::ToDoubleSeconds(t0 - round_start), what.c_str(),
                absl::ToDoubleMilliseconds(healed - t0),
                recovered ? absl::StrFormat("%.0f ms", ms).c_str() : "NEVER",
                st.ok() ? "" : absl::StrCat(" (", st.ToString(), ")").c_str());
    std::fflush(stdout);
    if (!recovered) std::printf("%s\n", cluster_->Logs(3000).c_str());
    return recovered && st.ok();
  }

  std::mt19937_64 rng_;
  std::vector<std::unique_ptr<NetHost>> hosts_;
  std::unique_ptr<FaultCluster> cluster_;
  std::map<std::string, FaultStats> stats_;
};

}  // namespace
}  // namespace plexus::fault

int main(int argc, char** argv) {
  plexus::InitProcess(&argc, &argv,
                      "nemesis: random faults against golden jobs.");
  signal(SIGPIPE, SIG_IGN);
  plexus::fault::Nemesis nemesis(FLAGS_seed);
  const absl::Time start = absl::Now();
  const absl::Time stop = start + absl::Seconds(FLAGS_minutes * 60);
  int64_t steps = FLAGS_first_steps;
  int rounds = 0, golden = 0;
  while (absl::Now() < stop) {
    ++rounds;
    absl::Duration took;
    if (nemesis.Round(rounds, steps, stop, &took)) ++golden;
    // Size the next job to last about a round.
    double scale =
        absl::ToDoubleSeconds(absl::Seconds(FLAGS_round_minutes * 60)) /
        std::max(1.0, absl::ToDoubleSeconds(took));
    steps =
        std::clamp<int64_t>(static_cast<int64_t>(steps * scale), 200, 200000);
  }
  nemesis.Summary();
  std::printf("\nnemesis: %d round(s), %d golden, %s of faults\n", rounds,
              golden, absl::FormatDuration(absl::Now() - start).c_str());
  return rounds == golden ? 0 : 1;
}
