// The few query rows and keys past a sequence's last whole tile, on CUDA cores instead of in a tensor-core tile
// that would be almost all padding. The ViT's 257 tokens are four tiles of 64 and one token: the tiled kernels ran a
// fifth block of 64 rows (forward) and a fifth 64-key block and 64-query tile for it (backward: 25 tile pairs where
// 16 hold all but 513 of the 66,049 scores). With a rest of at most kMax rows (keys), the tiled kernels stop at the
// last whole tile — rows [0, tq_main), keys [0, tk_main) of flash::Params — and these kernels do the rest:
//   fwd_rows_kernel  one block per tail row: each warp takes every 8th chunk of 32 keys (a lane per key for the
//                    scores, a lane per head dims for P·V) with its own online softmax in the log2 domain; the
//                    eight partial results are merged in shared memory into O and the natural-log lse, as the
//                    tiled forward defines them;
//   bwd_kernel       one block per (head, batch), D/8 lanes per row (8 head dims each, one 16-byte load), so a warp
//                    takes 32·8/D rows (keys) at once: (a) the tail keys against every query row: their dK and dV
//                    (summed over the block in shared memory) and their share of each row's dQ; (b) the tail rows
//                    against the tiled keys: those rows' dQ. The tail rows' share of the tiled keys' dK and dV is
//                    added by the tiled backward itself, in registers, before it rounds them.
// Used behind every tensor-core forward (its grid stops at the last whole block of rows) and the Hopper backward at
// D = 64 (the ViT's and the abstractor's shapes; at D = 128 its registers had no room for add_tail_rows, and the
// mma.sync backward — dropout, other GPUs — keeps whole tiles). No dropout: the dispatch (attention.cu) keeps whole
// tiles then, and when OWLET_ATTN_TAIL=0. P and dS stay fp32 here (the tiles round them to bf16 for the tensor
// cores): closer to the reference, not equal to the tiles' rounding.
// ptxas (CUDA 13.0, sm_90a): fwd_rows_kernel 36 / 43 registers (D = 64 / 128); bwd_kernel 128 registers capped for 2
// blocks of 8 warps per SM, 8 bytes spilled. Both read q, k, v (and write dK, dV) with flash::Params' strides: the
// packed [B, T, H, 3, D] layout as well as [B, T, H, D].
#pragma once
#include <cstdint>

#include "attention_flash.cuh"
#include "common.cuh"
#include "mma.cuh"
#include "vec_map.cuh"

