// LoRA linear with a frozen base weight: y = x Wᵀ + s · (drop(x) Aᵀ) Bᵀ, forward and backward, as sgemm calls on
// x viewed as [M, K]. The dropout mask is never stored: hash_u01(seed, flat index of x) regenerates it (the CUDA
// backend draws the same mask from the same header). No dW, ever: the base weight is only read.
#include <cblas.h>

#include <cstring>
#include <vector>

#include "../core/hash_u01.h"
#include "../core/kernels.h"

namespace owlet::kern {

namespace {

constexpr int64_t kParallelMin = 1 << 14;

struct Dims {
  int64_t M, K, N, r;
};

Dims dims_of(const Tensor& x, const Tensor& w, const Tensor& a) { return {x.rows(), x.cols(), w.dim(0), a.dim(0)}; }

// Row-major C = alpha · op(A) op(B) + beta · C with the leading dimensions of contiguous operands.
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, const float* B, float beta,
          float* C) {
  int64_t lda = ta ? M : K, ldb = tb ? K : N;
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(M), int(N), int(K),
              alpha, A, int(lda), B, int(ldb), beta, C, int(N));
}

// out = drop(x): x / (1 - p) where hash_u01(seed, i) >= p, else 0 — what torch.nn.Dropout computes, with our mask.
// With `keep`, also records the mask (1 byte per element) so a later pass need not hash again.
void dropout_into(const float* x, float* out, int64_t n, float p, uint64_t seed, uint8_t* keep = nullptr) {
  const uint64_t key = hash_u01_key(seed);
  const float inv_keep = float(1.0 / (1.0 - double(p)));
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; i++) {
    bool k = hash_u01_at(key, uint64_t(i)) >= p;
    out[i] = k ? x[i] * inv_keep : 0.f;
    if (keep) keep[i] = uint8_t(k);
  }
}

}  // namespace

void lora_fwd(const Tensor& x, const Tensor& w, const Tensor& a, const Tensor& b, float s, float dropout_p,
              uint64_t seed, Tensor& y, Tensor& xa) {
  const Dims d = dims_of(x, w, a);
  if (d.M == 0) return;
  float* py = y.f32();
  float* pxa = xa.f32();
  gemm(false, true, d.M, d.N, d.K, 1.f, x.f32(), w.f32(), 0.f, py);  // y = x Wᵀ
  const float* xd = x.f32();
  Tensor dropped;
  if (dropout_p > 0.f) {
    dropped = Tensor(DType::F32, x.shape, x.device());
    dropout_into(x.f32(), dropped.f32(), x.numel(), dropout_p, seed);
    xd = dropped.f32();
  }
  gemm(false, true, d.M, d.r, d.K, 1.f, xd, a.f32(), 0.f, pxa);  // xa = drop(x) Aᵀ   [M, r]
  gemm(false, true, d.M, d.N, d.r, s, pxa, b.f32(), 1.f, py);    // y += s · xa Bᵀ
}

void lora_bwd(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& a, const Tensor& b, const Tensor& xa,
              float s, float dropout_p, uint64_t seed, Tensor* gx, Tensor& ga, Tensor& gb) {
  const Dims d = dims_of(x, w, a);
  if (d.M == 0) {  // nothing flowed back: the weight gradients of an empty batch are zero
    std::memset(ga.f32(), 0, ga.nbytes());
    std::memset(gb.f32(), 0, gb.nbytes());
    return;
  }
  const float* pgy = gy.f32();
  Tensor gyb_t(DType::F32, {d.M, d.r}, x.device());
  float* gyb = gyb_t.f32();
  gemm(false, false, d.M, d.r, d.N, 1.f, pgy, b.f32(), 0.f, gyb);           // gyB = gy B          [M, r]
  gemm(true, false, d.N, d.r, d.M, s, pgy, xa.f32(), 0.f, gb.f32());        // gB = s · gyᵀ xa     [N, r]
  if (dropout_p <= 0.f) {
    gemm(true, false, d.r, d.K, d.M, s, gyb, x.f32(), 0.f, ga.f32());       // gA = s · gyBᵀ x     [r, K]
    if (gx) {
      gemm(false, false, d.M, d.K, d.N, 1.f, pgy, w.f32(), 0.f, gx->f32()); // gx = gy W
      gemm(false, false, d.M, d.K, d.r, s, gyb, a.f32(), 1.f, gx->f32());   //    + s · gyB A
    }
    return;
  }
  // With dropout: gA needs drop(x) (regenerated), gx needs the mask on the LoRA path. One [M, K] scratch serves both;
  // the mask is kept as bytes so it is hashed once per backward.
  const int64_t n = x.numel();
  Tensor scratch(DType::F32, x.shape, x.device());
  float* t = scratch.f32();
  std::vector<uint8_t> keep(gx ? size_t(n) : 0);
  dropout_into(x.f32(), t, n, dropout_p, seed, gx ? keep.data() : nullptr);
  gemm(true, false, d.r, d.K, d.M, s, gyb, t, 0.f, ga.f32());               // gA = s · gyBᵀ drop(x)
  if (!gx) return;
  float* pgx = gx->f32();
  gemm(false, false, d.M, d.K, d.N, 1.f, pgy, w.f32(), 0.f, pgx);           // gx = gy W
  const float coef = float(double(s) / (1.0 - double(dropout_p)));
  gemm(false, false, d.M, d.K, d.r, coef, gyb, a.f32(), 0.f, t);            // t = s/(1-p) · gyB A
  const uint8_t* k = keep.data();
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; i++) pgx[i] += k[i] ? t[i] : 0.f;             //    + mask ⊙ t
}

}  // namespace owlet::kern
