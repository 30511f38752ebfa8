// Tiled attention on bf16 tensor cores (FlashAttention-2's schedule, mma.sync m16n8k16 + ldmatrix + cp.async),
// reading and writing the [B, T, H, D] layout directly (row stride H·D between tokens, no transposes). q, k and v
// may also be read out of one packed [B, T, H, 3, D] tensor (the ViT's fused projection) and their gradients written
// into one: Params carries the strides, Head turns them into every kernel's offsets.
//
// Forward: one block per (BR queries, head, batch); each warp owns 16 or 32 query rows, keeps its scores, fp32 output
// accumulators and the online-softmax state (row max, row sum) in registers (its Q fragments too, in the default
// shape), and streams tiles of K and V through double-buffered shared memory. The tile shape is a template
// (FwdTile: warps, row tiles per warp, keys per tile, Q in registers or not); the variants are listed below it. The score matrix never exists in memory; the log-sum-exp
// of each row is saved for the backward pass.
// Backward: one block per 64 keys; each warp owns 16 keys and accumulates their dK and dV in registers while the
// block streams tiles of Q, dO, lse and Δ = rowsum(dO ⊙ O) over the queries that can see those keys. Pᵀ and dSᵀ are
// computed directly in the key-major layout (Sᵀ = K Qᵀ), so they feed dV += Pᵀ dO and dK += dSᵀ Q from registers;
// dQ += dS K goes through dSᵀ in shared memory and fp32 (2-wide vector) atomics into a [B, Tq, H, D] accumulator.
//
// Masks: keys past Tk (the tail of a 257- or 321-key sequence is masked, never padded to a power of two), causal
// (query i sees key j when j <= i + Tk − Tq), the key padding mask, and dropout on the probabilities (element
// ((b·H + h)·Tq + i)·Tk + j of the counter-based stream of core/dropout_hash.h, as the CPU backend draws it). Work on
// 16-key groups wholly past the last visible key is skipped.
#pragma once
#include <cstdint>

#include "../core/dropout_hash.h"
#include "block_order.h"
#include "common.cuh"
#include "mma.cuh"
#include "row_copy.cuh"
#include "vec_map.cuh"