namespace owlet::cuda::attn_tail {

constexpr int kMax = 4;  // at most this many rows (keys) past the last whole tile come here
constexpr int kFwdWarps = 8, kBwdThreads = 256;

// The rows (or keys) [0, main) that tiles of `tile` cover when the rest — 1 to kMax — goes to the kernels here;
// `total` itself when there is no rest, too long a rest, or no whole tile.
__host__ __device__ inline int main_extent(int total, int tile) {
  const int rest = total % tile;
  return total >= tile && rest > 0 && rest <= kMax ? total - rest : total;
}

// E consecutive head dims (E = 2 or 4, 4- or 8-byte aligned) of a bf16 row as floats.
template <int E>
__device__ __forceinline__ void load_dims(const bf16* p, float (&v)[E]) {
#pragma unroll
  for (int e = 0; e < E; e++) v[e] = __bfloat162float(p[e]);
}

// Sum over the G lanes (a power of two) of each aligned group of the warp; every lane gets its group's sum.
template <int G>
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
  for (int o = 1; o < G; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
// Sum over the lanes with the same position in each group of G (the same head dims of different rows).
template <int G>
__device__ __forceinline__ float across_groups(float v) {
#pragma unroll
  for (int o = G; o < 32; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// ------------------------------------------------------------------------------------------------------- forward

template <int D>
constexpr size_t fwd_smem_bytes() {
  return size_t(D + kFwdWarps * (D + 2)) * sizeof(float);  // q, then each warp's o[D], m, l
}

// Rows [row0, Tq) of every (head, batch): grid (Tq − row0, H, B), 32·kFwdWarps threads, fwd_smem_bytes<D>().
template <int D>
__global__ void __launch_bounds__(32 * kFwdWarps) fwd_rows_kernel(flash::Params p, int row0) {
  constexpr int E = D / 32;
  OWLET_DYNAMIC_SMEM(smem);
  float* qs = reinterpret_cast<float*>(smem);  // the row's q, read by every lane
  float* part_o = qs + D;                      // [kFwdWarps][D]
  float* part_ml = part_o + kFwdWarps * D;     // [kFwdWarps][2]: m, l
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, i = row0 + int(blockIdx.x), h = blockIdx.y,
            b = blockIdx.z;
  const flash::Head hd(p, b, h, D);
  const bf16* qrow = p.q + hd.q + int64_t(i) * hd.rs;
  const bf16 *kb = p.k + hd.kv, *vb = p.v + hd.kv + lane * E;
  const int64_t rs = hd.rs;
  for (int d = tid; d < D; d += 32 * kFwdWarps) qs[d] = __bfloat162float(qrow[d]);
  __syncthreads();
  float m = -INFINITY, l = 0.f, o[E];
#pragma unroll
  for (int e = 0; e < E; e++) o[e] = 0.f;
  for (int j0 = 32 * warp; j0 < p.Tk; j0 += 32 * kFwdWarps) {
    const int j = j0 + lane;
    float s = -INFINITY;  // scaled to the log2 domain, as the tiled forward's running max
    if (flash::key_visible(p, b, i, j)) {
      const bf16* kr = kb + int64_t(j) * rs;
      float acc = 0.f;
#pragma unroll
      for (int d = 0; d < D; d += 8) {
        float kv[8];
        vec::load(kr + d, kv);
#pragma unroll
        for (int e = 0; e < 8; e++) acc = fmaf(qs[d + e], kv[e], acc);
      }
      s = acc * p.scale_log2;
    }
    const float m_new = fmaxf(m, warp_max(s));
    const float m_use = m_new == -INFINITY ? 0.f : m_new;  // nothing visible yet: everything stays 0
    const float pj = mma::exp2_ftz(s - m_use), corr = mma::exp2_ftz(m - m_use);
    l = l * corr + warp_sum(pj);
    m = m_new;
#pragma unroll
    for (int e = 0; e < E; e++) o[e] *= corr;
    // P·V, a lane per E head dims; unrolled so the V rows' loads are in flight together (a key past Tk has pj = 0
    // and reads row Tk − 1 instead).
#pragma unroll 8
    for (int t = 0; t < 32; t++) {
      const float pt = __shfl_sync(0xffffffffu, pj, t);
      float vv[E];
      load_dims<E>(vb + int64_t(min(j0 + t, p.Tk - 1)) * rs, vv);
#pragma unroll
      for (int e = 0; e < E; e++) o[e] = fmaf(pt, vv[e], o[e]);
    }
  }
#pragma unroll
  for (int e = 0; e < E; e++) part_o[warp * D + lane * E + e] = o[e];
  if (lane == 0) part_ml[2 * warp] = m, part_ml[2 * warp + 1] = l;
  __syncthreads();
  if (warp != 0) return;
  // Merge the warps' softmaxes: each partial rescaled from its own max to the largest.
  float mx = -INFINITY;
  for (int w = 0; w < kFwdWarps; w++) mx = fmaxf(mx, part_ml[2 * w]);
  const float m_use = mx == -INFINITY ? 0.f : mx;
  float lt = 0.f, ot[E];
#pragma unroll
  for (int e = 0; e < E; e++) ot[e] = 0.f;
  for (int w = 0; w < kFwdWarps; w++) {
    const float c = mma::exp2_ftz(part_ml[2 * w] - m_use);
    lt = fmaf(part_ml[2 * w + 1], c, lt);
#pragma unroll
    for (int e = 0; e < E; e++) ot[e] = fmaf(part_o[w * D + lane * E + e], c, ot[e]);
  }
  const float f = lt > 0.f ? 1.f / lt : 0.f;
  const flash::Head ho(p, b, h, D);  // again for the epilogue: hd's offsets kept alive over the loop cost registers
  bf16* dst = p.out + ho.o + int64_t(i) * ho.ors + lane * E;
#pragma unroll
  for (int e = 0; e < E; e += 2)
    *reinterpret_cast<__nv_bfloat162*>(dst + e) = __floats2bfloat162_rn(ot[e] * f, ot[e + 1] * f);
  if (lane == 0) p.lse[ho.stat + i] = lt > 0.f ? (mx + log2f(lt)) * flash::kLn2 : -INFINITY;
}

// ------------------------------------------------------------------------------------------------------ backward

// P and dS of query i and key j from the two dot products (each already summed over the head dims): P = 0 where
// the key is not visible (then lse may be -inf).
struct ProbGrad {
  float p, ds;
};
__device__ __forceinline__ ProbGrad prob_grad(const flash::Params& p, int b, int i, int j, float s, float dp,
                                              float lse_log2, float delta) {
  const float pr = flash::key_visible(p, b, i, j) ? mma::exp2_ftz(fmaf(s, p.scale_log2, -lse_log2)) : 0.f;
  return {pr, pr * (dp - delta)};
}

// The same from one lane's 8 head dims of q, dO, K and V, the dot products summed over the G lanes of its row; P = dS
// = 0 where `real` is false (a lane past the last row or key, which still has to take part in the sums).
template <int G>
__device__ __forceinline__ ProbGrad lane_prob_grad(const flash::Params& p, int b, int i, int j, const float* q,
                                                   const float* o, const float* k, const float* v, float lse_log2,
                                                   float delta, bool real) {
  float s = 0.f, dp = 0.f;
#pragma unroll
  for (int e = 0; e < 8; e++) s = fmaf(q[e], k[e], s), dp = fmaf(o[e], v[e], dp);
  s = group_sum<G>(s);
  dp = group_sum<G>(dp);
  return real ? prob_grad(p, b, i, j, s, dp, lse_log2, delta) : ProbGrad{0.f, 0.f};
}

// Walks items [0, n) — query rows or keys — with the lanes of a warp: row slot `slot` of warp `warp` takes item
// warp·S + slot, then every STEP-th, every lane as many times as the others (their group sums need each other).
// body(item, real, a, b) gets the lane's 8 head dims of the item's two rows a_at(item), b_at(item) (q and dO, or K
// and V), loaded one item ahead; a lane past n works on item n − 1 with real = false.
template <int S, int STEP, class AAt, class BAt, class Body>
__device__ __forceinline__ void sweep(int warp, int slot, int n, AAt a_at, BAt b_at, Body body) {
  float an[8], bn[8];
  vec::load(a_at(min(warp * S + slot, n - 1)), an);
  vec::load(b_at(min(warp * S + slot, n - 1)), bn);
  for (int base = warp * S; base < n; base += STEP) {
    const int i = base + slot;
    float a[8], b[8];
#pragma unroll
    for (int e = 0; e < 8; e++) a[e] = an[e], b[e] = bn[e];
    vec::load(a_at(min(i + STEP, n - 1)), an);
    vec::load(b_at(min(i + STEP, n - 1)), bn);
    body(i, i < n, a, b);
  }
}

// acc[r·D + d0 + e] += x[r][e] summed over the warp's row slots, for r < n (slot 0's lanes add, in shared memory).
template <int G, int D>
__device__ __forceinline__ void add_to_shared(float* acc, const float (&x)[kMax][8], int n, int slot, int d0) {
#pragma unroll
  for (int r = 0; r < kMax; r++) {
    if (r >= n) break;
#pragma unroll
    for (int e = 0; e < 8; e++) {
      const float sum = across_groups<G>(x[r][e]);
      if (slot == 0) atomicAdd(acc + r * D + d0 + e, sum);
    }
  }
}

template <int D>
constexpr size_t bwd_smem_bytes() {
  return size_t(6 * kMax * D) * sizeof(float);
}

// One block of kBwdThreads per (head, batch): grid (H, B). Runs after the tiled backward (whose dQ it adds to, and
// which leaves the tail keys' dK and dV to it). G = D/8 lanes share a row (lane l: head dims 8·(l mod G) ..
// + 8), so a warp holds S = 32/G rows (or keys) at once, slot l/G.
template <int D>
__global__ void __launch_bounds__(kBwdThreads, 2) bwd_kernel(flash::Params p) {
  constexpr int G = D / 8, S = 32 / G, W = kBwdThreads / 32, STEP = W * S;
  OWLET_DYNAMIC_SMEM(smem);
  float* tk = reinterpret_cast<float*>(smem);  // [kMax][D] the tail keys' K, then V
  float* tv = tk + kMax * D;
  float* tq = tv + kMax * D;                   // [kMax][D] the tail rows' q, then dO
  float* to = tq + kMax * D;
  float* acc_a = to + kMax * D;                // [kMax][D] the tail keys' dK; the tail rows' dQ
  float* acc_b = acc_a + kMax * D;             // [kMax][D] the tail keys' dV
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, slot = lane / G, d0 = (lane % G) * 8;
  const int h = blockIdx.x, b = blockIdx.y;
  const flash::Head hd(p, b, h, D);
  const int nk = p.Tk - p.tk_main, nq = p.Tq - p.tq_main;
  // q's and dO's rows are offsets of their own since q may be packed: 32-bit ones within the head (the dispatch
  // keeps whole tiles for a batch entry of 2^32 elements or more: attention.cu tail_allowed), which keeps this
  // kernel's spills where they were with one offset for both (8 bytes; 64-bit offsets: 16).
  auto q_at = [&](int i) { return p.q + hd.q + (uint32_t(i) * uint32_t(hd.rs) + d0); };
  auto o_at = [&](int i) { return p.dout + hd.o + (uint32_t(i) * uint32_t(hd.ors) + d0); };
  auto k_at = [&](int j) { return p.k + hd.kv + int64_t(j) * hd.rs + d0; };
  auto v_at = [&](int j) { return p.v + hd.kv + int64_t(j) * hd.rs + d0; };
  auto dq_at = [&](int i) { return p.dq_acc + hd.o + int64_t(i) * hd.ors + d0; };  // dq_acc: out's layout
  auto add_dq = [&](int i, const float (&x)[8]) {  // scale · x into row i's dQ accumulator, 2-wide atomics
    float* dst = dq_at(i);
#pragma unroll
    for (int e = 0; e < 8; e += 2)
      atomic_add2(dst + e, p.scale * x[e], p.scale * x[e + 1]);
  };
  for (int t = tid; t < kMax * D; t += kBwdThreads) {
    const int r = t / D, d = t % D;
    tk[t] = r < nk ? __bfloat162float(p.k[hd.kv + int64_t(p.tk_main + r) * hd.rs + d]) : 0.f;
    tv[t] = r < nk ? __bfloat162float(p.v[hd.kv + int64_t(p.tk_main + r) * hd.rs + d]) : 0.f;
    tq[t] = r < nq ? __bfloat162float(p.q[hd.q + int64_t(p.tq_main + r) * hd.rs + d]) : 0.f;
    to[t] = r < nq ? __bfloat162float(p.dout[hd.o + int64_t(p.tq_main + r) * hd.ors + d]) : 0.f;
    acc_a[t] = acc_b[t] = 0.f;
  }
  __syncthreads();

  // (a) The tail keys against every query row (a lane past Tq has P = 0).
  if (nk > 0) {
    float dk[kMax][8], dv[kMax][8];
#pragma unroll
    for (int jj = 0; jj < kMax; jj++)
#pragma unroll
      for (int e = 0; e < 8; e++) dk[jj][e] = dv[jj][e] = 0.f;
    sweep<S, STEP>(warp, slot, p.Tq, q_at, o_at, [&](int i, bool real, const float (&qi)[8], const float (&oi)[8]) {
      float dq[8] = {};
      const int ir = min(i, p.Tq - 1);
      const float lse = p.lse[hd.stat + ir] * flash::kLog2e, del = p.delta[hd.stat + ir];
#pragma unroll
      for (int jj = 0; jj < kMax; jj++) {
        if (jj >= nk) break;
        const float* kj = tk + jj * D + d0;
        const ProbGrad g = lane_prob_grad<G>(p, b, i, p.tk_main + jj, qi, oi, kj, tv + jj * D + d0, lse, del, real);
#pragma unroll
        for (int e = 0; e < 8; e++) {
          dv[jj][e] = fmaf(g.p, oi[e], dv[jj][e]);
          dk[jj][e] = fmaf(g.ds, qi[e], dk[jj][e]);
          dq[e] = fmaf(g.ds, kj[e], dq[e]);
        }
      }
      if (real) add_dq(i, dq);
    });
    add_to_shared<G, D>(acc_a, dk, nk, slot, d0);
    add_to_shared<G, D>(acc_b, dv, nk, slot, d0);
  }
  __syncthreads();
  for (int t = tid; t < nk * D; t += kBwdThreads) {
    const int64_t off = hd.gkv + int64_t(p.tk_main + t / D) * hd.grs + t % D;
    p.dk[off] = __float2bfloat16_rn(acc_a[t] * p.scale);
    p.dv[off] = __float2bfloat16_rn(acc_b[t]);
  }
  if (nq == 0) return;  // the same for the whole block
  __syncthreads();      // acc_a is read above before it is cleared below
  for (int t = tid; t < kMax * D; t += kBwdThreads) acc_a[t] = 0.f;
  __syncthreads();

  // (b) The tail rows against the tiled keys [0, tk_main): those rows' dQ (a lane past tk_main has P = 0).
  {
    float dq[kMax][8], lse[kMax], del[kMax];
#pragma unroll
    for (int rr = 0; rr < kMax; rr++) {
#pragma unroll
      for (int e = 0; e < 8; e++) dq[rr][e] = 0.f;
      const int ir = p.tq_main + min(rr, nq - 1);
      lse[rr] = p.lse[hd.stat + ir] * flash::kLog2e;
      del[rr] = p.delta[hd.stat + ir];
    }
    sweep<S, STEP>(warp, slot, p.tk_main, k_at, v_at,
                   [&](int j, bool real, const float (&kj)[8], const float (&vj)[8]) {
#pragma unroll
      for (int rr = 0; rr < kMax; rr++) {
        if (rr >= nq) break;
        const float ds = lane_prob_grad<G>(p, b, p.tq_main + rr, j, tq + rr * D + d0, to + rr * D + d0, kj, vj, lse[rr],
                                           del[rr], real).ds;
#pragma unroll
        for (int e = 0; e < 8; e++) dq[rr][e] = fmaf(ds, kj[e], dq[rr][e]);
      }
    });
    add_to_shared<G, D>(acc_a, dq, nq, slot, d0);
  }
  __syncthreads();
  for (int t = tid; t < nq * D; t += kBwdThreads)
    atomicAdd(p.dq_acc + hd.o + int64_t(p.tq_main + t / D) * hd.ors + t % D, p.scale * acc_a[t]);
}

}  // namespace owlet::cuda::attn_tail
