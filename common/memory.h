// Process-wide allocator tuning for message-sized buffers.
//
// glibc serves allocations above its mmap threshold (128 KiB at first, at
// most 32 MiB) with fresh mappings, and trims the heap top eagerly: a data
// plane that allocates and frees a 1 MiB message per call then pays a page
// fault per 4 KiB on every call. TuneAllocatorForMessages() keeps such buffers
// in the heap (mmap threshold 256 MiB, trim threshold 1 GiB) so freed memory
// is reused. Called by InitProcess for the daemons and by PsClient::Connect;
// PLEXUS_KEEP_MALLOC_SETTINGS=1 in the environment turns it off.
//
// Thread safety: may be called from any thread; idempotent.
#pragma once

namespace plexus {

void TuneAllocatorForMessages();

}  // namespace plexus
