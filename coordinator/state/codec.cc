#include "coordinator/state/codec.h"

#include <cstdint>
#include <limits>
#include <utility>
#include <variant>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace plexus::coordinator::state {
namespace {

using membership::MembershipSnapshot;
using membership::ProcessRecord;
using scheduling::ClosureRecord;
using scheduling::ClosureSpec;
using scheduling::JobRecord;
using scheduling::SchedulerSnapshot;
using scheduling::StepLoop;

constexpr int64_t kInfNeg = std::numeric_limits<int64_t>::min();
constexpr int64_t kInfPos = std::numeric_limits<int64_t>::max();

class Writer {
 public:
  void U64(uint64_t v) {
    while (v >= 0x80) {
      out_.push_back(static_cast<char>(v | 0x80));
      v >>= 7;
    }
    out_.push_back(static_cast<char>(v));
  }
  void I64(int64_t v) { U64(static_cast<uint64_t>(v)); }
  void Bool(bool b) { U64(b ? 1 : 0); }
  void Str(absl::string_view s) {
    U64(s.size());
    out_.append(s.data(), s.size());
  }
  void Time(absl::Time t) {
    if (t == absl::InfinitePast()) return I64(kInfNeg);
    if (t == absl::InfiniteFuture()) return I64(kInfPos);
    I64(absl::ToUnixNanos(t));
  }
  void Duration(absl::Duration d) {
    if (d == absl::InfiniteDuration()) return I64(kInfPos);
    if (d == -absl::InfiniteDuration()) return I64(kInfNeg);
    I64(absl::ToInt64Nanoseconds(d));
  }
  void Status(const absl::Status& s) {
    U64(static_cast<uint64_t>(s.code()));
    Str(s.message());
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  Reader(absl::string_view in, absl::string_view what) : in_(in), what_(what) {}

  absl::Status Error(absl::string_view detail) const {
    return absl::DataLossError(
        absl::StrCat("coordinator state (", what_, ") is damaged: ", detail));
  }
  absl::StatusOr<uint64_t> U64() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (in_.empty()) return Error("truncated number");
      uint8_t b = static_cast<uint8_t>(in_[0]);
      in_.remove_prefix(1);
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if ((b & 0x80) == 0) return v;
    }
    return Error("number too long");
  }
  absl::StatusOr<uint32_t> U32() {
    PLEXUS_ASSIGN_OR_RETURN(uint64_t v, U64());
    if (v > std::numeric_limits<uint32_t>::max()) return Error("bad count");
    return static_cast<uint32_t>(v);
  }
  absl::StatusOr<int64_t> I64() {
    PLEXUS_ASSIGN_OR_RETURN(uint64_t v, U64());
    return static_cast<int64_t>(v);
  }
  absl::StatusOr<bool> Bool() {
    PLEXUS_ASSIGN_OR_RETURN(uint64_t v, U64());
    if (v > 1) return Error("bad boolean");
    return v == 1;
  }
  absl::StatusOr<std::string> Str() {
    PLEXUS_ASSIGN_OR_RETURN(uint64_t n, U64());
    if (n > in_.size()) return Error("truncated string");
    std::string s(in_.substr(0, n));
    in_.remove_prefix(n);
    return s;
  }
  absl::StatusOr<absl::Time> Time() {
    PLEXUS_ASSIGN_OR_RETURN(int64_t v, I64());
    if (v == kInfNeg) return absl::InfinitePast();
    if (v == kInfPos) return absl::InfiniteFuture();
    return absl::FromUnixNanos(v);
  }
  absl::StatusOr<absl::Duration> Duration() {
    PLEXUS_ASSIGN_OR_RETURN(int64_t v, I64());
    if (v == kInfNeg) return -absl::InfiniteDuration();
    if (v == kInfPos) return absl::InfiniteDuration();
    return absl::Nanoseconds(v);
  }
  absl::StatusOr<absl::Status> Status() {
    PLEXUS_ASSIGN_OR_RETURN(uint64_t code, U64());
    if (code > static_cast<uint64_t>(absl::StatusCode::kUnauthenticated)) {
      return Error("bad status code");
    }
    PLEXUS_ASSIGN_OR_RETURN(std::string message, Str());
    return absl::Status(static_cast<absl::StatusCode>(code), message);
  }
  // A count of following items, each at least one byte long.
  absl::StatusOr<uint64_t> Count() {
    PLEXUS_ASSIGN_OR_RETURN(uint64_t n, U64());
    if (n > in_.size()) return Error("bad count");
    return n;
  }
  absl::Status Version() {
    PLEXUS_ASSIGN_OR_RETURN(uint64_t v, U64());
    if (v != kStateFormatVersion) {
      return Error(absl::StrCat("unknown format version ", v));
    }
    return absl::OkStatus();
  }
  absl::Status Done() const {
    return in_.empty() ? absl::OkStatus() : Error("trailing bytes");
  }

