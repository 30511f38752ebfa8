// AdamW's update as a multi-tensor kernel (optim.cu launches it over a parameter list; test/native/adamw_emu.cc runs
// it through the host emulator against a scalar reference, bit for bit): one block per (tensor, chunk) work item.
#pragma once
#include "common.cuh"
#include "multi_tensor.cuh"

namespace owlet::cuda::adamw {

// The scalars torch derives on the host in double, rounded to f32 once (as the CPU backend does).
struct AdamScalars {
  float decay;      // 1 − lr·wd
  float beta1, a1;  // β1, 1 − β1
  float beta2, a2;  // β2, 1 − β2
  float bc2_sqrt;   // √(1 − β2^t)
  float eps;
  float neg_step;   // −lr / (1 − β1^t)
  float grad_scale; // gradient clipping's coefficient (1 without clipping)
};

struct AdamSlot {
  float* p;
  FIn g;
  float* m;
  float* v;
  int64_t n;
  AdamScalars s;
  bf16* copy;  // null, or the parameter's bf16 working copy, written with the update
  bool vec;    // p, m, v 16-byte aligned, g and copy aligned for 4 elements: the float4 path
};

// torch 1.13's AdamW in the CPU backend's order of f32 operations, each explicitly rounded (no contraction into
// other fused multiply-adds than the two torch itself executes), so the update equals the CPU backend's bit for bit:
//   g = g·grad_scale;  p = p·decay;  m = fma(1−β1, g, m·β1);  v = fma((1−β2)·g, g, v·β2);
//   p = p + (neg_step·m) / (√v / bc2_sqrt + eps)
__device__ __forceinline__ void adam_update(float& p, float& m, float& v, float g, const AdamScalars& k) {
  g = __fmul_rn(g, k.grad_scale);
  p = __fmul_rn(p, k.decay);
  m = __fmaf_rn(k.a1, g, __fmul_rn(m, k.beta1));
  v = __fmaf_rn(__fmul_rn(k.a2, g), g, __fmul_rn(v, k.beta2));
  float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), k.bc2_sqrt), k.eps);
  p = __fadd_rn(p, __fdiv_rn(__fmul_rn(k.neg_step, m), denom));
}

__device__ __forceinline__ float4 load_g4(const FIn& g, int64_t i) {
  if (!g.bf) return *reinterpret_cast<const float4*>(static_cast<const float*>(g.p) + i);
  uint2 raw = *reinterpret_cast<const uint2*>(static_cast<const bf16*>(g.p) + i);
  __nv_bfloat162 lo = *reinterpret_cast<__nv_bfloat162*>(&raw.x), hi = *reinterpret_cast<__nv_bfloat162*>(&raw.y);
  float2 a = __bfloat1622float2(lo), b = __bfloat1622float2(hi);
  return make_float4(a.x, a.y, b.x, b.y);
}

// Four values rounded to bf16 (as cast rounds them) in one 8-byte store.
__device__ __forceinline__ void store_bf16x4(bf16* dst, float4 x) {
  __nv_bfloat162 lo = __floats2bfloat162_rn(x.x, x.y), hi = __floats2bfloat162_rn(x.z, x.w);
  uint2 raw;
  raw.x = *reinterpret_cast<uint32_t*>(&lo);
  raw.y = *reinterpret_cast<uint32_t*>(&hi);
  *reinterpret_cast<uint2*>(dst) = raw;
}

// The update is a stream of 28 bytes per parameter (read p, m, v, g; write p, m, v; + 2 with a working copy): each
// thread moves four
// parameters per iteration with 16-byte accesses (the scalar loop kept four 4-byte loads per element in flight at
// most and measured about half the bandwidth bound, 6.3 ms for ViT-L + abstractor on an H100).
// control: null, or kern::step_control's block {norm, coefficient, skip} (float64): its coefficient replaces the
// slots' grad_scale (rounded to f32 as the host rounds a gradScale argument), and a step to skip updates nothing.
__global__ void adamw_kernel(const AdamSlot* slots, const WorkItem* items, const double* control) {
  WorkItem w = items[blockIdx.x];
  AdamSlot s = slots[w.slot];
  if (control) {
    if (control[2] != 0.0) return;
    s.s.grad_scale = float(control[1]);
  }
  int64_t end = min(s.n, w.start + kChunk), i0 = w.start;
  if (s.vec) {
    int64_t groups = (end - w.start) / 4;
    for (int64_t j = threadIdx.x; j < groups; j += blockDim.x) {
      int64_t i = w.start + 4 * j;
      float4 p = *reinterpret_cast<const float4*>(s.p + i), m = *reinterpret_cast<const float4*>(s.m + i),
             v = *reinterpret_cast<const float4*>(s.v + i), g = load_g4(s.g, i);
      adam_update(p.x, m.x, v.x, g.x, s.s);
      adam_update(p.y, m.y, v.y, g.y, s.s);
      adam_update(p.z, m.z, v.z, g.z, s.s);
      adam_update(p.w, m.w, v.w, g.w, s.s);
      *reinterpret_cast<float4*>(s.p + i) = p;
      *reinterpret_cast<float4*>(s.m + i) = m;
      *reinterpret_cast<float4*>(s.v + i) = v;
      if (s.copy) store_bf16x4(s.copy + i, p);
    }
    i0 = w.start + 4 * groups;
  }
  for (int64_t i = i0 + threadIdx.x; i < end; i += blockDim.x) {
    float p = s.p[i], m = s.m[i], v = s.v[i];
    adam_update(p, m, v, s.g[i], s.s);
    s.p[i] = p;
    s.m[i] = m;
    s.v[i] = v;
    if (s.copy) s.copy[i] = __float2bfloat16_rn(p);
  }
}

}  // namespace owlet::cuda::adamw
