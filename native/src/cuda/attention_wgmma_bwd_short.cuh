// The Hopper attention backward for short query sequences (Tq ≤ 64, D = 64: the abstractor's 64 queries over
// 64 + 257 keys), selected with OWLET_ATTN_BWD=wgmma-q (see attention.cu). attention_wgmma_bwd.cuh is key-major: a
// block per 64 or 128 keys sweeps the query tiles, keeping dK and dV in registers and adding each tile's dQ into the
// fp32 accumulator with atomics. With a single query tile that sweep is one step: every block loads its K and V,
// computes one tile and writes, the prologue and epilogue are most of its time, and dQ is added once per key block.
// Here the roles swap: one warpgroup per (key range, head, batch) holds the one query tile (Q, dO, lse, Δ) in shared
// memory and dQ (64 × 64 fp32) in registers, and sweeps the key tiles of its range (double-buffered by cp.async). A
// key tile's dK and dV are complete after its one step — all queries are in the block — so they are written at once;
// dQ goes to the accumulator once per block. Key ranges: the dispatch splits the keys only when there are too few
// (head, batch) pairs to fill the GPU (the abstractor in a batch of 2 has 32).
// Per key tile (64 keys; the same products and layouts as attention_wgmma_bwd.cuh with NWG = 1):
//   Sᵀ = K Qᵀ, dPᵀ = V dOᵀ (group 1, 2); Pᵀ; dV = Pᵀ dO (group 3); dSᵀ, to shared memory; barrier;
//   dQ += dS K (group 4, A = dSᵀ read transposed), dK = dSᵀ Q (group 5); wait; dK (× scale) and dV stored.
// Rows past Tq and keys past Params::tk_main (attention_tail.cuh takes a 1–4-key tail) get P = 0; tq_main = Tq (at
// most 64 rows have no row tail).
#pragma once
#include <cstdint>

#include "attention_wgmma_bwd.cuh"

namespace owlet::cuda::wgmma {

constexpr int kShortQueries = 64, kShortKeys = 64;

template <int D>
constexpr size_t bwd_short_smem_bytes() {
  // Q, dO (64 × D), 2 × (K, V) (64 × D), dSᵀ (64 × 64), lse and Δ (64 floats each), 1024 for the alignment:
  // D = 64: 58,880 bytes.
  return size_t(6 * kShortKeys) * D * 2 + size_t(kShortKeys) * kShortQueries * 2 + 2 * kShortQueries * 4 + 1024;
}

// Grid (key ranges, H, B), 128 threads; key range x covers key tiles [x·tiles_per_block, …) of the tk_main keys.
template <int D>
__global__ void __launch_bounds__(128, 2) attention_bwd_short_kernel(flash::Params p, int tiles_per_block) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || defined(OWLET_CUDA_EMULATION)
  static_assert(D == 64, "one warpgroup holds dQ, dK and dV of a 64-wide head only");
  constexpr int BQ = kShortQueries, BK = kShortKeys, KD = D / 16, KQ = BQ / 16;
  static_assert(KQ == 4, "a_fragments and grads_t take a 64-query tile");
  constexpr uint32_t kTile = BK * D * 2;  // one 64 × 64 bf16 tile: 8 atoms of 1024 bytes
  OWLET_DYNAMIC_SMEM(smem_raw);
  const uint32_t raw = mma::smem_u32(smem_raw);
  const uint32_t sQ = (raw + 1023u) & ~1023u;  // the swizzle atoms must be 1024-aligned
  const uint32_t sO = sQ + kTile, sK = sO + kTile, sV = sK + 2 * kTile, sS = sV + 2 * kTile, sL = sS + BK * BQ * 2,
                 sDl = sL + BQ * 4;
  unsigned char* const gS = smem_raw + (sS - raw);  // generic pointers to the same bytes
  const float* const fL = reinterpret_cast<const float*>(smem_raw + (sL - raw));
  const float* const fD = reinterpret_cast<const float*>(smem_raw + (sDl - raw));

  const int tid = threadIdx.x, wi = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int b = blockIdx.z, h = blockIdx.y;
  const flash::Head hd(p, b, h, D);
  const int64_t rs = hd.rs;
  const bf16 *qb = p.q + hd.q, *ob = p.dout + hd.o, *kb = p.k + hd.kv, *vb = p.v + hd.kv;
  const int n_kt = (p.tk_main + BK - 1) / BK;
  const int kt0 = blockIdx.x * tiles_per_block, kt1 = min(n_kt, kt0 + tiles_per_block);

  load_tile<BQ, D, 128>(sQ, qb, rs, 0, p.Tq, tid);
  load_tile<BQ, D, 128>(sO, ob, hd.ors, 0, p.Tq, tid);
  if (tid < BQ) {
    const bool valid = tid < p.Tq;
    mma::cp_async4(sL + tid * 4, p.lse + hd.stat + (valid ? tid : 0), valid);
    mma::cp_async4(sDl + tid * 4, p.delta + hd.stat + (valid ? tid : 0), valid);
  }
  if (kt0 < kt1) {
    load_tile<BK, D, 128>(sK, kb, rs, kt0 * BK, p.Tk, tid);
    load_tile<BK, D, 128>(sV, vb, rs, kt0 * BK, p.Tk, tid);
  }
  mma::cp_async_commit();

