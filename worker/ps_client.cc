#include "plexus/worker/ps_client.h"

#include <glog/logging.h>
#include <grpcpp/grpcpp.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/auth.h"
#include "common/data_frame.h"
#include "common/error_info.h"
#include "common/grpc_status.h"
#include "common/hash.h"
#include "common/id_index.h"
#include "common/memory.h"
#include "common/shard_map.h"
#include "common/status.h"
#include "common/thread_pool.h"
#include "common/tls.h"
#include "common/tsan.h"
#include "plexus/v1/ps.grpc.pb.h"

namespace plexus::worker {
namespace {

constexpr int64_t kHeadroomBytes = 64 << 10;
// A sparse row's bytes in a message beside its values: its id and its share
// of the framing.
constexpr int64_t kSparseRowFraming = 16;
// The smallest piece PsClientOptions::min_pieces splits a call into.
constexpr int64_t kMinPieceBytes = 128 << 10;

// A map the client made for a standalone set of shards.
class StaticMapSource : public ShardMapSource {
 public:
  explicit StaticMapSource(v1::ShardMap map) : map_(std::move(map)) {}
  absl::StatusOr<v1::ShardMap> Fetch() override {
    MutexLock lock(&mu_);
    return map_;
  }
  // Places a dense variable (standalone mode owns placement).
  absl::StatusOr<v1::ShardMap> Place(const std::string& name, int64_t rows) {
    MutexLock lock(&mu_);
    PLEXUS_RETURN_IF_ERROR(PlaceDenseVariable(name, rows, &map_));
    return map_;
  }

 private:
  absl::Mutex mu_;
  v1::ShardMap map_ ABSL_GUARDED_BY(mu_);
};

bool IsStaleMap(const absl::Status& st) {
  if (st.code() != absl::StatusCode::kFailedPrecondition) return false;
  auto info = GetErrorInfo(st);
  return info.has_value() &&
         info->reason() == v1::ErrorInfo::REASON_STALE_SHARD_MAP;
}

// The spec of a [rows, cols] fp32 tensor; its bytes travel separately (see
// DataCall).
void SetF32Spec(int64_t rows, int64_t cols, v1::Tensor* t) {
  t->mutable_spec()->set_dtype(v1::DTYPE_FLOAT32);
  t->mutable_spec()->add_shape(rows);
  t->mutable_spec()->add_shape(cols);
}

absl::Span<char> F32Buffer(float* data, int64_t elems) {
  return absl::Span<char>(reinterpret_cast<char*>(data),
                          static_cast<size_t>(elems) * sizeof(float));
}

absl::string_view F32Bytes(const float* data, int64_t elems) {
  return absl::string_view(reinterpret_cast<const char*>(data),
                           static_cast<size_t>(elems) * sizeof(float));
}

// Copies a pulled fp32 tensor into the buffers `into` (in order: its first
// bytes fill into[0], the next into[1], ...), or, when its bytes `landed`
// there already (the direct plane read them straight in), checks its dtype.
absl::Status CopyF32(const v1::Tensor& t,
                     absl::Span<const absl::Span<char>> into, bool landed) {
  if (landed && t.spec().dtype() == v1::DTYPE_FLOAT32) {
    return absl::OkStatus();
  }
  size_t bytes = 0;
  for (absl::Span<char> b : into) bytes += b.size();
  if (t.spec().dtype() != v1::DTYPE_FLOAT32 || t.data().size() != bytes) {
    return absl::InternalError(
        absl::StrCat("shard returned ", t.data().size(), " bytes of dtype ",
                     v1::DType_Name(t.spec().dtype()), ", expected ",
                     bytes / sizeof(float), " fp32"));
  }
  const char* from = t.data().data();
  for (absl::Span<char> b : into) {
    std::memcpy(b.data(), from, b.size());
    from += b.size();
  }
  return absl::OkStatus();
}

// A connection of the direct data plane and its reading side (which may
// hold bytes read ahead); the socket is closed with it.
struct DataConnection {
  explicit DataConnection(int fd) : fd(fd), reader(fd) {}
  ~DataConnection() { close(fd); }
  DataConnection(const DataConnection&) = delete;
  DataConnection& operator=(const DataConnection&) = delete;

  const int fd;
  FrameReader reader;
};

// The state of an asynchronous call, shared by the future and the task that
// completes it (either may go first).
struct CallState {
  absl::Notification done;
  absl::Status status;  // written once, before done is notified
  void Done(absl::Status st) {
    status = std::move(st);
    TsanRelease(&done);  // absl::Notification's edge, for TSan (common/tsan.h)
    done.Notify();
  }
  // Status once done has been notified.
  const absl::Status& Result() {
    TsanAcquire(&done);
    return status;
  }
};

class Future : public PsFuture {
 public:
  explicit Future(std::shared_ptr<CallState> state)
      : state_(std::move(state)) {}
  absl::Status Wait(absl::Time deadline) override {
    if (!state_->done.WaitForNotificationWithDeadline(deadline)) {
      return absl::DeadlineExceededError("PS call still running");
    }
    return state_->Result();
  }
  absl::Status Wait() override {
    state_->done.WaitForNotification();
    return state_->Result();
  }

