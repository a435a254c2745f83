// Private to ps/storage. Memory for the large buffers of a cut (TableCut's
// rows), backed by transparent huge pages where the kernel has them.
//
// Why: a cut's buffers are gigabytes, and where a cut's order is not its
// checkpoint's key order the writer reads them at random; with 4 KiB pages
// nearly every row is then a TLB miss (it dominated the SST write when the
// writer read every cut in id order). A buffer of 2 MiB pages needs 512
// times fewer TLB entries. Where THP is in "madvise" mode (the Ubuntu
// default) a mapping gets huge pages only if it is advised before its pages
// are first touched, hence an allocator rather than an madvise on a buffer
// already filled.
#pragma once

#include <cstddef>
#include <vector>

namespace plexus::ps {

// Buffers of at least 2 MiB are mapped 2 MiB aligned, rounded up to whole
// 2 MiB pages, and advised MADV_HUGEPAGE before anything touches them (if
// the advice fails, e.g. a kernel without THP, they are plain pages);
// smaller ones come from operator new. Throws std::bad_alloc when out of
// memory, like operator new.
void* AllocateHugePageBuffer(size_t bytes);
// Frees what AllocateHugePageBuffer(bytes) returned (the same `bytes`).
void FreeHugePageBuffer(void* p, size_t bytes);

template <typename T>
class HugePageAllocator {
 public:
  using value_type = T;

  HugePageAllocator() = default;
  template <typename U>
  HugePageAllocator(const HugePageAllocator<U>& /*other*/) {}  // NOLINT

  T* allocate(size_t n) {
    return static_cast<T*>(AllocateHugePageBuffer(n * sizeof(T)));
  }
  void deallocate(T* p, size_t n) { FreeHugePageBuffer(p, n * sizeof(T)); }

  friend bool operator==(const HugePageAllocator&, const HugePageAllocator&) {
    return true;
  }
};

template <typename T>
using HugePageVector = std::vector<T, HugePageAllocator<T>>;

}  // namespace plexus::ps
