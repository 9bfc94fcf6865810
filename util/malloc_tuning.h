// TuneMallocForStreaming: keeps glibc from handing freed heap memory back to
// the kernel after every large message.
//
// Note [malloc trimming]
// ~~~~~~~~~~~~~~~~~~~~~~
// Streaming tensors allocates and frees a message of up to --max_batch_bytes
// many times a second. By default glibc returns the heap's freed top to the
// kernel once it passes 128 KiB, so the next message faults its pages in
// again; on a virtual machine those faults cost more than the copies. With
// a 256 MiB trim threshold, stream_bench's tensor stream went from 0.2 to
// about 1.3 GB/s (docs/performance.md). The cost is up to that much freed
// memory kept for reuse. Equivalent to MALLOC_TRIM_THRESHOLD_=268435456.
//
// Setting any threshold turns off glibc's sliding mmap threshold, which
// would otherwise rise to the size of the blocks a program frees: every
// block above the fixed 128 KiB default is then mmap'ed and unmapped, and
// a large model's activations (megabytes each, every step) fault their
// pages in on every call. An SD 1.5-sized UNet's step took 19% longer
// than in diffusers' process for it (bench/export_bench.py). So blocks up
// to glibc's ceiling for the threshold, 32 MiB, come from the heap too.
#pragma once

#include <malloc.h>

namespace loopserve {

inline void TuneMallocForStreaming() {
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
}

}  // namespace loopserve
