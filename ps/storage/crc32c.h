// CRC-32C (Castagnoli), as plexus.v1.CheckpointFile.crc32c carries it: the
// standard reflected CRC with polynomial 0x82F63B78, initial value and final
// xor 0xFFFFFFFF (crc32c("123456789") == 0xE3069283).
//
// Uses the SSE4.2 crc32 instruction where the CPU has it, else
// slicing-by-8 tables.
//
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace plexus::ps {

// Extends `crc` (the value returned for the bytes before; 0 to start) by
// `n` bytes at `data`.
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n);
inline uint32_t Crc32c(absl::string_view s) {
  return Crc32cExtend(0, s.data(), s.size());
}
// The table implementation alone (tests compare both).
uint32_t Crc32cExtendPortable(uint32_t crc, const void* data, size_t n);

struct FileChecksum {
  int64_t size_bytes = 0;
  uint32_t crc32c = 0;
};
// Size and CRC-32C of the file at `path` (read in 1 MiB blocks). NOT_FOUND
// if absent, INTERNAL for read errors.
absl::StatusOr<FileChecksum> ChecksumFile(const std::string& path);

}  // namespace plexus::ps
