// The CPU addon's allocator: every storage lives in host memory.
#include "allocator.h"

namespace owlet {

void* device_alloc(Device d, size_t bytes) {
  if (d.kind != DeviceKind::CPU) fail(ErrorKind::Device, "the CPU backend cannot allocate on " + d.name());
  return host_alloc(bytes);
}

void device_free(Device d, void* p, size_t bytes) { host_free(p, bytes); (void)d; }

}  // namespace owlet
