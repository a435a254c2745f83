#include "examples/ctr/ctr_gpu.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "collectives/cuda/cuda_util.h"
#include "common/status.h"
#include "examples/ctr/ctr_gpu_kernels.h"
#include "plexus/worker/ps_client.h"
#include "plexus/worker/ps_client_device.h"

namespace plexus::examples {
namespace {

namespace cuda = ::plexus::collectives::cuda;

// How long one wait for the GPU's work may take before it is an error.
constexpr absl::Duration kGpuTimeout = absl::Seconds(60);

absl::Status Cuda(cudaError_t e, absl::string_view what) {
  return cuda::CudaStatus(e, what);
}

absl::Status CheckGpu() {
  if (std::string why = cuda::NoGpuReason(); !why.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(why, " (use --device=cpu)"));
  }
  return absl::OkStatus();
}

// The batch's layout in device memory, and what the kernels produce.
//
// Load lists, per unique id, the batch positions (e * features + j) where
// it occurs, in example order: the backward kernel sums each row's gradient
// over that list, which is the CPU reference's order of summation and makes
// the result independent of thread scheduling.
class GpuCompute final : public CtrCompute {
 public:
  ~GpuCompute() override {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  absl::Status Init() {
    PLEXUS_RETURN_IF_ERROR(CheckGpu());
    return Cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
                "creating a CUDA stream");
  }

  std::string device() const override { return "GPU"; }

  absl::Status Load(const CtrBatch& b) override {
    b_ = &b;
    n_ = static_cast<int>(b.examples.size());
    u_ = static_cast<int>(b.unique_ids.size());
    const size_t positions = b.slot.size();
    // Occurrence lists in CSR form: occ_begin [u + 1], occ [positions].
    std::vector<int32_t> occ_begin(u_ + 1, 0);
    for (int32_t s : b.slot) ++occ_begin[s + 1];
    for (int r = 0; r < u_; ++r) occ_begin[r + 1] += occ_begin[r];
    std::vector<int32_t> next(occ_begin.begin(), occ_begin.end() - 1);
    std::vector<int32_t> occ(positions);
    for (size_t i = 0; i < positions; ++i) {
      occ[next[b.slot[i]]++] = static_cast<int32_t>(i);
    }
    // One copy: slot | occ_begin | occ | labels (as float bits).
    const size_t words = positions + (u_ + 1) + positions + n_;
    // The staging memory may still feed the previous batch's copy.
    PLEXUS_RETURN_IF_ERROR(Wait("the previous batch"));
    PLEXUS_ASSIGN_OR_RETURN(char* host, index_host_.Reserve(words * 4));
    int32_t* h = reinterpret_cast<int32_t*>(host);
    std::memcpy(h, b.slot.data(), positions * 4);
    std::memcpy(h + positions, occ_begin.data(), (u_ + 1) * 4);
    std::memcpy(h + positions + u_ + 1, occ.data(), positions * 4);
    float* labels = reinterpret_cast<float*>(h + 2 * positions + u_ + 1);
    for (int e = 0; e < n_; ++e) labels[e] = b.examples[e].label;
    PLEXUS_ASSIGN_OR_RETURN(int32_t * d, index_.Reserve(words));
    slot_ = d;
    occ_begin_ = d + positions;
    occ_ = d + positions + u_ + 1;
    labels_ = reinterpret_cast<const float*>(d + 2 * positions + u_ + 1);
    return Cuda(
        cudaMemcpyAsync(d, h, words * 4, cudaMemcpyHostToDevice, stream_),
        "copying the batch to the GPU");
  }

  absl::Status Pull(CtrParams& params) override {
    const size_t floats = static_cast<size_t>(u_) * b_->dim;
    PLEXUS_ASSIGN_OR_RETURN(float* rows, rows_.Reserve(floats));
    if (params.reaches_device()) {
      return params.PullToDevice(b_->unique_ids, rows, stream_);
    }
    PLEXUS_ASSIGN_OR_RETURN(char* host, rows_host_.Reserve(floats * 4));
    PLEXUS_RETURN_IF_ERROR(
        params.Pull(b_->unique_ids,
                    absl::MakeSpan(reinterpret_cast<float*>(host), floats)));
    return Cuda(cudaMemcpyAsync(rows, host, floats * 4, cudaMemcpyHostToDevice,
                                stream_),
                "copying rows to the GPU");
  }

  absl::StatusOr<double> ForwardBackward() override {
    if (n_ == 0) return 0.0;
    PLEXUS_RETURN_IF_ERROR(RunForward(/*with_labels=*/true));
    PLEXUS_ASSIGN_OR_RETURN(float* grads,
                            grads_.Reserve(static_cast<size_t>(u_) * b_->dim));
    PLEXUS_RETURN_IF_ERROR(
        Cuda(gpu::LaunchBackward(rows_.get(), b_->dim, u_, occ_begin_, occ_,
                                 b_->features, sum_.get(), dlogit_.get(), grads,
                                 stream_),
             "the backward kernel"));
    PLEXUS_ASSIGN_OR_RETURN(std::vector<double> loss,
                            Download(loss_.get(), "the losses"));
    double total = 0;
    for (double l : loss) total += l;  // example order, as the CPU
    return total;
  }