namespace owlet::cuda::flash {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct Params {
  const bf16 *q, *k, *v, *o, *dout;
  bf16 *out, *dq, *dk, *dv;  // dq: written by dq_store_kernel only (strided gradients; else a plain conversion)
  float* lse;          // [B, H, Tq]
  const float* delta;  // [B, H, Tq] rowsum(dO ⊙ O) (backward)
  float* dq_acc;       // [B, Tq, H, D] fp32 (backward)
  const int32_t* key_mask;  // [B, Tk] or nullptr
  int B, H, Tq, Tk;
  // The layout of the q, k, v inputs and of the dq, dk, dv gradients: each token holds the H heads in_hs (grad_hs)
  // elements apart, so one head's consecutive tokens are H·in_hs apart and a batch is Tq (Tk) tokens. D for
  // [B, T, H, D] tensors (flash_params' default); 3·D for views into one packed [B, T, H, 3, D] tensor (q, k, v =
  // its start + 0, D, 2·D). One stride rather than a row and a head stride: the offsets (b·T·H + h)·hs then have the
  // shape of the contiguous ones, and the general b·T·rs + h·hs cost the m2 forward at D = 64 20 bytes of spills
  // (ptxas, CUDA 13). out, dO, dq_acc ([B, Tq, H, D]) and lse, Δ ([B, H, Tq]) are always contiguous.
  int in_hs, grad_hs;
  // The rows and keys a tiled backward covers (the Hopper one reads them): Tq and Tk, or less when the few past the
  // last whole tile go to attention_tail.cuh. The layout is always [B, Tq or Tk, H, D].
  int tq_main, tk_main;
  bool whole_tiles;  // read by the dispatch only: no tail kernels for this call (the static default; attention.cu tail_allowed)
  // Keys [tk_main, tk_main + block_tail_keys) computed by the last key block of the one-warpgroup Hopper backward
  // (OWLET_ATTN_BWD=wgmma1-keys, D = 64: attention_wgmma_bwd.cuh's tail_keys_*); 0 otherwise.
  int block_tail_keys;
  bool causal;
  // The tiled kernels' block order (block_order.h): heads in this many sections, longest tiles first inside each; 0:
  // launch order. Set by the dispatch for causal calls at D = 128 (attention.cu block_sections), which the kernels
  // at D = 128 follow; the mma.sync backward (dropout, other GPUs) keeps launch order: there b, h and the key tile,
  // no longer free to re-read from blockIdx, cost its D = 128 variant 32 more bytes of spills (ptxas, CUDA 13).
  int sections;
  float scale, scale_log2;  // softmax scale, and the same times log2(e)
  bool dropout;
  uint64_t drop_key;
  uint32_t drop_threshold;
  float inv_keep;  // 1 / (1 − p)
};

// Whether rows or keys are left after a tiled backward for attention_tail.cuh's backward: those past tq_main, and
// those past tk_main that the last key block did not take on itself (block_tail_keys). One rule for the dispatch
// (attention.cu) and the emulator's tests: with wgmma1-keys the tail kernel ran as well until session 17 and added the
// tail keys' dQ a second time (the GPU check's gq errors of 0.1–0.5; dK and dV, overwritten with equal values, passed).
__host__ __device__ inline bool bwd_tail_left(const Params& p) {
  return p.tq_main < p.Tq || p.tk_main + p.block_tail_keys < p.Tk;
}

// Where head h of batch b starts, and how far apart its consecutive tokens are, in each family of tensors: the
// inputs q (q) and k, v (kv), rows rs = H·in_hs apart; out, dO and dq_acc (o), rows ors = H·D apart; the gradients
// dq (gq) and dk, dv (gkv), rows grs = H·grad_hs apart; the per-row statistics lse and Δ ([B, H, Tq], stat). Every
// attention kernel starts from these (what a kernel does not use costs nothing: the members are folded away). The
// strides are 32-bit (a row of H·3·D elements), the offsets 64-bit.
struct Head {
  int rs, ors, grs;
  int64_t q, kv, o, gq, gkv, stat;
  __device__ __forceinline__ Head(const Params& p, int b, int h, int D)
      : rs(p.H * p.in_hs), ors(p.H * D), grs(p.H * p.grad_hs), q((int64_t(b) * p.Tq * p.H + h) * p.in_hs),
        kv((int64_t(b) * p.Tk * p.H + h) * p.in_hs), o((int64_t(b) * p.Tq * p.H + h) * D),
        gq((int64_t(b) * p.Tq * p.H + h) * p.grad_hs), gkv((int64_t(b) * p.Tk * p.H + h) * p.grad_hs),
        stat((int64_t(b) * p.H + h) * p.Tq) {}
};

// Copies rows [r0, r0 + ROWS) of a [T, H, D] sequence (row stride rs) into shared memory laid out [ROWS][LD],
// zero-filling rows at or past `limit`; THREADS threads share the work (row_copy.cuh).
template <int ROWS, int D, int LD, int THREADS>
__device__ __forceinline__ void load_rows(bf16* s, const bf16* base, int64_t rs, int r0, int limit, int tid) {
  rows::copy<ROWS, D, THREADS, rows::Padded<LD>>(mma::smem_u32(s), base, rs, r0, limit, tid);
}

__device__ __forceinline__ bool key_visible(const Params& p, int b, int i, int j) {
  return j < p.Tk && (!p.causal || j <= i + p.Tk - p.Tq) && (!p.key_mask || p.key_mask[int64_t(b) * p.Tk + j] != 0);
}
// Without a padding mask what key_visible allows is a range: query row i sees keys [0, keys_end(i)), key j is seen
// by queries [queries_begin(j), Tq). A thread's scores sit at column offsets that are constants of the fragment
// layout, so masking a tile against its range costs a compare or two per score instead of key_visible's tests.
__device__ __forceinline__ int keys_end(const Params& p, int i) {
  return p.causal ? max(0, min(p.Tk, i + p.Tk - p.Tq + 1)) : p.Tk;
}
__device__ __forceinline__ int queries_begin(const Params& p, int j) {
  return j >= p.Tk ? p.Tq : p.causal ? max(0, j - (p.Tk - p.Tq)) : 0;
}

__device__ __forceinline__ bool drop_keep(const Params& p, int b, int h, int i, int j) {
  return dropout::keep(p.drop_key, dropout::attention_index(b, h, i, j, p.H, p.Tq, p.Tk), p.drop_threshold);
}

// ------------------------------------------------------------------------------------------------------- forward

// The forward's tile shape, one kernel body for all of them: NW warps per block, each owning MT m16 tiles of query
// rows (16·MT rows, BR = 16·MT·NW per block), BC keys per K/V tile (double-buffered). QREG keeps each warp's Q
// fragments in registers for the whole sweep (4·MT·D/16 registers); without it they are re-read from shared memory
// once per key tile, which frees those registers for the fp32 accumulators of two row tiles at D = 128. MINB is
// the blocks per SM asked of ptxas (__launch_bounds__), i.e. a register cap of 65536 / (32·NW·MINB); 0 asks nothing
// and leaves ptxas its own heuristic. (Not 1: an explicit 1 lets ptxas take all 255 registers — the default shape at
// D = 64 then used 240 instead of 164, 2 blocks per SM instead of 3.)
// With MT = 2 every K and V fragment loaded by ldmatrix feeds two mma instead of one (half the shared-memory reads
// per FLOP, FlashAttention-2's choice); with NW = 8 each K/V tile is loaded once per 128 queries instead of 64.
template <int D_, int NW_, int MT_, int BC_, bool QREG_, int MINB_ = 0>
struct FwdTile {
  static constexpr int D = D_, NW = NW_, MT = MT_, BC = BC_, MINB = MINB_;
  static constexpr bool QREG = QREG_;
  static constexpr int BR = 16 * MT * NW, THREADS = 32 * NW, LD = D + 8;
  static constexpr int kSmemBytes = (BR + 4 * BC) * LD * 2;  // Q, then K and V double-buffered
  static_assert(D % 16 == 0 && BC % 16 == 0, "tiles are whole mma fragments");
};

template <class T>
__global__ void __launch_bounds__(T::THREADS, T::MINB) attention_fwd_kernel(Params p) {
  constexpr int D = T::D, MT = T::MT, BR = T::BR, BC = T::BC, THREADS = T::THREADS, LD = T::LD, KD = D / 16,
                NT = BC / 8, DT = D / 8;
  constexpr bool QREG = T::QREG;
  OWLET_DYNAMIC_SMEM(smem);
  bf16* sQ = reinterpret_cast<bf16*>(smem);  // [BR][LD]
  bf16* sK = sQ + BR * LD;                   // [2][BC][LD]
  bf16* sV = sK + 2 * BC * LD;               // [2][BC][LD]

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const BlockTile bt = block_tile<D == 128>(p.sections);
  const int b = bt.b, h = bt.h;
  const int q0 = (int(gridDim.x) - 1 - bt.rank) * BR;  // the longest causal tiles start first
  const Head hd(p, b, h, D);
  const int64_t rs = int64_t(p.H) * p.in_hs;  // (hd.rs, 32-bit, widened: w4 and w4s at D = 64 2 registers more)
  const bf16 *qb = p.q + hd.q, *kb = p.k + hd.kv, *vb = p.v + hd.kv;
  const int shift = p.Tk - p.Tq;

  // Keys this block visits, and the last key (exclusive) any row of this warp can see.
  int kv_end = p.causal ? min(p.Tk, q0 + BR + shift) : p.Tk;
  const int n_tiles = kv_end > 0 ? (kv_end + BC - 1) / BC : 0;
  const int warp_row0 = q0 + warp * 16 * MT;  // this warp's rows: warp_row0 + 16·mt + g (+ 8)
  const int warp_kv_end = p.causal ? min(p.Tk, warp_row0 + 16 * MT + shift) : p.Tk;
  const bool warp_active = warp_row0 < p.Tq;

  load_rows<BR, D, LD, THREADS>(sQ, qb, rs, q0, p.Tq, tid);
  if (n_tiles > 0) {
    load_rows<BC, D, LD, THREADS>(sK, kb, rs, 0, p.Tk, tid);
    load_rows<BC, D, LD, THREADS>(sV, vb, rs, 0, p.Tk, tid);
  }
  mma::cp_async_commit();

  const mma::RowCol qc = mma::a_rowmajor(lane);
  const bf16* sQw = sQ + (warp * 16 * MT + qc.row) * LD + qc.col;  // this lane's ldmatrix row of the warp's Q
  uint32_t qf[QREG ? MT : 1][QREG ? KD : 1][4];
  float o[MT][DT][4];
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int i = 0; i < DT; i++) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.f;
  float m_run[MT][2], l_run[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; mt++) {
    m_run[mt][0] = m_run[mt][1] = -INFINITY;
    l_run[mt][0] = l_run[mt][1] = 0.f;
  }
  auto row_of = [&](int mt, int r) { return warp_row0 + mt * 16 + g + 8 * r; };  // the query rows this thread holds

