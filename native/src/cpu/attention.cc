// CPU fused attention, forward and backward (FlashAttention-style recomputation). Work is split into blocks of
// query rows of one (batch, head); a block's scores against the keys it can see are the only score storage
// (kBlockRows × Tk floats per thread), never a whole head's [Tq, Tk] matrix. A block is a few single-threaded
// OpenBLAS GEMMs (2 forward, 5 backward) around vectorised exact-softmax loops; OpenMP spreads blocks over the cores.
// Tensors stay in the [B, T, H, D] layout: one head's rows are D floats apart by H·D, which is just a GEMM leading
// dimension, so nothing is transposed or copied.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "../core/attention_packed.h"
#include "../core/dropout_hash.h"
#include "../core/kernels.h"
#include "vector_clones.h"
#include "vec_math.h"

extern "C" void openblas_set_num_threads(int);
extern "C" int openblas_get_num_threads(void);

namespace owlet::kern {
namespace {

// Query rows per block: GEMMs big enough for BLAS while a block's scores stay in L2. Causal blocks are smaller so
// that less of the diagonal block (computed, then masked) is wasted.
constexpr int64_t kBlockRows = 64;
constexpr int64_t kCausalBlockRows = 32;  // at T 97, 64-row blocks ran ~25% slower; 16 was no faster than 32
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct Geometry {
  int64_t B, Tq, Tk, H, D;
  int64_t ld;      // H·D: the distance between consecutive tokens of one head
  int64_t offset;  // Tk - Tq: causal attention aligns the last query with the last key
  bool causal;
  // Query i sees keys [0, visible(i)).
  int64_t visible(int64_t i) const { return causal ? std::clamp<int64_t>(i + offset + 1, 0, Tk) : Tk; }
  int64_t q_index(int64_t b, int64_t i, int64_t h) const { return ((b * Tq + i) * H + h) * D; }
  int64_t k_index(int64_t b, int64_t j, int64_t h) const { return ((b * Tk + j) * H + h) * D; }
  int64_t block = kBlockRows;  // rows per block (<= kBlockRows)
  int64_t blocks() const { return (Tq + block - 1) / block; }
};

struct DropoutParams {
  bool on = false;
  uint64_t key = 0;
  uint32_t threshold = 0;
  float inv_keep = 1;  // inverted dropout: kept probabilities are scaled by 1/(1-p)
  DropoutParams(float p, uint64_t seed) {
    if (p <= 0) return;
    on = true;
    key = dropout::stream_key(seed);
    threshold = dropout::threshold(p);
    inv_keep = 1.0f / (1.0f - p);
  }
  // factor[j] = inv_keep when element (b, h, i, j) survives, else 0, for j < n.
  void factors(const Geometry& g, int64_t b, int64_t h, int64_t i, int64_t n, float* factor) const;
};

// The hash loop on its own, so that the AVX-512 clone can use 64-bit vector multiplies.
OWLET_VECTOR_CLONES
void dropout_factors(uint64_t key, uint64_t base, uint32_t threshold, float inv_keep, int64_t n, float* factor) {
#pragma omp simd
  for (int64_t j = 0; j < n; j++) factor[j] = dropout::keep(key, base + uint64_t(j), threshold) ? inv_keep : 0.0f;
}

void DropoutParams::factors(const Geometry& g, int64_t b, int64_t h, int64_t i, int64_t n, float* factor) const {
  dropout_factors(key, dropout::attention_index(b, h, i, 0, g.H, g.Tq, g.Tk), threshold, inv_keep, n, factor);
}

// OpenBLAS runs single-threaded inside our parallel region (the blocks are the parallelism); restored afterwards.
class SingleThreadedBlas {
 public:
  SingleThreadedBlas() : saved_(openblas_get_num_threads()) { openblas_set_num_threads(1); }
  ~SingleThreadedBlas() { openblas_set_num_threads(saved_); }