 private:
  std::shared_ptr<CallState> state_;
};

// The sparse rows of a push grouped by shard: unique ids and, for each
// position of the caller's ids, where its row is in the unique list.
struct SparsePlan {
  std::vector<std::vector<uint64_t>> ids;  // per shard, unique
  // For caller position i: shard and index into ids[shard].
  std::vector<std::pair<uint32_t, uint32_t>> where;
  // One shard and no repeated id: ids[0] is the caller's ids, in order, so
  // gradients leave from the caller's buffer.
  bool identity = false;
};

SparsePlan PlanSparse(const ShardRouter& router, const std::string& table,
                      absl::Span<const uint64_t> ids) {
  SparsePlan plan;
  plan.ids.resize(router.num_shards());
  plan.where.resize(ids.size());
  const uint64_t th = HashName(table);
  IdIndex first(ids.size());  // id -> the caller position that named it first
  for (size_t i = 0; i < ids.size(); ++i) {
    auto [at, fresh] = first.Insert(ids[i], static_cast<uint32_t>(i));
    if (fresh) {
      const uint32_t s = router.ShardOfRow(th, ids[i]);
      plan.where[i] = {s, static_cast<uint32_t>(plan.ids[s].size())};
      plan.ids[s].push_back(ids[i]);
    } else {
      plan.where[i] = plan.where[at];
    }
  }
  plan.identity = router.num_shards() == 1 && plan.ids[0].size() == ids.size();
  return plan;
}

// The pieces of a sparse pull (PsClientImpl::AssignPieces): each id goes to
// one of the parts of its shard's ids, split by a hash of the id (PartOf) as
// RowsPerPiece splits that many rows. Every position naming an id is in the
// same piece, which pulls the id once, lands its row straight at the first
// of them and copies it to the rest: past the passes over the ids that
// group them by piece, all the work (removing repeats, the calls, the
// copies) runs in parallel, piece by piece, each on its own positions.
struct SparsePieces {
  std::vector<uint32_t> first;  // shard s's pieces: [first[s], first[s + 1])
  // Piece p's caller positions, in order: positions[start[p] ..
  // start[p + 1]).
  std::vector<uint32_t> start;
  std::vector<uint32_t> positions;
  size_t size() const { return start.size() - 1; }
  absl::Span<const uint32_t> Of(size_t piece) const {
    return absl::MakeConstSpan(positions).subspan(
        start[piece], start[piece + 1] - start[piece]);
  }
  uint32_t ShardOf(size_t piece) const {
    return static_cast<uint32_t>(
        std::upper_bound(first.begin(), first.end(), piece) - first.begin() -
        1);
  }
};

// Which of `parts` parts of a shard's ids `id` is in: a hash of the id of
// its own (unlike the shard's, which mixes in the table, and IdIndex's).
uint32_t PartOf(uint64_t id, uint32_t parts) {
  uint64_t h = (id ^ (id >> 31)) * 0xBF58476D1CE4E5B9ull;
  h ^= h >> 29;
  return static_cast<uint32_t>(((h >> 32) * parts) >> 32);
}

class PsClientImpl : public PsClient {
 public:
  PsClientImpl(PsClientOptions options, CallerIdentity identity,
               std::unique_ptr<StaticMapSource> own_source)
      : options_(std::move(options)),
        identity_(std::move(identity)),
        own_source_(std::move(own_source)),
        source_(own_source_ ? own_source_.get() : options_.map_source),
        min_pieces_(options_.min_pieces > 0
                        ? options_.min_pieces
                        : std::clamp(UsableCpus() / 2, 1, 8)),
        pool_(options_.num_threads > 0 ? options_.num_threads : 8) {}

  absl::Status Init() {
    PLEXUS_ASSIGN_OR_RETURN(
        credentials_,
        MakeChannelCredentials({.ca_file = options_.tls_ca_file,
                                .cert_file = options_.tls_cert_file,
                                .key_file = options_.tls_key_file}),
        "TLS to the PS shards");
    PLEXUS_RETURN_IF_ERROR(RefreshMap());
    if (own_source_ != nullptr) PLEXUS_RETURN_IF_ERROR(InstallMap());
    return absl::OkStatus();
  }

  // ---- admin ----

  absl::Status CreateTable(const v1::TableConfig& config) override {
    auto router = Router();
    return ForEachShard(router->num_shards(), [&](uint32_t s) {
      v1::CreateTableRequest req;
      FillHeader(req.mutable_header(), *router, {});
      *req.mutable_config() = config;
      v1::CreateTableResponse resp;
      return Call(s,
                  [&](v1::ParameterServer::Stub* stub, grpc::ClientContext* c) {
                    return stub->CreateTable(c, req, &resp);
                  });
    });
  }

  absl::Status CreateVariable(const v1::VariableConfig& config,
                              absl::Span<const float> initial) override {
    if (config.spec().shape_size() < 1 || config.spec().shape(0) < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "variable ", config.name(), ": shape must have rank >= 1"));
    }
    int64_t rows = config.spec().shape(0);
    int64_t row_elems = RowElems(config.spec());
    if (!initial.empty() &&
        static_cast<int64_t>(initial.size()) != rows * row_elems) {
      return absl::InvalidArgumentError(absl::StrCat(
          "variable ", config.name(), ": initial value has ", initial.size(),
          " elements, the shape needs ", rows * row_elems));
    }
    SetTrailingDims(config.name(), config.spec());
    if (own_source_ != nullptr) {
      PLEXUS_ASSIGN_OR_RETURN(auto map,
                              own_source_->Place(config.name(), rows));
      SetRouter(std::make_shared<ShardRouter>(std::move(map)));
      PLEXUS_RETURN_IF_ERROR(InstallMap());
    }
    auto router = Router();
    PLEXUS_ASSIGN_OR_RETURN(auto pieces,
                            router->SplitDense(config.name(), 0, rows));
    return ForEach(pieces.size(), [&](size_t i) {
      const DensePiece& p = pieces[i];
      v1::CreateVariableRequest req;
      FillHeader(req.mutable_header(), *router, {});
      *req.mutable_config() = config;
      req.mutable_rows()->set_row_begin(p.row_begin);
      req.mutable_rows()->set_row_end(p.row_end);
      if (!initial.empty()) {
        Tensor3(p.row_end - p.row_begin, config.spec(),
                initial.data() + p.row_begin * row_elems,
                req.mutable_initial_value());
      }
      v1::CreateVariableResponse resp;
      return Call(p.shard,
                  [&](v1::ParameterServer::Stub* stub, grpc::ClientContext* c) {
                    return stub->CreateVariable(c, req, &resp);
                  });
    });
  }

  // ---- sparse ----

