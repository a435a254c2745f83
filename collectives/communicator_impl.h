// Private: the Communicator implementation. Include
// plexus/collectives/communicator.h.
//
// One thread per communicator runs submitted operations in order; it alone
// drives the transport. Submission validates arguments in the caller's thread
// (INVALID_ARGUMENT, not sticky) and refuses work once an error is recorded
// (FAILED_PRECONDITION with the first error).
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "collectives/algorithms/algorithms.h"
#include "collectives/device_collectives.h"
#include "collectives/transport/transport.h"
#include "plexus/collectives/communicator.h"

namespace plexus::collectives {

class CommunicatorImpl;

class WorkImpl : public Work {
 public:
  // `comm` (may be null) runs the operation on the waiting thread if it has
  // not started yet; it outlives every unfinished Work.
  WorkImpl(CommunicatorImpl* comm, Algorithm algorithm)
      : comm_(comm), algorithm_(algorithm) {}
  absl::Status Wait(absl::Time deadline) override;
  bool Done() const override { return done_.HasBeenNotified(); }
  Algorithm algorithm() const override { return algorithm_; }
  // Completes the work; called once.
  void Finish(absl::Status status);

 private:
  CommunicatorImpl* const comm_;
  const Algorithm algorithm_;
  absl::Status status_;  // written once before done_ is notified
  absl::Notification done_;
};

class CommunicatorImpl : public Communicator {
 public:
  CommunicatorImpl(std::unique_ptr<Transport> transport,
                   const CommunicatorOptions& options, Algorithm forced);
  ~CommunicatorImpl() override;

  // Hands device buffers to `device` (null: none are recognised). Before
  // Start.
  void SetDevice(std::unique_ptr<DeviceCollectives> device) {
    device_ = std::move(device);
  }
  // Measures alpha and beta (collective: every rank calls it, before Start).
  absl::Status Calibrate();
  // Starts the operation thread.
  void Start();

  int rank() const override { return transport_->rank(); }
  int size() const override { return transport_->size(); }
  std::shared_ptr<Work> AllReduceAsync(const void* send, void* recv,
                                       size_t count, DataType type, ReduceOp op,
                                       const OpOptions& opts) override;
  std::shared_ptr<Work> ReduceScatterAsync(const void* send, void* recv,
                                           size_t recv_count, DataType type,
                                           ReduceOp op,
                                           const OpOptions& opts) override;
  std::shared_ptr<Work> AllGatherAsync(const void* send, void* recv,
                                       size_t send_count, DataType type,
                                       const OpOptions& opts) override;
  std::shared_ptr<Work> BroadcastAsync(void* buf, size_t count, DataType type,
                                       int root,
                                       const OpOptions& opts) override;
  std::shared_ptr<Work> ReduceAsync(const void* send, void* recv, size_t count,
                                    DataType type, ReduceOp op, int root,
                                    const OpOptions& opts) override;
  std::shared_ptr<Work> BarrierAsync(const OpOptions& opts) override;
  void Abort() override;
  absl::Status status() const override;
  Algorithm SelectAllReduce(size_t bytes) const override;
  CostModel cost_model() const override { return cost_model_; }
  absl::string_view device_backend() const override {
    return device_ != nullptr ? device_->name() : "none";
  }

  // Runs queued operations up to and including `work` on the calling thread,
  // unless another thread drives the transport now. Waiting threads call it:
  // running on the thread that waits saves two cross-thread wake-ups per
  // operation (~45 us each here, far more when busy-polling ranks fill the
  // cores).
  void RunInline(WorkImpl* work);

 private:
  using Body = std::function<absl::Status(const AlgoContext&)>;
  // An operation's name for errors and logs, e.g. "all-reduce(1024 x fp32,
  // sum)": kept in parts and formatted only when a message needs it (a
  // StrCat per operation showed in the small-message profile).
  struct OpName {
    absl::string_view kind;  // "all-reduce"; alone when count_and_type is off
    bool count_and_type = true;
    size_t count = 0;
    DataType type = DataType::kFloat32;
    absl::string_view op;      // a ReduceOpName, or empty
    int root = -1;             // >= 0: ", root R"
    absl::string_view device;  // non-empty: " on device buffers (device)"
    std::string ToString() const;
  };
  struct Op {
    OpName name;
    Body body;
    absl::Time deadline;
    std::shared_ptr<WorkImpl> work;
  };

  // Queues `body`, or returns finished work if the communicator is broken.
  std::shared_ptr<Work> Submit(const OpName& name, Algorithm algorithm,
                               const OpOptions& opts, Body body);
  static std::shared_ptr<Work> Failed(absl::Status status);
  void Loop();
  // Runs a dequeued operation and finishes its work. REQUIRES: this thread
  // set driver_busy_; clears it.
  void Execute(Op op, absl::Status error);
  // Runs one operation on the calling thread (the loop, or Calibrate before
  // the loop starts).
  absl::Status Run(const Body& body, absl::Time deadline);
  absl::Status CheckRoot(int root) const;
  // Device buffers: null when `a` and `b` are host memory (or no device
  // backend is set: nothing is checked then); otherwise the submitted (or
  // refused, for mixed host and device buffers) work that runs `fn` on the
  // device backend.
  using DeviceBody =
      std::function<absl::Status(DeviceCollectives*, absl::Time deadline)>;
  std::shared_ptr<Work> MaybeDevice(const OpName& name, const void* a,
                                    const void* b, const OpOptions& opts,
                                    DeviceBody fn);

  // Constant after construction (cost_model_ may change in Calibrate, before
  // any operation is submitted).
  const std::unique_ptr<Transport> transport_;
  const CommunicatorOptions options_;
  const Algorithm forced_;
  CostModel cost_model_;
  std::unique_ptr<DeviceCollectives> device_;  // may be null

  // Used by the thread that holds driver_busy_.
  uint32_t next_op_ = 0;
  std::vector<char> scratch_;

  mutable absl::Mutex mu_;
  std::deque<Op> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // A thread (the loop, or a waiter running inline) drives the transport.
  bool driver_busy_ ABSL_GUARDED_BY(mu_) = false;
  // Signalled when the loop may have work: an operation queued while no
  // thread drives, a driver done with operations still queued, stopping.
  absl::CondVar work_cv_;
  absl::Status error_ ABSL_GUARDED_BY(mu_);  // sticky

  std::thread loop_;  // started by Start()
};

}  // namespace plexus::collectives