 private:
  int saved_;
};

// Additive key bias per batch: 0 where a key may be attended, -inf where the padding mask hides it.
std::vector<float> key_bias(const Tensor* key_mask, int64_t B, int64_t Tk) {
  std::vector<float> bias(size_t(B * Tk), 0.0f);
  if (key_mask) {
    const int32_t* m = key_mask->i32();
    for (int64_t i = 0; i < B * Tk; i++) bias[size_t(i)] = m[i] ? 0.0f : kNegInf;
  }
  return bias;
}

// e^x for x <= ~0 (scores minus their row maximum or log-sum-exp). Cephes' expf polynomial after a 2^n range
// reduction, ~1 ulp, written so the compiler vectorises it; exactly 0 below -87 (masked keys are -inf).
inline float exp_nonpositive(float x) {
  float xc = std::min(std::max(x, -87.0f), 88.0f);
  float t = xc * 1.44269504088896341f;
  float n = (t + 12582912.0f) - 12582912.0f;  // round to nearest integer (1.5·2^23 trick)
  float r = vmath::exp_reduce(xc, n);
  float r2 = r * r;
  float p = vmath::exp_horner(r);
  p = p * r2 + r + 1.0f;
  int32_t bits = (int32_t(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return x < -87.0f ? 0.0f : p * scale;
}

// Scaled scores row[0, lim) (plus key bias) become softmax probabilities in place; row[lim, n) is zeroed. Returns the
// row's log-sum-exp, or -inf (and an all-zero row) when no key is visible.
OWLET_VECTOR_CLONES
float softmax_row(float* row, int64_t lim, int64_t n, const float* bias) {
  float m = kNegInf;
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < lim; j++) {
    row[j] += bias[j];
    m = std::max(m, row[j]);
  }
  if (!(m > kNegInf)) {
    std::memset(row, 0, size_t(n) * sizeof(float));
    return kNegInf;
  }
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < lim; j++) {
    float e = exp_nonpositive(row[j] - m);
    row[j] = e;
    sum += e;
  }
  float inv = 1.0f / sum;
#pragma omp simd
  for (int64_t j = 0; j < lim; j++) row[j] *= inv;
  if (n > lim) std::memset(row + lim, 0, size_t(n - lim) * sizeof(float));
  return m + std::log(sum);
}

OWLET_VECTOR_CLONES
void scale_row(float* row, const float* factor, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; j++) row[j] *= factor[j];
}

OWLET_VECTOR_CLONES
float dot(const float* a, const float* b, int64_t n) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; j++) s += a[j] * b[j];
  return s;
}

// Backward, one row: p = exp(s + bias - lse); pd = p·f (f the dropout factor, 1 without dropout) is what multiplied
// V; dS = p·(dPd·f - Σ dO⊙O). Writes pd over the scores and dS over dPd.
OWLET_VECTOR_CLONES
void backward_row(float* s_to_pd, float* dp_to_ds, const float* bias, const float* factor, float lse, float delta,
                  int64_t lim) {
  if (factor) {
#pragma omp simd
    for (int64_t j = 0; j < lim; j++) {
      float p = exp_nonpositive(s_to_pd[j] + bias[j] - lse);
      s_to_pd[j] = p * factor[j];
      dp_to_ds[j] = p * (dp_to_ds[j] * factor[j] - delta);
    }
  } else {
#pragma omp simd
    for (int64_t j = 0; j < lim; j++) {
      float p = exp_nonpositive(s_to_pd[j] + bias[j] - lse);
      s_to_pd[j] = p;
      dp_to_ds[j] = p * (dp_to_ds[j] - delta);
    }
  }
}

struct Scratch {
  std::vector<float> scores, grads, factor;
  explicit Scratch(int64_t Tk, bool backward)
      : scores(size_t(kBlockRows * std::max<int64_t>(Tk, 1))),
        grads(backward ? size_t(kBlockRows * std::max<int64_t>(Tk, 1)) : 0),
        factor(size_t(std::max<int64_t>(Tk, 1))) {}
};

