#include "common/memory.h"

#include <malloc.h>

#include <cstdlib>
#include <mutex>

namespace plexus {

void TuneAllocatorForMessages() {
  static std::once_flag once;
  std::call_once(once, [] {
    const char* keep = std::getenv("PLEXUS_KEEP_MALLOC_SETTINGS");
    if (keep != nullptr && *keep != '\0' && *keep != '0') return;
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
  });
}

}  // namespace plexus
