// native/src/core/staging_ring.h against a fake stream that runs its queued copies late, only when the host waits for
// an event (or drains it at random moments): a ring that hands out bytes whose copy has not run yet corrupts the
// destination, which the check at the end sees. Run by scripts/flash-emu.sh.
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "../../native/src/core/staging_ring.h"

namespace {

struct FakeApi {
  using Stream = int;
  using Event = int;
  struct Op {
    bool is_copy;
    void* dst;
    const void* src;
    size_t n;
    int event;
  };
  std::vector<Op> queue;        // not yet executed, in order
  std::vector<bool> event_done;  // by event id
  std::vector<std::vector<uint8_t>> pinned;
  int syncs = 0, frees = 0;

  void run_until(size_t k) {  // executes the first k queued ops
    for (size_t i = 0; i < k; i++) {
      Op& o = queue[i];
      if (o.is_copy) std::memcpy(o.dst, o.src, o.n);
      else event_done[size_t(o.event)] = true;
    }
    queue.erase(queue.begin(), queue.begin() + long(k));
  }
  void* alloc_pinned(size_t n) {
    pinned.emplace_back(n, 0xAB);
    return pinned.back().data();
  }
  void free_pinned(void* p) {  // poisoned, not released: a queued copy still reading it delivers garbage
    frees++;
    for (auto& b : pinned)
      if (b.data() == p) std::fill(b.begin(), b.end(), 0xDD);
  }
  Event new_event() {
    event_done.push_back(false);
    return int(event_done.size() - 1);
  }
  void record(Event e, Stream) {
    event_done[size_t(e)] = false;
    queue.push_back({false, nullptr, nullptr, 0, e});
  }
  void wait(Event e) {
    for (size_t i = 0; i < queue.size(); i++)
      if (!queue[i].is_copy && queue[i].event == e) { run_until(i + 1); return; }
  }
  void copy_h2d(void* dst, const void* src, size_t n, Stream) { queue.push_back({true, dst, src, n, -1}); }
  void sync(Stream) { syncs++; run_until(queue.size()); }
};

}  // namespace

int main() {
  using Ring = owlet::StagingRing<FakeApi>;
  std::mt19937 rng(3);
  int failed = 0;
  for (int round = 0; round < 3; round++) {
    FakeApi api;
    Ring ring(api, 64 << 10, 4 << 20);  // 64 KiB growing to 4 MiB: copies above 1 MiB go direct
    // destinations ("device memory") and what each must end up holding
    std::vector<std::vector<uint8_t>> dst, want;
    size_t direct = 0;
    for (int i = 0; i < 3000; i++) {
      size_t n;
      const int kind = int(rng() % 100);
      if (kind < 60) n = 1 + rng() % 4096;                      // work tables
      else if (kind < 95) n = 4096 + rng() % (128 << 10);       // batches
      else if (kind < 99) n = (200 << 10) + rng() % (800 << 10);  // images: the ring grows
      else n = (1 << 20) + 1 + rng() % 1000;                    // too large to stage
      std::vector<uint8_t> src(n);
      for (auto& b : src) b = uint8_t(rng());
      dst.emplace_back(n, 0);
      if (!ring.copy(dst.back().data(), src.data(), n, 0)) {
        direct++;
        std::memcpy(dst.back().data(), src.data(), n);  // what the caller does then
      }
      want.push_back(src);
      std::fill(src.begin(), src.end(), 0xEE);  // the host reuses its buffer at once
      if (rng() % 7 == 0) api.run_until(rng() % (api.queue.size() + 1));  // the stream gets somewhere
    }
    api.sync(0);
    size_t bad = 0;
    for (size_t i = 0; i < dst.size(); i++) bad += dst[i] != want[i];
    std::printf("%s staging ring round %d: %zu copies (%zu direct), ring %zu KiB, %zu waits, %d grows: %zu destinations wrong\n",
                bad ? "FAIL" : "PASS", round, dst.size(), direct, ring.capacity() >> 10, ring.waits(), api.frees, bad);
    failed += bad != 0 || direct == 0 || ring.waits() == 0;
  }
  {  // pinned memory refused: every copy goes direct (the caller's cudaMemcpyAsync), none is lost
    struct Refusing : FakeApi {
      void* alloc_pinned(size_t) { return nullptr; }
    } api;
    owlet::StagingRing<Refusing> ring(api, 64 << 10, 4 << 20);
    std::vector<uint8_t> src(1000, 7), dst(1000, 0);
    const bool staged = ring.copy(dst.data(), src.data(), src.size(), 0) || ring.copy(dst.data(), src.data(), 10, 0);
    std::printf("%s staging ring without pinned memory: copies %s\n", staged ? "FAIL" : "PASS", staged ? "claimed staged" : "go direct");
    failed += staged;
  }
  return failed ? 1 : 0;
}