// Rows [r0, r0 + nr) of head (b, h): out = dropout(softmax(scale·q kᵀ + bias)) v, lse per row.
void forward_block(const Geometry& g, const float* q, const float* k, const float* v, const float* bias,
                   float scale, const DropoutParams& drop, int64_t b, int64_t h, int64_t r0, int64_t nr, float* out,
                   float* lse, Scratch& w) {
  int64_t ncols = g.visible(r0 + nr - 1);  // keys any row of the block sees (visibility grows with i)
  float* lse_row = lse + (b * g.H + h) * g.Tq + r0;
  float* o = out + g.q_index(b, r0, h);
  if (ncols == 0) {
    for (int64_t r = 0; r < nr; r++) {
      std::memset(o + r * g.ld, 0, size_t(g.D) * sizeof(float));
      lse_row[r] = kNegInf;
    }
    return;
  }
  float* S = w.scores.data();
  const float* kb = k + g.k_index(b, 0, h);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(nr), int(ncols), int(g.D), scale, q + g.q_index(b, r0, h),
              int(g.ld), kb, int(g.ld), 0.0f, S, int(ncols));
  const float* bias_b = bias + b * g.Tk;
  for (int64_t r = 0; r < nr; r++) {
    int64_t i = r0 + r, lim = g.visible(i);
    float* row = S + r * ncols;
    lse_row[r] = softmax_row(row, lim, ncols, bias_b);
    if (drop.on && lse_row[r] > kNegInf) {
      drop.factors(g, b, h, i, lim, w.factor.data());
      scale_row(row, w.factor.data(), lim);
    }
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(nr), int(g.D), int(ncols), 1.0f, S, int(ncols),
              v + g.k_index(b, 0, h), int(g.ld), 0.0f, o, int(g.ld));
}

// Rows [r0, r0 + nr) of head (b, h): writes dq for those rows; adds their share to dk, dv (row stride ldkv).
void backward_block(const Geometry& g, const float* q, const float* k, const float* v, const float* out,
                    const float* lse, const float* gout, const float* bias, float scale, const DropoutParams& drop,
                    int64_t b, int64_t h, int64_t r0, int64_t nr, float* gq, float* dk, float* dv, int64_t ldkv,
                    Scratch& w) {
  int64_t ncols = g.visible(r0 + nr - 1);
  float* dq = gq + g.q_index(b, r0, h);
  if (ncols == 0) {
    for (int64_t r = 0; r < nr; r++) std::memset(dq + r * g.ld, 0, size_t(g.D) * sizeof(float));
    return;
  }
  const float* qb = q + g.q_index(b, r0, h);
  const float* dob = gout + g.q_index(b, r0, h);
  const float* ob = out + g.q_index(b, r0, h);
  const float* kb = k + g.k_index(b, 0, h);
  const float* vb = v + g.k_index(b, 0, h);
  const float* lse_row = lse + (b * g.H + h) * g.Tq + r0;
  const float* bias_b = bias + b * g.Tk;
  float *S = w.scores.data(), *dP = w.grads.data();
  int ld = int(g.ld), D = int(g.D), n = int(ncols), m = int(nr);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, D, scale, qb, ld, kb, ld, 0.0f, S, n);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, D, 1.0f, dob, ld, vb, ld, 0.0f, dP, n);
  for (int64_t r = 0; r < nr; r++) {
    int64_t i = r0 + r, lim = g.visible(i);
    float *srow = S + r * ncols, *dprow = dP + r * ncols;
    float L = lse_row[r];
    if (!(L > kNegInf)) lim = 0;  // no visible key: the row contributes nothing
    float delta = lim ? dot(dob + r * g.ld, ob + r * g.ld, g.D) : 0.0f;
    const float* factor = nullptr;
    if (drop.on && lim) {
      drop.factors(g, b, h, i, lim, w.factor.data());
      factor = w.factor.data();
    }
    backward_row(srow, dprow, bias_b, factor, L, delta, lim);
    if (ncols > lim) {
      std::memset(srow + lim, 0, size_t(ncols - lim) * sizeof(float));
      std::memset(dprow + lim, 0, size_t(ncols - lim) * sizeof(float));
    }
  }
  // dV += Pdᵀ dO; dQ = scale · dS K; dK += scale · dSᵀ Q
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, D, m, 1.0f, S, n, dob, ld, 1.0f, dv, int(ldkv));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, D, n, scale, dP, n, kb, ld, 0.0f, dq, ld);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, D, m, scale, dP, n, qb, ld, 1.0f, dk, int(ldkv));
}