  absl::Status PullSparse(const std::string& table,
                          absl::Span<const uint64_t> ids, int64_t dim,
                          absl::Span<float> out,
                          const StepOptions& step) override {
    if (dim <= 0 || out.size() != ids.size() * static_cast<size_t>(dim)) {
      return absl::InvalidArgumentError(
          absl::StrCat("PullSparse: out has ", out.size(), " floats for ",
                       ids.size(), " ids of dim ", dim));
    }
    return WithMapRetry([&](std::shared_ptr<const ShardRouter> router) {
      const int64_t row_bytes = dim * int64_t{sizeof(float)};
      const SparsePieces pieces = AssignPieces(*router, table, ids, row_bytes);
      // A part may come out a little over RowsPerPiece's share: it goes in
      // as many calls as the message limit asks.
      const size_t most = MostRowsPerCall(row_bytes, kSparseRowFraming);
      return ForEach(pieces.size(), [&](size_t p) {
        const absl::Span<const uint32_t> positions = pieces.Of(p);
        if (positions.empty()) return absl::OkStatus();
        const uint32_t shard = pieces.ShardOf(p);
        std::vector<uint64_t> unique;  // the piece's ids, each once
        std::vector<uint32_t> at;      // and where each is named first
        std::vector<std::pair<uint32_t, uint32_t>> repeats;  // (position, k)
        unique.reserve(positions.size());
        at.reserve(positions.size());
        IdIndex index(positions.size());
        for (uint32_t i : positions) {
          auto [k, fresh] =
              index.Insert(ids[i], static_cast<uint32_t>(unique.size()));
          if (fresh) {
            unique.push_back(ids[i]);
            at.push_back(i);
          } else {
            repeats.emplace_back(i, k);
          }
        }
        for (size_t b = 0; b < unique.size(); b += most) {
          const size_t e = std::min(unique.size(), b + most);
          v1::PullRequest req;
          FillHeader(req.mutable_header(), *router, step);
          req.set_value_dtype(v1::DTYPE_FLOAT32);
          v1::SparseLookup* l = req.add_sparse();
          l->set_table(table);
          l->set_create_missing(true);
          l->mutable_ids()->Add(unique.begin() + b, unique.begin() + e);
          // Where the rows land: runs of adjacent positions.
          std::vector<absl::Span<char>> into;
          for (size_t k = b; k < e; ++k) {
            absl::Span<char> row = F32Buffer(out.data() + at[k] * dim, dim);
            if (!into.empty() &&
                into.back().data() + into.back().size() == row.data()) {
              into.back() = {into.back().data(),
                             into.back().size() + row.size()};
            } else {
              into.push_back(row);
            }
          }
          v1::PullResponse resp;
          bool landed = false;
          PLEXUS_RETURN_IF_ERROR(DataCall(shard, &req, &resp, into, &landed));
          if (resp.sparse_size() != 1) {
            return absl::InternalError("shard answered a pull with no rows");
          }
          PLEXUS_RETURN_IF_ERROR(
              CopyF32(resp.sparse(0).values(), into, landed));
        }
        for (auto [i, k] : repeats) {
          std::memcpy(out.data() + size_t{i} * dim,
                      out.data() + size_t{at[k]} * dim, dim * sizeof(float));
        }
        return absl::OkStatus();
      });
    });
  }

  absl::StatusOr<PushResult> PushSparse(const std::string& table,
                                        absl::Span<const uint64_t> ids,
                                        int64_t dim,
                                        absl::Span<const float> grads,
                                        const StepOptions& step) override {
    if (dim <= 0 || grads.size() != ids.size() * static_cast<size_t>(dim)) {
      return absl::InvalidArgumentError(
          absl::StrCat("PushSparse: grads has ", grads.size(), " floats for ",
                       ids.size(), " ids of dim ", dim));
    }
    PushResult total;
    absl::Status st =
        WithMapRetry([&](std::shared_ptr<const ShardRouter> router) {
          total = PushResult();
          SparsePlan plan = PlanSparse(*router, table, ids);
          // Duplicate ids are summed here, so each shard gets one row per
          // id; with the identity plan the caller's gradients go as they are.
          std::vector<std::vector<float>> own(router->num_shards());
          std::vector<const float*> sums(router->num_shards(), grads.data());
          if (!plan.identity) {
            for (uint32_t s = 0; s < router->num_shards(); ++s) {
              own[s].assign(plan.ids[s].size() * dim, 0.0f);
              sums[s] = own[s].data();
            }
            for (size_t i = 0; i < ids.size(); ++i) {
              auto [s, k] = plan.where[i];
              float* dst = own[s].data() + size_t{k} * dim;
              const float* src = grads.data() + i * dim;
              for (int64_t j = 0; j < dim; ++j) dst[j] += src[j];
            }
          }
          std::vector<std::tuple<uint32_t, size_t, size_t, uint32_t, uint32_t>>
              work;
          for (uint32_t s = 0; s < router->num_shards(); ++s) {
            size_t n = plan.ids[s].size();
            const size_t per_chunk = RowsPerPiece(
                n, dim * int64_t{sizeof(float)}, kSparseRowFraming);
            uint32_t chunks =
                static_cast<uint32_t>((n + per_chunk - 1) / per_chunk);
            for (uint32_t c = 0; c < chunks; ++c) {
              work.emplace_back(s, c * per_chunk,
                                std::min(n, (c + 1) * per_chunk), c, chunks);
            }
          }
          absl::Mutex mu;
          return ForEach(work.size(), [&](size_t w) {
            auto [s, b, e, chunk, chunks] = work[w];
            v1::PushRequest req;
            FillHeader(req.mutable_header(), *router, step);
            req.set_push_seq(step.push_seq);
            req.set_chunk_index(chunk);
            req.set_num_chunks(chunks);
            v1::SparseUpdate* u = req.add_sparse();
            u->set_table(table);
            u->mutable_ids()->Add(plan.ids[s].begin() + b,
                                  plan.ids[s].begin() + e);
            SetF32Spec(static_cast<int64_t>(e - b), dim, u->mutable_grads());
            v1::PushResponse resp;
            PLEXUS_RETURN_IF_ERROR(
                DataCall(s, &req, &resp,
                         {F32Bytes(sums[s] + b * dim,
                                   static_cast<int64_t>(e - b) * dim)}));
            MutexLock lock(&mu);
            Accumulate(resp.outcome(), resp.rows_applied(),
                       resp.rows_not_admitted(), resp.skipped_non_finite(),
                       &total);
            return absl::OkStatus();
          });
        });
    if (!st.ok()) return st;
    return total;
  }

  // ---- dense ----

  absl::Status PullDense(const std::string& variable, absl::Span<float> out,
                         const StepOptions& step) override {
    PLEXUS_RETURN_IF_ERROR(EnsurePlaced(variable));
    return WithMapRetry([&](std::shared_ptr<const ShardRouter> router) {
      PLEXUS_ASSIGN_OR_RETURN(auto pieces,
                              DensePieces(*router, variable, out.size()));
      int64_t row_elems = RowElemsOf(*router, variable, out.size());
      return ForEach(pieces.size(), [&](size_t i) {
        const DensePiece& p = pieces[i];
        v1::PullRequest req;
        FillHeader(req.mutable_header(), *router, step);
        req.set_value_dtype(v1::DTYPE_FLOAT32);
        v1::DenseSliceRef* d = req.add_dense();
        d->set_variable(variable);
        d->mutable_rows()->set_row_begin(p.row_begin);
        d->mutable_rows()->set_row_end(p.row_end);
        v1::PullResponse resp;
        float* dst = out.data() + p.row_begin * row_elems;
        const int64_t elems = (p.row_end - p.row_begin) * row_elems;
        const absl::Span<char> into[] = {F32Buffer(dst, elems)};
        bool landed = false;
        PLEXUS_RETURN_IF_ERROR(DataCall(p.shard, &req, &resp, into, &landed));
        if (resp.dense_size() != 1) {
          return absl::InternalError(
              "shard answered a dense pull with no slice");
        }
        return CopyF32(resp.dense(0).tensor(), into, landed);
      });
    });
  }

  absl::StatusOr<PushResult> PushDense(const std::string& variable,
                                       absl::Span<const float> grads,
                                       const StepOptions& step) override {
    return PushDensePieces(variable, grads, {}, false, step);
  }

