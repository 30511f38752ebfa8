// Host-to-device copies through a ring of pinned host memory. A copy from pageable memory may make the host wait for
// the stream (the driver stages it through its own pinned buffers, and waits when those are still queued behind
// kernels): the multi-tensor ops' work tables and the batch uploads would then wait for the device in the middle of
// a step. Copied into this ring first, the copy is asynchronous, and the host only waits when it is about to reuse
// ring bytes whose copy the stream has not reached yet (a ring smaller than the data in flight).
//
// Templated over the runtime calls so that test/native/staging_ring_test.cc can check it against a fake stream that
// executes copies late (and so catches bytes reused too early); native/src/cuda/staging.cc instantiates it for CUDA.
// The Api type provides: Stream, Event, alloc_pinned(bytes) (null when refused), free_pinned(p), new_event(), record(event, stream),
// wait(event) (blocks until the stream passed it), copy_h2d(dst, pinned_src, bytes, stream) (queued), sync(stream).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <vector>

namespace owlet {

template <class Api>
class StagingRing {
 public:
  static constexpr size_t kAlign = 256;

  // initial: the first ring's bytes (grown on demand, by doubling, up to max_ring); a copy larger than a quarter of
  // max_ring goes direct.
  explicit StagingRing(Api& api, size_t initial = size_t(8) << 20, size_t max_ring = size_t(256) << 20)
      : api_(api), initial_(initial), max_ring_(max_ring) {}
  StagingRing(const StagingRing&) = delete;
  StagingRing& operator=(const StagingRing&) = delete;

  // Queues a copy of n bytes from host memory `src` to device memory `dst` on stream s through the ring; `src` may be
  // reused as soon as this returns. False (nothing done) for a copy too large to stage: the caller copies it directly.
  bool copy(void* dst, const void* src, size_t n, typename Api::Stream s) {
    if (n == 0) return true;
    const size_t need = (n + kAlign - 1) / kAlign * kAlign;
    if (failed_ || need > max_ring_ / 4) return false;
    if (need > cap_ / 4 && !grow(need, s)) return false;
    size_t at = head_;
    if (at + need > cap_) at = 0;  // wrap: the tail end of the ring stays unused this round
    // Regions are reused in the order they were queued, and the stream completes them in that order: waiting for the
    // oldest ones until nothing overlaps frees exactly what this copy needs.
    while (overlaps_busy(at, at + need)) retire_oldest();
    std::memcpy(buf_ + at, src, n);
    api_.copy_h2d(dst, buf_ + at, n, s);
    typename Api::Event e = take_event();
    api_.record(e, s);
    busy_.push_back({at, at + need, e});
    head_ = at + need;
    return true;
  }

  size_t capacity() const { return cap_; }
  size_t in_flight() const { return busy_.size(); }
  // Older copies this ring had to see completed before reusing their bytes (waits for the stream when it had not
  // reached them yet: a ring too small for what is in flight).
  size_t waits() const { return waits_; }

 private:
  struct Region {
    size_t begin, end;
    typename Api::Event done;
  };

  bool overlaps_busy(size_t a, size_t b) const {
    for (const Region& r : busy_)
      if (r.begin < b && a < r.end) return true;
    return false;
  }
  void retire_oldest() {
    api_.wait(busy_.front().done);
    waits_++;
    free_events_.push_back(busy_.front().done);
    busy_.pop_front();
  }
  typename Api::Event take_event() {
    if (free_events_.empty()) return api_.new_event();
    typename Api::Event e = free_events_.back();
    free_events_.pop_back();
    return e;
  }
  // A bigger ring (rare: the first large upload). The old one may still be read by queued copies: wait for them.
  // Pinned memory the system refuses (alloc_pinned returns null) turns the ring off: every copy goes direct.
  bool grow(size_t need, typename Api::Stream s) {
    size_t cap = cap_ ? cap_ : initial_;
    while (cap < 4 * need) cap *= 2;
    if (cap > max_ring_) cap = max_ring_;
    if (buf_) {
      api_.sync(s);
      for (const Region& r : busy_) free_events_.push_back(r.done);
      busy_.clear();
      api_.free_pinned(buf_);
    }
    buf_ = static_cast<uint8_t*>(api_.alloc_pinned(cap));
    cap_ = buf_ ? cap : 0;
    head_ = 0;
    failed_ = buf_ == nullptr;
    return !failed_;
  }

  Api& api_;
  const size_t initial_, max_ring_;
  uint8_t* buf_ = nullptr;
  size_t cap_ = 0, head_ = 0, waits_ = 0;
  bool failed_ = false;  // pinned memory was refused: no ring
  std::deque<Region> busy_;
  std::vector<typename Api::Event> free_events_;
};

}  // namespace owlet
