// Experimental Hopper (sm_90a) attention BACKWARD on warpgroup tensor cores (wgmma), selected per call with
// OWLET_ATTN_BWD=wgmma (see attention.cu). Same contract as flash::attention_bwd_kernel: bf16 q, k, v, dO in
// [B, T, H, D] (D = 64 or 128; q, k, v, dK and dV also as views into packed [B, T, H, 3, D] tensors: flash::Params'
// in_hs, grad_hs), the forward's natural-log lse and Δ = rowsum(dO ⊙ O) [B, H, Tq]; writes dK (× scale)
// and dV in bf16 and adds scale · dS K into the fp32 dQ accumulator [B, Tq, H, D] (finished by attention.cu).
// Causal with shift Tk − Tq, key padding mask, tails of Tq and Tk; no dropout (the dispatch falls back). At D = 64,
// rows and keys from Params::tq_main and tk_main on are left to attention_tail.cuh, except the tail rows' share of
// this block's dK and dV (add_tail_rows); at D = 128 the dispatch leaves tq_main = Tq and tk_main = Tk.
//
// Schedule (FlashAttention-3's backward without its producer warpgroup): one block of 2 warpgroups (256 threads) per
// (128 keys, head, batch); warpgroup w owns keys 64w..64w+63 and keeps their dK and dV (64 × D fp32 each) in
// registers. K and V (128 × D) stay in shared memory; 64-query tiles of Q, dO, lse and Δ stream through two buffers
// by cp.async (the next tile is loaded while the current one is computed). Per query tile and warpgroup:
//   Sᵀ  = K_w Qᵀ     D/16 × wgmma.m64n64k16, A = K and B = Q from shared memory, both K-major (reduction over d)
//   dPᵀ = V_w dOᵀ    the same with V and dO
//   Pᵀ  = exp2(Sᵀ·scale·log2e − lse·log2e) with the masks, dSᵀ = Pᵀ ⊙ (dPᵀ − Δ)   (on the accumulator registers)
//   dV += Pᵀ dO      4·D/64 × wgmma.m64n64k16, A = Pᵀ from registers (bf16), B = dO N-major (imm-trans-b)
//   dK += dSᵀ Q      the same with dSᵀ and Q
// and dSᵀ goes to shared memory (bf16, 128 keys × 64 queries) for dQ = dS K (64 queries × D, reduction over keys):
//   D = 128: warpgroup w computes columns 64w..64w+63 over all 128 keys (after a block barrier): 8 × m64n64k16;
//   D = 64: warpgroup w computes its own 64 keys' share (4 × m64n64k16), both add into the accumulator;
// with A = dS read from the dSᵀ tile TRANSPOSED (M-major, imm-trans-a = 1, allowed for bf16) and B = K N-major
// (imm-trans-b = 1), then 2-wide fp32 atomics into the dQ accumulator.
// Causal: a block's query sweep starts at the tile holding the first query that sees its first key (whole tiles
// before it are skipped); a block that no query sees writes zeros. Within a tile the masks zero Pᵀ (and so dSᵀ).
//
// Shared-memory layouts (the forward's 128-byte swizzle, see attention_wgmma.cuh): K, V (128 × D), Q, dO (64 × D)
// as D/64 column blocks of 128-byte rows. The dSᵀ tile is one block: row = key (0..127), 128 bytes = 64 queries,
// 16-byte chunk c of row r at chunk position c ^ (r mod 8). As the A operand of dQ (M = queries, K = keys) it is
// M-major one atom wide: the same descriptor as the forward's N-major V (LBO = SBO = 1024, key step kk at
// +2048·kk); K as the B operand of dQ (N = d, K = keys) is N-major the same way (column block c at c·128·128).
//
// Order and synchronisation per query tile (five commit groups per warpgroup, completing in order):
//   wait for the tile's copies, fence.proxy.async, barrier (every warpgroup is then also done with the previous
//   tile — all its wgmma were waited for — so the prefetch of the next tile into the other buffer and the new dSᵀ
//   stores are safe); issue Sᵀ (group 1), dPᵀ (group 2); wait_group 1 → Sᵀ; Pᵀ; issue dV (group 3); wait_group 1
//   → dPᵀ (dV runs on); dSᵀ, its stores; fence.proxy.async (generic writes → async-proxy reads), barrier; issue dQ
//   (group 4), dK (group 5); wait_group 1 → dQ; the dQ atomics while dK runs; wait_group 0.
// With BULK (OWLET_ATTN_BWD=wgmma-bulk) the dQ tile goes to shared memory instead, and warp 0 of each warpgroup adds
// it with one cp.reduce.async.bulk per row (see kDqPitch): fewer, larger L2 reductions than 16 two-float atomics per
// thread, and no atomics in the compute warps' instruction stream.
// Registers (ptxas, CUDA 13.0, sm_90a, session 8): D = 128: 249, D = 64: 207 (BULK: 249 / 198); no spills, no wgmma
// serialisation reported. With the packed layout's strides (q and dO rows no longer one offset): D = 128: 248, D = 64:
// 210, one warpgroup 208 (BULK: 251 / 202); no spills, the same blocks per SM.
// Persistent (attention_bwd_persistent_kernel, OWLET_ATTN_BWD=wgmma-p, D = 128; session 15): the same body looping
// over work items (see bwd_body): 251 registers, no spills (ptxas, CUDA 13.0). The restructuring moved the others
// (no spills, the same blocks per SM): wgmma1 216 → 214, BULK at D = 128 247 → 252; the default D = 128 kernel and
// the two-warpgroup D = 64 one unchanged.
// The host emulator (test/native/cuda_emu.h) defers each wgmma to the wait that covers it, so an operand touched
// too early there gives a wrong result; it cannot see the hardware's own timing.
#pragma once
#include <cstdint>

#include "attention_wgmma.cuh"

