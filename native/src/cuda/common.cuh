// Device-side helpers shared by the kernel families: float loads/stores for f32 or bf16 storage, warp and block
// reductions, dtype dispatch and launch shorthands. Arithmetic is fp32 everywhere; bf16 is a storage type.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "../core/tensor.h"
#include "runtime.h"

namespace owlet::cuda {

using bf16 = __nv_bfloat16;

template <class T> __device__ __forceinline__ float to_f(T v);
template <> __device__ __forceinline__ float to_f<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_f<bf16>(bf16 v) { return __bfloat162float(v); }
template <class T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ bf16 from_f<bf16>(float v) { return __float2bfloat16_rn(v); }

// A float tensor whose storage type (f32 or bf16) is chosen at run time. The branch is uniform across a launch, so
// it costs a predicate, not divergence; kernels use it for every tensor whose traffic does not dominate.
struct FIn {
  const void* p;
  bool bf;
  __device__ __forceinline__ float operator[](int64_t i) const {
    return bf ? __bfloat162float(static_cast<const bf16*>(p)[i]) : static_cast<const float*>(p)[i];
  }
};
struct FOut {
  void* p;
  bool bf;
  __device__ __forceinline__ float get(int64_t i) const {
    return bf ? __bfloat162float(static_cast<const bf16*>(p)[i]) : static_cast<const float*>(p)[i];
  }
  __device__ __forceinline__ void set(int64_t i, float v) const {
    if (bf) static_cast<bf16*>(p)[i] = __float2bfloat16_rn(v);
    else static_cast<float*>(p)[i] = v;
  }
};

inline bool is_float(DType d) { return d == DType::F32 || d == DType::BF16; }
// Whether t's storage starts on a 16-byte boundary: the 16-byte kernels' precondition (the allocator aligns every
// storage; a view at an offset may not be).
inline bool aligned16(const Tensor& t) { return reinterpret_cast<uintptr_t>(t.raw()) % 16 == 0; }

inline void expect_float(const Tensor& t, const char* op, const char* what) {
  if (!is_float(t.dtype))
    fail(ErrorKind::DType, std::string(op) + ": " + what + " must be f32 or bf16, got " + t.describe());
}
inline void expect_dtype(const Tensor& t, DType d, const char* op, const char* what) {
  if (t.dtype != d)
    fail(ErrorKind::DType, std::string(op) + ": " + what + " must be " + dtype_name(d) + ", got " + t.describe());
}
inline FIn fin(const Tensor& t, const char* op, const char* what) {
  expect_float(t, op, what);
  return FIn{t.raw(), t.dtype == DType::BF16};
}
inline FOut fout(const Tensor& t, const char* op, const char* what) {
  expect_float(t, op, what);
  return FOut{t.raw(), t.dtype == DType::BF16};
}

// Runs BODY with T bound to the storage type of a float dtype.
#define OWLET_FLOAT_SWITCH(DT, T, OP, ...)                                                                  \
  do {                                                                                                    \
    switch (DT) {                                                                                         \
      case ::owlet::DType::F32: { using T = float; __VA_ARGS__; } break;                                  \
      case ::owlet::DType::BF16: { using T = ::owlet::cuda::bf16; __VA_ARGS__; } break;                   \
      default: ::owlet::fail(::owlet::ErrorKind::DType, std::string(OP) + ": needs f32 or bf16 tensors"); \
    }                                                                                                     \
  } while (0)

// dst[0..1] += (a, b): one 8-byte atomic where the GPU has them (compute capability 9.0 on), two 4-byte ones before,
// so a build for older GPUs (-DCMAKE_CUDA_ARCHITECTURES=80) compiles.
__device__ __forceinline__ void atomic_add2(float* dst, float a, float b) {
#if defined(OWLET_CUDA_EMULATION) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900)
  atomicAdd(reinterpret_cast<float2*>(dst), make_float2(a, b));
#else
  atomicAdd(dst, a);
  atomicAdd(dst + 1, b);
#endif
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block; every thread gets the result. `scratch` holds at least 32 floats; blockDim.x is a multiple
// of 32. Contains __syncthreads: call from all threads.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nw ? scratch[lane] : 0.f;
  return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nw ? scratch[lane] : -INFINITY;
  return warp_max(v);
}
__device__ __forceinline__ double block_sum_d(double v, double* scratch) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum_d(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nw ? scratch[lane] : 0.0;
  return warp_sum_d(v);
}

// Dynamic shared memory of a kernel (the host emulator of test/native substitutes its own).
#ifndef OWLET_DYNAMIC_SMEM
#define OWLET_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

// Grid-stride loop over [0, n) with 64-bit indices.
#define OWLET_KERNEL_LOOP(i, n) \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += int64_t(blockDim.x) * gridDim.x)

}  // namespace owlet::cuda