  for (int tile = 0; tile < n_tiles; tile++) {
    const int buf = tile & 1, kv0 = tile * BC;
    if (tile + 1 < n_tiles) {
      load_rows<BC, D, LD, THREADS>(sK + (buf ^ 1) * BC * LD, kb, rs, kv0 + BC, p.Tk, tid);
      load_rows<BC, D, LD, THREADS>(sV + (buf ^ 1) * BC * LD, vb, rs, kv0 + BC, p.Tk, tid);
    }
    mma::cp_async_commit();
    mma::cp_async_wait<1>();  // everything but the prefetch just issued has landed
    __syncthreads();
    if constexpr (QREG) {
      if (tile == 0) {
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
          for (int kd = 0; kd < KD; kd++) mma::ldmatrix_x4(qf[mt][kd], mma::smem_u32(sQw + mt * 16 * LD + kd * 16));
      }
    }
    if (warp_active && kv0 < warp_kv_end) {
      const bf16* Kt = sK + buf * BC * LD;
      const bf16* Vt = sV + buf * BC * LD;
      // S = Q Kᵀ for this warp's 16·MT rows × BC keys; each K fragment feeds MT row tiles.
      float s[MT][NT][4];
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int i = 0; i < NT; i++) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.f;
      mma::RowCol kc = mma::b_nk(lane);
#pragma unroll
      for (int kd = 0; kd < KD; kd++) {
        uint32_t qa[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          if constexpr (QREG) {
#pragma unroll
            for (int e = 0; e < 4; e++) qa[mt][e] = qf[QREG ? mt : 0][QREG ? kd : 0][e];
          } else {
            mma::ldmatrix_x4(qa[mt], mma::smem_u32(sQw + mt * 16 * LD + kd * 16));
          }
        }
#pragma unroll
        for (int nb = 0; nb < NT / 2; nb++) {
          if (kv0 + nb * 16 < warp_kv_end) {
            uint32_t kf[4];
            mma::ldmatrix_x4(kf, mma::smem_u32(Kt + (nb * 16 + kc.row) * LD + kd * 16 + kc.col));
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
              mma::mma_bf16(s[mt][2 * nb], qa[mt], kf[0], kf[1]);
              mma::mma_bf16(s[mt][2 * nb + 1], qa[mt], kf[2], kf[3]);
            }
          }
        }
      }
      // Masks (only where the tile reaches past a boundary, or a padding mask is given).
      bool need_mask = p.key_mask != nullptr || kv0 + BC > p.Tk || (p.causal && kv0 + BC - 1 > warp_row0 + shift);
      if (need_mask && p.key_mask) {
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
          for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
              int j = kv0 + nt * 8 + 2 * t4 + (e & 1), i = row_of(mt, e >> 1);
              if (!key_visible(p, b, i, j)) s[mt][nt][e] = -INFINITY;
            }
      } else if (need_mask) {
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          // keys_end relative to the thread's first column kv0 + 2·t4, for rows g and g + 8
          const int end[2] = {keys_end(p, row_of(mt, 0)) - kv0 - 2 * t4, keys_end(p, row_of(mt, 1)) - kv0 - 2 * t4};
#pragma unroll
          for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++)
              if (nt * 8 + (e & 1) >= end[e >> 1]) s[mt][nt][e] = -INFINITY;
        }
      }
      // Online softmax in base 2: m = running max of scaled scores; rescale o and l when it grows.
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        float m_use[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
          float mx = -INFINITY;
#pragma unroll
          for (int nt = 0; nt < NT; nt++) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * r], s[mt][nt][2 * r + 1]));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
          float m_new = fmaxf(m_run[mt][r], mx * p.scale_log2);
          m_use[r] = m_new == -INFINITY ? 0.f : m_new;  // a row with nothing visible yet: keep everything at 0
          float corr = mma::exp2_ftz(m_run[mt][r] - m_use[r]);
          m_run[mt][r] = m_new;
          l_run[mt][r] *= corr;
