// plexus: the command line. Starts and stops local clusters, checks health,
// and (as the issues land) submits jobs and inspects checkpoints.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "common/auth.h"
#include "common/grpc_status.h"
#include "common/health_client.h"
#include "common/init.h"
#include "common/process.h"
#include "plexus/v1/coordinator.grpc.pb.h"
#include "tools/local/chaos.h"
#include "tools/local/local_cluster.h"

namespace {

namespace local = plexus::local;

// The folder holding this binary (where plexus-ps and plexus-coordinator are
// installed next to it).
std::string SelfDir() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? "." : p.parent_path().string();
}

int Fail(const absl::Status& st) {
  std::cerr << "plexus: " << st.message() << "\n";
  return 1;
}

// `plexus bench NAME [ARGS...]`: the benchmark binaries, by name.
const std::vector<std::pair<std::string, std::string>>& Benchmarks() {
  static const auto* b = new std::vector<std::pair<std::string, std::string>>{
      {"ps", "ps_bench"},
      {"collectives", "coll_bench"},
      {"checkpoint", "checkpoint_bench"},
      {"engine", "engine_bench"},
      {"dispatch", "dispatch_bench"},
      {"reduce", "reduce_bench"},
      {"nccl", "nccl_bench"}};
  return *b;
}

// Replaces this process with benchmark `name` from `bin_dir`, passing `args`
// (its own flags; `plexus bench NAME --help` prints them). Returns only on
// an error: 2 for an unknown name, 1 when the binary cannot start.
int RunBenchmark(const std::string& name, const std::string& bin_dir,
                 const std::vector<std::string>& args) {
  std::string binary;
  std::string names;
  for (const auto& [n, b] : Benchmarks()) {
    if (n == name) binary = b;
    absl::StrAppend(&names, names.empty() ? "" : ", ", n);
  }
  if (binary.empty()) {
    std::cerr << "plexus bench: no benchmark '" << name << "' (" << names
              << ")\n";
    return 2;
  }
  const std::string path =
      (bin_dir.empty() ? SelfDir() : bin_dir) + "/" + binary;
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(path.c_str()));
  for (const std::string& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::cout.flush();
  execv(path.c_str(), argv.data());
  std::cerr << "plexus bench: cannot run " << path << ": "
            << std::strerror(errno)
            << (binary == "reduce_bench" || binary == "nccl_bench"
                    ? " (built only where CUDA and NCCL are found)"
                    : "")
            << "\n";
  return 1;
}

std::string BenchUsage() {
  std::string names;
  for (const auto& [n, b] : Benchmarks()) {
    absl::StrAppend(&names, "\n  ", n, std::string(13 - n.size(), ' '), b);
  }
  return absl::StrCat(
      "Run a benchmark: plexus bench [--bin-dir DIR] NAME [ITS FLAGS...]. "
      "Everything after NAME goes to the benchmark (plexus bench NAME --help "
      "lists its flags); --bin-dir: where the binaries are (default: next to "
      "plexus). Names:",
      names);
}

// `plexus bench ...` (the arguments after "bench").
int BenchCommand(std::vector<std::string> args) {
  std::string bin_dir;
  while (!args.empty() &&
         (args[0] == "--bin-dir" || absl::StartsWith(args[0], "--bin-dir="))) {
    if (args[0] == "--bin-dir") {
      if (args.size() < 2) {
        std::cerr << "plexus bench: --bin-dir needs a folder\n";
        return 2;
      }
      bin_dir = args[1];
      args.erase(args.begin(), args.begin() + 2);
    } else {
      bin_dir = args[0].substr(std::string("--bin-dir=").size());
      args.erase(args.begin());
    }
  }
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::cout << BenchUsage() << "\n";
    return args.empty() ? 2 : 0;
  }
  const std::string name = args[0];
  args.erase(args.begin());
  return RunBenchmark(name, bin_dir, args);
}

// Whether a process runs (a zombie waiting for its parent to reap it does not).
bool Alive(pid_t pid) {
  if (kill(pid, 0) != 0 && errno != EPERM) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  size_t paren = line.rfind(')');
  return paren == std::string::npos || paren + 2 >= line.size() ||
         line[paren + 2] != 'Z';
}

