// Experimental Hopper (sm_90a) attention forward on warpgroup tensor cores (wgmma), selected per call with
// OWLET_ATTN_FWD=wgmma or wgmma-overlap (see attention.cu). Same contract as flash::attention_fwd_kernel: bf16 q, k,
// v in [B, T, H, D] or as views into a packed [B, T, H, 3, D] (flash::Params::in_hs), D = 64 or 128, causal with
// shift Tk − Tq, key padding mask, tails of Tq and Tk masked; writes the normalised O (bf16) and the natural-log lse
// [B, H, Tq]. No dropout (the dispatch falls back for dropout > 0).
//
// Schedule: one block of 2 warpgroups (256 threads) per (128 queries, head, batch); warpgroup w owns query rows
// 64w..64w+63 of the block. Q (128 × D) stays in shared memory; 128-key tiles of K and V stream through two
// buffers each (three for V in the overlap variant) by cp.async (all 256 threads load; the next tile is in flight
// while the current one is computed).
// Per tile and warpgroup:  S = Q·Kᵀ  by D/16 × wgmma.m64n128k16 (A = Q and B = K both from shared memory, K-major),
// online softmax on the accumulator registers, then O += P·V by (128/16)·(D/64) × wgmma.m64n64k16 with A = P from
// registers (bf16) and B = V from shared memory in the transposed (N-major) mode. No producer warpgroup, no TMA, no
// ping-pong between the warpgroups: a first version that uses the Hopper instructions correctly. Two variants:
// OWLET_ATTN_FWD=wgmma waits for each product before the next step; wgmma-overlap runs the softmax of tile t while
// the tensor cores compute P(t−1)·V(t−1) (FlashAttention-3's intra-warpgroup overlap; a third V buffer).
//
// Shared-memory layout (every operand tile), "128-byte swizzle": a tile of R rows × D bf16 columns is stored as D/64
// column blocks of R rows × 128 bytes (64 elements); block c holds columns 64c..64c+63, blocks are R·128 bytes apart.
// Inside a block, row r occupies bytes [128r, 128r + 128), and its 16-byte chunk k (elements 8k..8k+7) is stored at
// chunk position k ^ (r mod 8). Eight rows (1024 bytes) form one swizzle atom. This is the canonical
// SWIZZLE_128B layout of the PTX ISA ("Shared Memory Matrix Layout"): the hardware XORs address bits [4,7) with bits
// [7,10), so every tile starts on a 1024-byte boundary (the dynamic shared memory base is rounded up by hand).
//   - Q and K are "K-major" operands (the reduction dimension d is contiguous): exactly this layout.
//   - V is the B operand of P·V with reduction over keys and N = d; stored [key][d] it is "N-major" (d contiguous),
//     the same bytes, read with imm-trans-b = 1.
//
// Matrix descriptors (PTX ISA "Matrix Descriptor Format", 64 bits):
//   bits  0–13  start address >> 4          bits 16–29  leading-dimension byte offset (LBO) >> 4
//   bits 32–45  stride-dimension byte offset (SBO) >> 4   bits 49–51  base offset   bits 62–63  swizzle (1 = 128 B)
// K-major (Q, K): SBO = 1024 = the distance between consecutive groups of 8 rows (M or N direction). A k16 step
//   reads 32 bytes inside the 128-byte row, so LBO (the K-direction core-matrix stride) is not used by the swizzled
//   K-major layouts; it is set to 1 (16 bytes) as is customary. Step kd of the reduction over d starts at column
//   block kd/4, +32·(kd mod 4) bytes: adding the offset to the start address works because the swizzle XOR is taken
//   from the absolute address bits [7,10) (the row within the atom), which a +32..+96 offset does not change; the
//   base offset field stays 0 because every tile (and every 8-row group of it) starts 1024-aligned.
// N-major (V), N = 64 per instruction: the instruction covers one 64-wide column block (one atom across N) and 16
//   keys = two atoms along the reduction (keys 0–7, 8–15), 1024 bytes apart. The PTX ISA's two strides for
//   MN-major swizzled layouts are "between atoms along MN" and "between 8-row groups along K"; with N = 64 the first
//   is never used, so both LBO and SBO are set to 1024 — correct whichever field the hardware takes as the K stride.
//   Key step kk starts at kk·16·128 = 2048·kk bytes into the block (1024-aligned, base offset 0).
//
// Register fragments (PTX ISA "Matrix Fragments for wgmma.m64nNk16"), thread l of warp w (0–3) of a warpgroup,
// g = (l mod 32) / 4, t = l mod 4:
//   accumulator D (64 × N fp32): d[4i + e] = D[16w + g + 8·(e ≥ 2)][8i + 2t + (e mod 2)], i = 0..N/8−1
//   A from registers (64 × 16 bf16): 4 × b32 = rows 16w + g, 16w + g + 8, columns 2t..2t+1 and 2t+8..2t+9, in the
//   order (g, 2t) (g+8, 2t) (g, 2t+8) (g+8, 2t+8) — per warp the mma.m16n8k16 A fragment. So the score accumulator
//   chunks 2kk and 2kk+1 (keys 16kk..16kk+15) pack directly into the A fragment of key step kk, as in the mma.sync
//   kernel. Each thread holds 2 rows (g, g+8): the softmax row reductions need only the 4 lanes sharing g.
//
// Asynchrony rules followed (PTX ISA wgmma.fence / commit_group / wait_group): wgmma.fence before the first
// wgmma of each batch (the accumulators and A registers were written by ordinary instructions); a batch is one
// commit group; before any register of a batch (accumulators, A fragments) is touched again, a wgmma.wait_group that
// covers it (groups complete in order: with S(t) committed before P(t−1)·V(t−1), wait_group 1 covers S(t) only).
// The "operand fences" (empty volatile asm that claims to modify a register) keep the compiler from moving ordinary
// reads or writes of those registers across the wgmma instructions. cp.async writes shared memory through the
// generic proxy and wgmma reads it through the async proxy, so every thread issues fence.proxy.async after its
// copies land and before the barrier that publishes them.
#pragma once
#include <cstdint>
#include <type_traits>

