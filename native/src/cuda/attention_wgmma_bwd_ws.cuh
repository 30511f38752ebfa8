// Hopper (sm_90a) attention backward at D = 128 with warp specialisation (FlashAttention-3's backward structure),
// selected with OWLET_ATTN_BWD=wgmma-ws and among the autotuner's D = 128 candidates (see attention.cu). Same
// contract and numbers as attention_wgmma_bwd.cuh's two-warpgroup kernel (whose products, layouts and per-tile
// arithmetic it reuses): bf16 q, k, v, dO (q, k, v also as views into a packed [B, T, H, 3, D] tensor), lse and Δ;
// dK (× scale) and dV in bf16, scale · dS K added into the fp32 dQ accumulator. Causal with shift Tk − Tq, key padding
// mask, a last partial query or key tile; no dropout and no tail kernels (D = 128 never has them).
//
// Why: under Nsight Compute (bench/results/gpu-2026-11-27-h200-s17-call3, B4 H32 T2048 causal) the two-warpgroup
// kernel issues an instruction every 3.5 cycles per scheduler with the tensor pipe 38.5% busy: its 8 warps also
// issue every cp.async of the next query tile (16 per thread, with their address arithmetic) and 16 two-float dQ
// atomics per thread per tile, on the schedulers the products and the softmax-like arithmetic need.
//
// Roles: one block of 3 warpgroups (384 threads) per (128 keys, head, batch), in the block order of block_order.h.
//   - warpgroup 0, the producers (setmaxnreg.dec to kProducerRegs):
//       warp 0, the loader: K and V of the block once, then each query tile's Q and dO (D / 64 boxes of 64 rows each)
//         by TMA from lane 0 into a ring of kStages stages (their bytes expected on the stage's "full" barrier first,
//         mbarrier.expect_tx without an arrival), while the lanes write the tile's lse and Δ (64 floats each, zero past
//         Tq) to the stage; lane 0's arrival (count 1) follows a __syncwarp, so the lanes' stores are ordered before
//         it, and the phase completes once the boxes have landed too. Before refilling a stage it waits on the
//         stage's "empty" barrier (count 256: every consumer thread, after the tile's last product completed).
//       warp 1, the dQ writer: per tile, once both consumers have stored their dQ half (64 queries × 64 columns each)
//         in shared memory and arrived on "dq full" (count 256, after fence.proxy.async: generic stores, bulk-copy
//         reads), one bulk reduction per query row (512 bytes, cp.reduce.async.bulk .add.f32: FlashAttention-3's
//         way, attention_wgmma_bwd.cuh's BULK) into the accumulator, spread over the lanes; when they have read the
//         buffer (bulk wait_group.read) lane 0 arrives on "dq empty" (count 1). Before leaving, wait_group 0.
//       warps 2 and 3 leave at once.
//   - warpgroups 1 and 2, the consumers (setmaxnreg.inc to kConsumerRegs): consumer w owns keys 64w..64w+63 of the
//     block and keeps their dK and dV in registers; per query tile, as the two-warpgroup kernel: Sᵀ, dPᵀ (groups 1,
//     2), Pᵀ, dV += Pᵀ dO (group 3), dSᵀ to shared memory, a named barrier of the two consumers (their dSᵀ halves
//     are both there), dQ columns 64w..64w+63 = dS K over all 128 keys (group 4), dK += dSᵀ Q (group 5); the dQ half
//     goes to the dQ buffer (after "dq empty" of the previous tile) instead of atomics; after the last wait the
//     stage is released. The dSᵀ tile has two buffers (by tile parity): a consumer writes tile t's only after the
//     barrier of tile t − 1, which the other consumer reaches only after its products of tile t − 2 (the last
//     readers of that buffer) completed — so one barrier per tile.
// Barriers never skip an arrival: every loop runs the block's n tiles in every thread of its role.
// Shared memory: K, V 64 KiB; 2 stages × (Q, dO) 64 KiB; 2 × dSᵀ 32 KiB; dQ 33 KiB (rows of kDqPitch floats); lse, Δ;
// the barriers: 199,744 bytes with the alignment (smem_bytes).
#pragma once
#include <cstdint>
#include <string>