struct UpOptions {
  std::string dir, bin_dir, worker_cmd;
  int num_ps = 1, num_workers = 0;
  double timeout_s = 30, chaos_s = 0, checkpoint_every_s = 0;
  uint64_t chaos_seed = 1;
};

int LocalUp(const UpOptions& up) {
  const std::string& dir = up.dir;
  if (auto st = local::ReadState(local::StatePath(dir)); st.ok()) {
    for (const auto& m : *st) {
      if (Alive(m.pid)) {
        return Fail(absl::FailedPreconditionError(absl::StrCat(
            "a local cluster already runs from ", dir, " (", m.role, " pid ",
            m.pid, "); run `plexus local down --dir ", dir, "` first")));
      }
    }
  }
  local::LocalClusterOptions o;
  o.bin_dir = up.bin_dir.empty() ? SelfDir() : up.bin_dir;
  o.root_dir = std::filesystem::absolute(dir).string();
  o.num_ps = up.num_ps;
  o.num_workers = up.num_workers;
  o.worker_argv = absl::StrSplit(up.worker_cmd.empty()
                                     ? o.bin_dir + "/ctr_example --mode=worker"
                                     : up.worker_cmd,
                                 ' ', absl::SkipEmpty());
  o.kill_with_parent = false;
  o.start_timeout = absl::Seconds(up.timeout_s);
  // The coordinator watches the shards: `plexus checkpoint` works and a
  // restarted shard is restored from the newest checkpoint.
  o.coordinator_watches_shards = true;
  if (up.checkpoint_every_s > 0) {
    o.coordinator_flags.push_back(
        absl::StrCat("--checkpoint_every_s=", up.checkpoint_every_s));
  }
  std::cout << "starting a local cluster in " << o.root_dir
            << ": coordinator + " << up.num_ps << " PS shard(s) + "
            << up.num_workers << " worker(s)" << std::endl;
  auto cluster = local::LocalCluster::Start(o);
  if (!cluster.ok()) return Fail(cluster.status());
  for (const auto& m : (*cluster)->members()) {
    if (m.role == "worker") {
      std::printf("  %-12s %-3d %-22s pid %-7d log %s\n", m.role.c_str(),
                  m.index, "(registered)", m.pid, m.log_file.c_str());
      continue;
    }
    std::printf(
        "  %-12s %-3d %-22s metrics http://127.0.0.1:%d/metrics  pid %-7d log "
        "%s\n",
        m.role.c_str(), m.index, m.address.c_str(), m.admin_port, m.pid,
        m.log_file.c_str());
  }
  std::cout << "all processes serving; stop with `plexus local down --dir "
            << dir << "`" << std::endl;
  // The processes run in their own sessions and outlive this command: release
  // them without killing (~Subprocess would SIGKILL them).
  (*cluster)->Detach();
  if (up.chaos_s > 0) {
    // The monkey outlives this command too; its lines go to our stdout.
    plexus::SubprocessOptions so;
    so.argv = {SelfDir() + "/plexus",
               "local",
               "chaos",
               "--dir",
               o.root_dir,
               "--every",
               absl::StrCat(up.chaos_s),
               "--seed",
               absl::StrCat(up.chaos_seed)};
    so.kill_with_parent = false;
    so.new_session = true;
    auto monkey = plexus::Subprocess::Start(so);
    if (!monkey.ok()) return Fail(monkey.status());
    std::vector<local::Member> members = (*cluster)->members();
    local::Member m;
    m.role = "chaos";
    m.pid = (*monkey)->pid();
    m.address = "-";
    m.dir = o.root_dir;
    m.log_file = "-";
    members.push_back(m);
    if (auto st = local::WriteState(local::StatePath(o.root_dir), members);
        !st.ok()) {
      return Fail(st);
    }
    (*monkey)->Detach();
    std::printf("chaos: a random worker is killed every %g s (pid %d)\n",
                up.chaos_s, m.pid);
  }
  return 0;
}

