// Byte counters per device and a count of live storages, for leak tests and peak-memory metrics.
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <new>
#include <string>

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

void* host_alloc(size_t bytes) {
  // 64-byte alignment for SIMD and BLAS; a zero-byte tensor still gets a unique pointer.
  size_t rounded = ((bytes ? bytes : 1) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p)
    fail(ErrorKind::OutOfMemory, "host allocation of " + std::to_string(bytes) + " bytes failed (" +
                                     std::to_string(bytes_in_use(Device{}) >> 20) + " MiB already in use on cpu)");
  account_alloc(Device{}, bytes);
  return p;
}

void host_free(void* p, size_t bytes) {
  std::free(p);
  account_free(Device{}, bytes);
}

}  // namespace owlet
