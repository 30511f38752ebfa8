// Row-major GEMMs on device pointers, for kern::matmul and for the families built on GEMMs (LoRA).
#pragma once
#include <cstdint>
#include <string>

#include "../core/tensor.h"
#include "runtime.h"

namespace owlet::cuda {

// C[b] = alpha · op(A[b]) op(B[b]) + beta · C[b] for b < batch, row-major: op(A) is M×K, op(B) is K×N, C is M×N.
// lda/ldb/ldc are row strides in elements, stride* the distance between batch items (0 = one matrix shared by all).
// Operands are f32 (then C is f32) or bf16 (C bf16 or f32); accumulation is fp32 (CUBLAS_COMPUTE_32F: no TF32).
struct Gemm {
  bool ta = false, tb = false;
  int64_t M = 0, N = 0, K = 0;
  const void* A = nullptr;
  int64_t lda = 0, strideA = 0;
  const void* B = nullptr;
  int64_t ldb = 0, strideB = 0;
  void* C = nullptr;
  int64_t ldc = 0, strideC = 0;
  int64_t batch = 1;
  DType ab = DType::BF16, c = DType::BF16;
  float alpha = 1.f, beta = 0.f;
  // Optional bias per column of the row-major C (length N, C's dtype), added in cuBLASLt's epilogue (bf16, batch 1).
  const void* bias = nullptr;
  // Optional bias gradient per row of the row-major C (length M, C's dtype): bias_grad[m] = Σ_k op(A)[m][k], from
  // cuBLASLt's BGRADB epilogue (bf16, batch 1): for C = gyᵀ x, the column sums of gy, read once by the GEMM.
  void* bias_grad = nullptr;
};

// Returns whether g.bias (or g.bias_grad) was applied in the epilogue; when not, the caller adds the bias (computes
// the bias gradient).
bool gemm(DeviceContext& ctx, const Gemm& g, const char* op);

// How many bf16 GEMMs went through cuBLASLt and how many fell back to cublasGemmEx (with the first shapes and why).
struct GemmStats {
  uint64_t lt = 0, ex = 0, bias_epilogue = 0, bias_grad_epilogue = 0;
  uint64_t tuned = 0, tuned_changed = 0;  // shapes whose candidates were timed; of those, where another than the first won
  uint64_t tune_reused = 0;               // shapes that took their bucket's timed choice instead (gemm.cu tune_bucket)
  double tune_saved_ms = 0.0;             // per call of each such shape, summed
  std::string ex_shapes;
};
GemmStats gemm_stats();

// Tensor-level convenience: c = alpha · op(a) op(b) + beta · c with a, b 2-D (row-major), any float dtypes
// (mixed dtypes are converted through temporaries). With `bias` (length N, c's dtype) it returns whether the bias
// was added in the epilogue; when not, the caller adds it.
bool gemm2d(DeviceContext& ctx, const Tensor& a, bool ta, const Tensor& b, bool tb, Tensor& c, float alpha, float beta,
            const char* op, const Tensor* bias = nullptr, Tensor* bias_grad = nullptr);

}  // namespace owlet::cuda