Geometry geometry(const Tensor& q, const Tensor& k, bool causal) {
  Geometry g{q.dim(0), q.dim(1), k.dim(1), q.dim(2), q.dim(3), 0, 0, causal};
  if (causal) g.block = kCausalBlockRows;
  g.ld = g.H * g.D;
  g.offset = g.Tk - g.Tq;
  return g;
}

}  // namespace

void attention_fwd(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* key_mask, bool causal, float scale,
                   float dropout_p, uint64_t seed, Tensor& out, Tensor& lse) {
  Geometry g = geometry(q, k, causal);
  if (g.B * g.H * g.Tq == 0) return;
  float *po = out.f32(), *pl = lse.f32();
  if (g.Tk == 0) {  // nothing to attend to: every row is fully masked
    std::fill(po, po + out.numel(), 0.0f);
    std::fill(pl, pl + lse.numel(), kNegInf);
    return;
  }
  std::vector<float> bias = key_bias(key_mask, g.B, g.Tk);
  DropoutParams drop(dropout_p, seed);
  const float *pq = q.f32(), *pk = k.f32(), *pv = v.f32();
  int64_t nb = g.blocks(), tasks = g.B * g.H * nb;
  int threads = omp_get_max_threads();
  std::vector<Scratch> scratch(size_t(threads), Scratch(g.Tk, false));  // allocated here: bad_alloc stays catchable
  SingleThreadedBlas single;
#pragma omp parallel num_threads(threads)
  {
    Scratch& w = scratch[size_t(omp_get_thread_num())];
#pragma omp for schedule(dynamic)
    for (int64_t t = 0; t < tasks; t++) {
      int64_t bh = t / nb, blk = t % nb, r0 = blk * g.block;
      forward_block(g, pq, pk, pv, bias.data(), scale, drop, bh / g.H, bh % g.H, r0, std::min(g.block, g.Tq - r0),
                    po, pl, w);
    }
  }
}

