// LoRA linear with a frozen base weight: y = x Wᵀ + s · (drop(x) Aᵀ) Bᵀ, forward and backward, on x viewed as
// [M, K]. The dropout mask is never stored: hash_u01(seed, flat index of x) regenerates it (the CUDA backend draws
// the same mask from the same header). No dW, ever: the base weight is only read.
//
// The products go through sgemm (OpenBLAS's thin products of N or K = r included: faster than row loops here at
// every shape tried). Under input dropout, the mask is hashed in row passes vectorised for AVX2/AVX-512 (the hash's
// 64-bit multiplies are one instruction on AVX-512), which also do the work around it: the forward's drop(x) Aᵀ and
// its rank-r update of y in one pass over x; in the backward, drop(x) for A's gradient and dx's masked low-rank part
// in one pass over x. Hashed element by element with the baseline ISA, with a masked copy of x, a byte mask and an
// [M, K] product to mask around it, LoRA under dropout at the demo's stage-2 shapes (r 8, K and N 128 or 352, p 0.05)
// cost 2.35–2.63× the frozen linear, forward plus backward; 1.28–1.72× this way (bench/lora_cpu.ts, one thread,
// bench/results/lora_cpu_2026-11-27.md).
#include <cblas.h>

#include <cstring>
#include <vector>

#include "../core/hash_u01.h"
#include "../core/kernels.h"
#include "vector_clones.h"

namespace owlet::kern {

namespace {

constexpr int64_t kParallelMin = 1 << 14;  // elements below which a pass stays on one thread

// Row-major C = alpha · op(A) op(B) + beta · C with the leading dimensions of contiguous operands.
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, const float* B, float beta,
          float* C) {
  int64_t lda = ta ? M : K, ldb = tb ? K : N;
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(M), int(N), int(K),
              alpha, A, int(lda), B, int(ldb), beta, C, int(N));
}

struct Drop {
  bool on = false;
  uint64_t key = 0;
  float p = 0, inv_keep = 1;  // x / (1 - p) where kept: what torch.nn.Dropout computes, with our mask
  Drop(float prob, uint64_t seed) {
    if (prob <= 0.f) return;
    on = true;
    key = hash_u01_key(seed);
    p = prob;
    inv_keep = float(1.0 / (1.0 - double(prob)));
  }
};

// out[k] = drop(x)[k] for the K elements of x starting at flat index `first`; with `kept`, also 1 where the mask
// keeps element k and 0 where it drops it (drop(x) alone cannot say: a kept element of x may be 0).
OWLET_VECTOR_CLONES void dropped_row(const float* x, uint64_t first, int64_t K, const Drop& d, float* out, float* kept) {
  const uint64_t key = d.key;
  const float p = d.p, inv = d.inv_keep;
  if (kept) {
#pragma omp simd
    for (int64_t k = 0; k < K; k++) {
      const bool keep = hash_u01_at(key, first + uint64_t(k)) >= p;
      out[k] = keep ? x[k] * inv : 0.f;
      kept[k] = keep ? 1.f : 0.f;
    }
  } else {
#pragma omp simd
    for (int64_t k = 0; k < K; k++) out[k] = hash_u01_at(key, first + uint64_t(k)) >= p ? x[k] * inv : 0.f;
  }
}

// The low-rank row operations, for a rank R known at compile time (4, 8, 16) or at run time (R = 0: r read from
// the argument). With R known, the long row is walked in blocks of kLanes elements (one vector: a register on
// AVX-512, two on AVX2) whose R partial sums stay in registers, each element loaded once. The sums' order is fixed by
// the blocks, not by the vector width the loader picked (and -ffp-contract=off keeps products and sums separately
// rounded), so every ISA gives the same bits.
constexpr int64_t kLanes = 16;
// (GCC notes that a 64-byte vector passed by value changes the ABI where AVX-512 is off: every function taking or
// returning one is inlined, so no call ever passes one)
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));

__attribute__((always_inline)) inline Vec load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
__attribute__((always_inline)) inline void store(float* p, Vec v) { std::memcpy(p, &v, sizeof v); }
__attribute__((always_inline)) inline Vec splat(float x) { return Vec{} + x; }