int LocalStatus(const std::string& dir) {
  auto members = local::ReadState(local::StatePath(dir));
  if (!members.ok()) return Fail(members.status());
  int bad = 0;
  std::printf("%-12s %-5s %-22s %-8s %s\n", "ROLE", "INDEX", "ADDRESS", "PID",
              "HEALTH");
  for (const auto& m : *members) {
    std::string health = "down";
    if (m.address == "-") {  // workers and the chaos monkey: no gRPC port
      health = Alive(m.pid) ? "RUNNING" : "down";
    } else if (Alive(m.pid)) {
      auto h = plexus::CheckHealth(m.address, absl::Seconds(2));
      health = !h.ok() ? std::string(h.status().message())
               : *h == plexus::Health::kServing ? "SERVING"
                                                : "NOT_SERVING";
    }
    if (health != "SERVING" && health != "RUNNING") ++bad;
    std::printf("%-12s %-5d %-22s %-8d %s\n", m.role.c_str(), m.index,
                m.address.c_str(), m.pid, health.c_str());
  }
  return bad == 0 ? 0 : 1;
}

// Where the coordinator is: --coordinator, else the local cluster in --dir.
absl::StatusOr<std::string> CoordinatorAddress(const std::string& flag,
                                               const std::string& dir) {
  if (!flag.empty()) return flag;
  auto members = local::ReadState(local::StatePath(dir));
  if (!members.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no --coordinator given and no local cluster in ", dir,
                     " (", members.status().message(), ")"));
  }
  for (const auto& m : *members) {
    if (m.role == "coordinator") return m.address;
  }
  return absl::NotFoundError(absl::StrCat("no coordinator in ", dir));
}

// `token_file` (the global --token-file) or else $PLEXUS_TOKEN_FILE /
// $PLEXUS_TOKEN give the token sent on every call; none: no token.
absl::StatusOr<std::unique_ptr<plexus::v1::Coordinator::Stub>> Connect(
    const std::string& address, const plexus::ClientTlsOptions& tls,
    const std::string& token_file) {
  auto creds = plexus::MakeChannelCredentials(tls);
  if (!creds.ok()) return creds.status();
  auto token = token_file.empty() ? plexus::ClientToken()
                                  : plexus::ReadTokenFile(token_file);
  if (!token.ok()) return token.status();
  return plexus::v1::Coordinator::NewStub(
      grpc::experimental::CreateCustomChannelWithInterceptors(
          address, *creds, grpc::ChannelArguments(),
          plexus::TokenInterceptors(*token)));
}