#include "attention_flash.cuh"
#include "common.cuh"
#include "mma.cuh"

// The accumulator operands of a wgmma asm statement: 32 fp32 registers d[i .. i + 31], read and written.
#define OWLET_WGMMA_ACC8(d, i) \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
#define OWLET_WGMMA_ACC32(d, i) \
  OWLET_WGMMA_ACC8(d, i), OWLET_WGMMA_ACC8(d, i + 8), OWLET_WGMMA_ACC8(d, i + 16), OWLET_WGMMA_ACC8(d, i + 24)

namespace owlet::cuda::wgmma {

constexpr int kBR = 128, kBC = 128, kThreads = 256;
// A block's last key tile with at most this many visible keys (the ViT's 257th key: 2 tiles of 128 and 1 key) is
// computed as one k16 step: S by m64n16k16 and P·V over 16 keys, instead of a whole tile that is almost all padding
// (attention_fwd_kernel without OVERLAP).
constexpr int kNarrowKeys = 16;

// V buffers: 2, or 3 with OVERLAP (P(t−1)·V(t−1) still reads V(t−1) during iteration t, whose prefetch writes tile
// t + 1).
template <bool OVERLAP>
constexpr int v_buffers() {
  return OVERLAP ? 3 : 2;
}
// NWG warpgroups of 64 query rows per block: 2 (kBR = 128 rows), or 1 (OWLET_ATTN_FWD=wgmma1): the warpgroups share
// only the K/V tiles, and with one per block a sequence of 257 queries (the ViT's) takes 5 blocks of 64 rows instead
// of 3 of 128, the last of which ran 127 rows that do not exist; the abstractor's 64 queries fill one block.
template <int D, bool OVERLAP, int NWG = 2>
constexpr size_t fwd_smem_bytes() {
  // Q, 2 × K, 2 or 3 × V, and room to align the base to 1024 bytes (D = 128 with OVERLAP: 197,632 bytes).
  return size_t(64 * NWG + (2 + v_buffers<OVERLAP>()) * kBC) * D * 2 + 1024;
}

#ifdef OWLET_CUDA_EMULATION
// The host emulator (test/native/cuda_emu.h) defers each wgmma to the wait_group that covers it; fences are no-ops.
__device__ __forceinline__ void fence() {}
__device__ __forceinline__ void commit() { ::emu::wgmma_commit(); }
template <int N>
__device__ __forceinline__ void wait() {
  ::emu::wgmma_wait(N);
}
__device__ __forceinline__ void fence_proxy_async() {}
template <int N>
__device__ __forceinline__ void fence_operands(float (&)[N]) {}
__device__ __forceinline__ void fence_operands(uint32_t (&)[4]) {}
__device__ __forceinline__ void bar_sync(int id, int n) { ::emu::named_barrier(id, n, true); }
__device__ __forceinline__ void bar_arrive(int id, int n) { ::emu::named_barrier(id, n, false); }
__device__ __forceinline__ void bulk_reduce_add(float* dst, uint32_t src, uint32_t bytes) {
  ::emu::bulk_reduce_add_f32(dst, src, bytes);
}
__device__ __forceinline__ void bulk_commit() { ::emu::bulk_commit(); }
template <int N>
__device__ __forceinline__ void bulk_wait_read() {
  ::emu::bulk_wait(N);
}
template <int N>
__device__ __forceinline__ void bulk_wait() {
  ::emu::bulk_wait(N);
}
#else
__device__ __forceinline__ void fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void fence_operands(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; i++) asm volatile("" : "+f"(r[i])::"memory");
}
__device__ __forceinline__ void fence_operands(uint32_t (&r)[4]) {
#pragma unroll
  for (int i = 0; i < 4; i++) asm volatile("" : "+r"(r[i])::"memory");
}
// Named barriers (ids 1..15; 0 is __syncthreads): bar.sync waits for `n` threads, bar.arrive only counts itself.
__device__ __forceinline__ void bar_sync(int id, int n) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}
__device__ __forceinline__ void bar_arrive(int id, int n) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}
// dst[0 .. bytes/4) += the fp32 values at shared address src, in L2, asynchronously (16-byte aligned, bytes a multiple
// of 16); completion by bulk groups: commit, then wait_group.read (the source may be overwritten) or wait_group.
__device__ __forceinline__ void bulk_reduce_add(float* dst, uint32_t src, uint32_t bytes) {
  asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;\n" ::"l"(dst), "r"(src),
               "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void bulk_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void bulk_wait_read() {
  asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(N) : "memory");
}
template <int N>
__device__ __forceinline__ void bulk_wait() {
  asm volatile("cp.async.bulk.wait_group %0;\n" ::"n"(N) : "memory");
}
#endif

