// Byte counters per device and a count of live storages, for leak tests and peak-memory metrics.
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

#include "allocator.h"

namespace owlet {

namespace {
constexpr int kMaxDevices = 16;
struct Counter {
  std::atomic<size_t> in_use{0};
  std::atomic<size_t> peak{0};
};
Counter counters[2][kMaxDevices];
std::atomic<size_t> storages{0};
Counter& counter(Device d) { return counters[int(d.kind)][d.index < kMaxDevices ? d.index : 0]; }
}  // namespace

void account_alloc(Device d, size_t bytes) {
  Counter& c = counter(d);
  size_t now = c.in_use.fetch_add(bytes) + bytes;
  size_t p = c.peak.load();
  while (now > p && !c.peak.compare_exchange_weak(p, now)) {}
  storages++;
}

void account_free(Device d, size_t bytes) {
  counter(d).in_use.fetch_sub(bytes);
  storages--;
}

size_t bytes_in_use(Device d) { return counter(d).in_use.load(); }
size_t peak_bytes(Device d) { return counter(d).peak.load(); }
void reset_peak_bytes(Device d) { counter(d).peak.store(counter(d).in_use.load()); }
size_t live_storages() { return storages.load(); }

namespace {
// Host blocks of 64 KiB and more are cached by size class and handed to the next request of that class. A training
// step allocates and frees the same sizes every step (sequence lengths vary a little between batches): with glibc
// serving them (large blocks kept in the heap, backend_cpu.cc) the heaps of the threads that allocate grew without
// bound on some runs (measured 2026-11-26: the demo's warm-up at ~250 MB/s of resident memory, not every run,
// never with the cache); with mmap for every large block, every step page-faults its working set in again.
// Classes are a power of two cut in 8 steps (at most 25% over a request); at most kMaxCached bytes are kept.
constexpr size_t kCachedFrom = size_t(64) << 10;
constexpr size_t kMaxCached = size_t(2) << 30;
struct HostCache {
  std::mutex mu;
  std::unordered_map<size_t, std::vector<void*>> free_blocks;
  size_t cached = 0;
};
HostCache& host_cache() {
  static HostCache* c = new HostCache();  // never destroyed: tensors may be freed during static destruction
  return *c;
}
size_t size_class(size_t bytes) {
  size_t p = 1;
  while (p < bytes) p <<= 1;
  size_t step = p >= 8 ? p / 8 : 1;
  return (bytes + step - 1) / step * step;
}
void release_host_cache(HostCache& c) {  // caller holds c.mu
  for (auto& [size, blocks] : c.free_blocks)
    for (void* b : blocks) std::free(b);
  c.free_blocks.clear();
  c.cached = 0;
}
[[noreturn]] void host_oom(size_t bytes) {
  fail(ErrorKind::OutOfMemory, "host allocation of " + std::to_string(bytes) + " bytes failed (" +
                                   std::to_string(bytes_in_use(Device{}) >> 20) + " MiB already in use on cpu)");
}
}  // namespace

void* host_alloc(size_t bytes) {
  // 64-byte alignment for SIMD and BLAS; a zero-byte tensor still gets a unique pointer.
  size_t want = bytes ? bytes : 1;
  void* p = nullptr;
  if (want >= kCachedFrom) {
    size_t cls = size_class(want);
    HostCache& c = host_cache();
    {
      std::lock_guard<std::mutex> lock(c.mu);
      auto it = c.free_blocks.find(cls);
      if (it != c.free_blocks.end() && !it->second.empty()) {
        p = it->second.back();
        it->second.pop_back();
        c.cached -= cls;
      }
    }
    if (!p) p = std::aligned_alloc(64, cls);
    if (!p) {
      std::lock_guard<std::mutex> lock(c.mu);
      release_host_cache(c);
      p = std::aligned_alloc(64, cls);
    }
  } else {
    p = std::aligned_alloc(64, (want + 63) / 64 * 64);
  }
  if (!p) host_oom(bytes);
  account_alloc(Device{}, bytes);
  return p;
}

void host_free(void* p, size_t bytes) {
  size_t want = bytes ? bytes : 1;
  if (want >= kCachedFrom) {
    size_t cls = size_class(want);
    HostCache& c = host_cache();
    std::lock_guard<std::mutex> lock(c.mu);
    if (c.cached + cls <= kMaxCached) {
      c.free_blocks[cls].push_back(p);
      c.cached += cls;
      p = nullptr;
    }
  }
  if (p) std::free(p);
  account_free(Device{}, bytes);
}

}  // namespace owlet
