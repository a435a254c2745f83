#include "coordinator/checkpointing/checkpointer.h"

#include <glog/logging.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/failpoint.h"
#include "common/status.h"

namespace plexus::coordinator::checkpointing {
namespace {

// Tries (Polls and Takes) to hear a part of the checkpoint in doubt from a
// shard that answers probes but not its CommitCheckpoint before the
// checkpoint is abandoned, so that dispatch is not paused for ever.
constexpr int kMaxInDoubtTries = 50;

}  // namespace

Checkpointer::Checkpointer(CheckpointerOptions options, ShardDriver* shards,
                           ManifestStore* manifests,
                           scheduling::Scheduler* scheduler, Clock* clock)
    : options_(options),
      shards_(shards),
      manifests_(manifests),
      scheduler_(scheduler),
      clock_(clock),
      incarnations_(static_cast<size_t>(shards->num_shards()), 0),
      last_periodic_(clock->Now()) {}

bool Checkpointer::recovering() const {
  absl::MutexLock lock(&mu_);
  return recovering_;
}

std::pair<std::string, uint64_t> Checkpointer::JobAndHighestStep(
    const std::string& job_id) const {
  std::string job = job_id;
  if (job.empty()) {
    std::vector<std::string> running = scheduler_->RunningJobIds();
    if (!running.empty()) {
      job = running.front();
    } else if (auto newest = scheduler_->GetJobStatus(""); newest.ok()) {
      job = newest->job_id;
    }
  }
  uint64_t highest = 0;
  scheduling::SchedulerSnapshot snap = scheduler_->Snapshot();
  for (const auto& j : snap.jobs) {
    // Without a job, cut at the newest state: every job's steps count.
    if (!job.empty() && j.spec.job_id != job) continue;
    for (const auto& c : j.closures) {
      if (c.attempts > 0) highest = std::max(highest, c.step_id);
    }
  }
  return {job, highest};
}

void Checkpointer::Abort(uint64_t id, int shards) {
  for (int s = 0; s < shards; ++s) {
    absl::Status st = shards_->Finalize(s, id, /*published=*/false, 0, "");
    if (!st.ok()) {
      // The shard deletes it anyway when it next starts (no manifest).
      LOG(WARNING) << "checkpoint " << id << ": abort on shard " << s << ": "
                   << st;
    }
  }
}

void Checkpointer::Stop() { stopped_.store(true); }

absl::StatusOr<TakeResult> Checkpointer::Take(const std::string& job_id,
                                              uint64_t step_id) {
  if (stopped_.load()) {
    return absl::UnavailableError("the coordinator is shutting down");
  }
  if (recovering()) {
    return absl::UnavailableError(
        "a PS shard is being recovered; checkpoint again once it is back");
  }
  absl::MutexLock lock(&op_mu_);
  return TakeLocked(job_id, step_id);
}

absl::StatusOr<TakeResult> Checkpointer::TakeLocked(const std::string& job_id,
                                                    uint64_t step_id) {
  const int n = shards_->num_shards();
  if (n == 0) {
    return absl::FailedPreconditionError(
        "the coordinator knows no PS shard to checkpoint (--ps_shards)");
  }
  // A checkpoint in doubt is settled first: publishing it after a newer
  // one would be pointless, and its shards still hold its parts.
  PLEXUS_RETURN_IF_ERROR(ResolveInDoubtLocked(),
                         "an earlier checkpoint is still in doubt");
  const absl::Time started = clock_->Now();
  const absl::Time deadline = started + options_.timeout;
  // Ids are never reused, also for checkpoints that end up aborted (the
  // shards remember those).
  PLEXUS_ASSIGN_OR_RETURN(const uint64_t id, manifests_->NextId(),
                          "checkpoint id");
  // 1. Pick C with dispatch paused, so no step past it slips out meanwhile.
  scheduler_->Pause("checkpoint cut");
  auto [job, highest] = JobAndHighestStep(job_id);
  if (!job_id.empty()) {
    auto st = scheduler_->GetJobStatus(job_id);
    if (!st.ok()) {
      scheduler_->Resume();
      return st.status();
    }
  }
  const uint64_t c = step_id == 0 ? highest : step_id;
  if (c < highest) {
    scheduler_->Resume();
    return absl::FailedPreconditionError(
        absl::StrCat("step ", c, " is already past: step ", highest,
                     " was dispatched; checkpoint at ", highest, " or later"));
  }
  scheduler_->SetDispatchLimit(c);
  scheduler_->Resume();
  auto release = [&] { scheduler_->SetDispatchLimit(std::nullopt); };

  // 2. Wait for every step <= C to be done and nothing to run.
  if (!job.empty()) {
    absl::Time next_probe = clock_->Now();
    for (;;) {
      auto st = scheduler_->GetJobStatus(job);
      if (!st.ok()) {
        release();
        return st.status();
      }
      const bool done =
          st->state != scheduling::JobState::kRunning ||
          (st->closures_running == 0 && st->completed_through_step_id >= c);
      if (done) break;
      if (stopped_.load()) {
        release();
        return absl::UnavailableError(absl::StrCat(
            "checkpoint at step ", c, ": the coordinator is shutting down"));
      }
      if (clock_->Now() > deadline) {
        release();
        return absl::DeadlineExceededError(absl::StrCat(
            "checkpoint at step ", c, ": steps up to it did not finish within ",
            absl::FormatDuration(options_.timeout), " (done through step ",
            st->completed_through_step_id, ")"));
      }
      // A lost shard would keep steps <= C from ever finishing: give up
      // and let Poll recover it.
      if (clock_->Now() >= next_probe) {
        next_probe = clock_->Now() + absl::Milliseconds(250);
        for (int s = 0; s < n; ++s) {
          absl::StatusOr<ShardProbe> inc = shards_->Probe(s);
          if (!inc.ok()) {
            release();
            return Annotate(inc.status(),
                            absl::StrCat("checkpoint at step ", c, ": shard ",
                                         s, " does not answer"));
          }
          // A shard that restarted answers, but the steps it lost keep
          // failing until it is restored, which Poll does on this thread:
          // give up for it, as for a shard that does not answer.
          if (inc->awaiting_restore ||
              (incarnations_[s] != 0 && incarnations_[s] != inc->incarnation)) {
            release();
            return absl::UnavailableError(
                absl::StrCat("checkpoint at step ", c, ": shard ", s,
                             " restarted (it must be restored first)"));
          }
        }
      }
      // The scheduler has no wait-for-progress call; a short poll costs
      // nothing next to a checkpoint.
      absl::SleepFor(absl::Milliseconds(2));
    }
  }

  // 3. Cut on every shard.
  uint64_t base = 0;
  {
    auto published = manifests_->List();
    if (published.ok() && !published->empty()) {
      base = published->front().checkpoint_id;
    }
  }
  Manifest m;
  m.checkpoint_id = id;
  m.step_id = c;
  m.job_id = job;
  m.coordinator_epoch = options_.coordinator_epoch;
  m.base_checkpoint_id = base;
  m.started_unix_ms = absl::ToUnixMillis(started);
  absl::Duration pause;
  for (int s = 0; s < n; ++s) {
    PrepareArgs a{
        .checkpoint_id = id, .step_id = c, .base_checkpoint_id = base};
    absl::StatusOr<absl::Duration> p = shards_->Prepare(s, a);
    if (!p.ok()) {
      release();
      Abort(id, s + 1);
      return Annotate(p.status(),
                      absl::StrCat("checkpoint ", id, ": shard ", s, " cut"));
    }
    pause = std::max(pause, *p);
  }
  release();
  LOG(INFO) << "checkpoint " << id << " at step " << c << " (job '" << job
            << "'): cut on " << n << " shards, pause "
            << absl::FormatDuration(pause);

  // 4. Wait for the writes. A shard that does not answer may have
  // committed before it went: the checkpoint is then in doubt, not
  // aborted (see the top of checkpointer.h).
  int unheard = -1;
  for (int s = 0; s < n; ++s) {
    absl::StatusOr<ShardPart> part = shards_->Commit(
        s, id, std::max(absl::Seconds(1), deadline - clock_->Now()));
    if (!part.ok() && absl::IsUnavailable(part.status())) {
      LOG(WARNING) << "checkpoint " << id << ": shard " << s
                   << " did not answer its commit (" << part.status()
                   << "): in doubt until it answers again";
      unheard = s;
      ShardPart missing;
      missing.shard_index = static_cast<uint32_t>(s);
      m.shards.push_back(std::move(missing));
      continue;
    }
    if (!part.ok()) {
      Abort(id, n);
      return Annotate(part.status(),
                      absl::StrCat("checkpoint ", id, ": shard ", s, " write"));
    }
    part->shard_index = static_cast<uint32_t>(s);
    m.shards.push_back(std::move(*part));
  }
  if (unheard >= 0) {
    in_doubt_ = m;
    in_doubt_tries_ = 0;
    return absl::UnavailableError(absl::StrCat(
        "checkpoint ", id, " at step ", c, ": shard ", unheard,
        " did not answer its commit; the checkpoint is published if the "
        "shard committed its part, else abandoned, once it answers again"));
  }

  // 5. and 6. Publish (the manifest makes it real), finalize, retention.
  PLEXUS_RETURN_IF_ERROR(PublishLocked(&m));
  LOG(INFO) << "checkpoint " << id << " at step " << c << " published in "
            << absl::FormatDuration(clock_->Now() - started);
  last_periodic_ = clock_->Now();
  last_periodic_step_ = std::max(last_periodic_step_, c);
  return TakeResult{std::move(m), pause};
}

absl::Status Checkpointer::PublishLocked(Manifest* manifest) {
  const int n = shards_->num_shards();
  const uint64_t id = manifest->checkpoint_id;
  absl::Status fp = PLEXUS_FAILPOINT("coordinator.checkpoint.before_manifest");
  if (fp.ok() && options_.save_state) {
    fp = Annotate(options_.save_state(), "saving the coordinator's state");
  }
  if (!fp.ok()) {
    Abort(id, n);
    return fp;
  }
  Manifest& m = *manifest;
  m.published_unix_ms = absl::ToUnixMillis(clock_->Now());
  absl::Status pub = manifests_->Publish(m);
  if (!pub.ok()) {
    Abort(id, n);
    return Annotate(pub, absl::StrCat("checkpoint ", id, ": manifest"));
  }
  PLEXUS_RETURN_IF_ERROR(PLEXUS_FAILPOINT(
      "coordinator.checkpoint.after_manifest_before_finalize"));
  for (int s = 0; s < n; ++s) {
    absl::Status st = shards_->Finalize(s, id, true, options_.keep, m.job_id);
    if (!st.ok()) {
      // Published anyway; the shard learns at its next Finalize.
      LOG(WARNING) << "checkpoint " << id << ": finalize on shard " << s << ": "
                   << st;
    }
  }
  if (options_.keep > 0) {
    auto all = manifests_->List();
    if (all.ok()) {
      for (size_t i = options_.keep; i < all->size(); ++i) {
        manifests_->Remove((*all)[i].checkpoint_id).IgnoreError();
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Checkpointer::ResolveInDoubtLocked() {
  if (!in_doubt_.has_value()) return absl::OkStatus();
  const int n = shards_->num_shards();
  Manifest& m = *in_doubt_;
  const uint64_t id = m.checkpoint_id;
  for (int s = 0; s < n; ++s) {
    if (!m.shards[s].directory.empty()) continue;
    // A committed part is returned at once (also by a restarted shard,
    // which found it on disk).
    absl::StatusOr<ShardPart> part =
        shards_->Commit(s, id, options_.probe_timeout);
    if (!part.ok() && absl::IsUnavailable(part.status()) &&
        ++in_doubt_tries_ < kMaxInDoubtTries) {
      return Annotate(part.status(),
                      absl::StrCat("checkpoint ", id, " in doubt: shard ", s));
    }
    if (!part.ok()) {
      LOG(WARNING) << "checkpoint " << id << " in doubt: shard " << s
                   << " has no committed part (" << part.status()
                   << "): abandoned";
      in_doubt_.reset();
      Abort(id, n);
      return absl::OkStatus();
    }
    part->shard_index = static_cast<uint32_t>(s);
    m.shards[s] = std::move(*part);
  }
  Manifest ready = std::move(m);
  in_doubt_.reset();
  absl::Status st = PublishLocked(&ready);
  if (!st.ok()) {
    LOG(WARNING) << "checkpoint " << id << " in doubt: not published: " << st;
    return absl::OkStatus();
  }
  LOG(INFO) << "checkpoint " << id << " at step " << ready.step_id
            << " (in doubt: a shard went away after its commit) published";
  last_periodic_step_ = std::max(last_periodic_step_, ready.step_id);
  return absl::OkStatus();
}

void Checkpointer::AbandonUnpublishedLocked() {
  auto published = manifests_->List();
  if (!published.ok()) return;
  const uint64_t newest =
      published->empty() ? 0 : published->front().checkpoint_id;
  for (int s = 0; s < shards_->num_shards(); ++s) {
    // Newest first: each round drops one, until the shard's newest is
    // published (or it holds none). Bounded: a shard holds few.
    for (int round = 0; round < 16; ++round) {
      absl::StatusOr<ShardProbe> probe = shards_->Probe(s);
      if (!probe.ok() || probe->last_checkpoint_id <= newest) break;
      const uint64_t id = probe->last_checkpoint_id;
      LOG(WARNING) << "shard " << s << " holds checkpoint " << id
                   << ", which was never published: abandoning it there";
      absl::Status st = shards_->Finalize(s, id, /*published=*/false, 0, "");
      if (!st.ok()) {
        LOG(WARNING) << "checkpoint " << id << ": abandon on shard " << s
                     << ": " << st;
        break;
      }
    }
  }
}

absl::StatusOr<RestoreOutcome> Checkpointer::Restore(uint64_t checkpoint_id,
                                                     bool fall_back) {
  absl::MutexLock lock(&op_mu_);
  return RestoreLocked(checkpoint_id, fall_back);
}

absl::StatusOr<RestoreOutcome> Checkpointer::RestoreLocked(
    uint64_t checkpoint_id, bool fall_back) {
  const int n = shards_->num_shards();
  if (n == 0) {
    return absl::FailedPreconditionError(
        "the coordinator knows no PS shard to restore (--ps_shards)");
  }
  const absl::Time started = clock_->Now();
  PLEXUS_ASSIGN_OR_RETURN(std::vector<Manifest> all, manifests_->List());
  size_t first = 0;
  if (checkpoint_id != 0) {
    while (first < all.size() && all[first].checkpoint_id != checkpoint_id) {
      ++first;
    }
  }
  if (first >= all.size()) {
    return absl::NotFoundError(
        checkpoint_id == 0
            ? std::string("no published checkpoint to restore")
            : absl::StrCat("no published checkpoint ", checkpoint_id));
  }
  scheduler_->Pause("PS restore");
  RestoreOutcome out;
  absl::Status last;
  for (size_t i = first; i < all.size(); ++i) {
    const Manifest& m = all[i];
    if (static_cast<int>(m.shards.size()) != n) {
      last = absl::FailedPreconditionError(
          absl::StrCat("checkpoint ", m.checkpoint_id, " has ", m.shards.size(),
                       " shards, the cluster ", n));
      out.skipped.push_back(last);
      if (!fall_back) break;
      continue;
    }
    last = absl::OkStatus();
    for (int s = 0; s < n && last.ok(); ++s) {
      last = shards_->Restore(s, m);
      if (!last.ok()) {
        last = Annotate(last, absl::StrCat("shard ", s));
      }
    }
    if (last.ok()) {
      out.manifest = m;
      break;
    }
    LOG(WARNING) << "restore of checkpoint " << m.checkpoint_id
                 << " failed: " << last;
    if (last.code() != absl::StatusCode::kDataLoss || !fall_back) break;
    out.skipped.push_back(last);
  }
  if (!last.ok()) {
    // Dispatch stays paused: the shards hold no consistent state.
    return last;
  }
  if (!out.manifest.job_id.empty()) {
    auto requeued = scheduler_->RequeueStepsAfter(out.manifest.job_id,
                                                  out.manifest.step_id);
    if (requeued.ok()) {
      LOG(INFO) << "restore: " << *requeued << " closures of job '"
                << out.manifest.job_id << "' after step "
                << out.manifest.step_id << " run again";
    } else {
      LOG(WARNING) << "restore: re-queue of job '" << out.manifest.job_id
                   << "': " << requeued.status();
    }
  }
  scheduler_->Resume();
  out.duration = clock_->Now() - started;
  LOG(INFO) << "restored checkpoint " << out.manifest.checkpoint_id << " (step "
            << out.manifest.step_id << ") on " << n << " shards in "
            << absl::FormatDuration(out.duration);
  return out;
}

absl::StatusOr<std::vector<Manifest>> Checkpointer::List(
    uint64_t checkpoint_id) {
  PLEXUS_ASSIGN_OR_RETURN(std::vector<Manifest> all, manifests_->List());
  if (checkpoint_id == 0) return all;
  for (Manifest& m : all) {
    if (m.checkpoint_id == checkpoint_id) return std::vector<Manifest>{m};
  }
  return absl::NotFoundError(
      absl::StrCat("no published checkpoint ", checkpoint_id));
}

void Checkpointer::Poll() {
  if (stopped_.load()) return;
  absl::MutexLock lock(&op_mu_);
  const int n = shards_->num_shards();
  if (n == 0) return;
  // Probe every shard.
  bool all_up = true;
  bool restarted = false;
  std::vector<uint64_t> seen(n, 0);
  for (int s = 0; s < n; ++s) {
    absl::StatusOr<ShardProbe> probe = shards_->Probe(s);
    if (!probe.ok()) {
      all_up = false;
      continue;
    }
    seen[s] = probe->incarnation;
    if (probe->awaiting_restore ||
        (incarnations_[s] != 0 && incarnations_[s] != probe->incarnation)) {
      restarted = true;
    }
  }
  bool recovering;
  {
    absl::MutexLock l(&mu_);
    recovering = recovering_;
  }
  if (!all_up) {
    if (!recovering) {
      LOG(WARNING) << "a PS shard does not answer: dispatch paused until it "
                      "is back";
      scheduler_->Pause("PS shard down");
      absl::MutexLock l(&mu_);
      recovering_ = true;
    }
    // A shard that comes back with its old incarnation had a blip and
    // holds its state; one that restarted has a new incarnation (or says it
    // awaits a restore).
    return;
  }
  // Every shard answers: a checkpoint in doubt can be settled now (before a
  // restore, which then uses it if it got published).
  if (absl::Status st = ResolveInDoubtLocked(); !st.ok()) {
    LOG_EVERY_N(WARNING, 10) << st;
    if (restarted) {
      // The restarted shard's part may be what makes it publishable:
      // settle it first, with dispatch paused, at a later Poll.
      if (!recovering) scheduler_->Pause("checkpoint in doubt");
      absl::MutexLock l(&mu_);
      recovering_ = true;
      return;
    }
  }
  bool resumed = false;
  if (restarted) {
    // Unpublished checkpoints never count: a restarted shard must not wait
    // for one, nor keep it.
    AbandonUnpublishedLocked();
    auto published = manifests_->List();
    if (published.ok() && !published->empty()) {
      LOG(WARNING) << "a PS shard restarted: restoring every shard to "
                      "checkpoint "
                   << published->front().checkpoint_id;
      {
        absl::MutexLock l(&mu_);
        recovering_ = true;
      }
      // Pauses dispatch, re-queues the steps after C and resumes.
      absl::StatusOr<RestoreOutcome> r = RestoreLocked(0, /*fall_back=*/true);
      if (!r.ok()) {
        // Stay paused and try again at the next Poll.
        LOG(ERROR) << "recovery restore failed: " << r.status();
        return;
      }
      resumed = true;
    } else {
      LOG_EVERY_N(ERROR, 50)
          << "a PS shard restarted but no checkpoint exists: its "
             "state is lost; training resumes on what it holds";
    }
  }
  incarnations_ = seen;
  {
    absl::MutexLock l(&mu_);
    if (recovering_ && !resumed) scheduler_->Resume();
    recovering_ = false;
  }
  // Periodic checkpoints.
  if (options_.every_steps == 0 && options_.every <= absl::ZeroDuration()) {
    return;
  }
  auto [job, highest] = JobAndHighestStep("");
  if (job.empty()) return;
  auto status = scheduler_->GetJobStatus(job);
  if (!status.ok()) return;
  const bool by_steps = options_.every_steps > 0 &&
                        status->completed_through_step_id >=
                            last_periodic_step_ + options_.every_steps;
  const bool by_time = options_.every > absl::ZeroDuration() &&
                       clock_->Now() - last_periodic_ >= options_.every &&
                       status->completed_through_step_id > last_periodic_step_;
  if (!by_steps && !by_time) return;
  absl::StatusOr<TakeResult> r = TakeLocked(job, 0);
  if (!r.ok()) {
    // Try again after the next interval, not at every Poll.
    LOG(WARNING) << "periodic checkpoint failed: " << r.status();
    last_periodic_ = clock_->Now();
    last_periodic_step_ =
        std::max(last_periodic_step_, status->completed_through_step_id);
  }
}

}  // namespace plexus::coordinator::checkpointing
