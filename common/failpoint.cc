#include "common/failpoint.h"

#include <signal.h>
#include <unistd.h>

#include <glog/logging.h>

#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/tsan.h"

namespace plexus::failpoint {
namespace internal {
std::atomic<int> g_enabled_count{0};
}  // namespace internal

namespace {

enum class Kind { kOff, kCrash, kHang, kError, kSleep };

struct Action {
  Kind kind = Kind::kOff;
  int64_t skip = 0;       // hits to pass before acting
  int64_t max_fires = 0;  // turn off after acting this often; 0: never
  std::string text;       // as configured, for Active()
  absl::StatusCode code = absl::StatusCode::kOk;
  std::string message;
  absl::Duration sleep;  // kSleep
};

struct Point {
  Action action;
  int64_t hits = 0;
  int hanging = 0;        // threads blocked in a hang now
  uint64_t releases = 0;  // bumped by Release/Clear to wake hanging threads
};

class Registry {
 public:
  absl::Status Set(absl::string_view name, const Action& action) {
    MutexLock lock(&mu_);
    Point& p = points_[std::string(name)];
    bool was_on = p.action.kind != Kind::kOff;
    bool is_on = action.kind != Kind::kOff;
    p.action = action;
    if (!is_on) ++p.releases;
    internal::g_enabled_count.fetch_add(int(is_on) - int(was_on));
    return absl::OkStatus();
  }

  void Release(absl::string_view name) {
    MutexLock lock(&mu_);
    auto it = points_.find(std::string(name));
    if (it != points_.end()) ++it->second.releases;
  }

  void ClearAll() {
    MutexLock lock(&mu_);
    for (auto& [name, p] : points_) {
      if (p.action.kind != Kind::kOff) internal::g_enabled_count.fetch_sub(1);
      p.action = Action();
      ++p.releases;
    }
  }

  int64_t HitCount(absl::string_view name) {
    MutexLock lock(&mu_);
    auto it = points_.find(std::string(name));
    return it == points_.end() ? 0 : it->second.hits;
  }

  bool WaitUntilHanging(absl::string_view name, absl::Duration timeout) {
    MutexLock lock(&mu_);
    std::string key(name);
    auto cond = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      auto it = points_.find(key);
      return it != points_.end() && it->second.hanging > 0;
    };
    return AwaitWithDeadline(&mu_, absl::Condition(&cond),
                             absl::Now() + timeout);
  }

  absl::Status Evaluate(absl::string_view name) {
    MutexLock lock(&mu_);
    auto it = points_.find(std::string(name));
    if (it == points_.end() || it->second.action.kind == Kind::kOff) {
      return absl::OkStatus();
    }
    Point& p = it->second;
    int64_t hit = p.hits++;
    if (hit < p.action.skip) return absl::OkStatus();
    if (p.action.max_fires > 0 && --p.action.max_fires == 0) {
      // This is the last firing: the point turns itself off, keeping the
      // action for this one evaluation.
      Action last = p.action;
      p.action = Action();
      internal::g_enabled_count.fetch_sub(1);
      return Fire(name, p, last);
    }
    return Fire(name, p, p.action);
  }

  std::vector<std::string> Active() {
    MutexLock lock(&mu_);
    std::vector<std::string> out;
    for (const auto& [name, p] : points_) {
      if (p.action.kind != Kind::kOff)
        out.push_back(name + "=" + p.action.text);
    }
    return out;
  }

 private:
  absl::Status Fire(absl::string_view name, Point& p, const Action& action)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    switch (action.kind) {
      case Kind::kOff:
        return absl::OkStatus();
      case Kind::kCrash:
        LOG(WARNING) << "failpoint " << name << ": crash";
        google::FlushLogFiles(google::GLOG_INFO);
        raise(SIGKILL);
        _exit(137);  // not reached
      case Kind::kError:
        LOG(WARNING) << "failpoint " << name << ": error "
                     << absl::StatusCodeToString(action.code);
        return absl::Status(action.code, action.message.empty()
                                             ? absl::StrCat("failpoint ", name)
                                             : action.message);
      case Kind::kSleep: {
        // `action` may change while the lock is released: copy first.
        const absl::Duration sleep = action.sleep;
        LOG(WARNING) << "failpoint " << name << ": sleeping "
                     << absl::FormatDuration(sleep);
        Unlock(&mu_);
        absl::SleepFor(sleep);
        Lock(&mu_);
        LOG(WARNING) << "failpoint " << name << ": slept";
        return absl::OkStatus();
      }
      case Kind::kHang: {
        LOG(WARNING) << "failpoint " << name << ": hanging";
        uint64_t seen = p.releases;
        ++p.hanging;
        auto released = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return p.releases != seen;
        };
        Await(&mu_, absl::Condition(&released));
        --p.hanging;
        LOG(WARNING) << "failpoint " << name << ": released";
        return absl::OkStatus();
      }
    }
    return absl::OkStatus();
  }

  absl::Mutex mu_;
  // std::map: references to points stay valid while a thread hangs on one.
  std::map<std::string, Point> points_ ABSL_GUARDED_BY(mu_);
};

