// Rotary position embedding, HF rotate-half convention, on [B, T, H, D]: for d < D/2,
//   y[d] = x[d]·cos − x[d + D/2]·sin,   y[d + D/2] = x[d + D/2]·cos + x[d]·sin,
// with angle (pos0 + t) · theta^(−2d/D) as HF's LlamaRotaryEmbedding computes it in fp32 (core/rope_angle.h, as on
// the CPU), cos/sin once per token and shared by its heads.
// The backward pass is the inverse rotation: the same kernel with the sine negated.
#include "../core/kernels.h"
#include "../core/rope_angle.h"
#include "common.cuh"

namespace owlet::kern {

using namespace owlet::cuda;

namespace {

// One block per token (b, t); the block first tabulates cos/sin for the token's D/2 frequencies in shared memory.
__global__ void rope_kernel(FIn x, FOut y, int64_t T, int64_t H, int64_t D, int64_t pos0, double theta, float sign) {
  extern __shared__ float table[];  // [D/2] cos, then [D/2] sin
  int64_t D2 = D / 2;
  int64_t token = blockIdx.x;  // b * T + t
  int64_t t = token % T;
  for (int64_t d = threadIdx.x; d < D2; d += blockDim.x) {
    double s, c;
    sincos(double(rope_angle(pos0 + t, rope_inv_freq(theta, d, D))), &s, &c);
    table[d] = float(c);
    table[D2 + d] = sign * float(s);
  }
  __syncthreads();
  int64_t base = token * H * D;
  for (int64_t p = threadIdx.x; p < H * D2; p += blockDim.x) {
    int64_t h = p / D2, d = p - h * D2;
    int64_t i1 = base + h * D + d, i2 = i1 + D2;
    float c = table[d], s = table[D2 + d];
    float x1 = x[i1], x2 = x[i2];
    y.set(i1, x1 * c - x2 * s);
    y.set(i2, x2 * c + x1 * s);
  }
}

void rope(const Tensor& x, Tensor& y, int64_t pos0, double theta, float sign, const char* op) {
  DeviceContext& c = context_of(x, op);
  if (x.ndim() != 4) fail(ErrorKind::Shape, std::string(op) + ": x must be [B, T, H, D], got " + x.describe());
  int64_t B = x.dim(0), T = x.dim(1), H = x.dim(2), D = x.dim(3);
  if (D % 2) fail(ErrorKind::Shape, std::string(op) + ": head dim must be even, got " + x.describe());
  if (B * T == 0 || H * D == 0) return;
  size_t smem = size_t(D) * sizeof(float);
  if (smem > 48 * 1024) fail(ErrorKind::Shape, std::string(op) + ": head dim too large: " + x.describe());
  rope_kernel<<<unsigned(B * T), 128, smem, c.stream>>>(fin(x, op, "x"), fout(y, op, "y"), T, H, D, pos0, theta, sign);
  check_launch(op);
}

}  // namespace

void rope_fwd(const Tensor& x, Tensor& y, int64_t pos0, double theta) { rope(x, y, pos0, theta, 1.f, "rope"); }
void rope_bwd(const Tensor& gy, Tensor& gx, int64_t pos0, double theta) {
  rope(gy, gx, pos0, theta, -1.f, "ropeBackward");
}

}  // namespace owlet::kern