#pragma unroll
          for (int dt = 0; dt < DT; dt++) {
            o[mt][dt][2 * r] *= corr;
            o[mt][dt][2 * r + 1] *= corr;
          }
        }
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
          for (int e = 0; e < 4; e++) {
            float pe = mma::exp2_ftz(fmaf(s[mt][nt][e], p.scale_log2, -m_use[e >> 1]));
            l_run[mt][e >> 1] += pe;
            s[mt][nt][e] = pe;
          }
      }
      if (p.dropout) {  // the row sums above are of the undropped probabilities; only P·V sees the mask
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
          for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
              int j = kv0 + nt * 8 + 2 * t4 + (e & 1), i = row_of(mt, e >> 1);
              if (!drop_keep(p, b, h, i, j)) s[mt][nt][e] = 0.f;
            }
      }
      // O += P V, P taken straight from the score registers as bf16 A fragments; each V fragment feeds MT tiles.
      mma::RowCol vc = mma::b_kn(lane);
#pragma unroll
      for (int kk = 0; kk < BC / 16; kk++) {
        if (kv0 + kk * 16 < warp_kv_end) {
          uint32_t pa[MT][4];
#pragma unroll
          for (int mt = 0; mt < MT; mt++) {
            pa[mt][0] = mma::pack_bf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
            pa[mt][1] = mma::pack_bf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
            pa[mt][2] = mma::pack_bf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
            pa[mt][3] = mma::pack_bf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
          }
#pragma unroll
          for (int dp = 0; dp < D / 16; dp++) {
            uint32_t vf[4];
            mma::ldmatrix_x4_trans(vf, mma::smem_u32(Vt + (kk * 16 + vc.row) * LD + dp * 16 + vc.col));
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
              mma::mma_bf16(o[mt][2 * dp], pa[mt], vf[0], vf[1]);
              mma::mma_bf16(o[mt][2 * dp + 1], pa[mt], vf[2], vf[3]);
            }
          }
        }
      }
    }
    __syncthreads();  // everyone is done with this buffer before the next prefetch overwrites it
  }
  mma::cp_async_wait<0>();

  // Normalise, write O (bf16) and the natural-log lse.
  const Head out(p, b, h, D);  // again for the epilogue: taking hd's costs the w4 shape two registers (ptxas)
  const int64_t obase = out.o;
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int r = 0; r < 2; r++) {
      float l = l_run[mt][r];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      int row = row_of(mt, r);
      if (!warp_active || row >= p.Tq) continue;
      float f = l > 0.f ? (p.dropout ? p.inv_keep : 1.f) / l : 0.f;
      bf16* dst = p.out + obase + int64_t(row) * out.ors + 2 * t4;
#pragma unroll
      for (int dt = 0; dt < DT; dt++)
        *reinterpret_cast<__nv_bfloat162*>(dst + dt * 8) =
            __floats2bfloat162_rn(o[mt][dt][2 * r] * f, o[mt][dt][2 * r + 1] * f);
      if (t4 == 0)
        p.lse[out.stat + row] = l > 0.f ? (m_run[mt][r] + log2f(l)) * kLn2 : -INFINITY;
    }
}