 private:
  absl::string_view in_;
  absl::string_view what_;
};

}  // namespace

std::string EncodeMembership(const MembershipSnapshot& s) {
  Writer w;
  w.U64(kStateFormatVersion);
  w.U64(s.coordinator_epoch);
  w.U64(s.next_worker_id);
  w.U64(s.processes.size());
  for (const ProcessRecord& p : s.processes) {
    w.U64(p.worker_id);
    w.U64(p.incarnation);
    w.U64(static_cast<uint64_t>(p.role));
    w.I64(p.task_index);
    w.Str(p.address);
    w.Str(p.hostname);
    w.I64(p.pid);
    w.U64(p.step_functions.size());
    for (const std::string& f : p.step_functions) w.Str(f);
    w.Bool(p.has_gpu);
    w.U64(static_cast<uint64_t>(p.state));
    w.U64(p.restarts);
    w.Time(p.registered_at);
    w.Str(p.reason);
  }
  return w.Take();
}

absl::StatusOr<MembershipSnapshot> DecodeMembership(absl::string_view bytes) {
  Reader r(bytes, "membership");
  PLEXUS_RETURN_IF_ERROR(r.Version());
  MembershipSnapshot s;
  PLEXUS_ASSIGN_OR_RETURN(s.coordinator_epoch, r.U64());
  PLEXUS_ASSIGN_OR_RETURN(s.next_worker_id, r.U64());
  PLEXUS_ASSIGN_OR_RETURN(uint64_t n, r.Count());
  for (uint64_t i = 0; i < n; ++i) {
    ProcessRecord p;
    PLEXUS_ASSIGN_OR_RETURN(p.worker_id, r.U64());
    PLEXUS_ASSIGN_OR_RETURN(p.incarnation, r.U64());
    PLEXUS_ASSIGN_OR_RETURN(uint64_t role, r.U64());
    if (role > static_cast<uint64_t>(membership::Role::kPs)) {
      return r.Error("bad role");
    }
    p.role = static_cast<membership::Role>(role);
    PLEXUS_ASSIGN_OR_RETURN(int64_t task_index, r.I64());
    if (task_index < -1 || task_index > std::numeric_limits<int>::max()) {
      return r.Error("bad task index");
    }
    p.task_index = static_cast<int>(task_index);
    PLEXUS_ASSIGN_OR_RETURN(p.address, r.Str());
    PLEXUS_ASSIGN_OR_RETURN(p.hostname, r.Str());
    PLEXUS_ASSIGN_OR_RETURN(p.pid, r.I64());
    PLEXUS_ASSIGN_OR_RETURN(uint64_t nf, r.Count());
    for (uint64_t f = 0; f < nf; ++f) {
      PLEXUS_ASSIGN_OR_RETURN(std::string fn, r.Str());
      p.step_functions.push_back(std::move(fn));
    }
    PLEXUS_ASSIGN_OR_RETURN(p.has_gpu, r.Bool());
    PLEXUS_ASSIGN_OR_RETURN(uint64_t state, r.U64());
    if (state > static_cast<uint64_t>(membership::ProcessState::kLeft)) {
      return r.Error("bad process state");
    }
    p.state = static_cast<membership::ProcessState>(state);
    PLEXUS_ASSIGN_OR_RETURN(p.restarts, r.U32());
    PLEXUS_ASSIGN_OR_RETURN(p.registered_at, r.Time());
    PLEXUS_ASSIGN_OR_RETURN(p.reason, r.Str());
    s.processes.push_back(std::move(p));
  }
  PLEXUS_RETURN_IF_ERROR(r.Done());
  return s;
}