Registry& GetRegistry() {
  static Registry* r = new Registry();
  return *r;
}

absl::StatusOr<absl::StatusCode> ParseCode(absl::string_view s) {
  for (int c = 1; c <= 16; ++c) {
    auto code = static_cast<absl::StatusCode>(c);
    if (absl::StatusCodeToString(code) == s) return code;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("failpoint: unknown status code '", s, "'"));
}

absl::StatusOr<Action> ParseAction(absl::string_view text) {
  Action a;
  absl::string_view s = absl::StripAsciiWhitespace(text);
  a.text = std::string(s);
  if (size_t at = s.rfind('@'); at != absl::string_view::npos &&
                                s.find(')', at) == absl::string_view::npos) {
    if (!absl::SimpleAtoi(s.substr(at + 1), &a.max_fires) || a.max_fires < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("failpoint: bad fire count in '", text, "'"));
    }
    s = s.substr(0, at);
  }
  if (size_t star = s.find('*'); star != absl::string_view::npos) {
    if (!absl::SimpleAtoi(s.substr(0, star), &a.skip) || a.skip < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("failpoint: bad hit count in '", text, "'"));
    }
    s = s.substr(star + 1);
  }
  if (s == "off") {
    a.kind = Kind::kOff;
  } else if (s == "crash") {
    a.kind = Kind::kCrash;
  } else if (s == "hang") {
    a.kind = Kind::kHang;
  } else if (absl::ConsumePrefix(&s, "sleep(") &&
             absl::ConsumeSuffix(&s, ")")) {
    a.kind = Kind::kSleep;
    int64_t ms = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(s), &ms) || ms < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("failpoint: bad sleep in '", text, "'"));
    }
    a.sleep = absl::Milliseconds(ms);
  } else if (absl::ConsumePrefix(&s, "error(") &&
             absl::ConsumeSuffix(&s, ")")) {
    a.kind = Kind::kError;
    std::pair<absl::string_view, absl::string_view> parts =
        absl::StrSplit(s, absl::MaxSplits(',', 1));
    auto code = ParseCode(absl::StripAsciiWhitespace(parts.first));
    if (!code.ok()) return code.status();
    a.code = *code;
    a.message = std::string(absl::StripAsciiWhitespace(parts.second));
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "failpoint: unknown action '", text,
        "' (want off, crash, hang, sleep(MS) or error(CODE[,message]), "
        "optionally N*action and action@M)"));
  }
  return a;
}

absl::Status CheckName(absl::string_view name) {
  if (name.empty() ||
      name.find_first_of(" =;\t\n") != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("failpoint: bad name '", name, "'"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Set(absl::string_view name, absl::string_view action) {
  if (auto st = CheckName(name); !st.ok()) return st;
  auto a = ParseAction(action);
  if (!a.ok()) return a.status();
  return GetRegistry().Set(name, *a);
}

absl::Status Configure(absl::string_view spec) {
  std::vector<std::pair<std::string, Action>> parsed;
  for (absl::string_view item :
       absl::StrSplit(spec, ';', absl::SkipWhitespace())) {
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(item, absl::MaxSplits('=', 1));
    absl::string_view name = absl::StripAsciiWhitespace(kv.first);
    if (auto st = CheckName(name); !st.ok()) return st;
    auto a = ParseAction(kv.second);
    if (!a.ok()) return a.status();
    parsed.emplace_back(std::string(name), *a);
  }
  for (const auto& [name, action] : parsed) {
    if (auto st = GetRegistry().Set(name, action); !st.ok()) return st;
  }
  return absl::OkStatus();
}

void Clear(absl::string_view name) {
  GetRegistry().Set(name, Action()).IgnoreError();
}
void ClearAll() { GetRegistry().ClearAll(); }
void Release(absl::string_view name) { GetRegistry().Release(name); }
int64_t HitCount(absl::string_view name) {
  return GetRegistry().HitCount(name);
}
std::vector<std::string> Active() { return GetRegistry().Active(); }
bool WaitUntilHanging(absl::string_view name, absl::Duration timeout) {
  return GetRegistry().WaitUntilHanging(name, timeout);
}
absl::Status Evaluate(absl::string_view name) {
  return GetRegistry().Evaluate(name);
}

}  // namespace plexus::failpoint