namespace owlet::cuda::wgmma {

constexpr int kBwdQueries = 64;
// A last query tile with at most this many rows (the ViT's 257th query, with whole tiles) is computed on its first 16
// queries only: Sᵀ and dPᵀ by m64n16k16, dV and dK over one k16 step (attention_bwd_kernel at D = 64).
constexpr int kNarrowQueries = 16;
// NWG warpgroups per block, 64 keys each: 2 (the default), or 1 at D = 64 (OWLET_ATTN_BWD=wgmma1), where the
// warpgroups share nothing but the Q/dO tiles: a sequence of 257 keys (the ViT's) then takes 5 blocks of 64 keys
// instead of 3 of 128, the last of which computed 127 keys that do not exist.
template <int NWG>
constexpr int bwd_keys() {
  return 64 * NWG;
}

// BULK (OWLET_ATTN_BWD=wgmma-bulk): each warpgroup's 64 × 64 fp32 dQ tile goes through shared memory (two buffers,
// rows padded to kDqPitch floats against bank conflicts) and one bulk reduction per row
// (cp.reduce.async.bulk … .add.f32, FlashAttention-3's way) instead of 16 two-float atomics per thread.
constexpr int kDqPitch = 68;

// Keys past the last whole 64 that the one-warpgroup kernel's last key block takes on (Params::block_tail_keys):
// their K and V rows (bf16, unswizzled) and, per query tile, their P and dS for the tile's 64 queries (fp32).
constexpr int kTailKeys = 4;
constexpr uint32_t kTailBytes = 2 * kTailKeys * 64 * 2 + 2 * kTailKeys * kBwdQueries * 4;  // 3072

template <int D, int NWG = 2, bool BULK = false, bool PERSISTENT = false>
constexpr size_t bwd_smem_bytes() {
  // K, V (64·NWG × D), 2 × (Q, dO) (64 × D), dSᵀ (64·NWG × 64), 2 × (lse, Δ) (64 floats), 1024 for the alignment:
  // NWG = 2: D = 128: 149,504 bytes; D = 64: 83,968. NWG = 1, D = 64: 58,368 + the tail keys' 3,072. BULK: + NWG ×
  // 2 × 64 rows × 272 bytes (D = 128: 219,136).
  return size_t(2 * bwd_keys<NWG>() + 4 * kBwdQueries) * D * 2 + size_t(bwd_keys<NWG>()) * kBwdQueries * 2 +
         4 * kBwdQueries * 4 + 1024 + (BULK ? size_t(NWG) * 2 * kBwdQueries * kDqPitch * 4 : 0) +
         (NWG == 1 ? kTailBytes : 0) + (PERSISTENT ? 2 * sizeof(int) : 0);  // PERSISTENT: the item slots
}

// D (64×64 fp32) = A·B (+ D when scale_d != 0), A = 64×16 and B = 16×64 in shared memory: K-major (B stored 64×16),
// or with TRANS (imm-trans-a = imm-trans-b = 1) A M-major and B N-major, each one 64-element swizzle atom wide.
template <bool TRANS>
__device__ __forceinline__ void mma_ss_m64n64k16(float (&d)[32], uint64_t desc_a, uint64_t desc_b, int scale_d) {
#ifdef OWLET_CUDA_EMULATION
  ::emu::wgmma_ss(d, 64, desc_a, TRANS, desc_b, TRANS, scale_d != 0);
#else
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, "
      "%8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, "
      "%24, %25, %26, %27, %28, %29, %30, %31}, "
      "%32, %33, p, 1, 1, %35, %35;\n}\n"
      : OWLET_WGMMA_ACC32(d, 0)
      : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(int(TRANS)));
#endif
}

// ---- the per-tile arithmetic on the transposed score layout, shared with attention_wgmma_bwd_short.cuh ----
// A thread holds two keys (key_a, key_b = key_a + 8) of a warpgroup's 64 keys × 64 queries: element r of its 32 is
// key (r mod 4 ≥ 2 ? key_b : key_a), query i0 + 8·(r/4) + 2·t4 + (r mod 2). lse_t and delta_t are the tile's 64
// per-query values in shared memory. NR = 8 instead of 32: the tile's first 16 queries only (a last query tile with
// at most kNarrowQueries rows, computed by m64n16k16: the same layout for its two 8-query groups).

// Pᵀ = exp(Sᵀ·scale − lse) in place, then zero where the key is not seen by the query: past tk_main or tq_main,
// causal, the key padding mask (need_mask: the tile reaches one of those boundaries).
template <int NR = 32>
__device__ __forceinline__ void probs_t(float (&st)[NR], const float* lse_t, const flash::Params& p, int b, int i0,
                                        int key_a, int key_b, int t4, bool need_mask) {
#pragma unroll
  for (int i = 0; i < NR / 4; i++) {
    const float2 l2 = *reinterpret_cast<const float2*>(lse_t + 8 * i + 2 * t4);
#pragma unroll
    for (int e = 0; e < 4; e++)
      st[4 * i + e] = mma::exp2_ftz(fmaf(st[4 * i + e], p.scale_log2, -((e & 1) ? l2.y : l2.x) * flash::kLog2e));
  }
  if (need_mask && p.key_mask) {
#pragma unroll
    for (int r = 0; r < NR; r++) {
      const int qi = i0 + 8 * (r >> 2) + 2 * t4 + (r & 1), kj = (r & 2) ? key_b : key_a;
      if (!(qi < p.tq_main && kj < p.tk_main && flash::key_visible(p, b, qi, kj))) st[r] = 0.f;
    }
  } else if (need_mask) {
    // the queries each of the thread's keys is seen by, relative to its first query i0 + 2·t4
    // (a key past tk_main is seen by none of the rows here)
    const int lo_a = (key_a < p.tk_main ? flash::queries_begin(p, key_a) : p.tq_main) - i0 - 2 * t4,
              lo_b = (key_b < p.tk_main ? flash::queries_begin(p, key_b) : p.tq_main) - i0 - 2 * t4;
    const int hi = p.tq_main - i0 - 2 * t4;
#pragma unroll
    for (int r = 0; r < NR; r++) {
      const int c = 8 * (r >> 2) + (r & 1);
      if (c < ((r & 2) ? lo_b : lo_a) || c >= hi) st[r] = 0.f;
    }
  }
}