void attention_bwd(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                   const Tensor& gout, const Tensor* key_mask, bool causal, float scale, float dropout_p, uint64_t seed,
                   Tensor& gq, Tensor& gk, Tensor& gv) {
  Geometry g = geometry(q, k, causal);
  float *pgq = gq.f32(), *pgk = gk.f32(), *pgv = gv.f32();
  if (g.B * g.H * g.Tq == 0 || g.Tk == 0) {  // nothing attends to anything: all gradients are zero
    std::fill(pgq, pgq + gq.numel(), 0.0f);
    std::fill(pgk, pgk + gk.numel(), 0.0f);
    std::fill(pgv, pgv + gv.numel(), 0.0f);
    return;
  }
  std::vector<float> bias = key_bias(key_mask, g.B, g.Tk);
  DropoutParams drop(dropout_p, seed);
  const float *pq = q.f32(), *pk = k.f32(), *pv = v.f32(), *po = out.f32(), *pl = lse.f32(), *pg = gout.f32();

  // dK/dV of a head sum over its query blocks. With enough heads to go round, one task owns a whole head and adds
  // into gk/gv directly; otherwise a head's blocks are split into `parts` tasks with private [Tk, D] partial sums,
  // added up afterwards. Either way no two threads write the same memory.
  int threads = omp_get_max_threads();
  int64_t nb = g.blocks(), heads = g.B * g.H;
  int64_t parts = heads >= threads ? 1 : std::min(nb, (threads + heads - 1) / heads);
  std::vector<float> partial(parts > 1 ? size_t(heads * parts * 2 * g.Tk * g.D) : 0, 0.0f);
  int64_t tasks = heads * parts;
  std::vector<Scratch> scratch(size_t(threads), Scratch(g.Tk, true));
  {
    SingleThreadedBlas single;
#pragma omp parallel num_threads(threads)
    {
      Scratch& w = scratch[size_t(omp_get_thread_num())];
#pragma omp for schedule(dynamic)
      for (int64_t t = 0; t < tasks; t++) {
        int64_t bh = t / parts, part = t % parts, b = bh / g.H, h = bh % g.H;
        float *dk, *dv;
        int64_t ldkv;
        if (parts == 1) {  // this task owns the head: clear its rows of gk/gv here, in parallel and into cache
          dk = pgk + g.k_index(b, 0, h);
          dv = pgv + g.k_index(b, 0, h);
          ldkv = g.ld;
          for (int64_t j = 0; j < g.Tk; j++) {
            std::memset(dk + j * ldkv, 0, size_t(g.D) * sizeof(float));
            std::memset(dv + j * ldkv, 0, size_t(g.D) * sizeof(float));
          }
        } else {
          dk = partial.data() + t * 2 * g.Tk * g.D;
          dv = dk + g.Tk * g.D;
          ldkv = g.D;
        }
        for (int64_t blk = part * nb / parts; blk < (part + 1) * nb / parts; blk++) {
          int64_t r0 = blk * g.block;
          backward_block(g, pq, pk, pv, po, pl, pg, bias.data(), scale, drop, b, h, r0,
                         std::min(g.block, g.Tq - r0), pgq, dk, dv, ldkv, w);
        }
      }
    }
  }
  if (parts > 1) {
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < g.B * g.Tk * g.H; row++) {  // row = (b, j, h) of gk/gv
      int64_t h = row % g.H, j = (row / g.H) % g.Tk, b = row / (g.H * g.Tk);
      float *dk = pgk + row * g.D, *dv = pgv + row * g.D;
      std::memset(dk, 0, size_t(g.D) * sizeof(float));
      std::memset(dv, 0, size_t(g.D) * sizeof(float));
      for (int64_t part = 0; part < parts; part++) {
        const float* src = partial.data() + ((b * g.H + h) * parts + part) * 2 * g.Tk * g.D + j * g.D;
        for (int64_t d = 0; d < g.D; d++) {
          dk[d] += src[d];
          dv[d] += src[g.Tk * g.D + d];
        }
      }
    }
  }
}

// Packed self-attention: through contiguous copies of q, k and v (core/attention_packed.h). The strides would be
// only GEMM leading dimensions here, but the copies are a small part of a CPU step, and this way the packed call
// equals split + attention bit for bit by construction.
void attention_qkv_fwd(const Tensor& qkv, const Tensor* key_mask, bool causal, float scale, float dropout_p,
                       uint64_t seed, Tensor& out, Tensor& lse) {
  packed::forward_via_copies(qkv, key_mask, causal, scale, dropout_p, seed, out, lse);
}

void attention_qkv_bwd(const Tensor& qkv, const Tensor& out, const Tensor& lse, const Tensor& gout,
                       const Tensor* key_mask, bool causal, float scale, float dropout_p, uint64_t seed, Tensor& gqkv) {
  packed::backward_via_copies(qkv, out, lse, gout, key_mask, causal, scale, dropout_p, seed, gqkv);
}

}  // namespace owlet::kern
