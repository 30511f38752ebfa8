// Warp-level tensor-core primitives (sm_80+ PTX, valid on Hopper): ldmatrix, mma.m16n8k16 (bf16 in, fp32
// accumulate) and cp.async, with the fragment layouts they imply written down once.
//
// Fragment layouts of mma.m16n8k16 for lane l, g = l / 4, t = l % 4 (PTX ISA, "Matrix Fragments for mma.m16n8k16"):
//   A (16×16, row-major):  a0 = A[g][2t..2t+1]   a1 = A[g+8][2t..2t+1]   a2 = A[g][2t+8..]   a3 = A[g+8][2t+8..]
//   B (16×8, "col"):       b0 = B[2t..2t+1][g]   b1 = B[2t+8..2t+9][g]
//   C/D (16×8, fp32):      c0,c1 = C[g][2t..2t+1]   c2,c3 = C[g+8][2t..2t+1]
// Two adjacent C tiles (columns 0–7 and 8–15) therefore hold exactly an A fragment's elements: a0 = pack(C0.c0,
// C0.c1), a1 = pack(C0.c2, C0.c3), a2 = pack(C1.c0, C1.c1), a3 = pack(C1.c2, C1.c3). That is how softmax
// probabilities computed in registers feed the next product without a trip through shared memory.
//
// ldmatrix.x4 loads four 8×8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i, and register i of
// lane l receives row l/4, columns 2(l%4)..+1 of matrix i (with .trans: of its transpose). The address helpers below
// pick rows so that the four registers are directly an A fragment or two B fragments:
//   a_rowmajor:   A stored [m][k]                  -> r0..r3 = a0..a3
//   b_nk:         B stored [n][k] (e.g. K for QKᵀ) -> r0,r1 = b0,b1 of n-tile 0;  r2,r3 = of n-tile 1
//   b_kn (trans): B stored [k][n] (e.g. V for PV)  -> r0,r1 = b0,b1 of n-tile 0;  r2,r3 = of n-tile 1
//   a_km (trans): A stored [k][m] (Aᵀ in memory)   -> r0..r3 = a0..a3
//
// Built with OWLET_CUDA_EMULATION (test/native/cuda_emu.h, no GPU needed), each primitive calls the host emulator
// instead of its PTX, so the kernels' index arithmetic can be checked on any machine.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

namespace owlet::cuda::mma {

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Element offsets (row, col) in a 16×16 block that lane `l` must point its ldmatrix address at.
struct RowCol {
  int row, col;
};
__device__ __forceinline__ RowCol a_rowmajor(int l) { return {l & 15, (l >> 4) << 3}; }
__device__ __forceinline__ RowCol b_nk(int l) { return {(l & 7) + ((l >> 4) << 3), ((l >> 3) & 1) << 3}; }
__device__ __forceinline__ RowCol b_kn(int l) { return {l & 15, (l >> 4) << 3}; }
__device__ __forceinline__ RowCol a_km(int l) { return {(l & 7) + ((l >> 4) << 3), ((l >> 3) & 1) << 3}; }

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
#ifdef OWLET_CUDA_EMULATION
  ::emu::ldmatrix_x4(r, addr, false);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#endif
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
#ifdef OWLET_CUDA_EMULATION
  ::emu::ldmatrix_x4(r, addr, true);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#endif
}

// d += a · b (16×8×16, bf16 operands, fp32 accumulators).
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#ifdef OWLET_CUDA_EMULATION
  ::emu::mma_bf16(d, a, b0, b1);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// Two floats as a bf16x2 register: `lo` (the lower column) in the low half.
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// 2^x on the special-function unit alone (ex2.approx.ftz). exp2f is ex2.approx.f32 without .ftz, which has to
// return subnormal results, and ptxas wraps its MUFU.EX2 in a range test and two predicated multiplies for that;
// the softmaxes here only ever need 2^x for x <= 0 of a row whose largest term is 1, where a term below 2^-126 is
// as good as 0. The emulator flushes the same results to 0.
__device__ __forceinline__ float exp2_ftz(float x) {
#ifdef OWLET_CUDA_EMULATION
  const float r = exp2f(x);
  return r < 1.17549435e-38f ? 0.f : r;
#else
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(r) : "f"(x));
  return r;
#endif
}

// 16 bytes global -> shared, asynchronously; when !valid nothing is read and the 16 bytes are zero-filled.
__device__ __forceinline__ void cp_async16(uint32_t smem, const void* gmem, bool valid) {
#ifdef OWLET_CUDA_EMULATION
  ::emu::cp_async(smem, gmem, valid, 16);
#else
  int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem), "r"(src_bytes));
#endif
}
// 4 bytes global -> shared (zero-filled when !valid).
__device__ __forceinline__ void cp_async4(uint32_t smem, const void* gmem, bool valid) {
#ifdef OWLET_CUDA_EMULATION
  ::emu::cp_async(smem, gmem, valid, 4);
#else
  int src_bytes = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem), "l"(gmem), "r"(src_bytes));
#endif
}
#ifdef OWLET_CUDA_EMULATION
__device__ __forceinline__ void cp_async_commit() {}  // the emulator copies synchronously
template <int N>
__device__ __forceinline__ void cp_async_wait() {}
#else
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
#endif

}  // namespace owlet::cuda::mma