// NR accumulator values as the bf16 A fragments of NR / 8 k16 steps (chunks 2kk, 2kk + 1 = queries 16kk..16kk + 15).
template <int NR = 32>
__device__ __forceinline__ void a_fragments(uint32_t (&a)[NR / 8][4], const float (&x)[NR]) {
#pragma unroll
  for (int kk = 0; kk < NR / 8; kk++) {
#pragma unroll
    for (int q = 0; q < 4; q++) a[kk][q] = mma::pack_bf16(x[8 * kk + 2 * q], x[8 * kk + 2 * q + 1]);
    fence_operands(a[kk]);
  }
}

// dSᵀ = Pᵀ ⊙ (dPᵀ − Δ) into dpt, as A fragments in da, and to the dSᵀ tile in shared memory (generic pointer gS,
// 128 bytes per key row) for dQ: register pair (g or g+8, 2t or 2t+8) of step kk is chunk 2kk (+1) of key row
// row0 + g (+8), at byte 4t of the chunk, the chunk position swizzled by the row mod 8 (= g).
template <int NR = 32>
__device__ __forceinline__ void grads_t(float (&dpt)[NR], const float (&st)[NR], const float* delta_t,
                                        uint32_t (&da)[NR / 8][4], unsigned char* gS, int row0, int g, int t4) {
#pragma unroll
  for (int i = 0; i < NR / 4; i++) {
    const float2 d2 = *reinterpret_cast<const float2*>(delta_t + 8 * i + 2 * t4);
#pragma unroll
    for (int e = 0; e < 4; e++) dpt[4 * i + e] = st[4 * i + e] * (dpt[4 * i + e] - ((e & 1) ? d2.y : d2.x));
  }
#pragma unroll
  for (int kk = 0; kk < NR / 8; kk++) {
#pragma unroll
    for (int q = 0; q < 4; q++) {
      da[kk][q] = mma::pack_bf16(dpt[8 * kk + 2 * q], dpt[8 * kk + 2 * q + 1]);
      const int row = row0 + g + 8 * (q & 1), chunk = 2 * kk + (q >> 1);
      *reinterpret_cast<uint32_t*>(gS + row * 128 + ((chunk ^ g) << 4) + 4 * t4) = da[kk][q];
    }
    fence_operands(da[kk]);
  }
}

// The products of a query tile, one commit group each (not waited for here); BK: the keys of the block's K and V
// tiles, sA this warpgroup's 64 of them.
// acc = rows of sA (keys) · rows of sB (the tile's queries)ᵀ, reduced over d: Sᵀ = K Qᵀ, dPᵀ = V dOᵀ. N16: the
// tile's first 16 queries only (m64n16k16, a narrow last tile).
template <int D, int BK, bool N16, int NR>
__device__ __forceinline__ void keys_by_queries(float (&acc)[NR], uint32_t sA, uint32_t sB) {
#pragma unroll
  for (int kd = 0; kd < D / 16; kd++) {
    const uint32_t offk = (kd >> 2) * (BK * 128) + (kd & 3) * 32, offq = (kd >> 2) * (kBwdQueries * 128) + (kd & 3) * 32;
    if constexpr (N16) mma_ss_m64n16k16(acc, desc_kmajor(sA + offk), desc_kmajor(sB + offq), kd > 0);
    else mma_ss_m64n64k16<false>(acc, desc_kmajor(sA + offk), desc_kmajor(sB + offq), kd > 0);
  }
  commit();
}
// acc[c] += frag (keys × the tile's queries, bf16 A fragments) · column block c of the rows of sB (the tile's queries
// × d): dV += Pᵀ dO, dK += dSᵀ Q.
template <int DB, int KQN>
__device__ __forceinline__ void keys_by_d(float (&acc)[DB][32], const uint32_t (&frag)[KQN][4], uint32_t sB) {
#pragma unroll
  for (int kk = 0; kk < KQN; kk++)
#pragma unroll
    for (int c = 0; c < DB; c++)
      mma_rs_m64n64k16_tb(acc[c], frag[kk], desc_nmajor64(sB + c * (kBwdQueries * 128) + kk * 2048));
  commit();
}
// dq (64 queries × 64 columns) = dS K over key steps [step0, step0 + STEPS): A = the dSᵀ tile at sS read transposed,
// B = the 64-column block of K at sKc (BK keys) N-major.
template <int BK, int STEPS>
__device__ __forceinline__ void dq_product(float (&dq)[32], uint32_t sS, uint32_t sKc, int step0) {
#pragma unroll
  for (int kk = 0; kk < STEPS; kk++) {
    const uint32_t step = uint32_t(step0 + kk) * 2048;
    mma_ss_m64n64k16<true>(dq, desc_nmajor64(sS + step), desc_nmajor64(sKc + step), kk > 0);
  }
  commit();
}

