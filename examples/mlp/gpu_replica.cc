#include "examples/mlp/gpu_replica.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "collectives/cuda/cuda_util.h"
#include "collectives/rendezvous/store.h"
#include "common/status.h"
#include "examples/mlp/gpu_kernels.h"
#include "examples/mlp/mlp.h"
#include "plexus/config.h"
#if PLEXUS_HAVE_NCCL
#include "collectives/nccl/nccl_communicator.h"
#endif

namespace plexus::examples {
namespace {

#if PLEXUS_HAVE_NCCL
using collectives::DataType;
using collectives::ReduceOp;
using collectives::nccl::NcclCommunicator;
#endif

namespace cuda = ::plexus::collectives::cuda;

// CUDA's errors as statuses (NcclCommunicator translates NCCL's).
absl::Status Cuda(cudaError_t e, absl::string_view what) {
  return cuda::CudaStatus(e, what);
}

// The caller's n elements into `to` (an earlier Reserve made room).
template <typename T>
absl::Status Upload(const cuda::DeviceArray<T>& to, const T* host, size_t n,
                    cudaStream_t s) {
  return Cuda(
      cudaMemcpyAsync(to.get(), host, n * sizeof(T), cudaMemcpyHostToDevice, s),
      "copy to the GPU");
}

class GpuReplica : public Replica {
 public:
  GpuReplica(const DigitsSplit& data, const TrainOptions& o, int rank,
             int world, absl::Duration timeout)
      : data_(data),
        o_(o),
        rank_(rank),
        world_(world),
        timeout_(timeout),
        model_(o.hidden) {}