grpc::ClientContext* Deadline(grpc::ClientContext* ctx, double seconds) {
  ctx->set_deadline(
      std::chrono::system_clock::now() +
      std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
  return ctx;
}

std::string Name(plexus::v1::Role r) {
  std::string n = plexus::v1::Role_Name(r);
  return absl::AsciiStrToLower(n.substr(n.find('_') + 1));
}
std::string Name(plexus::v1::ProcessState s) {
  std::string n = plexus::v1::ProcessState_Name(s);
  return absl::AsciiStrToLower(n.substr(n.find("STATE_") + 6));
}
std::string Name(plexus::v1::JobState s) {
  std::string n = plexus::v1::JobState_Name(s);
  return absl::AsciiStrToLower(n.substr(n.find("STATE_") + 6));
}

int ClusterStatus(plexus::v1::Coordinator::Stub* stub, bool all) {
  plexus::v1::ListProcessesRequest req;
  req.set_include_dead(all);
  plexus::v1::ListProcessesResponse resp;
  grpc::ClientContext ctx;
  auto st = plexus::FromGrpcStatus(
      stub->ListProcesses(Deadline(&ctx, 10), req, &resp));
  if (!st.ok()) return Fail(st);
  int64_t now = absl::ToUnixMillis(absl::Now());
  std::printf("%-11s %-5s %-4s %-20s %-22s %-9s %-10s %-6s %s\n", "ROLE",
              "INDEX", "ID", "INCARNATION", "ADDRESS", "STATE", "HEARTBEAT",
              "STEP", "RESTARTS");
  for (const auto& p : resp.processes()) {
    std::string hb =
        p.last_heartbeat_unix_ms() == 0
            ? "-"
            : absl::StrCat(now - p.last_heartbeat_unix_ms(), " ms ago");
    std::printf("%-11s %-5d %-4llu %-20llu %-22s %-9s %-10s %-6llu %u\n",
                Name(p.role()).c_str(), p.task_index(),
                static_cast<unsigned long long>(p.worker_id()),
                static_cast<unsigned long long>(p.incarnation()),
                p.address().c_str(), Name(p.state()).c_str(), hb.c_str(),
                static_cast<unsigned long long>(p.current_step_id()),
                p.restarts());
  }
  return 0;
}

// ---- checkpoint create|list|inspect|restore ----

std::string Json(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

std::string UnixMsText(int64_t ms) {
  if (ms <= 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", absl::FromUnixMillis(ms),
                          absl::UTCTimeZone());
}

struct ManifestTotals {
  int64_t files = 0, bytes = 0, new_bytes = 0, rows = 0;
};

ManifestTotals Totals(const plexus::v1::CheckpointManifest& m) {
  ManifestTotals t;
  for (const auto& s : m.shards()) {
    t.files += s.files_size();
    t.bytes += s.total_bytes();
    t.new_bytes += s.new_bytes();
    t.rows += s.num_rows();
  }
  return t;
}

void PrintManifestLine(const plexus::v1::CheckpointManifest& m) {
  ManifestTotals t = Totals(m);
  std::printf("%-6llu %-8llu %-12s %-24s %-6d %-10lld %-14lld %-14lld\n",
              static_cast<unsigned long long>(m.checkpoint_id()),
              static_cast<unsigned long long>(m.step_id()),
              m.job_id().empty() ? "-" : m.job_id().c_str(),
              UnixMsText(m.published_unix_ms()).c_str(), m.shards_size(),
              static_cast<long long>(t.rows), static_cast<long long>(t.bytes),
              static_cast<long long>(t.new_bytes));
}

void PrintManifest(const plexus::v1::CheckpointManifest& m) {
  ManifestTotals t = Totals(m);
  std::printf(
      "checkpoint %llu\n  step:       %llu\n  job:        %s\n  started:    "
      "%s\n  published:  %s\n  base:       %llu\n  epoch:      %llu\n  "
      "shards:     %d\n  rows:       %lld\n  size:       %lld bytes (%lld "
      "new)\n  files:      %lld\n",
      static_cast<unsigned long long>(m.checkpoint_id()),
      static_cast<unsigned long long>(m.step_id()),
      m.job_id().empty() ? "-" : m.job_id().c_str(),
      UnixMsText(m.started_unix_ms()).c_str(),
      UnixMsText(m.published_unix_ms()).c_str(),
      static_cast<unsigned long long>(m.base_checkpoint_id()),
      static_cast<unsigned long long>(m.coordinator_epoch()), m.shards_size(),
      static_cast<long long>(t.rows), static_cast<long long>(t.bytes),
      static_cast<long long>(t.new_bytes), static_cast<long long>(t.files));
  for (const auto& s : m.shards()) {
    std::printf(
        "  shard %u: %s, %lld rows, %lld bytes (%lld new), incarnation %llx\n",
        s.shard_index(), s.directory().c_str(),
        static_cast<long long>(s.num_rows()),
        static_cast<long long>(s.total_bytes()),
        static_cast<long long>(s.new_bytes()),
        static_cast<unsigned long long>(s.server_incarnation()));
    for (const auto& f : s.files()) {
      std::printf("    %-28s %12lld  crc32c %08x\n", f.path().c_str(),
                  static_cast<long long>(f.size_bytes()), f.crc32c());
    }
  }
}

struct CheckpointArgs {
  std::string job_id;
  uint64_t step_id = 0;
  uint64_t checkpoint_id = 0;
  bool fall_back = false;
  bool json = false;
  double timeout_s = 600;
};

int CheckpointCommand(plexus::v1::Coordinator::Stub* stub,
                      const std::string& what, const CheckpointArgs& a) {
  grpc::ClientContext ctx;
  ctx.set_deadline(
      std::chrono::system_clock::now() +
      std::chrono::milliseconds(static_cast<int64_t>(a.timeout_s * 1000)));
  if (what == "create") {
    plexus::v1::TriggerCheckpointRequest req;
    req.set_job_id(a.job_id);
    req.set_step_id(a.step_id);
    req.set_wait(true);
    plexus::v1::TriggerCheckpointResponse resp;
    auto st = plexus::FromGrpcStatus(stub->TriggerCheckpoint(&ctx, req, &resp));
    if (!st.ok()) return Fail(st);
    if (a.json) {
      std::printf("%s\n", Json(resp).c_str());
      return 0;
    }
    ManifestTotals t = Totals(resp.manifest());
    std::printf(
        "checkpoint %llu at step %llu published: %d shards, %lld files, %lld "
        "bytes (%lld new), training paused %lld ms\n",
        static_cast<unsigned long long>(resp.checkpoint_id()),
        static_cast<unsigned long long>(resp.step_id()),
        resp.manifest().shards_size(), static_cast<long long>(t.files),
        static_cast<long long>(t.bytes), static_cast<long long>(t.new_bytes),
        static_cast<long long>(resp.pause_ms()));
    return 0;
  }
  if (what == "restore") {
    plexus::v1::RestoreCheckpointRequest req;
    req.set_checkpoint_id(a.checkpoint_id);
    req.set_fall_back_to_previous(a.fall_back);
    plexus::v1::RestoreCheckpointResponse resp;
    auto st = plexus::FromGrpcStatus(stub->Restore(&ctx, req, &resp));
    if (!st.ok()) return Fail(st);
    if (a.json) {
      std::printf("%s\n", Json(resp).c_str());
      return 0;
    }
    for (const auto& s : resp.skipped()) {
      std::printf("skipped: %s\n", s.message().c_str());
    }
    std::printf(
        "restored checkpoint %llu (step %llu) in %lld ms\n",
        static_cast<unsigned long long>(resp.manifest().checkpoint_id()),
        static_cast<unsigned long long>(resp.manifest().step_id()),
        static_cast<long long>(resp.restore_ms()));
    return 0;
  }
  plexus::v1::ListCheckpointsRequest req;
  req.set_checkpoint_id(what == "inspect" ? a.checkpoint_id : 0);
  req.set_include_files(what == "inspect");
  plexus::v1::ListCheckpointsResponse resp;
  auto st = plexus::FromGrpcStatus(stub->ListCheckpoints(&ctx, req, &resp));
  if (!st.ok()) return Fail(st);
  if (a.json) {
    std::printf("%s\n", Json(resp).c_str());
    return 0;
  }
  if (what == "inspect") {
    for (const auto& m : resp.manifests()) PrintManifest(m);
    return 0;
  }
  std::printf("%-6s %-8s %-12s %-24s %-6s %-10s %-14s %-14s\n", "ID", "STEP",
              "JOB", "PUBLISHED", "SHARDS", "ROWS", "BYTES", "NEW_BYTES");
  for (const auto& m : resp.manifests()) PrintManifestLine(m);
  return 0;
}

int PrintJob(const plexus::v1::JobStatus& j, bool json) {
  if (json) {
    std::string out;
    google::protobuf::util::JsonPrintOptions o;
    o.preserve_proto_field_names = true;
    (void)google::protobuf::util::MessageToJsonString(j, &out, o);
    std::printf("%s\n", out.c_str());
  } else {
    std::printf(
        "job %s: %s, %llu/%llu closures done (%llu running, %llu queued, %llu "
        "failed, %llu re-queued), through step %llu, %.1f steps/s, %u workers "
        "alive\n",
        j.job_id().c_str(), Name(j.state()).c_str(),
        static_cast<unsigned long long>(j.closures_succeeded()),
        static_cast<unsigned long long>(j.closures_total()),
        static_cast<unsigned long long>(j.closures_running()),
        static_cast<unsigned long long>(j.closures_queued()),
        static_cast<unsigned long long>(j.closures_failed()),
        static_cast<unsigned long long>(j.requeues()),
        static_cast<unsigned long long>(j.completed_through_step_id()),
        j.steps_per_second(), j.workers_alive());
    if (j.has_error() && j.error().code() != 0) {
      std::printf("error: %s\n", j.error().message().c_str());
    }
  }
  return j.state() == plexus::v1::JOB_STATE_FAILED ? 1 : 0;
}

int LocalDown(const std::string& dir, double grace_s) {
  auto members = local::ReadState(local::StatePath(dir));
  if (!members.ok()) return Fail(members.status());
  // The chaos monkey first, so it restarts nothing; then read the state
  // again, since it may have restarted workers under new pids.
  bool had_monkey = false;
  for (const auto& m : *members) {
    if (m.role == "chaos" && Alive(m.pid)) {
      kill(m.pid, SIGTERM);
      had_monkey = true;
      for (absl::Time end = absl::Now() + absl::Seconds(grace_s);
           Alive(m.pid) && absl::Now() < end;) {
        absl::SleepFor(absl::Milliseconds(10));
      }
      if (Alive(m.pid)) kill(m.pid, SIGKILL);
    }
  }
  if (had_monkey) {
    members = local::ReadState(local::StatePath(dir));
    if (!members.ok()) return Fail(members.status());
  }
  for (const auto& m : *members) {
    if (Alive(m.pid)) kill(m.pid, SIGTERM);
  }
  // The daemons are not our children (they outlived `local up`): watch their
  // pids until they are gone.
  absl::Time deadline = absl::Now() + absl::Seconds(grace_s);
  int killed = 0;
  for (const auto& m : *members) {
    absl::Duration step = absl::Milliseconds(1);
    while (Alive(m.pid) && absl::Now() < deadline) {
      absl::SleepFor(step);
      step = std::min(step * 2, absl::Milliseconds(50));
    }
    if (Alive(m.pid)) {
      kill(m.pid, SIGKILL);
      ++killed;
      std::cerr << "plexus: " << m.role << " " << m.index << " (pid " << m.pid
                << ") ignored SIGTERM for " << grace_s << " s; killed\n";
    } else {
      std::cout << "stopped " << m.role << " " << m.index << " (pid " << m.pid
                << ")\n";
    }
  }
  std::error_code ec;
  std::filesystem::remove(local::StatePath(dir), ec);
  return killed == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "bench") {
    return BenchCommand(std::vector<std::string>(argv + 2, argv + argc));
  }
  CLI::App app{
      "plexus: run and inspect Plexus parameter-server / collective clusters"};
  app.set_version_flag("--version", plexus::VersionString("plexus"));
  app.require_subcommand(1);
  // Global: read by every subcommand that calls a daemon. A file, never the
  // token itself, so that it does not show in `ps`.
  std::string token_file;
  app.add_option("--token-file", token_file,
                 "File holding the token for daemons that require one "
                 "(default: $PLEXUS_TOKEN_FILE, else $PLEXUS_TOKEN)");
  app.fallthrough();

  // local up|down|status
  auto* localcmd =
      app.add_subcommand("local", "A cluster of processes on this machine");
  localcmd->require_subcommand(1);
  std::string dir = "plexus-local", bin_dir;
  int num_ps = 1;
  double timeout_s = 30, grace_s = 15;
  UpOptions upo;
  auto* up = localcmd->add_subcommand(
      "up",
      "Start a coordinator, PS shards and workers, wait until all serve "
      "(workers: registered with the coordinator), print endpoints");
  up->add_option("--dir", dir, "Folder for data, logs and state")
      ->capture_default_str();
  up->add_option("--ps", num_ps, "Number of PS shards")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  up->add_option("--workers", upo.num_workers, "Number of training workers")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  up->add_option(
      "--worker", upo.worker_cmd,
      "Worker program and its flags, split at spaces; --coordinator, "
      "--ps and --task_index are appended (default: the sparse "
      "example, BIN_DIR/ctr_example --mode=worker)");
  up->add_option("--bin-dir", bin_dir,
                 "Folder with plexus-ps and plexus-coordinator (default: next "
                 "to this binary)");
  up->add_option("--timeout", timeout_s, "Seconds to wait for health")
      ->capture_default_str();
  up->add_option("--chaos", upo.chaos_s,
                 "Kill a random worker every this many seconds and restart it "
                 "(0: off); `local down` stops it")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  up->add_option("--chaos-seed", upo.chaos_seed, "Seed of the chaos victims")
      ->capture_default_str();
  up->add_option("--checkpoint-every", upo.checkpoint_every_s,
                 "Take a global checkpoint every this many seconds (0: only "
                 "on `plexus checkpoint create`)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  double chaos_every = 10;
  auto* chaos = localcmd->add_subcommand(
      "chaos",
      "Kill a random worker of a local cluster every N seconds and restart "
      "it, until the cluster is taken down (what `up --chaos` starts)");
  chaos->add_option("--dir", dir, "Folder given to `local up`")
      ->capture_default_str();
  chaos->add_option("--every", chaos_every, "Seconds between kills")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  chaos->add_option("--seed", upo.chaos_seed, "Seed of the victims")
      ->capture_default_str();
  auto* status = localcmd->add_subcommand(
      "status", "Health of each process of a local cluster");
  status->add_option("--dir", dir, "Folder given to `local up`")
      ->capture_default_str();
  auto* down = localcmd->add_subcommand(
      "down", "SIGTERM every process, SIGKILL after the grace period");
  down->add_option("--dir", dir, "Folder given to `local up`")
      ->capture_default_str();
  down->add_option("--grace", grace_s, "Seconds to wait before SIGKILL")
      ->capture_default_str();

  // health ADDRESS
  auto* health = app.add_subcommand("health", "Check a daemon's gRPC health");
  std::string address;
  health->add_option("address", address, "host:port")->required();
  plexus::ClientTlsOptions tls;
  health->add_option("--tls-ca", tls.ca_file,
                     "PEM CA of the server (turns TLS on)");
  health->add_option("--tls-cert", tls.cert_file,
                     "PEM client certificate (mutual TLS)");
  health->add_option("--tls-key", tls.key_file, "PEM client key (mutual TLS)");

  // Talking to a coordinator: --coordinator, or the local cluster in --dir.
  std::string coordinator, job_id, function, reason;
  uint64_t steps = 0;
  uint32_t replicas = 0;
  bool json = false, all = false;
  double rpc_timeout_s = 10;
  auto add_coordinator = [&](CLI::App* c) {
    c->add_option("--coordinator", coordinator,
                  "Coordinator address host:port (default: the local cluster "
                  "in --dir)");
    c->add_option("--dir", dir, "Local cluster folder")->capture_default_str();
    c->add_option("--tls-ca", tls.ca_file,
                  "PEM CA of the coordinator (turns TLS on)");
    c->add_option("--tls-cert", tls.cert_file,
                  "PEM client certificate (mutual TLS)");
    c->add_option("--tls-key", tls.key_file, "PEM client key (mutual TLS)");
  };
  auto* job = app.add_subcommand("job", "Submit, watch and cancel jobs");
  job->require_subcommand(1);
  auto* submit = job->add_subcommand(
      "submit", "Submit a job: a step function run for N steps");
  add_coordinator(submit);
  submit->add_option("--function", function, "Registered step function name")
      ->required();
  submit->add_option("--steps", steps, "Number of steps")
      ->required()
      ->check(CLI::PositiveNumber);
  submit->add_option("--job", job_id,
                     "Job id (default: the coordinator picks one)");
  submit->add_option("--replicas", replicas,
                     "Closures per step (synchronous training)");
  auto* jstatus = job->add_subcommand("status", "Show a job's progress");
  add_coordinator(jstatus);
  jstatus->add_option("--job", job_id, "Job id (default: the latest job)");
  jstatus->add_flag("--json", json, "Print the status as JSON");
  auto* cancel = job->add_subcommand("cancel", "Cancel a job");
  add_coordinator(cancel);
  cancel->add_option("--job", job_id, "Job id")->required();
  cancel->add_option("--reason", reason, "Why (logged by the coordinator)");
  auto* cstatus = app.add_subcommand("status", "Table of cluster processes");
  add_coordinator(cstatus);
  cstatus->add_flag("--all", all, "Include dead and departed processes");
  auto* ckpt = app.add_subcommand(
      "checkpoint", "Create, list, inspect and restore global checkpoints");
  ckpt->require_subcommand(1);
  CheckpointArgs ck;
  auto* ck_create =
      ckpt->add_subcommand("create", "Take a global checkpoint now and wait");
  ck_create->add_option("--job", ck.job_id, "Job (default: the running one)");
  ck_create->add_option("--step", ck.step_id,
                        "Step C to cut at (default: the highest step "
                        "dispatched so far)");
  auto* ck_list = ckpt->add_subcommand("list", "List published checkpoints");
  auto* ck_inspect = ckpt->add_subcommand(
      "inspect", "Show a checkpoint's manifest: shards, files, checksums");
  ck_inspect->add_option("id", ck.checkpoint_id, "Checkpoint id")->required();
  auto* ck_restore = ckpt->add_subcommand(
      "restore", "Restore every shard to a checkpoint (default: the newest)");
  ck_restore->add_option("id", ck.checkpoint_id, "Checkpoint id");
  ck_restore->add_flag("--fall-back", ck.fall_back,
                       "If it fails verification, use the next older one");
  for (CLI::App* c : {ck_create, ck_list, ck_inspect, ck_restore}) {
    add_coordinator(c);
    c->add_flag("--json", ck.json, "Print the answer as JSON");
    c->add_option("--timeout", ck.timeout_s, "Seconds to wait for the answer")
        ->capture_default_str();
  }
  // Listed here for `plexus --help`; main() runs it before parsing, so that
  // every argument after the name reaches the benchmark untouched.
  app.add_subcommand("bench", BenchUsage());

  CLI11_PARSE(app, argc, argv);

  if (up->parsed()) {
    upo.dir = dir;
    upo.bin_dir = bin_dir;
    upo.num_ps = num_ps;
    upo.timeout_s = timeout_s;
    return LocalUp(upo);
  }
  if (chaos->parsed()) {
    local::ChaosOptions co;
    co.root_dir = std::filesystem::absolute(dir).string();
    co.every = absl::Seconds(chaos_every);
    co.seed = upo.chaos_seed;
    static std::atomic<bool> stopping{false};
    signal(SIGTERM, [](int) { stopping = true; });
    signal(SIGINT, [](int) { stopping = true; });
    absl::Status st = local::RunChaos(co, [] { return stopping.load(); });
    return st.ok() ? 0 : Fail(st);
  }
  if (status->parsed()) return LocalStatus(dir);
  if (down->parsed()) return LocalDown(dir, grace_s);
  if (health->parsed()) {
    auto h = plexus::CheckHealth(address, absl::Seconds(5), tls);
    if (!h.ok()) return Fail(h.status());
    bool ok = *h == plexus::Health::kServing;
    std::cout << address << ": " << (ok ? "SERVING" : "NOT_SERVING") << "\n";
    return ok ? 0 : 1;
  }
  if (job->parsed() || cstatus->parsed()) {
    auto address = CoordinatorAddress(coordinator, dir);
    if (!address.ok()) return Fail(address.status());
    auto stub = Connect(*address, tls, token_file);
    if (!stub.ok()) return Fail(stub.status());
    grpc::ClientContext ctx;
    Deadline(&ctx, rpc_timeout_s);
    if (cstatus->parsed()) return ClusterStatus(stub->get(), all);
    if (submit->parsed()) {
      plexus::v1::SubmitJobRequest req;
      req.set_job_id(job_id);
      req.mutable_steps()->set_function_name(function);
      req.mutable_steps()->set_num_steps(steps);
      req.mutable_steps()->set_replicas_per_step(replicas);
      plexus::v1::SubmitJobResponse resp;
      auto st = plexus::FromGrpcStatus((*stub)->SubmitJob(&ctx, req, &resp));
      if (!st.ok()) return Fail(st);
      std::printf("%s job %s: %llu steps of %s\n",
                  resp.created() ? "submitted" : "already submitted",
                  resp.job_id().c_str(), static_cast<unsigned long long>(steps),
                  function.c_str());
      return 0;
    }
    if (jstatus->parsed()) {
      plexus::v1::GetJobStatusRequest req;
      req.set_job_id(job_id);
      plexus::v1::GetJobStatusResponse resp;
      auto st = plexus::FromGrpcStatus((*stub)->GetJobStatus(&ctx, req, &resp));
      if (!st.ok()) return Fail(st);
      return PrintJob(resp.status(), json);
    }
    plexus::v1::CancelJobRequest req;
    req.set_job_id(job_id);
    req.set_reason(reason);
    plexus::v1::CancelJobResponse resp;
    auto st = plexus::FromGrpcStatus((*stub)->CancelJob(&ctx, req, &resp));
    if (!st.ok()) return Fail(st);
    std::printf("cancelled job %s\n", job_id.c_str());
    return 0;
  }
  if (ckpt->parsed()) {
    auto address = CoordinatorAddress(coordinator, dir);
    if (!address.ok()) return Fail(address.status());
    auto stub = Connect(*address, tls, token_file);
    if (!stub.ok()) return Fail(stub.status());
    const std::string what = ck_create->parsed()    ? "create"
                             : ck_inspect->parsed() ? "inspect"
                             : ck_restore->parsed() ? "restore"
                                                    : "list";
    return CheckpointCommand(stub->get(), what, ck);
  }
  return 0;
}
