// A small host emulator for the warp-level CUDA used by owlet's tensor-core kernels, so their index arithmetic can
// be checked on a machine without a GPU. Each thread of a block is a fiber (ucontext) on one OS thread; every
// collective (barrier, shuffle, ldmatrix, mma) posts the lane's inputs, waits at a barrier for its group, computes
// the lane's result from everyone's posts, and waits again. The semantics of ldmatrix and mma.m16n8k16 follow the
// PTX ISA's fragment tables (the same ones written down in native/src/cuda/mma.cuh), computed in fp32 from bf16.
//
// Include this before the kernel headers, with OWLET_CUDA_EMULATION defined (mma.cuh then calls these instead of
// inline PTX, and OWLET_DYNAMIC_SMEM gives the block's emulated shared memory).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <array>
#include <deque>
#include <vector>

namespace emu {

struct Dim {
  unsigned x = 1, y = 1, z = 1;
};

struct Cluster;
struct Block {
  Dim block_idx, grid_dim, block_dim;
  int nthreads = 0;
  Cluster* cluster = nullptr;  // the cluster it runs in (launch), and its rank there
  int cluster_rank = 0;
  std::vector<unsigned char> smem;
  std::function<void()> body;
  std::vector<ucontext_t> ctx;
  std::vector<std::vector<char>> stacks;
  std::vector<bool> done;
  std::vector<bool> at_block_barrier;  // waiting in __syncthreads
  ucontext_t sched;
  int cur = 0;
  // Barrier per group: groups 0..nwarps-1 are warps, group nwarps is the block.
  std::vector<int> arrive, gen;
  // Per-lane posts for collectives.
  std::vector<std::array<uint32_t, 8>> post;
  std::vector<float> postf;
  std::vector<float> wg_a;  // wgmma with A in registers: each warpgroup's 64×16 A, gathered from its threads
  // wgmma per thread: issued and not yet committed, and the committed groups not yet waited for (oldest first).
  std::vector<std::vector<std::function<void()>>> wgmma_open;
  std::vector<std::deque<std::vector<std::function<void()>>>> wgmma_groups;
  // mbarriers (keyed by shared-memory offset), named barriers (bar.sync / bar.arrive ids 0..15), and each thread's
  // cp.async copies that land only at its next cp.async.mbarrier.arrive (see cp_async_deferred).
  struct Mbar {
    int expected = 0, pending = 0;
    int64_t tx = 0;  // transaction bytes expected (mbarrier.expect_tx) and not yet delivered in this phase
    unsigned phase = 0;
    std::vector<int> waiters;
    // cp.async.mbarrier.arrive.noinc arrivals whose copies have not landed yet (each: that thread's copies).
    std::vector<std::vector<std::function<void()>>> in_flight;
    // TMA box copies reporting to this mbarrier that have not landed yet (each delivers its bytes when it lands).
    std::vector<std::function<void()>> tx_in_flight;
  };
  std::vector<std::pair<uint32_t, Mbar>> mbars;
  struct Named {
    int arrived = 0, count = 0;
    unsigned gen = 0;
    std::vector<int> waiters;
  };
  std::array<Named, 16> named;
  std::vector<std::vector<std::function<void()>>> cp_pending;
  // cp.reduce.async.bulk and cp.async.bulk.tensor stores per thread: issued and not yet committed, and the committed
  // groups not yet waited for (oldest first); each with a snapshot of its source bytes taken at issue and what it does
  // with them when it completes.
  struct BulkOp {
    uint32_t src, bytes;
    std::vector<unsigned char> snap;
    std::function<void(const unsigned char*)> apply;
  };
  std::vector<std::vector<BulkOp>> bulk_open;
  std::vector<std::deque<std::vector<BulkOp>>> bulk_groups;
};

inline Block*& current() {
  static Block* b = nullptr;
  return b;
}
inline int tid() { return current()->cur; }

inline void yield() {
  Block* b = current();
  swapcontext(&b->ctx[size_t(b->cur)], &b->sched);
}

// Group `group` of `size` threads starting at thread `first` (a warp, the block, a warpgroup): the arrivals meet, the
// early ones parked (so the scheduler runs other warps: a lane that waits on an mbarrier while its warp's other lanes
// wait here must not keep them spinning) and unparked by the last.
inline void barrier_group(int group, int size, bool block, int first = -1) {
  Block* b = current();
  if (first < 0) first = block ? 0 : (b->cur / size) * size;
  int g = b->gen[size_t(group)];
  if (++b->arrive[size_t(group)] == size) {
    b->arrive[size_t(group)] = 0;
    b->gen[size_t(group)]++;
    std::fill(b->at_block_barrier.begin() + first, b->at_block_barrier.begin() + first + size, false);
  } else {
    // (re-parked after every wake-up: an mbarrier or named barrier may unpark a thread that waited on it earlier)
    while (b->gen[size_t(group)] == g) {
      b->at_block_barrier[size_t(b->cur)] = true;
      yield();
    }
  }
}
inline void warp_barrier() { barrier_group(tid() / 32, 32, false); }
inline void block_barrier() {
  Block* b = current();
  barrier_group(b->nthreads / 32, b->nthreads, true);
}

inline void fiber_entry() {
  Block* b = current();
  b->body();
  if (!b->wgmma_open[size_t(b->cur)].empty() || !b->wgmma_groups[size_t(b->cur)].empty()) {
    std::fprintf(stderr, "emulator: thread %d ends with wgmma never waited for\n", b->cur);
    std::abort();
  }
  if (!b->cp_pending[size_t(b->cur)].empty()) {
    std::fprintf(stderr, "emulator: thread %d ends with cp.async copies never completed\n", b->cur);
    std::abort();
  }
  if (!b->bulk_open[size_t(b->cur)].empty() || !b->bulk_groups[size_t(b->cur)].empty()) {
    std::fprintf(stderr, "emulator: thread %d ends with bulk reductions never waited for\n", b->cur);
    std::abort();
  }
  b->done[size_t(b->cur)] = true;
  // returning resumes uc_link (the scheduler)
}

// The scheduler's random stream (launch below): reseeding it makes the launches that follow run the same schedules
// again, so a test can repeat a run and expect even the order of its atomics to repeat. OWLET_EMU_SEED=n starts it
// from n instead of 42: other schedules, to look for races a test's usual one misses.
inline std::mt19937& schedule_rng() {
  static std::mt19937 rng([] {
    const char* e = std::getenv("OWLET_EMU_SEED");
    return e && *e ? unsigned(std::strtoul(e, nullptr, 10)) : 42u;
  }());
  return rng;
}

// A cluster's shared state (sm_90 thread block clusters): its blocks in rank order, and barrier.cluster's count.
struct Cluster {
  std::vector<Block*> blocks;
  int arrived = 0;
  unsigned gen = 0;
  std::vector<std::pair<Block*, int>> waiters;  // parked in barrier.cluster
};

// One block of `kernel` at grid position `idx`, its threads' fibers made but not started.
inline void init_block(Block& b, Dim idx, Dim grid, int threads, size_t smem_bytes, const std::function<void()>& kernel) {
  b.block_idx = idx;
  b.grid_dim = grid;
  b.block_dim = {unsigned(threads), 1, 1};
  b.nthreads = threads;
  b.smem.assign(smem_bytes + 64, 0xCD);  // poison: reads of never-written shared memory show up as garbage
  b.body = kernel;
  b.ctx.resize(size_t(threads));
  b.stacks.resize(size_t(threads));
  b.done.assign(size_t(threads), false);
  b.at_block_barrier.assign(size_t(threads), false);
  // groups: warps, the block, then warpgroups (4 warps)
  b.arrive.assign(size_t(threads / 32 + 1 + (threads + 127) / 128), 0);
  b.gen.assign(size_t(threads / 32 + 1 + (threads + 127) / 128), 0);
  b.wg_a.assign(size_t((threads + 127) / 128) * 64 * 16, 0.f);
  b.wgmma_open.resize(size_t(threads));
  b.wgmma_groups.resize(size_t(threads));
  b.cp_pending.resize(size_t(threads));
  b.bulk_open.resize(size_t(threads));
  b.bulk_groups.resize(size_t(threads));
  b.post.resize(size_t(threads));
  b.postf.resize(size_t(threads));
  current() = &b;
  for (int t = 0; t < threads; t++) {
    b.stacks[size_t(t)].resize(256 * 1024);
    getcontext(&b.ctx[size_t(t)]);
    b.ctx[size_t(t)].uc_stack.ss_sp = b.stacks[size_t(t)].data();
    b.ctx[size_t(t)].uc_stack.ss_size = b.stacks[size_t(t)].size();
    b.ctx[size_t(t)].uc_link = &b.sched;
    makecontext(&b.ctx[size_t(t)], fiber_entry, 0);
  }
}

// Runs the blocks (one, or a cluster's) to completion together.
// Scheduling: one warp at a time, chosen at random among every block's, runs alone until all its threads wait at a
// block barrier (or finish); lanes within it run in a shuffled order. Warps therefore drift as far apart as the
// barriers allow, so a missing __syncthreads (or a read of shared memory another warp has not filled yet) shows up as
// a wrong result instead of hiding behind a lockstep schedule.
inline void run_blocks(const std::vector<Block*>& blocks) {
  std::mt19937& order_rng = schedule_rng();
  long steps = 0;
  for (;;) {
    std::vector<std::pair<Block*, int>> runnable;
    bool all_done = true;
    for (Block* b : blocks)
      for (int w = 0; w < b->nthreads / 32; w++) {
        bool can = false;
        for (int t = w * 32; t < w * 32 + 32; t++) {
          if (!b->done[size_t(t)]) all_done = false;
          if (!b->done[size_t(t)] && !b->at_block_barrier[size_t(t)]) can = true;
        }
        if (can) runnable.emplace_back(b, w);
      }
    if (all_done) break;
    if (runnable.empty() || ++steps > 100000000L) {
      std::fprintf(stderr, "emulator: deadlock (threads wait at different barriers)\n");
      for (Block* b : blocks) {
        for (auto& m : b->mbars)
          std::fprintf(stderr, "  block %u: mbarrier @%u: phase %u, %d of %d arrivals pending, %lld transaction bytes "
                       "expected, %zu copy batches and %zu TMA copies in flight\n", b->block_idx.x, m.first,
                       m.second.phase, m.second.pending, m.second.expected, static_cast<long long>(m.second.tx),
                       m.second.in_flight.size(), m.second.tx_in_flight.size());
        for (int id = 0; id < 16; id++)
          if (b->named[size_t(id)].arrived)
            std::fprintf(stderr, "  block %u: named barrier %d: %d of %d arrived\n", b->block_idx.x, id,
                         b->named[size_t(id)].arrived, b->named[size_t(id)].count);
      }
      std::abort();
    }
    auto [b, w] = runnable[size_t(order_rng() % runnable.size())];
    current() = b;
    std::vector<int> lanes(32);
    for (int i = 0; i < 32; i++) lanes[size_t(i)] = w * 32 + i;
    for (bool progressed = true; progressed;) {
      progressed = false;
      std::shuffle(lanes.begin(), lanes.end(), order_rng);
      for (int t : lanes) {
        if (b->done[size_t(t)] || b->at_block_barrier[size_t(t)]) continue;
        progressed = true;
        b->cur = t;
        swapcontext(&b->sched, &b->ctx[size_t(t)]);
        current() = b;  // (a fiber may have acted on another block of the cluster: on_block)
      }
    }
  }
  for (Block* b : blocks) {
    for (int id = 0; id < 16; id++)
      if (b->named[size_t(id)].arrived != 0) {
        std::fprintf(stderr, "emulator: named barrier %d left with %d arrivals at the block's end\n", id,
                     b->named[size_t(id)].arrived);
        std::abort();
      }
    // A block must not end with copies still writing its shared memory (the hardware would hand it to the
    // next block): every TMA copy must have been waited for through its mbarrier.
    for (auto& m : b->mbars)
      if (!m.second.tx_in_flight.empty()) {
        std::fprintf(stderr, "emulator: the block ends with %zu TMA copies to the mbarrier at %u never waited for\n",
                     m.second.tx_in_flight.size(), m.first);
        std::abort();
      }
  }
  current() = nullptr;
}

// Runs `kernel` for every block of the grid, blockDim threads each (a multiple of 32), with `smem_bytes` of
// dynamic shared memory; with cluster_x > 1, in clusters of that many consecutive blocks along x (grid.x a multiple
// of it), run together (their threads scheduled as one pool) and sharing what launch_cluster's ops reach: each
// other's mbarriers (mbar_arrive_remote), multicast TMA copies, barrier.cluster.
inline void launch(Dim grid, int threads, size_t smem_bytes, const std::function<void()>& kernel, unsigned cluster_x = 1) {
  if (cluster_x == 0 || grid.x % cluster_x) {
    std::fprintf(stderr, "emulator: a grid of %u blocks along x in clusters of %u\n", grid.x, cluster_x);
    std::abort();
  }
  for (unsigned z = 0; z < grid.z; z++)
    for (unsigned y = 0; y < grid.y; y++)
      for (unsigned x0 = 0; x0 < grid.x; x0 += cluster_x) {
        std::deque<Block> blocks(cluster_x);
        Cluster cl;
        for (unsigned r = 0; r < cluster_x; r++) {
          init_block(blocks[r], {x0 + r, y, z}, grid, threads, smem_bytes, kernel);
          blocks[r].cluster = &cl;
          blocks[r].cluster_rank = int(r);
          cl.blocks.push_back(&blocks[r]);
        }
        run_blocks(cl.blocks);
      }
}

// The same grid with every block resident at once (a persistent kernel whose blocks wait on flags other blocks set:
// grid_flags.cuh): all clusters' threads scheduled as one pool, so a block spinning on a flag lets the others run.
// Each block's fibers take about 100 MB of stacks at 384 threads: keep such grids small.
inline void launch_resident(Dim grid, int threads, size_t smem_bytes, const std::function<void()>& kernel,
                            unsigned cluster_x = 1) {
  if (cluster_x == 0 || grid.x % cluster_x || grid.y != 1 || grid.z != 1) {
    std::fprintf(stderr, "emulator: a resident grid of %u × %u × %u blocks in clusters of %u along x\n", grid.x,
                 grid.y, grid.z, cluster_x);
    std::abort();
  }
  std::deque<Block> blocks(grid.x);
  std::deque<Cluster> clusters(grid.x / cluster_x);
  std::vector<Block*> all;
  for (unsigned x = 0; x < grid.x; x++) {
    init_block(blocks[x], {x, 0, 0}, grid, threads, smem_bytes, kernel);
    Cluster& cl = clusters[x / cluster_x];
    blocks[x].cluster = &cl;
    blocks[x].cluster_rank = int(x % cluster_x);
    cl.blocks.push_back(&blocks[x]);
    all.push_back(&blocks[x]);
  }
  run_blocks(all);
}

// ---- flags in global memory between the blocks of a resident grid (grid_flags.cuh) ----
// A thread spinning on a flag is parked like one at a barrier (the scheduler runs other warps; were every thread
// to spin on a flag nobody sets, that shows as the scheduler's deadlock) and unparked by any flag store.
inline std::vector<std::pair<Block*, int>>& flag_waiters() {
  static std::vector<std::pair<Block*, int>> w;
  return w;
}
inline unsigned flag_wait(const unsigned* f, unsigned v) {
  Block* b = current();
  while (*f != v) {
    b->at_block_barrier[size_t(b->cur)] = true;
    flag_waiters().emplace_back(b, b->cur);
    yield();
  }
  return *f;
}
inline void flag_store(unsigned* f, unsigned v) {
  *f = v;
  for (auto [blk, t] : flag_waiters()) blk->at_block_barrier[size_t(t)] = false;
  flag_waiters().clear();
}

inline unsigned char* dynamic_smem() {
  uintptr_t p = reinterpret_cast<uintptr_t>(current()->smem.data());
  return reinterpret_cast<unsigned char*>((p + 63) & ~uintptr_t(63));
}
inline uint32_t smem_offset(const void* p) {
  return uint32_t(static_cast<const unsigned char*>(p) - dynamic_smem());
}

// A shuffle: every lane posts v and reads the value of lane src(its own lane) of its warp. 4- and 8-byte values (a
// double moves as two 32-bit shuffles on the device).
template <class T, class Src>
inline T shfl(T v, Src src) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "the emulator shuffles 4- and 8-byte values");
  Block* b = current();
  int t = tid();
  uint32_t bits[2] = {0, 0};
  std::memcpy(bits, &v, sizeof(T));
  b->post[size_t(t)][0] = bits[0];
  b->post[size_t(t)][1] = bits[1];
  warp_barrier();
  const auto& from = b->post[size_t((t & ~31) | (src(t & 31) & 31))];
  uint32_t pb[2] = {from[0], from[1]};
  warp_barrier();
  T out;
  std::memcpy(&out, pb, sizeof(T));
  return out;
}
// __any_sync over the whole warp: whether any lane's predicate is true.
inline bool vote_any(bool pred) {
  Block* b = current();
  const int t = tid();
  b->post[size_t(t)][0] = pred ? 1u : 0u;
  warp_barrier();
  bool any = false;
  for (int l = 0; l < 32; l++) any = any || b->post[size_t((t & ~31) | l)][0] != 0;
  warp_barrier();
  return any;
}
template <class T>
inline T shfl_xor(T v, int o) {
  return shfl(v, [o](int lane) { return lane ^ o; });
}
// __shfl_sync: every lane reads lane `src`'s value.
template <class T>
inline T shfl_idx(T v, int src) {
  return shfl(v, [src](int) { return src; });
}

