// Open MPI peer of coll_bench: MPI_Allreduce (fp32, sum) over the same sizes
// and the same measurement rules as coll_bench's Plexus and Gloo rows, so the
// two can be put side by side. coll_bench starts it as
//
//   mpirun --allow-run-as-root --oversubscribe -np N [--mca ...]
//       mpi_allreduce_bench [--min_bytes=4] [--max_bytes=268435456]
//       [--label=shm]
//
// and reads rank 0's stdout: one line per size,
//
//   ROW mpi <label> <bytes> <time_us> <p50_us> <p99_us> <wrong>
//
// time_us is the median per-operation time over back-to-back iterations after
// warm-up (the same iteration count as coll_bench); p50/p99 are OSU-style
// blocking latencies (MPI_Barrier before each operation) for sizes <= 64 KiB,
// 0 otherwise; wrong counts elements differing from the exact sum. The
// algorithm is Open MPI's choice (its tuned collective component); Open MPI
// spins while it waits, one core per rank.
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

std::string Flag(int argc, char** argv, const std::string& name,
                 const std::string& def) {
  const std::string prefix = "--" + name + "=";
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], prefix.c_str(), prefix.size()) == 0) {
      return argv[i] + prefix.size();
    }
  }
  return def;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * (v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// Same count as coll_bench's Iterations(): ~400 MB moved per size, 5..300.
int Iterations(size_t bytes) {
  return static_cast<int>(std::clamp<double>(4e8 / (bytes + 4096.0), 5, 300));
}

constexpr char kUsage[] =
    R"(mpi_allreduce_bench: Open MPI's MPI_Allreduce (fp32, sum) over doubling
sizes, the Open MPI peer of coll_bench (which starts it through mpirun and
reads rank 0's "ROW mpi <label> <bytes> <time_us> <p50_us> <p99_us> <wrong>"
lines from stdout).

usage: mpirun [-np N ...] mpi_allreduce_bench [--flag=value ...]
  --min_bytes=4            smallest message size
  --max_bytes=268435456    largest message size (doubling)
  --label=default          the label in each ROW line (e.g. shm, tcp)
  -h, --help               print this and exit
)";

// Returns -1 to go on, else the exit code: 0 after --help, 2 after an unknown
// flag or a bad size (said on stderr). Runs before MPI_Init, so that --help
// needs no mpirun.
int CheckFlags(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    const bool size =
        arg.rfind("--min_bytes=", 0) == 0 || arg.rfind("--max_bytes=", 0) == 0;
    if (size) {
      const std::string v = arg.substr(arg.find('=') + 1);
      char* end = nullptr;
      std::strtoull(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0') {
        std::fprintf(stderr, "mpi_allreduce_bench: not a number: '%s'\n",
                     argv[i]);
        return 2;
      }
    } else if (arg.rfind("--label=", 0) != 0) {
      std::fprintf(stderr,
                   "mpi_allreduce_bench: unknown flag '%s' (see --help)\n",
                   argv[i]);
      return 2;
    }
  }
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  if (int rc = CheckFlags(argc, argv); rc >= 0) return rc;
  MPI_Init(&argc, &argv);
  int rank = 0, n = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  const size_t min_bytes =
      std::strtoull(Flag(argc, argv, "min_bytes", "4").c_str(), nullptr, 10);
  const size_t max_bytes = std::strtoull(
      Flag(argc, argv, "max_bytes", "268435456").c_str(), nullptr, 10);
  const std::string label = Flag(argc, argv, "label", "default");
  const float expect = n * (n + 1) / 2.0f;

  std::vector<float> send(max_bytes / 4 + 1, rank + 1.0f), recv(send.size());
  for (size_t bytes = std::max<size_t>(4, min_bytes); bytes <= max_bytes;
       bytes *= 2) {
    const int count = static_cast<int>(bytes / 4);
    auto op = [&] {
      MPI_Allreduce(send.data(), recv.data(), count, MPI_FLOAT, MPI_SUM,
                    MPI_COMM_WORLD);
    };
    MPI_Barrier(MPI_COMM_WORLD);
    std::fill(recv.begin(), recv.begin() + count, 0.0f);
    const int iters = Iterations(bytes);
    for (int i = 0; i < std::min(iters, 5); ++i) op();
    long long wrong = 0;
    for (int i = 0; i < count; ++i) wrong += recv[i] != expect;
    // Every rank's result counts, not only rank 0's.
    MPI_Allreduce(MPI_IN_PLACE, &wrong, 1, MPI_LONG_LONG, MPI_SUM,
                  MPI_COMM_WORLD);
    std::vector<double> t;
    for (int i = 0; i < iters; ++i) {
      const double s = MPI_Wtime();
      op();
      t.push_back((MPI_Wtime() - s) * 1e6);
    }
    double p50 = 0, p99 = 0;
    if (bytes <= (64 << 10)) {
      std::vector<double> lat;
      for (int i = 0; i < 200; ++i) {
        MPI_Barrier(MPI_COMM_WORLD);
        const double s = MPI_Wtime();
        op();
        lat.push_back((MPI_Wtime() - s) * 1e6);
      }
      p50 = Percentile(lat, 0.5);
      p99 = Percentile(lat, 0.99);
    }
    if (rank == 0) {
      std::printf("ROW mpi %s %zu %.3f %.3f %.3f %lld\n", label.c_str(), bytes,
                  Percentile(t, 0.5), p50, p99, wrong);
      std::fflush(stdout);
    }
  }
  MPI_Finalize();
  return 0;
}
