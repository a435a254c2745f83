#include "ps/storage/crc32c.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace plexus::ps {
namespace {

constexpr uint32_t kPoly = 0x82F63B78u;

// t[k][b]: slicing-by-8 tables.
struct Tables {
  std::array<std::array<uint32_t, 256>, 8> t;
  Tables() {
    for (uint32_t b = 0; b < 256; ++b) {
      uint32_t c = b;
      for (int i = 0; i < 8; ++i) c = (c >> 1) ^ ((c & 1) ? kPoly : 0);
      t[0][b] = c;
    }
    for (int k = 1; k < 8; ++k) {
      for (uint32_t b = 0; b < 256; ++b) {
        t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xFF];
      }
    }
  }
};

const Tables& GetTables() {
  static const Tables* tables = new Tables();
  return *tables;
}

uint32_t ExtendTable(uint32_t c, const uint8_t* p, size_t n) {
  const auto& t = GetTables().t;
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    w ^= c;
    c = t[7][w & 0xFF] ^ t[6][(w >> 8) & 0xFF] ^ t[5][(w >> 16) & 0xFF] ^
        t[4][(w >> 24) & 0xFF] ^ t[3][(w >> 32) & 0xFF] ^
        t[2][(w >> 40) & 0xFF] ^ t[1][(w >> 48) & 0xFF] ^ t[0][w >> 56];
    p += 8;
    n -= 8;
  }
  while (n-- > 0) c = (c >> 8) ^ t[0][(c ^ *p++) & 0xFF];
  return c;
}

#if defined(__x86_64__)
// ExtendHw runs three streams of a stripe's bytes at once: the crc32
// instruction has a latency of three cycles and a throughput of one, so one
// dependent chain leaves two thirds of it idle (7% of a checkpoint writer's
// CPU). The streams are then joined: for the raw register, crc(x, B) =
// crc(0, B) ^ crc(x, zeros of |B|), and crc(x, zeros) is linear in x.
// Stripes of 8 KiB, then of 1 KiB: RocksDB hands the checksum one block
// (16 KiB) at a time, which 8 KiB stripes alone would leave to one chain.
// crc(x, `stripe` zero bytes) as four byte-indexed tables.
struct StripeShift {
  std::array<std::array<uint32_t, 256>, 4> t;
  explicit StripeShift(size_t stripe) {
    const std::vector<uint8_t> zeros(stripe, 0);
    uint32_t basis[32];
    for (int b = 0; b < 32; ++b) {
      basis[b] = ExtendTable(uint32_t{1} << b, zeros.data(), stripe);
    }
    for (int k = 0; k < 4; ++k) {
      for (uint32_t v = 0; v < 256; ++v) {
        uint32_t r = 0;
        for (int b = 0; b < 8; ++b) {
          if ((v >> b) & 1) r ^= basis[8 * k + b];
        }
        t[k][v] = r;
      }
    }
  }
  uint32_t operator()(uint32_t x) const {
    return t[0][x & 0xFF] ^ t[1][(x >> 8) & 0xFF] ^ t[2][(x >> 16) & 0xFF] ^
           t[3][x >> 24];
  }
};

// Consumes whole rounds of three kStripe-byte streams from (p, n) into c64.
template <size_t kStripe>
__attribute__((target("sse4.2"))) void ThreeStreams(uint64_t* c64,
                                                    const uint8_t** p,
                                                    size_t* n) {
  if (*n < 3 * kStripe) return;
  static const StripeShift* shift = new StripeShift(kStripe);
  const uint8_t* q = *p;
  uint64_t c = *c64;
  do {
    uint64_t a = c, b = 0, d = 0;
    for (size_t i = 0; i < kStripe; i += 8) {
      uint64_t wa, wb, wd;
      std::memcpy(&wa, q + i, 8);
      std::memcpy(&wb, q + kStripe + i, 8);
      std::memcpy(&wd, q + 2 * kStripe + i, 8);
      a = _mm_crc32_u64(a, wa);
      b = _mm_crc32_u64(b, wb);
      d = _mm_crc32_u64(d, wd);
    }
    const uint32_t ab =
        (*shift)(static_cast<uint32_t>(a)) ^ static_cast<uint32_t>(b);
    c = (*shift)(ab) ^ static_cast<uint32_t>(d);
    q += 3 * kStripe;
    *n -= 3 * kStripe;
  } while (*n >= 3 * kStripe);
  *p = q;
  *c64 = c;
}

__attribute__((target("sse4.2"))) uint32_t ExtendHw(uint32_t c,
                                                    const uint8_t* p,
                                                    size_t n) {
  uint64_t c64 = c;
  ThreeStreams<8192>(&c64, &p, &n);
  ThreeStreams<1024>(&c64, &p, &n);
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    c64 = _mm_crc32_u64(c64, w);
    p += 8;
    n -= 8;
  }
  c = static_cast<uint32_t>(c64);
  while (n-- > 0) c = _mm_crc32_u8(c, *p++);
  return c;
}

bool HaveHw() {
  static const bool have = __builtin_cpu_supports("sse4.2");
  return have;
}
#endif

}  // namespace

uint32_t Crc32cExtendPortable(uint32_t crc, const void* data, size_t n) {
  return ~ExtendTable(~crc, static_cast<const uint8_t*>(data), n);
}

uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n) {
#if defined(__x86_64__)
  if (HaveHw()) return ~ExtendHw(~crc, static_cast<const uint8_t*>(data), n);
#endif
  return Crc32cExtendPortable(crc, data, n);
}

absl::StatusOr<FileChecksum> ChecksumFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string msg = absl::StrCat(path, ": ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(msg) : absl::InternalError(msg);
  }
  constexpr size_t kBlock = size_t{1} << 20;
  std::unique_ptr<char[]> buf(new char[kBlock]);
  FileChecksum out;
  for (;;) {
    const ssize_t r = ::read(fd, buf.get(), kBlock);
    if (r < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return absl::InternalError(
          absl::StrCat("reading ", path, ": ", std::strerror(err)));
    }
    if (r == 0) break;
    out.crc32c = Crc32cExtend(out.crc32c, buf.get(), static_cast<size_t>(r));
    out.size_bytes += r;
  }
  ::close(fd);
  return out;
}

}  // namespace plexus::ps
