// What the caching device allocator reports about itself (backend info, tests of the cache).
#pragma once
#include <cstddef>

namespace owlet::cuda {

struct AllocatorStats {
  size_t reserved = 0;  // bytes held from the driver (tensors + cache)
  size_t cached = 0;    // bytes of freed blocks kept for reuse
  size_t mallocs = 0;   // cudaMalloc calls so far
};

AllocatorStats allocator_stats(int device);
void empty_cache(int device);  // returns cached blocks to the driver (waits for the device's stream)

}  // namespace owlet::cuda