namespace {

constexpr uint64_t kWorkNone = 0;
constexpr uint64_t kWorkLoop = 1;
constexpr uint64_t kWorkList = 2;

bool ValidJobState(uint64_t v) { return v == 1 || (v >= 3 && v <= 5); }
bool ValidClosureState(uint64_t v) { return v >= 1 && v <= 5; }

}  // namespace

std::string EncodeScheduler(const SchedulerSnapshot& s) {
  Writer w;
  w.U64(kStateFormatVersion);
  w.U64(s.next_closure_id);
  w.U64(s.next_job_number);
  w.U64(s.jobs.size());
  for (const JobRecord& j : s.jobs) {
    w.Str(j.spec.job_id);
    if (const auto* loop = std::get_if<StepLoop>(&j.spec.work)) {
      w.U64(kWorkLoop);
      w.Str(loop->function_name);
      w.U64(loop->num_steps);
      w.U64(loop->first_step_id);
      w.Str(loop->args);
      w.U64(loop->replicas_per_step);
    } else if (const auto* list =
                   std::get_if<std::vector<ClosureSpec>>(&j.spec.work)) {
      w.U64(kWorkList);
      w.U64(list->size());
      for (const ClosureSpec& c : *list) {
        w.Str(c.function_name);
        w.Str(c.args);
        w.U64(c.step_id);
      }
    } else {
      w.U64(kWorkNone);
    }
    w.Duration(j.spec.no_worker_timeout);
    w.U64(j.spec.max_attempts);
    w.Duration(j.spec.closure_timeout);
    w.U64(static_cast<uint64_t>(j.state));
    w.Status(j.error);
    w.U64(j.requeues);
    w.U64(j.max_step_id);
    w.Time(j.submitted_at);
    w.Time(j.finished_at);
    w.U64(j.closures.size());
    for (const ClosureRecord& c : j.closures) {
      w.U64(c.closure_id);
      w.Str(c.function_name);
      w.Str(c.args);
      w.U64(c.step_id);
      w.U64(c.replica_index);
      w.U64(c.replicas_per_step);
      w.U64(static_cast<uint64_t>(c.state));
      w.U64(c.attempts);
      w.U64(c.failures);
      w.U64(c.min_valid_attempt);
      w.Str(c.result);
      w.Status(c.error);
    }
  }
  return w.Take();
}