inline uint16_t smem_u16(uint32_t addr) {
  uint16_t v;
  std::memcpy(&v, dynamic_smem() + addr, 2);
  return v;
}

// ldmatrix.x4 (optionally .trans): register i of lane l = row l/4, columns 2(l%4), 2(l%4)+1 of matrix i (of its
// transpose with .trans); matrix i's rows are the addresses posted by lanes 8i..8i+7.
inline void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr, bool trans) {
  Block* b = current();
  int t = tid(), lane = t & 31, w0 = t & ~31;
  b->post[size_t(t)][0] = addr;
  warp_barrier();
  for (int i = 0; i < 4; i++) {
    uint16_t lo, hi;
    if (!trans) {
      uint32_t row = b->post[size_t(w0 + 8 * i + lane / 4)][0];
      lo = smem_u16(row + 2 * (2 * (lane % 4)));
      hi = smem_u16(row + 2 * (2 * (lane % 4) + 1));
    } else {
      uint32_t r0 = b->post[size_t(w0 + 8 * i + 2 * (lane % 4))][0];
      uint32_t r1 = b->post[size_t(w0 + 8 * i + 2 * (lane % 4) + 1)][0];
      lo = smem_u16(r0 + 2 * (lane / 4));
      hi = smem_u16(r1 + 2 * (lane / 4));
    }
    r[i] = uint32_t(lo) | (uint32_t(hi) << 16);
  }
  warp_barrier();
}

