// mlp_example: the dense example. A two-layer perceptron learns the
// handwritten digits (scikit-learn's digits.csv.gz) by synchronous data
// parallelism: W worker processes all-reduce their gradients with
// plexus::collectives every step (see train.h).
//
//   mlp_example                                  # 2 workers on this machine
//   mlp_example --mode=local --workers=4         # launcher: 4 worker processes
//   mlp_example --mode=baseline                  # one process, no
//   communication mlp_example --mode=worker --rank=R --world=W
//   --rendezvous_dir=D
//                                                # one rank (a launcher or a
//                                                # scheduler starts W of these)
//   mlp_example --mode=worker --world=W --coordinator=HOST:PORT
//                                                # one rank of a Plexus cluster
//   mlp_example --mode=local --workers=W --coordinator=HOST:PORT
//
// Workers find each other through a file store in --rendezvous_dir (processes
// on one machine) or, with --coordinator, through the coordinator: each
// registers with the worker runtime, joins collective group --group (which
// assigns the ranks) and bootstraps the communicator through the group's
// rendezvous keys. Rank 0 prints progress and the summary (--json: JSON
// lines); the launcher's exit status is 0 when every worker succeeded.
// --device=gpu computes on the GPU and all-reduces with NCCL (gpu_replica.h).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "collectives/rendezvous/store.h"
#include "common/init.h"
#include "common/process.h"
#include "common/status.h"
#include "examples/mlp/digits.h"
#include "examples/mlp/gpu_replica.h"
#include "examples/mlp/runtime_store.h"
#include "examples/mlp/train.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "plexus/collectives/communicator.h"
#include "plexus/worker/runtime.h"

DEFINE_string(mode, "local",
              "local (start --workers worker processes of this program), "
              "worker (one rank), or baseline (one process, no "
              "communication)");
DEFINE_int32(workers, 2, "local mode: how many worker processes");
DEFINE_int32(rank, -1,
             "worker mode with --rendezvous_dir: this process's rank, "
             "0..world-1 (with --coordinator the coordinator assigns it)");
DEFINE_int32(world, 0, "worker mode: how many ranks");
DEFINE_string(rendezvous_dir, "",
              "worker mode: an existing folder shared by the ranks (file "
              "store); give every run its own");
DEFINE_string(coordinator, "",
              "worker and local modes: the coordinator host:port; the ranks "
              "then meet through it (collective group --group) instead of a "
              "--rendezvous_dir");
DEFINE_string(group, "mlp_example",
              "with --coordinator: the collective group's name");
DEFINE_string(data, "",
              "digits.csv.gz (or the decompressed CSV); empty: look in "
              "$PLEXUS_DATA_DIR, ~/.cache/plexus and the installed "
              "python3-sklearn (scripts/fetch_data.sh fetches it)");
DEFINE_double(test_fraction, 0.2,
              "the last this share of the images is the "
              "test set");
DEFINE_int32(hidden, 64, "hidden ReLU units");
DEFINE_int32(batch_size, 64, "global batch size, split across the workers");
DEFINE_int32(epochs, 30, "passes over the training set (at most)");
DEFINE_double(lr, 0.05, "learning rate");
DEFINE_double(momentum, 0.9, "momentum");
DEFINE_double(weight_decay, 0.0, "L2 weight decay");
DEFINE_uint64(seed, 1, "seed of the initial weights and the shuffling");
DEFINE_double(target_accuracy, 0.90,
              "test accuracy whose first crossing is the time to accuracy");
DEFINE_bool(stop_at_target, false, "stop once the target is reached");
DEFINE_int32(eval_every_steps, 0,
             "evaluate on the test set every this many steps; 0: each epoch");
DEFINE_int32(report_every, 1, "print progress every this many evaluations");
DEFINE_bool(json, false, "JSON lines (start, progress, summary) on stdout");
DEFINE_bool(deterministic, false,
            "collectives' deterministic mode: fixed algorithm and reduction "
            "order, so runs end with bitwise-identical parameters");
DEFINE_string(progress, "auto",
              "how waiting ranks progress: busy, blocking, or auto (busy "
              "polling only while the ranks leave a core free)");
DEFINE_string(algorithm, "auto", "all-reduce algorithm: auto, ring, tree, rd");
DEFINE_string(device, "cpu",
              "cpu, or gpu: compute on the GPU (rank r on device r mod the "
              "device count) and all-reduce with NCCL; needs a CUDA build "
              "and, for more than one worker, one GPU per worker");
DEFINE_int32(timeout_s, 60,
             "deadline of connecting and of each collective operation");