// The sum of v's lanes by halving: lanes l and l + 8, then l and l + 4, … (a fixed order, whatever the ISA; written
// with subscripts, which every GCC with vector extensions takes, rather than GCC 12's __builtin_shufflevector).
__attribute__((always_inline)) inline float lane_sum(Vec v) {
  float h[8], q[4];
  for (int l = 0; l < 8; l++) h[l] = v[l] + v[l + 8];
  for (int l = 0; l < 4; l++) q[l] = h[l] + h[l + 4];
  return (q[0] + q[2]) + (q[1] + q[3]);
}

template <int R>
struct LowRank {
  // out[j] = Σ_k v[k] · rows[j][k] for the r rows (length n) of `rows`: lane l sums the elements k ≡ l (mod kLanes)
  // of the whole blocks, then the lanes are added in order, then the tail.
  OWLET_VECTOR_CLONES static void dots(const float* v, const float* rows, int64_t r, int64_t n, float* out) {
    if constexpr (R > 0) {
      Vec acc[R];
      for (int j = 0; j < R; j++) acc[j] = Vec{};
      int64_t k = 0;
      for (; k + kLanes <= n; k += kLanes) {
        const Vec x = load(v + k);
        for (int j = 0; j < R; j++) acc[j] += x * load(rows + j * n + k);
      }
      for (int j = 0; j < R; j++) {
        float sum = lane_sum(acc[j]);
        for (int64_t t = k; t < n; t++) sum += v[t] * rows[j * n + t];
        out[j] = sum;
      }
    } else {
      for (int64_t j = 0; j < r; j++) {
        float sum = 0.f;
        for (int64_t k = 0; k < n; k++) sum += v[k] * rows[j * n + k];
        out[j] = sum;
      }
    }
  }

  // acc[k] += scale · Σ_j c[j] · rows[j][k] (the sum over j in order), where kept[k] != 0 (every k when kept is null).
  OWLET_VECTOR_CLONES static void add_combination(const float* c, const float* rows, int64_t r, int64_t n, float scale,
                                                  const float* kept, float* acc) {
    const int64_t rr = R > 0 ? R : r;
    int64_t k = 0;
    if constexpr (R > 0) {
      Vec cs[R];
      for (int j = 0; j < R; j++) cs[j] = splat(c[j]);
      const Vec sc = splat(scale), zero{};
      for (; k + kLanes <= n; k += kLanes) {
        Vec t{};
        for (int j = 0; j < R; j++) t += cs[j] * load(rows + j * n + k);
        const Vec add = sc * t;
        store(acc + k, load(acc + k) + (kept ? (load(kept + k) != zero ? add : zero) : add));
      }
    }
    for (; k < n; k++) {
      float t = 0.f;
      for (int64_t j = 0; j < rr; j++) t += c[j] * rows[j * n + k];
      acc[k] += !kept || kept[k] != 0.f ? scale * t : 0.f;
    }
  }
};

// f(LowRank<R>{}) for the rank r: compiled for 4, 8 and 16, any other r at run time.
template <class F>
void with_rank(int64_t r, F&& f) {
  if (r == 8) f(LowRank<8>{});
  else if (r == 16) f(LowRank<16>{});
  else if (r == 4) f(LowRank<4>{});
  else f(LowRank<0>{});
}

// Bᵀ [r, N] from B [N, r]: the low-rank products read B's columns as contiguous rows.
std::vector<float> transposed(const Tensor& b) {
  const int64_t N = b.dim(0), r = b.dim(1);
  std::vector<float> bt(size_t(N * r));
  const float* pb = b.f32();
  for (int64_t n = 0; n < N; n++)
    for (int64_t j = 0; j < r; j++) bt[size_t(j * N + n)] = pb[n * r + j];
  return bt;
}

}  // namespace