  absl::StatusOr<PushResult> PushPullDense(const std::string& variable,
                                           absl::Span<const float> grads,
                                           absl::Span<float> out,
                                           const StepOptions& step) override {
    if (grads.size() != out.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "push-pull of ", variable, ": ", grads.size(),
          " gradient elements but room for ", out.size(), " values"));
    }
    if (!grads.empty() && grads.data() < out.data() + out.size() &&
        out.data() < grads.data() + grads.size()) {
      // A retried piece would send values that landed over its gradient.
      return absl::InvalidArgumentError(
          absl::StrCat("push-pull of ", variable,
                       ": the gradient and value buffers overlap"));
    }
    return PushDensePieces(variable, grads, out, true, step);
  }

  std::unique_ptr<PsFuture> PullSparseAsync(const std::string& table,
                                            absl::Span<const uint64_t> ids,
                                            int64_t dim, absl::Span<float> out,
                                            const StepOptions& step) override {
    // The caller keeps ids/out alive until the future completes; the table
    // name is copied.
    auto state = std::make_shared<CallState>();
    async_pool_.Schedule([this, state, table, ids, dim, out, step] {
      state->Done(PullSparse(table, ids, dim, out, step));
    });
    return std::make_unique<Future>(state);
  }

  std::unique_ptr<PsFuture> PushSparseAsync(const std::string& table,
                                            absl::Span<const uint64_t> ids,
                                            int64_t dim,
                                            absl::Span<const float> grads,
                                            const StepOptions& step) override {
    auto state = std::make_shared<CallState>();
    async_pool_.Schedule([this, state, table, ids, dim, grads, step] {
      state->Done(PushSparse(table, ids, dim, grads, step).status());
    });
    return std::make_unique<Future>(state);
  }

  v1::ShardMap shard_map() const override { return Router()->map(); }

  absl::StatusOr<std::vector<v1::GetShardInfoResponse>> ShardInfo() override {
    auto router = Router();
    std::vector<v1::GetShardInfoResponse> out(router->num_shards());
    PLEXUS_RETURN_IF_ERROR(ForEachShard(router->num_shards(), [&](uint32_t s) {
      v1::GetShardInfoRequest req;
      return Call(s,
                  [&](v1::ParameterServer::Stub* stub, grpc::ClientContext* c) {
                    return stub->GetShardInfo(c, req, &out[s]);
                  });
    }));
    return out;
  }

 private:
  struct Piece : DensePiece {
    uint32_t chunk = 0;
    uint32_t num_chunks = 1;
  };

  static int64_t RowElems(const v1::TensorSpec& spec) {
    int64_t n = 1;
    for (int i = 1; i < spec.shape_size(); ++i) n *= spec.shape(i);
    return n;
  }

  int64_t RowElemsOf(const ShardRouter& router, const std::string& variable,
                     size_t total_elems) const {
    int64_t rows = router.DenseRows(variable).value_or(1);
    return rows == 0 ? 0 : static_cast<int64_t>(total_elems) / rows;
  }

  // Dense pieces per shard, each further split by rows (RowsPerPiece).
  absl::StatusOr<std::vector<Piece>> DensePieces(const ShardRouter& router,
                                                 const std::string& variable,
                                                 size_t total_elems) const {
    PLEXUS_ASSIGN_OR_RETURN(int64_t rows, router.DenseRows(variable));
    if (rows == 0 ? total_elems != 0 : total_elems % rows != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "variable ", variable, " has ", rows, " rows; a buffer of ",
          total_elems, " elements is not a whole number of rows"));
    }
    int64_t row_elems =
        rows == 0 ? 1 : static_cast<int64_t>(total_elems) / rows;
    PLEXUS_ASSIGN_OR_RETURN(auto slices, router.SplitDense(variable, 0, rows));
    std::vector<Piece> pieces;
    for (const DensePiece& s : slices) {
      int64_t n = s.row_end - s.row_begin;
      const auto per_chunk = static_cast<int64_t>(RowsPerPiece(
          static_cast<size_t>(n), row_elems * int64_t{sizeof(float)},
          /*framing=*/0));
      uint32_t chunks = static_cast<uint32_t>((n + per_chunk - 1) / per_chunk);
      for (uint32_t c = 0; c < chunks; ++c) {
        Piece p;
        p.shard = s.shard;
        p.row_begin = s.row_begin + c * per_chunk;
        p.row_end = std::min(s.row_end, p.row_begin + per_chunk);
        p.chunk = c;
        p.num_chunks = chunks;
        pieces.push_back(p);
      }
    }
    return pieces;
  }

  // Rows per piece when `n` rows of `row_bytes` go to a shard: at most
  // what fits a message (with `framing` bytes more per row: a sparse row's
  // id and its share of the message) and options_.chunk_bytes of rows, at
  // least one, and the pieces as even as they can be (1 MiB in 512 KiB
  // pieces is two halves; 1.1 MiB three thirds rather than 512 + 512 +
  // 100 KiB).
  size_t RowsPerPiece(size_t n, int64_t row_bytes, int64_t framing) const {
    row_bytes = std::max<int64_t>(1, row_bytes);
    const size_t per = MostRowsPerCall(row_bytes, framing);
    // At least min_pieces_ pieces of kMinPieceBytes or more.
    const int64_t parallel = std::min<int64_t>(
        min_pieces_, static_cast<int64_t>(n) * row_bytes / kMinPieceBytes);
    const size_t pieces = std::max<size_t>(
        {size_t{1}, (n + per - 1) / per, static_cast<size_t>(parallel)});
    return std::max<size_t>(1, (n + pieces - 1) / pieces);
  }

  // The pieces of a sparse pull of `ids` (rows of `row_bytes`) from
  // `table` (see SparsePieces).
  SparsePieces AssignPieces(const ShardRouter& router, const std::string& table,
                            absl::Span<const uint64_t> ids,
                            int64_t row_bytes) const {
    SparsePieces pieces;
    const uint32_t shards = router.num_shards();
    const uint64_t th = HashName(table);
    std::vector<uint32_t> piece_of(ids.size());  // the shard, then the piece
    std::vector<size_t> shard_ids(shards, 0);
    for (size_t i = 0; i < ids.size(); ++i) {
      piece_of[i] = router.ShardOfRow(th, ids[i]);
      ++shard_ids[piece_of[i]];
    }
    std::vector<uint32_t> parts(shards);
    pieces.first.assign(shards + 1, 0);
    for (uint32_t s = 0; s < shards; ++s) {
      const size_t per =
          RowsPerPiece(shard_ids[s], row_bytes, kSparseRowFraming);
      parts[s] = static_cast<uint32_t>((shard_ids[s] + per - 1) / per);
      pieces.first[s + 1] = pieces.first[s] + parts[s];
    }
    pieces.start.assign(pieces.first[shards] + 1, 0);
    for (size_t i = 0; i < ids.size(); ++i) {
      uint32_t& p = piece_of[i];
      p = pieces.first[p] + PartOf(ids[i], parts[p]);
      ++pieces.start[p + 1];
    }
    for (size_t p = 1; p < pieces.start.size(); ++p) {
      pieces.start[p] += pieces.start[p - 1];
    }
    pieces.positions.resize(ids.size());
    std::vector<uint32_t> next(pieces.start.begin(), pieces.start.end() - 1);
    for (size_t i = 0; i < ids.size(); ++i) {
      pieces.positions[next[piece_of[i]]++] = static_cast<uint32_t>(i);
    }
    return pieces;
  }

  // The most rows of `row_bytes` (and `framing`) one call carries: what
  // fits a message and options_.chunk_bytes; at least one.
  size_t MostRowsPerCall(int64_t row_bytes, int64_t framing) const {
    row_bytes = std::max<int64_t>(1, row_bytes);
    int64_t most =
        (options_.max_message_bytes - kHeadroomBytes) / (row_bytes + framing);
    if (options_.chunk_bytes > 0) {
      most = std::min(most, options_.chunk_bytes / row_bytes);
    }
    return static_cast<size_t>(std::max<int64_t>(1, most));
  }

  static void Tensor3(int64_t rows, const v1::TensorSpec& spec,
                      const float* data, v1::Tensor* t) {
    t->mutable_spec()->set_dtype(v1::DTYPE_FLOAT32);
    t->mutable_spec()->add_shape(rows);
    for (int i = 1; i < spec.shape_size(); ++i)
      t->mutable_spec()->add_shape(spec.shape(i));
    t->set_data(data,
                static_cast<size_t>(rows * RowElems(spec)) * sizeof(float));
  }

  static void Accumulate(v1::PushOutcome outcome, int64_t applied,
                         int64_t not_admitted, int64_t skipped, PushResult* r) {
    r->rows_applied += applied;
    r->rows_not_admitted += not_admitted;
    r->skipped_non_finite += skipped;
    if (outcome == v1::PUSH_OUTCOME_DUPLICATE) ++r->duplicate_pieces;
    if (outcome == v1::PUSH_OUTCOME_AGGREGATED) ++r->aggregated_pieces;
  }

  // PushDense (pull false) and PushPullDense (pull true, the values after
  // the push into `out`): a Push or PushPull per piece, in parallel.
  absl::StatusOr<PushResult> PushDensePieces(const std::string& variable,
                                             absl::Span<const float> grads,
                                             absl::Span<float> out, bool pull,
                                             const StepOptions& step) {
    PLEXUS_RETURN_IF_ERROR(EnsurePlaced(variable));
    PushResult total;
    absl::Status st =
        WithMapRetry([&](std::shared_ptr<const ShardRouter> router) {
          total = PushResult();
          PLEXUS_ASSIGN_OR_RETURN(auto pieces,
                                  DensePieces(*router, variable, grads.size()));
          int64_t row_elems = RowElemsOf(*router, variable, grads.size());
          absl::Mutex mu;
          auto add = [&](const auto& resp) {
            MutexLock lock(&mu);
            Accumulate(resp.outcome(), resp.rows_applied(),
                       resp.rows_not_admitted(), resp.skipped_non_finite(),
                       &total);
          };
          return ForEach(pieces.size(), [&](size_t i) -> absl::Status {
            const Piece& p = pieces[i];
            const int64_t elems = (p.row_end - p.row_begin) * row_elems;
            const int64_t at = p.row_begin * row_elems;
            // The piece's push: key, rows and spec (its bytes travel
            // separately, see DataCall).
            auto fill = [&](auto* req, v1::DenseSliceData* d) {
              FillHeader(req->mutable_header(), *router, step);
              req->set_push_seq(step.push_seq);
              req->set_chunk_index(p.chunk);
              req->set_num_chunks(p.num_chunks);
              d->set_variable(variable);
              d->mutable_rows()->set_row_begin(p.row_begin);
              d->mutable_rows()->set_row_end(p.row_end);
              SetDenseSpec(p.row_end - p.row_begin, *TrailingDims(variable),
                           d->mutable_tensor());
            };
            if (!pull) {
              v1::PushRequest req;
              fill(&req, req.add_dense());
              v1::PushResponse resp;
              PLEXUS_RETURN_IF_ERROR(DataCall(
                  p.shard, &req, &resp, {F32Bytes(grads.data() + at, elems)}));
              add(resp);
              return absl::OkStatus();
            }
            v1::PushPullRequest req;
            v1::DenseSliceData* d = req.add_push_dense();
            fill(&req, d);
            req.set_value_dtype(v1::DTYPE_FLOAT32);
            v1::DenseSliceRef* r = req.add_pull_dense();
            r->set_variable(variable);
            *r->mutable_rows() = d->rows();
            v1::PushPullResponse resp;
            const absl::Span<char> into[] = {F32Buffer(out.data() + at, elems)};
            bool landed = false;
            PLEXUS_RETURN_IF_ERROR(
                DataCall(p.shard, &req, &resp,
                         {F32Bytes(grads.data() + at, elems)}, into, &landed));
            if (resp.dense_size() != 1) {
              return absl::InternalError(
                  "shard answered a dense push-pull with no slice");
            }
            add(resp);
            return CopyF32(resp.dense(0).tensor(), into, landed);
          });
        });
    if (!st.ok()) return st;
    return total;
  }

  void FillHeader(v1::RequestHeader* h, const ShardRouter& router,
                  const StepOptions& step) const {
    h->set_job_id(identity_.job_id);
    h->set_coordinator_epoch(identity_.coordinator_epoch);
    h->set_worker_id(identity_.worker_id);
    h->set_worker_incarnation(identity_.worker_incarnation);
    h->set_step_id(step.step_id);
    h->set_closure_id(step.closure_id);
    h->set_shard_map_version(router.version());
    h->set_sent_unix_ms(absl::ToUnixMillis(absl::Now()));
  }

  std::shared_ptr<const ShardRouter> Router() const {
    MutexLock lock(&mu_);
    return router_;
  }
  void SetRouter(std::shared_ptr<const ShardRouter> r) {
    MutexLock lock(&mu_);
    router_ = std::move(r);
  }

  absl::Status RefreshMap() {
    PLEXUS_ASSIGN_OR_RETURN(v1::ShardMap map, source_->Fetch(),
                            "fetching the shard map");
    PLEXUS_RETURN_IF_ERROR(ValidateShardMap(map));
    SetRouter(std::make_shared<ShardRouter>(std::move(map)));
    return absl::OkStatus();
  }

  // Standalone mode: a variable another client created is placed here the
  // same way (placement is a pure function of name, rows and shard count),
  // after asking the shards for its row count.
  absl::Status EnsurePlaced(const std::string& variable) {
    auto router = Router();
    bool placed = own_source_ == nullptr || router->DenseRows(variable).ok();
    if (placed && TrailingDims(variable).has_value()) return absl::OkStatus();
    for (uint32_t s = 0; s < router->num_shards(); ++s) {
      v1::DescribeRequest req;
      FillHeader(req.mutable_header(), *router, {});
      req.set_name(variable);
      v1::DescribeResponse resp;
      absl::Status st =
          Call(s, [&](v1::ParameterServer::Stub* stub, grpc::ClientContext* c) {
            return stub->Describe(c, req, &resp);
          });
      if (absl::IsNotFound(st)) continue;
      PLEXUS_RETURN_IF_ERROR(st);
      if (!resp.has_variable() ||
          resp.variable().config().spec().shape_size() < 1) {
        return absl::NotFoundError(
            absl::StrCat(variable, " is not a dense variable"));
      }
      SetTrailingDims(variable, resp.variable().config().spec());
      if (placed) return absl::OkStatus();
      PLEXUS_ASSIGN_OR_RETURN(
          auto map, own_source_->Place(
                        variable, resp.variable().config().spec().shape(0)));
      SetRouter(std::make_shared<ShardRouter>(std::move(map)));
      return absl::OkStatus();
    }
    return absl::NotFoundError(
        absl::StrCat("no PS shard holds a variable named '", variable, "'"));
  }

  // The shape of a dense variable past axis 0 (empty for a 1-D variable), as
  // created here or described by a shard.
  std::optional<std::vector<int64_t>> TrailingDims(
      const std::string& variable) {
    MutexLock lock(&mu_);
    auto it = trailing_dims_.find(variable);
    if (it == trailing_dims_.end()) return std::nullopt;
    return it->second;
  }
  void SetTrailingDims(const std::string& variable,
                       const v1::TensorSpec& spec) {
    std::vector<int64_t> dims(
        spec.shape().begin() + std::min(1, spec.shape_size()),
        spec.shape().end());
    MutexLock lock(&mu_);
    trailing_dims_[variable] = std::move(dims);
  }
  // The spec of a [rows, trailing...] fp32 tensor (its bytes travel
  // separately, see DataCall).
  static void SetDenseSpec(int64_t rows, const std::vector<int64_t>& trailing,
                           v1::Tensor* t) {
    t->mutable_spec()->set_dtype(v1::DTYPE_FLOAT32);
    t->mutable_spec()->add_shape(rows);
    for (int64_t d : trailing) t->mutable_spec()->add_shape(d);
  }

  // Standalone mode: the client is the map's owner and installs it.
  absl::Status InstallMap() {
    auto router = Router();
    return ForEachShard(router->num_shards(), [&](uint32_t s) {
      v1::UpdateShardMapRequest req;
      FillHeader(req.mutable_header(), *router, {});
      *req.mutable_shard_map() = router->map();
      req.set_shard_index(s);
      v1::UpdateShardMapResponse resp;
      return Call(s,
                  [&](v1::ParameterServer::Stub* stub, grpc::ClientContext* c) {
                    return stub->UpdateShardMap(c, req, &resp);
                  });
    });
  }

  // Runs `op` with the current map; on a stale-map error refreshes the map
  // and runs it again (pushes are exactly-once per key, so a piece that was
  // applied before the refresh is acknowledged as a duplicate).
  absl::Status WithMapRetry(
      const std::function<absl::Status(std::shared_ptr<const ShardRouter>)>&
          op) {
    for (int attempt = 0;; ++attempt) {
      absl::Status st = op(Router());
      if (!IsStaleMap(st) || attempt >= 3) return st;
      uint64_t theirs = GetErrorInfo(st)->current_shard_map_version();
      if (own_source_ != nullptr && theirs < Router()->version()) {
        // Standalone mode: a shard that restarted lost the map this client
        // owns; install it again.
        LOG(INFO) << "PS client: a shard holds map version " << theirs << " < "
                  << Router()->version() << "; installing ours";
        PLEXUS_RETURN_IF_ERROR(InstallMap());
        continue;
      }
      LOG(INFO) << "PS client: shard map is stale (" << st.message()
                << "); refreshing";
      PLEXUS_RETURN_IF_ERROR(RefreshMap());
    }
  }

  v1::ParameterServer::Stub* Stub(uint32_t shard) {
    auto router = Router();
    const std::string& address = router->map().shards(shard).address();
    MutexLock lock(&mu_);
    auto& stub = stubs_[address];
    if (stub == nullptr) {
      grpc::ChannelArguments args;
      args.SetMaxReceiveMessageSize(
          static_cast<int>(options_.max_message_bytes));
      args.SetMaxSendMessageSize(static_cast<int>(options_.max_message_bytes));
      // Find a restarted shard within about a second (gRPC's default
      // reconnect backoff grows to two minutes).
      args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
      args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
      args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
      stub = v1::ParameterServer::NewStub(
          grpc::experimental::CreateCustomChannelWithInterceptors(
              address, credentials_, args, TokenInterceptors(options_.token)));
    }
    return stub.get();
  }

  using GrpcCall = std::function<grpc::Status(v1::ParameterServer::Stub*,
                                              grpc::ClientContext*)>;

  // One RPC to one shard over gRPC, retried as Retry says.
  absl::Status Call(uint32_t shard, const GrpcCall& rpc) {
    return Retry(shard, [&](absl::Time deadline) {
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(deadline));
      return FromGrpcStatus(rpc(Stub(shard), &ctx));
    });
  }

  // A data-plane call: over the shard's direct data plane where
  // options_.direct_data_plane asks for it and the shard offers one, else
  // gRPC; retried as Retry says.
  // `req` is unchanged on return (the direct plane lends its tensor bytes
  // to the socket and puts them back).
  // `into`: where the reply's one tensor goes, its bytes filling the
  // buffers in turn, when the direct plane can read it straight there
  // (*landed then says so; the tensor's data field stays empty).
  absl::Status DataCall(uint32_t shard, v1::PullRequest* req,
                        v1::PullResponse* resp,
                        absl::Span<const absl::Span<char>> into, bool* landed) {
    *landed = false;
    return Retry(shard, [&](absl::Time deadline) {
      return Attempt(
          shard, v1::DataFrameHeader::METHOD_PULL, req, resp, deadline, {},
          [&](auto* stub, auto* c) { return stub->Pull(c, *req, resp); }, into,
          landed);
    });
  }
  // `tensors`: the bytes of req's tensors (whose data fields are empty), in
  // TensorDataFields order, borrowed for the call. The direct plane sends
  // them from where they are; gRPC gets a copy inside the message.
  absl::Status DataCall(uint32_t shard, v1::PushRequest* req,
                        v1::PushResponse* resp,
                        std::vector<absl::string_view> tensors) {
    return Retry(shard, [&](absl::Time deadline) {
      return Attempt(
          shard, v1::DataFrameHeader::METHOD_PUSH, req, resp, deadline, tensors,
          [&](auto* stub, auto* c) { return stub->Push(c, *req, resp); }, {},
          nullptr);
    });
  }

  // A push-pull: `tensors` as for a push, `into` and `landed` as for a
  // pull.
  absl::Status DataCall(uint32_t shard, v1::PushPullRequest* req,
                        v1::PushPullResponse* resp,
                        std::vector<absl::string_view> tensors,
                        absl::Span<const absl::Span<char>> into, bool* landed) {
    *landed = false;
    return Retry(shard, [&](absl::Time deadline) {
      return Attempt(
          shard, v1::DataFrameHeader::METHOD_PUSH_PULL, req, resp, deadline,
          tensors,
          [&](auto* stub, auto* c) { return stub->PushPull(c, *req, resp); },
          into, landed);
    });
  }

  absl::Status Attempt(uint32_t shard, v1::DataFrameHeader::Method method,
                       google::protobuf::Message* req,
                       google::protobuf::Message* resp, absl::Time deadline,
                       absl::Span<const absl::string_view> tensors,
                       const GrpcCall& rpc,
                       absl::Span<const absl::Span<char>> into, bool* landed) {
    // Only this attempt's bytes count (an earlier one may have failed
    // halfway through landing them).
    if (landed != nullptr) *landed = false;
    if (options_.direct_data_plane) {
      std::optional<absl::Status> st =
          Direct(shard, method, req, resp, deadline, tensors, into, landed);
      if (st.has_value()) return *st;
    }
    std::vector<std::string*> fields;
    if (!tensors.empty()) {
      fields = TensorDataFields(req);
      if (fields.size() != tensors.size()) {
        return absl::InternalError("PS client: tensors do not match the call");
      }
      for (size_t i = 0; i < fields.size(); ++i) {
        fields[i]->assign(tensors[i].data(), tensors[i].size());
      }
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(deadline));
    absl::Status st = FromGrpcStatus(rpc(Stub(shard), &ctx));
    // Empty again, as the caller handed it over.
    for (std::string* f : fields) f->clear();
    return st;
  }

  // One attempt over the shard's direct data plane; nullopt when the shard
  // offers none (the caller uses gRPC). The plane's address and key come
  // from GetShardInfo once per shard incarnation: a lost connection or a
  // refused key forgets them, so the retry asks again.
  std::optional<absl::Status> Direct(
      uint32_t shard, v1::DataFrameHeader::Method method,
      google::protobuf::Message* req, google::protobuf::Message* resp,
      absl::Time deadline, absl::Span<const absl::string_view> tensors,
      absl::Span<const absl::Span<char>> into, bool* landed) {
    const std::string grpc_address = Router()->map().shards(shard).address();
    std::string address, key;
    std::unique_ptr<DataConnection> conn;
    {
      MutexLock lock(&mu_);
      auto it = direct_.find(grpc_address);
      if (it != direct_.end() && absl::Now() < it->second.use_grpc_until) {
        return std::nullopt;
      }
      if (it != direct_.end() && !it->second.address.empty()) {
        address = it->second.address;
        key = it->second.key;
        if (!it->second.idle.empty()) {
          conn = std::move(it->second.idle.back());
          it->second.idle.pop_back();
        }
      }
    }
    if (address.empty()) {
      v1::GetShardInfoRequest info_req;
      v1::GetShardInfoResponse info;
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(deadline));
      absl::Status st =
          FromGrpcStatus(Stub(shard)->GetShardInfo(&ctx, info_req, &info));
      if (!st.ok()) return st;
      address = info.data_plane_address();
      key = info.data_plane_key();
      std::string host;
      int port = 0;
      if (!address.empty() && address[0] == ':') {
        // The shard's own host: the one its gRPC port is reached on.
        if (SplitHostPort(grpc_address, &host, &port).ok()) {
          address = host + address;
        } else {
          LOG(WARNING) << "PS client: cannot tell the host of shard address "
                       << grpc_address << "; using gRPC for its data";
          address.clear();
        }
      }
      if (address.empty()) {
        LOG(INFO) << "PS client: shard " << shard << " (" << grpc_address
                  << ") offers no direct data plane; using gRPC";
      }
      MutexLock lock(&mu_);
      DirectPlane& d = direct_[grpc_address];
      d.address = address;
      d.key = key;
      if (address.empty()) {
        // Asked again now and then: the shard may restart with one.
        d.use_grpc_until = absl::Now() + kNotOfferedRecheck;
        return std::nullopt;
      }
    }
    if (conn == nullptr) {
      absl::StatusOr<int> fd = ConnectTcp(address, deadline);
      if (!fd.ok()) {
        // Unreachable (a firewall, a name only gRPC resolves, a shard gone):
        // gRPC carries this call and the next few seconds' calls.
        LOG(WARNING) << "PS client: cannot reach the direct data plane of "
                     << "shard " << shard << " at " << address << " ("
                     << fd.status().message() << "); using gRPC for "
                     << absl::FormatDuration(kUnreachableFallback);
        MutexLock lock(&mu_);
        DirectPlane& d = direct_[grpc_address];
        d.address.clear();
        d.idle.clear();
        d.use_grpc_until = absl::Now() + kUnreachableFallback;
        return std::nullopt;
      }
      conn = std::make_unique<DataConnection>(*fd);
    }
    v1::DataFrameHeader h;
    h.set_method(method);
    h.set_request_id(next_request_id_.fetch_add(1) + 1);
    h.set_key(key);
    h.set_deadline_unix_us(absl::ToUnixMicros(deadline));
    const uint64_t request_id = h.request_id();
    v1::DataFrameHeader reply;
    uint64_t reply_bytes = 0;
    absl::Status st =
        WriteDataFrame(conn->fd, std::move(h), req, deadline, tensors);
    if (st.ok()) {
      st = conn->reader.ReadHeader(deadline, options_.max_message_bytes, &reply,
                                   &reply_bytes);
    }
    if (st.ok() && reply.code() == 0) {
      st = conn->reader.ReadBody(reply, reply_bytes, deadline, resp, into,
                                 landed);
      if (absl::IsInvalidArgument(st)) {
        st = absl::DataLossError(
            absl::StrCat("data plane of ", address, ": ", st.message()));
      }
    } else if (st.ok()) {
      st = conn->reader.ReadBody(reply, reply_bytes, deadline, nullptr);
    }
    if (!st.ok()) {
      // The connection is dropped (part of a frame may be out): a lost
      // shard is asked for its plane again on the retry.
      if (absl::IsUnavailable(st)) ForgetDirect(grpc_address);
      return st;
    }
    if (reply.request_id() != request_id) {
      return absl::DataLossError(
          absl::StrCat("data plane of ", address, ": a reply to request ",
                       reply.request_id(), " for request ", request_id));
    }
    if (reply.code() != 0) {
      absl::Status err(static_cast<absl::StatusCode>(reply.code()),
                       reply.message());
      if (reply.has_error_info()) err = WithErrorInfo(err, reply.error_info());
      if (absl::IsUnauthenticated(err)) {
        // A key from an earlier incarnation of the shard: ask again.
        ForgetDirect(grpc_address);
        return absl::UnavailableError(absl::StrCat(
            "data plane of ", address,
            " refused the key (shard restarted?): ", err.message()));
      }
      // A draining shard closes the connection after saying so.
      if (!absl::IsUnavailable(err)) ReturnIdle(grpc_address, std::move(conn));
      return err;
    }
    ReturnIdle(grpc_address, std::move(conn));
    return absl::OkStatus();
  }

  void ForgetDirect(const std::string& grpc_address) {
    MutexLock lock(&mu_);
    direct_.erase(grpc_address);
  }
  void ReturnIdle(const std::string& grpc_address,
                  std::unique_ptr<DataConnection> conn) {
    MutexLock lock(&mu_);
    auto it = direct_.find(grpc_address);
    if (it != direct_.end() && it->second.idle.size() < kMaxIdlePerShard) {
      it->second.idle.push_back(std::move(conn));
    }
  }

  // Runs `attempt` with the call's deadline, retried on UNAVAILABLE with
  // jittered exponential backoff until the client's timeout. CANCELLED counts
  // as UNAVAILABLE: this client never cancels its calls, so it comes from a
  // shard that shut down with the call still queued (a drain cancels what it
  // did not run); a push retried is acknowledged as a duplicate if it was
  // applied.
  absl::Status Retry(
      uint32_t shard,
      const std::function<absl::Status(absl::Time deadline)>& attempt) {
    absl::Time deadline = absl::Now() + options_.timeout;
    absl::Duration backoff = options_.initial_backoff;
    while (true) {
      absl::Status st = attempt(deadline);
      if (absl::IsCancelled(st)) {
        st = absl::UnavailableError(absl::StrCat(
            "the shard cancelled the call (shutting down): ", st.message()));
      }
      if (st.code() != absl::StatusCode::kUnavailable) {
        return Annotate(st, st.ok() ? "" : absl::StrCat("PS shard ", shard));
      }
      absl::Duration wait;
      {
        MutexLock lock(&mu_);
        wait = backoff * absl::Uniform(rng_, 0.5, 1.5);
      }
      if (absl::Now() + wait >= deadline) {
        return Annotate(
            st, absl::StrCat("PS shard ", shard, " (gave up after ",
                             absl::FormatDuration(options_.timeout), ")"));
      }
      absl::SleepFor(wait);  // backoff between retries of an unavailable shard
      backoff = std::min(backoff * 2, options_.max_backoff);
    }
  }

  absl::Status ForEachShard(uint32_t n,
                            const std::function<absl::Status(uint32_t)>& fn) {
    return ForEach(n, [&](size_t i) { return fn(static_cast<uint32_t>(i)); });
  }

  // Runs fn(0..n-1) in parallel on the calling thread and the pool (see
  // ParallelFor); returns the first error.
  absl::Status ForEach(size_t n,
                       const std::function<absl::Status(size_t)>& fn) {
    absl::Mutex mu;
    absl::Status first;
    ParallelFor(&pool_, static_cast<int>(n), [&](int i) {
      absl::Status st = fn(static_cast<size_t>(i));
      if (!st.ok()) {
        MutexLock lock(&mu);
        if (first.ok()) first = st;
      }
    });
    return first;
  }

  const PsClientOptions options_;
  // Plaintext or TLS, from options_; set by Init().
  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  const CallerIdentity identity_;
  const std::unique_ptr<StaticMapSource> own_source_;
  ShardMapSource* const source_;
  // PsClientOptions::min_pieces resolved (0: from the CPU count).
  const int min_pieces_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const ShardRouter> router_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::unique_ptr<v1::ParameterServer::Stub>>
      stubs_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::vector<int64_t>> trailing_dims_
      ABSL_GUARDED_BY(mu_);
  absl::BitGen rng_ ABSL_GUARDED_BY(mu_);
  // The direct data plane per shard gRPC address (options_.direct_data_plane):
  // its address (empty: not offered), key and idle connections.
  struct DirectPlane {
    std::string address;  // empty: ask GetShardInfo (again)
    std::string key;
    std::vector<std::unique_ptr<DataConnection>> idle;
    // Until then calls use gRPC: the shard offers no plane, or it could not
    // be reached.
    absl::Time use_grpc_until = absl::InfinitePast();
  };
  static constexpr absl::Duration kNotOfferedRecheck = absl::Seconds(60);
  static constexpr absl::Duration kUnreachableFallback = absl::Seconds(5);
  static constexpr size_t kMaxIdlePerShard = 32;
  absl::flat_hash_map<std::string, DirectPlane> direct_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> next_request_id_{0};
  // Last: their threads finish before the rest is destroyed. Async calls run
  // on their own pool, so they never wait for a slot they occupy.
  ThreadPool pool_;
  ThreadPool async_pool_{4};
};

}  // namespace

absl::StatusOr<std::unique_ptr<PsClient>> PsClient::Connect(
    const PsClientOptions& options, const CallerIdentity& identity) {
  TuneAllocatorForMessages();
  std::unique_ptr<StaticMapSource> own;
  if (options.map_source == nullptr) {
    PLEXUS_ASSIGN_OR_RETURN(v1::ShardMap map, MakeShardMap(1, options.shards),
                            "PS client");
    own = std::make_unique<StaticMapSource>(std::move(map));
  }
  PsClientOptions resolved = options;
  PLEXUS_ASSIGN_OR_RETURN(resolved.token, ClientToken(options.token),
                          "PS client token");
  auto client =
      std::make_unique<PsClientImpl>(resolved, identity, std::move(own));
  PLEXUS_RETURN_IF_ERROR(client->Init(), "connecting to the PS shards");
  return client;
}

}  // namespace plexus::worker
