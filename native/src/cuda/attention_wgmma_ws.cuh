// Hopper (sm_90a) attention forward with warp specialisation (FlashAttention-3's producer/consumer design), selected
// with OWLET_ATTN_FWD=wgmma-ws (see attention.cu). Same contract and numerics as attention_wgmma.cuh (whose header
// documents the swizzled layouts, descriptors, fragments and wgmma fence/commit/wait rules this kernel reuses
// through its helpers): bf16 q, k, v in [B, T, H, D] (D = 64 or 128), causal with shift Tk − Tq, key padding mask,
// Tq/Tk tails; normalised O (bf16) and the natural-log lse. No dropout (the dispatch falls back).
// Measured on an H200 (2026-11-26, bench/results/gpu-2026-11-26-h100-s5/call6-h200): correct (every check, sanitizer
// clean) and no faster than wgmma (LLaMA 2k causal 264.5 vs 264.2 TFLOP/s, 512 147.8 vs 154.2), so not the default.
//
// Roles: one block of 3 warpgroups (384 threads) per (128 queries, head, batch).
//   - warpgroup 0, the producer: loads Q once, then every 128-key tile of K and V of the block into a ring of
//     kStages stages, by cp.async; each producer thread follows a tile's K copies with cp.async.mbarrier.arrive.noinc
//     on the stage's "K full" mbarrier and its V copies with one on "V full" (count 128 each: one arrival per producer
//     thread, triggered when that thread's copies so far have landed). Before refilling a stage it waits on the
//     stage's "empty" mbarrier. It gives registers away (setmaxnreg.dec to kProducerRegs).
//   - warpgroups 1 and 2, the consumers (setmaxnreg.inc to kConsumerRegs): consumer c owns query rows 64c..64c+63 of
//     the block. For every tile of the block — also those it has no work for (causal: the lower rows stop earlier;
//     a warpgroup past Tq has none), so that the phases of both mbarriers and the turn barriers stay in step — it
//     waits on "K full" (then fence.proxy.async: the copies were generic-proxy writes, wgmma reads through the async
//     proxy), computes S = QKᵀ and the online softmax, waits on "V full" (and fences again) before O += PV, as
//     attention_wgmma.cuh computes them, and after its last wgmma on the stage has completed every consumer thread
//     arrives on "empty" (count 256). (A consumer with no work on a tile waits on neither: it reads nothing there.)
//   - ping-pong: two named barriers (ids kTurn, kTurn + 1, 256 threads each: 128 that bar.sync + 128 that
//     bar.arrive) pass a turn between the consumers; a consumer issues its S = QKᵀ only in its turn and hands the
//     turn over right after, so one consumer's softmax runs while the other's product is on the tensor cores.
//     Consumer 1 gives consumer 0 the first turn (if the block has a tile) and consumer 0 takes one extra turn after
//     its loop, so every bar.sync meets exactly one bar.arrive and nothing is left pending at the block's end.
//   - OVERLAP (OWLET_ATTN_FWD=wgmma-ws-overlap): FlashAttention-3's intra-warpgroup overlap on top of the ping-pong.
//     In its turn a consumer issues S(t) = Q·K(t)ᵀ and then P(t−1)·V(t−1), hands the turn over, waits for S(t) only
//     (wait_group 1) and runs the softmax of tile t while the tensor cores compute P(t−1)·V(t−1); then it waits for
//     that product, and only then releases tile t−1's stage (its V was read until then). A stage is therefore held
//     one tile longer, so the ring has kStagesOverlap = 3 stages (D = 128: Q 32 KiB + 3 × 64 KiB of shared memory),
//     and the producer still fills tile t + 1 while tile t is computed.
//   - TMA (attention_fwd_ws_tma_kernel; OWLET_ATTN_FWD=wgmma-ws-tma, wgmma-ws-tma-overlap): the producer's copies by
//     tensor-map box copies (tma.cuh) from one thread: per K or V tile, D / 64 boxes of 128 tokens × 64 columns
//     after one mbarrier.arrive.expect_tx of the tile's bytes on its "full" barrier (count 1 then), instead of 128
//     threads' 16-byte cp.async and their address arithmetic on the schedulers the consumers' softmax needs. The
//     boxes land in the same swizzled layout, so the consumers are unchanged and their numbers are the same bits.
//     Before refilling a stage that thread also waits for the stage's previous copies to have landed, and before
//     leaving for the last ones: a box copy still in flight must neither land over a newer tile nor outlive the block.
//   - PERSISTENT (attention_fwd_wsp_kernel; OWLET_ATTN_FWD=wgmma-wsp, wgmma-wsp-overlap; TMA copies): at most one
//     block per SM, each running (query tile, head, batch) work items in turn, taken in block order from a counter
//     (see forward()), so that the next item's Q and first K/V tiles land while the consumers finish the current
//     one and write its output, instead of every item's block starting from empty shared memory with its SM idle.
//     A greedy-dispatch simulation (bench/block_order_sim.py, half a tile of fixed cost per block, an assumed tenth
//     per further item) gives LLaMA B4 T2048 141.0 → 135.0 tile-units, B2 T2048 72.0 → 69.2, B16 T512 47.5 → 41.1.
// ptxas (nvcc 13.0, sm_90a, -Xptxas -v): 168 registers at launch (the cap for 384 threads; setmaxnreg then moves
// them between the roles), 0 bytes spilled, 16 barriers (the turn barriers' ids are registers), D = 64 and 128, with
// cp.async or TMA copies, persistent or not.
// No __syncthreads inside the loop (only the one that publishes the mbarrier initialisation). Every loop runs
// n_tiles times in every thread of its role, whatever the masks: no thread waits for an arrival that is skipped.
#pragma once
#include <cstdint>
#include <string>
#include <type_traits>