absl::StatusOr<SchedulerSnapshot> DecodeScheduler(absl::string_view bytes) {
  Reader r(bytes, "scheduler");
  PLEXUS_RETURN_IF_ERROR(r.Version());
  SchedulerSnapshot s;
  PLEXUS_ASSIGN_OR_RETURN(s.next_closure_id, r.U64());
  PLEXUS_ASSIGN_OR_RETURN(s.next_job_number, r.U64());
  PLEXUS_ASSIGN_OR_RETURN(uint64_t njobs, r.Count());
  for (uint64_t i = 0; i < njobs; ++i) {
    JobRecord j;
    PLEXUS_ASSIGN_OR_RETURN(j.spec.job_id, r.Str());
    PLEXUS_ASSIGN_OR_RETURN(uint64_t kind, r.U64());
    if (kind == kWorkLoop) {
      StepLoop loop;
      PLEXUS_ASSIGN_OR_RETURN(loop.function_name, r.Str());
      PLEXUS_ASSIGN_OR_RETURN(loop.num_steps, r.U64());
      PLEXUS_ASSIGN_OR_RETURN(loop.first_step_id, r.U64());
      PLEXUS_ASSIGN_OR_RETURN(loop.args, r.Str());
      PLEXUS_ASSIGN_OR_RETURN(loop.replicas_per_step, r.U32());
      j.spec.work = std::move(loop);
    } else if (kind == kWorkList) {
      PLEXUS_ASSIGN_OR_RETURN(uint64_t n, r.Count());
      std::vector<ClosureSpec> list;
      for (uint64_t c = 0; c < n; ++c) {
        ClosureSpec spec;
        PLEXUS_ASSIGN_OR_RETURN(spec.function_name, r.Str());
        PLEXUS_ASSIGN_OR_RETURN(spec.args, r.Str());
        PLEXUS_ASSIGN_OR_RETURN(spec.step_id, r.U64());
        list.push_back(std::move(spec));
      }
      j.spec.work = std::move(list);
    } else if (kind != kWorkNone) {
      return r.Error("bad job kind");
    }
    PLEXUS_ASSIGN_OR_RETURN(j.spec.no_worker_timeout, r.Duration());
    PLEXUS_ASSIGN_OR_RETURN(j.spec.max_attempts, r.U32());
    PLEXUS_ASSIGN_OR_RETURN(j.spec.closure_timeout, r.Duration());
    PLEXUS_ASSIGN_OR_RETURN(uint64_t state, r.U64());
    if (!ValidJobState(state)) return r.Error("bad job state");
    j.state = static_cast<scheduling::JobState>(state);
    PLEXUS_ASSIGN_OR_RETURN(j.error, r.Status());
    PLEXUS_ASSIGN_OR_RETURN(j.requeues, r.U64());
    PLEXUS_ASSIGN_OR_RETURN(j.max_step_id, r.U64());
    PLEXUS_ASSIGN_OR_RETURN(j.submitted_at, r.Time());
    PLEXUS_ASSIGN_OR_RETURN(j.finished_at, r.Time());
    PLEXUS_ASSIGN_OR_RETURN(uint64_t nclosures, r.Count());
    for (uint64_t c = 0; c < nclosures; ++c) {
      ClosureRecord cr;
      PLEXUS_ASSIGN_OR_RETURN(cr.closure_id, r.U64());
      PLEXUS_ASSIGN_OR_RETURN(cr.function_name, r.Str());
      PLEXUS_ASSIGN_OR_RETURN(cr.args, r.Str());
      PLEXUS_ASSIGN_OR_RETURN(cr.step_id, r.U64());
      PLEXUS_ASSIGN_OR_RETURN(cr.replica_index, r.U32());
      PLEXUS_ASSIGN_OR_RETURN(cr.replicas_per_step, r.U32());
      PLEXUS_ASSIGN_OR_RETURN(uint64_t cstate, r.U64());
      if (!ValidClosureState(cstate)) return r.Error("bad closure state");
      cr.state = static_cast<scheduling::ClosureState>(cstate);
      PLEXUS_ASSIGN_OR_RETURN(cr.attempts, r.U32());
      PLEXUS_ASSIGN_OR_RETURN(cr.failures, r.U32());
      PLEXUS_ASSIGN_OR_RETURN(cr.min_valid_attempt, r.U32());
      PLEXUS_ASSIGN_OR_RETURN(cr.result, r.Str());
      PLEXUS_ASSIGN_OR_RETURN(cr.error, r.Status());
      j.closures.push_back(std::move(cr));
    }
    s.jobs.push_back(std::move(j));
  }
  PLEXUS_RETURN_IF_ERROR(r.Done());
  return s;
}

}  // namespace plexus::coordinator::state
