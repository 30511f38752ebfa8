// Rotary position embedding, HF rotate-half convention, on [B, T, H, D]: for d < D/2,
//   y[d] = x[d]·cos − x[d + D/2]·sin,   y[d + D/2] = x[d + D/2]·cos + x[d]·sin,
// with angle (pos0 + t) · theta^(−2d/D) as HF's LlamaRotaryEmbedding computes it in fp32 (core/rope_angle.h, as on
// the CPU), cos/sin once per token and shared by its heads (the kernels: rope_rows.cuh).
// The backward pass is the inverse rotation: the same kernel with the sine negated.
#include "../core/kernels.h"
#include "common.cuh"
#include "rope_rows.cuh"

namespace owlet::kern {

using namespace owlet::cuda;

namespace {

void rope(const Tensor& x, Tensor& y, int64_t pos0, double theta, float sign, const char* op) {
  DeviceContext& c = context_of(x, op);
  if (x.ndim() != 4) fail(ErrorKind::Shape, std::string(op) + ": x must be [B, T, H, D], got " + x.describe());
  int64_t B = x.dim(0), T = x.dim(1), H = x.dim(2), D = x.dim(3);
  if (D % 2) fail(ErrorKind::Shape, std::string(op) + ": head dim must be even, got " + x.describe());
  if (B * T == 0 || H * D == 0) return;
  size_t smem = size_t(D) * sizeof(float);
  if (smem > 48 * 1024) fail(ErrorKind::Shape, std::string(op) + ": head dim too large: " + x.describe());
  const unsigned blocks = unsigned(B * T);
  const int64_t pack = 16 / int64_t(dtype_size(x.dtype));  // elements per 16-byte access
  const bool vec16 = x.dtype == y.dtype && is_float(x.dtype) && vec_enabled() && (D / 2) % pack == 0 && aligned16(x) &&
                     aligned16(y);
  if (vec16 && x.dtype == DType::BF16)  // 16-byte accesses (rope_rows.cuh)
    rope::rope_vec_kernel<bf16><<<blocks, rope::kThreads, smem, c.stream>>>(x.data<bf16>(), y.data<bf16>(), T, H, D, pos0,
                                                                             theta, sign);
  else if (vec16)
    rope::rope_vec_kernel<float><<<blocks, rope::kThreads, smem, c.stream>>>(x.f32(), y.f32(), T, H, D, pos0, theta, sign);
  else
    rope::rope_kernel<<<blocks, rope::kThreads, smem, c.stream>>>(fin(x, op, "x"), fout(y, op, "y"), T, H, D, pos0, theta,
                                                                  sign);
  check_launch(op);
}

}  // namespace

void rope_fwd(const Tensor& x, Tensor& y, int64_t pos0, double theta) { rope(x, y, pos0, theta, 1.f, "rope"); }
void rope_bwd(const Tensor& gy, Tensor& gx, int64_t pos0, double theta) {
  rope(gy, gx, pos0, theta, -1.f, "ropeBackward");
}

}  // namespace owlet::kern