namespace plexus::examples {
namespace {

absl::StatusOr<DigitsSplit> LoadData() {
  std::string path = FLAGS_data;
  if (path.empty()) {
    PLEXUS_ASSIGN_OR_RETURN(path, FindDigits());
  }
  PLEXUS_ASSIGN_OR_RETURN(Dataset all, LoadDigits(path));
  if (!(FLAGS_test_fraction > 0 && FLAGS_test_fraction < 1)) {
    return absl::InvalidArgumentError("--test_fraction must be in (0, 1)");
  }
  VLOG(1) << "digits from " << path << ": " << all.size() << " images";
  return SplitDigits(all, FLAGS_test_fraction);
}

TrainOptions OptionsFromFlags() {
  TrainOptions o;
  o.hidden = FLAGS_hidden;
  o.batch_size = FLAGS_batch_size;
  o.epochs = FLAGS_epochs;
  o.lr = static_cast<float>(FLAGS_lr);
  o.momentum = static_cast<float>(FLAGS_momentum);
  o.weight_decay = static_cast<float>(FLAGS_weight_decay);
  o.seed = FLAGS_seed;
  o.target_accuracy = FLAGS_target_accuracy;
  o.stop_at_target = FLAGS_stop_at_target;
  o.eval_every_steps = FLAGS_eval_every_steps;
  o.report_every = FLAGS_report_every;
  o.json = FLAGS_json;
  return o;
}

absl::Status CheckDevice() {
  if (FLAGS_device != "cpu" && FLAGS_device != "gpu") {
    return absl::InvalidArgumentError(
        absl::StrCat("--device=", FLAGS_device, ": want cpu or gpu"));
  }
  return absl::OkStatus();
}

absl::Status RunBaseline() {
  PLEXUS_RETURN_IF_ERROR(CheckDevice());
  PLEXUS_ASSIGN_OR_RETURN(DigitsSplit data, LoadData());
  TrainOptions o = OptionsFromFlags();
  if (FLAGS_device == "gpu") {
    o.label = "baseline on the GPU (1 process, no communication)";
    PLEXUS_ASSIGN_OR_RETURN(auto replica,
                            NewGpuReplica(data, o, /*store=*/nullptr, 0, 1,
                                          absl::Seconds(FLAGS_timeout_s)));
    return Train(data, o, replica.get(), stdout).status();
  }
  return TrainOnCpu(data, o, nullptr, stdout).status();
}

absl::StatusOr<collectives::CommunicatorOptions> CommOptionsFromFlags() {
  auto algorithm = collectives::ParseAlgorithm(FLAGS_algorithm);
  if (!algorithm) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--algorithm=", FLAGS_algorithm, ": want auto, ring, tree or rd"));
  }
  collectives::CommunicatorOptions copts;
  if (FLAGS_progress == "auto") {
    // Busy polling needs a core per rank and collapses (tens of times
    // slower, measured here) as soon as anything else wants one of them: use
    // it only while a core stays free for the rest of the machine.
    copts.progress =
        FLAGS_world < static_cast<int>(std::thread::hardware_concurrency())
            ? collectives::ProgressMode::kBusyPoll
            : collectives::ProgressMode::kBlocking;
  } else if (FLAGS_progress == "busy" || FLAGS_progress == "blocking") {
    copts.progress = FLAGS_progress == "busy"
                         ? collectives::ProgressMode::kBusyPoll
                         : collectives::ProgressMode::kBlocking;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "--progress=", FLAGS_progress, ": want auto, busy or blocking"));
  }
  if (FLAGS_timeout_s <= 0) {
    return absl::InvalidArgumentError("--timeout_s must be positive");
  }
  copts.default_timeout = absl::Seconds(FLAGS_timeout_s);
  copts.connect_timeout = absl::Seconds(FLAGS_timeout_s);
  copts.algorithm = *algorithm;
  copts.deterministic = FLAGS_deterministic;
  return copts;
}

// Connects through `store` as `rank` and trains.
absl::Status TrainRank(const DigitsSplit& data, collectives::Store* store,
                       int rank, collectives::CommunicatorOptions copts,
                       absl::string_view how) {
  if (FLAGS_device == "gpu") {
    TrainOptions o = OptionsFromFlags();
    o.label =
        absl::StrCat(FLAGS_world, " GPU worker", FLAGS_world == 1 ? "" : "s",
                     " (", how, "), NCCL all-reduce (sum) of the gradients");
    PLEXUS_ASSIGN_OR_RETURN(auto replica,
                            NewGpuReplica(data, o, store, rank, FLAGS_world,
                                          absl::Seconds(FLAGS_timeout_s)));
    return Train(data, o, replica.get(), stdout).status();
  }
  copts.name = absl::StrCat("mlp", rank);
  PLEXUS_ASSIGN_OR_RETURN(
      auto comm,
      collectives::Communicator::Create(store, rank, FLAGS_world, copts),
      absl::StrCat("rank ", rank, " connecting to ", FLAGS_world, " ranks"));
  TrainOptions o = OptionsFromFlags();
  o.label = absl::StrCat(
      FLAGS_world, " worker", FLAGS_world == 1 ? "" : "s", " (", how,
      "), all-reduce (sum) of the gradients every step, ",
      copts.progress == collectives::ProgressMode::kBusyPoll ? "busy-poll"
                                                             : "blocking",
      " progress", FLAGS_deterministic ? ", deterministic" : "");
  return Annotate(TrainOnCpu(data, o, comm.get(), stdout).status(),
                  absl::StrCat("rank ", rank));
}