// The forward variants (OWLET_ATTN_FWD, chosen in attention.cu). ptxas (CUDA 13, sm_90) on each, registers per
// thread / spills, and what that leaves per SM (65536 registers, 227 KB shared memory):
//   w4       4 warps × 16 rows, 64-key tiles, Q in registers (the only shape until 2026-11-26, session 5): D64 164 regs, 45 KB
//            (3 blocks = 12 warps per SM); D128 254 regs, 85 KB (2 blocks = 8 warps per SM); no spills.
//   w8       8 warps × 16 rows (BR = 128), 64-key tiles, Q in registers: D64 168 regs, 54 KB; D128 254 regs,
//            102 KB; no spills; 1 block = 8 warps per SM, but each K/V tile now serves 128 queries.
//   w8s      8 warps × 16 rows, Q re-read from shared memory, capped at 128 registers (2 blocks per SM = 16 warps):
//            D64 64-key tiles, 54 KB; D128 32-key tiles, 68 KB; 128 regs, no spills.
//   m2       4 warps × 32 rows (BR = 128), Q re-read from shared memory: D64 64-key tiles, 54 KB; D128 32-key
//            tiles, 68 KB; 254 regs, no spills; 2 blocks = 8 warps per SM, each K/V fragment feeds two mma.
//   w4s      w4's 4 warps × 16 rows (BR = 64), Q re-read from shared memory, capped at 128 registers (4 blocks
//            per SM = 16 warps): D64 64-key tiles, 45 KB; D128 32-key tiles, 51 KB; 128 regs, no spills. For short
//            query sequences (the abstractor's 64), where the 128-row shapes leave half of each block idle.
// (Measured caps that spill and were therefore left out: D128 8 warps with Q in registers at 128 regs, 984 bytes;
// D128 4 warps × 32 rows with Q in registers, 104 bytes; D64 4 warps × 32 rows with Q in registers, 12 bytes; D64
// 4 warps × 16 rows with Q in registers at 128 regs, 48 bytes.)
template <int D> using FwdW4 = FwdTile<D, 4, 1, 64, true>;
template <int D> using FwdW8 = FwdTile<D, 8, 1, 64, true>;
template <int D> using FwdW8s = FwdTile<D, 8, 1, D == 64 ? 64 : 32, false, 2>;
template <int D> using FwdM2 = FwdTile<D, 4, 2, D == 64 ? 64 : 32, false>;
template <int D> using FwdW4s = FwdTile<D, 4, 1, D == 64 ? 64 : 32, false, 4>;

// ------------------------------------------------------------------------------------------------------ backward

// BR queries per step: 64 for D = 64 (K and V fragments then also live in registers), 32 for D = 128 (to keep the
// dK/dV accumulators, 128 fp32 registers per thread, clear of spills). NW warps per block own 16 keys each
// (BC = 16·NW keys per block): 8 or 4 (OWLET_ATTN_BWD_WARPS). ptxas (CUDA 13, sm_90): D64 NW4 239 registers,
// D128 NW8 243, no spills. D128 with BR = 64 and 8 warps (OWLET_ATTN_BWD=br64: each K/V fragment load and each
// barrier serve twice the queries, the dQ pieces are 16 × 64) uses 255 registers and spills 92 bytes: built only to
// measure whether that pays. Left out because they spill: D128 BR = 64 with 4 warps (36 bytes), and for D64 any cap
// that would fit a third block per SM (168 registers: 36–408 bytes) or 8 warps at 128 registers (600 bytes).
template <int D> constexpr int bwd_default_br() { return D == 64 ? 64 : 32; }

template <int D, int NW, int BR = bwd_default_br<D>()>
constexpr int bwd_smem_bytes() {
  constexpr int BC = 16 * NW, LD = D + 8;
  return (2 * BC * LD + 4 * BR * LD) * 2 + BC * (BR + 8) * 2 + 4 * BR * 4;
}