// Descriptor of a K-major 128-byte-swizzled operand starting at shared address `addr`: LBO 16 B (unused), SBO 1024 B.
__device__ __forceinline__ uint64_t desc_kmajor(uint32_t addr) {
  return uint64_t((addr & 0x3FFFF) >> 4) | (uint64_t(1) << 16) | (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}
// Descriptor of an N-major 128-byte-swizzled operand, N = 64 (one atom wide): LBO = SBO = 1024 B (see the header).
__device__ __forceinline__ uint64_t desc_nmajor64(uint32_t addr) {
  return uint64_t((addr & 0x3FFFF) >> 4) | (uint64_t(1024 >> 4) << 16) | (uint64_t(1024 >> 4) << 32) |
         (uint64_t(1) << 62);
}

// D (64×128 fp32) = A·B (+ D when scale_d != 0); A = 64×16 and B = 16×128 (stored 128×16, K-major) in shared memory.
__device__ __forceinline__ void mma_ss_m64n128k16(float (&d)[64], uint64_t desc_a, uint64_t desc_b, int scale_d) {
#ifdef OWLET_CUDA_EMULATION
  ::emu::wgmma_ss(d, 128, desc_a, false, desc_b, false, scale_d != 0);
#else
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, "
      "%8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, "
      "%24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, "
      "%40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, "
      "%56, %57, %58, %59, %60, %61, %62, %63}, "
      "%64, %65, p, 1, 1, 0, 0;\n}\n"
      : OWLET_WGMMA_ACC32(d, 0), OWLET_WGMMA_ACC32(d, 32)
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
#endif
}
// D (64×16 fp32) = A·B (+ D when scale_d != 0); A = 64×16 and B = 16×16 (the first 16 rows of a K-major tile) in
// shared memory: the scores of a last key tile that holds at most 16 keys (kNarrowKeys).
__device__ __forceinline__ void mma_ss_m64n16k16(float (&d)[8], uint64_t desc_a, uint64_t desc_b, int scale_d) {
#ifdef OWLET_CUDA_EMULATION
  ::emu::wgmma_ss(d, 16, desc_a, false, desc_b, false, scale_d != 0);
#else
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7}, "
      "%8, %9, p, 1, 1, 0, 0;\n}\n"
      : OWLET_WGMMA_ACC8(d, 0)
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
#endif
}
// D (64×64 fp32) = A·B (+ D when scale_d != 0, the default); A = 64×16 bf16 in registers, B = 16×64 in shared
// memory, N-major (imm-trans-b = 1).
__device__ __forceinline__ void mma_rs_m64n64k16_tb(float (&d)[32], const uint32_t (&a)[4], uint64_t desc_b,
                                                    int scale_d = 1) {
#ifdef OWLET_CUDA_EMULATION
  ::emu::wgmma_rs_nmajor64(d, a, desc_b, scale_d != 0);
#else
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, "
      "%8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, "
      "%24, %25, %26, %27, %28, %29, %30, %31}, "
      "{%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
      : OWLET_WGMMA_ACC32(d, 0)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d));