// One rank of a Plexus cluster: registers with the coordinator (the runtime's
// task loop runs on its own thread; training does not go through it, the
// runtime serves for membership and rendezvous), joins the collective group,
// which assigns the rank, and trains.
absl::Status RunCoordinatorWorker(
    std::unique_ptr<worker::Runtime> rt,
    const collectives::CommunicatorOptions& copts) {
  PLEXUS_ASSIGN_OR_RETURN(DigitsSplit data, LoadData());
  absl::Status run_status;
  absl::Notification run_done;
  std::thread loop([&] {
    run_status = rt->Run();
    run_done.Notify();
  });
  struct StopOnExit {
    worker::Runtime* rt;
    std::thread* loop;
    ~StopOnExit() {
      rt->Stop();
      loop->join();
    }
  } stop{rt.get(), &loop};

  // Run() registers asynchronously and has no "registered" signal to wait
  // on, so poll its identity, backing off, until the connect timeout.
  const absl::Time deadline = absl::Now() + absl::Seconds(FLAGS_timeout_s);
  absl::Duration backoff = absl::Milliseconds(1);
  while (rt->worker_id() == 0) {
    if (run_done.WaitForNotificationWithTimeout(backoff)) {
      return Annotate(run_status.ok()
                          ? absl::AbortedError("the runtime stopped")
                          : run_status,
                      absl::StrCat("registering with ", FLAGS_coordinator));
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("not registered with the coordinator ",
                       FLAGS_coordinator, " after ", FLAGS_timeout_s, " s"));
    }
    backoff = std::min(backoff * 2, absl::Milliseconds(50));
  }
  PLEXUS_ASSIGN_OR_RETURN(
      v1::GroupInfo group,
      rt->JoinGroup(FLAGS_group, static_cast<uint32_t>(FLAGS_world),
                    /*has_gpu=*/false, deadline),
      absl::StrCat("joining collective group ", FLAGS_group, " of ",
                   FLAGS_world));
  auto store = NewRuntimeStore(rt.get(), FLAGS_group, group.epoch());
  // Every message of the communicator carries the group and its epoch, so a
  // member of an older epoch (or another group) cannot put data into ours.
  collectives::CommunicatorOptions stamped = copts;
  stamped.group = FLAGS_group;
  stamped.group_epoch = group.epoch();
  return TrainRank(data, store.get(), group.my_rank(), stamped,
                   absl::StrCat("group ", FLAGS_group, " epoch ", group.epoch(),
                                " via the coordinator"));
}

absl::Status RunWorker() {
  if (FLAGS_world <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker mode needs --world > 0 (got ", FLAGS_world, ")"));
  }
  PLEXUS_RETURN_IF_ERROR(CheckDevice());
  PLEXUS_ASSIGN_OR_RETURN(collectives::CommunicatorOptions copts,
                          CommOptionsFromFlags());
  if (!FLAGS_coordinator.empty()) {
    if (FLAGS_rank >= 0 || !FLAGS_rendezvous_dir.empty()) {
      return absl::InvalidArgumentError(
          "with --coordinator the coordinator assigns the rank and is the "
          "rendezvous: leave out --rank and --rendezvous_dir");
    }
    // First, before any thread starts: the runtime blocks SIGTERM in every
    // thread (a preemption notice drains it).
    PLEXUS_ASSIGN_OR_RETURN(
        auto rt, worker::Runtime::Create({.coordinator = FLAGS_coordinator}));
    // Training runs outside the task loop, but a worker that registers no
    // step function is not known to the coordinator's scheduler, whose
    // NextTask then answers "stale incarnation": the runtime re-registers in
    // a loop, bumping the group's epoch under our feet. One step that only
    // says what this process is avoids that.
    PLEXUS_RETURN_IF_ERROR(rt->RegisterStep(
        "mlp_example.describe",
        [](absl::string_view,
           worker::StepContext&) -> absl::StatusOr<std::string> {
          return absl::StrCat("mlp_example worker of group ", FLAGS_group, " (",
                              FLAGS_world, " ranks)");
        }));
    return RunCoordinatorWorker(std::move(rt), copts);
  }
  if (FLAGS_rank < 0 || FLAGS_rank >= FLAGS_world) {
    return absl::InvalidArgumentError(absl::StrCat(
        "worker mode needs 0 <= --rank < --world (got rank ", FLAGS_rank,
        ", world ", FLAGS_world, "), or --coordinator"));
  }
  if (FLAGS_rendezvous_dir.empty()) {
    return absl::InvalidArgumentError(
        "worker mode needs --rendezvous_dir (a folder shared by the ranks) "
        "or --coordinator");
  }
  // Load before connecting, so that a missing data set fails fast here and
  // not as a peer's connect timeout.
  PLEXUS_ASSIGN_OR_RETURN(DigitsSplit data, LoadData());
  PLEXUS_ASSIGN_OR_RETURN(auto base,
                          collectives::NewFileStore(FLAGS_rendezvous_dir),
                          "rendezvous store");
  auto store = collectives::NewPrefixStore(
      base.get(), collectives::GroupEpochPrefix(FLAGS_group, 0));
  return TrainRank(data, store.get(), FLAGS_rank, copts, "file store");
}