#include "attention_wgmma.cuh"
#include "tma.cuh"

namespace owlet::cuda::wgmma_ws {

using wgmma::bar_arrive;
using wgmma::bar_sync;
using wgmma::kBC;
using wgmma::kBR;
constexpr int kStages = 2;         // K/V ring stages (D = 128: Q 32 KiB + 2 × 64 KiB)
constexpr int kStagesOverlap = 3;  // with OVERLAP a stage is held one tile longer (see the header)
template <bool OVERLAP>
constexpr int stages() {
  return OVERLAP ? kStagesOverlap : kStages;
}
constexpr int kThreads = 384, kProducerThreads = 128;
constexpr int kProducerRegs = 40, kConsumerRegs = 232;  // 128·40 + 256·232 = 64,512 ≤ 65,536 registers
constexpr int kTurn = 1;                                // named barriers kTurn (consumer 0's), kTurn + 1 (consumer 1's)

template <int D, bool OVERLAP = false>
constexpr size_t smem_bytes() {
  // Q, the stages × (K, V), the mbarriers (Q, K full[], V full[], empty[], Q empty), the persistent form's item
  // slot, and room to align the base to 1024 bytes (D = 128 with OVERLAP: 230,496 of the 232,448 an H100 block may
  // have).
  return size_t(kBR + 2 * stages<OVERLAP>() * kBC) * D * 2 + 8 * (3 + 3 * stages<OVERLAP>()) + 1024;
}

#ifdef OWLET_CUDA_EMULATION
__device__ __forceinline__ void mbar_init(uint32_t a, int count) { ::emu::mbar_init(a, count); }
__device__ __forceinline__ void mbar_arrive(uint32_t a) { ::emu::mbar_arrive(a); }
__device__ __forceinline__ void mbar_wait(uint32_t a, uint32_t parity) { ::emu::mbar_wait_parity(a, parity); }
__device__ __forceinline__ void cp_async16(uint32_t s, const void* g, bool valid) {
  ::emu::cp_async_deferred(s, g, valid, 16);
}
__device__ __forceinline__ void cp_async_arrive_noinc(uint32_t a) { ::emu::cp_async_mbar_arrive_noinc(a); }
__device__ __forceinline__ void cp_async_wait_all() { ::emu::cp_async_wait_all(); }
template <int R>
__device__ __forceinline__ void regs_dec() {}
template <int R>
__device__ __forceinline__ void regs_inc() {}
#else
__device__ __forceinline__ void mbar_init(uint32_t a, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(a), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t a) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(a) : "memory");
}
// Spins on mbarrier.try_wait.parity (acquire at CTA scope by default) until the phase of that parity completed.
__device__ __forceinline__ void mbar_wait(uint32_t a, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(a), "r"(parity)
        : "memory");
  } while (!done);
}
__device__ __forceinline__ void cp_async16(uint32_t s, const void* g, bool valid) { mma::cp_async16(s, g, valid); }
__device__ __forceinline__ void cp_async_arrive_noinc(uint32_t a) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(a) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
template <int R>
__device__ __forceinline__ void regs_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(R));
}
template <int R>
__device__ __forceinline__ void regs_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(R));
}
#endif