  float dq[32];
#pragma unroll
  for (int i = 0; i < 32; i++) dq[i] = 0.f;
  // The thread's two keys are row g (+ 8) of its warp's 16 in each key tile; its queries 8·(r/4) + 2t + (r mod 2).
  for (int kt = kt0; kt < kt1; kt++) {
    const int buf = (kt - kt0) & 1, j0 = kt * BK;
    mma::cp_async_wait<0>();  // tile kt (and the query tile) landed for this thread
    fence_proxy_async();      // ... visible to the async proxy
    __syncthreads();          // ... for every thread; and every product of tile kt − 1 was waited for
    if (kt + 1 < kt1) {       // into the buffer of tile kt − 1
      load_tile<BK, D, 128>(sK + (buf ^ 1) * kTile, kb, rs, j0 + BK, p.Tk, tid);
      load_tile<BK, D, 128>(sV + (buf ^ 1) * kTile, vb, rs, j0 + BK, p.Tk, tid);
    }
    mma::cp_async_commit();
    const uint32_t sKt = sK + buf * kTile, sVt = sV + buf * kTile;
    const int key_a = j0 + wi * 16 + g, key_b = key_a + 8;

    float st[32], dpt[32];
    fence();
#pragma unroll
    for (int kd = 0; kd < KD; kd++)
      mma_ss_m64n64k16<false>(st, desc_kmajor(sKt + kd * 32), desc_kmajor(sQ + kd * 32), kd > 0);
    commit();
#pragma unroll
    for (int kd = 0; kd < KD; kd++)
      mma_ss_m64n64k16<false>(dpt, desc_kmajor(sVt + kd * 32), desc_kmajor(sO + kd * 32), kd > 0);
    commit();
    wait<1>();  // Sᵀ is done; dPᵀ may still run
    fence_operands(st);

    // Pᵀ with the masks (keys past tk_main, rows past Tq = tq_main, causal, key padding) as A fragments, and
    // dV = Pᵀ dO for this key tile (the first k-step overwrites the accumulators).
    const bool need_mask =
        p.key_mask != nullptr || j0 + BK > p.tk_main || BQ > p.Tq || (p.causal && j0 + BK - 1 > p.Tk - p.Tq);
    probs_t(st, fL, p, b, 0, key_a, key_b, t4, need_mask);
    uint32_t pa[KQ][4], da[KQ][4];
    float dv[32], dk[32];
    a_fragments(pa, st);
    fence();
#pragma unroll
    for (int kk = 0; kk < KQ; kk++) mma_rs_m64n64k16_tb(dv, pa[kk], desc_nmajor64(sO + kk * 2048), kk > 0);
    commit();
    wait<1>();  // dPᵀ is done; dV may still run
    fence_operands(dpt);

    // dSᵀ as A fragments for dK, and to shared memory for dQ.
    grads_t(dpt, st, fD, da, gS, wi * 16, g, t4);
    fence_proxy_async();  // the dSᵀ stores (generic proxy) before the wgmma that read them (async proxy)
    __syncthreads();      // every warp's dSᵀ rows are in shared memory

    // dQ += dS K (A = dSᵀ read transposed, B = K N-major), dK = dSᵀ Q.
    fence();
#pragma unroll
    for (int kk = 0; kk < 4; kk++)
      mma_ss_m64n64k16<true>(dq, desc_nmajor64(sS + kk * 2048), desc_nmajor64(sKt + kk * 2048), 1);
    commit();
#pragma unroll
    for (int kk = 0; kk < KQ; kk++) mma_rs_m64n64k16_tb(dk, da[kk], desc_nmajor64(sQ + kk * 2048), kk > 0);
    commit();
    wait<0>();
    fence_operands(dq);
    fence_operands(dk);
    fence_operands(dv);

    // dK (× scale) and dV of the thread's two keys: dk[4i + 2r + e] is key r (a, b), head dim 8i + 2·t4 + e.
#pragma unroll
    for (int r = 0; r < 2; r++) {
      const int j = r ? key_b : key_a;
      if (j >= p.tk_main) continue;
      const int64_t off = hd.gkv + int64_t(j) * hd.grs + 2 * t4;
#pragma unroll
      for (int i = 0; i < 8; i++) {
        *reinterpret_cast<__nv_bfloat162*>(p.dk + off + 8 * i) =
            __floats2bfloat162_rn(dk[4 * i + 2 * r] * p.scale, dk[4 * i + 2 * r + 1] * p.scale);
        *reinterpret_cast<__nv_bfloat162*>(p.dv + off + 8 * i) =
            __floats2bfloat162_rn(dv[4 * i + 2 * r], dv[4 * i + 2 * r + 1]);
      }
    }
  }
  mma::cp_async_wait<0>();

  // This block's dQ (its key range's share): dq[4i + e] is query 16·wi + g + 8·(e ≥ 2), head dim 8i + 2·t4 + (e mod 2).
  if (kt0 < kt1) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
      const int qi = wi * 16 + g + 8 * r;
      if (qi >= p.Tq) continue;
      float* dst = p.dq_acc + ((int64_t(b) * p.Tq + qi) * p.H + h) * D + 2 * t4;
#pragma unroll
      for (int i = 0; i < 8; i++)
        atomic_add2(dst + 8 * i, dq[4 * i + 2 * r] * p.scale, dq[4 * i + 2 * r + 1] * p.scale);
    }
  }
#else
  __trap();  // built without sm_90a: the dispatch never launches this (see use_wgmma_bwd in attention.cu)
#endif
}

}  // namespace owlet::cuda::wgmma