// The rows [tq_main, Tq) past the last whole query tile (attention_tail.cuh) against this thread's two keys, added
// to its dK and dV registers before they are rounded. dk[c][4i + 2r + e] is key r (a, b), head dim
// 64c + 8i + 2·t4 + e: each dot product is summed over the thread's 16·DB dims, then across the four threads (t4)
// that hold the same key. q, dO, K and V are re-read from global memory (a few rows; cached).
template <int DB>
__device__ __forceinline__ void add_tail_rows(const flash::Params& p, const flash::Head& hd, int b, int key_a,
                                              int key_b, int t4, float (&dk)[DB][32], float (&dv)[DB][32]) {
  auto pair = [](const bf16* x) { return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(x)); };
  const int64_t ja = hd.kv + int64_t(min(key_a, p.Tk - 1)) * hd.rs + 2 * t4,
                jb = hd.kv + int64_t(min(key_b, p.Tk - 1)) * hd.rs + 2 * t4;  // (a key past Tk has P = 0)
  for (int i = p.tq_main; i < p.Tq; i++) {
    const bf16* qi = p.q + hd.q + int64_t(i) * hd.rs + 2 * t4;
    const bf16* oi = p.dout + hd.o + int64_t(i) * hd.ors + 2 * t4;
    float s[2] = {0.f, 0.f}, dp[2] = {0.f, 0.f};
#pragma unroll
    for (int c = 0; c < DB; c++)
#pragma unroll
      for (int n = 0; n < 8; n++) {
        const int d = 64 * c + 8 * n;
        const float2 q2 = pair(qi + d), o2 = pair(oi + d), ka = pair(p.k + ja + d), va = pair(p.v + ja + d),
                     kbb = pair(p.k + jb + d), vb = pair(p.v + jb + d);
        s[0] = fmaf(q2.x, ka.x, fmaf(q2.y, ka.y, s[0]));
        dp[0] = fmaf(o2.x, va.x, fmaf(o2.y, va.y, dp[0]));
        s[1] = fmaf(q2.x, kbb.x, fmaf(q2.y, kbb.y, s[1]));
        dp[1] = fmaf(o2.x, vb.x, fmaf(o2.y, vb.y, dp[1]));
      }
    const float lse = p.lse[hd.stat + i] * flash::kLog2e, del = p.delta[hd.stat + i];
    float pr[2], ds[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
      s[r] += __shfl_xor_sync(0xffffffffu, s[r], 1);
      s[r] += __shfl_xor_sync(0xffffffffu, s[r], 2);
      dp[r] += __shfl_xor_sync(0xffffffffu, dp[r], 1);
      dp[r] += __shfl_xor_sync(0xffffffffu, dp[r], 2);
      const int j = r ? key_b : key_a;
      pr[r] = j < p.tk_main && flash::key_visible(p, b, i, j) ? mma::exp2_ftz(fmaf(s[r], p.scale_log2, -lse)) : 0.f;
      ds[r] = pr[r] * (dp[r] - del);
    }
#pragma unroll
    for (int c = 0; c < DB; c++)
#pragma unroll
      for (int n = 0; n < 8; n++) {
        const float2 q2 = pair(qi + 64 * c + 8 * n), o2 = pair(oi + 64 * c + 8 * n);
#pragma unroll
        for (int r = 0; r < 2; r++) {
          dv[c][4 * n + 2 * r] = fmaf(pr[r], o2.x, dv[c][4 * n + 2 * r]);
          dv[c][4 * n + 2 * r + 1] = fmaf(pr[r], o2.y, dv[c][4 * n + 2 * r + 1]);
          dk[c][4 * n + 2 * r] = fmaf(ds[r], q2.x, dk[c][4 * n + 2 * r]);
          dk[c][4 * n + 2 * r + 1] = fmaf(ds[r], q2.y, dk[c][4 * n + 2 * r + 1]);
        }
      }
  }
}

// The middle of a query tile, after Sᵀ and dPᵀ were issued (two commit groups): once Sᵀ is done, Pᵀ with the masks
// (need_mask: the tile reaches a boundary), as bf16 A fragments in pa, and dV += Pᵀ dO issued at once (its own commit
// group, in flight until the end of the tile); returns once dPᵀ is done.
template <int NR, int DB>
__device__ __forceinline__ void probs_and_dv(float (&st)[NR], float (&dpt)[NR], uint32_t (&pa)[NR / 8][4],
                                             float (&dv)[DB][32], const float* lse_t, const flash::Params& p, int b,
                                             int i0, int key_a, int key_b, int t4, bool need_mask, uint32_t sOt) {
  wait<1>();  // Sᵀ is done (groups complete in order); dPᵀ may still run
  fence_operands(st);
  probs_t(st, lse_t, p, b, i0, key_a, key_b, t4, need_mask);
  a_fragments(pa, st);
  fence();
  keys_by_d(dv, pa, sOt);
  wait<1>();  // dPᵀ is done; dV may still run
  fence_operands(dpt);
}

// A warpgroup's dQ fragment (dq[4i + e]: query 16wi + g + 8·(e ≥ 2), column 8i + 2t + (e mod 2)) times the scale,
// as rows of `pitch` floats from `rows` (shared memory, for bulk reductions).
__device__ __forceinline__ void store_dq_rows(float* rows, int pitch, const float (&dq)[32], float scale, int wi, int g,
                                              int t4) {
#pragma unroll
  for (int r = 0; r < 2; r++)
#pragma unroll
    for (int i = 0; i < 8; i++)
      *reinterpret_cast<float2*>(rows + (wi * 16 + g + 8 * r) * pitch + 8 * i + 2 * t4) =
          make_float2(dq[4 * i + 2 * r] * scale, dq[4 * i + 2 * r + 1] * scale);
}

// dK (× scale) and dV of a thread's two keys (key_a, key_b = key_a + 8; dk[c][4i + 2r + e]: key r, head dim
// 64c + 8i + 2·t4 + e) as bf16 pairs; keys at or past tk_main are not written (attention_tail.cuh's).
template <int D>
__device__ __forceinline__ void store_dk_dv(const flash::Params& p, int b, int h, int key_a, int key_b, int t4,
                                            const float (&dk)[D / 64][32], const float (&dv)[D / 64][32]) {
#pragma unroll
  for (int r = 0; r < 2; r++) {
    const int j = r ? key_b : key_a;
    if (j >= p.tk_main) continue;
    const flash::Head hg(p, b, h, D);  // made here, as the forward's epilogue does (a Head kept alive costs registers)
    const int64_t off = hg.gkv + int64_t(j) * hg.grs + 2 * t4;
#pragma unroll
    for (int c = 0; c < D / 64; c++)
#pragma unroll
      for (int i = 0; i < 8; i++) {
        *reinterpret_cast<__nv_bfloat162*>(p.dk + off + c * 64 + 8 * i) =
            __floats2bfloat162_rn(dk[c][4 * i + 2 * r] * p.scale, dk[c][4 * i + 2 * r + 1] * p.scale);
        *reinterpret_cast<__nv_bfloat162*>(p.dv + off + c * 64 + 8 * i) =
            __floats2bfloat162_rn(dv[c][4 * i + 2 * r], dv[c][4 * i + 2 * r + 1]);
      }
  }
}