#endif
}

// Copies rows [r0, r0 + ROWS) of a [T, H, D] sequence (row stride rs) into the swizzled layout at shared address
// `s`, zero-filling rows at or past `limit` (so the products see zeros there, never stale data or NaN).
template <int ROWS, int D, int THREADS = kThreads>
__device__ __forceinline__ void load_tile(uint32_t s, const bf16* base, int64_t rs, int r0, int limit, int tid) {
  rows::copy<ROWS, D, THREADS, rows::Swizzle128>(s, base, rs, r0, limit, tid);
}

// S = Q Kᵀ for the warpgroup's 64 rows × 128 keys (NS = 64 accumulators), or × the tile's first kNarrowKeys keys
// (NS = kNarrowKeys / 2: a last tile of padding but for those): D/16 wgmma, one commit group (not waited for here).
// QROWS: the rows of the block's Q tile (the distance between its 64-column blocks).
template <int D, int NS, int QROWS = kBR>
__device__ __forceinline__ void issue_scores(float (&s)[NS], uint32_t sQw, uint32_t sKt) {
  static_assert(NS == kBC / 2 || NS == kNarrowKeys / 2, "a whole key tile or its first kNarrowKeys keys");
#pragma unroll
  for (int kd = 0; kd < D / 16; kd++) {
    const uint32_t offq = (kd >> 2) * (QROWS * 128) + (kd & 3) * 32;
    const uint32_t offk = (kd >> 2) * (kBC * 128) + (kd & 3) * 32;
    if constexpr (NS == kBC / 2) mma_ss_m64n128k16(s, desc_kmajor(sQw + offq), desc_kmajor(sKt + offk), kd > 0);
    else mma_ss_m64n16k16(s, desc_kmajor(sQw + offq), desc_kmajor(sKt + offk), kd > 0);
  }
  commit();
}
// O += P V over the tile's 128 keys: (128/16)·(D/64) wgmma, one commit group (not waited for here).
template <int DB, int KK>
__device__ __forceinline__ void issue_pv(float (&o)[DB][32], uint32_t (&pa)[KK][4], uint32_t sVt) {
#pragma unroll
  for (int kk = 0; kk < KK; kk++)
#pragma unroll
    for (int c = 0; c < DB; c++) mma_rs_m64n64k16_tb(o[c], pa[kk], desc_nmajor64(sVt + c * (kBC * 128) + kk * 2048));
  commit();
}

