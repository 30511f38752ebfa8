// core/staging_ring.h on the CUDA runtime: one ring per device, on that device's stream.
#include "staging.h"

#include <mutex>

#include "../core/staging_ring.h"

namespace owlet::cuda {

namespace {

struct CudaApi {
  using Stream = cudaStream_t;
  using Event = cudaEvent_t;
  const char* op = "upload";
  void* alloc_pinned(size_t n) {  // null when refused (a container's pinned-memory limit): copies then go direct
    void* p = nullptr;
    if (cudaHostAlloc(&p, n, cudaHostAllocDefault) != cudaSuccess) {
      cudaGetLastError();
      return nullptr;
    }
    return p;
  }
  void free_pinned(void* p) { check(cudaFreeHost(p), op, "cudaFreeHost(staging ring)"); }
  Event new_event() {
    cudaEvent_t e;
    check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), op, "cudaEventCreate(staging ring)");
    return e;
  }
  void record(Event e, Stream s) { check(cudaEventRecord(e, s), op, "cudaEventRecord(staging ring)"); }
  void wait(Event e) { check(cudaEventSynchronize(e), op, "cudaEventSynchronize(staging ring)"); }
  void copy_h2d(void* dst, const void* src, size_t n, Stream s) {
    check(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, s), op, "cudaMemcpyAsync(host to device, staged)");
  }
  void sync(Stream s) { check(cudaStreamSynchronize(s), op, "cudaStreamSynchronize(staging ring)"); }
};

struct DeviceRing {
  std::mutex mu;
  CudaApi api;
  StagingRing<CudaApi>* ring = nullptr;  // created on first use, kept for the process (pinned memory freed at exit)
};
DeviceRing rings[kMaxDevices];

bool pinned_enabled() {
  static const bool on = !env_is("OWLET_PINNED", "0");
  return on;
}

}  // namespace

void copy_to_device(DeviceContext& c, void* dst, const void* src, size_t n, const char* op) {
  if (n == 0) return;
  if (pinned_enabled()) {
    DeviceRing& r = rings[c.index];
    std::lock_guard<std::mutex> lock(r.mu);
    r.api.op = op;
    if (!r.ring) r.ring = new StagingRing<CudaApi>(r.api);
    if (r.ring->copy(dst, src, n, c.stream)) return;
  }
  check(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, c.stream), op, "cudaMemcpyAsync(host to device)");
}

}  // namespace owlet::cuda