// The producer warpgroup's copy of rows [r0, r0 + ROWS) of a [T, H, D] sequence into the swizzled layout at `s`
// (as wgmma::load_tile, 128 threads), zero-filling rows at or past `limit`.
template <int ROWS, int D>
__device__ __forceinline__ void load_tile(uint32_t s, const bf16* base, int64_t rs, int r0, int limit, int ptid) {
  struct Copy {
    __device__ __forceinline__ void operator()(uint32_t s, const void* g, bool valid) const { cp_async16(s, g, valid); }
  };
  rows::copy<ROWS, D, kProducerThreads, rows::Swizzle128, 4>(s, base, rs, r0, limit, ptid, Copy{});
}

// A block's work item: the (batch, head, query tile) it computes, and the key tiles that tile sees.
struct Item {
  int b, h, q0, n_tiles;
};
// The item of block tile bt (block_order.h: rank 0 the longest causal tile) of q_tiles query tiles per head.
__device__ __forceinline__ Item item_of(const flash::Params& p, const BlockTile& bt, int q_tiles) {
  const int q0 = (q_tiles - 1 - bt.rank) * kBR;
  const int kv_end = p.causal ? min(p.Tk, q0 + kBR + p.Tk - p.Tq) : p.Tk;
  return {bt.b, bt.h, q0, kv_end > 0 ? (kv_end + kBC - 1) / kBC : 0};
}