void lora_fwd(const Tensor& x, const Tensor& w, const Tensor& a, const Tensor& b, float s, float dropout_p,
              uint64_t seed, Tensor& y, Tensor& xa) {
  const int64_t M = x.rows(), K = x.cols(), N = w.dim(0), r = a.dim(0);
  if (M == 0) return;
  const float *px = x.f32(), *pa = a.f32();
  float *py = y.f32(), *pxa = xa.f32();
  gemm(false, true, M, N, K, 1.f, px, w.f32(), 0.f, py);  // y = x Wᵀ
  const Drop d(dropout_p, seed);
  if (!d.on) {
    gemm(false, true, M, r, K, 1.f, px, pa, 0.f, pxa);        // xa = x Aᵀ   [M, r]
    gemm(false, true, M, N, r, s, pxa, b.f32(), 1.f, py);     // y += s · xa Bᵀ
    return;
  }
  const std::vector<float> bt = transposed(b);
  with_rank(r, [&](auto lr) {
    using L = decltype(lr);
#pragma omp parallel if (M * (K + N) > kParallelMin)
    {
      std::vector<float> xd(static_cast<size_t>(K));
#pragma omp for schedule(static)
      for (int64_t m = 0; m < M; m++) {
        dropped_row(px + m * K, uint64_t(m * K), K, d, xd.data(), nullptr);
        L::dots(xd.data(), pa, r, K, pxa + m * r);                                  // xa = drop(x) Aᵀ
        L::add_combination(pxa + m * r, bt.data(), r, N, s, nullptr, py + m * N);  // y += s · xa Bᵀ
      }
    }
  });
}

void lora_bwd(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& a, const Tensor& b, const Tensor& xa,
              float s, float dropout_p, uint64_t seed, Tensor* gx, Tensor& ga, Tensor& gb) {
  const int64_t M = x.rows(), K = x.cols(), N = w.dim(0), r = a.dim(0);
  if (M == 0) {  // nothing flowed back: the weight gradients of an empty batch are zero
    std::memset(ga.f32(), 0, ga.nbytes());
    std::memset(gb.f32(), 0, gb.nbytes());
    return;
  }
  const float *pgy = gy.f32(), *px = x.f32(), *pa = a.f32();
  float* pgx = gx ? gx->f32() : nullptr;
  Tensor gyb_t(DType::F32, {M, r}, x.device());
  float* gyb = gyb_t.f32();
  gemm(false, false, M, r, N, 1.f, pgy, b.f32(), 0.f, gyb);           // gyB = gy B          [M, r]
  gemm(true, false, N, r, M, s, pgy, xa.f32(), 0.f, gb.f32());        // gB = s · gyᵀ xa     [N, r]
  const Drop d(dropout_p, seed);
  if (!d.on) {
    gemm(true, false, r, K, M, s, gyb, px, 0.f, ga.f32());            // gA = s · gyBᵀ x     [r, K]
    if (gx) {
      gemm(false, false, M, K, N, 1.f, pgy, w.f32(), 0.f, pgx);       // gx = gy W
      gemm(false, false, M, K, r, s, gyb, pa, 1.f, pgx);              //    + s · gyB A
    }
    return;
  }
  // With dropout: one pass over x writes drop(x) for gA and adds dx's low-rank part through the mask,
  // s / (1 − p) · mask ⊙ (gy B) A, into gx = gy W.
  if (gx) gemm(false, false, M, K, N, 1.f, pgy, w.f32(), 0.f, pgx);   // gx = gy W
  Tensor dropped(DType::F32, x.shape, x.device());
  float* xd = dropped.f32();
  const float coef = float(double(s) / (1.0 - double(dropout_p)));
  with_rank(r, [&](auto lr) {
    using L = decltype(lr);
#pragma omp parallel if (M * K > kParallelMin)
    {
      std::vector<float> kept(gx ? static_cast<size_t>(K) : 0);
#pragma omp for schedule(static)
      for (int64_t m = 0; m < M; m++) {
        dropped_row(px + m * K, uint64_t(m * K), K, d, xd + m * K, gx ? kept.data() : nullptr);
        if (gx) L::add_combination(gyb + m * r, pa, r, K, coef, kept.data(), pgx + m * K);
      }
    }
  });
  gemm(true, false, r, K, M, s, gyb, xd, 0.f, ga.f32());              // gA = s · gyBᵀ drop(x)
}

}  // namespace owlet::kern