// ---- keys past the last whole 64 in the last key block (OWLET_ATTN_BWD=wgmma1-keys: one warpgroup, D = 64) ----
// The ViT's 257 keys otherwise take a fifth block per head that sweeps every query tile for one key (a fifth of the
// backward's blocks for 1/257 of its keys), and attention_tail.cuh's kernel pays its dQ in atomics. Here the block of
// keys [tk_main − 64, tk_main) also computes the n ≤ kTailKeys keys after them on CUDA cores, per query tile:
//   tail_keys_scores: for the thread's two dQ rows (16wi + g, + 8), s = q·k and dp = dO·v of each tail key (16 dims
//     per thread, summed over the four threads t4 that share the rows), P and dS = P (dp − Δ) with the masks; dS·k
//     added into the thread's dQ registers before their atomics (no atomics of its own); P and dS to shared memory;
//   tail_keys_grads: after a barrier, thread (d = tid mod 64, half = tid / 64) adds Σ P·dO[·][d] and Σ dS·Q[·][d]
//     over the half's 32 queries into its dV and dK registers for each tail key;
//   tail_keys_store: at the end the two halves' sums added (through shared memory) and written, dK times the scale.
// Q and dO are the tile's rows in shared memory (128-byte swizzle: 16-byte chunk c of row r at c ^ (r mod 8)).
struct TailKeys {
  const bf16* k;  // [kTailKeys][64] bf16 rows (generic pointers into shared memory)
  const bf16* v;
  float* p;       // [kTailKeys][64 queries]
  float* ds;
};

__device__ __forceinline__ const bf16* swz_row64(const unsigned char* tile, int row, int d) {
  return reinterpret_cast<const bf16*>(tile + row * 128 + ((((d >> 3) ^ (row & 7)) << 4) | ((d & 7) * 2)));
}

__device__ __forceinline__ void tail_keys_scores(const TailKeys& tk, int n, float (&dq)[32], const unsigned char* q_t,
                                                 const unsigned char* o_t, const float* lse_t, const float* delta_t,
                                                 const flash::Params& p, int b, int i0, int wi, int g, int t4) {
  for (int kt = 0; kt < n; kt++) {
    const int j = p.tk_main + kt;
    float pr[2], ds[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
      const int row = 16 * wi + g + 8 * r;
      float s = 0.f, dp = 0.f;
#pragma unroll
      for (int c = 0; c < 2; c++) {  // chunks 2·t4, 2·t4 + 1: dims 16·t4 .. 16·t4 + 15, 16 bytes per load
        const int d0 = 16 * t4 + 8 * c;
        const uint4 q8 = *reinterpret_cast<const uint4*>(swz_row64(q_t, row, d0)),
                    o8 = *reinterpret_cast<const uint4*>(swz_row64(o_t, row, d0)),
                    k8 = *reinterpret_cast<const uint4*>(tk.k + kt * 64 + d0),
                    v8 = *reinterpret_cast<const uint4*>(tk.v + kt * 64 + d0);
        using H2 = __nv_bfloat162;
        const H2 *qh = reinterpret_cast<const H2*>(&q8), *oh = reinterpret_cast<const H2*>(&o8),
                 *kh = reinterpret_cast<const H2*>(&k8), *vh = reinterpret_cast<const H2*>(&v8);
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const float2 qf = __bfloat1622float2(qh[e]), of = __bfloat1622float2(oh[e]), kf = __bfloat1622float2(kh[e]),
                       vf = __bfloat1622float2(vh[e]);
          s = fmaf(qf.y, kf.y, fmaf(qf.x, kf.x, s));
          dp = fmaf(of.y, vf.y, fmaf(of.x, vf.x, dp));
        }
      }
      s += __shfl_xor_sync(0xffffffffu, s, 1);
      s += __shfl_xor_sync(0xffffffffu, s, 2);
      dp += __shfl_xor_sync(0xffffffffu, dp, 1);
      dp += __shfl_xor_sync(0xffffffffu, dp, 2);
      const int qi = i0 + row;
      const bool seen = qi < p.tq_main && flash::key_visible(p, b, qi, j);
      pr[r] = seen ? mma::exp2_ftz(fmaf(s, p.scale_log2, -lse_t[row] * flash::kLog2e)) : 0.f;
      ds[r] = pr[r] * (dp - delta_t[row]);
      if (t4 == 0) {
        tk.p[kt * kBwdQueries + row] = pr[r];
        tk.ds[kt * kBwdQueries + row] = ds[r];
      }
    }
    // dq[4i + e]: row r = e / 2, column 8i + 2·t4 + (e mod 2)
#pragma unroll
    for (int i = 0; i < 8; i++) {
      const float2 k2 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(tk.k + kt * 64 + 8 * i + 2 * t4));
#pragma unroll
      for (int r = 0; r < 2; r++) {
        dq[4 * i + 2 * r] = fmaf(ds[r], k2.x, dq[4 * i + 2 * r]);
        dq[4 * i + 2 * r + 1] = fmaf(ds[r], k2.y, dq[4 * i + 2 * r + 1]);
      }
    }
  }
}

// rows: the tile's query rows that can hold a P (16 for a narrow last tile, else 64).
__device__ __forceinline__ void tail_keys_grads(const TailKeys& tk, int n, const unsigned char* q_t,
                                                const unsigned char* o_t, int rows, int tid, float (&dk)[kTailKeys],
                                                float (&dv)[kTailKeys]) {
  const int d = tid & 63, r0 = 32 * (tid >> 6), r1 = min(r0 + 32, rows);
  for (int row = r0; row < r1; row++) {
    const float o = __bfloat162float(*swz_row64(o_t, row, d)), q = __bfloat162float(*swz_row64(q_t, row, d));
#pragma unroll
    for (int kt = 0; kt < kTailKeys; kt++)
      if (kt < n) {
        dv[kt] = fmaf(tk.p[kt * kBwdQueries + row], o, dv[kt]);
        dk[kt] = fmaf(tk.ds[kt * kBwdQueries + row], q, dk[kt]);
      }
  }
}