#include "attention_wgmma_bwd.cuh"
#include "attention_wgmma_ws.cuh"
#include "tma.cuh"

namespace owlet::cuda::wgmma_bwd_ws {

using wgmma::kBwdQueries;
using wgmma_ws::mbar_arrive;
using wgmma_ws::mbar_init;
using wgmma_ws::mbar_wait;

constexpr int D = 128, kKeys = 128, kStages = 2;
constexpr int kThreads = 384;
constexpr int kProducerRegs = 24, kConsumerRegs = 240;  // 128·24 + 256·240 = 64,512 ≤ 65,536 registers
constexpr int kDqPitch = D + 4;  // floats per dQ row in shared memory: 16 bytes past the row against bank conflicts
constexpr int kMidBarrier = 1;   // named barrier (256 consumer threads): both halves of dSᵀ are stored

// The tensor maps of one call: q, k, v (boxes of 64 query rows or 128 keys) and dO (64 rows).
struct Maps {
  tma::Map q, k, v, o;
};

constexpr size_t smem_bytes() {
  return size_t(2 * kKeys * D * 2) + size_t(kStages * 2 * kBwdQueries * D * 2) + size_t(2 * kKeys * kBwdQueries * 2) +
         size_t(kBwdQueries * kDqPitch * 4) + size_t(kStages * 2 * kBwdQueries * 4) + 8 * (1 + 2 * kStages + 2) + 1024;
}

// The maps of p's q, k, v and dO for attention_bwd_ws_kernel; false (and why) where the TMA cannot describe them.
inline bool encode_maps(const flash::Params& p, Maps& m, std::string& why) {
  return tma::encode(m.q, {p.q, p.B, p.Tq, p.H, D, p.in_hs}, kBwdQueries, why) &&
         tma::encode(m.k, {p.k, p.B, p.Tk, p.H, D, p.in_hs}, kKeys, why) &&
         tma::encode(m.v, {p.v, p.B, p.Tk, p.H, D, p.in_hs}, kKeys, why) &&
         tma::encode(m.o, {p.dout, p.B, p.Tq, p.H, D, D}, kBwdQueries, why);
}

__device__ __forceinline__ void backward(const flash::Params& p, const Maps* maps) {
  using namespace wgmma;
  constexpr int DB = D / 64, BQ = kBwdQueries, KQ = BQ / 16;
  constexpr uint32_t kKVBytes = kKeys * D * 2, kQBytes = BQ * D * 2, kSBytes = kKeys * BQ * 2;
  OWLET_DYNAMIC_SMEM(smem_raw);
  const uint32_t raw = mma::smem_u32(smem_raw);
  const uint32_t sK = (raw + 1023u) & ~1023u, sV = sK + kKVBytes, sQ = sV + kKVBytes, sO = sQ + kStages * kQBytes,
                 sS = sO + kStages * kQBytes, sDq = sS + 2 * kSBytes, sL = sDq + BQ * kDqPitch * 4,
                 sDl = sL + kStages * BQ * 4, bar_kv = sDl + kStages * BQ * 4, bar_full = bar_kv + 8,
                 bar_empty = bar_full + 8 * kStages, bar_dq_full = bar_empty + 8 * kStages, bar_dq_empty = bar_dq_full + 8;
  float* const fL = reinterpret_cast<float*>(smem_raw + (sL - raw));  // lse [stage][BQ]
  float* const fD = reinterpret_cast<float*>(smem_raw + (sDl - raw));  // Δ [stage][BQ]
  float* const fDq = reinterpret_cast<float*>(smem_raw + (sDq - raw));
  unsigned char* const gS = smem_raw + (sS - raw);

  const int tid = threadIdx.x, role = tid >> 7;
  const BlockTile bt = block_tile<true>(p.sections);
  const int b = bt.b, h = bt.h, j0 = bt.rank * kKeys;
  const int shift = p.Tk - p.Tq;
  const int qt0 = (p.causal ? max(0, j0 - shift) : 0) / BQ, n = max(0, (p.tq_main + BQ - 1) / BQ - qt0);

  if (tid == 0) {
    mbar_init(bar_kv, 1);
    for (int s = 0; s < kStages; s++) {
      mbar_init(bar_full + 8 * s, 1);
      mbar_init(bar_empty + 8 * s, 256);
    }
    mbar_init(bar_dq_full, 256);
    mbar_init(bar_dq_empty, 1);
    tma::fence_barrier_init();
  }
  __syncthreads();  // the initialised barriers are visible to every thread

  if (role == 0) {
    wgmma_ws::regs_dec<kProducerRegs>();
    const int warp = tid >> 5, lane = tid & 31;
    if (warp == 0 && n > 0) {  // ---- the loader ----
      if (lane == 0) {
        tma::prefetch(&maps->q), tma::prefetch(&maps->k), tma::prefetch(&maps->v), tma::prefetch(&maps->o);
        tma::arrive_expect_tx(bar_kv, 2 * kKVBytes);
        tma::load_tile<D>(sK, &maps->k, kKeys, b, h, j0, bar_kv);
        tma::load_tile<D>(sV, &maps->v, kKeys, b, h, j0, bar_kv);
      }
      const int64_t stat = (int64_t(b) * p.H + h) * p.Tq;
      for (int t = 0; t < n; t++) {
        const int s = t % kStages, i0 = (qt0 + t) * BQ;
        if (t >= kStages) mbar_wait(bar_empty + 8 * s, uint32_t((t / kStages - 1) & 1));
        // the box copies first (their bytes expected, no arrival yet), so that they fly while the lanes load lse and Δ
        if (lane == 0) {
          tma::expect_tx(bar_full + 8 * s, 2 * kQBytes);
          tma::load_tile<D>(sQ + s * kQBytes, &maps->q, BQ, b, h, i0, bar_full + 8 * s);
          tma::load_tile<D>(sO + s * kQBytes, &maps->o, BQ, b, h, i0, bar_full + 8 * s);
        }
        for (int e = lane; e < BQ; e += 32) {
          const bool valid = i0 + e < p.Tq;
          fL[s * BQ + e] = valid ? p.lse[stat + i0 + e] : 0.f;
          fD[s * BQ + e] = valid ? p.delta[stat + i0 + e] : 0.f;
        }
        __syncwarp();  // the lanes' stores before lane 0's arrival (a release), which with the copies' bytes completes
        if (lane == 0) mbar_arrive(bar_full + 8 * s);
      }
      // every copy has landed before this thread leaves (the consumers have waited for all of them; this only makes
      // the producer's own exit not depend on that)
      if (lane == 0)
        for (int t = max(0, n - kStages); t < n; t++) mbar_wait(bar_full + 8 * (t % kStages), uint32_t((t / kStages) & 1));
    } else if (warp == 1 && n > 0) {  // ---- the dQ writer ----
      for (int t = 0; t < n; t++) {
        const int i0 = (qt0 + t) * BQ;
        mbar_wait(bar_dq_full, uint32_t(t & 1));
        for (int rr = lane; rr < BQ; rr += 32)
          if (i0 + rr < p.tq_main)
            bulk_reduce_add(p.dq_acc + ((int64_t(b) * p.Tq + i0 + rr) * p.H + h) * D, sDq + uint32_t(rr * kDqPitch * 4),
                            D * 4);
        bulk_commit();
        bulk_wait_read<0>();  // this lane's reductions have read the buffer
        __syncwarp();
        if (lane == 0) mbar_arrive(bar_dq_empty);
      }
      bulk_wait<0>();  // ... and are done before the block (and its shared memory) ends
    }
    return;
  }

  // ---- consumers ----
  wgmma_ws::regs_inc<kConsumerRegs>();
  const int ctid = tid - 128, wg = ctid >> 7, wi = (ctid >> 5) & 3, lane = ctid & 31, g = lane >> 2, t4 = lane & 3;
  const int key_w = j0 + wg * 64 + wi * 16;        // this warp's first key
  const int key_a = key_w + g, key_b = key_a + 8;  // the two keys this thread holds
  float dk[DB][32], dv[DB][32];
#pragma unroll
  for (int c = 0; c < DB; c++)
#pragma unroll
    for (int i = 0; i < 32; i++) dk[c][i] = dv[c][i] = 0.f;
  const uint32_t sKw = sK + wg * 64 * 128, sVw = sV + wg * 64 * 128;  // this warpgroup's 64 keys in each block
  if (n > 0) mbar_wait(bar_kv, 0);

  for (int t = 0; t < n; t++) {
    const int s = t % kStages, i0 = (qt0 + t) * BQ;
    mbar_wait(bar_full + 8 * s, uint32_t((t / kStages) & 1));
    const uint32_t sQt = sQ + s * kQBytes, sOt = sO + s * kQBytes, sSt = sS + (t & 1) * kSBytes;
    const float* Lt = fL + s * BQ;
    const float* Dt = fD + s * BQ;

    float st[32], dpt[32];
    fence();
    keys_by_queries<D, kKeys, false>(st, sKw, sQt);
    keys_by_queries<D, kKeys, false>(dpt, sVw, sOt);
    const bool need_mask = p.key_mask != nullptr || j0 + kKeys > p.tk_main || i0 + BQ > p.tq_main ||
                           (p.causal && key_w + 15 > i0 + shift);
    uint32_t pa[KQ][4], da[KQ][4];
    probs_and_dv(st, dpt, pa, dv, Lt, p, b, i0, key_a, key_b, t4, need_mask, sOt);

    grads_t(dpt, st, Dt, da, gS + (t & 1) * kSBytes, wg * 64 + wi * 16, g, t4);
    fence_proxy_async();           // the dSᵀ stores (generic proxy) before the wgmma that read them (async proxy)
    bar_sync(kMidBarrier, 256);    // both consumers' dSᵀ are in shared memory

    float dq[32];
    fence();
    dq_product<kKeys, kKeys / 16>(dq, sSt, sK + wg * (kKeys * 128), 0);  // columns 64·wg.. over all 128 keys
    keys_by_d(dk, da, sQt);
    wait<1>();  // dV and dQ are done; dK may still run
    fence_operands(dq);
    // dq[4i + e]: query 16wi + g + 8·(e ≥ 2) of the tile, column 64·wg + 8i + 2t + (e mod 2)
    if (t > 0) mbar_wait(bar_dq_empty, uint32_t((t - 1) & 1));  // the writer has read the previous tile's dQ
    store_dq_rows(fDq + 64 * wg, kDqPitch, dq, p.scale, wi, g, t4);
    fence_proxy_async();  // the generic-proxy stores before the bulk reductions' async-proxy reads
    mbar_arrive(bar_dq_full);
    wait<0>();  // dK is done: every product of this tile is, so its stage (Q, dO, lse, Δ) may be refilled
#pragma unroll
    for (int c = 0; c < DB; c++) {
      fence_operands(dk[c]);
      fence_operands(dv[c]);
    }
    mbar_arrive(bar_empty + 8 * s);
  }

  // dK (× scale) and dV for this thread's two keys; keys no query sees get zeros.
  store_dk_dv<D>(p, b, h, key_a, key_b, t4, dk, dv);
}

__global__ void __launch_bounds__(kThreads, 1) attention_bwd_ws_kernel(const flash::Params p,
                                                                       const __grid_constant__ Maps maps) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || defined(OWLET_CUDA_EMULATION)
  backward(p, &maps);
#else
  __trap();  // built without sm_90a: the dispatch never launches this (see use_wgmma_bwd in attention.cu)
#endif
}

}  // namespace owlet::cuda::wgmma_bwd_ws