// ---- the per-tile softmax arithmetic on the accumulator layout, shared by every Hopper forward ----
// A thread holds 2 query rows (row_a, row_b = row_a + 8) of a warpgroup's 64 × 128 score tile: s[4i + e] is row
// (e < 2 ? row_a : row_b), key kv0 + 8i + 2·t4 + (e & 1).

// Masks the scores a row cannot see (only where the tile reaches past a boundary, or a padding mask is given).
template <int NS>
__device__ __forceinline__ void mask_scores(float (&s)[NS], const flash::Params& p, int b, int kv0, int t4,
                                            int row_a, int row_b, int warp_row0, int shift) {
  const bool need_mask = p.key_mask != nullptr || kv0 + kBC > p.Tk || (p.causal && kv0 + kBC - 1 > warp_row0 + shift);
  if (!need_mask) return;
  if (p.key_mask) {
#pragma unroll
    for (int i = 0; i < NS; i++) {
      const int j = kv0 + (i >> 2) * 8 + 2 * t4 + (i & 1), row = (i & 2) ? row_b : row_a;
      if (!flash::key_visible(p, b, row, j)) s[i] = -INFINITY;
    }
    return;
  }
  // keys_end of both rows relative to the thread's first column kv0 + 2·t4
  const int end_a = flash::keys_end(p, row_a) - kv0 - 2 * t4, end_b = flash::keys_end(p, row_b) - kv0 - 2 * t4;
#pragma unroll
  for (int i = 0; i < NS; i++)
    if ((i >> 2) * 8 + (i & 1) >= ((i & 2) ? end_b : end_a)) s[i] = -INFINITY;
}