// After the query sweep (every thread): the halves' sums added and the tail keys' dK (× scale) and
// dV written. tk.p and tk.ds are free by then and hold the upper half's sums.
__device__ __forceinline__ void tail_keys_store(const TailKeys& tk, int n, const flash::Params& p, int b, int h,
                                                int tid, const float (&dk)[kTailKeys], const float (&dv)[kTailKeys]) {
  const int d = tid & 63;
  __syncthreads();  // every thread is done with the last query tile's P and dS
  if (tid >= 64)
#pragma unroll
    for (int kt = 0; kt < kTailKeys; kt++)
      if (kt < n) {
        tk.p[kt * 64 + d] = dk[kt];
        tk.ds[kt * 64 + d] = dv[kt];
      }
  __syncthreads();
  if (tid < 64) {
    const flash::Head hg(p, b, h, 64);
#pragma unroll
    for (int kt = 0; kt < kTailKeys; kt++)
      if (kt < n) {
        const int64_t off = hg.gkv + int64_t(p.tk_main + kt) * hg.grs + d;
        p.dk[off] = __float2bfloat16_rn((dk[kt] + tk.p[kt * 64 + d]) * p.scale);
        p.dv[off] = __float2bfloat16_rn(dv[kt] + tk.ds[kt * 64 + d]);
      }
  }
}

