// Elementwise maps with 16-byte accesses: each thread moves 8 bf16 (or 4 f32) elements of every operand per load
// and store, where the scalar kernels (FIn/FOut, one 2- or 4-byte access per element and a dtype branch on each)
// reach about half the copy bandwidth (bench/results: rmsnorm 1370 GB/s against a 2974 GB/s copy on an H100).
// The fast path applies when every operand has one dtype (f32 or bf16), the same length and a 16-byte-aligned start;
// callers fall back to their scalar kernel otherwise. test/native/vec_map_emu.cc runs these kernels through the host
// emulator against the same functors applied element by element.
//
// A functor is `void operator()(const float (&x)[NI], float (&y)[NO]) const` on one element's inputs and outputs.
#pragma once
#include <cstdint>

#include "common.cuh"

namespace owlet::cuda::vec {

template <class T> struct Pack { static constexpr int N = 16 / int(sizeof(T)); };

template <class T>
__device__ __forceinline__ void load(const T* p, float (&v)[Pack<T>::N]) {
  uint4 raw = *reinterpret_cast<const uint4*>(p);
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < Pack<T>::N; i++) v[i] = to_f(e[i]);
}

template <class T>
__device__ __forceinline__ void store(T* p, const float (&v)[Pack<T>::N]) {
  uint4 raw;
  T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int i = 0; i < Pack<T>::N; i++) e[i] = from_f<T>(v[i]);
  *reinterpret_cast<uint4*>(p) = raw;
}

template <int NI, int NO>
struct Operands {
  const void* in[NI];
  void* out[NO];
};

// y_o[i] = f(x_0[i], …)_o for i < n: whole packs first, then the n % N tail element by element. An output may be an
// input too (in place): each thread reads a pack before it writes it.
template <class T, int NI, int NO, class F>
__global__ void map_kernel(Operands<NI, NO> ops, int64_t n, F f) {
  constexpr int N = Pack<T>::N;
  const int64_t packs = n / N, stride = int64_t(blockDim.x) * gridDim.x, first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t k = first; k < packs; k += stride) {
    float x[NI][N], y[NO][N];
#pragma unroll
    for (int a = 0; a < NI; a++) load(static_cast<const T*>(ops.in[a]) + k * N, x[a]);
#pragma unroll
    for (int e = 0; e < N; e++) {
      float xi[NI], yo[NO];
#pragma unroll
      for (int a = 0; a < NI; a++) xi[a] = x[a][e];
      f(xi, yo);
#pragma unroll
      for (int o = 0; o < NO; o++) y[o][e] = yo[o];
    }
#pragma unroll
    for (int o = 0; o < NO; o++) store(static_cast<T*>(ops.out[o]) + k * N, y[o]);
  }
  for (int64_t i = packs * N + first; i < n; i += stride) {
    float xi[NI], yo[NO];
#pragma unroll
    for (int a = 0; a < NI; a++) xi[a] = to_f(static_cast<const T*>(ops.in[a])[i]);
    f(xi, yo);
#pragma unroll
    for (int o = 0; o < NO; o++) static_cast<T*>(ops.out[o])[i] = from_f<T>(yo[o]);
  }
}

// The same map element by element through FIn/FOut (operands of mixed dtypes, or not 16-byte aligned).
template <int NI, int NO>
struct ScalarOperands {
  FIn in[NI];
  FOut out[NO];
};

template <int NI, int NO, class F>
__global__ void map_scalar_kernel(ScalarOperands<NI, NO> ops, int64_t n, F f) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    float xi[NI], yo[NO];
#pragma unroll
    for (int a = 0; a < NI; a++) xi[a] = ops.in[a][i];
    f(xi, yo);
#pragma unroll
    for (int o = 0; o < NO; o++) ops.out[o].set(i, yo[o]);
  }
}

