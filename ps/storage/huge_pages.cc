#include "ps/storage/huge_pages.h"

#include <sys/mman.h>

#include <cstdint>
#include <new>

namespace plexus::ps {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;

size_t RoundUp(size_t bytes) {
  return (bytes + kHugePage - 1) & ~(kHugePage - 1);
}

}  // namespace

void* AllocateHugePageBuffer(size_t bytes) {
  if (bytes < kHugePage) return ::operator new(bytes);
  const size_t size = RoundUp(bytes);
  // Mapped one huge page larger, then trimmed to a 2 MiB aligned range:
  // only aligned 2 MiB ranges can be huge pages.
  void* raw = ::mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  const auto begin = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (begin + kHugePage - 1) & ~(kHugePage - 1);
  if (aligned != begin) ::munmap(raw, aligned - begin);
  const size_t tail = begin + kHugePage - aligned;
  if (tail != 0) ::munmap(reinterpret_cast<void*>(aligned + size), tail);
  void* p = reinterpret_cast<void*>(aligned);
  // Best effort: without it the buffer simply has 4 KiB pages.
  ::madvise(p, size, MADV_HUGEPAGE);
  return p;
}

void FreeHugePageBuffer(void* p, size_t bytes) {
  if (p == nullptr) return;
  if (bytes < kHugePage) {
    ::operator delete(p);
    return;
  }
  ::munmap(p, RoundUp(bytes));
}

}  // namespace plexus::ps