// The kernel body. PERSISTENT (attention_bwd_persistent_kernel; D = 128, two warpgroups, atomics): the block runs
// (key tile, head, batch) work items of k_tiles · H · B until none are left, each taken in block order from the
// launch's counter `taken` by thread 0 at the start of the item before (its latency hidden by that item's tiles; the
// launch's last take resets the counter) and handed to the block through one of two shared slots at the item's end
// barrier; right after that barrier the next item's K, V and first Q/dO tile are issued, so they land while this
// item's dK and dV are written. Else the one item the block's grid position names.
template <int D, int NWG, bool BULK, bool PERSISTENT>
__device__ __forceinline__ void bwd_body(const flash::Params& p, int k_tiles, int* taken) {
  static_assert(NWG == 2 || D == 64, "at D = 128 the two warpgroups split dQ's columns");
  static_assert(!PERSISTENT || (D == 128 && NWG == 2 && !BULK), "the persistent form is the LLaMA backward's");
  constexpr int THREADS = 128 * NWG;
  constexpr int DB = D / 64, BK = bwd_keys<NWG>(), BQ = kBwdQueries, KQ = BQ / 16;
  static_assert(KQ == 4, "a_fragments and grads_t take a 64-query tile");
  constexpr uint32_t kKVBytes = BK * D * 2, kQBytes = BQ * D * 2, kSBytes = BK * BQ * 2;
  OWLET_DYNAMIC_SMEM(smem_raw);
  const uint32_t raw = mma::smem_u32(smem_raw);
  const uint32_t sK = (raw + 1023u) & ~1023u;  // the swizzle atoms must be 1024-aligned
  const uint32_t sV = sK + kKVBytes, sQ = sV + kKVBytes, sO = sQ + 2 * kQBytes, sS = sO + 2 * kQBytes,
                 sL = sS + kSBytes, sDl = sL + 2 * BQ * 4,  // lse [2][BQ], Δ [2][BQ]
                 sDq = sDl + 2 * BQ * 4;                     // BULK: dQ [NWG][2][BQ][kDqPitch] fp32
  volatile int* const item_slots = reinterpret_cast<volatile int*>(smem_raw + (sDq - raw));  // PERSISTENT: [2]
  unsigned char* const gS = smem_raw + (sS - raw);  // generic pointers to the same bytes
  const float* const fL = reinterpret_cast<const float*>(smem_raw + (sL - raw));
  const float* const fD = reinterpret_cast<const float*>(smem_raw + (sDl - raw));

  const int tid = threadIdx.x, wg = tid >> 7, wi = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int n_items = PERSISTENT ? k_tiles * p.H * p.B : 1;
  // Item w's (batch, head, key tile rank): rank 0 is key tile 0, the one most query tiles see.
  auto tile_of = [&](int w) -> BlockTile {
    if constexpr (PERSISTENT) return item_tile(w, k_tiles, p.H, p.B, p.sections);
    return block_tile<D == 128>(p.sections);
  };
  int w = 0;
  if constexpr (PERSISTENT) {
    if (tid == 0) item_slots[0] = take_item(taken, n_items);
    __syncthreads();
    w = item_slots[0];
  }
  const int shift = p.Tk - p.Tq;
  const int n_qt = (p.tq_main + BQ - 1) / BQ;  // rows past tq_main: attention_tail.cuh
  // The query tile holding the first query that can see key j (whole tiles before it are skipped).
  auto first_qt = [&](int j) { return (p.causal ? max(0, j - shift) : 0) / BQ; };
  // Query tile qt of head hn's Q, dO, lse and Δ into buffer buf.
  auto load_q_tile = [&](const flash::Head& hn, int qt, int buf) {
    const int i0 = qt * BQ;
    load_tile<BQ, D, THREADS>(sQ + buf * kQBytes, p.q + hn.q, hn.rs, i0, p.Tq, tid);
    load_tile<BQ, D, THREADS>(sO + buf * kQBytes, p.dout + hn.o, hn.ors, i0, p.Tq, tid);
    if (tid < BQ) {
      const bool valid = i0 + tid < p.Tq;
      mma::cp_async4(sL + (buf * BQ + tid) * 4, p.lse + hn.stat + (valid ? i0 + tid : 0), valid);
      mma::cp_async4(sDl + (buf * BQ + tid) * 4, p.delta + hn.stat + (valid ? i0 + tid : 0), valid);
    }
  };
  // K, V and the first Q/dO tile of item `it` into buffer 0 (the current item's at n = 0, the next one's after the
  // current item's last tile).
  auto load_item = [&](const BlockTile& it) {
    const flash::Head hn(p, it.b, it.h, D);
    const int j = it.rank * BK, first = first_qt(j);
    if (first >= n_qt) return;
    load_tile<BK, D, THREADS>(sK, p.k + hn.kv, hn.rs, j, p.Tk, tid);
    load_tile<BK, D, THREADS>(sV, p.v + hn.kv, hn.rs, j, p.Tk, tid);
    load_q_tile(hn, first, 0);
  };
  for (int n = 0; PERSISTENT ? w < n_items : n == 0; n++) {
    const BlockTile bt = tile_of(w);
    const int b = bt.b, h = bt.h, j0 = bt.rank * BK;
    const flash::Head hd(p, b, h, D);
    const int qt0 = first_qt(j0);
    const int key_w = j0 + wg * 64 + wi * 16;  // this warp's first key
    const int key_a = key_w + g, key_b = key_a + 8;  // the two keys this thread holds
    // One warpgroup at D = 64: the last key block may take on the keys past tk_main (Params::block_tail_keys), their
    // K and V rows copied to shared memory here (published by the first tile's barrier).
    constexpr bool kCanTail = NWG == 1 && D == 64 && !BULK;
    const int n_tail = kCanTail && p.block_tail_keys > 0 && j0 + BK >= p.tk_main ? min(p.block_tail_keys, kTailKeys) : 0;
    TailKeys tkeys{};
    float tdk[kTailKeys] = {}, tdv[kTailKeys] = {};
    if constexpr (kCanTail) {
      unsigned char* const tb = smem_raw + (sDl + 2 * BQ * 4 - raw);
      tkeys = {reinterpret_cast<const bf16*>(tb), reinterpret_cast<const bf16*>(tb + kTailKeys * 128),
               reinterpret_cast<float*>(tb + 2 * kTailKeys * 128),
               reinterpret_cast<float*>(tb + 2 * kTailKeys * 128 + kTailKeys * kBwdQueries * 4)};
      if (tid < 16 * n_tail) {  // key tid / 16, K (or V) by tid / 8 mod 2, 16-byte chunk tid mod 8
        const int kt = tid >> 4, kv = (tid >> 3) & 1, c = tid & 7;
        *reinterpret_cast<uint4*>(tb + kv * kTailKeys * 128 + kt * 128 + c * 16) =
            *reinterpret_cast<const uint4*>((kv ? p.v : p.k) + hd.kv + int64_t(p.tk_main + kt) * hd.rs + 8 * c);
      }
    }

    if (n == 0) {
      load_item(bt);
      mma::cp_async_commit();
    }
    int w_next = 0;
    if constexpr (PERSISTENT) {
      if (tid == 0) w_next = take_item(taken, n_items);  // used at this item's end
    }

    float dk[DB][32], dv[DB][32];
#pragma unroll
    for (int c = 0; c < DB; c++)
#pragma unroll
      for (int i = 0; i < 32; i++) dk[c][i] = dv[c][i] = 0.f;
    const uint32_t sKw = sK + wg * 64 * 128, sVw = sV + wg * 64 * 128;  // this warpgroup's 64 keys in each block
    // dQ: D = 128 splits the columns between the warpgroups (all 128 keys each), D = 64 the keys (all columns).
    constexpr int kDqSteps = D == 128 ? BK / 16 : 4;
    const int dq_step0 = D == 128 ? 0 : 4 * wg, dq_col = D == 128 ? 64 * wg : 0;

    for (int qt = qt0; qt < n_qt; qt++) {
      const int buf = (qt - qt0) & 1, i0 = qt * BQ;
      // BULK: the bulk reductions of tile qt − 2 have read dQ buffer `buf` (warp 0 of each warpgroup issued them; the
      // barrier below tells everyone)
      if constexpr (BULK) {
        if (wi == 0) bulk_wait_read<1>();
      }
      mma::cp_async_wait<0>();  // tile qt (and K, V) landed for this thread
      fence_proxy_async();      // ... visible to the async proxy
      __syncthreads();          // ... for every thread; and every warpgroup is done with tile qt − 1
      if (qt + 1 < n_qt) load_q_tile(hd, qt + 1, buf ^ 1);
      mma::cp_async_commit();
      const uint32_t sQt = sQ + buf * kQBytes, sOt = sO + buf * kQBytes;
      const float* Lt = fL + buf * BQ;
      const float* Dt = fD + buf * BQ;

      // One query tile. N16 (a last tile of at most kNarrowQueries rows, uniform over the block): Sᵀ and dPᵀ by
      // m64n16k16 over the tile's first 16 queries, dV and dK over one k16 step; dQ keeps its 64 query rows (wgmma's
      // M), of which rows 16.. read stale dSᵀ columns and are never added. Straight-line from each wgmma to its wait.
      auto tile_step = [&](auto narrow_tag) {
        constexpr bool N16 = decltype(narrow_tag)::value;
        constexpr int NR = N16 ? kNarrowQueries / 2 : 32, KQN = NR / 8;
        // Sᵀ = K_w Qᵀ and dPᵀ = V_w dOᵀ (64 keys × 64 queries each), two commit groups: Pᵀ is computed while the tensor
        // cores still run dPᵀ.
        float st[NR], dpt[NR];
        fence();
        keys_by_queries<D, BK, N16>(st, sKw, sQt);
        keys_by_queries<D, BK, N16>(dpt, sVw, sOt);
        const bool need_mask =
            p.key_mask != nullptr || j0 + BK > p.tk_main || i0 + BQ > p.tq_main || (p.causal && key_w + 15 > i0 + shift);
        uint32_t pa[KQN][4], da[KQN][4];
        probs_and_dv(st, dpt, pa, dv, Lt, p, b, i0, key_a, key_b, t4, need_mask, sOt);

        // dSᵀ as A fragments for dK, and to shared memory for dQ.
        grads_t(dpt, st, Dt, da, gS, wg * 64 + wi * 16, g, t4);
        fence_proxy_async();  // the dSᵀ stores (generic proxy) before the wgmma that read them (async proxy)
        __syncthreads();      // both warpgroups' dSᵀ are in shared memory

        // dQ tile (64 queries × 64 columns per warpgroup) = dS K, A = dSᵀ read transposed, B = K N-major; then
        // dK += dSᵀ Q, which runs while this thread adds its dQ into the accumulator.
        float dq[32];
        fence();
        dq_product<BK, kDqSteps>(dq, sS, sK + (dq_col / 64) * (BK * 128), dq_step0);
        keys_by_d(dk, da, sQt);
        wait<1>();  // dV and dQ are done; dK may still run
        fence_operands(dq);
        if constexpr (kCanTail) {
          if (n_tail)
            tail_keys_scores(tkeys, n_tail, dq, smem_raw + (sQt - raw), smem_raw + (sOt - raw), Lt, Dt, p, b, i0, wi, g, t4);
        }
        // dq[4i + e]: query 16wi + g + 8·(e ≥ 2) of the tile, column dq_col + 8i + 2t + (e mod 2).
        if constexpr (BULK) {
          // to this warpgroup's buffer, then one 256-byte bulk reduction per query row, issued by warp 0's lanes
          const uint32_t tile = sDq + uint32_t((wg * 2 + buf) * BQ * kDqPitch * 4);
          float* const gt = reinterpret_cast<float*>(smem_raw + (tile - raw));
          store_dq_rows(gt, kDqPitch, dq, p.scale, wi, g, t4);
          fence_proxy_async();      // the generic-proxy stores before the bulk copies' async-proxy reads
          bar_sync(1 + wg, 128);    // the warpgroup's rows are all there
          if (wi == 0) {
            for (int rr = lane; rr < BQ; rr += 32)
              if (i0 + rr < p.tq_main)
                bulk_reduce_add(p.dq_acc + ((int64_t(b) * p.Tq + i0 + rr) * p.H + h) * D + dq_col,
                                tile + uint32_t(rr * kDqPitch * 4), 64 * 4);
            bulk_commit();
          }
        } else {
#pragma unroll
          for (int r = 0; r < 2; r++) {
            const int qi = i0 + wi * 16 + g + 8 * r;
            if (qi >= p.tq_main) continue;
            float* dst = p.dq_acc + ((int64_t(b) * p.Tq + qi) * p.H + h) * D + dq_col + 2 * t4;
#pragma unroll
            for (int i = 0; i < 8; i++)
              atomic_add2(dst + 8 * i, dq[4 * i + 2 * r] * p.scale, dq[4 * i + 2 * r + 1] * p.scale);
          }
        }
        if constexpr (kCanTail) {
          if (n_tail) {
            __syncthreads();  // the tail keys' P and dS of every row are in shared memory
            tail_keys_grads(tkeys, n_tail, smem_raw + (sQt - raw), smem_raw + (sOt - raw), N16 ? kNarrowQueries : BQ, tid,
                            tdk, tdv);
          }
        }
        wait<0>();  // dK is done: every product of this tile is, before the next tile's barrier (its prefetch
                    // overwrites this tile's Q and dO; the next dSᵀ stores overwrite this one)
#pragma unroll
        for (int c = 0; c < DB; c++) {
          fence_operands(dk[c]);
          fence_operands(dv[c]);
        }
      };
      // (At D = 64 only: at D = 128 the second instantiation cost the kernel 6 registers, to 254 of 255, for rest
      // tiles the LLaMA's sequences rarely have.)
      if (D == 64 && p.tq_main - i0 <= kNarrowQueries) tile_step(std::bool_constant<D == 64>{});
      else tile_step(std::false_type{});
    }
    mma::cp_async_wait<0>();
    if constexpr (BULK) {
      if (wi == 0) bulk_wait<0>();  // the reductions are done before the block (and its shared memory) ends
    }
    if constexpr (PERSISTENT) {
      // Every thread is done with this item's shared memory (its products were waited for at each tile's end); then
      // the next item's first loads fly while this one's dK and dV are written.
      if (tid == 0) item_slots[(n + 1) & 1] = w_next;
      __syncthreads();
      w_next = item_slots[(n + 1) & 1];
      if (w_next < n_items) load_item(tile_of(w_next));
      mma::cp_async_commit();
    }
    if constexpr (kCanTail) {
      if (n_tail) tail_keys_store(tkeys, n_tail, p, b, h, tid, tdk, tdv);
    }
    // (D = 64 only: at D = 128 these registers on top of the 128 of dK and dV made ptxas spill 364 bytes)
    if constexpr (D == 64) {
      if (p.tq_main < p.Tq) add_tail_rows<DB>(p, hd, b, key_a, key_b, t4, dk, dv);
    }

    // dK (× scale) and dV for this thread's two keys; keys no query sees get zeros; keys past tk_main are
    // attention_tail.cuh's.
    store_dk_dv<D>(p, b, h, key_a, key_b, t4, dk, dv);
    if constexpr (PERSISTENT) w = w_next;
  }  // items
}

template <int D, int NWG = 2, bool BULK = false>
__global__ void __launch_bounds__(128 * NWG, NWG == 1 ? 2 : 1) attention_bwd_kernel(flash::Params p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || defined(OWLET_CUDA_EMULATION)
  bwd_body<D, NWG, BULK, false>(p, 0, nullptr);
#else
  __trap();  // built without sm_90a: the dispatch never launches this (see use_wgmma_bwd in attention.cu)
#endif
}

// The persistent Hopper backward at D = 128 (OWLET_ATTN_BWD=wgmma-p; session 15, by name only until a GPU runs it): a
// grid of at most one block per SM, each taking (key tile, head, batch) items of k_tiles · H · B from the counter
// `taken` (zero at launch, zero again at the end), the next item's first loads in flight while the current one's dK
// and dV are written.
__global__ void __launch_bounds__(256, 1) attention_bwd_persistent_kernel(flash::Params p, int k_tiles, int* taken) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || defined(OWLET_CUDA_EMULATION)
  bwd_body<128, 2, false, true>(p, k_tiles, taken);
#else
  __trap();
#endif
}

}  // namespace owlet::cuda::wgmma
