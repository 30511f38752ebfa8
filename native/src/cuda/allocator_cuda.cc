// The CUDA addon's allocator: a caching device allocator, so that a training step calls cudaMalloc only the first
// time it needs a block of a given size.
//
// Freed blocks go to per-device free lists keyed by (rounded) size and are handed to the next request that fits.
// No synchronisation is needed for that reuse: every kernel of a device runs on its one stream (runtime.h), so
// whatever still reads a freed block was queued before whatever the next owner queues. (The NCCL communication
// stream holds its buffers until the compute stream waits for it, so the same holds for them.)
// On a cudaMalloc failure the cache is returned to the driver (after the stream drains) and the allocation is tried
// once more; if that fails too, Error(OutOfMemory) says what was being allocated and where the memory is.
#include <cuda_runtime.h>

#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>

#include "../core/allocator.h"
#include "allocator_cuda.h"
#include "runtime.h"

namespace owlet {

namespace {
constexpr size_t kMiB = size_t(1) << 20;

struct Pool {
  std::mutex mu;
  std::multimap<size_t, void*> free_blocks;     // block size -> block, blocks nobody uses
  std::unordered_map<void*, size_t> block_size;  // every block this pool obtained from cudaMalloc and still holds
  size_t cached = 0;                             // bytes in free_blocks
  size_t reserved = 0;                           // bytes obtained from cudaMalloc (live + cached)
  size_t mallocs = 0;                            // cudaMalloc calls, for tests of the cache
};
Pool pools[cuda::kMaxDevices];

// Small blocks in 512-byte steps, large ones in 2 MiB steps (the driver's own granularity).
size_t round_size(size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (bytes <= kMiB) return (bytes + 511) / 512 * 512;
  return (bytes + 2 * kMiB - 1) / (2 * kMiB) * (2 * kMiB);
}

std::string human(size_t b) {
  char buf[64];
  if (b >= (size_t(1) << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", double(b) / double(size_t(1) << 30));
  else std::snprintf(buf, sizeof buf, "%.1f MiB", double(b) / double(kMiB));
  return buf;
}

// Returns every cached block to the driver. Caller holds the pool's lock and has drained the stream.
void release_cache(Pool& p) {
  for (auto& kv : p.free_blocks) {
    cudaFree(kv.second);
    p.block_size.erase(kv.second);
    p.reserved -= kv.first;
  }
  p.free_blocks.clear();
  p.cached = 0;
}
}  // namespace

void* device_alloc(Device d, size_t bytes) {
  if (d.kind == DeviceKind::CPU) return host_alloc(bytes);
  cuda::DeviceContext& ctx = cuda::context(d);
  Pool& p = pools[d.index];
  size_t want = round_size(bytes);
  std::lock_guard<std::mutex> lock(p.mu);
  // Best fit among cached blocks, accepting up to a quarter of slack so that odd sizes still find a home.
  auto it = p.free_blocks.lower_bound(want);
  if (it != p.free_blocks.end() && it->first <= want + want / 4) {
    void* ptr = it->second;
    p.cached -= it->first;
    p.free_blocks.erase(it);
    account_alloc(d, bytes);
    return ptr;
  }
  void* ptr = nullptr;
  cudaError_t e = cudaMalloc(&ptr, want);
  if (e == cudaErrorMemoryAllocation && p.cached > 0) {
    cudaGetLastError();
    cudaStreamSynchronize(ctx.stream);  // cached blocks may still be read by queued kernels
    release_cache(p);
    e = cudaMalloc(&ptr, want);
  }
  if (e != cudaSuccess) {
    cudaGetLastError();
    if (e != cudaErrorMemoryAllocation) cuda::check(e, "allocate", "cudaMalloc");
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    fail(ErrorKind::OutOfMemory,
         "out of memory on " + d.name() + " while allocating " + human(bytes) + ": tensors hold " +
             human(bytes_in_use(d)) + ", the allocator's cache holds " + human(p.cached) + ", the device has " +
             human(free_b) + " free of " + human(total_b) +
             ". What would help: a smaller micro-batch (with gradient accumulation to keep the batch), activation "
             "recomputation per layer, shorter sequences, or disposing tensors that are no longer needed.");
  }
  p.mallocs++;
  p.reserved += want;
  p.block_size[ptr] = want;
  account_alloc(d, bytes);
  return ptr;
}

void device_free(Device d, void* ptr, size_t bytes) {
  if (d.kind == DeviceKind::CPU) return host_free(ptr, bytes);
  Pool& p = pools[d.index];
  {
    std::lock_guard<std::mutex> lock(p.mu);
    auto it = p.block_size.find(ptr);
    if (it != p.block_size.end()) {
      p.free_blocks.emplace(it->second, ptr);
      p.cached += it->second;
    }
  }
  account_free(d, bytes);
}

namespace cuda {

AllocatorStats allocator_stats(int device) {
  AllocatorStats s;
  if (device < 0 || device >= cuda::kMaxDevices) return s;
  Pool& p = pools[device];
  std::lock_guard<std::mutex> lock(p.mu);
  s.reserved = p.reserved;
  s.cached = p.cached;
  s.mallocs = p.mallocs;
  return s;
}

void empty_cache(int device) {
  if (device < 0 || device >= cuda::kMaxDevices) return;
  DeviceContext& ctx = context(Device{DeviceKind::CUDA, device});
  Pool& p = pools[device];
  std::lock_guard<std::mutex> lock(p.mu);
  cudaStreamSynchronize(ctx.stream);
  release_cache(p);
}

}  // namespace cuda

}  // namespace owlet