// Online softmax in base 2 (as the mma.sync kernel): updates the running max m_run and sum l_run of both rows,
// turns the scores into probabilities, and returns in corr the factor the rows' O accumulators must be scaled by.
template <int NS>
__device__ __forceinline__ void softmax_step(float (&s)[NS], float (&m_run)[2], float (&l_run)[2], float (&corr)[2],
                                             float scale_log2) {
  float m_use[2];
#pragma unroll
  for (int r = 0; r < 2; r++) {
    float mx = -INFINITY;
#pragma unroll
    for (int i = 0; i < NS / 4; i++) mx = fmaxf(mx, fmaxf(s[4 * i + 2 * r], s[4 * i + 2 * r + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(m_run[r], mx * scale_log2);
    m_use[r] = m_new == -INFINITY ? 0.f : m_new;  // a row with nothing visible yet: keep everything at 0
    corr[r] = mma::exp2_ftz(m_run[r] - m_use[r]);
    m_run[r] = m_new;
    l_run[r] *= corr[r];
  }
#pragma unroll
  for (int i = 0; i < NS; i++) {
    const float pe = mma::exp2_ftz(fmaf(s[i], scale_log2, -m_use[(i >> 1) & 1]));
    l_run[(i >> 1) & 1] += pe;
    s[i] = pe;
  }
}

// O (DB 64-column blocks of the accumulator layout) scaled per row by corr.
template <int DB>
__device__ __forceinline__ void rescale_o(float (&o)[DB][32], const float (&corr)[2]) {
  // Skipped when no row of the warp has a new maximum: every factor is then exactly 1 and the products would change
  // no bit. Past a row's first key tiles the usual case (its maximum seen early), 32·DB multiplies per thread saved
  // for a vote; no wgmma is in flight here (the scores were waited for, P·V not yet issued or already completed).
  if (!__any_sync(0xffffffffu, corr[0] != 1.f || corr[1] != 1.f)) return;
#pragma unroll
  for (int c = 0; c < DB; c++)
#pragma unroll
    for (int i = 0; i < 8; i++)
#pragma unroll
      for (int r = 0; r < 2; r++) {
        o[c][4 * i + 2 * r] *= corr[r];
        o[c][4 * i + 2 * r + 1] *= corr[r];
      }
}

// P as bf16 A fragments: accumulator chunks 2kk, 2kk+1 (keys 16kk..16kk+15) are key step kk's fragment.
template <int NS, int KK>
__device__ __forceinline__ void pack_p(uint32_t (&pa)[KK][4], const float (&s)[NS]) {
#pragma unroll
  for (int kk = 0; kk < KK; kk++) {
    pa[kk][0] = mma::pack_bf16(s[8 * kk + 0], s[8 * kk + 1]);
    pa[kk][1] = mma::pack_bf16(s[8 * kk + 2], s[8 * kk + 3]);
    pa[kk][2] = mma::pack_bf16(s[8 * kk + 4], s[8 * kk + 5]);
    pa[kk][3] = mma::pack_bf16(s[8 * kk + 6], s[8 * kk + 7]);
    fence_operands(pa[kk]);
  }
}

// Normalises O and writes it (bf16) and the natural-log lse of the thread's two rows, exactly as
// flash::attention_fwd_kernel; rows past Tq, or of a warpgroup without rows (active false), write nothing.
template <int D>
__device__ __forceinline__ void write_out_lse(const flash::Params& p, float (&o)[D / 64][32], const float (&m_run)[2],
                                              const float (&l_run)[2], int b, int h, int row_a, int row_b, int t4,
                                              bool active) {
  const flash::Head hd(p, b, h, D);
  const int64_t obase = hd.o, rs = hd.ors;
#pragma unroll
  for (int r = 0; r < 2; r++) {
    float l = l_run[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int row = r ? row_b : row_a;
    if (!active || row >= p.Tq) continue;
    const float f = l > 0.f ? 1.f / l : 0.f;
    bf16* dst = p.out + obase + int64_t(row) * rs + 2 * t4;
#pragma unroll
    for (int c = 0; c < D / 64; c++)
#pragma unroll
      for (int i = 0; i < 8; i++)
        *reinterpret_cast<__nv_bfloat162*>(dst + c * 64 + i * 8) =
            __floats2bfloat162_rn(o[c][4 * i + 2 * r] * f, o[c][4 * i + 2 * r + 1] * f);
    if (t4 == 0)
      p.lse[hd.stat + row] = l > 0.f ? (m_run[r] + log2f(l)) * flash::kLn2 : -INFINITY;
  }
}

// OVERLAP = false: per tile S, wait, softmax, P·V, wait. OVERLAP = true (FlashAttention-3's intra-warpgroup
// overlap): per tile the warpgroup issues S(t), then P(t−1)·V(t−1), waits only for S(t) (wait_group 1: groups
// complete in order), computes the softmax of tile t while the tensor cores run P(t−1)·V(t−1), then waits for that
// before rescaling O. P(t−1) lives in registers across the iteration; V(t−1) must stay in shared memory until then,
// hence the third V buffer.
template <int D, bool OVERLAP, int NWG = 2>
__global__ void __launch_bounds__(128 * NWG, NWG == 1 ? 2 : 1) attention_fwd_kernel(flash::Params p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || defined(OWLET_CUDA_EMULATION)
  constexpr int BR = 64 * NWG, THREADS = 128 * NWG;  // query rows and threads per block
  constexpr int DB = D / 64;        // 64-column blocks of the head dim
  constexpr int KK = kBC / 16;      // k16 steps of O += P V
  constexpr int NS = kBC / 8 * 4;   // score accumulators per thread (64)
  constexpr int NV = v_buffers<OVERLAP>();
  constexpr uint32_t kQBytes = BR * D * 2, kKVBytes = kBC * D * 2;
  OWLET_DYNAMIC_SMEM(smem_raw);
  const uint32_t raw = mma::smem_u32(smem_raw);
  const uint32_t sQ = (raw + 1023u) & ~1023u;  // the swizzle atoms must be 1024-aligned
  const uint32_t sK = sQ + kQBytes, sV = sK + 2 * kKVBytes;

  const int tid = threadIdx.x, wg = tid >> 7, wi = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const BlockTile bt = block_tile<D == 128>(p.sections);
  const int b = bt.b, h = bt.h;
  const int q0 = (int(gridDim.x) - 1 - bt.rank) * BR;  // the longest causal tiles start first
  const flash::Head hd(p, b, h, D);
  const int64_t rs = int64_t(p.H) * p.in_hs;  // (as flash::attention_fwd_kernel: hd.rs widened cost registers)
  const bf16 *qb = p.q + hd.q, *kb = p.k + hd.kv, *vb = p.v + hd.kv;
  const int shift = p.Tk - p.Tq;

  // Keys the block visits; per warpgroup (the unit that issues wgmma, so every condition below is uniform over
  // its 128 threads) the last key any of its rows can see, and for this warp the same for its 16 rows.
  const int kv_end = p.causal ? min(p.Tk, q0 + BR + shift) : p.Tk;
  const int n_tiles = kv_end > 0 ? (kv_end + kBC - 1) / kBC : 0;
  const int wg_row0 = q0 + wg * 64;
  const bool wg_active = wg_row0 < p.Tq;
  const int wg_kv_end = p.causal ? min(p.Tk, wg_row0 + 64 + shift) : p.Tk;
  const int warp_row0 = wg_row0 + wi * 16;
  const int row_a = warp_row0 + g, row_b = row_a + 8;  // the two query rows this thread holds

  load_tile<BR, D, THREADS>(sQ, qb, rs, q0, p.Tq, tid);
  if (n_tiles > 0) {
    load_tile<kBC, D, THREADS>(sK, kb, rs, 0, p.Tk, tid);
    load_tile<kBC, D, THREADS>(sV, vb, rs, 0, p.Tk, tid);
  }
  mma::cp_async_commit();

  float o[DB][32];
#pragma unroll
  for (int c = 0; c < DB; c++)
#pragma unroll
    for (int i = 0; i < 32; i++) o[c][i] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};
  const uint32_t sQw = sQ + wg * 64 * 128;  // this warpgroup's 64 rows (8 atoms) in every column block
  uint32_t pa[KK][4];                       // P of the tile whose product with V is due (bf16 A fragments)
  bool pending = false;                     // OVERLAP: P(t−1)·V(t−1) not issued yet (uniform per warpgroup)
  uint32_t sV_pending = 0;

  for (int tile = 0; tile < n_tiles; tile++) {
    const int kv0 = tile * kBC;
    const uint32_t sKt = sK + (tile & 1) * kKVBytes, sVt = sV + (tile % NV) * kKVBytes;
    if (tile + 1 < n_tiles) {
      load_tile<kBC, D, THREADS>(sK + ((tile + 1) & 1) * kKVBytes, kb, rs, kv0 + kBC, p.Tk, tid);
      load_tile<kBC, D, THREADS>(sV + ((tile + 1) % NV) * kKVBytes, vb, rs, kv0 + kBC, p.Tk, tid);
    }
    mma::cp_async_commit();
    mma::cp_async_wait<1>();  // everything but the prefetch just issued has landed (for this thread)
    fence_proxy_async();      // ... and is visible to the tensor cores' async proxy
    __syncthreads();          // ... for every thread's copies
    // One tile of the warpgroup's work. kOverlapped (OVERLAP, and not the first tile, which has no P(t−1)): issue
    // P(t−1)·V(t−1) behind S(t). The body is straight-line from each wgmma to its wait (ptxas serialises wgmma whose
    // registers are in flight across a branch), hence the first tile as its own instantiation.
    auto step = [&](auto first_tag) {
      constexpr bool kOverlapped = OVERLAP && !decltype(first_tag)::value;
      float s[NS];
      fence();
      issue_scores<D, NS, BR>(s, sQw, sKt);
      if constexpr (kOverlapped) {
        issue_pv(o, pa, sV_pending);
        wait<1>();  // S(t) is done; P(t−1)·V(t−1) may still run
      } else {
        wait<0>();
      }
      fence_operands(s);

      mask_scores(s, p, b, kv0, t4, row_a, row_b, warp_row0, shift);
      float corr[2];
      softmax_step(s, m_run, l_run, corr, p.scale_log2);
      if constexpr (kOverlapped) {
        wait<0>();  // P(t−1)·V(t−1) is done: O and the P registers may be touched again
#pragma unroll
        for (int c = 0; c < DB; c++) fence_operands(o[c]);
#pragma unroll
        for (int kk = 0; kk < KK; kk++) fence_operands(pa[kk]);
      }
      rescale_o(o, corr);
      pack_p(pa, s);
#pragma unroll
      for (int c = 0; c < DB; c++) fence_operands(o[c]);
      if constexpr (OVERLAP) {
        pending = true;  // issued with the next tile's scores, or below the loop
        sV_pending = sVt;
      } else {
        // O += P V over all 128 keys (P is 0 past the last visible key). Not skipping those key steps keeps every
        // wgmma off a branch: ptxas serialises wgmma that sit in a path it cannot prove warpgroup-uniform.
        fence();
        issue_pv(o, pa, sVt);
        wait<0>();
#pragma unroll
        for (int c = 0; c < DB; c++) fence_operands(o[c]);
      }
    };
    // The last tile with at most kNarrowKeys visible keys (uniform over the block): one k16 step of S and P·V.
    // Straight-line from each wgmma to its wait, as step's body.
    auto step_narrow = [&]() {
      float s[kNarrowKeys / 2];
      fence();
      issue_scores<D, kNarrowKeys / 2, BR>(s, sQw, sKt);
      wait<0>();
      fence_operands(s);
      mask_scores(s, p, b, kv0, t4, row_a, row_b, warp_row0, shift);
      float corr[2];
      softmax_step(s, m_run, l_run, corr, p.scale_log2);
      rescale_o(o, corr);
      uint32_t pn[kNarrowKeys / 16][4];
      pack_p(pn, s);
#pragma unroll
      for (int c = 0; c < DB; c++) fence_operands(o[c]);
      fence();
      issue_pv(o, pn, sVt);
      wait<0>();
#pragma unroll
      for (int c = 0; c < DB; c++) fence_operands(o[c]);
    };
    if (wg_active && kv0 < wg_kv_end) {
      // A warpgroup that works on tile t > 0 worked on every earlier tile (the visible keys form a prefix), so
      // P(t−1) is pending exactly when t > 0.
      if constexpr (OVERLAP) {
        if (tile == 0) step(std::true_type{});
        else step(std::false_type{});
      } else {
        if (kv_end - kv0 <= kNarrowKeys) step_narrow();
        else step(std::false_type{});
      }
    } else if (OVERLAP && pending) {
      // The warpgroup sees no key of this tile (nor of any later one): finish P(t−1)·V(t−1) now, while V(t−1)
      // is still in its buffer (the prefetch of the next iteration overwrites it).
      fence();
      issue_pv(o, pa, sV_pending);
      wait<0>();
#pragma unroll
      for (int c = 0; c < DB; c++) fence_operands(o[c]);
      pending = false;
    }
    __syncthreads();  // both warpgroups are done with this tile's K (and V(t−1)) before prefetches overwrite them
  }
  if (OVERLAP && pending) {
    fence();
    issue_pv(o, pa, sV_pending);
    wait<0>();
#pragma unroll
    for (int c = 0; c < DB; c++) fence_operands(o[c]);
  }
  mma::cp_async_wait<0>();

  write_out_lse<D>(p, o, m_run, l_run, b, h, row_a, row_b, t4, wg_active);
#else
  __trap();  // built without sm_90a: the dispatch never launches this (see hopper_applies in attention.cu)
#endif
}

}  // namespace owlet::cuda::wgmma
