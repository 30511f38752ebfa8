// kern::read_queue on the GPU: each ticket's copies go into one block of pinned host memory, queued on the device's
// stream behind everything queued so far, with an event recorded after them; read_take waits for that event only, so
// the host waits for the work queued before the read and not for what was queued after it (the next step's forward
// and backward, in the trainer). Blocks and events are pooled: a training step queues one read per step.
#include <cstring>
#include <mutex>
#include <vector>

#include "../core/kernels.h"
#include "../core/queued_reads.h"
#include "runtime.h"

namespace owlet::kern {

namespace {
using cuda::check;
using cuda::DeviceContext;

struct Block {
  uint8_t* p = nullptr;
  size_t cap = 0;
  bool pinned = false;  // false: pageable memory (pinned memory refused), the copies then wait for the stream
};

struct Slot {
  int device = -1;  // -1: no tensors
  cudaEvent_t done = nullptr;
  Block block;
  std::vector<size_t> offsets, sizes;
};

std::mutex mu;  // the tickets and pools (the event wait happens outside it)
QueuedReads<Slot> tickets;
std::vector<Block> free_blocks;
std::vector<cudaEvent_t> free_events[cuda::kMaxDevices];

Block take_block(size_t need) {
  for (size_t i = 0; i < free_blocks.size(); i++) {
    if (free_blocks[i].cap >= need) {
      Block b = free_blocks[i];
      free_blocks.erase(free_blocks.begin() + long(i));
      return b;
    }
  }
  Block b;
  b.cap = need < 4096 ? 4096 : (need + 4095) / 4096 * 4096;
  void* p = nullptr;
  if (cudaHostAlloc(&p, b.cap, cudaHostAllocDefault) == cudaSuccess) {
    b.p = static_cast<uint8_t*>(p);
    b.pinned = true;
  } else {  // a container's pinned-memory limit: correct, only no longer asynchronous
    cudaGetLastError();
    b.p = new uint8_t[b.cap];
  }
  return b;
}

void give_back(Slot& s) {
  std::lock_guard<std::mutex> lock(mu);
  if (s.block.p) free_blocks.push_back(s.block);
  if (s.done) free_events[s.device].push_back(s.done);
  s.block = Block{};
  s.done = nullptr;
}

// A claimed ticket's slot: waited for (the copies write into its block until then; the device's deferred kernel
// errors surface here as at any other wait), then given back to the pools however the caller leaves.
struct Claimed {
  Slot s;
  Claimed(uint64_t ticket, const char* op) {
    {
      std::lock_guard<std::mutex> lock(mu);
      s = tickets.claim(ticket, op);
    }
    if (s.device < 0) return;
    try {
      DeviceContext& c = cuda::context(Device{DeviceKind::CUDA, s.device});
      check(cudaEventSynchronize(s.done), op, "cudaEventSynchronize");
      cuda::raise_deferred_errors(c);
    } catch (...) {
      give_back(s);
      throw;
    }
  }
  ~Claimed() { give_back(s); }
  Claimed(const Claimed&) = delete;
  Claimed& operator=(const Claimed&) = delete;
};
}  // namespace

uint64_t read_queue(const std::vector<const Tensor*>& xs) {
  Slot s;
  {
    std::lock_guard<std::mutex> lock(mu);
    tickets.check_room("readQueue");
  }
  size_t total = 0;
  for (const Tensor* x : xs) {
    s.offsets.push_back(total);
    s.sizes.push_back(x->nbytes());
    total += (x->nbytes() + 15) / 16 * 16;
  }
  if (!xs.empty()) {
    DeviceContext& c = cuda::context_of(*xs[0], "readQueue");
    s.device = c.index;
    {
      std::lock_guard<std::mutex> lock(mu);
      s.block = take_block(total);
      if (!free_events[c.index].empty()) {
        s.done = free_events[c.index].back();
        free_events[c.index].pop_back();
      }
    }
    try {
      if (!s.done) check(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming), "readQueue", "cudaEventCreate");
      for (size_t i = 0; i < xs.size(); i++) {
        if (s.sizes[i])
          check(cudaMemcpyAsync(s.block.p + s.offsets[i], xs[i]->raw(), s.sizes[i], cudaMemcpyDeviceToHost, c.stream),
                "readQueue", "cudaMemcpyAsync(device to host)");
      }
      check(cudaEventRecord(s.done, c.stream), "readQueue", "cudaEventRecord");
    } catch (...) {
      give_back(s);
      throw;
    }
  }
  std::lock_guard<std::mutex> lock(mu);
  return tickets.add(std::move(s));
}

void read_take(uint64_t ticket, ReadSink take, void* ctx) {
  Claimed c(ticket, "readTake");
  for (size_t i = 0; i < c.s.sizes.size(); i++) take(ctx, i, c.s.block.p + c.s.offsets[i], c.s.sizes[i]);
}

void read_drop(uint64_t ticket) { Claimed c(ticket, "readDrop"); }

}  // namespace owlet::kern
