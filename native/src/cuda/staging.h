// Host-to-device copies of host data (the multi-tensor ops' work tables, tensor uploads) through a pinned staging
// ring per device (core/staging_ring.h), so they never make the host wait for the stream.
#pragma once
#include <cstddef>

#include "runtime.h"

namespace owlet::cuda {

// Queues a copy of n bytes from host memory `src` to device memory `dst` on c's stream; `src` may be reused when this
// returns. Copies too large for the ring, and every copy under OWLET_PINNED=0 (read once), go straight from `src`
// with cudaMemcpyAsync (which may then wait for the stream).
void copy_to_device(DeviceContext& c, void* dst, const void* src, size_t n, const char* op);

}  // namespace owlet::cuda
