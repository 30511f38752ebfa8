// Memory for storages. Each addon links exactly one implementation: host memory (aligned, counted) in the CPU addon,
// and a caching device allocator beside it in the CUDA addon.
#pragma once
#include <cstddef>

#include "tensor.h"

namespace owlet {

void* device_alloc(Device d, size_t bytes);  // throws Error(OutOfMemory) naming the size and the device
void device_free(Device d, void* p, size_t bytes);

// Host allocation with accounting, shared by both addons.
void* host_alloc(size_t bytes);
void host_free(void* p, size_t bytes);

// Accounting hooks used by the allocators.
void account_alloc(Device d, size_t bytes);
void account_free(Device d, size_t bytes);

}  // namespace owlet