template <int D, int NW, int BR = bwd_default_br<D>()>
__global__ void __launch_bounds__(NW * 32) attention_bwd_kernel(Params p) {
  constexpr int BC = 16 * NW, THREADS = NW * 32, LD = D + 8, LDS = BR + 8, KD = D / 16, NT = BR / 8, DT = D / 8;
  constexpr bool KV_REGS = D == 64;
  OWLET_DYNAMIC_SMEM(smem);
  bf16* sK = reinterpret_cast<bf16*>(smem);  // [BC][LD]
  bf16* sV = sK + BC * LD;                   // [BC][LD]
  bf16* sQ = sV + BC * LD;                   // [2][BR][LD]
  bf16* sO = sQ + 2 * BR * LD;               // [2][BR][LD]  (dO)
  bf16* sS = sO + 2 * BR * LD;               // [BC][LDS]    (dSᵀ, key-major)
  float* sL = reinterpret_cast<float*>(sS + BC * LDS);  // [2][BR] lse
  float* sD = sL + 2 * BR;                               // [2][BR] Δ

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int b = blockIdx.z, h = blockIdx.y, j0 = blockIdx.x * BC;  // launch order (Params::sections)
  const Head hd(p, b, h, D);
  const int64_t rs = hd.rs, ors = hd.ors;
  const bf16 *qb = p.q + hd.q, *ob = p.dout + hd.o, *kb = p.k + hd.kv, *vb = p.v + hd.kv;
  const float *lse_b = p.lse + hd.stat, *del_b = p.delta + hd.stat;
  const int shift = p.Tk - p.Tq;
  const int n_qt = (p.Tq + BR - 1) / BR;
  // The first query that can see key j0 (causal: i >= j0 − shift).
  const int q_first = p.causal ? max(0, j0 - shift) : 0;
  const int qt0 = q_first / BR;
  const int key_a = j0 + warp * 16 + g, key_b = key_a + 8;  // the two keys this thread holds

  float dk[DT][4], dv[DT][4];
#pragma unroll
  for (int i = 0; i < DT; i++)
#pragma unroll
    for (int e = 0; e < 4; e++) dk[i][e] = dv[i][e] = 0.f;

  auto load_q_tile = [&](int qt, int buf) {
    int i0 = qt * BR;
    load_rows<BR, D, LD, THREADS>(sQ + buf * BR * LD, qb, rs, i0, p.Tq, tid);
    load_rows<BR, D, LD, THREADS>(sO + buf * BR * LD, ob, ors, i0, p.Tq, tid);
    for (int i = tid; i < BR; i += THREADS) {
      bool valid = i0 + i < p.Tq;
      mma::cp_async4(mma::smem_u32(sL + buf * BR + i), lse_b + (valid ? i0 + i : 0), valid);
      mma::cp_async4(mma::smem_u32(sD + buf * BR + i), del_b + (valid ? i0 + i : 0), valid);
    }
  };

  if (qt0 < n_qt) {
    load_rows<BC, D, LD, THREADS>(sK, kb, rs, j0, p.Tk, tid);
    load_rows<BC, D, LD, THREADS>(sV, vb, rs, j0, p.Tk, tid);
    load_q_tile(qt0, 0);
  }
  mma::cp_async_commit();

  uint32_t kf[KV_REGS ? KD : 1][4], vf[KV_REGS ? KD : 1][4];
  const mma::RowCol arc = mma::a_rowmajor(lane), bnk = mma::b_nk(lane), bkn = mma::b_kn(lane), akm = mma::a_km(lane);

  for (int qt = qt0; qt < n_qt; qt++) {
    const int buf = (qt - qt0) & 1, i0 = qt * BR;
    if (qt + 1 < n_qt) load_q_tile(qt + 1, buf ^ 1);
    mma::cp_async_commit();
    mma::cp_async_wait<1>();
    __syncthreads();
    if (KV_REGS && qt == qt0) {
#pragma unroll
      for (int kd = 0; kd < (KV_REGS ? KD : 1); kd++) {
        mma::ldmatrix_x4(kf[kd], mma::smem_u32(sK + (warp * 16 + arc.row) * LD + kd * 16 + arc.col));
        mma::ldmatrix_x4(vf[kd], mma::smem_u32(sV + (warp * 16 + arc.row) * LD + kd * 16 + arc.col));
      }
    }
    const bf16* Qt = sQ + buf * BR * LD;
    const bf16* Ot = sO + buf * BR * LD;
    const float* Lt = sL + buf * BR;
    const float* Dt = sD + buf * BR;

    // Sᵀ = K Qᵀ (16 keys × BR queries) and dPᵀ = V dOᵀ.
    float st[NT][4], dpt[NT][4];
#pragma unroll
    for (int i = 0; i < NT; i++)
#pragma unroll
      for (int e = 0; e < 4; e++) st[i][e] = dpt[i][e] = 0.f;
#pragma unroll
    for (int kd = 0; kd < KD; kd++) {
      uint32_t ka[4], va[4];
      if constexpr (KV_REGS) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          ka[e] = kf[KV_REGS ? kd : 0][e];
          va[e] = vf[KV_REGS ? kd : 0][e];
        }
      } else {
        mma::ldmatrix_x4(ka, mma::smem_u32(sK + (warp * 16 + arc.row) * LD + kd * 16 + arc.col));
        mma::ldmatrix_x4(va, mma::smem_u32(sV + (warp * 16 + arc.row) * LD + kd * 16 + arc.col));
      }
#pragma unroll
      for (int nb = 0; nb < NT / 2; nb++) {
        uint32_t qf[4], of[4];
        mma::ldmatrix_x4(qf, mma::smem_u32(Qt + (nb * 16 + bnk.row) * LD + kd * 16 + bnk.col));
        mma::ldmatrix_x4(of, mma::smem_u32(Ot + (nb * 16 + bnk.row) * LD + kd * 16 + bnk.col));
        mma::mma_bf16(st[2 * nb], ka, qf[0], qf[1]);
        mma::mma_bf16(st[2 * nb + 1], ka, qf[2], qf[3]);
        mma::mma_bf16(dpt[2 * nb], va, of[0], of[1]);
        mma::mma_bf16(dpt[2 * nb + 1], va, of[2], of[3]);
      }
    }

    // Pᵀ = exp(S·scale − lse) with masks; dropout; dSᵀ = Pᵀ ⊙ (dPᵀ·mask/(1−p) − Δ). st becomes Pᵀ (dropped, for
    // dV), dpt becomes dSᵀ.
    const bool need_mask = p.key_mask != nullptr || j0 + BC > p.Tk || i0 + BR > p.Tq ||
                           (p.causal && j0 + warp * 16 + 15 > i0 + shift);
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        int il = nt * 8 + 2 * t4 + (e & 1), i = i0 + il, j = (e < 2) ? key_a : key_b;
        float lse2 = Lt[il] * kLog2e;
        float pe = mma::exp2_ftz(fmaf(st[nt][e], p.scale_log2, -lse2));
        if (need_mask && !(i < p.Tq && key_visible(p, b, i, j))) pe = 0.f;
        float dpe = dpt[nt][e];
        float pd = pe;
        if (p.dropout) {
          bool keep = drop_keep(p, b, h, i, j);
          pd = keep ? pe * p.inv_keep : 0.f;
          dpe = keep ? dpe * p.inv_keep : 0.f;
        }
        st[nt][e] = pd;
        dpt[nt][e] = pe * (dpe - Dt[il]);
      }

    // dV += Pᵀ dO and dK += dSᵀ Q (A from registers, B = dO / Q stored [query][d] = [k][n]).