// Starts --workers copies of this program in worker mode with this
// process's flags, and waits for them; the first one to fail takes the others
// down (they would otherwise wait for it until their deadline).
absl::Status RunLocal(const std::vector<std::string>& args) {
  if (FLAGS_workers <= 0) {
    return absl::InvalidArgumentError("--workers must be positive");
  }
  // Fail here, once, rather than in every worker.
  if (FLAGS_data.empty()) {
    PLEXUS_ASSIGN_OR_RETURN(FLAGS_data, FindDigits());
  }
  PLEXUS_RETURN_IF_ERROR(LoadDigits(FLAGS_data).status());

  std::string tmpl =
      (std::filesystem::temp_directory_path() / "mlp_example.XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp ", tmpl));
  }
  const std::string dir = tmpl;
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{dir};

  std::error_code ec;
  const std::string self =
      std::filesystem::read_symlink("/proc/self/exe", ec).string();
  if (ec) return absl::InternalError("cannot find this program's path");
  std::vector<std::unique_ptr<Subprocess>> procs;
  for (int r = 0; r < FLAGS_workers; ++r) {
    SubprocessOptions so;
    so.argv.push_back(self);
    so.argv.insert(so.argv.end(), args.begin() + 1, args.end());
    // Later flags win in gflags: these override whatever the user gave.
    so.argv.push_back("--mode=worker");
    so.argv.push_back(absl::StrCat("--world=", FLAGS_workers));
    so.argv.push_back("--data=" + FLAGS_data);
    if (FLAGS_coordinator.empty()) {
      so.argv.push_back(absl::StrCat("--rank=", r));
      so.argv.push_back("--rendezvous_dir=" + dir);
    }
    PLEXUS_ASSIGN_OR_RETURN(auto p, Subprocess::Start(so),
                            absl::StrCat("starting worker ", r));
    procs.push_back(std::move(p));
  }
  int remaining = FLAGS_workers;
  std::vector<bool> done(FLAGS_workers, false);
  while (remaining > 0) {
    for (int r = 0; r < FLAGS_workers; ++r) {
      if (done[r]) continue;
      auto code = procs[r]->Wait(absl::Milliseconds(20));
      if (!code.ok()) continue;  // still running
      done[r] = true;
      --remaining;
      if (*code != 0) {
        // The others usually fail too, each naming the peer it waited on,
        // which is what locates the fault: give them a moment to say so,
        // then the destructors kill whoever is left.
        const absl::Time grace = absl::Now() + absl::Seconds(2);
        for (int o = 0; o < FLAGS_workers; ++o) {
          if (!done[o]) {
            (void)procs[o]->Wait(
                std::max(grace - absl::Now(), absl::ZeroDuration()));
          }
        }
        return absl::AbortedError(absl::StrCat(
            "worker ", r, " of ", FLAGS_workers, " exited with status ", *code,
            " (its error is above); stopped the others"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace plexus::examples

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv, argv + argc);
  plexus::InitProcess(
      &argc, &argv,
      "The dense example: an MLP learns the handwritten digits by "
      "synchronous all-reduce\nacross worker processes.\n"
      "  mlp_example [--mode=local --workers=W | --mode=baseline | "
      "--mode=worker --rank=R --world=W --rendezvous_dir=D]");
  absl::Status s;
  if (FLAGS_mode == "baseline") {
    s = plexus::examples::RunBaseline();
  } else if (FLAGS_mode == "worker") {
    s = plexus::examples::RunWorker();
  } else if (FLAGS_mode == "local") {
    s = plexus::examples::RunLocal(args);
  } else {
    s = absl::InvalidArgumentError(absl::StrCat(
        "--mode=", FLAGS_mode, ": want local, worker or baseline"));
  }
  if (!s.ok()) {
    fprintf(stderr, "mlp_example: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