  ~GpuReplica() override {
#if PLEXUS_HAVE_NCCL
    comm_.reset();  // before the stream its operations were enqueued on
#endif
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  absl::Status Init(collectives::Store* store) {
    int devices = 0;
    if (cudaError_t e = cudaGetDeviceCount(&devices); e != cudaSuccess) {
      return absl::FailedPreconditionError(
          absl::StrCat("no usable GPU: ", cudaGetErrorString(e)));
    }
    if (devices == 0) {
      return absl::FailedPreconditionError("no usable GPU: 0 devices");
    }
    PLEXUS_RETURN_IF_ERROR(
        Cuda(cudaSetDevice(rank_ % devices), "cudaSetDevice"));
    PLEXUS_RETURN_IF_ERROR(
        Cuda(cudaStreamCreate(&stream_), "cudaStreamCreate"));

    const size_t n = model_.num_params();
    const size_t rows = std::max(data_.train.size(), data_.test.size());
    const size_t hidden = o_.hidden;
    PLEXUS_RETURN_IF_ERROR(params_.Reserve(n).status());
    PLEXUS_RETURN_IF_ERROR(velocity_.Reserve(n).status());
    PLEXUS_RETURN_IF_ERROR(grad_.Reserve(n + 1).status());  // + the loss slot
    PLEXUS_RETURN_IF_ERROR(
        train_x_.Reserve(data_.train.features.size()).status());
    PLEXUS_RETURN_IF_ERROR(train_y_.Reserve(data_.train.size()).status());
    PLEXUS_RETURN_IF_ERROR(
        test_x_.Reserve(data_.test.features.size()).status());
    PLEXUS_RETURN_IF_ERROR(index_.Reserve(data_.train.size()).status());
    PLEXUS_RETURN_IF_ERROR(pred_.Reserve(data_.test.size()).status());
    PLEXUS_RETURN_IF_ERROR(h_.Reserve(rows * hidden).status());
    PLEXUS_RETURN_IF_ERROR(dh_.Reserve(rows * hidden).status());
    PLEXUS_RETURN_IF_ERROR(logits_.Reserve(rows * kDigitsClasses).status());
    PLEXUS_RETURN_IF_ERROR(dlogits_.Reserve(rows * kDigitsClasses).status());
    PLEXUS_RETURN_IF_ERROR(loss_.Reserve(rows).status());
    PLEXUS_RETURN_IF_ERROR(
        Cuda(cudaMemsetAsync(velocity_.get(), 0, n * sizeof(float), stream_),
             "clearing the momentum"));
    PLEXUS_RETURN_IF_ERROR(Upload(train_x_, data_.train.features.data(),
                                  data_.train.features.size(), stream_));
    PLEXUS_RETURN_IF_ERROR(Upload(train_y_, data_.train.labels.data(),
                                  data_.train.size(), stream_));
    PLEXUS_RETURN_IF_ERROR(Upload(test_x_, data_.test.features.data(),
                                  data_.test.features.size(), stream_));
    model_.Init(o_.seed);
    PLEXUS_RETURN_IF_ERROR(Upload(params_, model_.params().data(), n, stream_));
    PLEXUS_RETURN_IF_ERROR(Sync("uploading the data"));

    if (world_ == 1) return absl::OkStatus();
#if PLEXUS_HAVE_NCCL
    if (store == nullptr) {
      return absl::InvalidArgumentError("world > 1 needs a rendezvous store");
    }
    PLEXUS_ASSIGN_OR_RETURN(
        comm_,
        NcclCommunicator::Create(
            store, rank_, world_,
            {.device = rank_ % devices, .init_timeout = timeout_}),
        "joining the NCCL group");
    return absl::OkStatus();
#else
    return absl::FailedPreconditionError(
        "more than one GPU rank needs NCCL, which this build did not find");
#endif
  }

  int rank() const override { return rank_; }
  int world() const override { return world_; }
  size_t num_params() const override { return model_.num_params(); }
  std::string algorithm() const override {
    return world_ > 1 ? "nccl" : "none";
  }

  absl::Status SyncInitialParams() override {
#if PLEXUS_HAVE_NCCL
    if (comm_ != nullptr) {
      PLEXUS_RETURN_IF_ERROR(
          comm_->Broadcast(params_.get(), model_.num_params(),
                           DataType::kFloat32, /*root=*/0, Deadline(), stream_),
          "broadcasting the initial parameters");
    }
#endif
    return Sync("broadcasting the initial parameters");
  }

  absl::StatusOr<double> ComputeGradient(absl::Span<const int> index,
                                         float scale) override {
    const size_t n = model_.num_params();
    if (index.empty()) {  // a rank with no share of a short last batch
      PLEXUS_RETURN_IF_ERROR(Cuda(
          cudaMemsetAsync(grad_.get(), 0, (n + 1) * sizeof(float), stream_),
          "clearing the gradient"));
      PLEXUS_RETURN_IF_ERROR(Sync("clearing the gradient"));
      return 0.0;
    }
    PLEXUS_RETURN_IF_ERROR(Upload(index_, index.data(), index.size(), stream_));
    PLEXUS_RETURN_IF_ERROR(Cuda(
        gpu::LaunchGradient(params_.get(), o_.hidden, train_x_.get(),
                            train_y_.get(), index_.get(),
                            static_cast<int>(index.size()), scale, scratch(),
                            grad_.get(), grad_.get() + n, stream_),
        "gradient kernels"));
    float loss = 0;
    PLEXUS_RETURN_IF_ERROR(
        Cuda(cudaMemcpyAsync(&loss, grad_.get() + n, sizeof(float),
                             cudaMemcpyDeviceToHost, stream_),
             "reading the loss"));
    PLEXUS_RETURN_IF_ERROR(Sync("computing the gradient"));
    return loss;
  }

  absl::StatusOr<double> AllReduceGradient(double loss) override {
    const size_t n = model_.num_params();
    float slot = static_cast<float>(loss);
    PLEXUS_RETURN_IF_ERROR(
        Cuda(cudaMemcpyAsync(grad_.get() + n, &slot, sizeof(float),
                             cudaMemcpyHostToDevice, stream_),
             "writing the loss"));
#if PLEXUS_HAVE_NCCL
    if (comm_ != nullptr) {
      PLEXUS_RETURN_IF_ERROR(
          comm_->AllReduce(grad_.get(), grad_.get(), n + 1, DataType::kFloat32,
                           ReduceOp::kSum, Deadline(), stream_),
          "all-reduce of the gradient");
    }
#endif
    PLEXUS_RETURN_IF_ERROR(
        Cuda(cudaMemcpyAsync(&slot, grad_.get() + n, sizeof(float),
                             cudaMemcpyDeviceToHost, stream_),
             "reading the summed loss"));
    PLEXUS_RETURN_IF_ERROR(Sync("all-reduce of the gradient"));
    return slot;
  }

  absl::Status ApplyUpdate() override {
    PLEXUS_RETURN_IF_ERROR(
        Cuda(gpu::LaunchMomentumSgd(params_.get(), velocity_.get(), grad_.get(),
                                    model_.num_params(), o_.lr, o_.momentum,
                                    o_.weight_decay, stream_),
             "update kernel"));
    return Sync("applying the update");
  }

  absl::StatusOr<double> TestAccuracy() override {
    const size_t n = data_.test.size();
    if (n == 0) return 0.0;
    PLEXUS_RETURN_IF_ERROR(
        Cuda(gpu::LaunchPredict(params_.get(), o_.hidden, test_x_.get(),
                                static_cast<int>(n), scratch(), pred_.get(),
                                stream_),
             "prediction kernels"));
    std::vector<int> pred(n);
    PLEXUS_RETURN_IF_ERROR(
        Cuda(cudaMemcpyAsync(pred.data(), pred_.get(), n * sizeof(int),
                             cudaMemcpyDeviceToHost, stream_),
             "reading the predictions"));
    PLEXUS_RETURN_IF_ERROR(Sync("evaluating"));
    size_t correct = 0;
    for (size_t e = 0; e < n; ++e) correct += pred[e] == data_.test.labels[e];
    return static_cast<double>(correct) / n;
  }

  absl::StatusOr<uint64_t> ParamHash() override {
    PLEXUS_RETURN_IF_ERROR(
        Cuda(cudaMemcpyAsync(model_.params().data(), params_.get(),
                             model_.num_params() * sizeof(float),
                             cudaMemcpyDeviceToHost, stream_),
             "reading the parameters"));
    PLEXUS_RETURN_IF_ERROR(Sync("reading the parameters"));
    return HashFloats(model_.params());
  }

  absl::Status CheckAgreement(uint64_t hash) override {
#if PLEXUS_HAVE_NCCL
    if (comm_ == nullptr) return absl::OkStatus();
    cuda::DeviceArray<uint64_t> all;
    PLEXUS_RETURN_IF_ERROR(all.Reserve(world_ + 1).status());
    PLEXUS_RETURN_IF_ERROR(Upload(all, &hash, 1, stream_));
    PLEXUS_RETURN_IF_ERROR(
        comm_->AllGather(all.get(), all.get() + 1, 1, DataType::kInt64,
                         Deadline(), stream_),
        "gathering the parameter hashes");
    std::vector<uint64_t> hashes(world_);
    PLEXUS_RETURN_IF_ERROR(Cuda(
        cudaMemcpyAsync(hashes.data(), all.get() + 1, world_ * sizeof(uint64_t),
                        cudaMemcpyDeviceToHost, stream_),
        "reading the hashes"));
    PLEXUS_RETURN_IF_ERROR(Sync("gathering the parameter hashes"));
    for (int i = 0; i < world_; ++i) {
      if (hashes[i] != hash) {
        return absl::InternalError(absl::StrFormat(
            "replicas diverged: rank %d's parameters hash to %016x, rank "
            "%d's to %016x",
            i, hashes[i], rank_, hash));
      }
    }
#endif
    return absl::OkStatus();
  }

 private:
  gpu::Scratch scratch() const {
    return {h_.get(), dh_.get(), logits_.get(), dlogits_.get(), loss_.get()};
  }
  absl::Time Deadline() const { return absl::Now() + timeout_; }
  absl::Status Sync(absl::string_view what) {
    return Cuda(cudaStreamSynchronize(stream_), what);
  }

  const DigitsSplit& data_;
  const TrainOptions o_;
  const int rank_, world_;
  const absl::Duration timeout_;  // per operation, and for joining
  Mlp model_;                     // host copy: initial values, hashing
  cudaStream_t stream_ = nullptr;
#if PLEXUS_HAVE_NCCL
  std::unique_ptr<NcclCommunicator> comm_;  // null when world_ == 1
#endif
  cuda::DeviceArray<float> params_, velocity_, grad_, train_x_, test_x_;
  cuda::DeviceArray<float> h_, dh_, logits_, dlogits_, loss_;
  cuda::DeviceArray<int> train_y_, index_, pred_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Replica>> NewGpuReplica(
    const DigitsSplit& data, const TrainOptions& options,
    collectives::Store* store, int rank, int world, absl::Duration timeout) {
  PLEXUS_RETURN_IF_ERROR(ValidateTrainOptions(options));
  auto replica =
      std::make_unique<GpuReplica>(data, options, rank, world, timeout);
  PLEXUS_RETURN_IF_ERROR(replica->Init(store),
                         absl::StrCat("GPU replica of rank ", rank));
  return replica;
}

}  // namespace plexus::examples
