// Activations (quick_gelu, SiLU, SwiGLU), softmax over the last axis, and dropout — forward and backward.
// Dropout masks come from the counter-based hash in core/rng_hash.h keyed by the element index, so they equal the
// CPU backend's bit for bit and the backward pass regenerates them instead of storing them.
#include "../core/kernels.h"
#include "../core/rng_hash.h"
#include "common.cuh"
#include "vec_map_launch.cuh"

namespace owlet::kern {

using namespace owlet::cuda;

namespace {

// One block per row: max, then sum of exponentials, then the normalised write.
__global__ void softmax_fwd_kernel(FIn x, FOut y, int64_t C) {
  __shared__ float scratch[32];
  int64_t base = int64_t(blockIdx.x) * C;
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) m = fmaxf(m, x[base + j]);
  m = block_max(m, scratch);
  if (m == -INFINITY) m = 0.f;  // a row of -inf: exp gives 0s and the sum below 0 -> NaN, as the maths says
  float s = 0.f;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) s += expf(x[base + j] - m);
  float inv = 1.f / block_sum(s, scratch);
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) y.set(base + j, expf(x[base + j] - m) * inv);
}
__global__ void softmax_bwd_kernel(FIn gy, FIn y, FOut gx, int64_t C) {
  __shared__ float scratch[32];
  int64_t base = int64_t(blockIdx.x) * C;
  float s = 0.f;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) s += gy[base + j] * y[base + j];
  s = block_sum(s, scratch);
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) gx.set(base + j, y[base + j] * (gy[base + j] - s));
}

__global__ void dropout_kernel(FIn x, FOut y, int64_t n, uint64_t key, uint32_t threshold, float scale) {
  OWLET_KERNEL_LOOP(i, n) y.set(i, rng::keep(key, uint64_t(i), threshold) ? x[i] * scale : 0.f);
}

void softmax_rows(const char* op, const Tensor& like, bool fwd, FIn a, FIn b, FOut out) {
  int64_t rows = like.rows(), C = like.cols();
  if (rows == 0 || C == 0) return;
  DeviceContext& c = context_of(like, op);
  int threads = C <= 256 ? 64 : C <= 2048 ? 128 : 256;
  if (fwd) softmax_fwd_kernel<<<unsigned(rows), threads, 0, c.stream>>>(a, out, C);
  else softmax_bwd_kernel<<<unsigned(rows), threads, 0, c.stream>>>(a, b, out, C);
  check_launch(op);
}

void dropout(const char* op, const Tensor& x, Tensor& y, float p, uint64_t seed) {
  int64_t n = x.numel();
  if (n == 0) return;
  DeviceContext& c = context_of(x, op);
  if (p <= 0.f) {
    copy_convert(x, y);
    return;
  }
  if (p >= 1.f) {  // nothing is kept
    fill(y, 0.0);
    return;
  }
  dropout_kernel<<<grid_for(c, n, 256), 256, 0, c.stream>>>(fin(x, op, "x"), fout(y, op, "y"), n, rng::stream_key(seed),
                                                             rng::drop_threshold(p), 1.f / (1.f - p));
  check_launch(op);
}

}  // namespace

// The elementwise activations run through vec::map (16-byte accesses when the operands share a dtype and alignment).
void quick_gelu_fwd(const Tensor& x, Tensor& y) { vec::map("quickGelu", {&x}, {&y}, vec::QuickGeluFwd{}); }
void quick_gelu_bwd(const Tensor& gy, const Tensor& x, Tensor& gx) {
  vec::map("quickGeluBackward", {&gy, &x}, {&gx}, vec::QuickGeluBwd{});
}
void quick_gelu_bwd_fwd(const Tensor& gy, const Tensor& x, Tensor& gx, Tensor& y) {
  vec::map("quickGeluBackwardForward", {&gy, &x}, {&gx, &y}, vec::QuickGeluBwdFwd{});
}
void silu_fwd(const Tensor& x, Tensor& y) { vec::map("silu", {&x}, {&y}, vec::SiluFwd{}); }
void silu_bwd(const Tensor& gy, const Tensor& x, Tensor& gx) { vec::map("siluBackward", {&gy, &x}, {&gx}, vec::SiluBwd{}); }
void swiglu_fwd(const Tensor& gate, const Tensor& up, Tensor& y) { vec::map("swiglu", {&gate, &up}, {&y}, vec::SwigluFwd{}); }
void swiglu_bwd(const Tensor& gy, const Tensor& gate, const Tensor& up, Tensor* ggate, Tensor* gup) {
  const char* op = "swigluBackward";
  if (ggate && gup) vec::map(op, {&gy, &gate, &up}, {ggate, gup}, vec::SwigluBwd{});
  else if (ggate) vec::map(op, {&gy, &gate, &up}, {ggate}, vec::SwigluBwdGate{});
  else if (gup) vec::map(op, {&gy, &gate}, {gup}, vec::SwigluBwdUp{});
}
void softmax_fwd(const Tensor& x, Tensor& y) {
  const char* op = "softmax";
  softmax_rows(op, x, true, fin(x, op, "x"), FIn{}, fout(y, op, "y"));
}
void softmax_bwd(const Tensor& gy, const Tensor& y, Tensor& gx) {
  const char* op = "softmaxBackward";
  softmax_rows(op, y, false, fin(gy, op, "gy"), fin(y, op, "y"), fout(gx, op, "gx"));
}
void dropout_fwd(const Tensor& x, Tensor& y, float p, uint64_t seed) { dropout("dropout", x, y, p, seed); }
void dropout_bwd(const Tensor& gy, Tensor& gx, float p, uint64_t seed) { dropout("dropoutBackward", gy, gx, p, seed); }

}  // namespace owlet::kern