inline float bf_lo(uint32_t v) {
  uint32_t u = v << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float bf_hi(uint32_t v) {
  uint32_t u = v & 0xffff0000u;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// mma.m16n8k16.row.col bf16 -> f32: d += A B with the fragment layouts of the PTX ISA.
inline void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  Block* blk = current();
  int t = tid(), lane = t & 31, w0 = t & ~31;
  auto& post = blk->post[size_t(t)];
  for (int i = 0; i < 4; i++) post[size_t(i)] = a[i];
  post[4] = b0;
  post[5] = b1;
  warp_barrier();
  auto A = [&](int row, int k) {  // element A[row][k]
    int g = row % 8, tt = (k % 8) / 2;
    int reg = (k < 8 ? 0 : 2) + (row < 8 ? 0 : 1);
    uint32_t v = blk->post[size_t(w0 + g * 4 + tt)][size_t(reg)];
    return (k % 2) ? bf_hi(v) : bf_lo(v);
  };
  auto B = [&](int k, int col) {  // element B[k][col]
    int tt = (k % 8) / 2;
    uint32_t v = blk->post[size_t(w0 + col * 4 + tt)][k < 8 ? 4u : 5u];
    return (k % 2) ? bf_hi(v) : bf_lo(v);
  };
  int g = lane / 4, tt = lane % 4;
  for (int e = 0; e < 4; e++) {
    int row = g + (e >= 2 ? 8 : 0), col = 2 * tt + (e & 1);
    float acc = 0.f;
    for (int k = 0; k < 16; k++) acc += A(row, k) * B(k, col);
    d[e] += acc;
  }
  warp_barrier();
}

// The 128 threads of a warpgroup (warps 4w..4w+3). Waiting threads are parked like those at a block barrier, so the
// scheduler runs the other warps of the group.
inline void warpgroup_barrier() {
  Block* b = current();
  int wg = tid() / 128;
  size_t group = size_t(b->nthreads / 32 + 1 + wg);
  int g = b->gen[group];
  if (++b->arrive[group] == 128) {
    b->arrive[group] = 0;
    b->gen[group]++;
    for (int t = wg * 128; t < wg * 128 + 128; t++) b->at_block_barrier[size_t(t)] = false;
  } else {
    while (b->gen[group] == g) {
      b->at_block_barrier[size_t(b->cur)] = true;
      yield();
    }
  }
}

// ---- wgmma (sm_90a warpgroup MMA), deferred to the wait_group that covers it ----
// An issued wgmma joins the thread's open group; commit closes the group; wait_group N executes the oldest groups
// until at most N remain. So each product reads its shared-memory operands, A registers and accumulators as late as
// the hardware may: a kernel that overwrites an operand (a prefetch into a buffer still being read, the next dSᵀ
// stores) or reads or writes an accumulator before the wait that covers it gets a wrong result here, and a thread
// that ends with a product never waited for aborts. (The hardware may also run them earlier; the kernels cannot
// depend on either.) All 128 threads of a warpgroup issue, commit and wait alike (.sync.aligned), so the products
// with A from registers, which gather the warpgroup's fragments at a warpgroup barrier, run in step.
inline void wgmma_issue(std::function<void()> f) { current()->wgmma_open[size_t(tid())].push_back(std::move(f)); }
inline void wgmma_commit() {
  Block* b = current();
  auto& open = b->wgmma_open[size_t(tid())];
  b->wgmma_groups[size_t(tid())].push_back(std::move(open));
  open.clear();
}
inline void wgmma_wait(int n) {
  auto& groups = current()->wgmma_groups[size_t(tid())];
  while (int(groups.size()) > n) {
    std::vector<std::function<void()>> g = std::move(groups.front());
    groups.pop_front();
    for (auto& f : g) f();
  }
}
// Shared-memory operands are read through their matrix descriptors (PTX ISA "Matrix Descriptor Format": start
// address >> 4 in bits 0–13, LBO >> 4 in 16–29, SBO >> 4 in 32–45, base offset in 49–51, swizzle in 62–63) in the
// 128-byte swizzle mode only: rows of 128 bytes, 8-row atoms, and the 16-byte chunk bits [4,7) of each address
// XORed with its bits [7,10). These are this emulator's reading of the PTX ISA, the same one the kernel was written
// from: it checks the kernel's own index arithmetic against it, not the hardware.
struct SmemDesc {
  uint32_t start, lbo, sbo;
};
inline SmemDesc decode_desc(uint64_t desc) {
  SmemDesc d{uint32_t(desc & 0x3FFF) << 4, uint32_t((desc >> 16) & 0x3FFF) << 4, uint32_t((desc >> 32) & 0x3FFF) << 4};
  if ((desc >> 62) != 1 || ((desc >> 49) & 7) != 0 || ((d.start >> 7) & 7) != 0) {
    std::fprintf(stderr, "emulator: wgmma descriptor %016llx: not 128-byte swizzle from the first row of an atom\n",
                 static_cast<unsigned long long>(desc));
    std::abort();
  }
  return d;
}
inline float smem_bf16_sw128(uint32_t addr) {
  uint16_t v = smem_u16(addr ^ (((addr >> 7) & 7u) << 4));
  uint32_t u = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// K-major operand: element (row, k), k < 16; groups of 8 rows SBO apart.
inline float kmajor_at(const SmemDesc& d, int row, int k) {
  return smem_bf16_sw128(d.start + uint32_t(row / 8) * d.sbo + uint32_t(row % 8) * 128 + uint32_t(k) * 2);
}
// N-major operand one atom wide (N <= 64): element (k, n); groups of 8 k-rows apart by the stride that both LBO and
// SBO must hold (the kernel sets them equal so that either reading of the PTX ISA gives the same address).
inline float nmajor64_at(const SmemDesc& d, int k, int n) {
  if (d.lbo != d.sbo) {
    std::fprintf(stderr, "emulator: N-major wgmma descriptor with LBO %u != SBO %u\n", d.lbo, d.sbo);
    std::abort();
  }
  return smem_bf16_sw128(d.start + uint32_t(k / 8) * d.sbo + uint32_t(k % 8) * 128 + uint32_t(n) * 2);
}
// N-major operand wider than one atom (N > 64, a GEMM's B tile): element (k, n) of atom n / 64, atoms LBO apart along
// N, groups of 8 k-rows SBO apart — the canonical MN-major 128-byte-swizzle layout as CUTLASS's make_gmma_desc
// describes it, ((8, n), (8, k)) : ((1, LBO), (8, SBO)) in 16-byte units.
inline float nmajor_wide_at(const SmemDesc& d, int k, int n) {
  return smem_bf16_sw128(d.start + uint32_t(n / 64) * d.lbo + uint32_t(k / 8) * d.sbo + uint32_t(k % 8) * 128 +
                         uint32_t(n % 64) * 2);
}
// Row and column of accumulator element d[r] (m64nN f32) of the calling thread.
inline void acc_pos(int r, int& row, int& col) {
  int wt = tid() % 128, w = wt / 32, lane = wt % 32;
  row = 16 * w + lane / 4 + ((r % 4) >= 2 ? 8 : 0);
  col = 8 * (r / 4) + 2 * (lane % 4) + (r % 2);
}
// wgmma.m64nNk16.f32.bf16.bf16 with A and B from shared memory, each K-major or (trans = true, imm-trans-a/b = 1)
// MN-major (A one atom wide, M = 64; B one atom wide when N <= 64, else atoms LBO apart): d = A·B (+ d when scale_d).
template <int R>
inline void wgmma_ss(float (&d_)[R], int N, uint64_t desc_a, bool trans_a, uint64_t desc_b, bool trans_b, bool scale_d) {
  if (N / 2 != R) std::abort();
  SmemDesc a = decode_desc(desc_a), b = decode_desc(desc_b);
  float* d = d_;
  wgmma_issue([=] {
  for (int r = 0; r < R; r++) {
    int row, col;
    acc_pos(r, row, col);
    float acc = 0.f;
    for (int k = 0; k < 16; k++)
      acc += (trans_a ? nmajor64_at(a, k, row) : kmajor_at(a, row, k)) *
             (trans_b ? (N > 64 ? nmajor_wide_at(b, k, col) : nmajor64_at(b, k, col)) : kmajor_at(b, col, k));
    d[r] = (scale_d ? d[r] : 0.f) + acc;
  }
  });
}
// wgmma.m64n64k16.f32.bf16.bf16 with A (bf16x2 registers, the m64k16 A fragment) and B from shared memory, N-major
// (imm-trans-b = 1): d = A·B (+ d when scale_d).
inline void wgmma_rs_nmajor64(float (&d_)[32], const uint32_t (&a_)[4], uint64_t desc_b, bool scale_d = true) {
  SmemDesc b = decode_desc(desc_b);
  float* d = d_;
  const uint32_t* a = a_;
  wgmma_issue([=] {
  Block* blk = current();
  int wg = tid() / 128, wt = tid() % 128, w = wt / 32, lane = wt % 32, g = lane / 4, t = lane % 4;
  float* A = blk->wg_a.data() + size_t(wg) * 64 * 16;
  for (int reg = 0; reg < 4; reg++) {  // (g, 2t) (g+8, 2t) (g, 2t+8) (g+8, 2t+8), two columns each
    int row = 16 * w + g + ((reg & 1) ? 8 : 0), col = 2 * t + ((reg & 2) ? 8 : 0);
    A[row * 16 + col] = bf_lo(a[reg]);
    A[row * 16 + col + 1] = bf_hi(a[reg]);
  }
  warpgroup_barrier();
  for (int r = 0; r < 32; r++) {
    int row, col;
    acc_pos(r, row, col);
    float acc = 0.f;
    for (int k = 0; k < 16; k++) acc += A[row * 16 + k] * nmajor64_at(b, k, col);
    d[r] = (scale_d ? d[r] : 0.f) + acc;
  }
  warpgroup_barrier();
  });
}

inline void cp_async(uint32_t smem, const void* gmem, bool valid, int bytes) {
  // cp.async needs both addresses aligned to its size (a strided view, e.g. q out of a packed q|k|v, must keep that)
  if (smem % uint32_t(bytes) || (valid && reinterpret_cast<uintptr_t>(gmem) % uintptr_t(bytes))) {
    std::fprintf(stderr, "emulator: cp.async of %d bytes from a misaligned address\n", bytes);
    std::abort();
  }
  if (valid) std::memcpy(dynamic_smem() + smem, gmem, size_t(bytes));
  else std::memset(dynamic_smem() + smem, 0, size_t(bytes));
}

// ---- mbarrier, named barriers, cp.async with mbarrier completion (PTX ISA "Parallel Synchronization and
// Communication Instructions: mbarrier", "bar, barrier", "cp.async.mbarrier.arrive") ----
// A waiting thread is parked like one at a block barrier (the scheduler runs other warps) and registered as a waiter;
// the arrival that completes the phase (or the barrier) unparks exactly its waiters, which then re-check.
inline void park_until(const std::function<bool()>& ready, std::vector<int>& waiters) {
  Block* b = current();
  while (!ready()) {
    b->at_block_barrier[size_t(b->cur)] = true;
    waiters.push_back(b->cur);
    yield();
  }
}
// Unparks the threads waiting on a barrier (they re-check what they wait for) and forgets them.
inline void wake(std::vector<int>& waiters) {
  Block* b = current();
  for (int t : waiters) b->at_block_barrier[size_t(t)] = false;
  waiters.clear();
}
inline Block::Mbar& mbar_at(uint32_t addr) {
  Block* b = current();
  for (auto& m : b->mbars)
    if (m.first == addr) return m.second;
  std::fprintf(stderr, "emulator: mbarrier at shared offset %u used before mbarrier.init\n", addr);
  std::abort();
}
inline void mbar_init(uint32_t addr, int count) {
  Block* b = current();
  if (addr % 8) std::abort();
  for (auto& m : b->mbars)
    if (m.first == addr) {
      std::fprintf(stderr, "emulator: mbarrier at %u initialised twice\n", addr);
      std::abort();
    }
  Block::Mbar m;
  m.expected = m.pending = count;
  b->mbars.emplace_back(addr, m);
}
// The current phase completes when its arrivals are in and its transaction bytes delivered (PTX ISA: "mbarrier
// phase completion": pending arrival count and tx-count both zero).
inline void mbar_complete_if_done(Block::Mbar& m) {
  if (m.pending != 0 || m.tx != 0) return;
  m.phase++;
  m.pending = m.expected;
  wake(m.waiters);
}
inline void mbar_arrive(uint32_t addr) {
  Block::Mbar& m = mbar_at(addr);
  if (--m.pending < 0) {
    std::fprintf(stderr, "emulator: more arrivals on the mbarrier at %u than its count\n", addr);
    std::abort();
  }
  mbar_complete_if_done(m);
}
// mbarrier.arrive.expect_tx: the phase expects `bytes` more transaction bytes, then this thread arrives.
inline void mbar_arrive_expect_tx(uint32_t addr, uint32_t bytes) {
  mbar_at(addr).tx += bytes;
  mbar_arrive(addr);
}
// mbarrier.expect_tx: the current phase expects `bytes` more transaction bytes; no arrival.
inline void mbar_expect_tx(uint32_t addr, uint32_t bytes) { mbar_at(addr).tx += bytes; }
// The oldest copy in flight to an mbarrier lands: a TMA copy (delivering its bytes), else the copies behind its
// oldest pending cp.async arrival (which then arrives). False when none is in flight.
inline bool mbar_land_one(uint32_t addr) {
  Block::Mbar& m = mbar_at(addr);
  if (!m.tx_in_flight.empty()) {
    auto copy = std::move(m.tx_in_flight.front());
    m.tx_in_flight.erase(m.tx_in_flight.begin());
    copy();
    return true;
  }
  if (m.in_flight.empty()) return false;
  auto copies = std::move(m.in_flight.front());
  m.in_flight.erase(m.in_flight.begin());
  for (auto& f : copies) f();
  mbar_arrive(addr);
  return true;
}
// Every copy in flight to the mbarrier lands.
inline void mbar_land(uint32_t addr) {
  while (mbar_land_one(addr)) {
  }
}
// mbarrier.try_wait.parity in a loop: returns once the phase with parity `parity` has completed, i.e. the current
// phase's parity differs from it. Copies tracked by this mbarrier land only here, when someone waits on it, and only
// until the phase completes (as late as the hardware may complete them): a phase that completes before its copies
// have landed (too few bytes expected) leaves them in flight, and the reads it releases see the old contents.
inline void mbar_wait_parity(uint32_t addr, uint32_t parity) {
  Block::Mbar& m = mbar_at(addr);
  park_until(
      [&] {
        while ((m.phase & 1u) == (parity & 1u))
          if (!mbar_land_one(addr)) return false;
        return true;
      },
      m.waiters);
}
// cp.async whose completion is tracked by an mbarrier: the copy is queued; cp.async.mbarrier.arrive hands the
// thread's queued copies to the mbarrier, where they land only when a thread waits on it (mbar_wait_parity) or the
// issuing side waits for all its copies. So a consumer that reads a buffer without waiting on its "full" mbarrier
// reads what was there before — the poison, or an older tile — every time, not by the luck of the schedule.
// The opposite mistake — a consumer releasing a buffer (its "empty" arrival) before a product that reads it has
// completed — shows only when the refill lands early; with eager_copies() (OWLET_EMU_EAGER_COPIES=1) every such
// copy lands at issue, so a refill issued between the early release and the product's completion corrupts it.
inline bool eager_copies() {
  static const bool on = [] { const char* e = std::getenv("OWLET_EMU_EAGER_COPIES"); return e && e[0] == '1'; }();
  return on;
}
inline void cp_async_deferred(uint32_t smem, const void* gmem, bool valid, int bytes) {
  if (eager_copies()) return cp_async(smem, gmem, valid, bytes);
  Block* b = current();
  b->cp_pending[size_t(b->cur)].push_back([=] { cp_async(smem, gmem, valid, bytes); });
}
inline void cp_async_mbar_arrive_noinc(uint32_t addr) {
  Block* b = current();
  Block::Mbar& m = mbar_at(addr);
  m.in_flight.push_back(std::move(b->cp_pending[size_t(b->cur)]));
  b->cp_pending[size_t(b->cur)].clear();
  wake(m.waiters);  // they re-check (and land these copies)
}
// cp.async.wait_all: this thread's copies land (those handed to mbarriers too: every mbarrier's, which may only be
// earlier than the hardware, never later).
inline void cp_async_wait_all() {
  Block* b = current();
  auto copies = std::move(b->cp_pending[size_t(b->cur)]);
  b->cp_pending[size_t(b->cur)].clear();
  for (auto& f : copies) f();
  std::vector<uint32_t> addrs;
  for (auto& m : b->mbars) addrs.push_back(m.first);
  for (uint32_t a : addrs) mbar_land(a);
}
// ---- cp.async.bulk.tensor (TMA) tile loads with mbarrier::complete_tx, and the tensor map they read
// (native/src/cuda/tma.cuh encodes this description where the device has a CUtensorMap) ----
// A tiled map of up to 4 dimensions, innermost first, of 2-byte elements: sizes, byte strides of dimensions 1..3,
// the box, and the 128-byte swizzle (the only mode the kernels use).
struct TmaDesc {
  const void* base;
  uint32_t dims[4];
  uint64_t strides[3];
  uint32_t box[4];
};
// The map's description, for a box copy to or from shared offset `smem`: the kernels' 128-byte swizzled boxes need a
// 1024-aligned shared address and 128-byte rows.
inline TmaDesc box_map(const uint64_t* map_bytes, uint32_t smem, const char* what) {
  TmaDesc d;
  std::memcpy(&d, map_bytes, sizeof d);
  if (smem % 1024 || d.box[0] * 2 != 128) {
    std::fprintf(stderr, "emulator: TMA box %s %u: the kernels' 128-byte swizzled boxes need a 1024-aligned shared "
                         "address and 128-byte rows\n", what, smem);
    std::abort();
  }
  return d;
}
// Calls f(lin, element) for every element of the box at `coord`, in box order (lin: its byte offset in the box),
// `element` its address in the tensor or null where it lies outside.
template <class F>
inline void for_each_in_box(const TmaDesc& d, const std::array<int, 4>& coord, F&& f) {
  uint32_t lin = 0;
  for (uint32_t i3 = 0; i3 < d.box[3]; i3++)
    for (uint32_t i2 = 0; i2 < d.box[2]; i2++)
      for (uint32_t i1 = 0; i1 < d.box[1]; i1++)
        for (uint32_t i0 = 0; i0 < d.box[0]; i0++, lin += 2) {
          const int64_t c[4] = {int64_t(coord[0]) + i0, int64_t(coord[1]) + i1, int64_t(coord[2]) + i2,
                                int64_t(coord[3]) + i3};
          bool in = true;
          for (int k = 0; k < 4; k++) in = in && c[k] >= 0 && c[k] < int64_t(d.dims[k]);
          unsigned char* e = in ? static_cast<unsigned char*>(const_cast<void*>(d.base)) + c[0] * 2 +
                                      c[1] * int64_t(d.strides[0]) + c[2] * int64_t(d.strides[1]) +
                                      c[3] * int64_t(d.strides[2])
                                : nullptr;
          f(lin, e);
        }
}
// The box at `coord` lands at shared offset `dst` when a thread waits on `bar` (as late as the hardware may; at issue
// with eager_copies()): elements in box order, innermost dimension contiguous, coordinates outside the tensor as
// zeros; then the 128-byte swizzle by address (bits 4-6 of each byte's shared address XOR bits 7-9), so the pattern
// starts at row 0 only where `dst` is 1024-byte aligned, which the kernels' tiles must be. Its bytes (the whole box,
// zeros included) go to `bar`'s transaction count. The source is read when the copy lands.
inline void tma_load(uint32_t dst, const uint64_t* map_bytes, std::array<int, 4> coord, uint32_t bar) {
  const TmaDesc d = box_map(map_bytes, dst, "copy to");
  const uint32_t bytes = d.box[0] * d.box[1] * d.box[2] * d.box[3] * 2;
  auto copy = [=] {
    unsigned char* smem = dynamic_smem();
    for_each_in_box(d, coord, [&](uint32_t lin, const unsigned char* e) {
      uint16_t v = 0;
      if (e) std::memcpy(&v, e, 2);
      const uint32_t a = dst + lin;
      std::memcpy(smem + (a ^ (((a >> 7) & 7u) << 4)), &v, 2);
    });
    Block::Mbar& m = mbar_at(bar);
    m.tx -= bytes;
    mbar_complete_if_done(m);
  };
  if (eager_copies()) return copy();
  Block::Mbar& m = mbar_at(bar);
  m.tx_in_flight.push_back(copy);
  wake(m.waiters);  // they re-check (and land this copy)
}

// ---- thread block clusters (launch with cluster_x > 1) ----
// %cluster_ctarank; barrier.cluster.arrive + wait (every thread of every block of the cluster); an mbarrier arrival on
// another block's mbarrier at the same shared offset (mapa + mbarrier.arrive.shared::cluster); a TMA box copy
// multicast to the blocks of `mask` (cp.async.bulk.tensor … .multicast::cluster): each gets the box at `dst` in its own
// shared memory and its bytes on its own mbarrier at `bar`, landing when one of its threads waits there.
inline int cluster_rank() { return current()->cluster_rank; }
inline void cluster_sync() {
  Block* b = current();
  Cluster* c = b->cluster;
  int total = 0;
  for (Block* x : c->blocks) total += x->nthreads;
  const unsigned g = c->gen;
  if (++c->arrived == total) {
    c->arrived = 0;
    c->gen++;
    for (auto [blk, t] : c->waiters) blk->at_block_barrier[size_t(t)] = false;
    c->waiters.clear();
  } else {
    // parked like a thread at a block barrier (the scheduler runs the others), re-parked after any wake-up
    while (c->gen == g) {
      b->at_block_barrier[size_t(b->cur)] = true;
      c->waiters.emplace_back(b, b->cur);
      yield();
    }
  }
}
// Runs f as block `t` (its mbarriers, shared memory and parked threads), then returns to the caller's.
template <class F>
inline void on_block(Block* t, F&& f) {
  Block* self = current();
  current() = t;
  f();
  current() = self;
}
inline Block* cluster_block(int rank) {
  Cluster* c = current()->cluster;
  if (!c || rank < 0 || rank >= int(c->blocks.size())) {
    std::fprintf(stderr, "emulator: cluster rank %d outside the cluster\n", rank);
    std::abort();
  }
  return c->blocks[size_t(rank)];
}
inline void mbar_arrive_remote(uint32_t addr, int rank) { on_block(cluster_block(rank), [&] { mbar_arrive(addr); }); }
inline void tma_load_multicast(uint32_t dst, const uint64_t* map_bytes, std::array<int, 4> coord, uint32_t bar,
                               uint16_t mask) {
  const int n = int(current()->cluster->blocks.size());
  for (int r = 0; r < n; r++)
    if ((mask >> r) & 1) on_block(cluster_block(r), [&] { tma_load(dst, map_bytes, coord, bar); });
}

// cp.async.bulk.tensor ... global.shared::cta.bulk_group: the box at `coord` of the tensor from shared offset `src`
// (1024-byte aligned, 128-byte swizzled, box order as tma_load's), elements outside the tensor not written. A bulk
// group operation: its source is snapshotted at issue and written out when the group is waited for (wait_group.read
// or wait_group), stopping the run if the shared memory changed in between.
inline void tma_store(uint32_t src, const uint64_t* map_bytes, std::array<int, 4> coord) {
  const TmaDesc d = box_map(map_bytes, src, "store from");
  const uint32_t bytes = d.box[0] * d.box[1] * d.box[2] * d.box[3] * 2;
  // the box's bytes in box order (unswizzled), as the store reads them
  std::vector<unsigned char> box(bytes);
  const unsigned char* smem = dynamic_smem();
  for (uint32_t lin = 0; lin < bytes; lin += 2) {
    const uint32_t a = src + lin;
    std::memcpy(box.data() + lin, smem + (a ^ (((a >> 7) & 7u) << 4)), 2);
  }
  Block* b = current();
  b->bulk_open[size_t(b->cur)].push_back({src, bytes, std::vector<unsigned char>(smem + src, smem + src + bytes),
                                          [d, coord, box](const unsigned char*) {
                                            for_each_in_box(d, coord, [&](uint32_t lin, unsigned char* e) {
                                              if (e) std::memcpy(e, box.data() + lin, 2);
                                            });
                                          }});
}

// ---- cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32, cp.async.bulk.commit_group, wait_group(.read) ----
// The reduction reads its source when it is waited for (as late as the hardware may), using the bytes it saw at
// issue, and stops the run when they changed in between: the program wrote the source while the copy could still be
// reading it (it had to wait_group.read first), or issued it before the bytes were there (another thread's writes
// missing at issue show up as a wrong result).
inline void bulk_reduce_add_f32(float* dst, uint32_t src, uint32_t bytes) {
  Block* b = current();
  if (src % 16 || bytes % 16 || reinterpret_cast<uintptr_t>(dst) % 16) {
    std::fprintf(stderr, "emulator: bulk reduction needs 16-byte aligned addresses and sizes\n");
    std::abort();
  }
  const unsigned char* p = dynamic_smem() + src;
  b->bulk_open[size_t(b->cur)].push_back({src, bytes, std::vector<unsigned char>(p, p + bytes),
                                          [dst, bytes](const unsigned char* v) {
                                            const float* f = reinterpret_cast<const float*>(v);
                                            for (uint32_t i = 0; i < bytes / 4; i++) dst[i] += f[i];
                                          }});
}
inline void bulk_commit() {
  Block* b = current();
  b->bulk_groups[size_t(b->cur)].push_back(std::move(b->bulk_open[size_t(b->cur)]));
  b->bulk_open[size_t(b->cur)].clear();
}
inline void bulk_wait(int n) {
  Block* b = current();
  auto& groups = b->bulk_groups[size_t(b->cur)];
  while (int(groups.size()) > n) {
    for (const Block::BulkOp& op : groups.front()) {
      if (std::memcmp(dynamic_smem() + op.src, op.snap.data(), op.bytes) != 0) {
        std::fprintf(stderr, "emulator: thread %d: shared memory at %u changed under an in-flight bulk copy\n",
                     b->cur, op.src);
        std::abort();
      }
      op.apply(op.snap.data());
    }
    groups.pop_front();
  }
}

// bar.arrive / bar.sync with an id and a thread count: the barrier completes when `count` threads have arrived;
// bar.sync waits for that, bar.arrive does not. Every user of an id must name the same count.
inline void named_barrier(int id, int count, bool wait) {
  Block* b = current();
  Block::Named& n = b->named[size_t(id)];
  if (id == 0 || count % 32 || (n.arrived > 0 && n.count != count)) {
    std::fprintf(stderr, "emulator: named barrier %d: count %d (id 0 is __syncthreads; counts must agree)\n", id,
                 count);
    std::abort();
  }
  n.count = count;
  unsigned g = n.gen;
  if (++n.arrived == count) {
    n.arrived = 0;
    n.gen++;
    wake(n.waiters);
    return;
  }
  if (wait) park_until([&] { return n.gen != g; }, n.waiters);
}

}  // namespace emu

// ---- CUDA names the kernels use, mapped onto the emulator ----
#undef __global__
#define __global__
#undef __launch_bounds__
#define __launch_bounds__(...)
#define OWLET_DYNAMIC_SMEM(name) unsigned char* name = ::emu::dynamic_smem()
#define threadIdx (::emu::Dim{unsigned(::emu::tid()), 0, 0})
#define blockIdx (::emu::current()->block_idx)
#define gridDim (::emu::current()->grid_dim)
#define blockDim (::emu::current()->block_dim)
#define __syncthreads() ::emu::block_barrier()
#define __shfl_xor_sync(mask, v, o) ::emu::shfl_xor((v), (o))
#define __shfl_sync(mask, v, src) ::emu::shfl_idx((v), (src))
#define __any_sync(mask, pred) ::emu::vote_any(pred)
#define __syncwarp(...) ::emu::warp_barrier()
#define __cvta_generic_to_shared(p) ::emu::smem_offset(p)

inline float atomicAdd(float* p, float v) {
  float old = *p;
  *p = old + v;
  return old;
}
inline int atomicAdd(int* p, int v) {
  int old = *p;
  *p = old + v;
  return old;
}
inline int atomicExch(int* p, int v) {
  int old = *p;
  *p = v;
  return old;
}
inline float2 atomicAdd(float2* p, float2 v) {
  float2 old = *p;
  p->x += v.x;
  p->y += v.y;
  return old;
}
using std::max;
using std::min;