  absl::Status Push(CtrParams& params) override {
    const size_t floats = static_cast<size_t>(u_) * b_->dim;
    if (params.reaches_device()) {
      return params.PushFromDevice(b_->unique_ids, grads_.get(), stream_);
    }
    PLEXUS_ASSIGN_OR_RETURN(char* host, rows_host_.Reserve(floats * 4));
    PLEXUS_RETURN_IF_ERROR(
        Cuda(cudaMemcpyAsync(host, grads_.get(), floats * 4,
                             cudaMemcpyDeviceToHost, stream_),
             "copying gradients from the GPU"));
    PLEXUS_RETURN_IF_ERROR(Wait("the gradients' copy"));
    return params.Push(
        b_->unique_ids,
        absl::MakeConstSpan(reinterpret_cast<const float*>(host), floats));
  }

  absl::StatusOr<std::vector<double>> Logits() override {
    if (n_ == 0) return std::vector<double>();
    PLEXUS_RETURN_IF_ERROR(RunForward(/*with_labels=*/false));
    return Download(logit_.get(), "the logits");
  }

 private:
  absl::Status RunForward(bool with_labels) {
    const size_t n = n_;
    PLEXUS_ASSIGN_OR_RETURN(double* sum, sum_.Reserve(n * (b_->dim - 1)));
    PLEXUS_ASSIGN_OR_RETURN(double* logit, logit_.Reserve(n));
    PLEXUS_ASSIGN_OR_RETURN(double* dlogit, dlogit_.Reserve(n));
    PLEXUS_ASSIGN_OR_RETURN(double* loss, loss_.Reserve(n));
    return Cuda(gpu::LaunchForward(rows_.get(), b_->dim, slot_, b_->features,
                                   n_, with_labels ? labels_ : nullptr, sum,
                                   logit, dlogit, loss, stream_),
                "the forward kernel");
  }

  // n_ doubles from device memory, once the work before is done.
  absl::StatusOr<std::vector<double>> Download(const double* src,
                                               absl::string_view what) {
    PLEXUS_ASSIGN_OR_RETURN(char* host, out_host_.Reserve(n_ * sizeof(double)));
    PLEXUS_RETURN_IF_ERROR(
        Cuda(cudaMemcpyAsync(host, src, n_ * sizeof(double),
                             cudaMemcpyDeviceToHost, stream_),
             absl::StrCat("copying ", what, " from the GPU")));
    PLEXUS_RETURN_IF_ERROR(Wait(what));
    const double* h = reinterpret_cast<const double*>(host);
    return std::vector<double>(h, h + n_);
  }

  absl::Status Wait(absl::string_view what) {
    return cuda::WaitStream(stream_, absl::Now() + kGpuTimeout,
                            absl::StrCat("the GPU computing ", what));
  }

  cudaStream_t stream_ = nullptr;
  const CtrBatch* b_ = nullptr;
  int n_ = 0, u_ = 0;
  // The batch (one allocation: slot, occ_begin, occ, labels).
  cuda::DeviceArray<int32_t> index_;
  const int32_t* slot_ = nullptr;
  const int32_t* occ_begin_ = nullptr;
  const int32_t* occ_ = nullptr;
  const float* labels_ = nullptr;
  // Rows and gradients [u x dim]; per example: sum [n x k], logit, dlogit,
  // loss.
  cuda::DeviceArray<float> rows_, grads_;
  cuda::DeviceArray<double> sum_, logit_, dlogit_, loss_;
  // Pinned host staging: the batch's index arrays, rows and gradients (host
  // params only), per-example results.
  cuda::PinnedBuffer index_host_, rows_host_, out_host_;
};

class DevicePsParamsImpl final : public DevicePsParams {
 public:
  absl::Status Init() { return CheckGpu(); }

  // One DevicePsClient (and its pinned memory) for every step: created over
  // the first step's client, rebound to each later one.
  void Bind(worker::PsClient* client, const CtrConfig& config,
            uint64_t step_id) override {
    if (device_ == nullptr) {
      auto d = worker::DevicePsClient::Create(client);
      device_status_ = d.status();
      if (d.ok()) device_ = std::move(*d);
    } else {
      device_->Rebind(client);
    }
    host_ = NewPsParams(config, client, step_id);
    dim_ = 1 + config.model_k;
    step_.step_id = step_id;
  }

  absl::Status Pull(absl::Span<const uint64_t> ids,
                    absl::Span<float> out) override {
    return host_->Pull(ids, out);
  }
  absl::Status Push(absl::Span<const uint64_t> ids,
                    absl::Span<const float> grads) override {
    return host_->Push(ids, grads);
  }
  bool reaches_device() const override { return true; }
  absl::Status PullToDevice(absl::Span<const uint64_t> ids, float* out,
                            void* stream) override {
    PLEXUS_RETURN_IF_ERROR(device_status_);
    return device_->PullSparse(kCtrTable, ids, dim_, out, step_, stream);
  }
  absl::Status PushFromDevice(absl::Span<const uint64_t> ids,
                              const float* grads, void* stream) override {
    PLEXUS_RETURN_IF_ERROR(device_status_);
    return device_->PushSparse(kCtrTable, ids, dim_, grads, step_, stream)
        .status();
  }

 private:
  std::unique_ptr<worker::DevicePsClient> device_;
  absl::Status device_status_;  // of creating device_
  std::unique_ptr<CtrParams> host_;
  int64_t dim_ = 0;
  worker::StepOptions step_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<CtrCompute>> NewGpuCompute() {
  auto c = std::make_unique<GpuCompute>();
  PLEXUS_RETURN_IF_ERROR(c->Init());
  return c;
}

absl::StatusOr<std::unique_ptr<DevicePsParams>> NewDevicePsParams() {
  auto p = std::make_unique<DevicePsParamsImpl>();
  PLEXUS_RETURN_IF_ERROR(p->Init());
  return p;
}

}  // namespace plexus::examples
