// Batched GEMM through OpenBLAS. Batches are looped (each sgemm is itself multi-threaded); when the per-matrix work
// is small, batches run in parallel with single-threaded sgemm instead.
#include <cblas.h>
#include <omp.h>

#include "../core/kernels.h"

extern "C" void openblas_set_num_threads(int);
extern "C" int openblas_get_num_threads(void);

namespace owlet::kern {

void matmul(const Tensor& a, const Tensor& b, Tensor& c, bool ta, bool tb, float alpha, float beta) {
  int64_t M = c.dim(-2), N = c.dim(-1);
  int64_t K = ta ? a.dim(-2) : a.dim(-1);
  if (M == 0 || N == 0) return;
  int64_t batch = c.numel() / (M * N);
  bool b_shared = b.ndim() == 2 && batch > 1;
  int64_t lda = a.dim(-1), ldb = b.dim(-1), ldc = N;
  int64_t sa = a.dim(-2) * a.dim(-1), sb = b_shared ? 0 : b.dim(-2) * b.dim(-1), sc = M * N;
  const float *pa = a.f32(), *pb = b.f32();
  float* pc = c.f32();
  if (b_shared && !ta) {  // one big GEMM over all batch rows: [batch*M, K] x B
    cblas_sgemm(CblasRowMajor, CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(batch * M), int(N), int(K), alpha, pa,
                int(lda), pb, int(ldb), beta, pc, int(ldc));
    return;
  }
  double flops = 2.0 * double(M) * double(N) * double(K);
  if (batch > 1 && flops < 4.0e6) {
    int saved = openblas_get_num_threads();
    openblas_set_num_threads(1);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < batch; i++)
      cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(M), int(N), int(K),
                  alpha, pa + i * sa, int(lda), pb + i * sb, int(ldb), beta, pc + i * sc, int(ldc));
    openblas_set_num_threads(saved);
    return;
  }
  for (int64_t i = 0; i < batch; i++)
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(M), int(N), int(K),
                alpha, pa + i * sa, int(lda), pb + i * sb, int(ldb), beta, pc + i * sc, int(ldc));
}

// The GEMM, then the bias added to each row as kern::add would (the CPU computes in fp32: no epilogue to gain).
void linear_bias(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y) {
  matmul(x, w, y, false, true, 1.f, 0.f);
  add(y, bias, y, 1.f, 1.f);
}

void linear_weight_grad(const Tensor& gy, const Tensor& x, Tensor& gw, Tensor* gb) {
  if (gy.rows() == 0) fill(gw, 0);
  else matmul(gy, x, gw, true, false, 1.f, 0.f);
  if (gb) sum_rows(gy, *gb);
}

}  // namespace owlet::kern