#pragma unroll
    for (int kk = 0; kk < BR / 16; kk++) {
      uint32_t pa[4] = {mma::pack_bf16(st[2 * kk][0], st[2 * kk][1]), mma::pack_bf16(st[2 * kk][2], st[2 * kk][3]),
                        mma::pack_bf16(st[2 * kk + 1][0], st[2 * kk + 1][1]),
                        mma::pack_bf16(st[2 * kk + 1][2], st[2 * kk + 1][3])};
      uint32_t da[4] = {mma::pack_bf16(dpt[2 * kk][0], dpt[2 * kk][1]), mma::pack_bf16(dpt[2 * kk][2], dpt[2 * kk][3]),
                        mma::pack_bf16(dpt[2 * kk + 1][0], dpt[2 * kk + 1][1]),
                        mma::pack_bf16(dpt[2 * kk + 1][2], dpt[2 * kk + 1][3])};
      // dSᵀ to shared memory for dQ: this thread's four elements of each 16×8 half, as bf16 pairs.
      bf16* srow_a = sS + (warp * 16 + g) * LDS + kk * 16 + 2 * t4;
      bf16* srow_b = srow_a + 8 * LDS;
      *reinterpret_cast<uint32_t*>(srow_a) = da[0];
      *reinterpret_cast<uint32_t*>(srow_b) = da[1];
      *reinterpret_cast<uint32_t*>(srow_a + 8) = da[2];
      *reinterpret_cast<uint32_t*>(srow_b + 8) = da[3];
#pragma unroll
      for (int dp = 0; dp < D / 16; dp++) {
        uint32_t of[4], qf[4];
        mma::ldmatrix_x4_trans(of, mma::smem_u32(Ot + (kk * 16 + bkn.row) * LD + dp * 16 + bkn.col));
        mma::ldmatrix_x4_trans(qf, mma::smem_u32(Qt + (kk * 16 + bkn.row) * LD + dp * 16 + bkn.col));
        mma::mma_bf16(dv[2 * dp], pa, of[0], of[1]);
        mma::mma_bf16(dv[2 * dp + 1], pa, of[2], of[3]);
        mma::mma_bf16(dk[2 * dp], da, qf[0], qf[1]);
        mma::mma_bf16(dk[2 * dp + 1], da, qf[2], qf[3]);
      }
    }
    __syncthreads();  // dSᵀ complete

    // dQ[i][d] += scale · Σ_j dS[i][j] K[j][d] for this tile: warps split BR rows × D columns into 16 × 64 pieces.
    {
      constexpr int WR = BR / 16, WC = NW / WR, DC = D / WC;
      static_assert(WR * WC == NW && DC % 16 == 0, "the dQ pieces cover the tile once");
      const int mrow = (warp % WR) * 16, d0 = (warp / WR) * DC;
      float acc[DC / 8][4];
#pragma unroll
      for (int i = 0; i < DC / 8; i++) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < BC / 16; kk++) {
        uint32_t a[4];
        mma::ldmatrix_x4_trans(a, mma::smem_u32(sS + (kk * 16 + akm.row) * LDS + mrow + akm.col));
#pragma unroll
        for (int dp = 0; dp < DC / 16; dp++) {
          uint32_t kf2[4];
          mma::ldmatrix_x4_trans(kf2, mma::smem_u32(sK + (kk * 16 + bkn.row) * LD + d0 + dp * 16 + bkn.col));
          mma::mma_bf16(acc[2 * dp], a, kf2[0], kf2[1]);
          mma::mma_bf16(acc[2 * dp + 1], a, kf2[2], kf2[3]);
        }
      }