// dst[i] = src[i] converted (f32 <-> bf16, round to nearest even as from_f), 8 elements per thread and step: 16-byte
// loads and stores (two of them on the f32 side), then the n % 8 tail element by element. src and dst 16-byte-aligned
// (the caller checks). The element-by-element conversion (tensor.cu's convert_float_kernel, 4- and 2-byte accesses)
// reaches about half the copy bandwidth, and the attention backward's dQ (an fp32 accumulator of B·Tq·H·D values,
// 134 MB at LLaMA's B4 T2048) goes through it.
template <class S, class D>
__global__ void convert_kernel(const S* src, D* dst, int64_t n) {
  constexpr int N = 8, NS = N / Pack<S>::N, ND = N / Pack<D>::N;  // 16-byte accesses per step on each side
  const int64_t groups = n / N, stride = int64_t(blockDim.x) * gridDim.x, first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t k = first; k < groups; k += stride) {
    float v[N];
#pragma unroll
    for (int a = 0; a < NS; a++) {
      float part[Pack<S>::N];
      load(src + k * N + a * Pack<S>::N, part);
#pragma unroll
      for (int e = 0; e < Pack<S>::N; e++) v[a * Pack<S>::N + e] = part[e];
    }
#pragma unroll
    for (int a = 0; a < ND; a++) {
      float part[Pack<D>::N];
#pragma unroll
      for (int e = 0; e < Pack<D>::N; e++) part[e] = v[a * Pack<D>::N + e];
      store(dst + k * N + a * Pack<D>::N, part);
    }
  }
  for (int64_t i = groups * N + first; i < n; i += stride) dst[i] = from_f<D>(to_f(src[i]));
}

// The element functors of the activation and elementwise ops (act.cu, elementwise.cu), shared with their scalar
// kernels' formulas.
__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }
constexpr float kQuickGelu = 1.702f;

struct QuickGeluFwd {
  __device__ void operator()(const float (&x)[1], float (&y)[1]) const { y[0] = x[0] * sigmoid(kQuickGelu * x[0]); }
};
struct QuickGeluBwd {  // (gy, x) -> gx
  __device__ void operator()(const float (&x)[2], float (&y)[1]) const {
    float v = x[1], s = sigmoid(kQuickGelu * v);
    y[0] = x[0] * (s + kQuickGelu * v * s * (1.f - s));
  }
};
struct QuickGeluBwdFwd {  // (gy, x) -> (gx, y): QuickGeluBwd and QuickGeluFwd of one read of x
  __device__ void operator()(const float (&x)[2], float (&y)[2]) const {
    const float v[1] = {x[1]};
    float g[1], f[1];
    QuickGeluBwd{}(x, g);
    QuickGeluFwd{}(v, f);
    y[0] = g[0];
    y[1] = f[0];
  }
};
struct SiluFwd {
  __device__ void operator()(const float (&x)[1], float (&y)[1]) const { y[0] = x[0] * sigmoid(x[0]); }
};
struct SiluBwd {  // (gy, x) -> gx
  __device__ void operator()(const float (&x)[2], float (&y)[1]) const {
    float v = x[1], s = sigmoid(v);
    y[0] = x[0] * s * (1.f + v * (1.f - s));
  }
};
struct SwigluFwd {  // (gate, up) -> y
  __device__ void operator()(const float (&x)[2], float (&y)[1]) const { y[0] = x[0] * sigmoid(x[0]) * x[1]; }
};
struct SwigluBwd {  // (gy, gate, up) -> (ggate, gup)
  __device__ void operator()(const float (&x)[3], float (&y)[2]) const {
    float d = x[0], g = x[1], u = x[2], s = sigmoid(g);
    y[0] = d * u * s * (1.f + g * (1.f - s));
    y[1] = d * g * s;
  }
};
struct SwigluBwdGate {  // (gy, gate, up) -> ggate
  __device__ void operator()(const float (&x)[3], float (&y)[1]) const {
    float d = x[0], g = x[1], u = x[2], s = sigmoid(g);
    y[0] = d * u * s * (1.f + g * (1.f - s));
  }
};
struct SwigluBwdUp {  // (gy, gate) -> gup
  __device__ void operator()(const float (&x)[2], float (&y)[1]) const {
    float d = x[0], g = x[1], s = sigmoid(g);
    y[0] = d * g * s;
  }
};
struct AddScaled {  // alpha·a + beta·b
  float alpha, beta;
  __device__ void operator()(const float (&x)[2], float (&y)[1]) const { y[0] = alpha * x[0] + beta * x[1]; }
};
struct Mul {
  __device__ void operator()(const float (&x)[2], float (&y)[1]) const { y[0] = x[0] * x[1]; }
};
struct Scale {
  float s;
  __device__ void operator()(const float (&x)[1], float (&y)[1]) const { y[0] = s * x[0]; }
};
struct ScaleByDevice {  // x · s[0], s read where the map runs (the incoming gradient of a scalar loss: no host read)
  FIn s;
  __device__ void operator()(const float (&x)[1], float (&y)[1]) const { y[0] = x[0] * s[0]; }
};
struct Axpy {  // (y, x) -> y + alpha·x
  float alpha;
  __device__ void operator()(const float (&x)[2], float (&y)[1]) const { y[0] = x[0] + alpha * x[1]; }
};

}  // namespace owlet::cuda::vec