// The kernel body; TMA: the producer's copies by tensor-map box copies (`maps`), else by cp.async. PERSISTENT (TMA
// only): the block runs work items of q_tiles · H · B until none are left, taking the next from the launch's item
// counter `taken` (an atomic add by the producer thread, issued after its last loads of the current item so that
// its latency hides behind the consumers' last tiles; the launch's last add resets the counter to zero for the
// next launch), else the one item its grid position names. The producer hands each item to the consumers through
// a shared-memory slot written before its Q's "full" arrival, an item past the end telling them to stop. The K/V
// ring, its barriers' phases and the consumers' turns run on across a block's items: tile t of the block's whole
// sequence uses stage t mod kStages. Q has one buffer: the producer reloads it for the next item once both
// consumers have arrived on "Q empty" (after their last product on it), while they write the item's output.
template <int D, bool OVERLAP, bool TMA, bool PERSISTENT>
__device__ __forceinline__ void forward(const flash::Params& p, const tma::QkvMaps* maps, int q_tiles, int* taken) {
  static_assert(TMA || !PERSISTENT, "the persistent form loads by TMA");
  constexpr int DB = D / 64, KK = kBC / 16, NS = kBC / 8 * 4, kStages = stages<OVERLAP>();
  constexpr uint32_t kQBytes = kBR * D * 2, kKVBytes = kBC * D * 2;
  OWLET_DYNAMIC_SMEM(smem_raw);
  const uint32_t raw = mma::smem_u32(smem_raw);
  const uint32_t sQ = (raw + 1023u) & ~1023u;
  const uint32_t sKV = sQ + kQBytes;  // stage s: K at sKV + 2s·kKVBytes, V right after it
  // K and V of a stage land under their own "full" mbarriers: a tile's scores need only its K, so they start before
  // its V has landed (a block's first tile waited for both: K + V, 64 KiB at D = 128, with nothing else on the SM).
  const uint32_t bar_q = sKV + 2 * kStages * kKVBytes, bar_full_k = bar_q + 8, bar_full_v = bar_full_k + 8 * kStages,
                 bar_empty = bar_full_v + 8 * kStages, bar_q_empty = bar_empty + 8 * kStages;
  volatile int* item_slot = reinterpret_cast<volatile int*>(smem_raw + (bar_q_empty + 8 - raw));  // PERSISTENT

  const int tid = threadIdx.x, role = tid >> 7;  // 0: producer, 1 and 2: consumers
  const int n_items = PERSISTENT ? q_tiles * p.H * p.B : 1;
  // Item w (PERSISTENT), or the block's own.
  auto item = [&](int w) -> Item {
    if constexpr (PERSISTENT) return item_of(p, item_tile(w, q_tiles, p.H, p.B, D == 128 ? p.sections : 0), q_tiles);
    return item_of(p, block_tile<D == 128>(p.sections), int(gridDim.x));
  };

  // A "full" barrier's arrivals: every producer thread's cp.async arrival, or the one TMA thread's expect_tx.
  constexpr int kFullArrivals = TMA ? 1 : kProducerThreads;
  if (tid == 0) {
    mbar_init(bar_q, kFullArrivals);
    for (int s = 0; s < kStages; s++) {
      mbar_init(bar_full_k + 8 * s, kFullArrivals);
      mbar_init(bar_full_v + 8 * s, kFullArrivals);
      mbar_init(bar_empty + 8 * s, kThreads - kProducerThreads);
    }
    mbar_init(bar_q_empty, kThreads - kProducerThreads);
    if constexpr (TMA) tma::fence_barrier_init();  // ... and to the TMA's transaction counts
  }
  __syncthreads();  // the initialised mbarriers are visible to every thread

  if (role == 0) {
    // ---- producer ----
    regs_dec<kProducerRegs>();
    if constexpr (TMA) {
      // One thread issues every copy: each item's Q, then K and V of each of its tiles, D / 64 boxes each, every
      // box's bytes expected on its barrier before it is issued.
      if (tid != 0) return;
      tma::prefetch(&maps->q), tma::prefetch(&maps->k), tma::prefetch(&maps->v);
      int g0 = 0;  // the block's tiles before this item
      int w = PERSISTENT ? take_item(taken, n_items) : 0;
      for (int n = 0; PERSISTENT || n == 0; n++) {
        if (n > 0) mbar_wait(bar_q_empty, uint32_t((n - 1) & 1));  // both consumers are done with the last Q
        if constexpr (PERSISTENT) {
          *item_slot = w;  // published by the arrival on Q's barrier below
          if (w >= n_items) {
            mbar_arrive(bar_q);  // no bytes: the consumers see the slot and stop
            break;
          }
        }
        const Item it = item(w);
        tma::arrive_expect_tx(bar_q, kQBytes);
        tma::load_tile<D>(sQ, &maps->q, kBR, it.b, it.h, it.q0, bar_q);
        for (int tile = 0; tile < it.n_tiles; tile++) {
          const int gt = g0 + tile, s = gt % kStages;
          if (gt >= kStages) {
            const uint32_t prev = uint32_t((gt / kStages - 1) & 1);
            mbar_wait(bar_empty + 8 * s, prev);
            // The stage's previous copies have landed too (a consumer with no work on that tile never waited for
            // them), so none of them can land over the new tile.
            mbar_wait(bar_full_k + 8 * s, prev);
            mbar_wait(bar_full_v + 8 * s, prev);
          }
          const uint32_t sK = sKV + 2 * s * kKVBytes;
          tma::arrive_expect_tx(bar_full_k + 8 * s, kKVBytes);
          tma::load_tile<D>(sK, &maps->k, kBC, it.b, it.h, tile * kBC, bar_full_k + 8 * s);
          tma::arrive_expect_tx(bar_full_v + 8 * s, kKVBytes);
          tma::load_tile<D>(sK + kKVBytes, &maps->v, kBC, it.b, it.h, tile * kBC, bar_full_v + 8 * s);
        }
        g0 += it.n_tiles;
        if constexpr (PERSISTENT) w = take_item(taken, n_items);
      }
      // Every copy has landed before this thread leaves (the block's shared memory must not be written after it
      // ends); every Q the consumers wait for.
      for (int gt = max(0, g0 - kStages); gt < g0; gt++) {
        const uint32_t ph = uint32_t((gt / kStages) & 1);
        mbar_wait(bar_full_k + 8 * (gt % kStages), ph);
        mbar_wait(bar_full_v + 8 * (gt % kStages), ph);
      }
      return;
    } else {
      const Item it = item(0);
      const flash::Head hd(p, it.b, it.h, D);
      const int64_t rs = hd.rs;
      const int ptid = tid;
      const bf16 *qb = p.q + hd.q, *kb = p.k + hd.kv, *vb = p.v + hd.kv;
      load_tile<kBR, D>(sQ, qb, rs, it.q0, p.Tq, ptid);
      cp_async_arrive_noinc(bar_q);
      for (int tile = 0; tile < it.n_tiles; tile++) {
        const int s = tile % kStages;
        // Refill: both consumers released this stage's previous tile (use tile/kStages − 1 of the stage).
        if (tile >= kStages) mbar_wait(bar_empty + 8 * s, uint32_t((tile / kStages - 1) & 1));
        const uint32_t sK = sKV + 2 * s * kKVBytes;
        load_tile<kBC, D>(sK, kb, rs, tile * kBC, p.Tk, ptid);
        cp_async_arrive_noinc(bar_full_k + 8 * s);  // when this thread's K copies have landed
        load_tile<kBC, D>(sK + kKVBytes, vb, rs, tile * kBC, p.Tk, ptid);
        cp_async_arrive_noinc(bar_full_v + 8 * s);  // when its K and V copies have
      }
      // Tail: wait until the consumers have released the last stages (so they have seen every copy land) before
      // leaving; then no copy is outstanding when the producer's threads exit.
      for (int tile = max(0, it.n_tiles - kStages); tile < it.n_tiles; tile++)
        mbar_wait(bar_empty + 8 * (tile % kStages), uint32_t((tile / kStages) & 1));
      cp_async_wait_all();
      return;
    }
  }

  // ---- consumers ----
  regs_inc<kConsumerRegs>();
  const int ctid = tid - kProducerThreads, wg = ctid >> 7, wi = (ctid >> 5) & 3, lane = ctid & 31, g = lane >> 2,
            t4 = lane & 3;
  const int shift = p.Tk - p.Tq;
  const int my_turn = kTurn + wg, other_turn = kTurn + 1 - wg;
  const uint32_t sQw = sQ + wg * 64 * 128;
  int g0 = 0;  // the block's tiles before this item
  for (int n = 0; PERSISTENT || n == 0; n++) {
    mbar_wait(bar_q, uint32_t(n & 1));
    wgmma::fence_proxy_async();
    const int w = PERSISTENT ? *item_slot : 0;
    if (PERSISTENT && w >= n_items) break;
    const Item it = item(w);
    const int b = it.b, h = it.h, n_tiles = it.n_tiles;
    const int wg_row0 = it.q0 + wg * 64;
    const bool wg_active = wg_row0 < p.Tq;
    const int wg_kv_end = p.causal ? min(p.Tk, wg_row0 + 64 + shift) : p.Tk;
    const int warp_row0 = wg_row0 + wi * 16;
    const int row_a = warp_row0 + g, row_b = row_a + 8;

    float o[DB][32];
#pragma unroll
    for (int c = 0; c < DB; c++)
#pragma unroll
      for (int i = 0; i < 32; i++) o[c][i] = 0.f;
    float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};

    if (wg == 1 && n_tiles > 0) bar_arrive(kTurn, 2 * 128);  // consumer 0 has the first turn

    // OVERLAP: P(t−1) in registers, its V's stage not released yet (pending: uniform per warpgroup).
    uint32_t pa[KK][4];
    bool pending = false;
    int s_pending = 0;
    // O += P(t−1)·V(t−1) on its own, then its stage released: a warpgroup whose rows see no more keys, or after the
    // loop.
    auto flush_pending = [&] {
      wgmma::fence();
      wgmma::issue_pv(o, pa, sKV + 2 * s_pending * kKVBytes + kKVBytes);
      wgmma::wait<0>();
#pragma unroll
      for (int c = 0; c < DB; c++) wgmma::fence_operands(o[c]);
      mbar_arrive(bar_empty + 8 * s_pending);
      pending = false;
    };

    for (int tile = 0; tile < n_tiles; tile++) {
      const int kv0 = tile * kBC, gt = g0 + tile, s = gt % kStages;
      const uint32_t sKt = sKV + 2 * s * kKVBytes, sVt = sKt + kKVBytes;
      const uint32_t phase = uint32_t((gt / kStages) & 1);
      mbar_wait(bar_full_k + 8 * s, phase);
      wgmma::fence_proxy_async();  // the stage's generic-proxy copies are visible to the tensor cores' async proxy
      // One tile of work, straight-line from each wgmma to its wait (ptxas serialises wgmma in flight across a
      // branch), hence the overlapped form (OVERLAP, every tile but the first: a warpgroup that works on tile t > 0
      // worked on every earlier one, the visible keys being a prefix) as its own instantiation.
      auto step = [&](auto overlapped_tag) {
        constexpr bool kOverlapped = decltype(overlapped_tag)::value;
        float s_acc[NS];
        bar_sync(my_turn, 2 * 128);
        wgmma::fence();
        wgmma::issue_scores<D>(s_acc, sQw, sKt);
        if constexpr (kOverlapped) wgmma::issue_pv(o, pa, sKV + 2 * s_pending * kKVBytes + kKVBytes);
        bar_arrive(other_turn, 2 * 128);  // the other consumer may issue while this one waits and runs the softmax
        if constexpr (kOverlapped) wgmma::wait<1>();  // S(t) is done; P(t−1)·V(t−1) may still run
        else wgmma::wait<0>();
        wgmma::fence_operands(s_acc);

        wgmma::mask_scores(s_acc, p, b, kv0, t4, row_a, row_b, warp_row0, shift);
        float corr[2];
        wgmma::softmax_step(s_acc, m_run, l_run, corr, p.scale_log2);
        if constexpr (kOverlapped) {
          wgmma::wait<0>();  // P(t−1)·V(t−1) is done: O and the P registers may be touched again, V(t−1) is free
#pragma unroll
          for (int c = 0; c < DB; c++) wgmma::fence_operands(o[c]);
#pragma unroll
          for (int kk = 0; kk < KK; kk++) wgmma::fence_operands(pa[kk]);
          mbar_arrive(bar_empty + 8 * s_pending);
        }
        wgmma::rescale_o(o, corr);
        wgmma::pack_p(pa, s_acc);
#pragma unroll
        for (int c = 0; c < DB; c++) wgmma::fence_operands(o[c]);
        mbar_wait(bar_full_v + 8 * s, phase);  // V(t) has landed (for P(t)·V(t), here or with the next tile's scores)
        wgmma::fence_proxy_async();
        if constexpr (OVERLAP) {
          pending = true;  // issued with the next tile's scores, or by flush_pending
          s_pending = s;
        } else {
          wgmma::fence();
          wgmma::issue_pv(o, pa, sVt);
          wgmma::wait<0>();
#pragma unroll
          for (int c = 0; c < DB; c++) wgmma::fence_operands(o[c]);
          mbar_arrive(bar_empty + 8 * s);  // this thread's reads of the stage (through completed wgmma) are over
        }
      };
      if (wg_active && kv0 < wg_kv_end) {
        if (OVERLAP && tile > 0) step(std::true_type{});
        else step(std::false_type{});
      } else {
        // No work on this tile (nor on any later one): still take and pass the turn, so the other consumer's
        // bar.sync finds its partner; finish a pending product while its V is still in the ring; release the stage.
        bar_sync(my_turn, 2 * 128);
        bar_arrive(other_turn, 2 * 128);
        if (OVERLAP && pending) flush_pending();
        mbar_arrive(bar_empty + 8 * s);
      }
    }
    if (OVERLAP && pending) flush_pending();
    if (wg == 0 && n_tiles > 0) bar_sync(kTurn, 2 * 128);  // consumer 1's arrival after its last tile
    // Q may be reloaded for the next item: this thread's products on it have completed. (Consumer 1 reaches the next
    // item's first-turn arrival only after this, whose Q waits for consumer 0's arrival here, which follows its
    // last turn: the turn barriers' arrivals never run an item ahead.)
    if constexpr (PERSISTENT) mbar_arrive(bar_q_empty);
    wgmma::write_out_lse<D>(p, o, m_run, l_run, b, h, row_a, row_b, t4, wg_active);
    g0 += n_tiles;
  }
}