#pragma unroll
      for (int r = 0; r < 2; r++) {
        int i = i0 + mrow + g + 8 * r;
        if (i >= p.Tq) continue;
        float* dst = p.dq_acc + ((int64_t(b) * p.Tq + i) * p.H + h) * D + d0 + 2 * t4;
        // Two adjacent columns per thread: one 8-byte vector atomic (sm_90) instead of two.
#pragma unroll
        for (int dt = 0; dt < DC / 8; dt++)
          atomic_add2(dst + dt * 8, acc[dt][2 * r] * p.scale, acc[dt][2 * r + 1] * p.scale);
      }
    }
    // No barrier needed here: Q/dO of this buffer were last read before the dSᵀ barrier above (the next prefetch may
    // overwrite them), and the next writes of sS come after the next iteration's top barrier.
  }
  mma::cp_async_wait<0>();

  // dK (× scale) and dV for this warp's keys; keys nobody sees get zeros.
#pragma unroll
  for (int r = 0; r < 2; r++) {
    int j = r ? key_b : key_a;
    if (j >= p.Tk) continue;
    const Head hg(p, b, h, D);  // again for the epilogue, as the forward's: hd's gkv cost D128 NW4 12 registers
    const int64_t off = hg.gkv + int64_t(j) * hg.grs + 2 * t4;
#pragma unroll
    for (int dt = 0; dt < DT; dt++) {
      *reinterpret_cast<__nv_bfloat162*>(p.dk + off + dt * 8) =
          __floats2bfloat162_rn(dk[dt][2 * r] * p.scale, dk[dt][2 * r + 1] * p.scale);
      *reinterpret_cast<__nv_bfloat162*>(p.dv + off + dt * 8) = __floats2bfloat162_rn(dv[dt][2 * r], dv[dt][2 * r + 1]);
    }
  }
}

// ------------------------------------------------------------------------------------------- the dQ conversion

// dQ (bf16) from the fp32 accumulator, into gradients with Params' strides (the packed [B, T, H, 3, D] gradient: a
// contiguous dq takes the plain conversion of tensor.cu). One thread per 8 head dims (two 16-byte loads, one 16-byte
// store: the strides are multiples of 8 elements), thread c of (B·Tq·H·D/8): c = ((b·Tq + i)·H + h)·D/8 + chunk.
constexpr int kDqStoreThreads = 256;
template <int D>
__global__ void __launch_bounds__(kDqStoreThreads) dq_store_kernel(Params p) {
  constexpr int C = D / 8;
  const int64_t c = int64_t(blockIdx.x) * kDqStoreThreads + threadIdx.x, row = c / C;  // row = (b·Tq + i)·H + h
  if (row >= int64_t(p.B) * p.Tq * p.H) return;
  const int h = int(row % p.H), i = int((row / p.H) % p.Tq), b = int(row / (int64_t(p.H) * p.Tq)), d0 = int(c % C) * 8;
  const Head hd(p, b, h, D);
  const float* src = p.dq_acc + hd.o + int64_t(i) * hd.ors + d0;
  float x[8], y[4];
  vec::load(src, y);
#pragma unroll
  for (int e = 0; e < 4; e++) x[e] = y[e];
  vec::load(src + 4, y);
#pragma unroll
  for (int e = 0; e < 4; e++) x[4 + e] = y[e];
  vec::store(p.dq + hd.gq + int64_t(i) * hd.grs + d0, x);
}

}  // namespace owlet::cuda::flash
