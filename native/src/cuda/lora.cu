// LoRA linear with a frozen base weight: y = x Wᵀ + s · (drop(x) Aᵀ) Bᵀ, and its backward (dx, dA, dB; never dW).
//
// The low-rank update rides in the base GEMM's epilogue: the rank-r product s·xa·Bᵀ is written into y first (a
// K = r GEMM, bound by writing y), then the base GEMM runs with beta = 1 and adds it while storing its own result,
// so y is never read back by a separate pass. The backward does the same for dx. What remains beyond the frozen
// linear is memory traffic over thin matrices: x Aᵀ (reads x), gy B and gyᵀ xa (read gy), (gy B)ᵀ x (reads x) and
// the rank-r writes of y and dx.
//
// Dropout on the LoRA input uses the dropout family's mask (core/rng_hash.h, index = element index of x), so
// drop(x) here equals dropoutForward(x, p, seed) on either backend; the backward regenerates it.
#include "../core/kernels.h"
#include "common.cuh"
#include "gemm.h"

namespace owlet::kern {

using namespace owlet::cuda;

namespace {

// t as dtype `want`: itself, or a converted copy held by `hold` (adapters are small; x and W are never copied).
const Tensor& cast_small(const Tensor& t, DType want, Tensor& hold) {
  if (t.dtype == want) return t;
  hold = Tensor(want, t.shape, t.device());
  copy_convert(t, hold);
  return hold;
}

// drop(x): x itself when p = 0, else a masked, rescaled copy in `hold`.
const Tensor& dropped(const Tensor& x, float p, uint64_t seed, Tensor& hold) {
  if (p <= 0.f) return x;
  hold = Tensor(x.dtype, x.shape, x.device());
  dropout_fwd(x, hold, p, seed);
  return hold;
}

}  // namespace

void lora_fwd(const Tensor& x, const Tensor& w, const Tensor& a, const Tensor& b, float s, float dropout_p,
              uint64_t seed, Tensor& y, Tensor& xa) {
  const char* op = "loraForward";
  DeviceContext& c = context_of(x, op);
  Tensor ha, hb, hx;
  const Tensor& A = cast_small(a, x.dtype, ha);
  const Tensor& B = cast_small(b, x.dtype, hb);
  const Tensor& xd = dropped(x, dropout_p, seed, hx);
  gemm2d(c, xd, false, A, true, xa, 1.f, 0.f, op);  // xa = drop(x) Aᵀ        [M, r]
  gemm2d(c, xa, false, B, true, y, s, 0.f, op);     // y  = s · xa Bᵀ          [M, N]
  gemm2d(c, x, false, w, true, y, 1.f, 1.f, op);    // y += x Wᵀ (epilogue)
}

void lora_bwd(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& a, const Tensor& b, const Tensor& xa,
              float s, float dropout_p, uint64_t seed, Tensor* gx, Tensor& ga, Tensor& gb) {
  const char* op = "loraBackward";
  DeviceContext& c = context_of(x, op);
  Tensor ha, hb, hxa;
  const Tensor& A = cast_small(a, gy.dtype, ha);
  const Tensor& B = cast_small(b, gy.dtype, hb);
  const Tensor& XA = cast_small(xa, gy.dtype, hxa);
  // gyB = gy B [M, r], kept in gy's dtype so the GEMMs below need no conversion of x or gy.
  Shape gyb_shape = x.shape;
  gyb_shape.back() = a.dim(0);
  Tensor gyB(gy.dtype, gyb_shape, x.device());
  gemm2d(c, gy, false, B, false, gyB, 1.f, 0.f, op);
  gemm2d(c, gy, true, XA, false, gb, s, 0.f, op);  // gb = s · gyᵀ xa        [N, r]
  {
    Tensor hx;  // drop(x), released before dx is computed
    const Tensor& xd = dropped(x, dropout_p, seed, hx);
    gemm2d(c, gyB, true, xd, false, ga, s, 0.f, op);  // ga = s · (gy B)ᵀ drop(x) [r, K]
  }
  if (!gx) return;
  if (dropout_p <= 0.f) {
    gemm2d(c, gyB, false, A, false, *gx, s, 0.f, op);  // gx = s · (gy B) A
  } else {  // the low-rank path saw drop(x): its gradient goes through the same mask and scale
    Tensor t(gx->dtype, gx->shape, gx->device());
    gemm2d(c, gyB, false, A, false, t, s, 0.f, op);
    dropout_fwd(t, *gx, dropout_p, seed);
  }
  gemm2d(c, gy, false, w, false, *gx, 1.f, 1.f, op);  // gx += gy W (epilogue)
}

}  // namespace owlet::kern