// The tensor maps of p's q, k and v for attention_fwd_ws_tma_kernel: boxes of 128 tokens × 64 columns of one head;
// false (and why) where the TMA cannot describe them.
inline bool encode_qkv_maps(const flash::Params& p, int D, tma::QkvMaps& m, std::string& why) {
  static_assert(kBR == kBC, "Q's and K/V's boxes have one height");
  return tma::encode(m.q, {p.q, p.B, p.Tq, p.H, D, p.in_hs}, kBR, why) &&
         tma::encode(m.k, {p.k, p.B, p.Tk, p.H, D, p.in_hs}, kBC, why) &&
         tma::encode(m.v, {p.v, p.B, p.Tk, p.H, D, p.in_hs}, kBC, why);
}

template <int D, bool OVERLAP = false>
__global__ void __launch_bounds__(kThreads, 1) attention_fwd_ws_kernel(flash::Params p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || defined(OWLET_CUDA_EMULATION)
  forward<D, OVERLAP, false, false>(p, nullptr, 0, nullptr);
#else
  __trap();  // built without sm_90a: the dispatch never launches this (see hopper_applies in attention.cu)
#endif
}

// The same with the producer's copies by TMA (OWLET_ATTN_FWD=wgmma-ws-tma / wgmma-ws-tma-overlap): `maps` describe
// p.q, p.k and p.v with boxes of 128 tokens (attention.cu encode_qkv_maps); the TMA reads them in parameter space.
template <int D, bool OVERLAP = false>
__global__ void __launch_bounds__(kThreads, 1)
    attention_fwd_ws_tma_kernel(const flash::Params p, const __grid_constant__ tma::QkvMaps maps) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || defined(OWLET_CUDA_EMULATION)
  forward<D, OVERLAP, true, false>(p, &maps, 0, nullptr);
#else
  __trap();
#endif
}

// The persistent TMA form (OWLET_ATTN_FWD=wgmma-wsp, wgmma-wsp-overlap): a grid of at most one block per SM, each
// taking the next work item of the q_tiles · H · B (query tile, head, batch), in block order, from the counter
// `taken` (zero at launch, zero again at the end) when it is about to finish one: a block's next Q and first K/V
// tiles load while it finishes and writes the current item instead of each tile's block starting from empty shared
// memory, and the items go to whichever block is free first, as the GPU's own dispatch would hand out blocks.
template <int D, bool OVERLAP = false>
__global__ void __launch_bounds__(kThreads, 1) attention_fwd_wsp_kernel(const flash::Params p,
                                                                        const __grid_constant__ tma::QkvMaps maps,
                                                                        int q_tiles, int* taken) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || defined(OWLET_CUDA_EMULATION)
  forward<D, OVERLAP, true, true>(p, &maps, q_tiles, taken);
#else
  __trap();
#endif
}

}  // namespace owlet::cuda::wgmma_ws
